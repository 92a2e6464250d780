//! The systemd journal's native protocol: one datagram per line, with
//! structured fields (`MESSAGE_ID=`, `MODULE=`, `REQUEST=`, ...), so that
//! `journalctl -u kerneld MODULE=sctp` finds what concerns a module.
//!
//! Written over a std `UnixDatagram` rather than with a crate:
//! `systemd-journal-logger` and `tracing-journald` plug into the `log` and
//! `tracing` facades, which kerneld does not use (its lines are built once
//! and written after the reply), and `libsystemd` brings a dozen crates
//! for the forty lines that follow.  The protocol is that of
//! systemd.journal-fields(7) and sd_journal_sendv(3): `KEY=value` lines;
//! kerneld escapes control characters in values (`\n`, `\x1b`, as in
//! every log line: `kmod_ipc::escape`), so it never needs the binary form, and a line too large for one
//! datagram (none of kerneld's is) goes to syslog instead of a memfd.
//!
//! The socket is `/run/systemd/journal/socket`, or `KERNELD_JOURNAL_SOCKET`
//! (for tests).  Like /dev/log, it is looked for at most once a second: in
//! early boot it may appear after kerneld starts.
//!
//! Lines are sent without blocking: a journal that does not read (a hung
//! journald) would otherwise hold every worker at every line.  A line the
//! journal has no room for is dropped and counted (`dropped`), and the
//! journal is then skipped for a pause that doubles while it stays full
//! (250 ms to 8 s), so that it can catch up.  Such lines do not go to
//! syslog: on a systemd system /dev/log is journald's too, and syslog(3)
//! blocks on it.

use std::cell::RefCell;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The kinds of event that carry a `MESSAGE_ID`: stable 128-bit ids, listed
/// in kerneld(8) (JOURNAL), never changed once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// kerneld serves its queue.
    Started,
    /// kerneld stopped (or gave up starting).
    Stopped,
    /// SIGHUP: the configuration and module index were read again.
    Reloaded,
    /// A request_module answered with status 0 (loaded, already loaded,
    /// blacklisted).
    RequestDone,
    /// A request_module answered with a failure (not found, denied, ...).
    RequestFailed,
    /// The policy let a request through (logged when rules exist).
    PolicyAllowed,
    /// The policy denied a request.
    PolicyDenied,
    /// Audit mode: a request the policy would deny.
    PolicyAudit,
    /// A release_module (type 3) request.
    Released,
    /// The idle sweep unloaded modules.
    Expired,
    /// kdstat flush emptied the queue.
    Flushed,
    /// The BPF LSM program saw a module load (or request) it let through.
    ModuleLoad,
    /// The BPF LSM program refused a module load.
    ModuleLoadRefused,
}

impl Event {
    #[cfg(test)]
    pub(crate) const ALL: [Event; 13] = [
        Event::Started,
        Event::Stopped,
        Event::Reloaded,
        Event::RequestDone,
        Event::RequestFailed,
        Event::PolicyAllowed,
        Event::PolicyDenied,
        Event::PolicyAudit,
        Event::Released,
        Event::Expired,
        Event::Flushed,
        Event::ModuleLoad,
        Event::ModuleLoadRefused,
    ];

    /// The `MESSAGE_ID` (32 lowercase hex digits, as journalctl shows it).
    pub(crate) const fn id(self) -> &'static str {
        match self {
            Event::Started => "d453e4ba6e84425fa4c87ffaa724afb3",
            Event::Stopped => "e31fbf7c4dd24a21a8e173b489192a64",
            Event::Reloaded => "a569f17c24324775980e4777eb94405d",
            Event::RequestDone => "2bc76965d99d488c8d66b300c5ee846c",
            Event::RequestFailed => "f49091f9fa044775ac7f4d94cb5dd67f",
            Event::PolicyAllowed => "6aed3ae1483c449cbde24ac75b96a14e",
            Event::PolicyDenied => "924e3d83b1274710a87e64c9ef5c0dd4",
            Event::PolicyAudit => "914be4478e074793993a9bfb0e8500df",
            Event::Released => "8c7c942f7f8441d085e55a0859454044",
            Event::Expired => "b050793a389744748b9a9f1e18effa14",
            Event::Flushed => "0b6d9d10d7a1429fac743ef7a2882b9f",
            Event::ModuleLoad => "b139116784014a02b34b306ed457176a",
            Event::ModuleLoadRefused => "d7d15be1f52f47e0968d4819993841d9",
        }
    }
}

/// Structured fields of one line, `KEY=value\n` each, built by the caller
/// (keys are upper case; values have their control characters escaped).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields(String);

impl Fields {
    pub fn new() -> Fields {
        Fields(String::new())
    }

    /// Add `KEY=value` (a key may repeat: journalctl matches each).
    pub(crate) fn push(&mut self, key: &str, value: &str) -> &mut Fields {
        self.0.reserve(key.len() + value.len() + 2);
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&kmod_ipc::escape::escape(value));
        self.0.push('\n');
        self
    }

    pub(crate) fn push_num(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Fields {
        use std::fmt::Write;
        let _ = writeln!(self.0, "{key}={value}");
        self
    }

    /// The requester's fields, if it is known.
    pub(crate) fn requester(
        &mut self,
        who: Option<&crate::who::requester::Requester>,
    ) -> &mut Fields {
        if let Some(r) = who {
            self.push_num("REQUESTER_PID", r.pid)
                .push_num("REQUESTER_UID", r.uid)
                .push("REQUESTER_COMM", &r.comm);
            if !r.cgroup.is_empty() {
                self.push("REQUESTER_CGROUP", &r.cgroup);
            }
        }
        self
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The journal's socket.
fn socket_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var_os("KERNELD_JOURNAL_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/systemd/journal/socket"))
    })
}

static UP: AtomicBool = AtomicBool::new(false);
static CHECKED_MS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the first call, never 0 (0 means "never" below).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Whether the journal's socket exists (looked at most once a second).
pub(crate) fn present() -> bool {
    let now = now_ms();
    let last = CHECKED_MS.load(Ordering::Relaxed);
    if last == 0 || now.saturating_sub(last) >= 1000 {
        CHECKED_MS.store(now, Ordering::Relaxed);
        UP.store(socket_path().exists(), Ordering::Relaxed);
    }
    UP.load(Ordering::Relaxed)
}

fn socket() -> Option<&'static UnixDatagram> {
    static SOCK: OnceLock<Option<UnixDatagram>> = OnceLock::new();
    SOCK.get_or_init(|| {
        let s = UnixDatagram::unbound().ok()?;
        // A journal that does not read (a hung journald) must cost a
        // request nothing: a line it has no room for is dropped at once.
        s.set_nonblocking(true).ok()?;
        Some(s)
    })
    .as_ref()
}

/// What became of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The journal took it.
    Taken,
    /// The journal is there but did not take it (full, or backing off
    /// after it was): dropped and counted.
    Dropped,
    /// No journal to take it (no socket, nobody listening, too large):
    /// the caller uses syslog.
    Unavailable,
}

/// Lines the journal did not take, since kerneld started (the status's
/// `journal_dropped`).
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// While `now_ms()` is below this, lines are dropped without a try: a
/// journal that was full is given time to catch up.
static SKIP_UNTIL_MS: AtomicU64 = AtomicU64::new(0);
/// The current pause; doubled at each refusal in a row, up to
/// `BACKOFF_MAX_MS`, and cleared when a line is taken.
static BACKOFF_MS: AtomicU64 = AtomicU64::new(0);
const BACKOFF_MIN_MS: u64 = 250;
const BACKOFF_MAX_MS: u64 = 8000;

/// Lines the journal did not take so far.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Send one entry.  `msg` has no control characters (see `log`).
pub(crate) fn send(priority: u8, msg: &str, event: Option<Event>, fields: &str) -> Sent {
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let Some(sock) = socket() else {
        return Sent::Unavailable;
    };
    if now_ms() < SKIP_UNTIL_MS.load(Ordering::Relaxed) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return Sent::Dropped;
    }
    let result = BUF.with(|b| {
        let Ok(mut buf) = b.try_borrow_mut() else {
            return Err(std::io::ErrorKind::ResourceBusy.into());
        };
        buf.clear();
        entry(&mut buf, priority, msg, event, fields);
        let r = sock.send_to(&buf, socket_path());
        // Keep a usual line's buffer, not that of a rare huge one.
        if buf.capacity() > 16 * 1024 {
            *buf = Vec::new();
        }
        r
    });
    match result {
        Ok(_) => {
            if BACKOFF_MS.load(Ordering::Relaxed) != 0 {
                BACKOFF_MS.store(0, Ordering::Relaxed);
            }
            Sent::Taken
        }
        // The journal's queue is full (EAGAIN), or the socket's send
        // buffer is (ENOBUFS): the journal is there but behind.
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc::ENOBUFS) =>
        {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            let pause =
                (BACKOFF_MS.load(Ordering::Relaxed) * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
            BACKOFF_MS.store(pause, Ordering::Relaxed);
            SKIP_UNTIL_MS.store(now_ms() + pause, Ordering::Relaxed);
            Sent::Dropped
        }
        Err(_) => Sent::Unavailable,
    }
}

/// The datagram of one entry.
fn entry(buf: &mut Vec<u8>, priority: u8, msg: &str, event: Option<Event>, fields: &str) {
    buf.extend_from_slice(b"MESSAGE=");
    buf.extend_from_slice(msg.as_bytes());
    buf.extend_from_slice(b"\nPRIORITY=");
    buf.push(b'0' + priority.min(7));
    // LOG_DAEMON
    buf.extend_from_slice(b"\nSYSLOG_FACILITY=3\nSYSLOG_IDENTIFIER=kerneld\n");
    if let Some(e) = event {
        buf.extend_from_slice(b"MESSAGE_ID=");
        buf.extend_from_slice(e.id().as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(fields.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let mut seen = std::collections::HashSet::new();
        for e in Event::ALL {
            let id = e.id();
            assert_eq!(id.len(), 32, "{e:?}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(seen.insert(id), "{e:?} repeats {id}");
        }
    }

    #[test]
    fn kerneld_8_lists_every_message_id() {
        let page = include_str!("../../../man/kerneld.8");
        for e in Event::ALL {
            assert!(page.contains(&format!(".B {}\n", e.id())), "{e:?}");
        }
    }

    /// journalctl -x explains every event: the catalog kerneld ships
    /// (dist/kerneld.catalog) has an entry for each id.
    #[test]
    fn the_catalog_explains_every_message_id() {
        let catalog = include_str!("../../../dist/kerneld.catalog");
        for e in Event::ALL {
            assert!(catalog.contains(&format!("\n-- {}\n", e.id())), "{e:?}");
        }
    }

    #[test]
    fn an_entry_is_key_value_lines_and_values_cannot_forge_a_field() {
        let mut f = Fields::new();
        f.push("MODULE", "sctp")
            .push("REQUESTER_COMM", "evil\nPRIORITY=0")
            .push_num("STATUS", 1);
        let mut buf = Vec::new();
        entry(&mut buf, 4, "a line", Some(Event::PolicyDenied), f.as_str());
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "MESSAGE=a line",
                "PRIORITY=4",
                "SYSLOG_FACILITY=3",
                "SYSLOG_IDENTIFIER=kerneld",
                "MESSAGE_ID=924e3d83b1274710a87e64c9ef5c0dd4",
                "MODULE=sctp",
                "REQUESTER_COMM=evil\\nPRIORITY=0",
                "STATUS=1",
            ]
        );
        assert!(text.ends_with('\n'));
    }
}

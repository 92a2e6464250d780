//! Logging to the journal when present, else to syslog (LOG_DAEMON,
//! ident "kerneld-modprobe").
//!
//! The kernel starts the shim with fds 0-2 closed (or pointing anywhere),
//! so nothing on the request path may write to them.  Where the journal's
//! native socket (/run/systemd/journal/socket) exists, a line goes there
//! as one datagram, with `SYSLOG_IDENTIFIER=kerneld-modprobe` and, for the
//! events a fleet alerts on ([`Event`]), a `MESSAGE_ID` and fields of
//! their own, as kerneld's lines do (kerneld/src/operator/journal.rs; written by
//! hand for the same reasons, and to keep the shim small).  The datagram
//! is sent without blocking: a journal with no room drops the line rather
//! than hold up the request, and it does not go to syslog either, whose
//! /dev/log is journald's too and would block.  Without the socket, or
//! with nobody reading it, the line goes to syslog as before.
//!
//! Test hooks: `KERNELD_SHIM_LOG=FILE` appends the lines (and an event's
//! fields) to FILE instead, so tests can read them without touching the
//! system log; `KERNELD_JOURNAL_SOCKET` names the journal's socket, as for
//! kerneld.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use libc::{LOG_ERR, LOG_INFO, LOG_WARNING};

/// Environment variable of the test hook.
const LOG_FILE_ENV: &str = "KERNELD_SHIM_LOG";

static LOG_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

fn log_file() -> &'static Option<PathBuf> {
    LOG_FILE.get_or_init(|| std::env::var_os(LOG_FILE_ENV).map(Into::into))
}

/// The events of the shim that carry a `MESSAGE_ID`: stable 128-bit ids,
/// listed in kerneld-modprobe(8) and kerneld(8) and explained by
/// kerneld's journal catalog; never changed once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// kerneld took the request but did not answer within shim-timeout.
    NoReply,
    /// The queue at kerneld's key is not kerneld's (a squatter).
    ForeignQueue,
}

impl Event {
    #[cfg(test)]
    pub const ALL: [Event; 2] = [Event::NoReply, Event::ForeignQueue];

    /// The `MESSAGE_ID` (32 lowercase hex digits, as journalctl shows it).
    pub const fn id(self) -> &'static str {
        match self {
            Event::NoReply => "a8fd96b1f6de484a81ab4a690058e387",
            Event::ForeignQueue => "e137aa26d48e4a0686295014921f9328",
        }
    }
}

/// Open the system log.  Without LOG_CONS or LOG_PERROR: neither the
/// console nor stderr may receive our lines.
pub fn open() {
    if log_file().is_none() {
        // SAFETY: the ident is a static C string, as openlog requires.
        unsafe {
            libc::openlog(
                c"kerneld-modprobe".as_ptr(),
                libc::LOG_PID,
                libc::LOG_DAEMON,
            )
        };
    }
}

/// Log one line at `priority`.
pub fn log(priority: libc::c_int, message: &str) {
    event(priority, None, &[], message);
}

/// Log one line at `priority`; with `event`, its `MESSAGE_ID` and
/// `fields` (upper-case keys) go to the journal too (syslog gets the line
/// alone).
pub fn event(priority: libc::c_int, event: Option<Event>, fields: &[(&str, &str)], message: &str) {
    if let Some(path) = log_file() {
        // A failing test log must not change the shim's behaviour.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let mut line = format!("<{priority}> {message}");
            if let Some(e) = event {
                line.push_str(" [MESSAGE_ID=");
                line.push_str(e.id());
                for (k, v) in fields {
                    line.push_str(&format!(" {k}={v}"));
                }
                line.push(']');
            }
            let _ = writeln!(f, "{line}");
        }
        return;
    }
    if to_journal(priority, event, fields, message) {
        return;
    }
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: a constant "%s" format with one valid C string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
}

/// The journal's socket.
fn journal_socket() -> PathBuf {
    std::env::var_os("KERNELD_JOURNAL_SOCKET")
        .map_or_else(|| PathBuf::from("/run/systemd/journal/socket"), Into::into)
}

/// Send the line to the journal: true if the journal took it or had no
/// room for it (dropped), false if there is no journal to send to (the
/// caller uses syslog).
fn to_journal(
    priority: libc::c_int,
    event: Option<Event>,
    fields: &[(&str, &str)],
    message: &str,
) -> bool {
    let path = journal_socket();
    // One stat where there is no journal, rather than a socket and a
    // failed send.
    if !path.exists() {
        return false;
    }
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    match sock.send_to(&entry(priority, event, fields, message), &path) {
        Ok(_) => true,
        // The journal is there but behind (its queue or our buffer full):
        // dropped, as kerneld drops its lines; never waited for.
        Err(e) => {
            e.kind() == std::io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
        }
    }
}

/// The datagram of one entry, in the journal's native protocol: `KEY=value`
/// lines, values with their control characters escaped (so that none can
/// end a field early and forge another).
fn entry(
    priority: libc::c_int,
    event: Option<Event>,
    fields: &[(&str, &str)],
    message: &str,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256 + message.len());
    let mut field = |key: &str, value: &str| {
        buf.extend_from_slice(key.as_bytes());
        buf.push(b'=');
        buf.extend_from_slice(kmod_ipc::escape::escape(value).as_bytes());
        buf.push(b'\n');
    };
    field("MESSAGE", message);
    field("PRIORITY", &priority.clamp(0, 7).to_string());
    // LOG_DAEMON
    field("SYSLOG_FACILITY", "3");
    field("SYSLOG_IDENTIFIER", "kerneld-modprobe");
    if let Some(e) = event {
        field("MESSAGE_ID", e.id());
        for (k, v) in fields {
            field(k, v);
        }
    }
    buf
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

    /// Each id is documented and explained by the catalog, as kerneld's.
    #[test]
    fn the_pages_and_the_catalog_name_every_message_id() {
        let shim_page = include_str!("../../man/kerneld-modprobe.8");
        let kerneld_page = include_str!("../../man/kerneld.8");
        let catalog = include_str!("../../dist/kerneld.catalog");
        for e in Event::ALL {
            let id = e.id();
            assert!(shim_page.contains(&format!(".B {id}\n")), "{e:?}");
            assert!(kerneld_page.contains(&format!(".B {id}\n")), "{e:?}");
            assert!(catalog.contains(&format!("\n-- {id}\n")), "{e:?}");
        }
    }

    #[test]
    fn an_entry_is_key_value_lines_and_values_cannot_forge_a_field() {
        let buf = entry(
            LOG_WARNING,
            Some(Event::NoReply),
            &[("REQUEST", "ppp\nPRIORITY=0")],
            "a line\nMESSAGE_ID=0",
        );
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "MESSAGE=a line\\nMESSAGE_ID=0",
                "PRIORITY=4",
                "SYSLOG_FACILITY=3",
                "SYSLOG_IDENTIFIER=kerneld-modprobe",
                "MESSAGE_ID=a8fd96b1f6de484a81ab4a690058e387",
                "REQUEST=ppp\\nPRIORITY=0",
            ]
        );
        assert!(text.ends_with('\n'));
        // Lines of no event carry no fields.
        let text = String::from_utf8(entry(LOG_INFO, None, &[("X", "y")], "m")).unwrap();
        assert!(
            !text.contains("MESSAGE_ID") && !text.contains("X="),
            "{text}"
        );
    }
}

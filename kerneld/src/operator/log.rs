//! Logging to the journal (native protocol, with structured fields; see
//! `journal`) when it is present, else to syslog (facility LOG_DAEMON);
//! and to stderr in the foreground.
//!
//! syslog(3), through nix, reconnects to /dev/log by itself and needs no
//! formatter crate.
//!
//! A quick answer's line is written by the log thread ([`later`]): the
//! receive thread goes back to the queue without the formatting and the
//! write(2) or send(2), which under a burst of requests would stand
//! between one answer and the next request.  Every line, deferred or
//! not, goes out in the order it was made ([`ordered`]).

pub use crate::operator::journal::{Event, Fields};
use nix::syslog::{Facility, LogFlags, Severity};
use std::borrow::Cow;
use std::cell::Cell;
use std::io::{IoSlice, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

static DEBUG: AtomicBool = AtomicBool::new(false);
static STDERR: AtomicBool = AtomicBool::new(false);

/// Whether a syslog daemon listens on /dev/log, and when (milliseconds
/// since start) that was last checked.  While /dev/log is missing (no
/// syslog daemon: containers, small embedded systems, early boot) glibc's
/// syslog() tries to connect again on every line, a cost on every request;
/// so kerneld looks for /dev/log at most once a second and skips syslog()
/// meanwhile.
static SYSLOG_UP: AtomicBool = AtomicBool::new(true);
static SYSLOG_CHECKED_MS: AtomicU64 = AtomicU64::new(0);

fn syslog_up() -> bool {
    static START: OnceLock<Instant> = OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let last = SYSLOG_CHECKED_MS.load(Ordering::Relaxed);
    if last == 0 || now.saturating_sub(last) >= 1000 {
        SYSLOG_CHECKED_MS.store(now, Ordering::Relaxed);
        SYSLOG_UP.store(std::path::Path::new("/dev/log").exists(), Ordering::Relaxed);
    }
    SYSLOG_UP.load(Ordering::Relaxed)
}

/// Open the syslog connection; `stderr` also copies lines to stderr,
/// unless stderr already goes to the journal (systemd sets
/// JOURNAL_STREAM), where every line would otherwise appear twice.
pub fn init(stderr: bool) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    STDERR.store(stderr && !journal, Ordering::Relaxed);
    let _ = nix::syslog::openlog(
        Some(c"kerneld"),
        LogFlags::LOG_PID | LogFlags::LOG_NDELAY,
        Facility::LOG_DAEMON,
    );
}

/// An info line about modules (MODULE= each, and STATUS=), such as a
/// release or an expiry.
pub(crate) fn module_event(event: Event, modules: &[impl AsRef<str>], status: i64, msg: &str) {
    let mut fields = Fields::new();
    if crate::operator::journal::present() {
        for m in modules {
            fields.push("MODULE", m.as_ref());
        }
        fields.push_num("STATUS", status);
    }
    self::event(Level::Info, event, &fields, msg);
}

/// Turn debug logging (every message) on or off.
pub(crate) fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub(crate) fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// `msg` with control characters (which could end the line early, forge
/// another or drive a terminal) shown as escapes (`\n`, `\x1b`): every
/// line, whatever a requester or a file put in it.  A line with none is
/// used as it is.
fn clean(msg: &str) -> Cow<'_, str> {
    kmod_ipc::escape::escape(msg)
}

/// Write `parts` to stderr as one line with one system call, so that lines
/// of several threads never interleave and nothing is allocated or copied
/// for the common case.
fn write_stderr(parts: &[&str]) {
    let mut err = std::io::stderr().lock();
    let slices: [IoSlice; 4] =
        std::array::from_fn(|i| IoSlice::new(parts.get(i).map_or(&[][..], |p| p.as_bytes())));
    let total: usize = parts.iter().take(4).map(|p| p.len()).sum();
    let written = loop {
        match err.write_vectored(&slices) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    let written = match written {
        Ok(n) if n == total => return,
        Ok(n) => n,
        Err(_) => return,
    };
    // Rare (partial): finish from a copy, as write_all would.
    let line = parts[..parts.len().min(4)].concat();
    let _ = err.write_all(&line.as_bytes()[written..]);
}

fn emit(severity: Severity, msg: &str) {
    ordered(|| emit_event(severity, None, "", msg));
}

/// Lines made but not yet written: the functions that write them, given
/// to [`later`] (a few kinds, each once; no allocation on the way).
type Writers = [Option<fn()>; 4];
static LATER: Mutex<Writers> = Mutex::new([None; 4]);
static LATER_READY: Condvar = Condvar::new();
/// Held while lines go out, so that they go out in order.
static WRITING: Mutex<()> = Mutex::new(());
thread_local! {
    /// This thread holds [`WRITING`]: a line made while writing one (a
    /// journal warning) goes out at once.
    static IN_WRITING: Cell<bool> = const { Cell::new(false) };
}
/// How long the log thread gathers lines before it writes them: a burst
/// of requests costs a write per few milliseconds, not per request.  A
/// kerneld killed with SIGKILL loses at most the lines of that moment.
const GATHER: Duration = Duration::from_millis(2);

/// `m`, locked; a panic elsewhere while it was held does not stop the
/// lines (what it guards stays whole).
pub(crate) fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `write` (which writes lines) after every line made before it.
fn ordered(write: impl FnOnce()) {
    if IN_WRITING.get() {
        return write();
    }
    let _writing = lock(&WRITING);
    IN_WRITING.set(true);
    struct Out;
    impl Drop for Out {
        fn drop(&mut self) {
            IN_WRITING.set(false);
        }
    }
    let _out = Out;
    let earlier = std::mem::take(&mut *lock(&LATER));
    for write_earlier in earlier.into_iter().flatten() {
        write_earlier();
    }
    write();
}

/// Have `write`, which writes the lines its caller keeps, run on the log
/// thread soon (within [`GATHER`]), in order with every other line.
/// Without a log thread (it could not be started), at once.
pub(crate) fn later(write: fn()) {
    static THREAD: OnceLock<bool> = OnceLock::new();
    let started = *THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("log".into())
            .spawn(log_thread)
            .is_ok()
    });
    let first = {
        let mut l = lock(&LATER);
        let first = l.iter().all(Option::is_none);
        let known = l.iter().flatten().any(|&f| std::ptr::fn_addr_eq(f, write));
        let room = l.iter_mut().find(|f| f.is_none());
        match (known, room, started) {
            (true, _, _) => Some(false),
            (false, Some(room), true) => {
                *room = Some(write);
                Some(first)
            }
            _ => None,
        }
    };
    match first {
        None => ordered(write),
        Some(true) => LATER_READY.notify_one(),
        Some(false) => {}
    }
}

/// Write what [`later`] was given, now: before the process exits.
pub fn flush() {
    ordered(|| {});
}

fn log_thread() {
    loop {
        {
            let mut l = lock(&LATER);
            while l.iter().all(Option::is_none) {
                l = LATER_READY.wait(l).unwrap_or_else(|e| e.into_inner());
            }
        }
        std::thread::sleep(GATHER);
        flush();
    }
}

/// One line: to the journal with `event`'s MESSAGE_ID and `fields` if the
/// journal is present (and takes it), else to syslog; and to stderr.
fn emit_event(severity: Severity, event: Option<Event>, fields: &str, msg: &str) {
    use crate::operator::journal::Sent;
    let clean = clean(msg);
    let sent = if crate::operator::journal::present() {
        crate::operator::journal::send(severity as u8, &clean, event, fields)
    } else {
        Sent::Unavailable
    };
    match sent {
        Sent::Taken => journal_back(),
        Sent::Dropped => journal_dropping(),
        Sent::Unavailable => {
            if syslog_up() {
                let _ = nix::syslog::syslog(severity, &*clean);
            }
        }
    }
    if STDERR.load(Ordering::Relaxed) {
        let level = match severity {
            Severity::LOG_ERR => "error: ",
            Severity::LOG_WARNING => "warning: ",
            Severity::LOG_DEBUG => "debug: ",
            _ => "",
        };
        write_stderr(&["kerneld: ", level, &clean, "\n"]);
    }
}

/// Whether lines are being dropped because the journal does not take
/// them, and when (`journal::now_ms`-style milliseconds since the first
/// warning's clock started) that was last said.
static JOURNAL_DROPPING: AtomicBool = AtomicBool::new(false);
static JOURNAL_WARNED_MS: AtomicU64 = AtomicU64::new(0);
/// The drop count when the current run of drops began.
static JOURNAL_DROPS_BEFORE: AtomicU64 = AtomicU64::new(0);

/// A line was dropped: say so, once a minute at most, on stderr only.
/// Not through syslog: on a systemd system /dev/log is journald's, which
/// is what does not read, and syslog(3) would block on it.  The journal
/// gets the account when it takes lines again (`journal_back`).
fn journal_dropping() {
    if JOURNAL_DROPPING.swap(true, Ordering::Relaxed) {
        return;
    }
    JOURNAL_DROPS_BEFORE.store(
        crate::operator::journal::dropped().saturating_sub(1),
        Ordering::Relaxed,
    );
    static START: OnceLock<Instant> = OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let last = JOURNAL_WARNED_MS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < 60_000 {
        return;
    }
    JOURNAL_WARNED_MS.store(now, Ordering::Relaxed);
    if STDERR.load(Ordering::Relaxed) {
        write_stderr(&[
            "kerneld: warning: the journal does not take lines (it is not reading): \
             dropping them until it does; kdstat counts them as journal lines dropped",
            "\n",
        ]);
    }
}

/// A line was taken: if some were dropped before it, tell the journal how
/// many.
fn journal_back() {
    if !JOURNAL_DROPPING.load(Ordering::Relaxed) || !JOURNAL_DROPPING.swap(false, Ordering::Relaxed)
    {
        return;
    }
    let n = crate::operator::journal::dropped()
        .saturating_sub(JOURNAL_DROPS_BEFORE.load(Ordering::Relaxed));
    warn(&format!(
        "the journal takes lines again; {n} were dropped while it did not \
         (kdstat: journal lines dropped)"
    ));
}

/// The severity of a line with structured fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Notice,
    Warning,
    Error,
}

/// A line of the kind `event`, with structured fields for the journal
/// (syslog and stderr get the text alone).
pub fn event(level: Level, event: Event, fields: &Fields, msg: &str) {
    let severity = match level {
        Level::Info => Severity::LOG_INFO,
        Level::Notice => Severity::LOG_NOTICE,
        Level::Warning => Severity::LOG_WARNING,
        Level::Error => Severity::LOG_ERR,
    };
    ordered(|| emit_event(severity, Some(event), fields.as_str(), msg));
}

pub(crate) fn info(msg: &str) {
    emit(Severity::LOG_INFO, msg);
}

pub fn notice(msg: &str) {
    emit(Severity::LOG_NOTICE, msg);
}

pub fn warn(msg: &str) {
    emit(Severity::LOG_WARNING, msg);
}

pub fn error(msg: &str) {
    emit(Severity::LOG_ERR, msg);
}

/// Logged only when debug is on.
pub(crate) fn debug(msg: &str) {
    if debug_enabled() {
        emit(Severity::LOG_DEBUG, msg);
    }
}

/// Count one more occurrence in `count` and log a warning for the 1st,
/// 2nd, 4th, 8th... of them: a flood of the same event must not become a
/// flood of log lines.  `line` gets the count so far.
pub(crate) fn warn_sampled(count: &AtomicU64, line: impl FnOnce(u64) -> String) {
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        warn(&line(n));
    }
}

/// `log_debug!("...", args)`: a debug line, formatted only when debug is
/// on (the arguments are not even evaluated otherwise).
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)*) => {
        if $crate::operator::log::debug_enabled() {
            $crate::operator::log::debug(&format!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_lines_go_out_before_later_ones_and_in_order() {
        static KEPT: Mutex<Vec<u32>> = Mutex::new(Vec::new());
        static OUT: Mutex<Vec<u32>> = Mutex::new(Vec::new());
        fn write_kept() {
            let kept = std::mem::take(&mut *lock(&KEPT));
            lock(&OUT).extend(kept);
        }
        for round in 0..50 {
            let base = round * 3;
            lock(&KEPT).push(base);
            later(write_kept);
            lock(&KEPT).push(base + 1);
            later(write_kept);
            // A line written at once comes after both, whether the log
            // thread wrote them already or not.
            ordered(|| lock(&OUT).push(base + 2));
            let out = lock(&OUT);
            assert_eq!(out[out.len() - 3..], [base, base + 1, base + 2]);
        }
        // Left alone, a kept line is written by the log thread.
        lock(&KEPT).push(1000);
        later(write_kept);
        let t0 = Instant::now();
        while !lock(&OUT).contains(&1000) {
            assert!(t0.elapsed() < Duration::from_secs(10), "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn control_characters_are_escaped_and_clean_lines_are_not_copied() {
        assert!(matches!(
            clean("request_module: x: not found"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            clean("a\nb\x7fc\u{85}d\x1b[2J"),
            "a\\nb\\x7fc\\xc2\\x85d\\x1b[2J"
        );
        // 0xC2 also begins printable characters: kept as they are.
        assert_eq!(clean("caf\u{e9} \u{a0}x"), "caf\u{e9} \u{a0}x");
    }
}

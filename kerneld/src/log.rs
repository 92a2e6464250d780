//! Logging to syslog (facility LOG_DAEMON), and to stderr in the foreground.
//!
//! libc's syslog(3) is used directly: it reconnects to /dev/log by itself
//! and needs no formatter crate.

use std::borrow::Cow;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

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
    static IDENT: &[u8] = b"kerneld\0";
    // SAFETY: IDENT is a static NUL-terminated string, as openlog keeps it.
    unsafe {
        libc::openlog(
            IDENT.as_ptr() as *const libc::c_char,
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_DAEMON,
        );
    }
}

/// Turn debug logging (every message) on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// `msg` with control characters (which could end the line early or forge
/// another) replaced by '?'.  Most lines have none and are used as they
/// are: a byte scan decides, and only a line with a byte that may begin a
/// control character (C0, DEL, or 0xC2 for the C1 range) is copied.
fn clean(msg: &str) -> Cow<'_, str> {
    if !msg.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
        return Cow::Borrowed(msg);
    }
    Cow::Owned(
        msg.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    )
}

/// Write `parts` to stderr as one line with one system call, so that lines
/// of several threads never interleave and nothing is allocated or copied
/// for the common case.
fn write_stderr(parts: &[&str]) {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 4];
    let n = parts.len().min(iov.len());
    let mut total = 0;
    for (v, p) in iov.iter_mut().zip(&parts[..n]) {
        v.iov_base = p.as_ptr() as *mut libc::c_void;
        v.iov_len = p.len();
        total += p.len();
    }
    // SAFETY: every iovec points into a live &str of the given length.
    let written = unsafe { libc::writev(2, iov.as_ptr(), n as libc::c_int) };
    if written >= 0 && written as usize == total {
        return;
    }
    // Rare (interrupted, partial, or stderr closed): finish from a copy,
    // as write_all would.
    let line = parts[..n].concat();
    let mut rest = &line.as_bytes()[written.max(0) as usize..];
    while !rest.is_empty() {
        // SAFETY: rest is a live byte slice.
        let w = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if w > 0 {
            rest = &rest[w as usize..];
        } else if w == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

fn emit(priority: libc::c_int, msg: &str) {
    let clean = clean(msg);
    if syslog_up() {
        if let Ok(c) = CString::new(&*clean) {
            // SAFETY: "%s" with one valid C string.
            unsafe {
                libc::syslog(priority, c"%s".as_ptr(), c.as_ptr());
            }
        }
    }
    if STDERR.load(Ordering::Relaxed) {
        let level = match priority {
            libc::LOG_ERR => "error: ",
            libc::LOG_WARNING => "warning: ",
            libc::LOG_DEBUG => "debug: ",
            _ => "",
        };
        write_stderr(&["kerneld: ", level, &clean, "\n"]);
    }
}

pub fn info(msg: &str) {
    emit(libc::LOG_INFO, msg);
}

pub fn notice(msg: &str) {
    emit(libc::LOG_NOTICE, msg);
}

pub fn warn(msg: &str) {
    emit(libc::LOG_WARNING, msg);
}

pub fn error(msg: &str) {
    emit(libc::LOG_ERR, msg);
}

/// Logged only when debug is on.
pub fn debug(msg: &str) {
    if debug_enabled() {
        emit(libc::LOG_DEBUG, msg);
    }
}

/// Count one more occurrence in `count` and log a warning for the 1st,
/// 2nd, 4th, 8th... of them: a flood of the same event must not become a
/// flood of log lines.  `line` gets the count so far.
pub fn warn_sampled(count: &AtomicU64, line: impl FnOnce(u64) -> String) {
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
        if $crate::log::debug_enabled() {
            $crate::log::debug(&format!($($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_replaced_and_clean_lines_are_not_copied() {
        assert!(matches!(
            clean("request_module: x: not found"),
            Cow::Borrowed(_)
        ));
        assert_eq!(clean("a\nb\x7fc\u{85}d"), "a?b?c?d");
        // 0xC2 also begins printable characters: kept as they are.
        assert_eq!(clean("caf\u{e9} \u{a0}x"), "caf\u{e9} \u{a0}x");
    }
}

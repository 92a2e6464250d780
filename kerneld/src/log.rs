//! Logging to syslog (facility LOG_DAEMON), and to stderr in the foreground.
//!
//! libc's syslog(3) is used directly: it reconnects to /dev/log by itself
//! and needs no formatter crate.

use std::ffi::CString;
use std::io::Write;
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

fn emit(priority: libc::c_int, msg: &str) {
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if syslog_up() {
        if let Ok(c) = CString::new(clean.as_str()) {
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
        // One write per line: unbuffered stderr would make one system
        // call per piece, and lines of several threads could interleave.
        let line = format!("kerneld: {level}{clean}\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
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

//! Logging to syslog (LOG_DAEMON, ident "kerneld-modprobe").
//!
//! The kernel starts the shim with fds 0-2 closed (or pointing anywhere),
//! so nothing on the request path may write to them; syslog is the only
//! channel.  Test hook: `KERNELD_SHIM_LOG=FILE` appends the lines to FILE
//! instead, so tests can read them without touching the system log.

use std::ffi::CString;
use std::io::Write;
use std::sync::OnceLock;

pub use libc::{LOG_ERR, LOG_INFO, LOG_WARNING};

/// Environment variable of the test hook.
const LOG_FILE_ENV: &str = "KERNELD_SHIM_LOG";

static LOG_FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();

fn log_file() -> &'static Option<std::path::PathBuf> {
    LOG_FILE.get_or_init(|| std::env::var_os(LOG_FILE_ENV).map(Into::into))
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
    if let Some(path) = log_file() {
        // A failing test log must not change the shim's behaviour.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "<{priority}> {message}");
        }
        return;
    }
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: a constant "%s" format with one valid C string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
}

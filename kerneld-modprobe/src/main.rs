//! kerneld-modprobe: the kernel's module helper, talking to kerneld.
//!
//! A stock kernel runs the program named in /proc/sys/kernel/modprobe for
//! every request_module() as `PROGRAM -q -- NAME`, as root, from a kernel
//! worker, with fds 0-2 closed and a minimal environment, and the
//! requesting task waits until it exits.  The shim turns that call into the
//! 1995 protocol: a request-module message (type 2, text NAME) with a
//! kernel-style reply id (0x80000000 + pid: unique among concurrent shims,
//! and past the in-kernel sender's 0x7fff0000..0x7fffffff), then exits 0 if kerneld loaded the module and 1 if not.
//!
//! It is exec'd once per request, so it stays small: arguments are parsed
//! by hand, since the kernel's form is fixed and an argument parser would
//! cost start-up time and size for nothing.  Nothing on the request path
//! touches fds 0-2; messages go to the journal or syslog (see `log`).
//!
//! Without a live kerneld (no queue, a queue left by a kerneld that was
//! killed, a queue at the key that is not kerneld's, or the queue removed
//! while waiting) the shim falls back as configured in /etc/kerneld.conf
//! (`KERNELD_CONFIG`): exec the real modprobe with the same arguments, or
//! fail.  A request in flight when kerneld dies is taken back first.
//!
//! Start-up is most of its cost, so it skips what a one-shot helper does
//! not need: `no_main` leaves out the Rust runtime's set-up (which reads
//! /proc/self/maps to place a stack guard), and `_exit` the C library's exit
//! handlers.  The release build links it as a static PIE (see
//! `scripts/build-release.sh`): no dynamic loader, and still loaded at a
//! random address.  It does not log kerneld's refusals: kerneld logs every
//! decision itself.

// The unit tests bring their own main.
#![cfg_attr(not(test), no_main)]

mod config;
mod log;
mod register;

use config::{Config, Fallback};
use kmod_ipc::{Client, Error, Key, MsgType, Queue, QueueStat};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

const HELP: &str = "\
kerneld-modprobe: the kernel's module helper, passing requests to kerneld

Usage:
  kerneld-modprobe [-q] [--] NAME   ask kerneld to load NAME (the kernel's call)
  kerneld-modprobe --register       make the kernel run this program
                                    (writes /proc/sys/kernel/modprobe and
                                    records the previous value in
                                    /run/kerneld/previous-modprobe)
  kerneld-modprobe --unregister     restore the recorded helper (or /sbin/modprobe)
  kerneld-modprobe --show-config    print the settings a request would use
                                    (problems to stderr, exit 1 if any)
  kerneld-modprobe --help | -V | --version

Exit status 0 when the module is loaded, 1 when not.  Any other arguments
are handed to the real modprobe (or refused with shim-fallback = fail).
Without a live kerneld the request falls back as shim-fallback says: no
queue at the key, a queue left by a kerneld that was killed (a request in
flight is taken back first, within a quarter of a second of the death), or
a queue that is not root's with mode 0600 (a squatter's; nothing is sent
to it, and its owner is logged once a minute at most).
Messages go to the journal when its socket is there (with MESSAGE_IDs for
a timeout and a foreign queue), else to syslog (facility daemon), never to
stdout or stderr.

Settings, in /etc/kerneld.conf or a file it includes (other lines belong to
kerneld).  They are read with the code kerneld checks them with; a shim-
line or an include it refuses fails safe, as shim-fallback = fail:
  shim-fallback = modprobe|fail  without kerneld, run the real modprobe with
                                 the same arguments, or fail (default modprobe)
  shim-modprobe = PATH           the real modprobe (default /sbin/modprobe)
  shim-timeout = SECONDS         wait this long for kerneld's answer, above 0
                                 and at most 3600 (default 30)

Environment:
  KERNELD_KEY             queue key (default 0x6b65726e)
  KERNELD_CONFIG          configuration file instead of /etc/kerneld.conf
Test hooks:
  KERNELD_PROC_MODPROBE   file instead of /proc/sys/kernel/modprobe
  KERNELD_STATE_DIR       directory instead of /run/kerneld
  KERNELD_SHIM_LOG        append log lines to this file instead of the log
  KERNELD_JOURNAL_SOCKET  the journal's socket instead of
                          /run/systemd/journal/socket
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation<'a> {
    /// The kernel's call: load this name.
    Request(&'a OsStr),
    Help,
    Version,
    Register,
    Unregister,
    ShowConfig,
    /// Anything else: a job for the real modprobe.
    Other,
}

/// Parse the arguments after argv[0].
fn classify(args: &[OsString]) -> Invocation<'_> {
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    match words.as_slice() {
        [b"--help"] | [b"-h"] => return Invocation::Help,
        // kmod's modprobe takes -V for its version: answer it as ours, not
        // as a job for the real modprobe (which would print kmod's).
        [b"--version"] | [b"-V"] => return Invocation::Version,
        [b"--register"] => return Invocation::Register,
        [b"--unregister"] => return Invocation::Unregister,
        [b"--show-config"] => return Invocation::ShowConfig,
        _ => {}
    }
    // The kernel's form: [-q] [--] NAME.
    let mut rest = args;
    if rest.first().is_some_and(|a| a == "-q") {
        rest = &rest[1..];
    }
    let dashdash = rest.first().is_some_and(|a| a == "--");
    if dashdash {
        rest = &rest[1..];
    }
    match rest {
        [name] if !name.is_empty() && (dashdash || !name.as_bytes().starts_with(b"-")) => {
            Invocation::Request(name)
        }
        _ => Invocation::Other,
    }
}

/// The C entry point (`no_main`): std still reads argv for `args_os`.
#[cfg_attr(not(test), no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let args = argv.get(1..).unwrap_or_default();
    let code = match classify(args) {
        Invocation::Help => print_out(HELP),
        Invocation::Version => {
            print_out(&format!("kerneld-modprobe {}\n", env!("CARGO_PKG_VERSION")))
        }
        Invocation::Register => report(register::register()),
        Invocation::Unregister => report(register::unregister()),
        Invocation::ShowConfig => show_config(),
        Invocation::Request(name) => {
            log::open();
            let config = config::load(&mut |w| log::log(log::LOG_WARNING, &w));
            request(name, &config, args)
        }
        Invocation::Other => {
            log::open();
            let config = config::load(&mut |w| log::log(log::LOG_WARNING, &w));
            let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            let why = format!("arguments {shown:?} are not the kernel's `-q -- NAME`");
            fallback(&config, args, &why)
        }
    };
    // _exit skips the C library's exit handlers: the request path has
    // nothing to flush, and the paths that print flushed stdout themselves.
    // SAFETY: _exit ends the process; nothing is left to run.
    unsafe { libc::_exit(code) }
}

/// Write `text` to stdout and flush it: without the Rust runtime
/// (`no_main`) nothing flushes it at exit.  0, or 1 if stdout is closed.
fn print_out(text: &str) -> i32 {
    let mut out = std::io::stdout();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Print the settings a request would use, and the problems that made
/// any of them fail safe (then exit 1).
fn show_config() -> i32 {
    let mut problems = 0;
    let config = config::load(&mut |w| {
        problems += 1;
        eprintln!("kerneld-modprobe: {w}");
    });
    let fallback = match config.fallback {
        Fallback::Modprobe => "modprobe",
        Fallback::Fail => "fail",
    };
    let shown = format!(
        "# {}\nshim-fallback = {fallback}\nshim-modprobe = {}\nshim-timeout = {}\n",
        config::path().display(),
        config.modprobe.display(),
        config.timeout.as_secs_f64()
    );
    match print_out(&shown) {
        0 if problems > 0 => 1,
        code => code,
    }
}

/// Tell the human who ran --register or --unregister what happened.
fn report(result: Result<String, String>) -> i32 {
    match result {
        Ok(done) => print_out(&format!("kerneld-modprobe: {done}\n")),
        Err(e) => {
            eprintln!("kerneld-modprobe: {e}");
            1
        }
    }
}

/// Ask kerneld to load `name`; the exit status for the kernel.
///
/// Whenever no live kerneld serves the key the request falls back as
/// configured, as the in-kernel sender does: no queue at all, a queue
/// that is not kerneld's (a squatter's: refusing would let any local user
/// switch off module loading for the host), a queue left behind by a
/// kerneld that was killed (seen before sending, or while waiting, within
/// [`kmod_ipc::WATCH_PERIOD`]; a request already sent is taken back first,
/// so no kerneld started later performs it too), or a queue removed while
/// waiting.  Once a live kerneld has the request, its answer is awaited up
/// to `shim-timeout`.
fn request(name: &OsStr, config: &Config, args: &[OsString]) -> i32 {
    let shown = name.to_string_lossy();
    let key = match Key::resolve(None) {
        Ok(k) => k,
        Err(e) => return fallback(config, args, &e),
    };
    let client = match Client::connect(key) {
        Ok(c) => c,
        Err(e @ Error::NotRunning { .. }) => return fallback(config, args, &e.to_string()),
        Err(e) => {
            log::log(
                log::LOG_ERR,
                &format!("request for {shown:?} failed: opening the queue at key {key}: {e}"),
            );
            return 1;
        }
    };
    match check_queue(client.queue()) {
        Check::Kerneld => {}
        Check::Gone => return fallback(config, args, "kerneld stopped (its queue went away)"),
        Check::Foreign(why, st) => {
            log_foreign(key, &why, client.queue().id(), &st, &shown);
            return fallback(config, args, "the queue at kerneld's key is not kerneld's");
        }
        Check::Unknown(why) => {
            log::log(
                log::LOG_ERR,
                &format!(
                    "request for {shown:?} failed: cannot check the queue at key {key}: {why}"
                ),
            );
            return 1;
        }
    }
    let reply_id = kmod_ipc::wire::HELPER_ID_FIRST + i64::from(std::process::id());
    match client.request_served(
        MsgType::RequestModule,
        name.as_bytes(),
        reply_id,
        config.timeout,
    ) {
        Ok(r) if r.status == 0 => 0,
        // kerneld has logged why.
        Ok(_) => 1,
        Err(Error::NotServed { sent, .. }) => {
            fallback(config, args, &not_served(key, client.queue(), sent))
        }
        Err(Error::Removed) => fallback(config, args, "kerneld stopped while loading"),
        Err(e @ Error::Timeout(_)) => {
            // A fleet alerts on this one: kerneld is alive but stuck.
            log::event(
                log::LOG_WARNING,
                Some(log::Event::NoReply),
                &[
                    ("REQUEST", &shown),
                    ("KERNELD_KEY", &key.to_string()),
                    ("SHIM_TIMEOUT", &config.timeout.as_secs_f64().to_string()),
                ],
                &format!("request for {shown:?}: {e}"),
            );
            1
        }
        Err(e) => {
            log::log(log::LOG_ERR, &format!("request for {shown:?}: {e}"));
            1
        }
    }
}

/// Why a queue without a live kerneld falls back.
fn not_served(key: Key, queue: &Queue, sent: bool) -> String {
    format!(
        "{}{}",
        kmod_ipc::instances::left_behind(key, queue),
        if sent { "; request taken back" } else { "" }
    )
}

/// Log that a foreign queue sits at the key, at most once a minute: every
/// request while it is there says the same, and a squatter must not be
/// able to flood the log.  The stamp lives in kerneld's key directory,
/// root's alone.
fn log_foreign(key: Key, why: &str, qid: i32, st: &QueueStat, request: &str) {
    let stamp = kmod_ipc::instances::keys_dir().join(format!("{:#010x}.foreign", key.0 as u32));
    let recent = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|t| {
            t.elapsed()
                .is_ok_and(|age| age < std::time::Duration::from_secs(60))
        });
    if recent {
        return;
    }
    let _ = std::fs::write(&stamp, b"");
    log::event(
        log::LOG_ERR,
        Some(log::Event::ForeignQueue),
        &[
            ("REQUEST", request),
            ("KERNELD_KEY", &key.to_string()),
            ("QUEUE_ID", &qid.to_string()),
            ("QUEUE_UID", &st.uid.to_string()),
            ("QUEUE_CUID", &st.cuid.to_string()),
            ("QUEUE_MODE", &format!("{:03o}", st.mode & 0o777)),
        ],
        &format!(
            "{why}: handled as no kerneld running (shim-fallback decides). Someone may be \
             squatting kerneld's key; kerneld removes such a queue when it starts (or `ipcrm -q \
             {qid}`). Said at most once a minute"
        ),
    );
}

/// What the queue at the key is.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// kerneld's: root's (or our own user's, for tests run by hand), made
    /// by that user, nothing for group or others.
    Kerneld,
    /// Removed since we opened it.
    Gone,
    /// Anyone else's: why, and its figures.
    Foreign(String, QueueStat),
    /// IPC_STAT failed otherwise.
    Unknown(String),
}

/// Refuse a queue anyone but root (or our own user) could have made: its
/// owner would read the kernel's requests and answer them.  The daemon
/// creates its queue with mode 0600.
fn check_queue(queue: &Queue) -> Check {
    let st = match queue.stat() {
        Ok(st) => st,
        Err(Error::Removed) => return Check::Gone,
        Err(e) => return Check::Unknown(e.to_string()),
    };
    let euid = nix::unistd::geteuid().as_raw();
    let owner_ok = st.uid == st.cuid && (st.uid == 0 || st.uid == euid);
    if !owner_ok || st.mode & 0o077 != 0 {
        let why = format!(
            "the queue at key {} (id {}) is not kerneld's: owner uid {}, creator uid {}, mode {:03o} \
             (kerneld's is root's with mode 0600)",
            queue.key(),
            queue.id(),
            st.uid,
            st.cuid,
            st.mode & 0o777
        );
        return Check::Foreign(why, st);
    }
    Check::Kerneld
}

/// kerneld cannot be asked (`why`): exec the real modprobe with the same
/// arguments, or fail, as configured.  Returns only on failure.
fn fallback(config: &Config, args: &[OsString], why: &str) -> i32 {
    let modprobe = &config.modprobe;
    if config.fallback == Fallback::Fail {
        log::log(log::LOG_WARNING, &format!("{why}; shim-fallback = fail"));
        return 1;
    }
    if register::is_self(modprobe) {
        // Exec'ing ourselves would loop until the kernel gives up.
        log::log(
            log::LOG_ERR,
            &format!(
                "{why}; shim-modprobe {} is this program, not the real modprobe",
                modprobe.display()
            ),
        );
        return 1;
    }
    log::log(
        log::LOG_INFO,
        &format!("{why}; running {}", modprobe.display()),
    );
    let err = std::process::Command::new(modprobe)
        .arg0(modprobe)
        .args(args)
        .exec();
    log::log(
        log::LOG_ERR,
        &format!("cannot run {}: {err}", modprobe.display()),
    );
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_strs(args: &[&str]) -> String {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        format!("{:?}", classify(&v))
    }

    #[test]
    fn kernel_forms() {
        assert_eq!(classify_strs(&["-q", "--", "ppp"]), r#"Request("ppp")"#);
        assert_eq!(classify_strs(&["-q", "ppp"]), r#"Request("ppp")"#);
        assert_eq!(classify_strs(&["--", "-odd"]), r#"Request("-odd")"#);
        assert_eq!(classify_strs(&["ppp"]), r#"Request("ppp")"#);
    }

    #[test]
    fn other_forms() {
        assert_eq!(classify_strs(&["--help"]), "Help");
        assert_eq!(classify_strs(&["-h"]), "Help");
        assert_eq!(classify_strs(&["--version"]), "Version");
        assert_eq!(classify_strs(&["-V"]), "Version");
        assert_eq!(classify_strs(&["--register"]), "Register");
        assert_eq!(classify_strs(&["--unregister"]), "Unregister");
        assert_eq!(classify_strs(&["--show-config"]), "ShowConfig");
        for other in [
            &[][..],
            &["-q"],
            &["-q", "--"],
            &["-r", "ppp"],
            &["-q", "-odd"],
            &["a", "b"],
            &["--", ""],
            &["--help", "x"],
            &["-q", "-q", "ppp"],
        ] {
            assert_eq!(classify_strs(other), "Other", "{other:?}");
        }
    }
}

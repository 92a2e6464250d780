//! Start-up and stop of the daemon process: detaching with a start-up
//! pipe (the parent's exit status is the daemon's until it is ready), the
//! state directory (its checks, its lock, the pid file), and what a stop
//! undoes.

use crate::{fail, helper, instance, say, EXIT_RUNTIME};
use kerneld::operator::log;
use kerneld::operator::status::VERSION;
use kmod_ipc::files::{self, DirProblem};
use kmod_ipc::{Error as IpcError, Key, Queue};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What the daemon writes on the start-up pipe when it is ready; log lines
/// never hold a NUL.
const READY: &[u8] = b"\0ready\n";

/// What a stop undoes, also after a failed start.
pub(crate) struct Stopper {
    pub(crate) key: Key,
    pub(crate) queue: Queue,
    pub(crate) registration: Option<instance::Instance>,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) registered: Option<helper::Registered>,
}

impl Stopper {
    pub(crate) fn finish(&mut self) {
        if let Some(reg) = self.registered.take() {
            match helper::restore(&reg) {
                Ok(line) => log::notice(&line),
                Err(e) => log::error(&format!(
                    "could not put the previous module helper back: {e}; write it to \
                     /proc/sys/kernel/modprobe by hand (usually /sbin/modprobe)"
                )),
            }
        }
        // The queue goes only with the last instance serving it.
        match instance::KeyLock::acquire(self.key) {
            Ok(lock) => {
                let me = std::process::id();
                let others = lock.others(me);
                if others.is_empty() {
                    if let Err(e) = self.queue.remove() {
                        if !matches!(e, IpcError::Removed) {
                            log::warn(&format!("could not remove the queue: {e}"));
                        }
                    }
                } else {
                    let names: Vec<String> = others.iter().map(|o| o.describe()).collect();
                    log::notice(&format!(
                        "leaving the queue at key {} to the kerneld that still serve it: {}",
                        self.key,
                        names.join(", ")
                    ));
                }
                if let Some(r) = self.registration.take() {
                    r.leave();
                }
                lock.release(others.is_empty());
            }
            Err(e) => log::warn(&format!("{e}; leaving the queue in place")),
        }
        if let Some(p) = self.pid_file.take() {
            let ours = matches!(
                files::read_regular(&p, PID_FILE_MAX),
                Ok(Some(b)) if b.trim_ascii() == std::process::id().to_string().as_bytes()
            );
            if ours {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Longer than any pid file kerneld writes (`4194304\n`).
const PID_FILE_MAX: u64 = 64;

/// Create the state directory (mode 0700, owned by kerneld's user), or
/// check the one there: it must be a directory owned by kerneld's
/// effective user that neither group nor others may write, since whoever
/// can write it can replace the record (which modules kerneld unloads)
/// and the pid file.  One that is not is refused rather than changed:
/// kerneld may not have made it, and it may be shared (a `chmod` of
/// `/tmp` would break the system).  The fix is the operator's.
pub(crate) fn prepare_state_dir(dir: &Path) -> Result<(), StateDirError> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(StateDirError::Create(format!(
            "cannot create state directory {}: {e}",
            dir.display()
        )));
    }
    let meta = std::fs::metadata(dir).map_err(|e| {
        StateDirError::Create(format!(
            "cannot examine state directory {}: {e}",
            dir.display()
        ))
    })?;
    let why = match files::dir_problem(&meta) {
        None => return Ok(()),
        Some(DirProblem::NotDir) => format!(
            "state directory {} is not a directory; give --state-dir a directory of kerneld's own",
            dir.display()
        ),
        Some(DirProblem::Owner { uid, euid }) => format!(
            "state directory {} is owned by uid {uid}, not by kerneld's user (uid {euid}): \
             its owner could replace the record of loaded modules and the pid file; \
             give --state-dir a directory of kerneld's own, or chown {euid} {}",
            dir.display(),
            dir.display()
        ),
        Some(DirProblem::Writable { mode }) => format!(
            "state directory {} has mode {mode:04o}: {} may write it and could replace \
             the record of loaded modules and the pid file; give --state-dir a directory \
             of kerneld's own, or chmod go-w {}",
            dir.display(),
            match mode & 0o022 {
                0o020 => "its group",
                0o002 => "any user",
                _ => "its group and any user",
            },
            dir.display()
        ),
    };
    Err(StateDirError::Refused(why))
}

/// Why the state directory cannot be used.
#[derive(Debug)]
pub(crate) enum StateDirError {
    /// It could not be created or examined (a runtime failure).
    Create(String),
    /// It is there but not fit to keep kerneld's state (a configuration
    /// error).
    Refused(String),
}

/// Write `kerneld.pid` atomically: a new temporary file, renamed into
/// place.  The temporary's name is fixed: the state directory's lock,
/// held by now, keeps any other kerneld from writing there.
pub(crate) fn write_pid_file(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("kerneld.pid");
    let tmp = dir.join(".kerneld.pid.tmp");
    let text = format!("{}\n", std::process::id());
    files::replace(&path, &tmp, text.as_bytes(), 0o644)
        .map_err(|e| format!("cannot write the pid file: {e}"))?;
    Ok(path)
}

/// One kerneld per state directory: it owns the record there.
pub(crate) fn lock_state_dir(dir: &Path) -> Result<Flock<std::fs::File>, String> {
    let path = dir.join("kerneld.lock");
    let f = crate::instance::open_lock_file(&path)?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e != Errno::EWOULDBLOCK {
            return format!("cannot lock {}: {e}", path.display());
        }
        let pid = match files::read_regular(&dir.join("kerneld.pid"), PID_FILE_MAX) {
            Ok(Some(b)) => String::from_utf8_lossy(&b).trim().to_string(),
            _ => "unknown".into(),
        };
        format!(
            "another kerneld (pid {pid}) is running with state directory {}",
            dir.display()
        )
    })
}

pub(crate) enum Detached {
    /// In the parent: the exit status to return.
    Parent(ExitCode),
    /// In the daemon: the write end of the start-up pipe.
    Child(OwnedFd),
}

/// Fork.  The daemon continues detached (new session, stdin and stdout on
/// /dev/null) with its stderr on a pipe to the parent until it is ready.
/// The parent copies what comes through to its own stderr and exits 0 once
/// the daemon says it is ready, or with the daemon's exit status if it
/// ends first.
pub(crate) fn daemonize() -> Result<Detached, String> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no threads exist yet, so fork is safe; the child only
    // continues single-threaded start-up.
    match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
        ForkResult::Parent { child } => {
            drop(w);
            Ok(Detached::Parent(wait_for_daemon(r, child)))
        }
        ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            let _ = nix::unistd::chdir("/");
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
            }
            // fd 2 is a copy without O_CLOEXEC: programs run meanwhile
            // (the shim's --register) report there too.
            nix::unistd::dup2_stderr(&w).map_err(|e| format!("dup2: {e}"))?;
            Ok(Detached::Child(w))
        }
    }
}

/// Whether the parent shows a line of the daemon's start-up output:
/// problems (errors, warnings, anything not a log line, such as a panic),
/// not the notices a start logs anyway.
fn shown_at_startup(line: &[u8]) -> bool {
    !line.starts_with(b"kerneld: ")
        || line.starts_with(b"kerneld: error: ")
        || line.starts_with(b"kerneld: warning: ")
}

/// In the parent: relay the daemon's start-up problems; the exit status.
fn wait_for_daemon(pipe: OwnedFd, child: Pid) -> ExitCode {
    let mut pipe = std::fs::File::from(pipe);
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    let mut err = std::io::stderr();
    let marker = &READY[..READY.len() - 1];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if &line[..end] == marker {
                say(&format!(
                    "Starting kerneld, version {VERSION} (pid {child})"
                ));
                return ExitCode::SUCCESS;
            }
            if shown_at_startup(&line) {
                let _ = err.write_all(&line);
            }
        }
    }
    if !pending.is_empty() && shown_at_startup(&pending) {
        let _ = err.write_all(&pending);
        let _ = err.write_all(b"\n");
    }
    // The daemon ended before it was ready.
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => {
                let code = u8::try_from(code).unwrap_or(EXIT_RUNTIME);
                return ExitCode::from(if code == 0 { EXIT_RUNTIME } else { code });
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return fail(
                    EXIT_RUNTIME,
                    &format!("the daemon (pid {child}) was killed by {sig} while starting"),
                )
            }
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return fail(EXIT_RUNTIME, &format!("waiting for the daemon: {e}")),
        }
    }
}

/// In the daemon: tell the parent it is ready, and leave the terminal.
pub(crate) fn ready(pipe: OwnedFd) {
    let _ = nix::unistd::write(&pipe, READY);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(&null);
    }
    drop(pipe);
    log::init(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_marker_cannot_be_a_log_line() {
        assert_eq!(READY[0], 0);
        assert!(!shown_at_startup(b"kerneld: started, version 1\n"));
        assert!(shown_at_startup(b"kerneld: warning: no module index\n"));
        assert!(shown_at_startup(b"kerneld: error: --register failed\n"));
        assert!(shown_at_startup(b"thread 'main' panicked\n"));
    }
}

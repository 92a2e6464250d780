//! Interrupting a blocking `msgrcv`.
//!
//! SysV message queues have no timed receive.  Polling with `IPC_NOWAIT`
//! adds latency to every reply, so instead a blocking `msgrcv` is broken by
//! a signal: [`INTERRUPT_SIGNAL`] has a handler that does nothing and is
//! installed without `SA_RESTART`, so the call returns `EINTR`.
//!
//! [`Alarm`] aims a POSIX timer at the calling thread alone
//! (`SIGEV_THREAD_ID`), so other threads of the process are not disturbed.
//! The timer first fires at the deadline and then every 10 ms: if a signal
//! lands just before the thread enters `msgrcv`, the next one still breaks
//! it.  A daemon can use [`interrupt_thread`] to wake one of its threads
//! the same way (for example on shutdown).
//!
//! This stays raw libc, with each block's reason stated: nix's `Signal`
//! has no real-time signals (nix-rust/nix#495; PR #2451 is open), and its
//! `sigaction`, `pthread_kill`, `SigSet` and `SigevNotify::SigevThreadId`
//! all take a `Signal`.  A standard signal would fit nix but could clash
//! with a program's own use of it; the real-time one cannot.

use std::io;
use std::sync::Once;
use std::time::Duration;

/// The real-time signal used to break blocking receives.
pub fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn ignore(_: libc::c_int) {}

/// Install the do-nothing handler for [`interrupt_signal`] (once).
pub fn install_interrupt_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask
        // is a well-formed argument; the handler is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0; // no SA_RESTART: msgrcv must return EINTR
            libc::sigaction(interrupt_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// Send [`interrupt_signal`] to one thread of this process.
pub fn interrupt_thread(thread: libc::pthread_t) {
    install_interrupt_handler();
    // SAFETY: pthread_kill on a thread id of this process; a thread that
    // has exited makes it fail with ESRCH, which is harmless.
    unsafe {
        libc::pthread_kill(thread, interrupt_signal());
    }
}

/// A per-thread timer that interrupts blocking calls of this thread.
pub struct Alarm {
    timer: libc::timer_t,
    /// The signal was blocked in this thread before: block it again on drop.
    was_blocked: bool,
}

impl Alarm {
    /// Fire at `after`, then every 10 ms until dropped.  The signal is
    /// unblocked in this thread meanwhile: a thread that inherited a mask
    /// blocking all signals (as daemons using `sigwait` set up) would
    /// otherwise never be interrupted and wait past its timeout.
    pub fn arm(after: Duration) -> io::Result<Alarm> {
        install_interrupt_handler();
        let was_blocked = set_blocked(false);
        // SAFETY: sigevent is plain data; timer_create fills `timer`.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = interrupt_signal();
            sev.sigev_notify_thread_id = nix::unistd::gettid().as_raw();
            let mut timer: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
                let e = io::Error::last_os_error();
                if was_blocked {
                    set_blocked(true);
                }
                return Err(e);
            }
            let alarm = Alarm { timer, was_blocked };
            let first = if after.is_zero() {
                Duration::from_nanos(1)
            } else {
                after
            };
            let spec = libc::itimerspec {
                it_interval: to_timespec(Duration::from_millis(10)),
                it_value: to_timespec(first),
            };
            if libc::timer_settime(alarm.timer, 0, &spec, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(alarm)
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: the timer was created by timer_create and not yet deleted.
        unsafe {
            libc::timer_delete(self.timer);
        }
        if self.was_blocked {
            set_blocked(true);
        }
    }
}

/// Block or unblock [`interrupt_signal`] in the calling thread; returns
/// whether it was blocked before.
fn set_blocked(block: bool) -> bool {
    // SAFETY: the sets are initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, interrupt_signal());
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &set, &mut old);
        libc::sigismember(&old, interrupt_signal()) == 1
    }
}

fn to_timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        // Clamped: a huge duration must not wrap to a negative time.
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

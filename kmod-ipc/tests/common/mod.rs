//! Shared helpers for the integration tests: isolated queue keys and a guard
//! that removes the queue whatever happens to the test.

#![allow(dead_code)] // each test file uses a different subset

use kmod_ipc::{Error, Key, Queue, DEFAULT_KEY};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A key no queue uses right now.  Tests run as threads of one process and
/// other test processes may run beside them, so the key mixes a per-process
/// random seed, the pid and a counter, and is checked to be free.
pub fn free_key() -> Key {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        // Positive, non-zero (0 is IPC_PRIVATE), never the real daemon's.
        let key = Key((h.finish() as u32 & 0x7fff_ffff) as i32);
        if key.0 == 0 || key == DEFAULT_KEY {
            continue;
        }
        if let Err(Error::NotRunning { .. }) = Queue::open(key) {
            return key;
        }
    }
}

/// Owns a test queue and removes it on drop, also when the test panics.
/// Removing also wakes any thread of the test still blocked on it.
pub struct QueueGuard {
    pub queue: Queue,
}

impl QueueGuard {
    /// A fresh queue created the way the daemon does.
    pub fn create() -> QueueGuard {
        let key = free_key();
        let queue = Queue::create(key).expect("create test queue");
        QueueGuard { queue }
    }

    /// Take ownership of an already created queue.
    pub fn adopt(queue: Queue) -> QueueGuard {
        QueueGuard { queue }
    }

    pub fn key(&self) -> Key {
        self.queue.key()
    }
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        // The test may have removed it already.
        let _ = self.queue.remove();
    }
}

/// Run `f` on a thread and fail if it takes longer than `limit`; keeps a
/// broken test from hanging the whole run.  The thread is left behind on
/// failure (the queue guard's removal normally ends it).
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        // The thread panicked: pass its panic on.
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("sender dropped without sending or panicking"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("operation did not finish within {limit:?}"),
    }
}

/// Poll `cond` until true or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// The calling thread's kernel id.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

/// Wait until thread `tid` of this process sits blocked in system call
/// `nr`, so a test hits the "removed while waiting" path and not the
/// "already gone" one.  Where /proc does not show system calls, falls back
/// to a pause.
pub fn wait_blocked_in(tid: libc::pid_t, nr: libc::c_long) {
    let path = format!("/proc/self/task/{tid}/syscall");
    if std::fs::read_to_string(&path).is_err() {
        std::thread::sleep(Duration::from_millis(300));
        return;
    }
    let want = nr.to_string();
    let blocked = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&path)
            .map(|s| s.split_whitespace().next() == Some(want.as_str()))
            .unwrap_or(false)
    });
    assert!(blocked, "thread {tid} never blocked in system call {nr}");
}

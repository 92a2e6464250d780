//! Workers and libkmod contexts.
//!
//! Requests are served concurrently: a module's init may itself call
//! request_module() (sctp asks for crypto-crc32c while it loads), and a
//! daemon serving one request at a time would deadlock there.  Workers are
//! started on demand up to a bound and then reused.  libkmod contexts are
//! not thread-safe, so each action borrows one from a free list and
//! returns it afterwards; there are never more contexts than actions that
//! ran at once.

use crate::backend::{Backend, Host, Loader, Loaders, ModuleBackend, OnHost};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Task = Box<dyn FnOnce() + Send>;

struct State {
    queue: VecDeque<Task>,
    idle: usize,
    workers: usize,
    busy: usize,
}

/// A bounded pool of worker threads.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<(Mutex<State>, Condvar, Condvar)>,
    max: usize,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Pool {
        Pool {
            inner: Arc::new((
                Mutex::new(State {
                    queue: VecDeque::new(),
                    idle: 0,
                    workers: 0,
                    busy: 0,
                }),
                Condvar::new(),
                Condvar::new(),
            )),
            max: max.max(1),
        }
    }

    /// Run `task` on a worker; it waits in line when all are busy.
    pub(crate) fn execute(&self, task: impl FnOnce() + Send + 'static) {
        let (lock, work, _) = &*self.inner;
        let mut st = lock.lock().unwrap();
        st.queue.push_back(Box::new(task));
        if st.idle == 0 && st.workers < self.max {
            st.workers += 1;
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name("kerneld-worker".into())
                .spawn(move || pool.work());
            if spawned.is_err() {
                st.workers -= 1;
            }
        }
        work.notify_one();
    }

    fn work(&self) {
        let (lock, work, idle_cv) = &*self.inner;
        let mut st = lock.lock().unwrap();
        loop {
            if let Some(task) = st.queue.pop_front() {
                st.busy += 1;
                drop(st);
                // A panic in one action must not take a worker (or the
                // daemon) down; the action itself answers its waiters.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
                st = lock.lock().unwrap();
                st.busy -= 1;
                if st.busy == 0 && st.queue.is_empty() {
                    idle_cv.notify_all();
                }
                continue;
            }
            st.idle += 1;
            st = work.wait(st).unwrap();
            st.idle -= 1;
        }
    }

    /// Worker threads started so far.
    pub(crate) fn workers(&self) -> usize {
        self.inner.0.lock().unwrap().workers
    }

    /// Wait until nothing runs or waits, or the timeout passes.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, _, idle_cv) = &*self.inner;
        let mut st = lock.lock().unwrap();
        while st.busy > 0 || !st.queue.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = idle_cv.wait_timeout(st, left).unwrap().0;
        }
        true
    }
}

/// Idle contexts kept after a burst of concurrent actions.
const IDLE_CONTEXTS: usize = 8;

/// Free list of loaders (libkmod contexts, or a double), one borrowed
/// per action, over the one host.
pub(crate) struct Contexts {
    loaders: Loaders,
    host: Arc<dyn Host + Send + Sync>,
    free: Mutex<Vec<Box<dyn Loader + Send>>>,
}

impl Contexts {
    pub(crate) fn new(backend: &Backend) -> Contexts {
        Contexts {
            loaders: Arc::clone(&backend.loaders),
            host: Arc::clone(&backend.host),
            free: Mutex::new(Vec::new()),
        }
    }

    /// The host the loaders load into.
    pub(crate) fn host(&self) -> &dyn Host {
        &*self.host
    }

    /// Run `f` with a context of its own.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut dyn ModuleBackend) -> R) -> Result<R, String> {
        let taken = self.free.lock().unwrap().pop();
        let mut ctx = match taken {
            Some(c) => c,
            None => (self.loaders)()?,
        };
        let r = f(&mut OnHost {
            loader: ctx.as_mut(),
            host: &*self.host,
        });
        let mut free = self.free.lock().unwrap();
        // Keep a few for the next requests; a burst of concurrent actions
        // needed more, but their memory goes back once it is over.
        if free.len() < IDLE_CONTEXTS {
            free.push(ctx);
        }
        Ok(r)
    }

    /// Drop idle contexts, so that the next actions start from a fresh
    /// index and configuration (SIGHUP).
    pub(crate) fn clear(&self) {
        self.free.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn tasks_run_concurrently_up_to_the_bound() {
        let pool = Pool::new(4);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        for _ in 0..16 {
            let (r, p) = (running.clone(), peak.clone());
            pool.execute(move || {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                r.fetch_sub(1, Ordering::SeqCst);
            });
        }
        assert!(pool.wait_idle(Duration::from_secs(10)));
        assert!(peak.load(Ordering::SeqCst) > 1);
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert!(pool.workers() <= 4);
    }

    #[test]
    fn a_task_may_wait_for_another_task() {
        // The nested request case: an action that waits for a second one.
        let pool = Pool::new(2);
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = pool.clone();
        pool.execute(move || {
            let (itx, irx) = std::sync::mpsc::channel();
            p2.execute(move || itx.send(()).unwrap());
            irx.recv_timeout(Duration::from_secs(5)).unwrap();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_panicking_task_does_not_kill_the_pool() {
        let pool = Pool::new(1);
        pool.execute(|| panic!("boom"));
        let (tx, rx) = std::sync::mpsc::channel();
        pool.execute(move || tx.send(1).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    }
}

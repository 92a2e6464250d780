//! The harness of the daemon-level tests: a daemon on a private queue
//! over the fake kernel, and a counting allocator for the figure of
//! allocations per quick answer.

use crate::backend::fake::SharedFake;
use crate::config::Config;
use crate::server::{Daemon, Parts, Settings};
use crate::state::record::Record;
use kmod_ipc::{Key, Queue, TypeFilter};
use std::sync::Arc;

/// Removes the test's queue even when the test fails.
pub(crate) struct Removed(Queue);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}

impl std::ops::Deref for Removed {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.0
    }
}

/// A daemon on a private queue over the fake kernel.
pub(crate) fn daemon(fake: SharedFake, key: i32) -> (Arc<Daemon>, Removed) {
    let queue = Queue::create_unchecked(Key(key), 0o600).unwrap();
    let d = Daemon::new(Parts {
        settings: Settings {
            delay: 60,
            keep: false,
            debug: false,
        },
        config: Config::default(),
        queue: queue.clone(),
        filter: TypeFilter::UpTo(255),
        backend: fake.backend(),
        record: Record::in_memory(),
        fingerprint: Box::new(|| 0),
        tracer: None,
    });
    (d, Removed(queue))
}

/// A key of this test process (`n`: the test's own number).
pub(crate) fn test_key(n: i32) -> i32 {
    0x4b00_0000 | ((std::process::id() as i32 & 0xfff) << 8) | n
}

/// Counts the allocations of each thread, for the figure of allocations
/// per quick answer (README, benchmarks).
pub(crate) mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub(crate) struct Counting;

    thread_local! {
        pub(crate) static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: every call goes to the system allocator unchanged; the
    // count is a thread-local Cell with a const initialiser, which never
    // allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            count();
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            count();
            // SAFETY: the caller's contract, passed on.
            unsafe { System.realloc(p, l, n) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Allocations of this thread so far.
    pub(crate) fn now() -> u64 {
        ALLOCS.with(|c| c.get())
    }
}

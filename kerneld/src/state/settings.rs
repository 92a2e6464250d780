//! The settings kdstat can change live (delay, keep, debug), as atomics:
//! every request reads them, and none takes a lock to.

use crate::operator::log;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Settings that kdstat can change live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub delay: u64,
    pub keep: bool,
    pub debug: bool,
}

/// The live settings.  Writers are the control words and SIGHUP's debug
/// toggle; a reader sees each field as last written.
#[derive(Debug)]
pub(crate) struct LiveSettings {
    delay: AtomicU64,
    keep: AtomicBool,
    debug: AtomicBool,
}

impl LiveSettings {
    pub(crate) fn new(s: Settings) -> LiveSettings {
        log::set_debug(s.debug);
        LiveSettings {
            delay: AtomicU64::new(s.delay),
            keep: AtomicBool::new(s.keep),
            debug: AtomicBool::new(s.debug),
        }
    }

    pub(crate) fn get(&self) -> Settings {
        Settings {
            delay: self.delay(),
            keep: self.keep(),
            debug: self.debug.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn delay(&self) -> u64 {
        self.delay.load(Ordering::Relaxed)
    }

    pub(crate) fn keep(&self) -> bool {
        self.keep.load(Ordering::Relaxed)
    }

    /// Change the settings through `f`; the log follows `debug`.
    pub(crate) fn set(&self, f: impl FnOnce(&mut Settings)) {
        let mut s = self.get();
        f(&mut s);
        self.delay.store(s.delay, Ordering::Relaxed);
        self.keep.store(s.keep, Ordering::Relaxed);
        self.debug.store(s.debug, Ordering::Relaxed);
        log::set_debug(s.debug);
    }
}

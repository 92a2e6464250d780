//! The process from start to stop, around the daemon `main.rs` builds.
//!
//! - `startup`: detaching, the state directory's lock, the pid file, and
//!   what a stop undoes
//! - `signals`: the signal thread
//! - `notify`: sd_notify
//! - `helper`: registering the shim as the kernel's module helper
//! - `takeover`: sorting what a dead kerneld left on its queue
//! - `shim_server`: telling the in-kernel sender which kerneld serves it
//! - `fingerprint`: when the module index changed

pub(crate) mod fingerprint;
pub(crate) mod helper;
pub(crate) mod notify;
pub(crate) mod shim_server;
pub(crate) mod signals;
pub(crate) mod startup;
pub(crate) mod takeover;

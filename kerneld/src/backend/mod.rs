//! The module system behind a trait: what a request resolves to, loading
//! and unloading, and the module state the idle sweep reads.
//!
//! - `libkmod`: the only libkmod FFI (resolve, load, unload);
//! - `sysfs`: module state, the running release, whether the kernel takes
//!   modules at all;
//! - `netlink`: link kinds that keep a module busy without a reference;
//! - `fake` (feature `fake`, and unit tests): a double of all of it.
//!
//! Errors are [`Errno`], positive as in `errno(3)`: the FFI turns libkmod's
//! negative returns into it at the call, and nothing else sees a sign.

#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod libkmod;
pub mod netlink;
pub mod sysfs;

use crate::errno::errno_text;
pub use nix::errno::Errno;

/// What a requested name resolves to, without loading anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Modules the name resolves to (aliases expanded).
    pub candidates: Vec<String>,
    /// Every module modprobe would insert, dependencies and softdeps
    /// included, in load order; modules already in the kernel are left out.
    pub to_insert: Vec<String>,
    /// Candidates (or their dependencies) skipped by the modprobe.d
    /// blacklist, which applies to alias lookups as with `modprobe`.
    pub blacklisted: Vec<String>,
    /// Modules of `to_insert` that an install command of modprobe.d
    /// handles instead of an insertion.
    pub commands: Vec<String>,
}

/// Result of loading a requested name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOutcome {
    /// Modules inserted by this load (now live), in load order.
    pub inserted: Vec<String>,
    /// Install commands run instead of inserting, by module.
    pub commands_run: Vec<String>,
    /// Modules skipped because of the blacklist.
    pub blacklisted: Vec<String>,
    /// The failure when every candidate failed: module and errno (install
    /// command failure as `EIO`).
    pub error: Option<(String, Errno)>,
    /// Candidates that failed while another one succeeded (an alias such
    /// as crypto-crc32c names several modules; one that finds no hardware
    /// fails with ENODEV).  Like modprobe, the request still succeeds.
    pub partial_failures: Vec<(String, Errno)>,
}

/// State of a module in the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    NotLoaded,
    Builtin,
    /// Loaded; `refcnt` and holders tell whether anything uses it.
    Loaded {
        refcnt: u32,
        holders: Vec<String>,
        live: bool,
    },
}

impl Usage {
    /// Loaded, live, and neither referenced nor held.
    pub fn is_unused(&self) -> bool {
        matches!(self, Usage::Loaded { refcnt: 0, holders, live: true } if holders.is_empty())
    }
}

/// The module system kerneld drives: libkmod, sysfs and netlink on the
/// real kernel ([`libkmod::Kmod`]), or the double of the `fake` feature.
/// No method has a default that touches the host.
pub trait ModuleBackend {
    /// What `name` resolves to.
    fn resolve(&mut self, name: &str) -> Result<Resolution, Errno>;
    /// Load `name` as `modprobe -q name` does.
    fn load(&mut self, name: &str) -> Result<LoadOutcome, Errno>;
    /// Unload one module, never forced, never waiting.
    fn remove(&mut self, module: &str) -> Result<(), Errno>;
    /// The module's state in the kernel.
    fn usage(&self, module: &str) -> Usage;
    /// The network links that have a kind, as (ifindex, kind) (see
    /// [`netlink`]).
    fn links(&self) -> Vec<(i32, String)>;
    /// The errno with which the kernel refuses every insertion right now,
    /// if it does (see [`sysfs::insertion_refused`]).
    fn insertion_refused(&self) -> Option<Errno>;
}

/// A one-line reason for a failed load, for the reply text and the log.
pub fn load_error_text(module: &str, err: Errno) -> String {
    format!("could not insert {module}: {}", errno_text(err))
}

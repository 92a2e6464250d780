//! What the running kernel says about modules outside libkmod: module
//! state under /sys/module, the release, and whether it takes modules.

use super::{Errno, Usage};
use std::path::Path;

/// Whether the running kernel refuses every module insertion, and why:
/// `ENOSYS` without loadable module support, `EPERM` with
/// kernel.modules_disabled=1 or without CAP_SYS_MODULE.  Asked with
/// init_module(2) of an empty image: the kernel checks support and
/// permission first, so a kernel that would take modules answers ENOEXEC.
/// (Not finit_module: kernels before 3.8 lack it but load modules.)
/// Asked again each time, since modules_disabled can be set at any moment.
pub(crate) fn insertion_refused() -> Option<Errno> {
    match nix::kmod::init_module(&[], c"") {
        Err(e @ (Errno::ENOSYS | Errno::EPERM)) => Some(e),
        _ => None,
    }
}

/// The running kernel's release (`uname -r`).
pub(crate) fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A module's state read from sysfs (`/sys/module/NAME`): `initstate`
/// exists only for loadable modules; a directory without it is builtin.
pub(crate) fn sysfs_usage(root: &Path, module: &str) -> Usage {
    let dir = root.join(&*crate::names::normalise(module));
    let initstate = match std::fs::read_to_string(dir.join("initstate")) {
        Ok(s) => s,
        Err(_) if dir.is_dir() => return Usage::Builtin,
        Err(_) => return Usage::NotLoaded,
    };
    let refcnt = std::fs::read_to_string(dir.join("refcnt"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut holders: Vec<String> = std::fs::read_dir(dir.join("holders"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    holders.sort();
    Usage::Loaded {
        refcnt,
        holders,
        live: initstate.trim() == "live",
    }
}

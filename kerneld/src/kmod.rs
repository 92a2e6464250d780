//! libkmod, through `kmod-sys`: resolve a requested name, insert and remove
//! modules as `modprobe` does.
//!
//! The `kmod` crate's safe wrapper has no probe-insert (dependencies,
//! softdeps, install commands, blacklist), no index validation and no init
//! state, and does not expose its raw context, so this module wraps the few
//! `kmod-sys` calls kerneld needs itself.
//!
//! A [`Kmod`] context is not thread-safe (libkmod's README says so): each
//! is used by one worker at a time, see `pool.rs`.

use crate::errno::errno_text;
use kmod_sys as sys;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;

/// Where libkmod looks: the module directory (`/lib/modules/$(uname -r)`
/// when `None`) and the modprobe.d directories (libkmod's defaults when
/// empty).
#[derive(Debug, Clone, Default)]
pub struct KmodConfig {
    pub module_dir: Option<PathBuf>,
    pub config_dirs: Vec<PathBuf>,
}

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
    /// The failure when every candidate failed: module and negative errno
    /// (install command failure as `-EIO`).
    pub error: Option<(String, i32)>,
    /// Candidates that failed while another one succeeded (an alias such
    /// as crypto-crc32c names several modules; one that finds no hardware
    /// fails with ENODEV).  Like modprobe, the request still succeeds.
    pub partial_failures: Vec<(String, i32)>,
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

/// The module system kerneld drives: libkmod on the real kernel, or a
/// double in unit tests of the daemon's logic.
pub trait ModuleSystem {
    /// What `name` resolves to; `Err` is a negative errno.
    fn resolve(&mut self, name: &str) -> Result<Resolution, i32>;
    /// Load `name` as `modprobe -q name` does.
    fn load(&mut self, name: &str) -> Result<LoadOutcome, i32>;
    /// Unload one module, never forced, never waiting; `Err` is an errno.
    fn remove(&mut self, module: &str) -> Result<(), i32>;
    /// The module's state in the kernel.
    fn usage(&self, module: &str) -> Usage;
    /// The network links that have a kind, as (ifindex, kind) (see
    /// `links.rs`).
    fn links(&self) -> Vec<(i32, String)> {
        crate::links::links()
    }
    /// The negative errno with which the kernel refuses every insertion
    /// right now, if it does (see [`insertion_refused`]).
    fn insertion_refused(&self) -> Option<i32> {
        insertion_refused()
    }
}

/// Whether the running kernel refuses every module insertion, and why:
/// `-ENOSYS` without loadable module support, `-EPERM` with
/// kernel.modules_disabled=1 or without CAP_SYS_MODULE.  Asked with
/// init_module(2) of an empty image: the kernel checks support and
/// permission first, so a kernel that would take modules answers ENOEXEC.
/// (Not finit_module: kernels before 3.8 lack it but load modules.)
/// Asked again each time, since modules_disabled can be set at any moment.
pub fn insertion_refused() -> Option<i32> {
    // SAFETY: an image of length 0 is refused before anything is read
    // from it; nothing in the kernel changes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            ptr::null::<c_void>(),
            0usize,
            c"".as_ptr(),
        )
    };
    if r == 0 {
        return None;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(e @ (libc::ENOSYS | libc::EPERM)) => Some(-e),
        _ => None,
    }
}

/// A libkmod context.
pub struct Kmod {
    ctx: *mut sys::kmod_ctx,
    config: KmodConfig,
    /// `watch::generation()` when last validated (see `revalidate`).
    validated: u64,
}

// SAFETY: the context is only ever used by one thread at a time (it moves
// between workers through the pool); libkmod keeps no thread affinity.
unsafe impl Send for Kmod {}

impl Drop for Kmod {
    fn drop(&mut self) {
        // SAFETY: ctx came from kmod_new and is released once.
        unsafe {
            sys::kmod_unref(self.ctx);
        }
    }
}

thread_local! {
    /// Actions libkmod announces through `print_action` during a probe:
    /// (module name, is an install command).  The callback has no user
    /// data pointer, hence a thread-local.
    static ACTIONS: RefCell<Vec<(String, bool)>> = const { RefCell::new(Vec::new()) };
}

unsafe extern "C" fn record_action(m: *mut sys::kmod_module, install: bool, _opts: *const c_char) {
    let name = module_name(m);
    ACTIONS.with(|a| a.borrow_mut().push((name, install)));
}

/// Run an install command from modprobe.d.  The command is the
/// administrator's configuration, never text from a message; like modprobe,
/// it runs through /bin/sh with MODPROBE_MODULE set.
unsafe extern "C" fn run_install(
    m: *mut sys::kmod_module,
    cmdline: *const c_char,
    _data: *mut c_void,
) -> c_int {
    let cmd = CStr::from_ptr(cmdline).to_string_lossy().into_owned();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&cmd)
        .env("MODPROBE_MODULE", module_name(m))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => 0,
        _ => -libc::EIO,
    }
}

fn module_name(m: *const sys::kmod_module) -> String {
    // SAFETY: libkmod documents the name as always present.
    unsafe {
        let p = sys::kmod_module_get_name(m);
        if p.is_null() {
            return String::new();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// An owned `kmod_list` of modules.
struct ModuleList(*mut sys::kmod_list);

impl ModuleList {
    fn modules(&self) -> Vec<*mut sys::kmod_module> {
        let mut out = Vec::new();
        // SAFETY: walking a list owned by self with kmod_list_next.
        unsafe {
            let mut it = self.0;
            while !it.is_null() {
                out.push(sys::kmod_module_get_module(it));
                it = sys::kmod_list_next(self.0, it);
            }
        }
        out
    }
}

impl Drop for ModuleList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the list and its references are ours.
            unsafe {
                sys::kmod_module_unref_list(self.0);
            }
        }
    }
}

/// Module references taken with `kmod_module_get_module`, released on drop.
struct ModuleRefs(Vec<*mut sys::kmod_module>);

impl Drop for ModuleRefs {
    fn drop(&mut self) {
        for m in &self.0 {
            // SAFETY: each pointer holds one reference from get_module.
            unsafe {
                sys::kmod_module_unref(*m);
            }
        }
    }
}

const PROBE_FLAGS: u32 = sys::kmod_probe_KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY;

impl Kmod {
    /// A new context with its indexes loaded.
    pub fn new(config: &KmodConfig) -> Result<Kmod, String> {
        // Taken before loading: a change made meanwhile moves it on.
        let generation = crate::watch::generation();
        let dir = match &config.module_dir {
            Some(d) => Some(CString::new(d.as_os_str().as_bytes()).map_err(|e| e.to_string())?),
            None => None,
        };
        let conf: Vec<CString> = config
            .config_dirs
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let mut conf_ptrs: Vec<*const c_char> = conf.iter().map(|c| c.as_ptr()).collect();
        conf_ptrs.push(ptr::null());
        // SAFETY: the strings outlive the call; libkmod copies them.
        let ctx = unsafe {
            sys::kmod_new(
                dir.as_ref().map_or(ptr::null(), |d| d.as_ptr()),
                if conf.is_empty() {
                    ptr::null()
                } else {
                    conf_ptrs.as_ptr()
                },
            )
        };
        if ctx.is_null() {
            return Err(format!(
                "libkmod could not start (module directory {})",
                config
                    .module_dir
                    .as_deref()
                    .unwrap_or(Path::new("/lib/modules/<release>"))
                    .display()
            ));
        }
        // SAFETY: ctx is valid.  libkmod would log to stderr; kerneld logs
        // its own account of each action, so keep libkmod quiet.
        unsafe {
            sys::kmod_set_log_priority(ctx, libc::LOG_EMERG);
            sys::kmod_load_resources(ctx);
        }
        Ok(Kmod {
            ctx,
            config: config.clone(),
            validated: generation,
        })
    }

    /// Whether the module directory has its index (modules.dep.bin).
    pub fn index_present(config: &KmodConfig) -> bool {
        let dir = match &config.module_dir {
            Some(d) => d.clone(),
            None => {
                let rel = release();
                PathBuf::from("/lib/modules").join(rel)
            }
        };
        dir.join("modules.dep.bin").exists() || dir.join("modules.dep").exists()
    }

    /// Pick up a rewritten index or changed modprobe.d (depmod, package
    /// upgrades) before serving a request.
    /// Skipped while inotify reports no change since the last time
    /// (`kerneld::watch::generation`), which saves libkmod's stat() of
    /// every index and configuration file on each request.
    pub fn revalidate(&mut self) {
        let generation = crate::watch::generation();
        if generation != 0 && generation == self.validated {
            return;
        }
        self.validated = generation;
        // SAFETY: ctx is valid.
        let r = unsafe { sys::kmod_validate_resources(self.ctx) } as u32;
        if r == sys::kmod_resources_KMOD_RESOURCES_MUST_RELOAD {
            // SAFETY: ctx is valid.
            unsafe {
                sys::kmod_unload_resources(self.ctx);
                sys::kmod_load_resources(self.ctx);
            }
        } else if r == sys::kmod_resources_KMOD_RESOURCES_MUST_RECREATE {
            if let Ok(fresh) = Kmod::new(&self.config) {
                *self = fresh;
                self.validated = generation;
            }
        }
    }

    fn lookup(&self, name: &str) -> Result<ModuleList, i32> {
        let cname = CString::new(name).map_err(|_| -libc::EINVAL)?;
        let mut list: *mut sys::kmod_list = ptr::null_mut();
        // SAFETY: valid ctx and C string; list is ours on success.
        let r = unsafe { sys::kmod_module_new_from_lookup(self.ctx, cname.as_ptr(), &mut list) };
        let list = ModuleList(list);
        if r < 0 {
            return Err(r);
        }
        Ok(list)
    }

    fn probe(&self, m: *mut sys::kmod_module, flags: u32) -> (c_int, Vec<(String, bool)>) {
        ACTIONS.with(|a| a.borrow_mut().clear());
        // SAFETY: m is a live module reference; the callbacks match the
        // signatures libkmod expects.
        let r = unsafe {
            sys::kmod_module_probe_insert_module(
                m,
                flags,
                ptr::null(),
                Some(run_install),
                ptr::null(),
                Some(record_action),
            )
        };
        (r, ACTIONS.with(|a| std::mem::take(&mut *a.borrow_mut())))
    }

    /// The modules of `list` (found for `name`), if `name` is an alias and
    /// the modprobe.d blacklist names every one of them.  The blacklist
    /// applies to alias lookups only (KMOD_PROBE_APPLY_BLACKLIST_ALIAS_ONLY):
    /// a module asked for by its own name is never blacklisted.
    fn all_blacklisted(
        &self,
        name: &str,
        list: &ModuleList,
        modules: &[*mut sys::kmod_module],
    ) -> Option<Vec<String>> {
        let names: Vec<String> = modules.iter().map(|&m| module_name(m)).collect();
        // libkmod compares module names with '-' read as '_'.
        let own_name = name.replace('-', "_");
        if names.is_empty() || names.contains(&own_name) {
            return None;
        }
        let mut allowed: *mut sys::kmod_list = ptr::null_mut();
        // SAFETY: valid ctx and list; `allowed` is a new list we release.
        let r = unsafe {
            sys::kmod_module_apply_filter(
                self.ctx,
                sys::kmod_filter_KMOD_FILTER_BLACKLIST,
                list.0,
                &mut allowed,
            )
        };
        let allowed = ModuleList(allowed);
        (r == 0 && allowed.0.is_null()).then_some(names)
    }

    fn state_of(&self, module: &str) -> Option<u32> {
        let cname = CString::new(module).ok()?;
        let mut m: *mut sys::kmod_module = ptr::null_mut();
        // SAFETY: valid ctx; m is released below.
        unsafe {
            if sys::kmod_module_new_from_name(self.ctx, cname.as_ptr(), &mut m) < 0 {
                return None;
            }
            let s = sys::kmod_module_get_initstate(m);
            sys::kmod_module_unref(m);
            (s >= 0).then_some(s as u32)
        }
    }
}

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    // SAFETY: utsname is plain data filled by uname.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

impl ModuleSystem for Kmod {
    fn resolve(&mut self, name: &str) -> Result<Resolution, i32> {
        self.revalidate();
        let list = self.lookup(name)?;
        let refs = ModuleRefs(list.modules());
        let mut res = Resolution::default();
        if let Some(all) = self.all_blacklisted(name, &list, &refs.0) {
            // An alias whose every module is blacklisted loads nothing, as
            // modprobe's probe would conclude, with status 0 either way;
            // without the dry run, which first asks sysfs whether each
            // module is loaded (and would then say "already loaded").
            res.candidates = all.clone();
            res.blacklisted = all;
            return Ok(res);
        }
        for &m in &refs.0 {
            push_unique(&mut res.candidates, module_name(m));
            let (r, actions) = self.probe(m, PROBE_FLAGS | sys::kmod_probe_KMOD_PROBE_DRY_RUN);
            if r > 0 {
                push_unique(&mut res.blacklisted, module_name(m));
            }
            for (a, install) in actions {
                if install {
                    push_unique(&mut res.commands, a.clone());
                }
                push_unique(&mut res.to_insert, a);
            }
        }
        Ok(res)
    }

    fn load(&mut self, name: &str) -> Result<LoadOutcome, i32> {
        self.revalidate();
        let list = self.lookup(name)?;
        let refs = ModuleRefs(list.modules());
        let mut out = LoadOutcome::default();
        let mut failures = Vec::new();
        let mut any_ok = false;
        for &m in &refs.0 {
            let (r, actions) = self.probe(m, PROBE_FLAGS);
            if r > 0 {
                push_unique(&mut out.blacklisted, module_name(m));
            } else if r < 0 {
                // The module that failed is the last one libkmod announced.
                let culprit = actions
                    .last()
                    .map(|(n, _)| n.clone())
                    .unwrap_or_else(|| module_name(m));
                failures.push((culprit, r));
            } else {
                any_ok = true;
            }
            for (a, install) in actions {
                if install {
                    push_unique(&mut out.commands_run, a);
                } else if self.state_of(&a) == Some(sys::kmod_module_initstate_KMOD_MODULE_LIVE) {
                    push_unique(&mut out.inserted, a);
                }
            }
        }
        if any_ok {
            out.partial_failures = failures;
        } else {
            out.error = failures.into_iter().next();
        }
        Ok(out)
    }

    fn remove(&mut self, module: &str) -> Result<(), i32> {
        let cname = CString::new(module).map_err(|_| libc::EINVAL)?;
        let mut m: *mut sys::kmod_module = ptr::null_mut();
        // SAFETY: valid ctx; m released below.  NOWAIT (O_NONBLOCK) is
        // never forced: an in-use module stays.
        unsafe {
            let r = sys::kmod_module_new_from_name(self.ctx, cname.as_ptr(), &mut m);
            if r < 0 {
                return Err(-r);
            }
            let r = sys::kmod_module_remove_module(m, sys::kmod_remove_KMOD_REMOVE_NOWAIT);
            sys::kmod_module_unref(m);
            if r < 0 {
                return Err(-r);
            }
        }
        Ok(())
    }

    fn usage(&self, module: &str) -> Usage {
        sysfs_usage(Path::new("/sys/module"), module)
    }
}

/// A module's state read from sysfs (`/sys/module/NAME`): `initstate`
/// exists only for loadable modules; a directory without it is builtin.
pub fn sysfs_usage(root: &Path, module: &str) -> Usage {
    let dir = root.join(module.replace('-', "_"));
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

/// A one-line reason for a failed load, for the reply text and the log.
pub fn load_error_text(module: &str, err: i32) -> String {
    format!("could not insert {module}: {}", errno_text(-err))
}

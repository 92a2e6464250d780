//! libkmod, through `kmod-sys`: resolve a requested name, insert and remove
//! modules as `modprobe` does, and read modules.dep lists.  With
//! `modinfo.rs` beside it (module files), the only libkmod FFI of kerneld.
//!
//! The `kmod` crate's safe wrapper has no probe-insert (dependencies,
//! softdeps, install commands, blacklist), no index validation and no init
//! state, and does not expose its raw context, so this module wraps the few
//! `kmod-sys` calls kerneld needs itself.  libkmod returns negative errnos;
//! they become [`Errno`] here, at the call.
//!
//! A [`Kmod`] context is not thread-safe (libkmod's README says so): each
//! is used by one worker at a time, see `pool.rs`.

use super::modinfo::{self, ProvenanceCache};
use super::{Backend, Config, Errno, Kernel, LoadOutcome, Loader, Loaders, Provenance, Resolution};
use kmod_sys as sys;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;
use std::sync::Arc;

/// The modprobe.d directories libkmod reads when given none.
const DEFAULT_CONFIG_DIRS: [&str; 5] = [
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/lib/modprobe.d",
];

/// The modprobe.d directories (or files) a context reads.
fn config_paths(config: &Config) -> Vec<PathBuf> {
    if config.config_dirs.is_empty() {
        DEFAULT_CONFIG_DIRS.iter().map(PathBuf::from).collect()
    } else {
        config.config_dirs.clone()
    }
}

/// libkmod over the running kernel, warning when the module directory
/// has no index.
pub(super) fn open(config: &Config) -> Backend {
    let module_dir = config.module_dir();
    if !index_present(&module_dir) {
        crate::operator::log::warn(&format!(
            "no module index in {}: every request will be answered 'not found' until depmod runs",
            module_dir.display()
        ));
    }
    let made = config.clone();
    let loaders: Loaders =
        Arc::new(move || Kmod::new(&made).map(|k| Box::new(k) as Box<dyn Loader + Send>));
    Backend {
        loaders,
        host: Arc::new(Kernel),
        watched: watched(&module_dir, config),
        module_dir,
    }
}

/// Whether the module directory has its index (modules.dep.bin).
fn index_present(module_dir: &Path) -> bool {
    module_dir.join("modules.dep.bin").exists() || module_dir.join("modules.dep").exists()
}

/// What the index fingerprint reads: index files, and modprobe.d
/// directories whose entries count too.
fn watched(module_dir: &Path, config: &Config) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let files = [
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.softdep",
        "modules.builtin.bin",
    ]
    .iter()
    .map(|f| module_dir.join(f))
    .collect();
    (files, config_paths(config))
}

/// A value that changes when anything libkmod read from modprobe.d may
/// have: a directory's entries, or any file's inode, size, time or text.
/// libkmod's own check (`kmod_validate_resources`) compares only the
/// directories' times, so an edit in place (`echo blacklist x >> f.conf`)
/// would go unseen until the context is made again.  The text counts too:
/// a rewrite of the same size within one tick of the file system's clock
/// leaves the times as they were.  Read only after inotify reported a
/// change (see `revalidate`).
fn config_stamp(paths: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stamp = |p: &Path| {
        p.hash(&mut h);
        // Through symbolic links, as libkmod opens them.
        match std::fs::metadata(p) {
            Ok(m) => {
                (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(&mut h);
                if m.is_file() {
                    std::fs::read(p).ok().hash(&mut h);
                }
            }
            Err(e) => e.kind().hash(&mut h),
        }
    };
    for d in paths {
        stamp(d);
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            entries.sort();
            entries.iter().for_each(|e| stamp(e));
        }
    }
    h.finish()
}

/// A libkmod context.
pub(crate) struct Kmod {
    ctx: *mut sys::kmod_ctx,
    config: Config,
    /// `watch::generation()` when last validated (see `revalidate`).
    validated: u64,
    /// [`config_stamp`] of modprobe.d as the context read it.
    config_stamp: u64,
    /// Provenance read from module files (reading one decompresses the
    /// whole file).
    provenance: ProvenanceCache,
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
    // SAFETY: libkmod passes the install command as a NUL-terminated
    // string that lives for the duration of this call.
    let cmd = unsafe { CStr::from_ptr(cmdline) }
        .to_string_lossy()
        .into_owned();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&cmd)
        .env("MODPROBE_MODULE", module_name(m))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => 0,
        _ => -(Errno::EIO as c_int),
    }
}

/// modules.dep's list of the live module `m`: every module it needs.
fn dependencies(m: *mut sys::kmod_module) -> Vec<String> {
    // SAFETY: m is live; the list is ours.
    let list = ModuleList(unsafe { sys::kmod_module_get_dependencies(m) });
    let refs = ModuleRefs(list.modules());
    refs.0.iter().map(|&d| module_name(d)).collect()
}

pub(super) fn module_name(m: *const sys::kmod_module) -> String {
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
pub(super) struct ModuleList(pub(super) *mut sys::kmod_list);

impl ModuleList {
    pub(super) fn modules(&self) -> Vec<*mut sys::kmod_module> {
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
pub(super) struct ModuleRefs(pub(super) Vec<*mut sys::kmod_module>);

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
    fn new(config: &Config) -> Result<Kmod, String> {
        // Taken before loading: a change made meanwhile moves them on.
        let generation = crate::backend::watch::generation();
        let config_stamp = config_stamp(&config_paths(config));
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
            config_stamp,
            provenance: ProvenanceCache::default(),
        })
    }

    /// Pick up a rewritten index or changed modprobe.d (depmod, package
    /// upgrades, an edit in place) before serving a request.
    /// Skipped while inotify reports no change since the last time
    /// (`kerneld::backend::watch::generation`), which saves libkmod's stat() of
    /// every index and configuration file on each request.
    fn revalidate(&mut self) {
        let generation = crate::backend::watch::generation();
        if generation != 0 && generation == self.validated {
            return;
        }
        self.validated = generation;
        // SAFETY: ctx is valid.
        let mut r = unsafe { sys::kmod_validate_resources(self.ctx) } as u32;
        // modprobe.d is parsed when the context is made: any change to
        // it, even one libkmod does not notice, calls for a new one.
        if config_stamp(&config_paths(&self.config)) != self.config_stamp {
            r = sys::kmod_resources_KMOD_RESOURCES_MUST_RECREATE;
        }
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

    fn lookup(&self, name: &str) -> Result<ModuleList, Errno> {
        let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
        let mut list: *mut sys::kmod_list = ptr::null_mut();
        // SAFETY: valid ctx and C string; list is ours on success.
        let r = unsafe { sys::kmod_module_new_from_lookup(self.ctx, cname.as_ptr(), &mut list) };
        let list = ModuleList(list);
        if r < 0 {
            return Err(Errno::from_raw(-r));
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
        if names.is_empty() || names.iter().any(|n| crate::names::same_module(n, name)) {
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

    /// A module reference by name (released by the caller).
    fn module(&self, name: &str) -> Option<ModuleRefs> {
        let cname = CString::new(name).ok()?;
        let mut m: *mut sys::kmod_module = ptr::null_mut();
        // SAFETY: valid ctx and C string; the reference is ours.
        let r = unsafe { sys::kmod_module_new_from_name(self.ctx, cname.as_ptr(), &mut m) };
        (r >= 0 && !m.is_null()).then(|| ModuleRefs(vec![m]))
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

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

impl Loader for Kmod {
    fn provenance(&mut self, module: &str) -> Option<Provenance> {
        let m = self.module(module)?;
        self.provenance.of(m.0[0])
    }

    fn resolve(&mut self, name: &str) -> Result<Resolution, Errno> {
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
        res.pulled_in_by = modinfo::pulled_in_by(&res.to_insert, &res.candidates, |name| {
            self.module(name)
                .map_or_else(Vec::new, |m| dependencies(m.0[0]))
        });
        Ok(res)
    }

    fn load(&mut self, name: &str) -> Result<LoadOutcome, Errno> {
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
                failures.push((culprit, Errno::from_raw(-r)));
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

    fn remove(&mut self, module: &str) -> Result<(), Errno> {
        let cname = CString::new(module).map_err(|_| Errno::EINVAL)?;
        let mut m: *mut sys::kmod_module = ptr::null_mut();
        // SAFETY: valid ctx; m released below.  NOWAIT (O_NONBLOCK) is
        // never forced: an in-use module stays.
        unsafe {
            let r = sys::kmod_module_new_from_name(self.ctx, cname.as_ptr(), &mut m);
            if r < 0 {
                return Err(Errno::from_raw(-r));
            }
            let r = sys::kmod_module_remove_module(m, sys::kmod_remove_KMOD_REMOVE_NOWAIT);
            sys::kmod_module_unref(m);
            if r < 0 {
                return Err(Errno::from_raw(-r));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::config_stamp;

    /// Each edit libkmod's own check misses moves the stamp: a line
    /// appended, a file rewritten in place, a file added, renamed away
    /// (only *.conf is read) and removed.
    #[test]
    fn config_stamp_sees_edits_in_place() {
        let dir = std::env::temp_dir().join(format!("kerneld-stamp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f.conf");
        std::fs::write(&f, "blacklist a\n").unwrap();
        let paths = vec![dir.clone(), dir.join("missing.d")];
        let mut last = config_stamp(&paths);
        assert_eq!(config_stamp(&paths), last, "nothing changed");
        let mut step = |what: &str, change: &dyn Fn()| {
            change();
            let now = config_stamp(&paths);
            assert_ne!(now, last, "{what}");
            last = now;
        };
        step("append", &|| {
            use std::io::Write;
            let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
            h.write_all(b"blacklist b\n").unwrap();
        });
        step("rewrite", &|| std::fs::write(&f, "blacklist c\n").unwrap());
        // Same size, and the time may not have moved: the text differs.
        step("same size", &|| {
            std::fs::write(&f, "blacklist d\n").unwrap()
        });
        step("new file", &|| {
            std::fs::write(dir.join("g.conf"), "alias x y\n").unwrap()
        });
        step("rename", &|| {
            std::fs::rename(dir.join("g.conf"), dir.join("g.conf.off")).unwrap()
        });
        step("remove", &|| {
            std::fs::remove_file(dir.join("g.conf.off")).unwrap()
        });
        step("directory appears", &|| {
            std::fs::create_dir(dir.join("missing.d")).unwrap()
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}

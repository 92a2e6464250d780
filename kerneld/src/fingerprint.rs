//! The module index's fingerprint: what tells the negative cache that
//! depmod ran or modprobe.d changed.

use kerneld::backend::libkmod::KmodConfig;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// What the index fingerprint reads: index files, and modprobe.d
/// directories whose entries count too.
pub fn fingerprint_paths(cfg: &KmodConfig) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let module_dir = cfg
        .module_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/lib/modules").join(kerneld::backend::sysfs::release()));
    let files = [
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.softdep",
        "modules.builtin.bin",
    ]
    .iter()
    .map(|f| module_dir.join(f))
    .collect();
    let dirs = cfg.config_paths();
    (files, dirs)
}

/// A value that changes whenever the module index or modprobe.d changes
/// (depmod renames new index files into place; editors and package
/// managers touch the .conf files).  Computed again only when inotify
/// reports a change to one of these paths (see `kerneld::watch`).
pub fn index_fingerprint(files: &[PathBuf], dirs: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let stamp = |p: &Path, h: &mut std::collections::hash_map::DefaultHasher| {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(p) {
            (m.ino(), m.mtime(), m.mtime_nsec(), m.size()).hash(h);
        }
    };
    for f in files {
        stamp(f, &mut h);
    }
    for d in dirs {
        stamp(d, &mut h);
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                stamp(&e.path(), &mut h);
            }
        }
    }
    h.finish()
}

//! The module index's fingerprint: what tells the negative cache that
//! depmod ran or modprobe.d changed.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// A value that changes whenever the module index or modprobe.d changes
/// (depmod renames new index files into place; editors and package
/// managers touch the .conf files).  Computed again only when inotify
/// reports a change to one of these paths (see `kerneld::backend::watch`).
pub(crate) fn index_fingerprint(files: &[PathBuf], dirs: &[PathBuf]) -> u64 {
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

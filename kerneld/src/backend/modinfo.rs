//! What libkmod reads about a module beyond resolving and probing it: the
//! provenance of its file (signature and modinfo fields), cached by path
//! while the file's size and mtime stay; and, from the modules.dep lists
//! `libkmod.rs` reads, the closure's "pulled in by".  libkmod FFI on the
//! module handles `libkmod.rs` gives it; it needs nothing else of it.

use super::{Errno, Provenance};
use kmod_sys as sys;
use std::collections::HashMap;
use std::ffi::CStr;
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

/// Files read at most before the cache starts over.
const CACHED_FILES: usize = 4096;

/// Provenance read from module files, by path, with the file's (size,
/// mtime) when read: reading it decompresses the whole file.
#[derive(Default)]
pub(super) struct ProvenanceCache {
    by_path: HashMap<PathBuf, ((u64, i64), Provenance)>,
}

impl ProvenanceCache {
    /// The provenance of the live module `m`'s file, read again only when
    /// the file changed.  None: builtin, or libkmod cannot read the file.
    pub(super) fn of(&mut self, m: *const sys::kmod_module) -> Option<Provenance> {
        let path = module_path(m)?;
        let stamp = file_stamp(&path)?;
        if let Some((at, p)) = self.by_path.get(&path) {
            if *at == stamp {
                return Some(p.clone());
            }
        }
        let p = read_provenance(m).ok()?;
        if self.by_path.len() >= CACHED_FILES {
            self.by_path.clear();
        }
        self.by_path.insert(path, (stamp, p.clone()));
        Some(p)
    }
}

/// A module's path in the index (None: builtin or unknown).
fn module_path(m: *const sys::kmod_module) -> Option<PathBuf> {
    // SAFETY: m is a live module; the string belongs to it.
    unsafe {
        let p = sys::kmod_module_get_path(m);
        if p.is_null() {
            return None;
        }
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(
            CStr::from_ptr(p).to_bytes(),
        )))
    }
}

/// The signature and modinfo fields of a module file, through
/// `kmod_module_get_info` (which decompresses .ko.xz/.ko.zst/.ko.gz as
/// modinfo does).  Err: libkmod could not read the file.
fn read_provenance(m: *const sys::kmod_module) -> Result<Provenance, Errno> {
    let mut list: *mut sys::kmod_list = ptr::null_mut();
    // SAFETY: m is live; the list is ours and freed below.
    let r = unsafe { sys::kmod_module_get_info(m, &mut list) };
    if r < 0 {
        return Err(Errno::from_raw(-r));
    }
    let mut p = Provenance::default();
    // SAFETY: walking the list libkmod gave us; key and value strings
    // belong to the list and are copied before it is freed.
    unsafe {
        let mut it = list;
        while !it.is_null() {
            let text = |s: *const c_char| {
                if s.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(s).to_string_lossy().into_owned()
                }
            };
            let key = text(sys::kmod_module_info_get_key(it));
            let value = text(sys::kmod_module_info_get_value(it));
            match key.as_str() {
                "sig_id" | "signature" => p.signed = true,
                "signer" => {
                    p.signed = true;
                    p.signer = value;
                }
                "sig_key" => p.sig_key = value,
                "sig_hashalgo" => p.sig_hashalgo = value,
                "intree" => p.intree = value == "Y",
                _ => {}
            }
            it = sys::kmod_list_next(list, it);
        }
        sys::kmod_module_info_free_list(list);
    }
    Ok(p)
}

/// Size and mtime of a file, to tell whether a cached reading still holds.
fn file_stamp(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    Some((md.size(), md.mtime() * 1_000_000_000 + md.mtime_nsec()))
}

/// For each module of `to_insert` that is not a candidate, the first
/// module after it in load order that needs it (`dependencies_of`: its
/// modules.dep list); a module none needs came as a softdep of the
/// candidate it was probed for (`first`).
pub(super) fn pulled_in_by(
    to_insert: &[String],
    candidates: &[String],
    dependencies_of: impl Fn(&str) -> Vec<String>,
) -> Vec<(String, String)> {
    if to_insert.len() < 2 {
        return Vec::new();
    }
    let deps: Vec<Vec<String>> = to_insert.iter().map(|m| dependencies_of(m)).collect();
    let mut out = Vec::new();
    for (i, m) in to_insert.iter().enumerate() {
        if candidates.contains(m) {
            continue;
        }
        let by = (i + 1..to_insert.len())
            .find(|&j| deps[j].contains(m))
            .map(|j| to_insert[j].clone())
            .or_else(|| {
                to_insert[i + 1..]
                    .iter()
                    .find(|x| candidates.contains(x))
                    .cloned()
            });
        if let Some(by) = by {
            out.push((m.clone(), by));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_module_is_pulled_in_by_its_first_dependant_or_the_candidate() {
        // can_bcm needs can; crc32c comes as a softdep of can_bcm.
        let to_insert = names(&["crc32c", "can", "can_bcm"]);
        let candidates = names(&["can_bcm"]);
        let by = pulled_in_by(&to_insert, &candidates, |m| match m {
            "can_bcm" => names(&["can"]),
            _ => Vec::new(),
        });
        assert_eq!(
            by,
            vec![
                ("crc32c".to_string(), "can_bcm".to_string()),
                ("can".to_string(), "can_bcm".to_string()),
            ]
        );
        let alone = pulled_in_by(&candidates, &candidates, |_| unreachable!());
        assert!(alone.is_empty());
    }
}

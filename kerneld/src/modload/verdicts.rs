//! The verdicts the BPF program applies: every module file of the tree,
//! keyed by the SHA-256 of its content as stored (what
//! bpf_ima_file_hash() gives for the file finit_module(2) reads), judged
//! by the module rules as a request for the module itself would be.
//!
//! A file has no requester: rules with requester conditions (uid, comm,
//! cgroup) are judged as for an unknown requester (the policy's
//! `unknown-requester`).  Provenance conditions (signed, signer, intree)
//! are judged from the file, as on the request path.

use crate::backend::Provenance;
use crate::policy::Policy;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    /// The value in the program's map (VERDICT_ALLOW, VERDICT_DENY).
    #[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
    pub(crate) fn value(self) -> u32 {
        match self {
            Verdict::Allow => 1,
            Verdict::Deny => 2,
        }
    }
}

/// The verdicts for a module tree.
#[derive(Debug, Default)]
pub struct Verdicts {
    pub(crate) by_hash: HashMap<[u8; 32], Verdict>,
    /// Files judged, and of them denied.
    pub files: usize,
    pub(crate) denied: usize,
    /// Files compressed (.ko.xz, .ko.zst, .ko.gz).
    pub(crate) compressed: usize,
    /// Files that could not be read (with why), judged as unknown.
    pub(crate) unreadable: Vec<String>,
}

/// `dummy` for `.../dummy.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`; `-` becomes
/// `_` as the kernel names modules.  None: not a module file.
pub(crate) fn module_of_file(path: &str) -> Option<String> {
    let base = path.rsplit('/').next()?;
    let stem = ["", ".xz", ".zst", ".gz"]
        .iter()
        .find_map(|c| base.strip_suffix(&format!(".ko{c}")))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

/// Every module file under `dir` (symlinks not followed: the tree's own
/// files only), sorted.
pub fn module_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            let path = entry.path();
            if ty.is_dir() {
                todo.push(path);
            } else if ty.is_file() && path.to_str().and_then(module_of_file).is_some() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Judge every module file under `dir` with `policy`'s rules;
/// `provenance` reads a module's provenance when a rule needs it.
pub fn compute(
    dir: &Path,
    policy: &Policy,
    provenance: &mut dyn FnMut(&str) -> Option<Provenance>,
) -> std::io::Result<Verdicts> {
    // A copy of the rules: judging the tree must not count as hits.
    let mut policy = policy.clone();
    policy.set_rules((*policy.rules).clone());
    let mut v = Verdicts::default();
    for path in module_files(dir)? {
        let Some(name) = path.to_str().and_then(module_of_file) else {
            continue;
        };
        let hash = match sha256_file(&path) {
            Ok(h) => h,
            Err(e) => {
                v.unreadable.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let prov = if policy.needs_provenance_of(&name) {
            provenance(&name)
        } else {
            None
        };
        let d = policy.decide_with(&name, std::slice::from_ref(&name), &[prov], None);
        let verdict = if d.allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        v.files += 1;
        if !path.to_string_lossy().ends_with(".ko") {
            v.compressed += 1;
        }
        // Two files of one content: a deny of either wins.
        let slot = v.by_hash.entry(hash).or_insert(verdict);
        if verdict == Verdict::Deny {
            *slot = Verdict::Deny;
        }
    }
    v.denied = v.by_hash.values().filter(|x| **x == Verdict::Deny).count();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_come_from_file_names() {
        assert_eq!(module_of_file("/a/b/dummy.ko.xz").as_deref(), Some("dummy"));
        assert_eq!(module_of_file("nf-tables.ko").as_deref(), Some("nf_tables"));
        assert_eq!(module_of_file("x.ko.zst").as_deref(), Some("x"));
        assert_eq!(module_of_file("modules.dep"), None);
        assert_eq!(module_of_file("/a/.ko"), None);
    }

    #[test]
    fn the_tree_is_judged_by_content_with_the_module_rules() {
        let dir = std::env::temp_dir().join(format!("kerneld-verdicts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kernel/net")).unwrap();
        std::fs::write(dir.join("kernel/net/dccp.ko.xz"), b"dccp bytes").unwrap();
        std::fs::write(dir.join("kernel/dummy.ko"), b"dummy bytes").unwrap();
        std::fs::write(dir.join("modules.dep"), b"not a module").unwrap();
        let p = Policy::from_lines(&["deny module dccp*"]);
        let mut asked = Vec::new();
        let v = compute(&dir, &p, &mut |m| {
            asked.push(m.to_string());
            None
        })
        .unwrap();
        assert_eq!((v.files, v.denied, v.compressed), (2, 1, 1));
        let dccp = sha256_file(&dir.join("kernel/net/dccp.ko.xz")).unwrap();
        let dummy = sha256_file(&dir.join("kernel/dummy.ko")).unwrap();
        assert_eq!(v.by_hash[&dccp], Verdict::Deny);
        assert_eq!(v.by_hash[&dummy], Verdict::Allow);
        // No provenance rule: no file is read for it.
        assert!(asked.is_empty());
        // The tree's judging is no hit of the rule.
        assert_eq!(
            p.rules[0].hits.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // One content under two names: deny wins.
        std::fs::write(dir.join("kernel/copy.ko"), b"dccp bytes").unwrap();
        let v = compute(
            &dir,
            &Policy::from_lines(&["deny module dccp"]),
            &mut |_| None,
        )
        .unwrap();
        assert_eq!(v.by_hash[&dccp], Verdict::Deny);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn provenance_rules_read_the_files_they_name() {
        let dir = std::env::temp_dir().join(format!("kerneld-verdicts-p-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.ko"), b"a").unwrap();
        std::fs::write(dir.join("b.ko"), b"b").unwrap();
        let p = Policy::from_lines(&["deny module * if !signed"]);
        let v = compute(&dir, &p, &mut |m| {
            Some(Provenance {
                signed: m == "a",
                ..Provenance::default()
            })
        })
        .unwrap();
        assert_eq!(
            v.by_hash[&sha256_file(&dir.join("a.ko")).unwrap()],
            Verdict::Allow
        );
        assert_eq!(
            v.by_hash[&sha256_file(&dir.join("b.ko")).unwrap()],
            Verdict::Deny
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! kerneld's caches of answers end when what they were drawn from changes:
//! depmod rewriting the module index, or a file added to modprobe.d.  The
//! real daemon, real libkmod, the real depmod on a small module tree.
//!
//! Needs the binaries (`cargo build --workspace --bins`), kmod's depmod,
//! and the Debian module tree (fetched by `tests/vm/fetch-kernel.sh 6.12`,
//! which the tests call themselves).

use kerneld_tests::daemon::{debian_tree, Kerneld};
use kerneld_tests::fake::TempDir;
use kmod_ipc::{MsgType, Reply};
use std::path::{Path, PathBuf};
use std::process::Command;

fn request(k: &Kerneld, name: &str) -> Reply {
    k.request(MsgType::RequestModule, name)
}

fn text(r: &Reply) -> String {
    r.text_lossy()
}

/// Ask twice for `name`, which nothing provides yet: the second answer
/// comes from the negative cache.
fn cache_not_found(k: &Kerneld, name: &str) {
    assert_eq!(text(&request(k, name)), format!("{name}: not found"));
    assert_eq!(
        text(&request(k, name)),
        format!("{name}: not found (cached)")
    );
}

/// kerneld tried to load dummy for `name` (here the insertion is refused,
/// or on a kernel with module support the module may load): the name
/// resolved, so no cached "not found" answered.
fn assert_resolves_to_dummy(r: &Reply, name: &str) {
    let t = text(r);
    assert!(
        r.status == 0 || t.starts_with(&format!("{name}: could not insert dummy")),
        "{name} did not resolve to dummy: {r:?}"
    );
}

/// ROOT/lib/modules/VERSION with no modules, indexed by depmod.
struct Tree {
    _root: TempDir,
    root: PathBuf,
    version: String,
}

impl Tree {
    fn new() -> Tree {
        let root = TempDir::new();
        let version = debian_tree()
            .file_name()
            .expect("module dir has a name")
            .to_string_lossy()
            .into_owned();
        let tree = Tree {
            root: root.join(""),
            _root: root,
            version,
        };
        std::fs::create_dir_all(tree.dir().join("kernel")).expect("create module tree");
        tree.depmod();
        tree
    }

    fn dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }

    /// Rewrite the index, as a package manager does after installing modules.
    fn depmod(&self) {
        let out = Command::new("depmod")
            .arg("-b")
            .arg(&self.root)
            .arg(&self.version)
            .output()
            .expect("run depmod (package kmod)");
        assert!(out.status.success(), "depmod: {out:?}");
    }

    /// Install dummy.ko.xz from the Debian tree.
    fn add(&self, module: &Path) {
        let from = debian_tree().join(module);
        let to = self.dir().join("kernel").join(module.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

#[test]
fn depmod_rewriting_the_index_ends_cached_answers() {
    let tree = Tree::new();
    let k = Kerneld::builder()
        .module_dir(&tree.dir())
        .config("negative-cache = 600\n")
        .start();
    cache_not_found(&k, "rtnl-link-dummy");
    tree.add(Path::new("kernel/drivers/net/dummy.ko.xz"));
    // The module file alone changes nothing: the index does not name it.
    assert_eq!(
        text(&request(&k, "rtnl-link-dummy")),
        "rtnl-link-dummy: not found (cached)"
    );
    tree.depmod();
    assert_resolves_to_dummy(&request(&k, "rtnl-link-dummy"), "rtnl-link-dummy");
}

#[test]
fn an_alias_added_to_modprobe_d_ends_cached_answers() {
    let k = Kerneld::builder()
        .debian_tree()
        .config("negative-cache = 600\n")
        .start();
    cache_not_found(&k, "kdtest-later");
    let conf = k.dir().join("modprobe.d/later.conf");
    std::fs::write(&conf, "alias kdtest-later dummy\n").expect("write modprobe.d file");
    assert_resolves_to_dummy(&request(&k, "kdtest-later"), "kdtest-later");
    // And when the alias goes, so does the answer drawn from it.
    std::fs::remove_file(&conf).expect("remove modprobe.d file");
    assert_eq!(
        text(&request(&k, "kdtest-later")),
        "kdtest-later: not found"
    );
}

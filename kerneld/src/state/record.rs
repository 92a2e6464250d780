//! The modules kerneld loaded, and their expiry.
//!
//! Today's kernels have no autoclean flag, so kerneld keeps its own record
//! of what it loaded (and the dependencies it pulled in), in
//! `<state-dir>/loaded.json` so that it survives a restart.
//!
//! A sweep runs every `delay` seconds.  A recorded module that is unused
//! (refcount 0, no holders) at two consecutive sweeps is unloaded: the
//! second chance Linux 2.2's autoclean gave, so that a module unused for a
//! moment is not thrown out.  Unloading a module also unloads the recorded
//! dependencies that only it held, in the same sweep, as `modprobe -r`
//! does.  Modules on the keep-list, builtins and modules kerneld did not
//! load are never touched.

use crate::backend::netlink::{serves_kind, serves_live_link};
use crate::backend::{Errno, ModuleBackend, Resolution, Usage};
use crate::policy::pattern::Pattern;
use crate::who::requester::Requester;
use kmod_ipc::files;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The largest record kerneld reads at start, in bytes.  An entry takes
/// at most about 600 bytes as written (requester with cgroup and
/// namespaces, rule and dependencies included), so 16 MiB holds some
/// 28,000 modules: every module of a distribution's kernel (about 6,000)
/// several times over.  A larger file
/// is not a record kerneld wrote: reading and parsing it would hold up
/// the start.
pub(crate) const RECORD_MAX: u64 = 16 << 20;

/// One module kerneld loaded, as kept in `loaded.json` (an object of
/// module name to entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Entry {
    /// The name that was requested (`rtnl-link-dummy`).
    pub(crate) requested_as: String,
    /// Other modules loaded with it by the same request.
    pub(crate) dependencies: Vec<String>,
    /// Unix time of loading.
    pub(crate) loaded_at: u64,
    /// Consecutive sweeps that found it unused.
    pub(crate) unused_sweeps: u32,
    /// When a sweep first found it unused (not persisted).
    #[serde(skip)]
    pub(crate) idle_since: Option<Instant>,
    /// Links (ifindex) the module made itself while loading (`dummy0`);
    /// they do not keep it in use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) own_links: Vec<i32>,
    /// Who asked, as traced (None: unknown).  Records written before
    /// kerneld kept it lack this and the next two fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) requester: Option<Requester>,
    /// The policy rule that allowed the request (`default` without one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) allowed_by: String,
    /// The module of the same request that needed it (a dependency) or
    /// softdep'ed it; absent for the module asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pulled_in_by: Option<String>,
}

/// What one sweep or release did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Removal {
    /// Modules unloaded.
    pub(crate) removed: Vec<String>,
    /// Modules that could not be unloaded, with the errno.
    pub(crate) failed: Vec<(String, Errno)>,
}

/// The record, kept in memory and on disk.
#[derive(Debug, Default)]
pub struct Record {
    file: Option<PathBuf>,
    pub(crate) modules: BTreeMap<String, Entry>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

use crate::names::{normalise, same_module};

impl Record {
    /// A record kept only in memory (tests).
    pub fn in_memory() -> Record {
        Record::default()
    }

    /// Load `<dir>/loaded.json`.  Only a regular file of at most
    /// [`RECORD_MAX`] bytes is read, never through a link and never
    /// waiting on it (see [`files::read_regular`]); one that is not,
    /// cannot be read or is corrupt is moved aside to
    /// `loaded.json.corrupt` and reported, and the record starts empty.
    pub fn load(dir: &Path) -> (Record, Option<String>) {
        let file = dir.join("loaded.json");
        let problem = match files::read_regular(&file, RECORD_MAX) {
            Ok(None) => None,
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(modules) => {
                    let file = Some(file);
                    return (Record { file, modules }, None);
                }
                Err(e) => Some(format!("is corrupt ({e})")),
            },
            Err(files::Unusable(why)) => Some(why),
        };
        let warning = problem.map(|why| {
            // rename moves a link or a FIFO itself, never what it names.
            let aside = dir.join("loaded.json.corrupt");
            match std::fs::rename(&file, &aside) {
                Ok(()) => format!(
                    "{} {why}; moved to {}, starting with an empty record",
                    file.display(),
                    aside.display()
                ),
                Err(e) => format!(
                    "{} {why}; could not move it to {} ({e}): remove it by hand; \
                     starting with an empty record",
                    file.display(),
                    aside.display()
                ),
            }
        });
        let record = Record {
            file: Some(file),
            modules: BTreeMap::new(),
        };
        (record, warning)
    }

    /// Whether kerneld loaded `name` (and has not unloaded it).
    pub(crate) fn holds(&self, name: &str) -> bool {
        self.modules.keys().any(|k| same_module(k, name))
    }

    /// Write the record (atomically: a new temporary file, then rename;
    /// never through a link planted at either name).
    pub fn save(&self) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let dir = file.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = file.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(&self.modules).map_err(|e| e.to_string())?;
        files::replace(file, &tmp, &json, 0o600)
    }

    /// Note modules inserted for a request.  `candidates` are the modules
    /// the name resolved to; the rest are their dependencies.
    #[cfg(test)]
    pub(crate) fn add(&mut self, requested_as: &str, candidates: &[String], inserted: &[String]) {
        let res = Resolution {
            candidates: candidates.to_vec(),
            ..Resolution::default()
        };
        self.add_for(requested_as, &res, inserted, None);
    }

    /// Note modules inserted for a request, keeping why: the requester, the rule that allowed
    /// the request and which module pulled in each dependency (from the
    /// resolution the request was decided on).
    pub fn add_for(
        &mut self,
        requested_as: &str,
        res: &Resolution,
        inserted: &[String],
        who: Option<&Requester>,
    ) {
        let candidates = &res.candidates;
        let at = now_unix();
        for m in inserted {
            let deps = if candidates.iter().any(|c| same_module(c, m)) {
                inserted
                    .iter()
                    .filter(|d| !candidates.iter().any(|c| same_module(c, d)))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            self.modules.insert(
                normalise(m).into_owned(),
                Entry {
                    requested_as: requested_as.to_string(),
                    dependencies: deps,
                    loaded_at: at,
                    unused_sweeps: 0,
                    idle_since: None,
                    own_links: Vec::new(),
                    requester: who.cloned(),
                    allowed_by: if res.allowed_by.is_empty() {
                        "default".to_string()
                    } else {
                        res.allowed_by.clone()
                    },
                    pulled_in_by: res.pulled_in_by(m).map(str::to_string).or_else(|| {
                        // Not a candidate and unknown to the resolution:
                        // it came with the (first) candidate.
                        (!candidates.iter().any(|c| same_module(c, m)))
                            .then(|| candidates.first().cloned())
                            .flatten()
                    }),
                },
            );
        }
    }

    /// Right after loading `inserted` (before the requester, still waiting
    /// for the answer, can create its link): the links that exist now and
    /// that they serve are their own, made by their init.
    pub fn note_own_links(&mut self, inserted: &[String], links: &[(i32, String)]) {
        for m in inserted {
            if let Some(e) = self.modules.get_mut(&*normalise(m)) {
                e.own_links = links
                    .iter()
                    .filter(|(_, k)| serves_kind(m, &e.requested_as, k))
                    .map(|(i, _)| *i)
                    .collect();
            }
        }
    }

    /// Whether kerneld loaded this module.
    #[cfg(test)]
    pub(crate) fn contains(&self, module: &str) -> bool {
        self.modules.contains_key(&*normalise(module))
    }

    /// A sweep: count unused sweeps, unload modules unused at two in a row
    /// (unless kept), forget modules that are gone.
    pub(crate) fn sweep(&mut self, sys: &mut dyn ModuleBackend, keep: &[Pattern]) -> Removal {
        let now = Instant::now();
        let links = sys.links();
        let names: Vec<String> = self.modules.keys().cloned().collect();
        let mut due = Vec::new();
        for name in names {
            let usage = sys.usage(&name);
            let Some(e) = self.modules.get_mut(&name) else {
                continue;
            };
            match usage {
                Usage::NotLoaded | Usage::Builtin => {
                    self.modules.remove(&name);
                }
                u if u.is_unused()
                    && !serves_live_link(&name, &e.requested_as, &links, &e.own_links) =>
                {
                    e.unused_sweeps += 1;
                    e.idle_since.get_or_insert(now);
                    if e.unused_sweeps >= 2 && !is_kept(&name, keep) {
                        due.push(name);
                    }
                }
                _ => {
                    e.unused_sweeps = 0;
                    e.idle_since = None;
                }
            }
        }
        let mut out = Removal::default();
        for name in due {
            if self.modules.contains_key(&name) {
                self.remove_with_deps(sys, &name, keep, &mut out);
            }
        }
        out
    }

    /// Unload `module` (never forced) and then the recorded modules that
    /// only it held and that are now unused.  For release requests and
    /// sweeps alike; a module kerneld did not load is still unloaded when
    /// asked for by name, but only recorded ones are followed.
    pub(crate) fn remove_with_deps(
        &mut self,
        sys: &mut dyn ModuleBackend,
        module: &str,
        keep: &[Pattern],
        out: &mut Removal,
    ) {
        let module = normalise(module).into_owned();
        // Which recorded modules does it hold?  Read before it is gone.
        let held: Vec<String> = self
            .modules
            .keys()
            .filter(|m| **m != module)
            .filter(|m| matches!(sys.usage(m), Usage::Loaded { ref holders, .. } if holders.iter().any(|h| same_module(h, &module))))
            .cloned()
            .collect();
        match sys.remove(&module) {
            Ok(()) => {
                self.modules.remove(&module);
                out.removed.push(module);
            }
            Err(e) => {
                if let Some(entry) = self.modules.get_mut(&module) {
                    entry.unused_sweeps = 0;
                    entry.idle_since = None;
                }
                out.failed.push((module, e));
                return;
            }
        }
        for dep in held {
            if self.modules.contains_key(&dep)
                && !is_kept(&dep, keep)
                && sys.usage(&dep).is_unused()
            {
                self.remove_with_deps(sys, &dep, keep, out);
            }
        }
    }
}

fn is_kept(module: &str, keep: &[Pattern]) -> bool {
    keep.iter().any(|k| k.matches(module))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeKernel;
    use crate::backend::{Host, Loader};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn unused_module_goes_after_two_sweeps() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        k.load("rtnl-link-dummy").unwrap();
        let mut r = Record::in_memory();
        r.add("rtnl-link-dummy", &s(&["dummy"]), &s(&["dummy"]));
        assert!(
            r.sweep(&mut k, &[]).removed.is_empty(),
            "first sweep: second chance"
        );
        assert_eq!(r.modules["dummy"].unused_sweeps, 1);
        assert_eq!(r.sweep(&mut k, &[]).removed, ["dummy"]);
        assert_eq!(k.usage("dummy"), Usage::NotLoaded);
        assert!(r.modules.is_empty());
    }

    #[test]
    fn used_module_stays_and_resets_its_count() {
        let mut k = FakeKernel::with_tree(&[("tun", &[])]);
        k.load("tun").unwrap();
        let mut r = Record::in_memory();
        r.add("char-major-10-200", &s(&["tun"]), &s(&["tun"]));
        r.sweep(&mut k, &[]);
        k.set_refcnt("tun", 1);
        r.sweep(&mut k, &[]);
        r.sweep(&mut k, &[]);
        assert_eq!(r.modules["tun"].unused_sweeps, 0);
        assert!(matches!(k.usage("tun"), Usage::Loaded { .. }));
        k.set_refcnt("tun", 0);
        r.sweep(&mut k, &[]);
        assert_eq!(r.sweep(&mut k, &[]).removed, ["tun"]);
    }

    #[test]
    fn dependencies_go_with_their_holder_in_one_sweep() {
        let mut k =
            FakeKernel::with_tree(&[("bridge", &["stp", "llc"]), ("stp", &["llc"]), ("llc", &[])]);
        let out = k.load("bridge").unwrap();
        assert_eq!(out.inserted, ["llc", "stp", "bridge"]);
        let mut r = Record::in_memory();
        r.add("rtnl-link-bridge", &s(&["bridge"]), &out.inserted);
        assert_eq!(r.modules["bridge"].dependencies, ["llc", "stp"]);
        r.sweep(&mut k, &[]);
        let removed = r.sweep(&mut k, &[]).removed;
        assert_eq!(removed, ["bridge", "stp", "llc"]);
        assert!(r.modules.is_empty());
    }

    #[test]
    fn a_module_serving_a_live_link_stays() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        k.load("rtnl-link-dummy").unwrap();
        // dummy0, made by the module's init, exists when the load returns.
        k.links.push((2, "dummy".into()));
        let mut r = Record::in_memory();
        r.add("rtnl-link-dummy", &s(&["dummy"]), &s(&["dummy"]));
        r.note_own_links(&s(&["dummy"]), &k.links.clone());
        assert_eq!(r.modules["dummy"].own_links, [2]);
        // The user's d0 comes after.
        k.links.push((3, "dummy".into()));
        for _ in 0..3 {
            assert!(r.sweep(&mut k, &[]).removed.is_empty());
        }
        k.links.retain(|(i, _)| *i != 3);
        r.sweep(&mut k, &[]);
        assert_eq!(r.sweep(&mut k, &[]).removed, ["dummy"]);
    }

    #[test]
    fn keep_list_and_foreign_modules_are_never_unloaded() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[]), ("can", &[]), ("e1000e", &[])]);
        k.load("dummy").unwrap();
        k.load("can").unwrap(); // loaded by hand: not in the record
        k.load("e1000e").unwrap();
        let mut r = Record::in_memory();
        r.add("rtnl-link-dummy", &s(&["dummy"]), &s(&["dummy"]));
        r.add("e1000e", &s(&["e1000e"]), &s(&["e1000e"]));
        for _ in 0..4 {
            r.sweep(&mut k, &[Pattern::module("e1000*").unwrap()]);
        }
        assert_eq!(k.usage("dummy"), Usage::NotLoaded);
        assert!(matches!(k.usage("can"), Usage::Loaded { .. }));
        assert!(matches!(k.usage("e1000e"), Usage::Loaded { .. }));
    }

    #[test]
    fn a_shared_dependency_stays_while_another_holder_needs_it() {
        let mut k =
            FakeKernel::with_tree(&[("a", &["common"]), ("b", &["common"]), ("common", &[])]);
        let out_a = k.load("a").unwrap();
        let out_b = k.load("b").unwrap();
        let mut r = Record::in_memory();
        r.add("a", &s(&["a"]), &out_a.inserted);
        r.add("b", &s(&["b"]), &out_b.inserted);
        k.set_refcnt("b", 1);
        r.sweep(&mut k, &[]);
        assert_eq!(r.sweep(&mut k, &[]).removed, ["a"]);
        assert!(matches!(k.usage("common"), Usage::Loaded { .. }));
        assert!(r.contains("common"));
    }

    #[test]
    fn modules_unloaded_by_others_are_forgotten() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]);
        k.load("dummy").unwrap();
        let mut r = Record::in_memory();
        r.add("x", &s(&["dummy"]), &s(&["dummy"]));
        k.remove("dummy").unwrap();
        r.sweep(&mut k, &[]);
        assert!(r.modules.is_empty());
    }

    #[test]
    fn why_is_kept_and_old_records_still_load() {
        let mut k =
            FakeKernel::with_tree(&[("bridge", &["stp", "llc"]), ("stp", &["llc"]), ("llc", &[])])
                .alias("rtnl-link-bridge", "bridge");
        let mut res = k.resolve("rtnl-link-bridge").unwrap();
        res.allowed_by = "allow module * if signed (test:1)".into();
        let who = Requester {
            pid: 802,
            uid: 1000,
            comm: "ip".into(),
            parent_comm: "bash".into(),
            ..Requester::default()
        };
        let out = k.load("rtnl-link-bridge").unwrap();
        let dir = std::env::temp_dir().join(format!("kerneld-record-why-{}", std::process::id()));
        let (mut r, _) = Record::load(&dir);
        r.add_for("rtnl-link-bridge", &res, &out.inserted, Some(&who));
        assert_eq!(r.modules["llc"].pulled_in_by.as_deref(), Some("stp"));
        assert_eq!(r.modules["stp"].pulled_in_by.as_deref(), Some("bridge"));
        assert_eq!(r.modules["bridge"].pulled_in_by, None);
        r.save().unwrap();
        let (back, _) = Record::load(&dir);
        assert_eq!(back.modules, r.modules);
        let e = &back.modules["stp"];
        assert_eq!(e.requester.as_ref().unwrap().parent_comm, "bash");
        assert_eq!(e.allowed_by, "allow module * if signed (test:1)");
        // A record written before these fields existed.
        std::fs::write(
            dir.join("loaded.json"),
            br#"{"dummy":{"requested_as":"rtnl-link-dummy","dependencies":[],"loaded_at":5,"unused_sweeps":0}}"#,
        )
        .unwrap();
        let (old, w) = Record::load(&dir);
        assert!(w.is_none(), "{w:?}");
        let e = &old.modules["dummy"];
        assert_eq!((e.requester.as_ref(), e.allowed_by.as_str()), (None, ""));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// RECORD_MAX holds 10,000 entries as full as they get in practice
    /// (requester with cgroup and namespaces, a rule, dependencies).
    #[test]
    fn the_size_cap_holds_thousands_of_modules() {
        let who = Requester {
            pid: 4_194_304,
            uid: 1000,
            gid: 1000,
            comm: "NetworkManager".into(),
            cgroup: "/system.slice/NetworkManager.service".into(),
            namespaces: vec!["net:[4026531840]".into(), "mnt:[4026531841]".into()],
            parent_comm: "systemd".into(),
        };
        let res = Resolution {
            candidates: s(&["nf_conntrack_netlink_helper"]),
            allowed_by: "allow module nf_* if requester-uid = 0 (/etc/kerneld.conf:42)".into(),
            ..Resolution::default()
        };
        let mut r = Record::in_memory();
        // Three modules per request: 10,002 entries.
        for i in 0..3_334 {
            let m = format!("nf_conntrack_netlink_helper_{i}");
            let deps = [
                m.clone(),
                format!("nf_conntrack_{i}"),
                format!("nfnetlink_{i}"),
            ];
            let res = Resolution {
                candidates: vec![m.clone()],
                ..res.clone()
            };
            r.add_for(&format!("net-pf-16-proto-12-{i}"), &res, &deps, Some(&who));
        }
        let bytes = serde_json::to_vec_pretty(&r.modules).unwrap();
        assert_eq!(r.modules.len(), 10_002);
        assert!((bytes.len() as u64) < RECORD_MAX, "{} bytes", bytes.len());
        eprintln!("{} bytes for {} entries", bytes.len(), r.modules.len());
    }

    /// What is not a regular file of bounded size is moved aside, never
    /// read (a FIFO would block, a link to /dev/zero never end).
    #[test]
    fn records_that_are_not_regular_files_are_moved_aside() {
        let dir = std::env::temp_dir().join(format!("kerneld-record-odd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("loaded.json");
        let aside = dir.join("loaded.json.corrupt");
        let fifo = || nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let link = || std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        let big = || {
            let f = std::fs::File::create(&file).unwrap();
            f.set_len(RECORD_MAX + 1).unwrap();
        };
        let cases: [(&dyn Fn(), &str); 3] = [
            (&fifo, "is a FIFO, not a regular file"),
            (&link, "is a symbolic link"),
            (&big, "more than the 16777216 bytes"),
        ];
        for (make, want) in cases {
            make();
            let (r, w) = Record::load(&dir);
            let w = w.expect("a warning");
            assert!(r.modules.is_empty());
            assert!(w.contains(want), "{w}");
            assert!(w.contains(&format!("moved to {}", aside.display())), "{w}");
            assert!(std::fs::symlink_metadata(&file).is_err(), "{w}");
            std::fs::remove_file(&aside).unwrap();
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn record_survives_save_and_load() {
        let dir = std::env::temp_dir().join(format!("kerneld-record-{}", std::process::id()));
        let (mut r, w) = Record::load(&dir);
        assert!(w.is_none());
        r.add("rtnl-link-bridge", &s(&["bridge"]), &s(&["stp", "bridge"]));
        r.save().unwrap();
        let (back, _) = Record::load(&dir);
        assert_eq!(back.modules, r.modules);
        std::fs::write(dir.join("loaded.json"), b"{not json").unwrap();
        let (empty, w) = Record::load(&dir);
        assert!(empty.modules.is_empty());
        assert!(w.unwrap().contains("corrupt"));
        std::fs::remove_dir_all(&dir).ok();
    }
}

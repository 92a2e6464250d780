//! A double of the kernel and libkmod for unit tests of the daemon's
//! logic (merging, timers, expiry), and for the fuzz targets (feature
//! `fake`; it is not in the release library).  It never stands in for the real
//! kernel test, which boots a real kernel (tests/vm).

use super::{Backend, Errno, Host, LoadOutcome, Loader, Loaders, Provenance, Resolution, Usage};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct FakeKernel {
    /// Module name -> its direct dependencies.
    tree: BTreeMap<String, Vec<String>>,
    /// Alias -> module.
    aliases: HashMap<String, String>,
    /// Loaded module -> refcount.
    loaded: BTreeMap<String, u32>,
    /// Real load actions performed, by requested name.
    pub(crate) loads: Vec<String>,
    /// How long a load takes.
    pub(crate) load_time: Duration,
    /// Network links that exist, as (ifindex, kind).
    pub(crate) links: Vec<(i32, String)>,
    /// Refuse every insertion with this errno (a kernel without
    /// module support, or with kernel.modules_disabled=1).
    pub(crate) refuse_insertions: Option<Errno>,
    /// Provenance of modules that differ from the default (signed by
    /// [`FAKE_SIGNER`], in-tree).
    pub(crate) provenance: HashMap<String, Provenance>,
}

/// The signer of the fake tree's modules, unless set otherwise.
pub(crate) const FAKE_SIGNER: &str = "Fake kernel key";

impl FakeKernel {
    pub fn with_tree(tree: &[(&str, &[&str])]) -> FakeKernel {
        FakeKernel {
            tree: tree
                .iter()
                .map(|(m, d)| (m.to_string(), d.iter().map(|s| s.to_string()).collect()))
                .collect(),
            ..FakeKernel::default()
        }
    }

    pub fn alias(mut self, alias: &str, module: &str) -> FakeKernel {
        self.aliases.insert(alias.into(), module.into());
        self
    }

    /// Give `module` this provenance (an unsigned or out-of-tree module).
    #[cfg(test)]
    pub(crate) fn with_provenance(mut self, module: &str, p: Provenance) -> FakeKernel {
        self.provenance.insert(module.into(), p);
        self
    }

    #[cfg(test)]
    pub(crate) fn set_refcnt(&mut self, m: &str, n: u32) {
        if let Some(r) = self.loaded.get_mut(m) {
            *r = n;
        }
    }

    fn target(&self, name: &str) -> Option<String> {
        if self.tree.contains_key(name) {
            return Some(name.to_string());
        }
        self.aliases.get(name).cloned()
    }

    /// Dependencies first, then the module (as libkmod orders them).
    fn order(&self, m: &str, out: &mut Vec<String>) {
        for d in self.tree.get(m).into_iter().flatten() {
            self.order(d, out);
        }
        if !out.iter().any(|x| x == m) {
            out.push(m.to_string());
        }
    }

    pub fn shared(self) -> SharedFake {
        SharedFake(Arc::new(Mutex::new(self)))
    }
}

impl Loader for FakeKernel {
    fn provenance(&mut self, module: &str) -> Option<Provenance> {
        if let Some(p) = self.provenance.get(module) {
            return Some(p.clone());
        }
        self.tree.contains_key(module).then(|| Provenance {
            signed: true,
            signer: FAKE_SIGNER.into(),
            sig_key: "00:11:22".into(),
            sig_hashalgo: "sha256".into(),
            intree: true,
        })
    }

    fn resolve(&mut self, name: &str) -> Result<Resolution, Errno> {
        let Some(t) = self.target(name) else {
            return Ok(Resolution::default());
        };
        let mut all = Vec::new();
        self.order(&t, &mut all);
        let to_insert: Vec<String> = all
            .into_iter()
            .filter(|m| !self.loaded.contains_key(m))
            .collect();
        // The first dependant after it (in load order) that lists it.
        let pulled_in_by = to_insert
            .iter()
            .enumerate()
            .filter(|(_, m)| **m != t)
            .filter_map(|(i, m)| {
                let by = to_insert[i + 1..].iter().find(|d| {
                    self.tree
                        .get(*d)
                        .is_some_and(|deps| deps.iter().any(|x| x == m))
                })?;
                Some((m.clone(), by.clone()))
            })
            .collect();
        Ok(Resolution {
            candidates: vec![t],
            to_insert,
            pulled_in_by,
            ..Resolution::default()
        })
    }

    fn load(&mut self, name: &str) -> Result<LoadOutcome, Errno> {
        let res = self.resolve(name)?;
        if !self.load_time.is_zero() {
            std::thread::sleep(self.load_time);
        }
        self.loads.push(name.to_string());
        for m in &res.to_insert {
            self.loaded.insert(m.clone(), 0);
        }
        Ok(LoadOutcome {
            inserted: res.to_insert,
            ..LoadOutcome::default()
        })
    }

    fn remove(&mut self, module: &str) -> Result<(), Errno> {
        match self.usage(module) {
            Usage::NotLoaded => Err(Errno::ENOENT),
            u if u.is_unused() => {
                self.loaded.remove(module);
                Ok(())
            }
            _ => Err(Errno::EWOULDBLOCK),
        }
    }
}

impl Host for FakeKernel {
    fn usage(&self, module: &str) -> Usage {
        let Some(&refcnt) = self.loaded.get(module) else {
            return Usage::NotLoaded;
        };
        let holders: Vec<String> = self
            .loaded
            .keys()
            .filter(|h| {
                self.tree
                    .get(*h)
                    .is_some_and(|d| d.iter().any(|x| x == module))
            })
            .cloned()
            .collect();
        Usage::Loaded {
            refcnt,
            holders,
            live: true,
        }
    }

    fn links(&self) -> Vec<(i32, String)> {
        self.links.clone()
    }

    fn insertion_refused(&self) -> Option<Errno> {
        self.refuse_insertions
    }
}

/// A fake kernel shared by several workers, as the real one is.
#[derive(Debug, Clone)]
pub struct SharedFake(pub(crate) Arc<Mutex<FakeKernel>>);

impl SharedFake {
    /// A backend whose loaders and host are this fake kernel.
    pub fn backend(&self) -> Backend {
        let f = self.clone();
        let loaders: Loaders = Arc::new(move || Ok(Box::new(f.clone()) as Box<dyn Loader + Send>));
        Backend {
            loaders,
            host: Arc::new(self.clone()),
            module_dir: "/nonexistent-fake-modules".into(),
            watched: (Vec::new(), Vec::new()),
        }
    }
}

impl Loader for SharedFake {
    fn provenance(&mut self, module: &str) -> Option<Provenance> {
        self.0.lock().unwrap().provenance(module)
    }
    fn resolve(&mut self, name: &str) -> Result<Resolution, Errno> {
        self.0.lock().unwrap().resolve(name)
    }
    fn load(&mut self, name: &str) -> Result<LoadOutcome, Errno> {
        // Sleep outside the lock so that concurrent loads overlap in time.
        let delay = self.0.lock().unwrap().load_time;
        std::thread::sleep(delay);
        let mut k = self.0.lock().unwrap();
        let saved = std::mem::take(&mut k.load_time);
        let r = k.load(name);
        k.load_time = saved;
        r
    }
    fn remove(&mut self, module: &str) -> Result<(), Errno> {
        self.0.lock().unwrap().remove(module)
    }
}

impl Host for SharedFake {
    fn usage(&self, module: &str) -> Usage {
        self.0.lock().unwrap().usage(module)
    }
    fn links(&self) -> Vec<(i32, String)> {
        self.0.lock().unwrap().links.clone()
    }
    fn insertion_refused(&self) -> Option<Errno> {
        self.0.lock().unwrap().refuse_insertions
    }
}

//! Idle expiry: the record of what kerneld loaded, the schedule of idle
//! sweeps and the delayed releases, behind one lock, and the timer loop.
//!
//! The record is saved here after every change, and a failure to save is
//! logged here (once, in one wording).

use crate::backend::{ModuleBackend, Resolution};
use crate::limits;
use crate::operator::log;
use crate::state::record::{Entry, Record, Removal};
use crate::who::requester::Requester;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Delayed releases pending at most: each names a module, and there are
/// not that many modules; more would only grow kerneld.
pub(crate) const DELAYED_MAX: usize = 4096;

#[derive(Debug)]
struct State {
    record: Record,
    next_sweep: Instant,
    delayed: HashMap<String, Instant>,
}

/// Why a delayed release was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// kerneld did not load the module.
    NotOurs,
    /// [`DELAYED_MAX`] are pending already.
    Full,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotOurs => {
                f.write_str("kerneld did not load it (kdstat lists what it loaded)")
            }
            Refused::Full => write!(f, "{DELAYED_MAX} delayed releases are pending already"),
        }
    }
}

/// The record, the sweep schedule and the delayed releases.
#[derive(Debug)]
pub(crate) struct Expiry {
    state: Mutex<State>,
    cv: Condvar,
}

fn save(rec: &Record) {
    if let Err(e) = rec.save() {
        log::error(&format!("cannot save the record of loaded modules: {e}"));
    }
}

impl Expiry {
    /// The first sweep comes `delay` seconds from now.
    pub(crate) fn new(record: Record, delay: u64) -> Expiry {
        Expiry {
            state: Mutex::new(State {
                record,
                next_sweep: limits::after(Instant::now(), Duration::from_secs(delay)),
                delayed: HashMap::new(),
            }),
            cv: Condvar::new(),
        }
    }

    /// Wake the timer loop (a new schedule, or stop).
    pub(crate) fn notify(&self) {
        self.cv.notify_all();
    }

    /// The next sweep waits a full `delay` again.
    pub(crate) fn rearm(&self, delay: u64) {
        self.state.lock().unwrap().next_sweep =
            limits::after(Instant::now(), Duration::from_secs(delay));
        self.cv.notify_all();
    }

    /// A request for `name`: the next sweep waits a full delay again, and a
    /// delayed release of `name` is off.
    pub(crate) fn requested(&self, name: &str, delay: u64) {
        let mut st = self.state.lock().unwrap();
        st.next_sweep = limits::after(Instant::now(), Duration::from_secs(delay));
        // Hashing the name is the costly part, and there is rarely any
        // delayed release to cancel.
        if !st.delayed.is_empty() {
            st.delayed.remove(name);
        }
    }

    /// Release `name` in `delay` seconds (again, if it was pending).
    pub(crate) fn delay_release(&self, name: &str, delay: u64) -> Result<(), Refused> {
        let mut st = self.state.lock().unwrap();
        // Only what kerneld loaded is its to release later: anything else
        // would fill the table with bogus names.
        if !st.record.holds(name) {
            return Err(Refused::NotOurs);
        }
        if st.delayed.len() >= DELAYED_MAX && !st.delayed.contains_key(name) {
            return Err(Refused::Full);
        }
        st.delayed.insert(
            name.to_string(),
            limits::after(Instant::now(), Duration::from_secs(delay)),
        );
        drop(st);
        self.cv.notify_all();
        Ok(())
    }

    /// Cancel a delayed release; false if none was pending.
    pub(crate) fn cancel(&self, name: &str) -> bool {
        self.state.lock().unwrap().delayed.remove(name).is_some()
    }

    /// Time until the next sweep.
    pub(crate) fn next_sweep_in(&self) -> Duration {
        let t = self.state.lock().unwrap().next_sweep;
        t.saturating_duration_since(Instant::now())
    }

    /// A load of `name` (decided on `res`, for `who`) inserted these
    /// modules.
    pub(crate) fn loaded(
        &self,
        name: &str,
        res: &Resolution,
        inserted: &[String],
        links: &[(i32, String)],
        who: Option<&Requester>,
    ) {
        let mut st = self.state.lock().unwrap();
        st.record.add_for(name, res, inserted, who);
        st.record.note_own_links(inserted, links);
        save(&st.record);
    }

    /// Unload `name` now with the recorded dependencies only it held.
    pub(crate) fn remove_with_deps(
        &self,
        sys: &mut dyn ModuleBackend,
        name: &str,
        keep: &[crate::policy::pattern::Pattern],
    ) -> Removal {
        let mut st = self.state.lock().unwrap();
        let mut out = Removal::default();
        st.record.remove_with_deps(sys, name, keep, &mut out);
        save(&st.record);
        out
    }

    /// One idle sweep over the record.
    pub(crate) fn sweep(
        &self,
        sys: &mut dyn ModuleBackend,
        keep: &[crate::policy::pattern::Pattern],
    ) -> Removal {
        let mut st = self.state.lock().unwrap();
        let before = st.record.modules.clone();
        let out = st.record.sweep(sys, keep);
        if st.record.modules != before {
            save(&st.record);
        }
        out
    }

    /// What kerneld loaded, for the status.
    pub(crate) fn modules(&self) -> BTreeMap<String, Entry> {
        self.state.lock().unwrap().record.modules.clone()
    }

    /// The timer loop, until `stopping()`: calls `release` for each due
    /// delayed release and `sweep` when a sweep is due (without the lock);
    /// `delay()` is the live delay between sweeps.
    pub(crate) fn run(
        &self,
        stopping: impl Fn() -> bool,
        delay: impl Fn() -> u64,
        release: impl Fn(String),
        sweep: impl Fn(),
    ) {
        let mut st = self.state.lock().unwrap();
        while !stopping() {
            let now = Instant::now();
            let due: Vec<String> = st
                .delayed
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &due {
                st.delayed.remove(n);
            }
            let sweep_due = st.next_sweep <= now;
            if sweep_due {
                st.next_sweep = limits::after(now, Duration::from_secs(delay()));
            }
            drop(st);
            for name in due {
                log::info(&format!("delayed release of {name} is due"));
                release(name);
            }
            if sweep_due {
                sweep();
            }
            st = self.state.lock().unwrap();
            let next = st
                .delayed
                .values()
                .copied()
                .chain(std::iter::once(st.next_sweep))
                .min()
                .unwrap_or(now);
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            st = self.cv.wait_timeout(st, wait).unwrap().0;
        }
    }

    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.state.lock().unwrap().delayed.len()
    }

    #[cfg(test)]
    pub(crate) fn with_record<R>(&self, f: impl FnOnce(&mut Record) -> R) -> R {
        f(&mut self.state.lock().unwrap().record)
    }

    #[cfg(test)]
    pub(crate) fn pend(&self, name: &str) {
        self.state
            .lock()
            .unwrap()
            .delayed
            .insert(name.to_string(), Instant::now() + Duration::from_secs(60));
    }
}

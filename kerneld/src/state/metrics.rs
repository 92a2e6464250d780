//! Counters shown by kdstat, and the ring of recent requests.
//!
//! Requests are counted by type in an array of atomics indexed by the type
//! (firecracker's `metrics.rs` style): no lock and no allocation per
//! request.  Status takes a plain copy ([`CounterValues`]).

use crate::who::requester::Requester;
use kmod_ipc::MsgType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How many answered requests the status keeps.
pub(crate) const RECENT_MAX: usize = 32;

/// Slots of the per-type counters: every known type, then the unknown ones.
const TYPES: usize = MsgType::KNOWN.len() + 1;

/// The slot of a type in [`Counters::requests`].
fn slot(t: MsgType) -> usize {
    MsgType::KNOWN
        .iter()
        .position(|k| *k == t)
        .unwrap_or(TYPES - 1)
}

/// The name a slot is counted under (a type's name, `unknown` for the rest).
fn slot_name(i: usize) -> &'static str {
    MsgType::KNOWN.get(i).map_or("unknown", |t| t.name())
}

/// Counters shown by kdstat.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: [AtomicU64; TYPES],
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) merged: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) bad_messages: AtomicU64,
    pub(crate) cached: AtomicU64,
    pub(crate) denied: AtomicU64,
    /// Requests refused because `jobs::MAX_WAITERS` waited for the
    /// identical action already.
    pub(crate) refused_waiters: AtomicU64,
    /// Requests dropped for a reply id that is a type served on the queue
    /// (`reply::unanswerable`); counted in `bad_messages` too, kept
    /// apart to sample their log lines.
    pub(crate) refused_ids: AtomicU64,
}

/// A copy of the counters, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CounterValues {
    /// Requests by type name (`MsgType::name`, `unknown`), in name order,
    /// types never received left out.
    pub(crate) requests: Vec<(&'static str, u64)>,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) merged: u64,
    pub(crate) expired: u64,
    pub(crate) bad_messages: u64,
    pub(crate) cached: u64,
    pub(crate) denied: u64,
    pub(crate) refused_waiters: u64,
}

impl Counters {
    /// One request of type `t` received.
    pub(crate) fn count_request(&self, t: MsgType) {
        self.requests[slot(t)].fetch_add(1, Ordering::Relaxed);
    }

    /// One answer: succeeded or failed by its status.
    pub(crate) fn count_status(&self, status: i64) {
        if status == 0 {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn values(&self) -> CounterValues {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut requests: Vec<(&'static str, u64)> = (0..TYPES)
            .map(|i| (slot_name(i), get(&self.requests[i])))
            .filter(|(_, n)| *n > 0)
            .collect();
        requests.sort_unstable_by_key(|(name, _)| *name);
        CounterValues {
            requests,
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            merged: get(&self.merged),
            expired: get(&self.expired),
            bad_messages: get(&self.bad_messages),
            cached: get(&self.cached),
            denied: get(&self.denied),
            refused_waiters: get(&self.refused_waiters),
        }
    }
}

/// One request_module answered, for `kdstat` (the last [`RECENT_MAX`]).
#[derive(Debug, Clone)]
pub(crate) struct Recent {
    pub(crate) name: String,
    pub(crate) requester: Option<Requester>,
    pub(crate) kind: crate::work::answer::Kind,
    pub(crate) status: i64,
    pub(crate) text: String,
    pub(crate) at: Instant,
    pub(crate) millis: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_type_name_in_name_order() {
        let c = Counters::default();
        c.count_request(MsgType::Status);
        c.count_request(MsgType::RequestModule);
        c.count_request(MsgType::RequestModule);
        c.count_request(MsgType::Unknown(77));
        c.count_request(MsgType::Unknown(78));
        let v = c.values();
        let mut want = vec![
            (MsgType::Status.name(), 1),
            (MsgType::RequestModule.name(), 2),
            ("unknown", 2),
        ];
        want.sort();
        assert_eq!(v.requests, want);
    }
}

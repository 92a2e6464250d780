//! Requests being worked on, and the merging of identical ones.
//!
//! Identical requests (same type and text) that arrive while one is being
//! worked on join it: one action, whose result every waiter receives, as
//! the 1996 daemon's check_pending_load did.

use crate::backend::Resolution;
use crate::who::requester::Requester;
use crate::work::programs::Program;
use kmod_ipc::{Message, MsgType};
use std::time::Instant;

/// Senders one action may gather at most.  A hung install command would
/// otherwise collect every retry of its caller for as long as it hangs.
pub(crate) const MAX_WAITERS: usize = 4096;

/// One sender waiting for the result.
#[derive(Debug, Clone)]
pub(crate) struct Waiter {
    /// The request as received (its id and header shape the reply).
    pub(crate) request: Message,
    /// Who caused it, when known.
    pub(crate) requester: Option<Requester>,
}

/// A request decided on the receive thread: what to load, and since when
/// it is served.  The worker loads it without resolving it again.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) resolution: Resolution,
    pub(crate) since: Instant,
}

/// What a worker does for a request: decided by dispatch (`dispatch.rs`),
/// run by the worker's one match (`actions.rs`), which has no catch-all
/// arm, so a new kind of work is handled there or does not compile.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    /// Type 2: load, what the receive thread resolved if it did.
    Load(Option<Planned>),
    /// Type 3: unload now.
    Release,
    /// Types answered by running a program.
    Program(Program),
}

impl Work {
    /// The message type this work serves (merging and the status key on it).
    pub(crate) fn kind(&self) -> MsgType {
        match self {
            Work::Load(_) => MsgType::RequestModule,
            Work::Release => MsgType::ReleaseModule,
            Work::Program(p) => p.msg_type(),
        }
    }
}

/// One action in progress.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: u64,
    /// What the worker does; a load's resolution is taken when it starts.
    pub(crate) work: Work,
    pub(crate) text: Vec<u8>,
    pub(crate) waiters: Vec<Waiter>,
    pub(crate) started: Instant,
    /// Thread id of the worker on it (the "pid" of the classic status).
    pub(crate) worker: Option<i32>,
    /// Who it is for, when the policy depends on the requester: requests
    /// from different requesters are then not merged.
    pub(crate) identity: String,
}

/// What a worker needs of the job it starts.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) work: Work,
    pub(crate) text: Vec<u8>,
    pub(crate) requester: Option<Requester>,
    /// Whether its first request came through the kernel's helper (see
    /// `actions.rs`).
    pub(crate) from_helper: bool,
}

/// All jobs in progress: at most one per worker and a few more, so a
/// list compared by type, text and identity finds one quickly, and a
/// lookup builds no key.
#[derive(Debug, Default)]
pub(crate) struct JobTable {
    next_id: u64,
    jobs: Vec<Job>,
}

impl Job {
    /// The message type it serves.
    pub(crate) fn kind(&self) -> MsgType {
        self.work.kind()
    }

    fn is(&self, kind: MsgType, text: &[u8], identity: &str) -> bool {
        self.kind() == kind && self.text == text && self.identity == identity
    }
}

impl JobTable {
    fn find(&self, kind: MsgType, text: &[u8], identity: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.is(kind, text, identity))
    }

    /// Join an identical job (same type, text and identity), or start a
    /// new one.  Returns the new job's id when the caller must start the
    /// action, `None` when merged.
    pub(crate) fn join_or_create(
        &mut self,
        work: Work,
        text: &[u8],
        identity: &str,
        waiter: Waiter,
    ) -> Option<u64> {
        let kind = work.kind();
        if let Some(job) = self.jobs.iter_mut().find(|j| j.is(kind, text, identity)) {
            job.waiters.push(waiter);
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.jobs.push(Job {
            id,
            text: text.to_vec(),
            waiters: vec![waiter],
            started: Instant::now(),
            worker: None,
            identity: identity.to_string(),
            work,
        });
        Some(id)
    }

    /// A worker (thread `tid`) starts on job `id`: its type, text, first
    /// requester and plan.  None: no such job.
    pub(crate) fn start(&mut self, id: u64, tid: i32) -> Option<Started> {
        let j = self.jobs.iter_mut().find(|j| j.id == id)?;
        j.worker = Some(tid);
        let work = match &mut j.work {
            Work::Load(planned) => Work::Load(planned.take()),
            other => other.clone(),
        };
        Some(Started {
            work,
            text: j.text.clone(),
            requester: j.waiters.first().and_then(|w| w.requester.clone()),
            from_helper: j
                .waiters
                .first()
                .is_some_and(|w| w.request.id >= kmod_ipc::KERNELD_MINSEQ),
        })
    }

    /// The job is done: remove it and hand back its waiters.  Requests
    /// arriving after this start a new action.
    pub(crate) fn finish(&mut self, id: u64) -> Vec<Waiter> {
        match self.jobs.iter().position(|j| j.id == id) {
            // In start order, for the status.
            Some(i) => self.jobs.remove(i).waiters,
            None => Vec::new(),
        }
    }

    /// Whether this exact request is in progress (a new one would join it).
    pub(crate) fn in_progress(&self, kind: MsgType, text: &[u8], identity: &str) -> bool {
        self.find(kind, text, identity).is_some()
    }

    /// How many senders wait for the job identical to this request (0:
    /// none in progress).
    pub(crate) fn waiters_of(&self, kind: MsgType, text: &[u8], identity: &str) -> usize {
        self.find(kind, text, identity)
            .map_or(0, |j| j.waiters.len())
    }

    /// Whether a job of this kind is in progress.
    pub(crate) fn any_of(&self, kind: MsgType) -> bool {
        self.jobs.iter().any(|j| j.kind() == kind)
    }

    pub(crate) fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmod_ipc::Header;

    fn waiter(id: i64) -> Waiter {
        Waiter {
            request: Message::request(MsgType::RequestModule, id, Header::Old, "dummy"),
            requester: None,
        }
    }

    #[test]
    fn identical_requests_merge_until_finished() {
        let mut t = JobTable::default();
        let id = t
            .join_or_create(Work::Load(None), b"dummy", "", waiter(1))
            .unwrap();
        assert_eq!(
            t.join_or_create(Work::Load(None), b"dummy", "", waiter(2)),
            None
        );
        assert!(t
            .join_or_create(Work::Load(None), b"bridge", "", waiter(3))
            .is_some());
        assert!(t
            .join_or_create(Work::Release, b"dummy", "", waiter(4))
            .is_some());
        let w = t.finish(id);
        assert_eq!(w.iter().map(|w| w.request.id).collect::<Vec<_>>(), [1, 2]);
        assert!(t
            .join_or_create(Work::Load(None), b"dummy", "", waiter(5))
            .is_some());
        assert_eq!(t.len(), 3);
        assert!(
            t.join_or_create(Work::Load(None), b"dummy", "uid=1000", waiter(6))
                .is_some(),
            "another requester's request is its own action"
        );
    }
}

//! Replies waiting for room on a full queue.
//!
//! A reply that does not fit waits here until its client's wait has
//! passed: after that nobody reads it, and sending it would only fill the
//! queue again.  The newest is sent first: its client has the longest
//! left to wait, and when dead clients' replies fill the queue, the
//! oldest waiting are the likeliest to be theirs.  The outbox is bounded
//! in bytes; for the same reason, when it is full the oldest waiting
//! replies make room for a new one, so that a live client asking after a
//! flood from dead ones still gets its answer.  A reply whose waiter is
//! known to run (a tool's or the helper's pid, [`crate::edge::waiter`]) goes
//! before all others and makes room last: a flood of replies to ids that
//! tell nothing must not starve an operator's status.  Only the reply thread
//! ([`crate::edge::reply::Replies::run`]) sends from it, never the worker pool.

use kmod_ipc::{Message, HEADER_NEW_LEN, KERNELD_MINSEQ};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most this many bytes of replies wait for room (as much as kerneld
/// asks the queue itself to hold).  Readers that far behind lose replies,
/// rather than kerneld growing without bound.
pub(crate) const DEFERRED_MAX_BYTES: usize = 4 << 20;

/// How long kdstat and kdsend wait for an answer by default.
pub(crate) const TOOL_WAIT: Duration = Duration::from_secs(5);

/// How long kerneld-modprobe, the kernel's helper, waits for an answer.
pub(crate) const SHIM_WAIT: Duration = Duration::from_secs(30);

/// How long the client behind reply id `id` waits: kernel-style ids
/// (from [`KERNELD_MINSEQ`]) are the shim's and the kernel's, the others
/// operator tools'.
pub(crate) fn patience(id: i64) -> Duration {
    if id >= KERNELD_MINSEQ {
        SHIM_WAIT
    } else {
        TOOL_WAIT
    }
}

/// One reply (all its parts still unsent) waiting for room.
#[derive(Debug)]
pub(crate) struct Deferred {
    pub(crate) id: i64,
    pub(crate) parts: VecDeque<Message>,
    /// When its client stops waiting: the reply is dropped then.
    pub(crate) deadline: Instant,
    /// Its waiter was known to run when it was deferred.
    awaited: bool,
    bytes: usize,
}

impl Deferred {
    /// Its waiter was known to run when it was deferred.
    pub(crate) fn awaited(&self) -> bool {
        self.awaited
    }
}

/// The replies waiting for room, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    waiting: VecDeque<Deferred>,
    bytes: usize,
}

fn size_of(parts: &VecDeque<Message>) -> usize {
    parts
        .iter()
        .map(|m| 8 + HEADER_NEW_LEN + m.text.len())
        .sum()
}

impl Outbox {
    /// Queue the unsent parts of the reply on `id`, to be sent before
    /// `deadline` (`awaited`: its waiter is known to run), dropping the
    /// oldest waiting replies if it does not fit otherwise, those of
    /// waiters not known to run first: the ids of those dropped.  `None`:
    /// the reply alone is larger than the outbox, and is dropped itself.
    pub(crate) fn push(
        &mut self,
        id: i64,
        parts: VecDeque<Message>,
        deadline: Instant,
        awaited: bool,
    ) -> Option<Vec<i64>> {
        let bytes = size_of(&parts);
        if bytes > DEFERRED_MAX_BYTES {
            return None;
        }
        let mut dropped = Vec::new();
        while self.bytes + bytes > DEFERRED_MAX_BYTES {
            let oldest = self.waiting.iter().position(|d| !d.awaited).unwrap_or(0);
            let Some(old) = self.waiting.remove(oldest) else {
                break;
            };
            self.bytes -= old.bytes;
            dropped.push(old.id);
        }
        self.bytes += bytes;
        self.waiting.push_back(Deferred {
            id,
            parts,
            deadline,
            awaited,
            bytes,
        });
        Some(dropped)
    }

    /// Remove the replies whose clients stopped waiting; how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let before = self.waiting.len();
        let mut freed = 0;
        self.waiting.retain(|d| {
            let keep = d.deadline > now;
            if !keep {
                freed += d.bytes;
            }
            keep
        });
        self.bytes -= freed;
        before - self.waiting.len()
    }

    /// Where the next to send is: the newest awaited reply, else the
    /// newest.
    fn next_index(&self) -> Option<usize> {
        let last = self.waiting.len().checked_sub(1)?;
        Some(self.waiting.iter().rposition(|d| d.awaited).unwrap_or(last))
    }

    /// The next reply to send (see [`Outbox::next_index`]).
    pub(crate) fn next_mut(&mut self) -> Option<&mut Deferred> {
        let i = self.next_index()?;
        self.waiting.get_mut(i)
    }

    /// Remove the next reply (sent, or given up).
    pub(crate) fn pop_next(&mut self) {
        if let Some(d) = self.next_index().and_then(|i| self.waiting.remove(i)) {
            self.bytes -= d.bytes;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Bytes waiting, as counted against [`DEFERRED_MAX_BYTES`].
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmod_ipc::{Header, MsgType};

    fn reply(id: i64, len: usize) -> VecDeque<Message> {
        let req = Message::request(MsgType::Status, id, Header::Old, "");
        VecDeque::from([req.reply(0, 1, vec![b'x'; len])])
    }

    #[test]
    fn a_reply_waits_only_as_long_as_its_client() {
        assert_eq!(patience(1024 + 77), TOOL_WAIT);
        assert_eq!(patience(KERNELD_MINSEQ + 3), SHIM_WAIT);
        let now = Instant::now();
        let mut o = Outbox::default();
        assert_eq!(
            o.push(2000, reply(2000, 10), now + Duration::from_secs(1), false),
            Some(vec![])
        );
        assert_eq!(
            o.push(2001, reply(2001, 10), now + Duration::from_secs(9), false),
            Some(vec![])
        );
        assert_eq!(o.expire(now), 0);
        assert_eq!(o.expire(now + Duration::from_secs(2)), 1);
        assert_eq!(o.next_mut().unwrap().id, 2001);
        o.pop_next();
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn the_newest_reply_goes_first() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut o = Outbox::default();
        for id in [4000, 4001, 4002] {
            assert_eq!(o.push(id, reply(id, 1), later, false), Some(vec![]));
        }
        let mut order = Vec::new();
        while let Some(d) = o.next_mut() {
            order.push(d.id);
            o.pop_next();
        }
        assert_eq!(order, [4002, 4001, 4000]);
    }

    #[test]
    fn the_outbox_is_bounded_in_bytes_and_the_oldest_make_room() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut o = Outbox::default();
        let mut dropped = Vec::new();
        for i in 0..60 {
            dropped.extend(
                o.push(3000 + i, reply(3000 + i, 100 * 1024), later, false)
                    .unwrap(),
            );
            assert!(o.bytes() <= DEFERRED_MAX_BYTES);
        }
        assert_eq!(o.len(), 40, "4 MiB hold 40 replies of 100 KiB and a header");
        assert_eq!(dropped, (3000..3020).collect::<Vec<_>>(), "the oldest went");
        assert_eq!(o.next_mut().unwrap().id, 3059, "the newest waits first");
        // A reply larger than the whole outbox is dropped itself.
        assert_eq!(
            o.push(5000, reply(5000, DEFERRED_MAX_BYTES), later, false),
            None
        );
        assert_eq!(o.len(), 40);
    }

    #[test]
    fn an_awaited_reply_goes_first_and_makes_room_last() {
        let later = Instant::now() + Duration::from_secs(5);
        let mut o = Outbox::default();
        assert_eq!(
            o.push(6000, reply(6000, 100 * 1024), later, true),
            Some(vec![])
        );
        let mut dropped = Vec::new();
        for i in 1..60 {
            dropped.extend(
                o.push(6000 + i, reply(6000 + i, 100 * 1024), later, false)
                    .unwrap(),
            );
        }
        assert!(!dropped.contains(&6000), "the awaited reply made room");
        assert_eq!(dropped[0], 6001);
        assert_eq!(
            o.next_mut().unwrap().id,
            6000,
            "the awaited reply waits first"
        );
        o.pop_next();
        assert_eq!(o.next_mut().unwrap().id, 6059, "then the newest");
    }
}

//! Taking messages back off a queue that nobody serves.
//!
//! A kerneld killed with SIGKILL leaves its queue behind with whatever was
//! waiting in it.  A sender that finds no live kerneld takes its own
//! request back before it falls back ([`Queue::take_back`]), so that a
//! kerneld started later never performs it a second time; a kerneld
//! taking such a queue over drops what nobody waits for any more
//! ([`Queue::sweep`]).  System V queues have no "remove this message":
//! both take the matching messages off in order and send back those that
//! stay, which keeps their order among themselves.  Callers hold the key's
//! lock ([`crate::instances::KeyLock`]), so no kerneld reads meanwhile.

use super::{Queue, TypeFilter};
use crate::error::Error;

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Messages taken off and sent back.
    pub kept: u64,
    /// Messages taken off for good.
    pub dropped: u64,
    /// Messages that were to stay but could not be sent back (the queue
    /// filled up meanwhile, or went away).
    pub lost: u64,
}

/// The reply id at the start of a message body, if it has one.
pub fn body_id(body: &[u8]) -> Option<i64> {
    Some(i64::from_ne_bytes(body.get(..8)?.try_into().ok()?))
}

impl Queue {
    /// Take the messages that `filter` selects off the queue, keep those
    /// for which `keep(mtype, body)` is true and send them back, in their
    /// order.  Only the messages waiting when the sweep starts are looked
    /// at: senders that keep sending cannot make it run forever.
    pub fn sweep(
        &self,
        filter: TypeFilter,
        mut keep: impl FnMut(i64, &[u8]) -> bool,
    ) -> Result<Swept, Error> {
        let waiting = self.stat()?.messages;
        let mut kept = Vec::new();
        let mut swept = Swept::default();
        for _ in 0..waiting {
            let Some((mtype, body)) = self.recv_raw(filter, true)? else {
                break;
            };
            if keep(mtype, &body) {
                kept.push((mtype, body));
            } else {
                swept.dropped += 1;
            }
        }
        for (mtype, body) in kept {
            match self.send_raw(mtype, &body, true) {
                Ok(()) => swept.kept += 1,
                Err(_) => swept.lost += 1,
            }
        }
        Ok(swept)
    }

    /// Take back the request of type `mtype` with reply id `id`, if it is
    /// still unread; whether it was there.
    pub fn take_back(&self, mtype: i64, id: i64) -> Result<bool, Error> {
        let mut found = false;
        self.sweep(TypeFilter::Exactly(mtype), |_, body| {
            let mine = !found && body_id(body) == Some(id);
            found |= mine;
            !mine
        })?;
        Ok(found)
    }
}

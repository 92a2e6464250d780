//! The receive loop: one thread takes each message off the queue into a
//! buffer it keeps (no allocation per message), hands it to
//! [`Daemon::handle`](crate::dispatch), creates the queue again when it is
//! removed under kerneld, and answers what does not decode.  The flush of
//! `kdstat flush` empties the queue here as well.

use crate::log;
use crate::server::Daemon;
use kmod_ipc::{Error as IpcError, Header, MessageView, Queue, MAX_DAEMON_TYPE};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Daemon {
    /// The receive loop; returns when `stop` was called.
    pub fn receive_loop(self: &Arc<Self>) {
        // Grown once to the largest message; every receive reuses it.
        let mut buf = Vec::new();
        while !self.stopping() {
            let q = self.queue();
            match q.recv_into(self.filter, false, &mut buf) {
                Ok(Some((mtype, body))) => self.handle(mtype, body),
                Ok(None) | Err(IpcError::Interrupted) => {}
                Err(IpcError::Removed) => {
                    if self.stopping() {
                        break;
                    }
                    self.recreate_queue();
                }
                Err(e) => {
                    log::error(&format!("receiving from the queue: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn recreate_queue(&self) {
        loop {
            // claim: a queue someone else made in the meantime is removed.
            match Queue::claim(self.key).map(|c| {
                for f in &c.removed {
                    log::warn(&format!(
                        "removed a queue that was not kerneld's: {}",
                        f.describe()
                    ));
                }
                c.queue
            }) {
                Ok(q) => {
                    let _ = q.set_max_bytes(crate::QUEUE_BYTES);
                    log::error(&format!(
                        "the message queue at key {} was removed under kerneld; created it again (id {})",
                        self.key,
                        q.id()
                    ));
                    self.replies.set_queue(q);
                    return;
                }
                Err(e) => {
                    log::error(&format!("cannot recreate the message queue: {e}; retrying"));
                    if self.stopping() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// A body that does not decode: counted, logged, and answered if its
    /// sender can be identified and waits.
    pub(crate) fn bad_message(&self, mtype: i64, body: &[u8], why: &str) {
        self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
        log::warn(&format!(
            "malformed message of type {mtype} ({} bytes): {why}",
            body.len()
        ));
        let Some(id) = body
            .get(..8)
            .map(|b| i64::from_ne_bytes(b.try_into().unwrap()))
        else {
            return;
        };
        if id <= MAX_DAEMON_TYPE {
            return;
        }
        let header = match body.get(8..12) {
            Some(h) if i16::from_ne_bytes([h[0], h[1]]) == kmod_ipc::NEW_PROTOCOL_VERSION => {
                Header::New { pid: 0 }
            }
            _ => Header::Old,
        };
        let req = MessageView {
            mtype,
            id,
            header,
            text: &[],
        };
        self.replies
            .reply(&req, 1, format!("malformed message: {why}").as_bytes());
    }

    /// Drop every waiting message (types the daemon serves); answer those
    /// whose senders wait, so that nobody hangs.  Also: how many messages
    /// it left in the queue (replies, types it does not serve), counted
    /// before its own answers go in.
    pub(crate) fn flush(&self) -> (usize, u64) {
        let q = self.queue();
        let mut buf = Vec::new();
        let mut drained = Vec::new();
        while let Ok(Some((mtype, body))) = q.recv_into(self.filter, true, &mut buf) {
            drained.push((mtype, body.to_vec()));
        }
        let left = q.stat().map_or(0, |s| s.messages);
        for (mtype, body) in &drained {
            if let Ok(m) = MessageView::decode_body(*mtype, body, usize::MAX) {
                self.replies
                    .reply(&m, 1, b"flushed by the operator (kdstat flush)");
            }
        }
        let n = drained.len();
        log::event(
            log::Level::Notice,
            log::Event::Flushed,
            &log::Fields::new(),
            &format!("flushed {n} waiting messages; left {left} that kerneld does not serve"),
        );
        (n, left)
    }
}

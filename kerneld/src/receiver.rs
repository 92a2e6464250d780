//! The receive loop: one thread takes each message off the queue into a
//! buffer it keeps (no allocation per message), hands it to
//! [`Daemon::handle`](crate::dispatch), creates the queue again when it is
//! removed under kerneld, and answers what does not decode.  The flush of
//! `kdstat flush` empties the queue here as well.

use crate::log;
use crate::server::Daemon;
use kmod_ipc::{Error as IpcError, Queue};
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
}

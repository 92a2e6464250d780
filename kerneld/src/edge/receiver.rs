//! The receive loop: one thread takes each message off the queue into a
//! buffer it keeps (no allocation per message), hands it to
//! [`dispatch::handle`](crate::work::dispatch::handle), and creates the queue
//! again when it is removed under kerneld.

use crate::operator::log;
use crate::server::Daemon;
use kmod_ipc::{Error as IpcError, Queue};
use std::sync::Arc;
use std::time::Duration;

/// The receive loop; returns when `stop` was called.
pub fn receive_loop(d: &Arc<Daemon>) {
    // Grown once to the largest message; every receive reuses it.
    let mut buf = Vec::new();
    while !d.stopping() {
        let q = d.queue();
        match q.recv_into(d.filter, false, &mut buf) {
            Ok(Some((mtype, body))) => crate::work::dispatch::handle(d, mtype, body),
            Ok(None) | Err(IpcError::Interrupted) => {}
            Err(IpcError::Removed) => {
                if d.stopping() {
                    break;
                }
                recreate_queue(d);
            }
            Err(e) => {
                log::error(&format!("receiving from the queue: {e}"));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn recreate_queue(d: &Daemon) {
    loop {
        // claim: a queue someone else made in the meantime is removed.
        match Queue::claim(d.key).map(|c| {
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
                    d.key,
                    q.id()
                ));
                d.replies.set_queue(q);
                return;
            }
            Err(e) => {
                log::error(&format!("cannot recreate the message queue: {e}; retrying"));
                if d.stopping() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

//! The client side: send a request, wait for the reply to its own id.

use crate::error::Error;
use crate::key::Key;
use crate::msg::{Header, Message, MsgType, REPLY_CONTINUES, TOOL_ID_BASE};
use crate::queue::{Queue, TypeFilter};
use crate::timer::Alarm;
use std::time::{Duration, Instant};

/// A reply from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status the daemon put in the `id` field (0: success).
    pub status: i64,
    /// Output or explanation.
    pub text: Vec<u8>,
    /// The header format of the reply (mirrors the request's).
    pub header: Header,
}

impl Reply {
    /// The text as lossy UTF-8.
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// A connection to a running daemon's queue.
#[derive(Debug, Clone)]
pub struct Client {
    queue: Queue,
    header: Header,
}

impl Client {
    /// Open the queue at `key`; [`Error::NotRunning`] if there is none.
    /// Requests carry the new header with this process's pid.
    pub fn connect(key: Key) -> Result<Client, Error> {
        Ok(Client {
            queue: Queue::open(key)?,
            header: Header::new_with_pid(std::process::id()),
        })
    }

    /// Use the old (1995) or new header for requests.
    pub fn with_header(mut self, header: Header) -> Client {
        self.header = header;
        self
    }

    /// The underlying queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The reply id operator tools use: 1024 + pid.
    pub fn tool_reply_id() -> i64 {
        TOOL_ID_BASE + i64::from(std::process::id())
    }

    /// Send a request of type `t` wanting a reply on `id` (0: none).
    pub fn send(&self, t: MsgType, text: &[u8], id: i64) -> Result<(), Error> {
        let msg = Message::request(t, id, self.header, text);
        self.queue.send(&msg, usize::MAX, false)
    }

    /// Send a request and wait for its reply on `reply_id`.  Replies left on
    /// that id by an earlier, abandoned request are discarded first.
    /// `timeout` of `None` waits forever (until the queue is removed).
    pub fn request(
        &self,
        t: MsgType,
        text: &[u8],
        reply_id: i64,
        timeout: Option<Duration>,
    ) -> Result<Reply, Error> {
        while self
            .queue
            .recv_raw(TypeFilter::Exactly(reply_id), true)?
            .is_some()
        {}
        self.send(t, text, reply_id)?;
        self.wait_reply(reply_id, timeout)
    }

    /// Wait for the reply on `reply_id`, joining the parts of a long reply.
    pub fn wait_reply(&self, reply_id: i64, timeout: Option<Duration>) -> Result<Reply, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let _alarm = match timeout {
            Some(t) => Some(Alarm::arm(t).map_err(|e| Error::Sys {
                call: "timer_create",
                source: e,
            })?),
            None => None,
        };
        loop {
            match self
                .queue
                .recv(TypeFilter::Exactly(reply_id), usize::MAX, false)
            {
                Ok(Some((_, Ok(m)))) => {
                    return Ok(Reply {
                        status: m.id,
                        text: m.text,
                        header: m.header,
                    })
                }
                Ok(Some((_, Err(e)))) => return Err(Error::Decode(e)),
                Ok(None) => continue,
                Err(Error::Interrupted) => {
                    if let (Some(d), Some(t)) = (deadline, timeout) {
                        if Instant::now() >= d {
                            return Err(Error::Timeout(t));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

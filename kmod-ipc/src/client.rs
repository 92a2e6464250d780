//! The client side: send a request, wait for the reply to its own id.

use crate::error::Error;
use crate::key::Key;
use crate::msg::{Header, Message, MsgType, MAX_DAEMON_TYPE, REPLY_CONTINUES, TOOL_ID_BASE};
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
    /// `timeout` of `None` waits forever (until the queue is removed); the
    /// timeout also covers a send blocked on a full queue.  A `reply_id` up
    /// to 255 is [`Error::InvalidReplyId`]: waiting on it would take the
    /// daemon's own requests off the queue.
    pub fn request(
        &self,
        t: MsgType,
        text: &[u8],
        reply_id: i64,
        timeout: Option<Duration>,
    ) -> Result<Reply, Error> {
        check_reply_id(reply_id)?;
        while self
            .queue
            .recv_raw(TypeFilter::Exactly(reply_id), true)?
            .is_some()
        {}
        // One alarm for the send and the wait, so the deadline is total.
        let deadline = Deadline::arm(timeout)?;
        let msg = Message::request(t, reply_id, self.header, text);
        loop {
            match self.queue.send_interruptible(&msg, usize::MAX) {
                Ok(()) => break,
                Err(Error::Interrupted) => deadline.check()?,
                Err(e) => return Err(e),
            }
        }
        self.wait_until(reply_id, &deadline)
    }

    /// Wait for the reply on `reply_id`, joining the parts of a long reply
    /// (every part but the last has status [`REPLY_CONTINUES`]).  The
    /// returned header is that of the last part.
    pub fn wait_reply(&self, reply_id: i64, timeout: Option<Duration>) -> Result<Reply, Error> {
        check_reply_id(reply_id)?;
        let deadline = Deadline::arm(timeout)?;
        self.wait_until(reply_id, &deadline)
    }

    fn wait_until(&self, reply_id: i64, deadline: &Deadline) -> Result<Reply, Error> {
        let mut text = Vec::new();
        loop {
            match self
                .queue
                .recv(TypeFilter::Exactly(reply_id), usize::MAX, false)
            {
                Ok(Some((_, Ok(m)))) => {
                    text.extend_from_slice(&m.text);
                    if m.id != REPLY_CONTINUES {
                        return Ok(Reply {
                            status: m.id,
                            text,
                            header: m.header,
                        });
                    }
                }
                Ok(Some((_, Err(e)))) => return Err(Error::Decode(e)),
                Ok(None) => continue,
                Err(Error::Interrupted) => deadline.check()?,
                Err(e) => return Err(e),
            }
        }
    }
}

fn check_reply_id(reply_id: i64) -> Result<(), Error> {
    if reply_id <= MAX_DAEMON_TYPE {
        return Err(Error::InvalidReplyId(reply_id));
    }
    Ok(())
}

/// A timeout in force: the instant it ends and the alarm that breaks
/// blocking calls from then on.  Without a timeout, interruptions by other
/// signals are simply retried.
struct Deadline {
    end: Option<(Instant, Duration)>,
    _alarm: Option<Alarm>,
}

impl Deadline {
    fn arm(timeout: Option<Duration>) -> Result<Deadline, Error> {
        // The instant is taken before the timer starts, so the timer never
        // fires before it; both use the monotonic clock.  A timeout too
        // large for an Instant (Duration::MAX) is as good as none.
        let Some((t, end)) = timeout.and_then(|t| Some((t, Instant::now().checked_add(t)?))) else {
            return Ok(Deadline {
                end: None,
                _alarm: None,
            });
        };
        let alarm = Alarm::arm(t).map_err(|e| Error::Sys {
            call: "timer_create",
            source: e,
        })?;
        Ok(Deadline {
            end: Some((end, t)),
            _alarm: Some(alarm),
        })
    }

    /// After an interruption: [`Error::Timeout`] once the deadline passed.
    fn check(&self) -> Result<(), Error> {
        match self.end {
            Some((end, t)) if Instant::now() >= end => Err(Error::Timeout(t)),
            _ => Ok(()),
        }
    }
}

//! The client side: send a request, wait for the reply to its own id.

use crate::error::Error;
use crate::instances;
use crate::key::Key;
use crate::msg::{Header, Message, MsgType, MAX_DAEMON_TYPE, REPLY_CONTINUES, TOOL_ID_BASE};
use crate::queue::{Queue, TypeFilter};
use crate::timer::Alarm;
use std::time::{Duration, Instant};

/// How often [`Client::request_served`] asks whether a live kerneld still
/// serves the queue: a sender learns of a killed kerneld within this, plus
/// a few system calls.
pub const WATCH_PERIOD: Duration = Duration::from_millis(250);

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

    /// Like [`Client::request`], for a sender that must not wait on a
    /// kerneld that is gone: it asks the instance registry
    /// ([`crate::instances`]) whether a live kerneld takes messages of
    /// type `t` on the key before sending, and every [`WATCH_PERIOD`]
    /// while it waits.  When none does, the request is taken back from
    /// the queue under the key's lock, so that a kerneld started later
    /// never performs it, and the result is [`Error::NotServed`]: the
    /// caller may then do the work itself (the shim's fallback) without
    /// it ever being done twice.  A request a live kerneld has taken is
    /// awaited up to `timeout`.
    pub fn request_served(
        &self,
        t: MsgType,
        text: &[u8],
        reply_id: i64,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        check_reply_id(reply_id)?;
        let key = self.queue.key();
        let served = || instances::registered(key).may_serve(t.number());
        if !served() {
            return Err(Error::NotServed { key, sent: false });
        }
        while self
            .queue
            .recv_raw(TypeFilter::Exactly(reply_id), true)?
            .is_some()
        {}
        // Duration::MAX: no end (an Instant cannot hold it).
        let end = Instant::now().checked_add(timeout);
        let left = || {
            end.map_or(Duration::MAX, |e| {
                e.saturating_duration_since(Instant::now())
            })
        };
        let slice = || Deadline::arm(Some(WATCH_PERIOD.min(left())));
        let msg = Message::request(t, reply_id, self.header, text);
        // A dead kerneld's queue may be full: a blocked send is watched too.
        loop {
            let d = slice()?;
            match self.queue.send_interruptible(&msg, usize::MAX) {
                Ok(()) => break,
                Err(Error::Interrupted) if d.check().is_err() => {
                    if left().is_zero() {
                        return Err(Error::Timeout(timeout));
                    }
                    if !served() {
                        return Err(Error::NotServed { key, sent: false });
                    }
                }
                Err(Error::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
        let mut reply = Vec::new();
        loop {
            let d = slice()?;
            match self.wait_parts(reply_id, &d, &mut reply) {
                Err(Error::Timeout(_)) => {
                    if left().is_zero() {
                        return Err(Error::Timeout(timeout));
                    }
                    if !served() && self.take_back(t, reply_id)? {
                        return Err(Error::NotServed { key, sent: true });
                    }
                }
                other => return other,
            }
        }
    }

    /// No live kerneld was seen: under the key's lock, unless one has come
    /// up meanwhile, take the request back.  Whether it is the caller's
    /// again (false: a kerneld serves the key now, keep waiting).  If the
    /// request is no longer in the queue, a kerneld read it and died: it is
    /// the caller's again all the same, since no live kerneld has it.
    fn take_back(&self, t: MsgType, reply_id: i64) -> Result<bool, Error> {
        let key = self.queue.key();
        let lock = instances::KeyLock::acquire(key).map_err(|e| Error::Sys {
            call: "flock",
            source: std::io::Error::other(e),
        })?;
        if instances::registered(key).may_serve(t.number()) {
            lock.release(false);
            return Ok(false);
        }
        let r = self.queue.take_back(t.number(), reply_id);
        lock.release(false);
        r?;
        Ok(true)
    }

    fn wait_until(&self, reply_id: i64, deadline: &Deadline) -> Result<Reply, Error> {
        self.wait_parts(reply_id, deadline, &mut Vec::new())
    }

    /// Receive the parts of the reply on `reply_id` into `text` until the
    /// last one; `text` keeps what came before an interruption.
    fn wait_parts(
        &self,
        reply_id: i64,
        deadline: &Deadline,
        text: &mut Vec<u8>,
    ) -> Result<Reply, Error> {
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
                            text: std::mem::take(text),
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

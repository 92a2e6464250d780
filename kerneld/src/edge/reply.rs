//! Where answers leave kerneld, and how the queue is kept flowing.
//!
//! A reply is sent without blocking: a blocking send on a full queue (full
//! of requests only kerneld takes off it) would stop the receiver for
//! good.  Replies that nobody reads are the danger: a client that died
//! leaves its reply on the queue, and a few hundred fill the 16 KiB a
//! queue holds by default, after which no request gets in.  So every reply
//! id is noted with the time of its reply, and the reply thread ([`run`])
//! removes unread replies, oldest first:
//!
//! - when the queue is full or nearly (a send found no room, or it holds
//!   more than [`PRESSURE`] of its capacity), those unread for
//!   [`FULL_GRACE`];
//! - otherwise those unread for [`UNREAD_AGE`].
//!
//! A living client reads its reply within microseconds (one blocked in
//! `msgrcv` gets it handed over without it ever entering the queue), so a
//! reply still there after that long has no reader.  The 1995 kernel
//! likewise flushed messages older than 10 s from a full queue.  A reply
//! that finds no room even then waits in the [`Outbox`] until its client's
//! wait has passed ([`crate::edge::outbox::patience`]).
//!
//! [`run`]: Replies::run

use crate::edge::outbox::{patience, Outbox, DEFERRED_MAX_BYTES};
use crate::operator::log;
use kmod_ipc::{
    instances, Error as IpcError, Header, Key, Message, MessageView, Queue, TypeFilter,
    MAX_DAEMON_TYPE, TOOL_ID_BASE,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// On a full queue, a reply unread this long is removed.  A client is
/// rarely kept off the CPU that long between its send and its receive; a
/// longer grace lets a flood of dead clients' replies hold the queue.
pub(crate) const FULL_GRACE: Duration = Duration::from_millis(10);

/// On a queue with room, a reply unread this long is removed.
pub(crate) const UNREAD_AGE: Duration = Duration::from_secs(2);

/// Fraction of the capacity above which the queue counts as full.
pub(crate) const PRESSURE: (u64, u64) = (3, 4);

/// Reply ids remembered at most.  Beyond, the id answered longest ago is
/// checked (its reply removed if unread) and forgotten.
pub(crate) const SENT_MAX: usize = 16384;

/// How often the reply thread looks at the queue while replies may be
/// unread, and while the queue is full or replies wait for room.
const WATCH_PERIOD: Duration = Duration::from_millis(20);
const PRESSURE_PERIOD: Duration = Duration::from_millis(2);

fn queue_full(e: &IpcError) -> bool {
    matches!(e, IpcError::Sys { source, .. } if source.raw_os_error() == Some(libc::EAGAIN))
}

thread_local! {
    /// The encoded reply of each sending thread (receiver, workers), kept
    /// from one reply to the next.
    static SEND_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whom a reply goes to: the request's reply id and header format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplyTo {
    pub(crate) id: i64,
    pub(crate) header: Header,
}

impl From<&Message> for ReplyTo {
    fn from(m: &Message) -> ReplyTo {
        ReplyTo {
            id: m.id,
            header: m.header,
        }
    }
}

impl From<&MessageView<'_>> for ReplyTo {
    fn from(m: &MessageView<'_>) -> ReplyTo {
        ReplyTo {
            id: m.id,
            header: m.header,
        }
    }
}

/// The reply edge: the queue handle, the ids answered, the outbox.
pub(crate) struct Replies {
    queue: Mutex<Queue>,
    /// The queue's key, and the types this kerneld serves on it: ids that
    /// are such types are never answered.
    key: Key,
    filter: TypeFilter,
    /// kerneld's pid for reply headers, read once (getpid() is a system
    /// call on every reply otherwise).
    pid: u32,
    /// When each reply id was last answered.
    sent: Mutex<Sent>,
    outbox: Mutex<Outbox>,
    wake: Condvar,
    stopping: AtomicBool,
    /// Replies dropped: no room until their client stopped waiting, or
    /// the outbox full.
    pub(crate) dropped: AtomicU64,
    /// Unread replies removed from the queue.
    pub(crate) purged: AtomicU64,
}

/// The reply edge, as senders use it.
impl Replies {
    /// The reply edge of a kerneld serving the default types (1..255);
    /// see [`Replies::serving`].
    pub(crate) fn new(queue: Queue) -> Replies {
        Replies {
            key: queue.key(),
            filter: TypeFilter::UpTo(MAX_DAEMON_TYPE),
            queue: Mutex::new(queue),
            pid: std::process::id(),
            sent: Mutex::new(Sent::default()),
            outbox: Mutex::new(Outbox::default()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            purged: AtomicU64::new(0),
        }
    }

    /// For a kerneld serving the types of `filter`.
    pub(crate) fn serving(mut self, filter: TypeFilter) -> Replies {
        self.filter = filter;
        self
    }

    /// Send the answer to `req` if it wants one (see
    /// [`Replies::send`](crate::edge::reply::Replies::send)); never on an id
    /// this kerneld would receive as a request.
    pub(crate) fn reply(&self, req: impl Into<ReplyTo>, status: i64, text: &[u8]) {
        let to: ReplyTo = req.into();
        if self.unanswerable(to.id).is_none() {
            self.send(to, status, text);
        }
    }

    /// [`unanswerable`], and ids that are the type another live kerneld
    /// serves on this queue (an arp instance's 256).  Only ids below the
    /// tools' 1024 are looked up: the ids above are the tools', the
    /// helper's and the kernel's, which an instance serving such a type
    /// would break all alike.
    pub(crate) fn unanswerable(&self, id: i64) -> Option<&'static str> {
        unanswerable(self.filter, id).or_else(|| {
            ((MAX_DAEMON_TYPE + 1..TOOL_ID_BASE).contains(&id)
                && instances::other_serves(self.key, std::process::id(), id))
            .then_some(
                "another kerneld on this queue serves that message type, so it would read the \
                 reply as a request",
            )
        })
    }

    /// The queue replies go to.
    pub(crate) fn queue(&self) -> Queue {
        self.queue.lock().unwrap().clone()
    }

    /// The queue was created again (removed under kerneld).
    pub(crate) fn set_queue(&self, q: Queue) {
        *self.queue.lock().unwrap() = q;
    }

    /// Replies waiting for room: how many, and their bytes.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> (usize, usize) {
        let o = self.outbox.lock().unwrap();
        (o.len(), o.bytes())
    }

    /// Send the answer to `req` if it wants one, in parts if long.  Never
    /// blocks; what finds no room goes to the outbox.  A one-part answer
    /// is encoded into a buffer each thread keeps: no allocation.
    pub(crate) fn send(&self, req: impl Into<ReplyTo>, status: i64, text: &[u8]) {
        let to: ReplyTo = req.into();
        if to.id <= MAX_DAEMON_TYPE {
            return;
        }
        let q = self.queue();
        let part_max = q.text_max(to.header);
        if text.len() <= part_max {
            // Nearly every answer is one part: no list of parts to build.
            let header = to.header.for_reply(self.pid);
            let send = || {
                SEND_BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    kmod_ipc::encode_into(&mut b, to.id, status, header, text, part_max)?;
                    q.send_encoded(&b, true)
                })
            };
            let mut sent = send();
            if sent.as_ref().is_err_and(queue_full) && self.purge_unread(FULL_GRACE) > 0 {
                sent = send();
            }
            match sent {
                Ok(()) => self.note_sent(&q, to.id),
                Err(e) if queue_full(&e) => {
                    let msg = Message {
                        mtype: to.id,
                        id: status,
                        header,
                        text: text.to_vec(),
                    };
                    self.defer(to.id, VecDeque::from([msg]));
                }
                Err(e) => log::error(&format!("cannot send reply to id {}: {e}", to.id)),
            }
            return;
        }
        let req = Message {
            mtype: 0,
            id: to.id,
            header: to.header,
            text: Vec::new(),
        };
        let mut parts: VecDeque<Message> = req.reply_parts(status, self.pid, text, part_max).into();
        let mut purged = false;
        let mut noted = false;
        while let Some(part) = parts.front() {
            match q.send(part, usize::MAX, true) {
                Ok(()) => {
                    parts.pop_front();
                    if !noted {
                        noted = true;
                        self.note_sent(&q, req.id);
                    }
                }
                Err(e) if queue_full(&e) && !purged => {
                    purged = true;
                    if self.purge_unread(FULL_GRACE) == 0 {
                        break;
                    }
                }
                Err(e) if queue_full(&e) => break,
                Err(e) => {
                    log::error(&format!("cannot send reply to id {}: {e}", req.id));
                    return;
                }
            }
        }
        if !parts.is_empty() {
            self.defer(req.id, parts);
        }
    }

    /// Hand what found no room to the reply thread; one whose client is
    /// known to wait goes before the others.
    fn defer(&self, id: i64, parts: VecDeque<Message>) {
        // Only a known live client counts: an id that names a pid gone
        // may still be read by a sender that chose it freely.
        let awaited = crate::edge::waiter::known_alive(id);
        let deadline = Instant::now() + patience(id);
        let (dropped, waiting) = {
            let mut o = self.outbox.lock().unwrap();
            (o.push(id, parts, deadline, awaited), o.bytes())
        };
        match dropped {
            None => log::warn_sampled(&self.dropped, |n| {
                format!(
                    "reply to id {id} dropped: larger than the {DEFERRED_MAX_BYTES} bytes \
                     that may wait for room on the queue ({n} dropped since start)"
                )
            }),
            Some(older) => {
                self.wake.notify_one();
                for old in older {
                    log::warn_sampled(&self.dropped, |n| {
                        format!(
                            "reply to id {old} dropped to make room for a newer one: \
                             {waiting} bytes of replies wait for room on the queue, whose \
                             readers are not reading ({n} dropped since start)"
                        )
                    });
                }
            }
        }
    }

    /// Remove the unread replies of ids answered at least `age` ago,
    /// oldest first; how many messages were removed.
    pub(crate) fn purge_unread(&self, age: Duration) -> usize {
        let Some(cutoff) = Instant::now().checked_sub(age) else {
            return 0;
        };
        // The lock is held while removing, so that a new reply on one of
        // these ids (a client asking again) is not taken for an old one.
        let mut sent = self.sent.lock().unwrap();
        let q = self.queue();
        let mut removed = 0;
        while let Some(id) = sent.take_oldest(Some(cutoff)) {
            removed += self.remove_unread(&q, id);
        }
        drop(sent);
        if removed > 0 {
            // A line each time the total passes a power of two: a flood
            // of dead clients is told, not logged reply by reply.
            let after = self.purged.load(Ordering::Relaxed);
            let before = after - removed as u64;
            if before == 0 || before.ilog2() != after.ilog2() {
                log::notice(&format!(
                    "discarded {removed} replies that nobody read for {} ms (their clients are \
                     gone; {after} since start)",
                    age.as_millis()
                ));
            }
        }
        removed
    }

    /// When the queue holds no message at all, every reply noted so far
    /// was read: forget them (None).  Else the queue's state.  The lock is
    /// held from the look to the forgetting, so that no reply put on the
    /// queue after the look is forgotten unread.
    fn forget_if_empty(&self, q: &Queue) -> Result<Option<kmod_ipc::QueueStat>, IpcError> {
        let mut sent = self.sent.lock().unwrap();
        let st = q.stat()?;
        if st.messages > 0 {
            return Ok(Some(st));
        }
        while sent.take_oldest(None).is_some() {}
        Ok(None)
    }

    /// A reply went out on `id` just now: its unread clock starts.  Noted
    /// only once the reply is on the queue, so that an empty queue seen
    /// under the lock means every noted reply was read (see `run`).
    fn note_sent(&self, q: &Queue, id: i64) {
        let forgotten = self.sent.lock().unwrap().note(id, Instant::now());
        if let Some(old) = forgotten {
            self.remove_unread(q, old);
        }
    }

    fn remove_unread(&self, q: &Queue, id: i64) -> usize {
        let mut n = 0;
        while let Ok(Some(_)) = q.recv_raw(TypeFilter::Exactly(id), true) {
            n += 1;
        }
        self.purged.fetch_add(n as u64, Ordering::Relaxed);
        n
    }
}

/// How many bytes of waiting replies the reply thread may put on a queue
/// holding `bytes` of `max_bytes`.  At most half of it: after a purge, the
/// senders blocked on the full queue (a kdstat, the kernel's helper) must
/// find room before the outbox takes it all.  An empty queue takes a whole
/// part, though: one larger than half the queue (a long status in JSON on
/// a small queue) would otherwise wait until its client gave up.
fn outbox_room(bytes: u64, max_bytes: u64) -> u64 {
    if bytes == 0 {
        max_bytes
    } else {
        (max_bytes / 2).saturating_sub(bytes)
    }
}

/// The reply thread.
impl Replies {
    /// The reply thread: keeps the queue free of unread replies and sends
    /// what waits for room.  Returns once [`Replies::stop`] was called.
    pub(crate) fn run(&self) {
        let mut pressure = false;
        while !self.stopping.load(Ordering::SeqCst) {
            self.wait_for_work(pressure);
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let q = self.queue();
            let backlog = !self.outbox.lock().unwrap().is_empty();
            pressure = backlog;
            match self.forget_if_empty(&q) {
                Ok(None) => {}
                Ok(Some(st)) if backlog || st.bytes * PRESSURE.1 >= st.max_bytes * PRESSURE.0 => {
                    pressure = true;
                    self.purge_unread(FULL_GRACE);
                }
                Ok(Some(_)) => {
                    self.purge_unread(UNREAD_AGE);
                }
                // Removed or unreadable: the receiver re-creates it.
                Err(_) => {}
            }
            if backlog {
                let room = q.stat().map_or(0, |st| outbox_room(st.bytes, st.max_bytes));
                self.send_waiting(&q, room);
            }
        }
        // A last try for what still waits, then kerneld goes.
        self.send_waiting(&self.queue(), u64::MAX);
    }

    /// Sleep until there is something to do: soon while the queue is full
    /// or replies wait for room, a little while replies may be unread, else
    /// until woken.
    fn wait_for_work(&self, pressure: bool) {
        let o = self.outbox.lock().unwrap();
        let period = if pressure || !o.is_empty() {
            PRESSURE_PERIOD
        } else if !self.sent.lock().unwrap().is_empty() {
            WATCH_PERIOD
        } else {
            Duration::from_secs(1)
        };
        let _unused = self.wake.wait_timeout(o, period).unwrap();
    }

    /// Send waiting replies, newest first, up to `room` bytes or until one finds
    /// no room; drop those whose clients stopped waiting.  A reply whose
    /// client is known to wait is not held to `room`: a flood that keeps
    /// the queue half full would otherwise hold it until it expires.
    fn send_waiting(&self, q: &Queue, mut room: u64) {
        let mut o = self.outbox.lock().unwrap();
        let expired = o.expire(Instant::now());
        for _ in 0..expired {
            log::warn_sampled(&self.dropped, |n| {
                format!(
                    "a reply found no room on the queue before its client stopped waiting: \
                     dropped ({n} dropped since start)"
                )
            });
        }
        while let Some(d) = o.next_mut() {
            while let Some(part) = d.parts.front() {
                let size = (part.body_len() + 8) as u64;
                if size > room && !d.awaited() {
                    return;
                }
                match q.send(part, usize::MAX, true) {
                    Ok(()) => {
                        room = room.saturating_sub(size);
                        d.parts.pop_front();
                        // Unread from now on, not from when it was due.
                        self.note_sent(q, d.id);
                    }
                    Err(e) if queue_full(&e) => return,
                    Err(e) => {
                        log::error(&format!("cannot send reply to id {}: {e}", d.id));
                        d.parts.clear();
                    }
                }
            }
            o.pop_next();
        }
    }

    /// Let the reply thread finish.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }
}

/// The reply ids answered, with the time of their last reply, in the
/// order of their replies (an id answered again moves to the end).
#[derive(Debug, Default)]
struct Sent {
    latest: BTreeMap<i64, Instant>,
    /// Every reply in order; entries older than their id's latest reply
    /// are stale and skipped.
    order: VecDeque<(Instant, i64)>,
}

impl Sent {
    /// Note a reply on `id`.  Beyond [`SENT_MAX`] ids, the one answered
    /// longest ago is forgotten and returned, for its reply to be removed
    /// if unread.
    fn note(&mut self, id: i64, now: Instant) -> Option<i64> {
        let forgotten = if self.latest.len() >= SENT_MAX && !self.latest.contains_key(&id) {
            self.take_oldest(None)
        } else {
            None
        };
        self.latest.insert(id, now);
        self.order.push_back((now, id));
        if self.order.len() > 2 * SENT_MAX {
            let latest = &self.latest;
            self.order.retain(|(t, id)| latest.get(id) == Some(t));
        }
        forgotten
    }

    /// Forget and return the id answered longest ago, if it was answered
    /// no later than `cutoff`.
    fn take_oldest(&mut self, cutoff: Option<Instant>) -> Option<i64> {
        while let Some(&(t, id)) = self.order.front() {
            if cutoff.is_some_and(|c| t > c) {
                return None;
            }
            self.order.pop_front();
            if self.latest.get(&id) == Some(&t) {
                self.latest.remove(&id);
                return Some(id);
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Why a request's reply id cannot be answered, if it cannot: the reply
/// is a message whose type is the id, so an id that is a message type
/// served on this queue would have the reply received as a request (by
/// this kerneld, or by another on the key).  Ids 1..255 are always
/// refused (the types of the default instance); so is the type this
/// instance serves (`type=256`: arp); and negative ids, which no message
/// can have as its type.  0 asks for no reply.
pub(crate) fn unanswerable(filter: TypeFilter, id: i64) -> Option<&'static str> {
    let served = match filter {
        TypeFilter::Any => id > 0,
        TypeFilter::Exactly(n) => id == n,
        TypeFilter::UpTo(n) => (1..=n).contains(&id),
    };
    if served {
        Some("it is a message type this kerneld serves, so the reply would come back to it as a request")
    } else if (1..=MAX_DAEMON_TYPE).contains(&id) {
        Some("ids 1..255 are message types kerneld serves on this queue, so the reply would be read as a request")
    } else if id < 0 {
        Some("a negative id cannot be a reply's message type")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmod_ipc::{Client, Header, Key, MsgType};

    /// A private queue, removed even when the test fails.
    struct TestQueue(Queue);

    impl TestQueue {
        fn new(n: i32) -> TestQueue {
            let key = Key(0x4c00_0000 | ((std::process::id() as i32 & 0xfff) << 8) | n);
            TestQueue(Queue::create_unchecked(key, 0o600).unwrap())
        }
    }

    impl Drop for TestQueue {
        fn drop(&mut self) {
            let _ = self.0.remove();
        }
    }

    #[test]
    fn an_empty_queue_takes_a_part_larger_than_half_of_it() {
        // 16 KiB queue: half of it while others' messages are there ...
        assert_eq!(outbox_room(100, 16384), 8092);
        assert_eq!(outbox_room(9000, 16384), 0);
        // ... and a part of up to 16 KiB when it is empty.
        assert_eq!(outbox_room(0, 16384), 16384);
    }

    #[test]
    fn reply_ids_that_are_served_types_are_unanswerable() {
        use TypeFilter::*;
        for (filter, id, refused) in [
            (UpTo(255), 2, true),
            (UpTo(255), 255, true),
            (UpTo(255), 256, false),
            (UpTo(8), 200, true),
            (Exactly(256), 256, true),
            (Exactly(256), 2, true),
            (Exactly(256), 257, false),
            (Exactly(2), -1, true),
            (Exactly(2), 0, false),
            (UpTo(255), 1024 + 77, false),
        ] {
            assert_eq!(
                unanswerable(filter, id).is_some(),
                refused,
                "{filter:?} {id}"
            );
        }
    }

    fn status_request(id: i64) -> Message {
        Message::request(MsgType::Status, id, Header::Old, "")
    }

    #[test]
    fn unread_replies_are_purged_but_fresh_ones_stay() {
        let q = TestQueue::new(1);
        let r = Replies::new(q.0.clone());
        r.send(&status_request(7777), 0, b"old");
        assert_eq!(r.purge_unread(Duration::from_secs(60)), 0, "too young");
        assert_eq!(r.purge_unread(Duration::ZERO), 1);
        assert_eq!(q.0.stat().unwrap().messages, 0);
        assert_eq!(r.purged.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_reply_that_finds_no_room_waits_and_is_sent_when_room_appears() {
        let q = TestQueue::new(2);
        let r = std::sync::Arc::new(Replies::new(q.0.clone()));
        q.0.set_max_bytes(1).unwrap();
        r.send(&status_request(7001), 0, b"later");
        assert_eq!(r.waiting().0, 1);
        let t = {
            let r = std::sync::Arc::clone(&r);
            std::thread::spawn(move || r.run())
        };
        q.0.set_max_bytes(16384).unwrap();
        let client = Client::connect(q.0.key()).unwrap();
        let got = client
            .wait_reply(7001, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(got.text, b"later");
        r.stop();
        t.join().unwrap();
        assert_eq!(r.waiting(), (0, 0));
    }

    #[test]
    fn a_full_queue_of_unread_replies_is_emptied_oldest_first() {
        let q = TestQueue::new(3);
        let r = std::sync::Arc::new(Replies::new(q.0.clone()));
        q.0.set_max_bytes(16384).unwrap();
        // Replies nobody reads, until one finds no room.
        let mut id = 10_000;
        while r.waiting().0 == 0 {
            r.send(&status_request(id), 0, &[b'u'; 40]);
            id += 1;
        }
        let t = {
            let r = std::sync::Arc::clone(&r);
            std::thread::spawn(move || r.run())
        };
        // The last one, which waited, reaches its reader once the unread
        // ones older than FULL_GRACE are gone.
        let client = Client::connect(q.0.key()).unwrap();
        let got = client
            .wait_reply(id - 1, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(got.text, [b'u'; 40]);
        assert!(r.purged.load(Ordering::Relaxed) >= 100);
        r.stop();
        t.join().unwrap();
    }

    #[test]
    fn the_ids_remembered_are_bounded() {
        let mut s = Sent::default();
        let t0 = Instant::now();
        let mut forgotten = Vec::new();
        for i in 0..(SENT_MAX as i64 + 10) {
            forgotten.extend(s.note(1024 + i, t0 + Duration::from_micros(i as u64)));
        }
        assert_eq!(s.latest.len(), SENT_MAX);
        assert_eq!(
            forgotten,
            (1024..1034).collect::<Vec<i64>>(),
            "the oldest go first"
        );
        // One id answered again and again takes one place, and the order
        // list stays bounded too.
        for i in 0..(3 * SENT_MAX as u64) {
            s.note(5, t0 + Duration::from_secs(1) + Duration::from_micros(i));
        }
        assert_eq!(s.latest.len(), SENT_MAX);
        assert!(s.order.len() <= 2 * SENT_MAX + 1);
    }

    #[test]
    fn an_id_answered_again_counts_from_its_last_reply() {
        let mut s = Sent::default();
        let t0 = Instant::now();
        s.note(2000, t0);
        s.note(2001, t0 + Duration::from_millis(1));
        s.note(2000, t0 + Duration::from_millis(2));
        assert_eq!(
            s.take_oldest(Some(t0 + Duration::from_millis(1))),
            Some(2001)
        );
        assert_eq!(s.take_oldest(Some(t0 + Duration::from_millis(1))), None);
        assert_eq!(s.take_oldest(None), Some(2000));
        assert!(s.is_empty());
    }
}

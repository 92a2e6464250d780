//! The daemon: receives messages, merges and dispatches them, answers.
//!
//! One thread receives from the queue and answers status requests itself
//! (they are quick and must work while everything else is busy).  Actions
//! (loading, unloading, running programs) go to the worker pool; identical
//! ones in progress are merged.  A timer thread runs the idle sweeps and
//! delayed releases.

use crate::backend::Usage;
use crate::config::Config;
use crate::control::{self, Owners};
use crate::errno::errno_text;
use crate::expiry::Expiry;
use crate::jobs::{JobTable, Planned, Waiter, MAX_WAITERS};
use crate::log;
use crate::names;
use crate::negcache::NegativeCache;
use crate::pool::{Contexts, Factory, Pool};
use crate::programs::Programs;
use crate::record::{Record, Removal};
use crate::reply::Replies;
use crate::request::{Ask, Plan, Requests};
use crate::requester::Requester;
use crate::settings::LiveSettings;
use crate::status::Snapshot;
use crate::trace::Tracer;
use kmod_ipc::{
    Error as IpcError, Header, Key, Message, MsgType, Queue, TypeFilter, DEFAULT_TEXT_MAX,
    KERNELD_MINSEQ, MAX_DAEMON_TYPE,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

pub use crate::expiry::DELAYED_MAX;

pub use crate::metrics::{Counters, Recent, RECENT_MAX};
pub use crate::outcome::Outcome;
pub use crate::settings::Settings;

/// What the daemon is built from.
pub struct Parts {
    pub settings: Settings,
    pub config: Config,
    pub queue: Queue,
    pub filter: TypeFilter,
    pub factory: Factory,
    pub record: Record,
    /// Changes when the module index or modprobe.d changes.
    pub fingerprint: Box<dyn Fn() -> u64 + Send + Sync>,
    pub tracer: Option<Tracer>,
}

/// The running daemon.
pub struct Daemon {
    settings: LiveSettings,
    config: RwLock<Arc<Config>>,
    requests: Requests,
    jobs: Mutex<JobTable>,
    expiry: Expiry,
    pub counters: Counters,
    pool: Pool,
    contexts: Contexts,
    /// The queue, and the replies sent to it (its own thread).
    replies: Arc<Replies>,
    key: Key,
    filter: TypeFilter,
    stopping: AtomicBool,
    started: Instant,
    started_at: SystemTime,
    programs: Programs,
    tracer: Option<Tracer>,
}

/// The thread id of a worker (the "pid" of the classic status).
fn tid() -> i32 {
    nix::unistd::gettid().as_raw()
}

impl Daemon {
    /// The daemon, with its reply thread running (`Daemon::new` runs after
    /// the fork: the pid in reply headers is read there).
    pub fn new(p: Parts) -> Arc<Daemon> {
        let cfg = Arc::new(p.config);
        let replies = Arc::new(Replies::new(p.queue.clone()));
        {
            let r = Arc::clone(&replies);
            std::thread::Builder::new()
                .name("kerneld-replies".into())
                .spawn(move || r.run())
                .expect("spawn the reply thread");
        }
        Arc::new(Daemon {
            key: p.queue.key(),
            settings: LiveSettings::new(p.settings),
            requests: Requests::new(
                cfg.policy.clone(),
                NegativeCache::new(cfg.negative_cache, cfg.rate_limit_per_minute),
                p.fingerprint,
            ),
            pool: Pool::new(cfg.max_workers),
            programs: Programs::new(&cfg),
            config: RwLock::new(cfg),
            jobs: Mutex::new(JobTable::default()),
            expiry: Expiry::new(p.record, p.settings.delay),
            counters: Counters::default(),
            contexts: Contexts::new(p.factory),
            replies,
            filter: p.filter,
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            started_at: SystemTime::now(),
            tracer: p.tracer,
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings.get()
    }

    pub fn queue(&self) -> Queue {
        self.replies.queue()
    }

    /// The reply edge (counters of dropped and purged replies).
    pub fn replies(&self) -> &Replies {
        &self.replies
    }

    pub fn key(&self) -> Key {
        self.key
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stop taking requests; the receiver leaves its loop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.expiry.notify();
        self.replies.stop();
    }

    // ---------------------------------------------------------------
    // Receiving

    /// The receive loop; returns when `stop` was called.
    pub fn receive_loop(self: &Arc<Self>) {
        while !self.stopping() {
            let q = self.queue();
            match q.recv_raw(self.filter, false) {
                Ok(Some((mtype, body))) => self.handle(mtype, &body),
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

    /// Handle one received body.  Never panics on any input.
    pub fn handle(self: &Arc<Self>, mtype: i64, body: &[u8]) {
        let msg = match Message::decode_body(mtype, body, DEFAULT_TEXT_MAX) {
            Ok(m) => m,
            Err(e) => return self.bad_message(mtype, body, &e.to_string()),
        };
        if log::debug_enabled() {
            log::debug(&format!(
                "received {} (type {}) id {} {}'{}'",
                msg.msg_type(),
                msg.mtype,
                msg.id,
                msg.pid()
                    .map_or(String::new(), |p| format!("from pid {p} ")),
                msg.text_lossy()
            ));
        }
        if (1..=MAX_DAEMON_TYPE).contains(&msg.id) || msg.id < 0 {
            // Its reply would be received by kerneld itself.
            self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
            log::warn(&format!(
                "dropping {} with reply id {}: ids 1..255 and negative ids cannot be answered",
                msg.msg_type(),
                msg.id
            ));
            return;
        }
        self.counters.count_request(msg.msg_type());
        let requester = self.requester_of(&msg, body);
        let identity = self.requests.identity(requester.as_ref());
        match msg.msg_type() {
            MsgType::Status => {
                let out = self.control(&msg.text_lossy());
                self.reply(&msg, out.status, out.text.as_bytes());
            }
            MsgType::RequestModule | MsgType::ReleaseModule => {
                let Some(name) = self.checked_name(&msg) else {
                    return;
                };
                if msg.msg_type() == MsgType::RequestModule {
                    self.rearm_sweep_and_cancel(name);
                    // Quick answers skip the hop to a worker, unless the
                    // same request is in progress (then it joins that).
                    let busy = self.jobs.lock().unwrap().in_progress(
                        MsgType::RequestModule,
                        &msg.text,
                        &identity,
                    );
                    if !busy {
                        let ask = Ask::new(name, requester.as_ref(), &identity);
                        let planned =
                            match self.requests.decide(&self.contexts, &ask, &self.counters) {
                                Plan::Answer(a) => {
                                    self.count_outcome(&a.outcome);
                                    self.reply(&msg, a.outcome.status, a.outcome.text.as_bytes());
                                    // The request's line is written once the
                                    // requester has its answer: the write(2)
                                    // is the costliest step of a quick answer,
                                    // and nothing in the answer depends on it.
                                    // The next message is read only after it.
                                    a.line.emit();
                                    return;
                                }
                                Plan::Load(resolution) => Planned {
                                    resolution,
                                    since: ask.since,
                                },
                            };
                        return self.submit(msg, requester, identity, Some(planned));
                    }
                }
                self.submit(msg, requester, identity, None);
            }
            MsgType::DelayedRelease => {
                let Some(name) = self.checked_name(&msg) else {
                    return;
                };
                let delay = self.settings().delay;
                match self.expiry.delay_release(name, delay) {
                    Ok(()) => self.reply(
                        &msg,
                        0,
                        format!("{name} will be released in {delay} s").as_bytes(),
                    ),
                    Err(why) => {
                        log::warn(&format!("delayed release of {name} refused: {why}"));
                        self.reply(&msg, 1, format!("{name}: {why}").as_bytes());
                    }
                }
            }
            MsgType::CancelRelease => {
                let Some(name) = self.checked_name(&msg) else {
                    return;
                };
                let had = self.expiry.cancel(name);
                let text = if had {
                    format!("release of {name} cancelled")
                } else {
                    format!("no release of {name} was pending")
                };
                self.reply(&msg, 0, text.as_bytes());
            }
            MsgType::System
            | MsgType::RequestRoute
            | MsgType::Blanker
            | MsgType::Pnp
            | MsgType::Arp => self.submit(msg, requester, identity, None),
            MsgType::Unknown(n) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                log::warn(&format!("unknown message type {n} (id {})", msg.id));
                self.reply(&msg, 1, format!("unknown message type {n}").as_bytes());
            }
        }
    }

    fn count_outcome(&self, o: &Outcome) {
        self.counters.count_status(o.status);
    }

    /// Who asked: the task the in-kernel sender names after the text's
    /// NUL, else the traced task for a kernel request through the shim,
    /// else the 16-bit pid of the new header.
    fn requester_of(&self, msg: &Message, body: &[u8]) -> Option<Requester> {
        if msg.msg_type() == MsgType::RequestModule {
            if let Some(r) = Requester::from_body(body) {
                // Its tracepoint record, if any, would be misattributed later.
                if let Some(t) = &self.tracer {
                    let _ = t.claim(&msg.text_lossy());
                }
                return Some(r);
            }
        }
        if msg.msg_type() == MsgType::RequestModule && msg.id >= KERNELD_MINSEQ {
            if let Some(t) = &self.tracer {
                if let Some(r) = t.claim(&msg.text_lossy()) {
                    return Some(r);
                }
            }
        }
        None
    }

    /// The validated name of a request, borrowed from its text (no copy).
    fn checked_name<'m>(&self, msg: &'m Message) -> Option<&'m str> {
        match names::validate(&msg.text) {
            Ok(n) => Some(n),
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
                log::warn(&format!(
                    "refused {} for {:?}: {e}",
                    msg.msg_type(),
                    String::from_utf8_lossy(&msg.text)
                ));
                self.reply(msg, 1, format!("refused: {e}").as_bytes());
                None
            }
        }
    }

    fn bad_message(&self, mtype: i64, body: &[u8], why: &str) {
        self.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
        log::warn(&format!(
            "malformed message of type {mtype} ({} bytes): {why}",
            body.len()
        ));
        // Answer if the sender can be identified and waits.
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
        let req = Message {
            mtype,
            id,
            header,
            text: Vec::new(),
        };
        self.reply(&req, 1, format!("malformed message: {why}").as_bytes());
    }

    /// Send the answer to `req` if it wants one (see [`Replies::send`]).
    pub fn reply(&self, req: &Message, status: i64, text: &[u8]) {
        self.replies.send(req, status, text);
    }

    // ---------------------------------------------------------------
    // Actions

    /// Start an action for `msg`, or join the identical one in progress.
    /// `identity` is `identity_key` of the requester.
    /// `planned`: what the receive thread decided to load (type 2).
    fn submit(
        self: &Arc<Self>,
        msg: Message,
        requester: Option<Requester>,
        identity: String,
        planned: Option<Planned>,
    ) {
        let kind = msg.msg_type();
        let text = msg.text.clone();
        let waiter = Waiter {
            request: msg,
            requester,
            arrived: Instant::now(),
        };
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.waiters_of(kind, &text, &identity) >= MAX_WAITERS {
            drop(jobs);
            let why = format!("{MAX_WAITERS} identical requests wait for the action in progress");
            log::warn_sampled(&self.counters.refused_waiters, |n| {
                format!(
                    "{kind} '{}' refused: {why} ({n} refused since start)",
                    String::from_utf8_lossy(&text)
                )
            });
            self.reply(&waiter.request, 1, why.as_bytes());
            return;
        }
        let new = jobs.join_or_create(kind, &text, &identity, waiter, planned);
        drop(jobs);
        match new {
            Some(id) => {
                let d = Arc::clone(self);
                self.pool.execute(move || d.run_job(id));
            }
            None => {
                self.counters.merged.fetch_add(1, Ordering::Relaxed);
                if log::debug_enabled() {
                    log::debug(&format!(
                        "merged {kind} '{}' into the action in progress",
                        String::from_utf8_lossy(&text)
                    ));
                }
            }
        }
    }

    fn run_job(self: &Arc<Self>, id: u64) {
        let Some(job) = self.jobs.lock().unwrap().start(id, tid()) else {
            return;
        };
        let (kind, text, requester) = (job.kind, job.text, job.requester);
        let text_s = String::from_utf8_lossy(&text).into_owned();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match kind {
            MsgType::RequestModule => match job.planned {
                Some(p) => self.load_planned(&text_s, requester.as_ref(), p),
                None => self.request_module(&text_s, requester.as_ref()),
            },
            MsgType::ReleaseModule => self.release_module(&text_s),
            other => self.programs.run(other, &text_s, &self.config()),
        }))
        .unwrap_or_else(|_| {
            log::error(&format!("internal error while serving {kind} '{text_s}'"));
            Outcome::fail("internal error in kerneld (see its log)")
        });
        self.count_outcome(&outcome);
        let waiters = self.jobs.lock().unwrap().finish(id);
        for w in waiters {
            self.reply(&w.request, outcome.status, outcome.text.as_bytes());
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// Type 2: what `modprobe -q NAME` does, with policy in front, decided
    /// and loaded on this thread (the one request path; see `request.rs`).
    pub fn request_module(&self, name: &str, who: Option<&Requester>) -> Outcome {
        let identity = self.requests.identity(who);
        let ask = Ask::new(name, who, &identity);
        let answer = match self.requests.decide(&self.contexts, &ask, &self.counters) {
            Plan::Answer(a) => a,
            Plan::Load(res) => self.requests.load(&self.contexts, &self.expiry, &ask, &res),
        };
        answer.line.emit();
        answer.outcome
    }

    /// Type 2 decided on the receive thread: load what it resolved to.
    fn load_planned(&self, name: &str, who: Option<&Requester>, p: Planned) -> Outcome {
        let identity = self.requests.identity(who);
        let mut ask = Ask::new(name, who, &identity);
        ask.since = p.since;
        let answer = self
            .requests
            .load(&self.contexts, &self.expiry, &ask, &p.resolution);
        answer.line.emit();
        answer.outcome
    }

    /// Type 3: unload now, never forced, with the recorded dependencies
    /// only it held.
    pub fn release_module(&self, name: &str) -> Outcome {
        let keep = self.config().keep_modules.clone();
        let r = self.contexts.with(|sys| {
            // delete_module() answers ENOENT for these, whose errno text
            // speaks of loading ("unknown symbol"): say what it is.
            match sys.usage(name) {
                Usage::NotLoaded => return Err(format!("{name} is not loaded")),
                Usage::Builtin => return Err(format!("{name} is built into the kernel")),
                Usage::Loaded { .. } => {}
            }
            Ok(self.expiry.remove_with_deps(sys, name, &keep))
        });
        let out = match r {
            Ok(Ok(o)) => o,
            Ok(Err(why)) => {
                let o = Outcome::fail(format!("release {name}: {why}"));
                log::module_event(log::Event::Released, &[name], o.status, &o.text);
                return o;
            }
            Err(e) => return Outcome::fail(format!("cannot use libkmod: {e}")),
        };
        let o = match out.failed.first() {
            Some((m, e)) if out.removed.is_empty() => Outcome::fail(format!(
                "release {name}: could not unload {m}: {}",
                errno_text(*e)
            )),
            _ => Outcome::ok(format!(
                "release {name}: unloaded {}",
                out.removed.join(" ")
            )),
        };
        log::module_event(log::Event::Released, &[name], o.status, &o.text);
        o
    }

    // ---------------------------------------------------------------
    // Timers

    /// A request for `name`: the next sweep waits a full delay again, and a
    /// delayed release of `name` is off.
    fn rearm_sweep_and_cancel(&self, name: &str) {
        self.expiry.requested(name, self.settings.delay());
    }

    /// Seconds until the next sweep, None with `keep`.
    pub fn next_sweep_in(&self) -> Option<f64> {
        if self.settings.keep() {
            return None;
        }
        Some(self.expiry.next_sweep_in().as_secs_f64())
    }

    /// The timer loop: sweeps and delayed releases; returns on stop.
    pub fn timer_loop(self: &Arc<Self>) {
        self.expiry.run(
            || self.stopping(),
            || self.settings.delay(),
            |name| {
                let d = Arc::clone(self);
                self.pool.execute(move || {
                    d.release_module(&name);
                });
            },
            || {
                self.sweep();
            },
        );
    }

    /// One idle sweep (unless `keep`, or a load is in progress, as in 1996).
    pub fn sweep(&self) -> Removal {
        if self.settings().keep || self.jobs.lock().unwrap().any_of(MsgType::RequestModule) {
            return Removal::default();
        }
        let keep = self.config().keep_modules.clone();
        let r = self.contexts.with(|sys| self.expiry.sweep(sys, &keep));
        let out = r.unwrap_or_default();
        if !out.removed.is_empty() {
            self.counters
                .expired
                .fetch_add(out.removed.len() as u64, Ordering::Relaxed);
            let line = format!("expired idle modules: {}", out.removed.join(" "));
            log::module_event(log::Event::Expired, &out.removed, 0, &line);
        }
        for (m, e) in &out.failed {
            log::warn(&format!(
                "could not unload idle module {m}: {}",
                errno_text(*e)
            ));
        }
        out
    }

    // ---------------------------------------------------------------
    // Status and control (type 255)

    /// Apply a control word and produce the reply (see `control.rs`).
    pub fn control(&self, text: &str) -> Outcome {
        let owners = Owners {
            settings: &self.settings,
            requests: &self.requests,
            expiry: &self.expiry,
        };
        control::apply(&owners, text, || self.flush(), || self.snapshot())
    }

    /// Drop every waiting message (types the daemon serves); answer those
    /// whose senders wait, so that nobody hangs.  Also: how many messages
    /// it left in the queue (replies, types it does not serve), counted
    /// before its own answers go in.
    fn flush(&self) -> (usize, u64) {
        let q = self.queue();
        let mut drained = Vec::new();
        while let Ok(Some(m)) = q.recv_raw(self.filter, true) {
            drained.push(m);
        }
        let left = q.stat().map_or(0, |s| s.messages);
        for (mtype, body) in &drained {
            if let Ok(m) = Message::decode_body(*mtype, body, usize::MAX) {
                self.reply(&m, 1, b"flushed by the operator (kdstat flush)");
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

    // ---------------------------------------------------------------
    // Reload

    /// SIGHUP: read the configuration again (see `control::reload`).
    pub fn reload(&self, path: &std::path::Path, required: bool) {
        control::reload(path, required, &self.config, &self.requests, &self.contexts);
    }

    /// Wait for actions in flight, up to `timeout`.
    pub fn drain(&self, timeout: Duration) -> bool {
        self.pool.wait_idle(timeout)
    }

    /// Everything the status shows, gathered once.
    pub fn snapshot(&self) -> Snapshot {
        let q = self.queue();
        Snapshot {
            settings: self.settings(),
            key: self.key,
            queue_id: q.id(),
            queue: q.stat().map_err(|e| e.to_string()),
            jobs: self.jobs.lock().unwrap().jobs().cloned().collect(),
            uptime: self.started.elapsed(),
            started_at: self.started_at,
            workers: self.pool.workers(),
            next_sweep_in: self.next_sweep_in(),
            record: self.expiry.modules(),
            recent: self
                .requests
                .recent
                .lock()
                .unwrap()
                .iter()
                .cloned()
                .collect(),
            counters: self.counters.values(),
            replies_dropped: self.replies.dropped.load(Ordering::Relaxed),
            replies_purged: self.replies.purged.load(Ordering::Relaxed),
            negative_entries: self.requests.negcache.lock().unwrap().len(),
            policy: self.requests.policy.read().unwrap().clone(),
            tracing: self.tracer.as_ref().map(|t| t.describe()),
        }
    }

    #[cfg(test)]
    fn workers(&self) -> usize {
        self.pool.workers()
    }

    pub fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::{FakeKernel, SharedFake};
    use crate::backend::{load_error_text, Errno, ModuleBackend};
    use kmod_ipc::{Client, Key};

    /// Removes the test's queue even when the test fails.
    struct Removed(Queue);

    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = self.0.remove();
        }
    }

    impl std::ops::Deref for Removed {
        type Target = Queue;
        fn deref(&self) -> &Queue {
            &self.0
        }
    }

    /// A daemon on a private queue over the fake kernel.
    fn daemon(fake: SharedFake, key: i32) -> (Arc<Daemon>, Removed) {
        let queue = Queue::create_unchecked(Key(key), 0o600).unwrap();
        let f = fake.clone();
        let d = Daemon::new(Parts {
            settings: Settings {
                delay: 60,
                keep: false,
                debug: false,
            },
            config: Config::default(),
            queue: queue.clone(),
            filter: TypeFilter::UpTo(255),
            factory: Box::new(move || Ok(Box::new(f.clone()) as Box<dyn ModuleBackend + Send>)),
            record: Record::in_memory(),
            fingerprint: Box::new(|| 0),
            tracer: None,
        });
        (d, Removed(queue))
    }

    fn test_key(n: i32) -> i32 {
        0x4b00_0000 | ((std::process::id() as i32 & 0xfff) << 8) | n
    }

    #[test]
    fn identical_requests_share_one_load_and_all_are_answered() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        k.load_time = Duration::from_millis(300);
        let fake = k.shared();
        let (d, _queue) = daemon(fake.clone(), test_key(1));
        for i in 0..5 {
            let m = Message::request(
                MsgType::RequestModule,
                5000 + i,
                Header::Old,
                "rtnl-link-dummy",
            );
            let body = m.encode_body(1024).unwrap();
            d.handle(m.mtype, &body);
        }
        let client = Client::connect(Key(test_key(1))).unwrap();
        for i in 0..5 {
            let r = client
                .wait_reply(5000 + i, Some(Duration::from_secs(10)))
                .unwrap();
            assert_eq!(r.status, 0, "{}", r.text_lossy());
            assert!(
                r.text_lossy().contains("loaded dummy"),
                "{}",
                r.text_lossy()
            );
        }
        assert_eq!(fake.0.lock().unwrap().loads, ["rtnl-link-dummy"]);
        assert_eq!(d.counters.merged.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn unknown_names_are_answered_without_a_worker_and_loads_use_one() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let (d, _queue) = daemon(k.shared(), test_key(6));
        let client = Client::connect(Key(test_key(6))).unwrap();
        for (i, name) in ["nosuch", "nosuch", "rtnl-link-dummy"].iter().enumerate() {
            let id = 6000 + i as i64;
            let m = Message::request(MsgType::RequestModule, id, Header::Old, *name);
            d.handle(m.mtype, &m.encode_body(1024).unwrap());
            let r = client
                .wait_reply(id, Some(Duration::from_secs(10)))
                .unwrap();
            let want = if i < 2 { 1 } else { 0 };
            assert_eq!(r.status, want, "{name}: {}", r.text_lossy());
            if i < 2 {
                assert_eq!(d.workers(), 0, "an unknown name needs no worker");
            }
        }
        assert!(d.workers() >= 1, "a load goes to a worker");
        assert_eq!(d.counters.cached.load(Ordering::Relaxed), 1);
        assert_eq!(d.counters.failed.load(Ordering::Relaxed), 2);
        assert_eq!(d.counters.succeeded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_kernel_that_takes_no_modules_is_answered_without_a_load() {
        let mut k =
            FakeKernel::with_tree(&[("llc", &[]), ("stp", &["llc"])]).alias("rtnl-link-stp", "stp");
        k.refuse_insertions = Some(Errno::EPERM);
        let fake = k.shared();
        let (d, _queue) = daemon(fake.clone(), test_key(7));
        let o = d.request_module("rtnl-link-stp", None);
        assert_eq!(o.status, 1);
        // The first module of the load order is the one the kernel would
        // have refused.
        assert_eq!(
            o.text,
            format!("rtnl-link-stp: {}", load_error_text("llc", Errno::EPERM))
        );
        assert!(o.text.contains("modules_disabled"), "{}", o.text);
        assert!(fake.0.lock().unwrap().loads.is_empty(), "a load was tried");
        // Once the kernel takes modules again, the load goes ahead (by
        // the module's own name: the alias's refusal is in the negative
        // cache for a few seconds).
        fake.0.lock().unwrap().refuse_insertions = None;
        assert_eq!(d.request_module("stp", None).status, 0);
        assert_eq!(fake.0.lock().unwrap().loads, ["stp"]);
    }

    #[test]
    fn loaded_modules_expire_after_two_idle_sweeps_unless_keep() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let fake = k.shared();
        let (d, _queue) = daemon(fake.clone(), test_key(2));
        assert_eq!(d.request_module("rtnl-link-dummy", None).status, 0);
        d.control("keep");
        assert!(d.sweep().removed.is_empty());
        assert!(d.sweep().removed.is_empty());
        d.control("nokeep");
        assert!(d.sweep().removed.is_empty(), "second chance");
        assert_eq!(d.sweep().removed, ["dummy"]);
        assert_eq!(d.counters.expired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_action_gathers_at_most_max_waiters() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        k.load_time = Duration::from_secs(2);
        let (d, _queue) = daemon(k.shared(), test_key(10));
        let client = Client::connect(Key(test_key(10))).unwrap();
        let send = |id: i64| {
            let m = Message::request(MsgType::RequestModule, id, Header::Old, "rtnl-link-dummy");
            d.handle(m.mtype, &m.encode_body(1024).unwrap());
        };
        for _ in 0..MAX_WAITERS {
            send(10_000);
        }
        send(10_001);
        let r = client
            .wait_reply(10_001, Some(Duration::from_secs(1)))
            .expect("the request beyond MAX_WAITERS is answered at once");
        assert_eq!(r.status, 1, "{}", r.text_lossy());
        assert!(
            r.text_lossy().contains("identical requests wait"),
            "{}",
            r.text_lossy()
        );
        assert_eq!(d.counters.refused_waiters.load(Ordering::Relaxed), 1);
        assert_eq!(
            d.counters.merged.load(Ordering::Relaxed),
            MAX_WAITERS as u64 - 1
        );
    }

    #[test]
    fn only_modules_kerneld_loaded_can_be_released_later() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let (d, _queue) = daemon(k.shared(), test_key(11));
        let client = Client::connect(Key(test_key(11))).unwrap();
        let ask = |id: i64, name: &str| {
            let m = Message::request(MsgType::DelayedRelease, id, Header::Old, name);
            d.handle(m.mtype, &m.encode_body(1024).unwrap());
            client
                .wait_reply(id, Some(Duration::from_secs(10)))
                .unwrap()
        };
        let r = ask(11_000, "dummy");
        assert_eq!(r.status, 1, "{}", r.text_lossy());
        assert!(
            r.text_lossy().contains("did not load"),
            "{}",
            r.text_lossy()
        );
        assert_eq!(d.request_module("rtnl-link-dummy", None).status, 0);
        let r = ask(11_001, "dummy");
        assert_eq!(r.status, 0, "{}", r.text_lossy());
        assert_eq!(d.expiry.pending(), 1);
    }

    #[test]
    fn delayed_releases_are_bounded() {
        let k = FakeKernel::with_tree(&[]);
        let (d, _queue) = daemon(k.shared(), test_key(9));
        let client = Client::connect(Key(test_key(9))).unwrap();
        let ask = |i: i64, name: &str| {
            let id = 9000 + i;
            let m = Message::request(MsgType::DelayedRelease, id, Header::Old, name);
            d.handle(m.mtype, &m.encode_body(1024).unwrap());
            client
                .wait_reply(id, Some(Duration::from_secs(10)))
                .unwrap()
        };
        for i in 0..DELAYED_MAX {
            d.expiry.pend(&format!("m{i}"));
        }
        for name in ["one-too-many", "m7"] {
            let m = [name.to_string()];
            d.expiry.with_record(|r| r.add(name, &m, &m));
        }
        let r = ask(0, "one-too-many");
        assert_eq!(r.status, 1, "{}", r.text_lossy());
        assert!(
            r.text_lossy().contains("pending already"),
            "{}",
            r.text_lossy()
        );
        // A name already pending is rescheduled all the same.
        assert_eq!(ask(1, "m7").status, 0);
        assert_eq!(d.expiry.pending(), DELAYED_MAX);
    }

    #[test]
    fn denied_results_are_not_shared_between_requesters() {
        let k = FakeKernel::with_tree(&[("can", &[])]).alias("net-pf-29", "can");
        let fake = k.shared();
        let (d, _queue) = daemon(fake, test_key(3));
        d.control("deny request net-pf-29 if uid!=0");
        let user = Requester {
            pid: 10,
            uid: 1000,
            gid: 1000,
            comm: "sh".into(),
            ..Requester::default()
        };
        let root = Requester {
            pid: 11,
            comm: "sh".into(),
            ..Requester::default()
        };
        let o = d.request_module("net-pf-29", Some(&user));
        assert_eq!(o.status, 1);
        assert!(o.text.contains("denied by policy"), "{}", o.text);
        let o = d.request_module("net-pf-29", Some(&root));
        assert_eq!(
            o.status, 0,
            "root must not get the user's cached denial: {}",
            o.text
        );
    }

    #[test]
    fn audit_mode_set_live_is_not_answered_by_a_remembered_denial() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let (d, _queue) = daemon(k.shared(), test_key(5));
        d.control("deny request rtnl-link-dummy");
        assert_eq!(d.request_module("rtnl-link-dummy", None).status, 1);
        assert_eq!(d.control("mode=audit").status, 0);
        let o = d.request_module("rtnl-link-dummy", None);
        assert_eq!(o.status, 0, "{}", o.text);
        assert!(o.text.contains("loaded dummy"), "{}", o.text);
    }

    /// Allocations per quick answer before the redesign (dad3877, this
    /// test run there): 9.6, 9.1 and 12.0; after it 8.6, 6.0 and 11.0.
    /// Not to grow again.
    const ALLOCS_UNKNOWN: f64 = 9.0;
    const ALLOCS_CACHED: f64 = 6.5;
    const ALLOCS_LOADED: f64 = 11.5;

    /// Counts the allocations of each thread, for the figure of
    /// allocations per quick answer (README, benchmarks).
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            pub static ALLOCS: Cell<u64> = const { Cell::new(0) };
        }

        fn count() {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        }

        // SAFETY: every call goes to the system allocator unchanged; the
        // count is a thread-local Cell with a const initialiser, which
        // never allocates.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                count();
                // SAFETY: the caller's contract, passed on.
                unsafe { System.alloc(l) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                // SAFETY: the caller's contract, passed on.
                unsafe { System.dealloc(p, l) }
            }
            unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
                count();
                // SAFETY: the caller's contract, passed on.
                unsafe { System.realloc(p, l, n) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;

        pub fn now() -> u64 {
            ALLOCS.with(|c| c.get())
        }
    }

    /// Allocations on the receiving thread per quick answer: handle() of an
    /// unknown name (default configuration: the failure is remembered), of
    /// the same name again (negative cache), and of a module already loaded.
    #[test]
    fn allocations_per_quick_answer() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let (d, _queue) = daemon(k.shared(), test_key(12));
        let client = Client::connect(Key(test_key(12))).unwrap();
        assert_eq!(d.request_module("dummy", None).status, 0);
        const N: u64 = 200;
        let measure = |what: &str, name: &dyn Fn(u64) -> String| {
            let mut total = 0;
            for i in 0..N + 20 {
                let id = 12_000 + i as i64;
                let m = Message::request(MsgType::RequestModule, id, Header::Old, name(i).as_str());
                let body = m.encode_body(1024).unwrap();
                let before = counting::now();
                d.handle(m.mtype, &body);
                let n = counting::now() - before;
                client
                    .wait_reply(id, Some(Duration::from_secs(10)))
                    .unwrap();
                if i >= 20 {
                    total += n;
                }
            }
            let per = total as f64 / N as f64;
            eprintln!("allocations per quick answer, {what}: {per:.1}");
            per
        };
        let unknown = measure("unknown name", &|i| format!("nosuch-{i}"));
        let cached = measure("negative cache", &|_| "nosuch-5".to_string());
        let loaded = measure("already loaded", &|_| "dummy".to_string());
        assert!(unknown <= ALLOCS_UNKNOWN, "{unknown}");
        assert!(cached <= ALLOCS_CACHED, "{cached}");
        assert!(loaded <= ALLOCS_LOADED, "{loaded}");
    }
}

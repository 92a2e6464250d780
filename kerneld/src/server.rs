//! The running daemon: the handles of the state owners, and start, stop
//! and drain.  No logic of its own: receiving is `receiver.rs`, the one
//! match over message types `dispatch.rs`, the actions on the worker pool
//! `actions.rs`; each piece of state lives in its owner module (request
//! path, jobs, expiry, replies, settings, counters).

use crate::backend::Backend;
use crate::config::Config;
use crate::edge::reply::Replies;
use crate::operator::control::{self, Owners};
use crate::operator::status::Snapshot;
use crate::policy::Policy;
use crate::state::expiry::Expiry;
use crate::state::negcache::NegativeCache;
use crate::state::record::Record;
use crate::state::settings::LiveSettings;
use crate::who::trace::Tracer;
use crate::work::jobs::JobTable;
use crate::work::pool::{Contexts, Pool};
use crate::work::programs::Programs;
use crate::work::request::Requests;
use kmod_ipc::{Key, Queue, TypeFilter};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

pub(crate) use crate::state::metrics::Counters;
pub use crate::state::settings::Settings;
pub(crate) use crate::work::outcome::Outcome;

/// What the daemon is built from.
pub struct Parts {
    pub settings: Settings,
    pub config: Config,
    pub queue: Queue,
    pub filter: TypeFilter,
    /// The loaders and their host (`backend::open`, or the fake).
    pub backend: Backend,
    pub record: Record,
    /// Changes when the module index or modprobe.d changes.
    pub fingerprint: Box<dyn Fn() -> u64 + Send + Sync>,
    pub tracer: Option<Tracer>,
}

/// The running daemon: one handle per owner of state.
pub struct Daemon {
    pub(crate) settings: LiveSettings,
    pub(crate) config: RwLock<Arc<Config>>,
    pub(crate) requests: Requests,
    pub(crate) jobs: Mutex<JobTable>,
    pub(crate) expiry: Expiry,
    pub(crate) counters: Counters,
    pub(crate) pool: Pool,
    pub(crate) contexts: Contexts,
    /// The queue, and the replies sent to it (its own thread).
    pub(crate) replies: Arc<Replies>,
    pub(crate) key: Key,
    pub(crate) filter: TypeFilter,
    stopping: AtomicBool,
    started: Instant,
    started_at: SystemTime,
    pub(crate) programs: Programs,
    pub(crate) tracer: Option<Tracer>,
    /// `--metrics-dir`, which overrides the configuration's.
    metrics_dir: OnceLock<PathBuf>,
    /// The last failure to write the metrics file (logged once), under
    /// which each write happens.
    metrics_error: Mutex<Option<String>>,
}

impl Daemon {
    /// The daemon, with its reply thread running (`Daemon::new` runs after
    /// the fork: the pid in reply headers is read there).
    pub fn new(p: Parts) -> Arc<Daemon> {
        let cfg = Arc::new(p.config);
        let replies = Arc::new(Replies::new(p.queue.clone()).serving(p.filter));
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
            contexts: Contexts::new(&p.backend),
            replies,
            filter: p.filter,
            stopping: AtomicBool::new(false),
            started: Instant::now(),
            started_at: SystemTime::now(),
            tracer: p.tracer,
            metrics_dir: OnceLock::new(),
            metrics_error: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> Settings {
        self.settings.get()
    }

    pub fn queue(&self) -> Queue {
        self.replies.queue()
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    pub fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stop taking requests; the receiver leaves its loop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.expiry.notify();
        self.replies.stop();
    }

    /// Wait for actions in flight, up to `timeout`.
    pub fn drain(&self, timeout: Duration) -> bool {
        self.pool.wait_idle(timeout)
    }

    /// SIGHUP: put the configuration read again in force (see
    /// `control::reload`).
    pub fn reload(&self, new: Result<Config, crate::config::ConfigError>) -> control::Reloaded {
        control::reload(new, &self.config, &self.requests, &self.contexts)
    }

    /// The policy in force (live rules included, and the locked one when
    /// `lock = yes` kept it over a reload).
    pub fn policy(&self) -> Arc<Policy> {
        self.requests.policy()
    }

    /// Apply a control word and produce the reply (see `control.rs`).
    pub fn control(&self, text: &str) -> Outcome {
        let owners = Owners {
            settings: &self.settings,
            requests: &self.requests,
            expiry: &self.expiry,
            host: self.contexts.host(),
        };
        control::apply(
            &owners,
            text,
            || control::flush(&self.replies, self.filter),
            || self.snapshot(),
        )
    }

    /// Write the metrics file in `dir` rather than the configuration's
    /// `metrics-dir` (the command line's `--metrics-dir`).
    pub fn set_metrics_dir(&self, dir: PathBuf) {
        let _ = self.metrics_dir.set(dir);
    }

    /// Write the status for node_exporter (`textfile`) when a metrics
    /// directory is set: `up` true at start and at each sweep, false once
    /// at the stop (and then no more).  A failure is logged when it first
    /// occurs, and its end too.
    pub fn write_metrics(&self, up: bool) {
        let dir = match self.metrics_dir.get() {
            Some(d) => d.clone(),
            None => match &self.config().metrics_dir {
                Some(d) => d.clone(),
                None => return,
            },
        };
        let mut last = self.metrics_error.lock().unwrap();
        if up && self.stopping() {
            return;
        }
        let r =
            crate::operator::textfile::render(crate::operator::status::json(&self.snapshot()), up)
                .and_then(|text| crate::operator::textfile::write(&dir, &text));
        match r {
            Err(e) if last.as_deref() != Some(&e) => {
                crate::operator::log::warn(&format!(
                    "{e}; node_exporter will not see new figures until it can be written"
                ));
                *last = Some(e);
            }
            Err(_) => {}
            Ok(()) => {
                if last.take().is_some() {
                    crate::operator::log::notice(&format!(
                        "the metrics file {} is written again",
                        dir.join(crate::operator::textfile::FILE).display()
                    ));
                }
            }
        }
    }

    /// Seconds until the next sweep, None with `keep`.
    pub(crate) fn next_sweep_in(&self) -> Option<f64> {
        if self.settings.keep() {
            return None;
        }
        Some(self.expiry.next_sweep_in().as_secs_f64())
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
            journal_dropped: crate::operator::journal::dropped(),
            negative_entries: self.requests.negcache.lock().unwrap().len(),
            policy: Policy::clone(&self.requests.policy()),
            tracing: self.tracer.as_ref().map(|t| t.describe()),
            helper: crate::operator::status::read_helper(),
            module_loads: crate::modload::report::document(),
        }
    }

    #[cfg(test)]
    pub(crate) fn workers(&self) -> usize {
        self.pool.workers()
    }
}

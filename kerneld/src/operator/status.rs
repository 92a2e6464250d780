//! The status reply: the 1995 text (kdstat) and the JSON document
//! (kdstat --json).  Field names of the JSON document are stable; they are
//! listed in kdstat(8) and kdstat --help, which tests/tests/kdstat_real.rs
//! keeps in step with the document.

use crate::policy::{MatchOrder, Mode, Policy};
use crate::state::metrics::{CounterValues, Recent};
use crate::state::record::Entry;
use crate::state::settings::Settings;
use crate::who::requester::Requester;
use crate::work::jobs::Job;
use kmod_ipc::escape::escape;
use kmod_ipc::{Key, QueueStat};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the JSON document's list of fields (its `schema`
/// field).  Adding a field keeps it; renaming or removing one, or changing
/// its meaning, takes the next number (and kdstat(8) and kdstat --help
/// say what changed).
pub(crate) const JSON_SCHEMA: u64 = 1;

/// Everything the status shows, gathered once by its owners (plain data:
/// status renders this, not the daemon).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) settings: Settings,
    pub(crate) key: Key,
    pub(crate) queue_id: i32,
    /// The queue's figures, or why they could not be read.
    pub(crate) queue: Result<QueueStat, String>,
    pub(crate) jobs: Vec<Job>,
    pub(crate) uptime: Duration,
    pub(crate) started_at: SystemTime,
    pub(crate) workers: usize,
    /// Seconds until the next sweep, None with `keep`.
    pub(crate) next_sweep_in: Option<f64>,
    pub(crate) record: BTreeMap<String, Entry>,
    pub(crate) recent: Vec<Recent>,
    pub(crate) counters: CounterValues,
    pub(crate) replies_dropped: u64,
    pub(crate) replies_purged: u64,
    /// Log lines the journal did not take (`journal::dropped`).
    pub(crate) journal_dropped: u64,
    pub(crate) negative_entries: usize,
    pub(crate) policy: Policy,
    /// The tracer's description; None: tracing unavailable.
    pub(crate) tracing: Option<String>,
    /// What the kernel runs as its module helper.
    pub(crate) helper: Helper,
    /// Module loads by every loader (module-loads).
    pub(crate) module_loads: crate::modload::report::ModuleLoadsDocument,
}

/// What `/proc/sys/kernel/modprobe` holds: whether the kernel's requests
/// reach kerneld at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Helper {
    /// The path the kernel runs (empty: none), and whether it is
    /// kerneld's shim.
    Read { path: String, shim: bool },
    /// Why it could not be read.
    Unreadable(String),
}

/// /proc/sys/kernel/modprobe, or the file `KERNELD_PROC_MODPROBE` names
/// (a test hook, shared with the shim).
pub fn proc_modprobe_path() -> std::path::PathBuf {
    std::env::var_os("KERNELD_PROC_MODPROBE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/proc/sys/kernel/modprobe"))
}

/// Read the kernel's module helper.  It is kerneld's shim when it is
/// named `kerneld-modprobe` or is the file beside this kerneld.
pub(crate) fn read_helper() -> Helper {
    let proc = proc_modprobe_path();
    let value = match std::fs::read_to_string(&proc) {
        Ok(v) => v,
        Err(e) => return Helper::Unreadable(format!("{}: {e}", proc.display())),
    };
    let path = value.trim_end_matches('\n').to_string();
    let p = std::path::Path::new(&path);
    let beside = std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name("kerneld-modprobe"));
    let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    let shim = !path.is_empty()
        && (p.file_name().is_some_and(|n| n == "kerneld-modprobe")
            || beside.is_some_and(|b| same(p, &b)));
    Helper::Read { path, shim }
}

/// The status line of the helper.
fn helper_text(h: &Helper) -> String {
    match h {
        Helper::Read { path, .. } if path.is_empty() => {
            "module helper: none (empty): the kernel runs no helper, and no request reaches kerneld \
             through it"
                .into()
        }
        Helper::Read { path, shim: true } => {
            format!("module helper: {} (kerneld's shim)", escape(path))
        }
        Helper::Read { path, shim: false } => format!(
            "module helper: {} (not kerneld's shim: the kernel's requests do not reach kerneld; \
             kerneld --register or kerneld-modprobe --register)",
            escape(path)
        ),
        Helper::Unreadable(e) => format!("module helper: unknown ({})", escape(e)),
    }
}

/// `/proc/sys/kernel/modprobe` in the status document.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct HelperDocument {
    /// What the kernel runs (empty: none); null when unreadable.
    pub(crate) path: Option<String>,
    /// Whether it is kerneld's shim, kerneld-modprobe; null when unreadable.
    pub(crate) kerneld_shim: Option<bool>,
    /// Why it could not be read; null when read.
    pub(crate) error: Option<String>,
}

impl HelperDocument {
    fn of(h: &Helper) -> HelperDocument {
        match h {
            Helper::Read { path, shim } => HelperDocument {
                path: Some(path.clone()),
                kerneld_shim: Some(*shim),
                error: None,
            },
            Helper::Unreadable(e) => HelperDocument {
                path: None,
                kerneld_shim: None,
                error: Some(e.clone()),
            },
        }
    }
}

/// `1 message`, `2 messages`.
pub(crate) fn count(n: impl Into<u64>, one: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The name a request type is counted under in the status: the type's
/// name, except that type 255 is `status`, as kdsend and kerneld(7) call
/// it.  (Its 1996 name, `debug`, which `MsgType::name` keeps, read as if
/// debugging were on.)
fn counter_name(name: &str) -> &str {
    match name {
        "debug" => "status",
        n => n,
    }
}

fn onoff(b: bool) -> &'static str {
    if b {
        ""
    } else {
        "no"
    }
}

/// The requester pid to show: the full traced pid, else the header's.
fn job_requester(j: &Job) -> Option<i64> {
    let w = j.waiters.first()?;
    match &w.requester {
        Some(r) => Some(i64::from(r.pid)),
        None => w.request.pid().map(i64::from),
    }
}

/// The classic status text, then richer lines.
pub fn text(d: &Snapshot) -> String {
    let s = d.settings;
    let mut out = format!(
        "Version {VERSION}, pid={}, delay={}, {}keep, {}debug\n",
        std::process::id(),
        s.delay,
        onoff(s.keep),
        onoff(s.debug)
    );
    let jobs = &d.jobs;
    // As in 1995: the heading only above jobs.
    if jobs.is_empty() {
        out.push_str("no jobs waiting\n");
    } else {
        out.push_str("job queue:\n");
    }
    for j in jobs {
        let _ = write!(
            out,
            "pid {}, type {} ('{}')",
            j.worker.unwrap_or(0),
            j.kind().name(),
            escape(&String::from_utf8_lossy(&j.text))
        );
        if let Some(p) = job_requester(j) {
            let _ = write!(out, " from pid {p}");
        }
        if j.waiters.len() > 1 {
            let _ = write!(out, " [{} waiters]", j.waiters.len());
        }
        out.push('\n');
    }
    match &d.queue {
        Ok(st) => {
            let _ = writeln!(
                out,
                "queue: key {}, id {}, {} ({} bytes) in it, capacity {} bytes",
                d.key,
                d.queue_id,
                count(st.messages, "message"),
                st.bytes,
                st.max_bytes
            );
        }
        Err(e) => {
            let _ = writeln!(out, "queue: {e}");
        }
    }
    let _ = write!(
        out,
        "uptime {} s, {}, ",
        d.uptime.as_secs(),
        count(d.workers as u64, "worker")
    );
    match d.next_sweep_in {
        Some(t) => {
            let _ = writeln!(out, "next sweep in {t:.0} s");
        }
        None => out.push_str("no sweeps (keep)\n"),
    }
    let rec = &d.record;
    if rec.is_empty() {
        out.push_str("loaded by kerneld: none\n");
    } else {
        out.push_str("loaded by kerneld:\n");
        for (name, e) in rec {
            let _ = write!(out, "  {} (as {}", escape(name), escape(&e.requested_as));
            if e.unused_sweeps > 0 {
                let _ = write!(
                    out,
                    ", unused at {}",
                    count(u64::from(e.unused_sweeps), "sweep")
                );
            }
            out.push_str(")\n");
        }
    }
    let recent = &d.recent;
    if !recent.is_empty() {
        out.push_str("recent requests:\n");
        for r in recent.iter().rev().take(10) {
            let _ = writeln!(
                out,
                "  {:>4.0} s ago  {}{}: status {}, {}",
                r.at.elapsed().as_secs_f64(),
                escape(&r.name),
                r.requester
                    .as_ref()
                    .map_or(String::new(), |q| format!(" from {}", q.describe())),
                r.status,
                escape(&r.text)
            );
        }
    }
    let c = &d.counters;
    let by_type: Vec<String> = c
        .requests
        .iter()
        .map(|(k, v)| format!("{} {v}", counter_name(k)))
        .collect();
    let _ = writeln!(
        out,
        "requests: {}; succeeded {}, failed {}, merged {}, expired {}, cached {}, denied {}, bad messages {}, replies dropped {}, unread replies removed {}, journal lines dropped {}",
        if by_type.is_empty() { "none".to_string() } else { by_type.join(", ") },
        c.succeeded,
        c.failed,
        c.merged,
        c.expired,
        c.cached,
        c.denied,
        c.bad_messages,
        d.replies_dropped,
        d.replies_purged,
        d.journal_dropped,
    );
    let p = &d.policy;
    let _ = writeln!(
        out,
        "policy: {}, mode {}{}",
        count(p.rules.len() as u64, "rule"),
        if p.mode == crate::policy::Mode::Audit {
            "audit"
        } else {
            "enforce"
        },
        if p.lock { ", locked" } else { "" }
    );
    match &d.tracing {
        Some(t) => {
            let _ = writeln!(out, "requester tracing: {t}");
        }
        None => out.push_str("requester tracing: unavailable\n"),
    }
    out.push_str(&crate::modload::report::text(&d.module_loads));
    let _ = writeln!(out, "{}", helper_text(&d.helper));
    out
}

/// The JSON status document (`kdstat --json`): a [`StatusDocument`] as a
/// JSON value.
pub(crate) fn json(d: &Snapshot) -> Value {
    // The document is plain data: serialising it cannot fail.
    serde_json::to_value(document(d)).unwrap_or(Value::Null)
}

/// The status document of a snapshot.
pub(crate) fn document(d: &Snapshot) -> StatusDocument {
    let s = d.settings;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |x| x.as_secs());
    let jobs = d
        .jobs
        .iter()
        .map(|j| JobDocument {
            kind: j.kind().name().to_string(),
            type_number: j.kind().number(),
            text: String::from_utf8_lossy(&j.text).into_owned(),
            requester_pid: job_requester(j),
            requester: j.waiters.first().and_then(|w| w.requester.clone()),
            age_seconds: j.started.elapsed().as_secs_f64(),
            waiters: j.waiters.len(),
            worker_tid: j.worker,
        })
        .collect();
    let loaded_modules = d
        .record
        .iter()
        .map(|(name, e)| LoadedModule {
            name: name.clone(),
            requested_as: e.requested_as.clone(),
            dependencies: e.dependencies.clone(),
            loaded_at: e.loaded_at,
            age_seconds: now_unix.saturating_sub(e.loaded_at),
            idle_seconds: e.idle_since.map(|t| t.elapsed().as_secs_f64()),
            unused_sweeps: e.unused_sweeps,
            requester: e.requester.clone(),
            pulled_in_by: e.pulled_in_by.clone(),
            allowed_by: (!e.allowed_by.is_empty()).then(|| e.allowed_by.clone()),
        })
        .collect();
    let recent_requests = d
        .recent
        .iter()
        .map(|r| RecentRequest {
            name: r.name.clone(),
            requester: r.requester.clone(),
            status: r.status,
            text: r.text.clone(),
            age_seconds: r.at.elapsed().as_secs_f64(),
            duration_ms: r.millis,
        })
        .collect();
    let c = &d.counters;
    let queue = match &d.queue {
        Ok(st) => QueueDocument::Stat {
            id: d.queue_id,
            messages: st.messages,
            bytes: st.bytes,
            max_bytes: st.max_bytes,
            last_sender_pid: st.last_sender,
            last_receiver_pid: st.last_receiver,
        },
        Err(e) => QueueDocument::Unreadable { error: e.clone() },
    };
    let p = &d.policy;
    StatusDocument {
        schema: JSON_SCHEMA,
        version: VERSION.to_string(),
        pid: std::process::id(),
        key: d.key.to_string(),
        started_at: d
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |x| x.as_secs()),
        uptime_seconds: d.uptime.as_secs_f64(),
        delay: s.delay,
        keep: s.keep,
        debug: s.debug,
        workers: d.workers,
        jobs,
        loaded_modules,
        recent_requests,
        next_sweep_seconds: d.next_sweep_in,
        counters: CountersDocument {
            requests: c
                .requests
                .iter()
                .map(|(k, v)| (counter_name(k).to_string(), *v))
                .collect(),
            succeeded: c.succeeded,
            failed: c.failed,
            merged: c.merged,
            expired: c.expired,
            cached: c.cached,
            denied: c.denied,
            bad_messages: c.bad_messages,
            replies_dropped: d.replies_dropped,
            replies_purged: d.replies_purged,
            journal_dropped: d.journal_dropped,
            waiters_refused: c.refused_waiters,
            negative_cache_entries: d.negative_entries,
        },
        queue,
        policy: PolicyDocument {
            mode: match p.mode {
                Mode::Enforce => PolicyMode::Enforce,
                Mode::Audit => PolicyMode::Audit,
            },
            order: match p.order {
                MatchOrder::First => PolicyMatch::First,
                MatchOrder::MostSpecific => PolicyMatch::Specific,
            },
            default: if p.default_allow {
                PolicyDefault::Allow
            } else {
                PolicyDefault::Deny
            },
            lock: p.lock,
            rules: p
                .rules
                .iter()
                .map(|r| RuleDocument {
                    rule: r.to_string(),
                    origin: r.origin.clone(),
                    hits: r.hits.load(Ordering::Relaxed),
                })
                .collect(),
        },
        tracing: d.tracing.clone(),
        helper: HelperDocument::of(&d.helper),
        module_loads: d.module_loads.clone(),
        kernel_shim: None,
    }
}

// The status document's types.  Their doc comments are the descriptions
// of the published JSON Schema (schema/status.json, generated by xtask),
// so they say what a reader of the JSON needs.  A field that may be null
// is always present.

/// The status of kerneld, as `kdstat --json` prints it.  Fields may be
/// added within a schema number; renaming or removing one, or changing its
/// meaning, takes the next number.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "kerneld status (kdstat --json)"))]
pub struct StatusDocument {
    /// The version of this list of fields.
    pub(crate) schema: u64,
    /// The daemon's version.
    pub(crate) version: String,
    /// The daemon's pid.
    pub(crate) pid: u32,
    /// The queue key, `0x6b65726e` style.
    pub(crate) key: String,
    /// Start time, Unix seconds.
    pub(crate) started_at: u64,
    /// Seconds since the start.
    pub(crate) uptime_seconds: f64,
    /// Seconds between idle sweeps (the `delay` setting).
    pub(crate) delay: u64,
    /// The `keep` setting: nothing is unloaded when idle.
    pub(crate) keep: bool,
    /// The `debug` setting: every message is logged.
    pub(crate) debug: bool,
    /// Worker threads started.
    pub(crate) workers: usize,
    /// Actions in progress.
    pub(crate) jobs: Vec<JobDocument>,
    /// Modules kerneld loaded (its record).
    pub(crate) loaded_modules: Vec<LoadedModule>,
    /// The last module requests, oldest first.
    pub(crate) recent_requests: Vec<RecentRequest>,
    /// Seconds to the next idle sweep, null with `keep`.
    pub(crate) next_sweep_seconds: Option<f64>,
    pub(crate) counters: CountersDocument,
    pub(crate) queue: QueueDocument,
    pub(crate) policy: PolicyDocument,
    /// How requesters are traced, null when tracing is unavailable.
    pub(crate) tracing: Option<String>,
    /// What the kernel runs as its module helper.
    pub(crate) helper: HelperDocument,
    /// Module loads by every loader, through the BPF LSM (module-loads).
    pub(crate) module_loads: crate::modload::report::ModuleLoadsDocument,
    /// Added by kdstat, never sent by kerneld: only while the in-kernel
    /// sender (the kerneld_shim module) is loaded, its settings (strings,
    /// from /sys/module/kerneld_shim/parameters), counters (integers,
    /// from /sys/kernel/kerneld_shim) and, when kdstat runs as root,
    /// `server` (integer: the registered kerneld's pid, 0 for none); see
    /// kdstat(8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kernel_shim: Option<BTreeMap<String, ShimValue>>,
}

/// A setting (string), counter or pid (integer) of the in-kernel sender.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
// Only the schema describes it: kdstat adds the field, never kerneld.
#[allow(dead_code)]
pub(crate) enum ShimValue {
    Setting(String),
    Counter(u64),
}

/// An action in progress.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct JobDocument {
    /// The request type's name (`request_module`).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The request type's number.
    pub(crate) type_number: i64,
    /// The request's text (the module name for type 2).
    pub(crate) text: String,
    /// The full pid of the requester when traced, else the 16 bits of the
    /// message header; null when neither is known.
    pub(crate) requester_pid: Option<i64>,
    /// Who asked, as traced; null when unknown.
    pub(crate) requester: Option<Requester>,
    /// Seconds since the action began.
    pub(crate) age_seconds: f64,
    /// Requests merged into this one (1 or more).
    pub(crate) waiters: usize,
    /// Thread id of the worker on it; null while none has it.
    pub(crate) worker_tid: Option<i32>,
}

/// A module kerneld loaded.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct LoadedModule {
    /// The module's name.
    pub(crate) name: String,
    /// The name that was requested (`rtnl-link-dummy`).
    pub(crate) requested_as: String,
    /// Modules loaded with it by the same request.
    pub(crate) dependencies: Vec<String>,
    /// When it was loaded, Unix seconds.
    pub(crate) loaded_at: u64,
    /// Seconds since it was loaded.
    pub(crate) age_seconds: u64,
    /// Seconds since a sweep first found it unused; null while in use.
    pub(crate) idle_seconds: Option<f64>,
    /// Consecutive sweeps that found it unused.
    pub(crate) unused_sweeps: u32,
    /// Who asked, as traced; null when unknown.
    pub(crate) requester: Option<Requester>,
    /// The module of the same request that needed it, or whose soft
    /// dependency it is; null for the module asked for.
    pub(crate) pulled_in_by: Option<String>,
    /// The policy rule that allowed the request, with its origin, or
    /// `default`; null for modules recorded before kerneld kept it.
    pub(crate) allowed_by: Option<String>,
}

/// One of the last module requests.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct RecentRequest {
    /// The name requested.
    pub(crate) name: String,
    /// Who asked, as traced; null when unknown.
    pub(crate) requester: Option<Requester>,
    /// The status answered (0: loaded).
    pub(crate) status: i64,
    /// The answer's text.
    pub(crate) text: String,
    /// Seconds since the answer.
    pub(crate) age_seconds: f64,
    /// How long the request took, in milliseconds.
    pub(crate) duration_ms: f64,
}

/// Counts since kerneld started.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct CountersDocument {
    /// Requests received, by type name (`request_module`, `status`,
    /// `unknown`); types never received are left out.
    pub(crate) requests: BTreeMap<String, u64>,
    /// Requests answered with status 0.
    pub(crate) succeeded: u64,
    /// Requests answered with a failure.
    pub(crate) failed: u64,
    /// Requests merged into an identical one in progress.
    pub(crate) merged: u64,
    /// Modules unloaded by the idle sweep.
    pub(crate) expired: u64,
    /// Requests answered from the negative cache.
    pub(crate) cached: u64,
    /// Requests the policy denied.
    pub(crate) denied: u64,
    /// Messages that were not a valid request.
    pub(crate) bad_messages: u64,
    /// Answers dropped: their client stopped waiting before the queue had
    /// room, or they were the oldest of 4 MiB of answers waiting for room.
    pub(crate) replies_dropped: u64,
    /// Unread replies removed from the queue (left by clients that gave
    /// up waiting).
    pub(crate) replies_purged: u64,
    /// Log lines the journal did not take because it was not reading.
    pub(crate) journal_dropped: u64,
    /// Requests refused because 4096 identical ones already waited for
    /// the action in progress.
    pub(crate) waiters_refused: u64,
    /// Failures remembered by the negative cache now.
    pub(crate) negative_cache_entries: usize,
}

/// The queue's figures, or why they could not be read.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub(crate) enum QueueDocument {
    Stat {
        /// The queue's id (ipcs -q).
        id: i32,
        /// Messages waiting.
        messages: u64,
        /// Bytes waiting.
        bytes: u64,
        /// Capacity in bytes.
        max_bytes: u64,
        /// Pid of the last msgsnd.
        last_sender_pid: i32,
        /// Pid of the last msgrcv.
        last_receiver_pid: i32,
    },
    Unreadable {
        /// Why the queue's figures could not be read.
        error: String,
    },
}

/// The policy in force.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct PolicyDocument {
    pub(crate) mode: PolicyMode,
    #[serde(rename = "match")]
    pub(crate) order: PolicyMatch,
    pub(crate) default: PolicyDefault,
    /// Whether the policy is locked (no live changes).
    pub(crate) lock: bool,
    /// The rules, in the order they are read.
    pub(crate) rules: Vec<RuleDocument>,
}

/// `enforce`: denials are answered; `audit`: only logged.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum PolicyMode {
    Enforce,
    Audit,
}

/// Which rule decides: the `first` that matches, or the most `specific`.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum PolicyMatch {
    First,
    Specific,
}

/// What a request no rule matches gets.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum PolicyDefault {
    Allow,
    Deny,
}

/// A policy rule.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct RuleDocument {
    /// The rule as written (`deny request net-pf-*`).
    pub(crate) rule: String,
    /// Where it came from: `file:line` or `live`.
    pub(crate) origin: String,
    /// How often it decided.
    pub(crate) hits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::jobs::Waiter;
    use kmod_ipc::{Header, Message, MsgType};
    use std::time::Instant;

    fn snapshot() -> Snapshot {
        let job = Job {
            id: 1,
            work: crate::work::jobs::Work::Load(None),
            text: b"dummy".to_vec(),
            waiters: vec![Waiter {
                request: Message::request(MsgType::RequestModule, 1024, Header::Old, "dummy"),
                requester: None,
            }],
            started: Instant::now(),
            worker: Some(7),
            identity: String::new(),
        };
        let mut record = BTreeMap::new();
        record.insert(
            "dummy".to_string(),
            Entry {
                requested_as: "rtnl-link-dummy".into(),
                dependencies: vec![],
                loaded_at: 1,
                unused_sweeps: 1,
                idle_since: None,
                own_links: vec![],
                requester: Some(Requester {
                    pid: 802,
                    comm: "ip".into(),
                    ..Requester::default()
                }),
                allowed_by: "default".into(),
                pulled_in_by: None,
            },
        );
        let c = crate::state::metrics::Counters::default();
        c.count_request(MsgType::Status);
        Snapshot {
            settings: Settings {
                delay: 60,
                keep: false,
                debug: false,
            },
            key: Key(0),
            queue_id: 3,
            queue: Ok(QueueStat {
                messages: 0,
                bytes: 0,
                max_bytes: 4096,
                last_sender: 0,
                last_receiver: 0,
                last_send_time: 0,
                uid: 0,
                cuid: 0,
                mode: 0o600,
            }),
            jobs: vec![job],
            uptime: Duration::from_secs(5),
            started_at: SystemTime::now(),
            workers: 1,
            next_sweep_in: Some(3.0),
            record,
            recent: vec![Recent {
                name: "nosuch".into(),
                requester: None,
                kind: crate::work::answer::Kind::NotFound,
                status: 1,
                text: "nosuch: not found".into(),
                at: Instant::now(),
                millis: 0.1,
            }],
            counters: c.values(),
            replies_dropped: 0,
            replies_purged: 0,
            journal_dropped: 0,
            negative_entries: 0,
            policy: Policy::default(),
            tracing: None,
            helper: Helper::Read {
                path: "/usr/sbin/kerneld-modprobe".into(),
                shim: true,
            },
            module_loads: crate::modload::report::document(),
        }
    }

    /// Every field path of a JSON document (the first element stands for
    /// each array), sorted.
    fn paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = format!("{prefix}.{k}");
                    out.push(p.clone());
                    paths(x, &p, out);
                }
            }
            Value::Array(a) => {
                if let Some(x) = a.first() {
                    paths(x, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }

    /// The JSON field names are an interface (kdstat(8)): renaming one
    /// takes a new schema number.  This pins them.
    #[test]
    fn the_json_field_names_stay() {
        let mut got = Vec::new();
        paths(&json(&snapshot()), "", &mut got);
        got.sort();
        let want = [
            ".counters",
            ".counters.bad_messages",
            ".counters.cached",
            ".counters.denied",
            ".counters.expired",
            ".counters.failed",
            ".counters.journal_dropped",
            ".counters.merged",
            ".counters.negative_cache_entries",
            ".counters.replies_dropped",
            ".counters.replies_purged",
            ".counters.requests",
            ".counters.requests.status",
            ".counters.succeeded",
            ".counters.waiters_refused",
            ".debug",
            ".delay",
            ".helper",
            ".helper.error",
            ".helper.kerneld_shim",
            ".helper.path",
            ".jobs",
            ".jobs[].age_seconds",
            ".jobs[].requester",
            ".jobs[].requester_pid",
            ".jobs[].text",
            ".jobs[].type",
            ".jobs[].type_number",
            ".jobs[].waiters",
            ".jobs[].worker_tid",
            ".keep",
            ".key",
            ".loaded_modules",
            ".loaded_modules[].age_seconds",
            ".loaded_modules[].allowed_by",
            ".loaded_modules[].dependencies",
            ".loaded_modules[].idle_seconds",
            ".loaded_modules[].loaded_at",
            ".loaded_modules[].name",
            ".loaded_modules[].pulled_in_by",
            ".loaded_modules[].requested_as",
            ".loaded_modules[].requester",
            ".loaded_modules[].requester.cgroup",
            ".loaded_modules[].requester.comm",
            ".loaded_modules[].requester.gid",
            ".loaded_modules[].requester.namespaces",
            ".loaded_modules[].requester.parent_comm",
            ".loaded_modules[].requester.pid",
            ".loaded_modules[].requester.uid",
            ".loaded_modules[].unused_sweeps",
            ".module_loads",
            ".module_loads.attached",
            ".module_loads.counters",
            ".module_loads.counters.allowed",
            ".module_loads.counters.denied",
            ".module_loads.counters.fallback",
            ".module_loads.counters.finit_module",
            ".module_loads.counters.init_module",
            ".module_loads.counters.refused",
            ".module_loads.counters.reported",
            ".module_loads.counters.requests",
            ".module_loads.counters.unknown",
            ".module_loads.counters.unreadable",
            ".module_loads.counters.would_be_refused",
            ".module_loads.error",
            ".module_loads.host",
            ".module_loads.init_module_loads",
            ".module_loads.mode",
            ".module_loads.on_stop",
            ".module_loads.pinned_in",
            ".module_loads.unknown_files",
            ".module_loads.verdicts",
            ".next_sweep_seconds",
            ".pid",
            ".policy",
            ".policy.default",
            ".policy.lock",
            ".policy.match",
            ".policy.mode",
            ".policy.rules",
            ".queue",
            ".queue.bytes",
            ".queue.id",
            ".queue.last_receiver_pid",
            ".queue.last_sender_pid",
            ".queue.max_bytes",
            ".queue.messages",
            ".recent_requests",
            ".recent_requests[].age_seconds",
            ".recent_requests[].duration_ms",
            ".recent_requests[].name",
            ".recent_requests[].requester",
            ".recent_requests[].status",
            ".recent_requests[].text",
            ".schema",
            ".started_at",
            ".tracing",
            ".uptime_seconds",
            ".version",
            ".workers",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn the_text_names_type_255_status_and_lists_the_job() {
        let t = text(&snapshot());
        assert!(t.starts_with("Version "), "{t}");
        assert!(t.contains("pid 7, type request_module ('dummy')"), "{t}");
        assert!(t.contains("requests: status 1;"), "{t}");
        assert!(t.contains("queue: key "), "{t}");
    }

    /// The status begins as in 1995: `job queue:` above jobs only.
    #[test]
    fn the_job_queue_heading_stands_only_above_jobs() {
        let mut d = snapshot();
        let t = text(&d);
        let second: Vec<&str> = t.lines().skip(1).take(2).collect();
        assert_eq!(
            second,
            ["job queue:", "pid 7, type request_module ('dummy')"]
        );
        d.jobs.clear();
        let t = text(&d);
        let second: Vec<&str> = t.lines().skip(1).take(2).collect();
        assert_eq!(second[0], "no jobs waiting", "{t}");
        assert!(second[1].starts_with("queue: key "), "{t}");
        assert!(!t.contains("job queue:"), "{t}");
    }
}

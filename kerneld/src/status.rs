//! The status reply: the 1995 text (kdstat) and the JSON document
//! (kdstat --json).  Field names of the JSON document are stable; they are
//! listed in kdstat(8) and kdstat --help, which tests/tests/kdstat_real.rs
//! keeps in step with the document.

use crate::daemon::Daemon;
use crate::jobs::Job;
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the JSON document's list of fields (its `schema`
/// field).  Adding a field keeps it; renaming or removing one, or changing
/// its meaning, takes the next number (and kdstat(8) and kdstat --help
/// say what changed).
pub const JSON_SCHEMA: u64 = 1;

/// `1 message`, `2 messages`.
fn count(n: impl Into<u64>, one: &str) -> String {
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
pub fn text(d: &Daemon) -> String {
    let s = d.settings();
    let mut out = format!(
        "Version {VERSION}, pid={}, delay={}, {}keep, {}debug\njob queue:\n",
        std::process::id(),
        s.delay,
        onoff(s.keep),
        onoff(s.debug)
    );
    let jobs = d.jobs_snapshot();
    if jobs.is_empty() {
        out.push_str("no jobs waiting\n");
    }
    for j in &jobs {
        let _ = write!(
            out,
            "pid {}, type {} ('{}')",
            j.worker.unwrap_or(0),
            j.kind.name(),
            String::from_utf8_lossy(&j.text)
        );
        if let Some(p) = job_requester(j) {
            let _ = write!(out, " from pid {p}");
        }
        if j.waiters.len() > 1 {
            let _ = write!(out, " [{} waiters]", j.waiters.len());
        }
        out.push('\n');
    }
    let q = d.queue();
    match q.stat() {
        Ok(st) => {
            let _ = writeln!(
                out,
                "queue: key {}, id {}, {} ({} bytes) in it, capacity {} bytes",
                d.key(),
                q.id(),
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
        d.uptime().as_secs(),
        count(d.workers() as u64, "worker")
    );
    match d.next_sweep_in() {
        Some(t) => {
            let _ = writeln!(out, "next sweep in {t:.0} s");
        }
        None => out.push_str("no sweeps (keep)\n"),
    }
    let rec = d.record_snapshot();
    if rec.is_empty() {
        out.push_str("loaded by kerneld: none\n");
    } else {
        out.push_str("loaded by kerneld:\n");
        for (name, e) in &rec {
            let _ = write!(out, "  {name} (as {}", e.requested_as);
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
    let recent = d.recent_snapshot();
    if !recent.is_empty() {
        out.push_str("recent requests:\n");
        for r in recent.iter().rev().take(10) {
            let _ = writeln!(
                out,
                "  {:>4.0} s ago  {}{}: status {}, {}",
                r.at.elapsed().as_secs_f64(),
                r.name,
                r.requester
                    .as_ref()
                    .map_or(String::new(), |q| format!(" from {}", q.describe())),
                r.status,
                r.text
            );
        }
    }
    let c = &d.counters;
    let reqs = c.requests.lock().unwrap();
    let by_type: Vec<String> = reqs
        .iter()
        .map(|(k, v)| format!("{} {v}", counter_name(k)))
        .collect();
    let _ = writeln!(
        out,
        "requests: {}; succeeded {}, failed {}, merged {}, expired {}, cached {}, denied {}, bad messages {}, replies dropped {}, unread replies removed {}",
        if by_type.is_empty() { "none".to_string() } else { by_type.join(", ") },
        c.succeeded.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.merged.load(Ordering::Relaxed),
        c.expired.load(Ordering::Relaxed),
        c.cached.load(Ordering::Relaxed),
        c.denied.load(Ordering::Relaxed),
        c.bad_messages.load(Ordering::Relaxed),
        d.replies().dropped.load(Ordering::Relaxed),
        d.replies().purged.load(Ordering::Relaxed),
    );
    let p = d.policy_snapshot();
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
    match d.tracer() {
        Some(t) => {
            let _ = writeln!(out, "requester tracing: {}", t.describe());
        }
        None => out.push_str("requester tracing: unavailable\n"),
    }
    out
}

/// The JSON status document.
pub fn json(d: &Daemon) -> Value {
    let s = d.settings();
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |x| x.as_secs());
    let jobs: Vec<Value> = d
        .jobs_snapshot()
        .iter()
        .map(|j| {
            json!({
                "type": j.kind.name(),
                "type_number": j.kind.number(),
                "text": String::from_utf8_lossy(&j.text),
                "requester_pid": job_requester(j),
                "requester": j.waiters.first().and_then(|w| w.requester.as_ref()).map(|r| r.to_json()),
                "age_seconds": j.started.elapsed().as_secs_f64(),
                "waiters": j.waiters.len(),
                "worker_tid": j.worker,
            })
        })
        .collect();
    let modules: Vec<Value> = d
        .record_snapshot()
        .iter()
        .map(|(name, e)| {
            json!({
                "name": name,
                "requested_as": e.requested_as,
                "dependencies": e.dependencies,
                "loaded_at": e.loaded_at,
                "age_seconds": now_unix.saturating_sub(e.loaded_at),
                "idle_seconds": e.idle_since.map(|t| t.elapsed().as_secs_f64()),
                "unused_sweeps": e.unused_sweeps,
            })
        })
        .collect();
    let recent: Vec<Value> = d
        .recent_snapshot()
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "requester": r.requester.as_ref().map(|q| q.to_json()),
                "status": r.status,
                "text": r.text,
                "age_seconds": r.at.elapsed().as_secs_f64(),
                "duration_ms": r.millis,
            })
        })
        .collect();
    let c = &d.counters;
    let q = d.queue();
    let queue = match q.stat() {
        Ok(st) => json!({
            "id": q.id(),
            "messages": st.messages,
            "bytes": st.bytes,
            "max_bytes": st.max_bytes,
            "last_sender_pid": st.last_sender,
            "last_receiver_pid": st.last_receiver,
        }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    let requests: serde_json::Map<String, Value> = c
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (counter_name(k).to_string(), Value::from(*v)))
        .collect();
    json!({
        "schema": JSON_SCHEMA,
        "version": VERSION,
        "pid": std::process::id(),
        "key": d.key().to_string(),
        "started_at": d.started_at().duration_since(UNIX_EPOCH).map_or(0, |x| x.as_secs()),
        "uptime_seconds": d.uptime().as_secs_f64(),
        "delay": s.delay,
        "keep": s.keep,
        "debug": s.debug,
        "workers": d.workers(),
        "jobs": jobs,
        "loaded_modules": modules,
        "recent_requests": recent,
        "next_sweep_seconds": d.next_sweep_in(),
        "counters": {
            "requests": requests,
            "succeeded": c.succeeded.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
            "merged": c.merged.load(Ordering::Relaxed),
            "expired": c.expired.load(Ordering::Relaxed),
            "cached": c.cached.load(Ordering::Relaxed),
            "denied": c.denied.load(Ordering::Relaxed),
            "bad_messages": c.bad_messages.load(Ordering::Relaxed),
            "replies_dropped": d.replies().dropped.load(Ordering::Relaxed),
            "replies_purged": d.replies().purged.load(Ordering::Relaxed),
            "waiters_refused": c.refused_waiters.load(Ordering::Relaxed),
            "negative_cache_entries": d.negative_entries(),
        },
        "queue": queue,
        "policy": d.policy_snapshot().to_json(),
        "tracing": d.tracer().map(|t| t.describe()),
    })
}

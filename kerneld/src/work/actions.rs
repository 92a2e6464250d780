//! Actions on the worker pool: loads, unloads and programs, identical ones
//! merged into one (`jobs.rs`), and the timer's idle sweeps and delayed
//! releases.  Every waiter of an action gets its result.

use crate::backend::Usage;
use crate::errno::errno_text;
use crate::server::Daemon;
use crate::state::record::Removal;
use crate::who::requester::Requester;
use crate::work::jobs::{Planned, Waiter, Work, MAX_WAITERS};
use crate::work::outcome::Outcome;
use crate::work::request::{Ask, Plan, Settled};
use crate::{log_debug, operator::log};
use kmod_ipc::{MessageView, MsgType};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The thread id of a worker (the "pid" of the classic status).
fn tid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Start `work` for `msg`, or join the identical action in progress.
/// `identity` is [`Requests::identity`](crate::work::request::Requests::identity)
/// of the requester.
pub(crate) fn submit(
    d: &Arc<Daemon>,
    msg: &MessageView,
    work: Work,
    requester: Option<Requester>,
    identity: String,
) {
    let kind = work.kind();
    let mut jobs = d.jobs.lock().unwrap();
    if jobs.waiters_of(kind, msg.text, &identity) >= MAX_WAITERS {
        drop(jobs);
        let why = format!("{MAX_WAITERS} identical requests wait for the action in progress");
        log::warn_sampled(&d.counters.refused_waiters, |n| {
            format!(
                "{kind} '{}' refused: {why} ({n} refused since start)",
                msg.text_lossy()
            )
        });
        d.replies.reply(msg, 1, why.as_bytes());
        return;
    }
    let waiter = Waiter {
        request: msg.to_message(),
        requester,
    };
    let new = jobs.join_or_create(work, msg.text, &identity, waiter);
    drop(jobs);
    match new {
        Some(id) => {
            let this = Arc::clone(d);
            d.pool.execute(move || run_job(&this, id));
        }
        None => {
            d.counters.merged.fetch_add(1, Ordering::Relaxed);
            log_debug!(
                "merged {kind} '{}' into the action in progress",
                msg.text_lossy()
            );
        }
    }
}

fn run_job(d: &Arc<Daemon>, id: u64) {
    let Some(job) = d.jobs.lock().unwrap().start(id, tid()) else {
        return;
    };
    let (work, text, mut requester) = (job.work, job.text, job.requester);
    let kind = work.kind();
    let text_s = String::from_utf8_lossy(&text).into_owned();
    if requester.is_none()
        && job.from_helper
        && matches!(work, Work::Load(_))
        && !d.requests.needs_requester()
    {
        // The receive thread did not wait for the trace event (no rule
        // looks at the requester); the load's log line may.
        requester = d.tracer.as_ref().and_then(|t| t.claim(&text_s));
    }
    // A load's log line is written after the answers are sent: the
    // requester waits for the answer, not for the log.
    let (outcome, line) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match work {
        Work::Load(planned) => {
            let a = match planned {
                Some(p) => load_planned(d, &text_s, requester.as_ref(), p),
                None => answer_request(d, &text_s, requester.as_ref()),
            };
            (a.outcome, Some(a.line))
        }
        Work::Release => (release_module(d, &text_s), None),
        Work::Program(p) => (d.programs.run(p, &text_s, &d.config()), None),
    }))
    .unwrap_or_else(|_| {
        log::error(&format!("internal error while serving {kind} '{text_s}'"));
        (
            Outcome::fail("internal error in kerneld (see its log)"),
            None,
        )
    });
    d.counters.count_status(outcome.status);
    let waiters = d.jobs.lock().unwrap().finish(id);
    for w in waiters {
        d.replies
            .reply(&w.request, outcome.status, outcome.text.as_bytes());
    }
    if let Some(line) = line {
        line.emit(requester.as_ref());
    }
}

/// Type 2: what `modprobe -q NAME` does, with policy in front, decided
/// and loaded on this thread (the one request path; see `request.rs`).
#[cfg(test)]
pub(crate) fn request_module(d: &Daemon, name: &str, who: Option<&Requester>) -> Outcome {
    let answer = answer_request(d, name, who);
    answer.line.emit(who);
    answer.outcome
}

/// A type 2 request answered, its log line left to the caller.
fn answer_request(d: &Daemon, name: &str, who: Option<&Requester>) -> Settled {
    let identity = d.requests.identity(who);
    let ask = Ask::new(name, who, &identity);
    match d.requests.decide(&d.contexts, &ask, &d.counters) {
        Plan::Settled(mut a) => {
            d.requests.finish(&ask, &mut a);
            a
        }
        Plan::Load(res) => d.requests.load(&d.contexts, &d.expiry, &ask, &res),
    }
}

/// Type 2 decided on the receive thread: load what it resolved to.
fn load_planned(d: &Daemon, name: &str, who: Option<&Requester>, p: Planned) -> Settled {
    let identity = d.requests.identity(who);
    let mut ask = Ask::new(name, who, &identity);
    ask.since = p.since;
    d.requests.load(&d.contexts, &d.expiry, &ask, &p.resolution)
}

/// Type 3: unload now, never forced, with the recorded dependencies
/// only it held.
pub(crate) fn release_module(d: &Daemon, name: &str) -> Outcome {
    let keep = d.config().keep_modules.clone();
    let r = d.contexts.with(|sys| {
        // delete_module() answers ENOENT for these, whose errno text
        // speaks of loading ("unknown symbol"): say what it is.
        match sys.usage(name) {
            Usage::NotLoaded => return Err(format!("{name} is not loaded")),
            Usage::Builtin => return Err(format!("{name} is built into the kernel")),
            Usage::Loaded { .. } => {}
        }
        Ok(d.expiry.remove_with_deps(sys, name, &keep))
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

/// The timer loop: sweeps and delayed releases; returns on stop.
pub fn timer_loop(d: &Arc<Daemon>) {
    d.write_metrics(true);
    d.expiry.run(
        || d.stopping(),
        || d.settings.delay(),
        |name| {
            let this = Arc::clone(d);
            d.pool.execute(move || {
                release_module(&this, &name);
            });
        },
        || {
            sweep(d);
            d.write_metrics(true);
        },
    );
}

/// One idle sweep (unless `keep`, or a load is in progress, as in 1996).
pub(crate) fn sweep(d: &Daemon) -> Removal {
    if d.settings().keep || d.jobs.lock().unwrap().any_of(MsgType::RequestModule) {
        return Removal::default();
    }
    let keep = d.config().keep_modules.clone();
    let r = d.contexts.with(|sys| d.expiry.sweep(sys, &keep));
    let out = r.unwrap_or_default();
    if !out.removed.is_empty() {
        d.counters
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeKernel;
    use crate::backend::{load_error_text, Errno};
    use crate::testing::{daemon, test_key};

    #[test]
    fn a_kernel_that_takes_no_modules_is_answered_without_a_load() {
        let mut k =
            FakeKernel::with_tree(&[("llc", &[]), ("stp", &["llc"])]).alias("rtnl-link-stp", "stp");
        k.refuse_insertions = Some(Errno::EPERM);
        let fake = k.shared();
        let (d, _queue) = daemon(fake.clone(), test_key(7));
        let o = request_module(&d, "rtnl-link-stp", None);
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
        assert_eq!(request_module(&d, "stp", None).status, 0);
        assert_eq!(fake.0.lock().unwrap().loads, ["stp"]);
    }

    #[test]
    fn loaded_modules_expire_after_two_idle_sweeps_unless_keep() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let fake = k.shared();
        let (d, _queue) = daemon(fake.clone(), test_key(2));
        assert_eq!(request_module(&d, "rtnl-link-dummy", None).status, 0);
        d.control("keep");
        assert!(sweep(&d,).removed.is_empty());
        assert!(sweep(&d,).removed.is_empty());
        d.control("nokeep");
        assert!(sweep(&d,).removed.is_empty(), "second chance");
        assert_eq!(sweep(&d,).removed, ["dummy"]);
        assert_eq!(d.counters.expired.load(Ordering::Relaxed), 1);
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
        let o = request_module(&d, "net-pf-29", Some(&user));
        assert_eq!(o.status, 1);
        assert!(o.text.contains("denied by policy"), "{}", o.text);
        let o = request_module(&d, "net-pf-29", Some(&root));
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
        assert_eq!(request_module(&d, "rtnl-link-dummy", None).status, 1);
        assert_eq!(d.control("mode=audit").status, 0);
        let o = request_module(&d, "rtnl-link-dummy", None);
        assert_eq!(o.status, 0, "{}", o.text);
        assert!(o.text.contains("loaded dummy"), "{}", o.text);
    }
}

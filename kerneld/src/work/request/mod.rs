//! The request path of type 2 (`request_module`): one copy, used on the
//! receive thread for the quick answers and by a worker for a load.
//!
//! [`Requests::decide`] answers from the negative cache, or resolves the
//! name once and applies the policy: a [`Plan::Settled`] is final, a
//! [`Plan::Load`] carries the [`Resolution`] to the worker, which loads it
//! with [`Requests::load`] without resolving again.

mod logline;

use crate::backend::load_error_text;
use crate::backend::{ModuleBackend, Provenance, Resolution};
use crate::operator::log;
use crate::policy::{Decision, Mode, Policy};
use crate::state::expiry::Expiry;
use crate::state::metrics::{Counters, Recent, RECENT_MAX};
use crate::state::negcache::NegativeCache;
use crate::who::requester::Requester;
use crate::work::answer::{Answer, Kind};
use crate::work::outcome::Outcome;
use crate::work::pool::Contexts;
pub(crate) use logline::{for_whom, LogLine};
use logline::{push_millis, Denial};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Plan {
    /// The answer is known: nothing to load.
    Settled(Settled),
    /// Allowed, and these modules are to be loaded (by a worker).
    Load(Resolution),
}

/// A final answer, with the log line to write once it is sent.
#[derive(Debug)]
pub(crate) struct Settled {
    pub(crate) outcome: Outcome,
    pub(crate) line: LogLine,
    /// What [`Requests::decide`] leaves to [`Requests::finish`].
    pending: Option<Bookkeeping>,
}

/// What a decided request leaves to do once its answer is sent: its
/// entry in the ring of recent requests and in the negative cache.
/// Neither is read before the receive thread reads the next message.
#[derive(Debug)]
struct Bookkeeping {
    kind: Kind,
    took: Duration,
    /// Succeeded: the name's history is cleared.
    ok: bool,
    /// The failure to remember, when failures are remembered.
    failure: Option<Answer<'static>>,
}

/// One request_module being served: the name, who asked, and since when.
#[derive(Debug, Clone)]
pub(crate) struct Ask<'a> {
    pub(crate) name: &'a str,
    pub(crate) who: Option<&'a Requester>,
    /// The negative cache's key: the name, and the requester when rules
    /// look at it.
    pub(crate) cache_key: Cow<'a, str>,
    pub(crate) since: Instant,
}

impl<'a> Ask<'a> {
    /// `identity`: [`Requests::identity`] of `who`.
    pub(crate) fn new(name: &'a str, who: Option<&'a Requester>, identity: &str) -> Ask<'a> {
        Ask {
            name,
            who,
            cache_key: if identity.is_empty() {
                Cow::Borrowed(name)
            } else {
                Cow::Owned(format!("{name} for {identity}"))
            },
            since: Instant::now(),
        }
    }
}

/// The state of the request path: policy, remembered failures, and the
/// ring of recent requests the status shows.
pub(crate) struct Requests {
    /// Read by cloning the Arc: a decision holds no lock and copies no rule.
    pub(crate) policy: RwLock<Arc<Policy>>,
    pub(crate) negcache: Mutex<NegativeCache>,
    pub(crate) recent: Mutex<VecDeque<Recent>>,
    /// Changes when the module index or modprobe.d changes.
    fingerprint: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Requests {
    pub(crate) fn new(
        policy: Policy,
        negcache: NegativeCache,
        fingerprint: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Requests {
        Requests {
            policy: RwLock::new(Arc::new(policy)),
            negcache: Mutex::new(negcache),
            recent: Mutex::new(VecDeque::new()),
            fingerprint,
        }
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap())
    }

    /// Whether any rule looks at the requester.
    pub(crate) fn needs_requester(&self) -> bool {
        self.policy.read().unwrap().needs_requester()
    }

    /// When rules look at the requester, requests (and remembered answers)
    /// of different requesters must be kept apart; else all are one.
    pub(crate) fn identity(&self, who: Option<&Requester>) -> String {
        self.policy.read().unwrap().identity(who)
    }

    /// Decide on a request: a remembered failure, a denial, a name that
    /// resolves to nothing, a blacklisted alias, a module already loaded
    /// or a kernel that takes none are answered; else the resolution is
    /// to be loaded.
    pub(crate) fn decide(&self, contexts: &Contexts, ask: &Ask, c: &Counters) -> Plan {
        if let Some(outcome) = self.cached_answer(ask, c) {
            return Plan::Settled(Settled {
                outcome,
                line: LogLine::default(),
                pending: None,
            });
        }
        let policy = self.policy();
        let mut note = Note::default();
        let plan = contexts.with(|sys| plan_as(sys, ask.name, ask.who, &policy, c, &mut note));
        match plan {
            Ok(Ok(res)) => Plan::Load(res),
            Ok(Err(answer)) => Plan::Settled(self.settle(ask, answer, &[], &note, true)),
            Err(e) => Plan::Settled(self.settle(
                ask,
                Answer::BackendFailed {
                    name: ask.name.into(),
                    error: e.to_string(),
                },
                &[],
                &Note::default(),
                true,
            )),
        }
    }

    /// Load what [`Requests::decide`] allowed, and record what was inserted.
    pub(crate) fn load(
        &self,
        contexts: &Contexts,
        expiry: &Expiry,
        ask: &Ask,
        res: &Resolution,
    ) -> Settled {
        let answer = contexts
            .with(|sys| load(sys, expiry, ask, res))
            .unwrap_or_else(|e| Answer::BackendFailed {
                name: ask.name.into(),
                error: e.to_string(),
            });
        let note = Note {
            allowed_by: res.allowed_by.clone(),
            would_deny: res.allowed_by.starts_with(WOULD_DENY),
            denial: None,
        };
        self.settle(ask, answer, &res.candidates, &note, false)
    }

    /// What a [`Settled`] of [`Requests::decide`] left to do, for its
    /// caller to call once the answer is sent: the request goes into the
    /// ring of recent ones and, if it failed, into the negative cache.
    pub(crate) fn finish(&self, ask: &Ask, s: &mut Settled) {
        if let Some(b) = s.pending.take() {
            self.keep(ask, &s.outcome, b);
        }
    }

    fn keep(&self, ask: &Ask, outcome: &Outcome, b: Bookkeeping) {
        self.remember(ask, b.kind, outcome, b.took);
        let mut nc = self.negcache.lock().unwrap();
        if b.ok {
            nc.succeeded(&ask.cache_key);
        } else if let Some(failure) = b.failure {
            nc.insert(&ask.cache_key, failure, Instant::now());
        }
    }

    /// A remembered failure for this name, if still fresh.
    fn cached_answer(&self, ask: &Ask, c: &Counters) -> Option<Outcome> {
        let mut nc = self.negcache.lock().unwrap();
        nc.check_fingerprint((self.fingerprint)());
        let (kind, status, text) = nc.lookup(&ask.cache_key, ask.since)?;
        drop(nc);
        c.cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::log_debug!("request_module{}: {text}", for_whom(ask.who));
        let o = Outcome { status, text };
        self.remember(ask, kind, &o, ask.since.elapsed());
        Some(o)
    }

    /// Remember and (for failures) cache the outcome of a request, now or,
    /// with `defer`, in [`Requests::finish`]; its log line is for the
    /// caller to emit.  `modules`: what the name resolved
    /// to, if known (the journal's MODULE=; else the name itself);
    /// `note`: what the policy said, which the line carries instead of a
    /// line of its own: one line per request, whatever was decided.
    fn settle(
        &self,
        ask: &Ask,
        answer: Answer,
        modules: &[String],
        note: &Note,
        defer: bool,
    ) -> Settled {
        let outcome = Outcome {
            status: answer.status(),
            text: answer.text(),
        };
        let took = ask.since.elapsed();
        let kind = answer.kind();
        // Built by hand: format! with {:.1} of a float brings in the float
        // formatting code, a large piece of code that a request otherwise
        // never runs (it counts when the request finds kerneld cold).
        // The requester's part, the costliest, is inserted by
        // LogLine::emit once the answer is sent, in room kept for it.
        let room = if ask.who.is_some() { 128 } else { 0 };
        let mut line = String::with_capacity(40 + room + outcome.text.len());
        line.push_str(logline::HEAD);
        line.push_str(": ");
        line.push_str(&outcome.text);
        let denied = note.denial.as_ref().filter(|d| !d.would);
        if let Some(d) = denied {
            // The reply names the rule; the line adds what it denied.
            line.push_str(&d.detail);
            line.push_str(" -> [");
            line.push_str(&d.closure.join(" "));
            line.push(']');
        }
        line.push_str(" (");
        push_millis(&mut line, took);
        line.push_str(" ms)");
        if !note.allowed_by.is_empty() {
            line.push_str(", allowed by ");
            line.push_str(&note.allowed_by);
        }
        let warn = answer.status() != 0;
        // A denial is a warning of its own kind; a would-deny at least a
        // notice, so that either can be filtered by level or MESSAGE_ID.
        let (level, event) = if denied.is_some() {
            (log::Level::Warning, log::Event::PolicyDenied)
        } else if note.would_deny {
            let level = if warn {
                log::Level::Warning
            } else {
                log::Level::Notice
            };
            (level, log::Event::PolicyAudit)
        } else if warn {
            (log::Level::Warning, log::Event::RequestFailed)
        } else {
            (log::Level::Info, log::Event::RequestDone)
        };
        let remembers = warn && self.negcache.lock().unwrap().remembers_failures();
        let books = Bookkeeping {
            kind,
            took,
            ok: !warn,
            failure: remembers.then(|| answer.into_owned()),
        };
        let pending = if defer {
            Some(books)
        } else {
            self.keep(ask, &outcome, books);
            None
        };
        let mut fields = log::Fields::new();
        if crate::operator::journal::present() {
            fields
                .push("REQUEST", ask.name)
                .push_num("STATUS", outcome.status)
                .requester(ask.who);
            if let Some(d) = denied {
                d.fields(ask.name, &mut fields);
            } else {
                if !note.allowed_by.is_empty() {
                    fields.push("POLICY_RULE", &note.allowed_by);
                }
                if modules.is_empty() {
                    fields.push("MODULE", ask.name);
                }
                for m in modules {
                    fields.push("MODULE", m);
                }
            }
        }
        Settled {
            outcome,
            line: LogLine {
                line: Some((level, event, line)),
                fields,
            },
            pending,
        }
    }

    /// Add an answered request to the status's ring of recent ones.
    fn remember(&self, ask: &Ask, kind: Kind, o: &Outcome, took: Duration) {
        let mut recent = self.recent.lock().unwrap();
        let millis = took.as_secs_f64() * 1000.0;
        // Once the ring is full, the oldest entry's strings are reused: no
        // allocation and no free on each request.
        let entry = if recent.len() >= RECENT_MAX {
            recent.pop_front()
        } else {
            None
        };
        let entry = match entry {
            Some(mut e) => {
                e.name.clear();
                e.name.push_str(ask.name);
                e.text.clear();
                e.text.push_str(&o.text);
                e.requester = ask.who.cloned();
                e.kind = kind;
                e.status = o.status;
                e.at = ask.since;
                e.millis = millis;
                e
            }
            None => Recent {
                name: ask.name.to_string(),
                requester: ask.who.cloned(),
                kind,
                status: o.status,
                text: o.text.clone(),
                at: ask.since,
                millis,
            },
        };
        recent.push_back(entry);
    }
}

/// The start of `allowed_by` for a request audit mode let through.
const WOULD_DENY: &str = "audit mode (would deny by ";

/// What the policy said of a request, for its one log line.
#[derive(Debug, Default)]
struct Note {
    /// Why it went ahead, when rules exist (else empty): the line ends
    /// with `, allowed by` it.
    allowed_by: String,
    /// Audit mode let through what the policy would deny.
    would_deny: bool,
    /// A denial (or a would-deny that is answered without a load).
    denial: Option<Denial>,
}

/// [`plan_as`], for the tests of the decision alone.
#[cfg(test)]
fn plan<'a>(
    sys: &mut dyn ModuleBackend,
    name: &'a str,
    who: Option<&Requester>,
    policy: &Policy,
    c: &Counters,
) -> Result<Resolution, Answer<'a>> {
    plan_as(sys, name, who, policy, c, &mut Note::default())
}

/// A denial or a would-deny: to the audit subsystem now, and into the
/// request's line (`note`) once it is answered.
fn noted(name: &str, who: Option<&Requester>, denial: Denial, note: &mut Note) {
    crate::operator::audit::denial(name, &denial.closure, &denial.rule, denial.would, who);
    if denial.would {
        note.would_deny = true;
        note.allowed_by = [WOULD_DENY, &denial.text(), ")"].concat();
    }
    note.denial = Some(denial);
}

/// Resolve `name` and decide on it.  `Err`: the final answer, nothing to
/// load; `Ok`: allowed, and these modules are to be loaded.  Nothing is
/// logged here: what the policy said goes into `note` (and the
/// resolution's `allowed_by`; empty without rules), for the request's own
/// line, so that a fleet ships one line per request.
fn plan_as<'a>(
    sys: &mut dyn ModuleBackend,
    name: &'a str,
    who: Option<&Requester>,
    policy: &Policy,
    c: &Counters,
    note: &mut Note,
) -> Result<Resolution, Answer<'a>> {
    // A request rule that denies the name decides before resolution: a
    // name that resolves to nothing (no module index, a typo) is still
    // denied, logged and counted.  In audit mode the would-deny is logged
    // here only when no module list follows.
    let request_denied = !policy.allows_all() && policy.request_denied(name, who);
    if request_denied && policy.mode == Mode::Enforce {
        let d = policy.decide(name, &[], who);
        noted(name, who, Denial::new(&[], &d, None), note);
        return Err(denied(name, d, c));
    }
    let mut res = match sys.resolve(name) {
        Ok(r) if !r.candidates.is_empty() => r,
        found => {
            if request_denied {
                let d = policy.decide(name, &[], who);
                noted(name, who, Denial::new(&[], &d, None), note);
            }
            return Err(match found {
                Ok(_) => Answer::NotFound { name: name.into() },
                Err(errno) => Answer::ResolveFailed { errno },
            });
        }
    };
    // A kernel that takes no modules at all would refuse the first
    // insertion: the answer is known now, without libkmod reading (and
    // decompressing) the module for nothing.  Install commands may do
    // anything, so a load with one goes ahead.
    let refused = if !res.to_insert.is_empty() && res.commands.is_empty() {
        sys.insertion_refused()
    } else {
        None
    };
    // Without rules and with the default allow there is nothing to decide
    // and nothing to log: the closure is not even listed.  Nor is there
    // when nothing would be loaded, only blacklisted candidates skipped:
    // the answer is modprobe's ("nothing loaded"), not a module rule's.
    let closure = if policy.allows_all() {
        Vec::new()
    } else {
        res.judged()
    };
    if closure.is_empty() && request_denied {
        // Audit mode (enforce returned above): the would-deny of a name
        // that loads nothing goes on the request's line.
        let d = policy.decide(name, &[], who);
        noted(name, who, Denial::new(&[], &d, None), note);
    }
    if !closure.is_empty() {
        // Module files are read (their signature and modinfo) only when
        // a rule looks at them, and only those such a rule names (the
        // candidates too, already loaded or not: they are judged as well).
        let provenance: Vec<Option<Provenance>> = if policy.needs_provenance() {
            closure
                .iter()
                .map(|m| {
                    policy
                        .needs_provenance_of(m)
                        .then(|| sys.provenance(m))
                        .flatten()
                })
                .collect()
        } else {
            Vec::new()
        };
        let d = policy.decide_with(name, &closure, &provenance, who);
        if d.would_deny || !d.allowed {
            let of_module = d.module.as_ref().and_then(|m| {
                let i = closure.iter().position(|x| x == m)?;
                provenance.get(i)
            });
            noted(name, who, Denial::new(&closure, &d, of_module), note);
        }
        if !d.allowed {
            return Err(denied(name, d, c));
        }
        if !d.would_deny {
            note.allowed_by.clone_from(&d.rule);
        }
        res.allowed_by.clone_from(&note.allowed_by);
        // Without rules, the default allow needs no mention (but the
        // record of loaded modules names it).
        if policy.rules.is_empty() && !d.would_deny {
            note.allowed_by.clear();
        }
    }
    if res.to_insert.is_empty() {
        if !res.blacklisted.is_empty() {
            // modprobe -q exits 0 for a blacklisted alias; so do we.
            return Err(Answer::Blacklisted {
                name: name.into(),
                modules: std::mem::take(&mut res.blacklisted),
            });
        }
        return Err(Answer::AlreadyLoaded { name: name.into() });
    }
    if let Some(errno) = refused {
        return Err(Answer::InsertFailed {
            name: name.into(),
            module: std::mem::take(&mut res.to_insert[0]),
            errno,
        });
    }
    Ok(res)
}

/// The answer to a request the policy denied, counted.
fn denied<'a>(name: &'a str, d: Decision, c: &Counters) -> Answer<'a> {
    c.denied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Answer::Denied {
        name: name.into(),
        rule: d.rule,
    }
}

/// Load what `plan` allowed, and record what was inserted.
fn load<'a>(
    sys: &mut dyn ModuleBackend,
    expiry: &Expiry,
    ask: &Ask<'a>,
    res: &Resolution,
) -> Answer<'a> {
    let name = ask.name;
    match sys.load(name) {
        Err(errno) => Answer::LookupFailed {
            name: name.into(),
            errno,
        },
        Ok(out) => {
            if !out.inserted.is_empty() {
                expiry.loaded(name, res, &out.inserted, &sys.links(), ask.who);
            }
            match out.error {
                Some((module, errno)) => Answer::InsertFailed {
                    name: name.into(),
                    module,
                    errno,
                },
                None if out.inserted.is_empty() && out.commands_run.is_empty() => {
                    Answer::AlreadyLoaded { name: name.into() }
                }
                None => {
                    let mut what = out.inserted.join(" ");
                    if !out.commands_run.is_empty() {
                        what.push_str(&format!(
                            "{}install command for {}",
                            if what.is_empty() { "" } else { ", " },
                            out.commands_run.join(" ")
                        ));
                    }
                    for (m, e) in &out.partial_failures {
                        what.push_str(&format!(" ({})", load_error_text(m, *e)));
                    }
                    Answer::Loaded {
                        name: name.into(),
                        what,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeKernel;
    use crate::backend::Loader;

    fn who(uid: u32) -> Requester {
        Requester {
            pid: 9,
            uid,
            comm: "sh".into(),
            ..Requester::default()
        }
    }

    #[test]
    fn provenance_is_read_for_the_closure_and_the_rule_is_kept() {
        let mut k =
            FakeKernel::with_tree(&[("can_bcm", &["can"]), ("can", &[]), ("can_raw", &["can"])])
                .alias("can-proto-2", "can_bcm")
                .alias("can-proto-1", "can_raw")
                .with_provenance("can_bcm", Provenance::default());
        let c = Counters::default();
        let p = Policy::from_lines(&["deny module * if !signed if uid!=0"]);
        let denied = plan(&mut k, "can-proto-2", Some(&who(1000)), &p, &c).unwrap_err();
        assert_eq!(
            denied.text(),
            "can-proto-2: denied by policy: deny module * if !signed uid!=0 (test:1)"
        );
        let res = plan(&mut k, "can-proto-2", Some(&who(0)), &p, &c).unwrap();
        assert_eq!(res.allowed_by, "default");
        assert_eq!(res.pulled_in_by("can"), Some("can_bcm"));
        // A signed module already in the kernel is not judged unknown.
        k.load("can-proto-1").unwrap();
        let o = plan(&mut k, "can-proto-1", Some(&who(1000)), &p, &c).unwrap_err();
        assert_eq!(o.text(), "can-proto-1: already loaded");
        let mut p = Policy::from_lines(&["allow module * if signer=Fake*"]);
        p.default_allow = false;
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let res = plan(&mut k, "rtnl-link-dummy", None, &p, &c).unwrap();
        assert_eq!(res.allowed_by, "allow module * if signer=Fake* (test:1)");
    }
}

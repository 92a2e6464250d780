//! The request path of type 2 (`request_module`): one copy, used on the
//! receive thread for the quick answers and by a worker for a load.
//!
//! [`Requests::decide`] answers from the negative cache, or resolves the
//! name once and applies the policy: a [`Plan::Answer`] is final, a
//! [`Plan::Load`] carries the [`Resolution`] to the worker, which loads it
//! with [`Requests::load`] without resolving again.

use crate::backend::{load_error_text, ModuleBackend, Resolution};
use crate::errno::errno_text;
use crate::expiry::Expiry;
use crate::log;
use crate::metrics::{Counters, Recent, RECENT_MAX};
use crate::negcache::NegativeCache;
use crate::outcome::Outcome;
use crate::policy::{Decision, Mode, Policy};
use crate::pool::Contexts;
use crate::requester::Requester;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// What to do with a request.
#[derive(Debug)]
pub enum Plan {
    /// The answer is known: nothing to load.
    Answer(Answer),
    /// Allowed, and these modules are to be loaded (by a worker).
    Load(Resolution),
}

/// A final answer, with the log line to write once it is sent.
#[derive(Debug)]
pub struct Answer {
    pub outcome: Outcome,
    pub line: LogLine,
}

/// One request_module being served: the name, who asked, and since when.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub name: &'a str,
    pub who: Option<&'a Requester>,
    /// The negative cache's key: the name, and the requester when rules
    /// look at it.
    pub cache_key: Cow<'a, str>,
    pub since: Instant,
}

impl<'a> Ask<'a> {
    /// `identity`: [`Requests::identity`] of `who`.
    pub fn new(name: &'a str, who: Option<&'a Requester>, identity: &str) -> Ask<'a> {
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

/// The log line of a request, written by whoever settled it once it may be
/// (after the answer is sent).  None: nothing to log.
#[derive(Debug, Default)]
pub struct LogLine {
    warn: bool,
    line: Option<String>,
    /// The journal's fields (REQUEST=, STATUS=, REQUESTER_*=), built only
    /// while the journal is present.
    fields: log::Fields,
}

impl LogLine {
    pub fn emit(self) {
        let Some(l) = self.line else {
            return;
        };
        if self.warn {
            log::event(
                log::Level::Warning,
                log::Event::RequestFailed,
                &self.fields,
                &l,
            );
        } else {
            log::event(log::Level::Info, log::Event::RequestDone, &self.fields, &l);
        }
    }
}

/// The state of the request path: policy, remembered failures, and the
/// ring of recent requests the status shows.
pub struct Requests {
    pub(crate) policy: RwLock<Policy>,
    pub(crate) negcache: Mutex<NegativeCache>,
    pub(crate) recent: Mutex<VecDeque<Recent>>,
    /// Changes when the module index or modprobe.d changes.
    fingerprint: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Requests {
    pub fn new(
        policy: Policy,
        negcache: NegativeCache,
        fingerprint: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Requests {
        Requests {
            policy: RwLock::new(policy),
            negcache: Mutex::new(negcache),
            recent: Mutex::new(VecDeque::new()),
            fingerprint,
        }
    }

    /// When rules look at the requester, requests (and remembered answers)
    /// of different requesters must be kept apart; else all are one.
    pub fn identity(&self, who: Option<&Requester>) -> String {
        if !self.policy.read().unwrap().needs_requester() {
            return String::new();
        }
        match who {
            Some(r) => format!(
                "uid={} gid={} comm={} cgroup={}",
                r.uid, r.gid, r.comm, r.cgroup
            ),
            None => "unknown".into(),
        }
    }

    /// Decide on a request: a remembered failure, a denial, a name that
    /// resolves to nothing, a blacklisted alias, a module already loaded
    /// or a kernel that takes none are answered; else the resolution is
    /// to be loaded.
    pub fn decide(&self, contexts: &Contexts, ask: &Ask, c: &Counters) -> Plan {
        if let Some(outcome) = self.cached_answer(ask, c) {
            return Plan::Answer(Answer {
                outcome,
                line: LogLine::default(),
            });
        }
        let policy = self.policy.read().unwrap().clone();
        let plan = contexts.with(|sys| plan(sys, ask.name, ask.who, &policy, c));
        match plan {
            Ok(Ok(res)) => Plan::Load(res),
            Ok(Err(outcome)) => Plan::Answer(self.settle(ask, outcome, &[])),
            Err(e) => Plan::Answer(self.settle(
                ask,
                Outcome::fail(format!("{}: cannot use libkmod: {e}", ask.name)),
                &[],
            )),
        }
    }

    /// Load what [`Requests::decide`] allowed, and record what was inserted.
    pub fn load(
        &self,
        contexts: &Contexts,
        expiry: &Expiry,
        ask: &Ask,
        res: &Resolution,
    ) -> Answer {
        let outcome = contexts
            .with(|sys| load(sys, expiry, ask.name, res))
            .unwrap_or_else(|e| Outcome::fail(format!("{}: cannot use libkmod: {e}", ask.name)));
        self.settle(ask, outcome, &res.candidates)
    }

    /// A remembered failure for this name, if still fresh.
    fn cached_answer(&self, ask: &Ask, c: &Counters) -> Option<Outcome> {
        let mut nc = self.negcache.lock().unwrap();
        nc.check_fingerprint((self.fingerprint)());
        let (status, text) = nc.lookup(&ask.cache_key, ask.since)?;
        drop(nc);
        c.cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if log::debug_enabled() {
            log::debug(&format!("request_module{}: {text}", for_whom(ask.who)));
        }
        let o = Outcome { status, text };
        self.remember(ask, &o, ask.since.elapsed());
        Some(o)
    }

    /// Remember and (for failures) cache the outcome of a request; its log
    /// line is for the caller to emit.  `modules`: what the name resolved
    /// to, if known (the journal's MODULE=; else the name itself).
    fn settle(&self, ask: &Ask, outcome: Outcome, modules: &[String]) -> Answer {
        let took = ask.since.elapsed();
        self.remember(ask, &outcome, took);
        // Built by hand: format! with {:.1} of a float brings in the float
        // formatting code, a large piece of code that a request otherwise
        // never runs (it counts when the request finds kerneld cold).
        let who_text = for_whom(ask.who);
        let mut line = String::with_capacity(40 + who_text.len() + outcome.text.len());
        line.push_str("request_module");
        line.push_str(&who_text);
        line.push_str(": ");
        line.push_str(&outcome.text);
        line.push_str(" (");
        push_millis(&mut line, took);
        line.push_str(" ms)");
        let warn = outcome.status != 0;
        let mut nc = self.negcache.lock().unwrap();
        if !warn {
            nc.succeeded(&ask.cache_key);
        } else if nc.remembers_failures() {
            nc.insert(
                &ask.cache_key,
                outcome.status,
                &outcome.text,
                Instant::now(),
            );
        }
        drop(nc);
        let mut fields = log::Fields::new();
        if crate::journal::present() {
            fields
                .push("REQUEST", ask.name)
                .push_num("STATUS", outcome.status)
                .requester(ask.who);
            if modules.is_empty() {
                fields.push("MODULE", ask.name);
            }
            for m in modules {
                fields.push("MODULE", m);
            }
        }
        Answer {
            outcome,
            line: LogLine {
                warn,
                line: Some(line),
                fields,
            },
        }
    }

    /// Add an answered request to the status's ring of recent ones.
    fn remember(&self, ask: &Ask, o: &Outcome, took: Duration) {
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
                e.status = o.status;
                e.at = ask.since;
                e.millis = millis;
                e
            }
            None => Recent {
                name: ask.name.to_string(),
                requester: ask.who.cloned(),
                status: o.status,
                text: o.text.clone(),
                at: ask.since,
                millis,
            },
        };
        recent.push_back(entry);
    }
}

/// Resolve `name` and decide on it.  `Err`: the final answer, nothing to
/// load; `Ok`: allowed, and these modules are to be loaded.  The policy
/// line is logged here, once per decision.
fn plan(
    sys: &mut dyn ModuleBackend,
    name: &str,
    who: Option<&Requester>,
    policy: &Policy,
    c: &Counters,
) -> Result<Resolution, Outcome> {
    // A request rule that denies the name decides before resolution: a
    // name that resolves to nothing (no module index, a typo) is still
    // denied, logged and counted.  In audit mode the would-deny is logged
    // here only when no module list follows.
    let request_denied = !policy.allows_all() && policy.request_denied(name, who);
    if request_denied && policy.mode == Mode::Enforce {
        let d = policy.decide(name, &[], who);
        log_policy(name, &[], who, &d);
        return Err(denied(name, &d, c));
    }
    let res = match sys.resolve(name) {
        Ok(r) if !r.candidates.is_empty() => r,
        found => {
            if request_denied {
                log_policy(name, &[], who, &policy.decide(name, &[], who));
            }
            return Err(match found {
                Ok(_) => Outcome::fail([name, ": not found"].concat()),
                Err(e) => Outcome::fail(format!("lookup failed: {}", errno_text(e))),
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
    // and nothing to log: the closure is not even listed.
    if !policy.allows_all() {
        // Each module once: to_insert repeats the candidates (last).
        let mut closure = res.candidates.clone();
        for m in &res.to_insert {
            if !closure.contains(m) {
                closure.push(m.clone());
            }
        }
        let d = policy.decide(name, &closure, who);
        if d.would_deny || !d.allowed || !policy.rules.is_empty() {
            log_policy(name, &closure, who, &d);
        }
        if !d.allowed {
            return Err(denied(name, &d, c));
        }
    }
    if res.to_insert.is_empty() {
        if !res.blacklisted.is_empty() {
            // modprobe -q exits 0 for a blacklisted alias; so do we.
            let mut text = [name, ": blacklisted ("].concat();
            for (i, m) in res.blacklisted.iter().enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(m);
            }
            text.push_str("), nothing loaded");
            return Err(Outcome::ok(text));
        }
        return Err(Outcome::ok([name, ": already loaded"].concat()));
    }
    if let Some(err) = refused {
        return Err(Outcome::fail(
            [name, ": ", &load_error_text(&res.to_insert[0], err)].concat(),
        ));
    }
    Ok(res)
}

/// The answer to a request the policy denied, counted.
fn denied(name: &str, d: &Decision, c: &Counters) -> Outcome {
    c.denied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Outcome::fail(format!("{name}: denied by policy: {}", d.rule))
}

/// Load what `plan` allowed, and record what was inserted.
fn load(sys: &mut dyn ModuleBackend, expiry: &Expiry, name: &str, res: &Resolution) -> Outcome {
    match sys.load(name) {
        Err(e) => Outcome::fail(format!("{name}: lookup failed: {}", errno_text(e))),
        Ok(out) => {
            if !out.inserted.is_empty() {
                expiry.loaded(name, &res.candidates, &out.inserted, &sys.links());
            }
            match out.error {
                Some((m, e)) => Outcome::fail(format!("{name}: {}", load_error_text(&m, e))),
                None if out.inserted.is_empty() && out.commands_run.is_empty() => {
                    Outcome::ok(format!("{name}: already loaded"))
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
                    Outcome::ok(format!("{name}: loaded {what}"))
                }
            }
        }
    }
}

/// The policy's line for a decision on `name` and the modules it would
/// load (none: decided on the name alone).
fn log_policy(name: &str, closure: &[String], who: Option<&Requester>, d: &Decision) {
    let (verdict, event) = if d.would_deny {
        ("would deny (audit mode)", log::Event::PolicyAudit)
    } else if d.allowed {
        ("allow", log::Event::PolicyAllowed)
    } else {
        ("deny", log::Event::PolicyDenied)
    };
    let mut fields = log::Fields::new();
    fields.push("REQUEST", name);
    for m in closure {
        fields.push("MODULE", m);
    }
    if closure.is_empty() {
        fields.push("MODULE", name);
    }
    if let Some(m) = d
        .module
        .as_deref()
        .filter(|m| !closure.iter().any(|c| c == m))
    {
        fields.push("MODULE", m);
    }
    fields.push("POLICY_RULE", &d.rule).requester(who);
    log::event(
        log::Level::Notice,
        event,
        &fields,
        &format!(
            "policy: {verdict} request_module {name} -> [{}] by {}{}{}",
            closure.join(" "),
            d.rule,
            d.module
                .as_ref()
                .map_or(String::new(), |m| format!(" (module {m})")),
            if who.is_some() {
                for_whom(who)
            } else {
                " for unknown requester".into()
            }
        ),
    );
}

/// ` for pid P uid U ...` after a request's name in log lines, or nothing.
pub fn for_whom(who: Option<&Requester>) -> String {
    who.map_or(String::new(), |r| format!(" for {}", r.describe()))
}

/// Append `d` in milliseconds with one decimal (what `{:.1}` prints for the
/// same value as a float, up to the rounding of exact ties), from integers.
fn push_millis(s: &mut String, d: Duration) {
    // u64 nanoseconds (584 years) spare the 128-bit division of as_nanos().
    let nanos = d
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()));
    let tenths = (nanos / 50_000).div_ceil(2);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = tenths / 10;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("?"));
    s.push('.');
    s.push(char::from(b'0' + (tenths % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_are_written_with_one_decimal_as_the_float_format_would() {
        for (nanos, want) in [
            (0u64, "0.0"),
            (49_999, "0.0"),
            (50_001, "0.1"),
            (1_234_567, "1.2"),
            (9_960_000, "10.0"),
            (123_456_789_000, "123456.8"),
        ] {
            let mut s = String::new();
            push_millis(&mut s, Duration::from_nanos(nanos));
            assert_eq!(s, want, "{nanos} ns");
            let float = format!("{:.1}", Duration::from_nanos(nanos).as_secs_f64() * 1000.0);
            assert_eq!(s, float, "{nanos} ns");
        }
        let mut s = String::new();
        push_millis(&mut s, Duration::MAX);
        assert!(s.ends_with(|c: char| c.is_ascii_digit()), "{s}");
    }
}

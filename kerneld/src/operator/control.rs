//! Control words (type 255 from kdstat) and the reload on SIGHUP.
//!
//! A control word changes the live settings, the policy (and so the
//! negative cache, whose answers it decided), or the sweep schedule, and
//! is answered with the status text.  Each owner is passed in; the
//! control words hold no state of their own.

use crate::backend::Host;
use crate::config::Config;
use crate::edge::reply::Replies;
use crate::limits;
use crate::operator::log;
use crate::operator::status::{self, Snapshot};
use crate::policy::{Mode, Rule};
use crate::state::expiry::Expiry;
use crate::state::settings::LiveSettings;
use crate::work::outcome::Outcome;
use crate::work::pool::Contexts;
use crate::work::request::Requests;
use kmod_ipc::{MessageView, TypeFilter};
use std::sync::{Arc, RwLock};

/// A JSON answer, with the characters that would drive a terminal and
/// that the encoder leaves raw (DEL, C1) as JSON escapes.
fn json_text(v: &serde_json::Value) -> String {
    let text = v.to_string();
    match kmod_ipc::escape::escape_json(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// The state control words change.
pub(crate) struct Owners<'a> {
    pub(crate) settings: &'a LiveSettings,
    pub(crate) requests: &'a Requests,
    pub(crate) expiry: &'a Expiry,
    /// Module state, for `why`.
    pub(crate) host: &'a dyn Host,
}

/// Apply a control word and produce the reply.  `flush` empties the queue
/// (and tells how many messages it dropped, and how many it left: replies
/// and types it does not serve); `snapshot` gathers the status.
pub(crate) fn apply(
    o: &Owners,
    text: &str,
    flush: impl FnOnce() -> (usize, u64),
    snapshot: impl Fn() -> Snapshot,
) -> Outcome {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut prefix = String::new();
    let policy = &o.requests.policy;
    match words.as_slice() {
        [] | ["status"] => {}
        ["json"] => return Outcome::ok(json_text(&status::json(&snapshot()))),
        ["policy"] => return Outcome::ok(policy.read().unwrap().describe()),
        ["why", name] | ["why", name, "json"] => {
            let name = match crate::operator::why::check_name(name) {
                Ok(n) => n,
                Err(e) => return Outcome::fail(e),
            };
            let record = o.expiry.modules();
            let usage = |m: &str| o.host.usage(m);
            let seen = seen(o.requests, name);
            return Outcome::ok(if words.len() == 3 {
                json_text(&crate::operator::why::json(name, &record, &usage, &seen))
            } else {
                crate::operator::why::text(name, &record, &usage, &seen)
                    + &crate::modload::why_text(name)
            });
        }
        ["why", ..] => {
            return Outcome::fail("why takes one module name: why NAME, or why NAME json")
        }
        ["debug"] => o.settings.set(|s| s.debug = true),
        ["nodebug"] => o.settings.set(|s| s.debug = false),
        ["keep"] => o.settings.set(|s| s.keep = true),
        ["nokeep"] => o.settings.set(|s| s.keep = false),
        ["flush"] => {
            // The 1995 line first; then what a flush does not take, which
            // the status's queue line counts too.
            let (n, left) = flush();
            prefix = format!("flushed {n} entries\n");
            if left > 0 {
                prefix.push_str(&format!(
                    "left {} in the queue: replies, and types kerneld does not serve \
                     (above 255), are not flushed\n",
                    status::count(left, "message")
                ));
            }
        }
        ["mode=enforce"] | ["mode=audit"] => {
            let mode = if words[0] == "mode=audit" {
                Mode::Audit
            } else {
                Mode::Enforce
            };
            if let Err(e) = Arc::make_mut(&mut policy.write().unwrap()).set_mode_live(mode) {
                return Outcome::fail(e);
            }
            // Denials remembered under the old mode must not outlive it.
            o.requests.negcache.lock().unwrap().clear();
            log::notice(&format!("policy {} set live", words[0]));
            // Nor the module-loads verdicts judged under it.
            crate::modload::policy_changed(&policy.read().unwrap(), crate::modload::Change::Live);
        }
        [w, ..] if *w == "allow" || *w == "deny" => {
            let rule = match Rule::parse(&words, crate::policy::LIVE) {
                Ok(r) => r,
                Err(e) => return Outcome::fail(format!("bad rule: {e}")),
            };
            let shown = rule.to_string();
            if let Err(e) = Arc::make_mut(&mut policy.write().unwrap()).add_live_rule(rule) {
                return Outcome::fail(e);
            }
            o.requests.negcache.lock().unwrap().clear();
            log::notice(&format!("policy rule added live: {shown}"));
            // The module-loads verdicts follow, as on SIGHUP.
            crate::modload::policy_changed(&policy.read().unwrap(), crate::modload::Change::Live);
            return Outcome::ok(policy.read().unwrap().describe());
        }
        [w] if w.starts_with("delay=") => match limits::DELAY.parse(&w[6..]) {
            Ok(n) => {
                o.settings.set(|s| s.delay = n);
                o.expiry.rearm(n);
            }
            Err(e) => return Outcome::fail(format!("{w}: {e}")),
        },
        _ => {
            return Outcome::fail(format!(
                "unknown control word {text:?}: use status, json, policy, debug, nodebug, \
                 keep, nokeep, delay=N, flush, mode=enforce|audit, why NAME, \
                 allow|deny request|module PATTERN"
            ))
        }
    }
    if !words.is_empty() && words != ["status"] {
        log::info(&format!("control: {text}"));
    }
    Outcome::ok(prefix + &status::text(&snapshot()))
}

/// What `why` reads of the requests kerneld answered lately: the ring of
/// recent ones and the negative cache's answer for `name` (and for the
/// usual aliases a filesystem or line discipline is asked by).
fn seen(requests: &Requests, name: &str) -> crate::operator::why::Seen {
    let now = std::time::Instant::now();
    let recent = requests
        .recent
        .lock()
        .unwrap()
        .iter()
        .map(|r| crate::operator::why::Asked {
            name: r.name.clone(),
            requester: r.requester.clone(),
            kind: r.kind,
            status: r.status,
            text: r.text.clone(),
            ago: now.saturating_duration_since(r.at),
        })
        .collect();
    let negcache = requests.negcache.lock().unwrap();
    let remembered = [name.to_string(), format!("fs-{name}")]
        .iter()
        .find_map(|n| negcache.remembered(n, now))
        .map(|(answer, left)| (answer.to_string(), left));
    crate::operator::why::Seen {
        recent,
        window: crate::state::metrics::RECENT_MAX,
        remembered,
    }
}

/// What a reload did, for the lines the signal thread logs and sends to
/// systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The file was read and is in force.
    Done {
        /// Rules of the policy in force now, live ones included.
        rules: usize,
        /// Live rules (from kdstat) carried over into the new policy.
        live_kept: usize,
        /// `lock = yes`: the old rules stayed, the file's were not taken.
        locked: bool,
    },
    /// The file had an error: the old configuration stays.
    Refused {
        /// Why, with file and line.
        error: String,
        /// Rules of the policy in force (the old one).
        rules: usize,
    },
}

/// SIGHUP: put `new`, the configuration read once by the caller, in force
/// (keeping the old one on error, and the old policy if it is locked), and
/// reopen the module index.  Live rules and a live mode from kdstat last
/// until restart (kdstat(8)): they are carried into the new policy,
/// denies first and allows last, as they were added.
pub(crate) fn reload(
    new: Result<Config, crate::config::ConfigError>,
    config: &RwLock<Arc<Config>>,
    requests: &Requests,
    contexts: &Contexts,
) -> Reloaded {
    let outcome = match new {
        Err(e) => Reloaded::Refused {
            error: e.to_string(),
            rules: requests.policy().rules.len(),
        },
        Ok(new) => {
            let mut policy = requests.policy.write().unwrap();
            let (locked, live_kept) = if policy.lock {
                (true, 0)
            } else {
                let mut next = new.policy.clone();
                let kept = carry_live_rules(&policy, &mut next);
                *policy = Arc::new(next);
                (false, kept)
            };
            let rules = policy.rules.len();
            drop(policy);
            *config.write().unwrap() = Arc::new(new);
            Reloaded::Done {
                rules,
                live_kept,
                locked,
            }
        }
    };
    contexts.clear();
    requests.negcache.lock().unwrap().clear();
    outcome
}

/// Put the live rules of `old` into `new`: live denies before the file's
/// rules, live allows after them; and its live mode, unless the new
/// policy's lock forbids it (then the file's mode stands).  How many
/// rules were carried.
fn carry_live_rules(old: &crate::policy::Policy, new: &mut crate::policy::Policy) -> usize {
    if let Some(mode) = old.live_mode {
        let _ = new.set_mode_live(mode);
    }
    let live: Vec<&Rule> = old.rules.iter().filter(|r| r.is_live()).collect();
    if live.is_empty() {
        return 0;
    }
    let mut rules: Vec<Rule> = live
        .iter()
        .filter(|r| !r.allow)
        .map(|r| (*r).clone())
        .collect();
    rules.extend(new.rules.iter().cloned());
    rules.extend(live.iter().filter(|r| r.allow).map(|r| (*r).clone()));
    new.set_rules(rules);
    live.len()
}

/// Drop every waiting message (types the daemon serves); answer those
/// whose senders wait, so that nobody hangs.  Also: how many messages
/// it left in the queue (replies, types it does not serve), counted
/// before its own answers go in.
pub(crate) fn flush(replies: &Replies, filter: TypeFilter) -> (usize, u64) {
    let q = replies.queue();
    let mut buf = Vec::new();
    let mut drained = Vec::new();
    while let Ok(Some((mtype, body))) = q.recv_into(filter, true, &mut buf) {
        drained.push((mtype, body.to_vec()));
    }
    let left = q.stat().map_or(0, |s| s.messages);
    for (mtype, body) in &drained {
        if let Ok(m) = MessageView::decode_body(*mtype, body, usize::MAX) {
            replies.reply(&m, 1, b"flushed by the operator (kdstat flush)");
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

//! Control words (type 255 from kdstat) and the reload on SIGHUP.
//!
//! A control word changes the live settings, the policy (and so the
//! negative cache, whose answers it decided), or the sweep schedule, and
//! is answered with the status text.  Each owner is passed in; the
//! control words hold no state of their own.

use crate::config::Config;
use crate::expiry::Expiry;
use crate::limits;
use crate::log;
use crate::outcome::Outcome;
use crate::policy::{Mode, Rule};
use crate::pool::Contexts;
use crate::request::Requests;
use crate::settings::LiveSettings;
use crate::status::{self, Snapshot};
use std::path::Path;
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
pub struct Owners<'a> {
    pub settings: &'a LiveSettings,
    pub requests: &'a Requests,
    pub expiry: &'a Expiry,
}

/// Apply a control word and produce the reply.  `flush` empties the queue
/// (and tells how many messages it dropped, and how many it left: replies
/// and types it does not serve); `snapshot` gathers the status.
pub fn apply(
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
            let name = match crate::why::check_name(name) {
                Ok(n) => n,
                Err(e) => return Outcome::fail(e),
            };
            let record = o.expiry.modules();
            let usage = |m: &str| crate::backend::sysfs::sysfs_usage(Path::new("/sys/module"), m);
            return Outcome::ok(if words.len() == 3 {
                json_text(&crate::why::json(name, &record, &usage))
            } else {
                crate::why::text(name, &record, &usage)
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
        }
        [w, ..] if *w == "allow" || *w == "deny" => {
            let rule = match Rule::parse(&words, "live") {
                Ok(r) => r,
                Err(e) => return Outcome::fail(format!("bad rule: {e}")),
            };
            let shown = rule.to_string();
            if let Err(e) = Arc::make_mut(&mut policy.write().unwrap()).add_live_rule(rule) {
                return Outcome::fail(e);
            }
            o.requests.negcache.lock().unwrap().clear();
            log::notice(&format!("policy rule added live: {shown}"));
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

/// SIGHUP: read the configuration again (keeping the old one on error,
/// and the old policy if it is locked), and reopen the module index.
pub fn reload(
    path: &Path,
    required: bool,
    config: &RwLock<Arc<Config>>,
    requests: &Requests,
    contexts: &Contexts,
) {
    match Config::load(path, required) {
        Err(e) => log::error(&format!(
            "configuration not reloaded, keeping the old one: {e}"
        )),
        Ok(new) => {
            let mut policy = requests.policy.write().unwrap();
            if policy.lock {
                log::notice("policy is locked (lock = yes): rules kept until restart");
            } else {
                *policy = Arc::new(new.policy.clone());
            }
            drop(policy);
            *config.write().unwrap() = Arc::new(new);
            log::notice(&format!("configuration reloaded from {}", path.display()));
        }
    }
    contexts.clear();
    requests.negcache.lock().unwrap().clear();
}

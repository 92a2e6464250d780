//! Allow and deny rules: which requests may load which modules.
//!
//! A rule is `allow|deny request|module PATTERN... [if CONDITION...]`.
//! `request` rules match the name the kernel asked for (`net-pf-33`,
//! `rtnl-link-*`); `module` rules match every module that would be loaded,
//! dependencies and softdeps included, so a denied module is never loaded
//! as someone else's dependency.  Patterns are shell globs; in module
//! patterns `-` and `_` are the same, as in modprobe.
//!
//! Conditions restrict a rule to some requesters: `uid=N`, `uid!=N`,
//! `gid=N`, `comm=GLOB`, `cgroup=GLOB`.  When the requester is unknown (no
//! tracing), `unknown-requester` says whether to treat it as root or as an
//! unprivileged user.
//!
//! Module rules may also judge where each module file comes from, as
//! libkmod reads it before anything is inserted: `signed`, `!signed`,
//! `signer=GLOB`, `intree`, `!intree` (see [`Provenance`]).  A module whose
//! provenance cannot be read is judged as the unknown requester is: deny
//! rules apply, allow rules do not.
//!
//! Which rule decides: with `match = first` (the default) the first
//! matching rule in file order; with `match = specific` the matching rule
//! whose pattern has the most literal characters (ties: the earlier one).
//! The request's verdict also covers its modules unless a module rule says
//! otherwise; a denied module denies the whole request.  Without any
//! matching rule, `default` (allow) applies.

mod condition;
pub(crate) mod pattern;

use crate::backend::Provenance;
pub(crate) use crate::policy::pattern::Pattern;
use crate::who::requester::Requester;
pub(crate) use condition::{Condition, RequesterField};
use kmod_ipc::escape::escape;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Enforce decisions, or only log what would be denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// How the deciding rule is chosen among matching ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum MatchOrder {
    #[default]
    First,
    MostSpecific,
}

/// What a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Request,
    Module,
}

/// One allow or deny rule.
#[derive(Debug)]
pub struct Rule {
    pub(crate) allow: bool,
    pub(crate) target: Target,
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) conditions: Vec<Condition>,
    /// Where it came from: `file:line` or `live`.
    pub(crate) origin: String,
    /// How often it decided.
    pub(crate) hits: AtomicU64,
}

impl Clone for Rule {
    fn clone(&self) -> Rule {
        Rule {
            allow: self.allow,
            target: self.target,
            patterns: self.patterns.clone(),
            conditions: self.conditions.clone(),
            origin: self.origin.clone(),
            hits: AtomicU64::new(self.hits.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            if self.allow { "allow" } else { "deny" },
            match self.target {
                Target::Request => "request",
                Target::Module => "module",
            },
        )?;
        for p in &self.patterns {
            write!(f, " {p}")?;
        }
        if !self.conditions.is_empty() {
            f.write_str(" if")?;
            for c in &self.conditions {
                write!(f, " {c}")?;
            }
        }
        Ok(())
    }
}

impl Rule {
    /// Parse the words of a rule line (`deny request net-pf-* if uid!=0`).
    pub fn parse(words: &[&str], origin: &str) -> Result<Rule, String> {
        let allow = match words.first() {
            Some(&"allow") => true,
            Some(&"deny") => false,
            _ => return Err("a rule starts with `allow` or `deny`".into()),
        };
        let target = match words.get(1) {
            Some(&"request") => Target::Request,
            Some(&"module") => Target::Module,
            _ => {
                return Err(format!(
                    "`{}` must be followed by `request` or `module`",
                    words[0]
                ))
            }
        };
        let rest = &words[2..];
        let split = rest.iter().position(|w| *w == "if").unwrap_or(rest.len());
        let words = &rest[..split];
        if words.is_empty() {
            return Err("a rule needs at least one name pattern".into());
        }
        let mut patterns = Vec::with_capacity(words.len());
        for p in words {
            if p.contains('/') || p.contains('=') {
                return Err(format!("{p:?} is not a module name pattern"));
            }
            patterns.push(match target {
                Target::Request => Pattern::new(p)?,
                Target::Module => Pattern::module(p)?,
            });
        }
        let mut conditions = Vec::new();
        // `if A if B` reads as `if A B`: every condition must hold.
        for w in rest.get(split + 1..).unwrap_or(&[]) {
            if *w != "if" {
                conditions.push(Condition::parse(w)?);
            }
        }
        if split < rest.len() && conditions.is_empty() {
            return Err("`if` needs at least one condition".into());
        }
        if target == Target::Request && conditions.iter().any(Condition::is_provenance) {
            return Err(
                "signed, !signed, signer=, intree and !intree judge module files: \
                 use them in `module` rules (deny module * if !signed)"
                    .into(),
            );
        }
        Ok(Rule {
            allow,
            target,
            patterns,
            conditions,
            origin: origin.to_string(),
            hits: AtomicU64::new(0),
        })
    }

    /// Added live through kdstat, not read from a file.
    pub(crate) fn is_live(&self) -> bool {
        self.origin == LIVE
    }

    fn pattern_match(&self, name: &str) -> Option<usize> {
        self.patterns
            .iter()
            .filter(|p| p.matches(name))
            .map(Pattern::specificity)
            .max()
    }

    fn conditions_hold(
        &self,
        who: Option<&Requester>,
        unknown_is_root: bool,
        provenance: Option<&Provenance>,
    ) -> bool {
        self.conditions
            .iter()
            .all(|c| c.holds(self.allow, who, unknown_is_root, provenance))
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Whether loading goes ahead (true also for a would-deny in audit).
    pub(crate) allowed: bool,
    /// A deny that audit mode let through.
    pub(crate) would_deny: bool,
    /// The rule that decided (`deny module dccp (/etc/kerneld.conf:12)`),
    /// or `default`.
    pub(crate) rule: String,
    /// The module that a module rule denied, if any.
    pub(crate) module: Option<String>,
}

/// The origin of a rule added live through kdstat.
pub(crate) const LIVE: &str = "live";

/// Rules the policy holds at most (each decision reads them all).
pub(crate) const MAX_RULES: usize = 4096;

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Arc<Vec<Rule>>,
    pub(crate) mode: Mode,
    pub(crate) order: MatchOrder,
    pub(crate) default_allow: bool,
    pub(crate) lock: bool,
    pub unknown_requester_root: bool,
    /// The mode set live through kdstat, which a reload keeps as it keeps
    /// live rules.
    pub(crate) live_mode: Option<Mode>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            rules: Arc::new(Vec::new()),
            mode: Mode::Enforce,
            order: MatchOrder::First,
            default_allow: true,
            lock: false,
            unknown_requester_root: false,
            live_mode: None,
        }
    }
}

impl Policy {
    /// A policy of the rule lines `lines` (words as in kerneld.conf after
    /// its key), from "test:1": for tests.
    #[cfg(test)]
    pub(crate) fn from_lines(lines: &[&str]) -> Policy {
        let mut p = Policy::default();
        p.set_rules(
            lines
                .iter()
                .map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    Rule::parse(&w, "test:1").unwrap()
                })
                .collect(),
        );
        p
    }

    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.rules = Arc::new(rules);
    }

    /// No rules and the default allows: every request is allowed by
    /// "default" and [`Policy::decide`] would log nothing, count nothing.
    pub(crate) fn allows_all(&self) -> bool {
        self.rules.is_empty() && self.default_allow
    }

    /// Whether any rule looks at the requester.
    pub(crate) fn needs_requester(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.conditions.iter().any(|c| c.reads().is_some()))
    }

    /// Whether any rule reads `field` of the requester.
    fn reads(&self, field: RequesterField) -> bool {
        self.rules
            .iter()
            .any(|r| r.conditions.iter().any(|c| c.reads() == Some(field)))
    }

    /// Who a request is for, as far as the rules can tell requesters
    /// apart: the requester fields they read, `unknown` for a requester
    /// not known, empty when no rule reads any.  Requests, and remembered
    /// answers, of different identities are kept apart.
    pub(crate) fn identity(&self, who: Option<&Requester>) -> String {
        if !self.needs_requester() {
            return String::new();
        }
        let Some(r) = who else {
            return "unknown".into();
        };
        let mut out = String::new();
        for f in RequesterField::ALL {
            if self.reads(f) {
                f.write(r, &mut out);
            }
        }
        out
    }

    /// Whether any rule looks at module files (signature, intree): only
    /// then are they read.
    pub(crate) fn needs_provenance(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.conditions.iter().any(Condition::is_provenance))
    }

    /// Whether a rule with a provenance condition names `module`: only
    /// such modules' files are read.
    pub(crate) fn needs_provenance_of(&self, module: &str) -> bool {
        self.rules.iter().any(|r| {
            r.target == Target::Module
                && r.conditions.iter().any(Condition::is_provenance)
                && r.pattern_match(module).is_some()
        })
    }

    /// Whether a `request` rule denies `name` itself: that is known
    /// before the name is resolved (and whether or not it resolves).
    pub(crate) fn request_denied(&self, name: &str, who: Option<&Requester>) -> bool {
        self.deciding_rule(Target::Request, name, who, None)
            .is_some_and(|r| !r.allow)
    }

    fn deciding_rule(
        &self,
        target: Target,
        name: &str,
        who: Option<&Requester>,
        provenance: Option<&Provenance>,
    ) -> Option<&Rule> {
        let mut matching = self.rules.iter().filter_map(|r| {
            (r.target == target && r.conditions_hold(who, self.unknown_requester_root, provenance))
                .then(|| r.pattern_match(name).map(|s| (r, s)))
                .flatten()
        });
        match self.order {
            MatchOrder::First => matching.next().map(|(r, _)| r),
            MatchOrder::MostSpecific => {
                let mut best: Option<(&Rule, usize)> = None;
                for (r, s) in matching {
                    if best.is_none_or(|(_, bs)| s > bs) {
                        best = Some((r, s));
                    }
                }
                best.map(|(r, _)| r)
            }
        }
    }

    /// Decide on a request for `requested` that would load `modules`.
    pub(crate) fn decide(
        &self,
        requested: &str,
        modules: &[String],
        who: Option<&Requester>,
    ) -> Decision {
        self.decide_with(requested, modules, &[], who)
    }

    /// [`Policy::decide`], with the provenance of `modules` (same order;
    /// None or missing: not read, judged as unknown).
    pub(crate) fn decide_with(
        &self,
        requested: &str,
        modules: &[String],
        provenance: &[Option<Provenance>],
        who: Option<&Requester>,
    ) -> Decision {
        let describe = |r: &Rule| format!("{r} ({})", r.origin);
        let req_rule = self.deciding_rule(Target::Request, requested, who, None);
        // A module without a rule of its own follows the request's rule,
        // or the default.
        let fallback = req_rule.map_or(self.default_allow, |r| r.allow);
        let mut verdict = fallback;
        let mut rule = req_rule.map_or_else(|| "default".to_string(), describe);
        let mut module = None;
        let mut decider = req_rule;
        if req_rule.is_none_or(|r| r.allow) {
            for (i, m) in modules.iter().enumerate() {
                let prov = provenance.get(i).and_then(Option::as_ref);
                let (allow, by) = match self.deciding_rule(Target::Module, m, who, prov) {
                    Some(r) => (r.allow, Some(r)),
                    None => (fallback, None),
                };
                if !allow {
                    verdict = false;
                    rule = by.map_or_else(|| "default".to_string(), describe);
                    module = Some(m.clone());
                    decider = by;
                    break;
                }
                if by.is_some() && req_rule.is_none() {
                    // An allowed module speaks for a request no rule named.
                    verdict = true;
                    rule = by.map_or_else(|| "default".to_string(), describe);
                    decider = by;
                }
            }
        }
        if let Some(r) = decider {
            r.hits.fetch_add(1, Ordering::Relaxed);
        }
        let would_deny = !verdict && self.mode == Mode::Audit;
        Decision {
            allowed: verdict || would_deny,
            would_deny,
            rule,
            module,
        }
    }

    /// Add a rule given live (through kdstat).  Deny rules go first so that
    /// they win under `match = first`; a locked policy takes only denies.
    pub(crate) fn add_live_rule(&mut self, rule: Rule) -> Result<(), String> {
        if self.rules.len() >= MAX_RULES {
            return Err(format!(
                "the policy has {MAX_RULES} rules already: put rules in kerneld.conf and reload"
            ));
        }
        if self.lock && rule.allow {
            return Err(
                "policy is locked (lock = yes): rules can only be tightened until kerneld restarts"
                    .into(),
            );
        }
        let mut rules: Vec<Rule> = self.rules.iter().cloned().collect();
        if rule.allow {
            rules.push(rule);
        } else {
            rules.insert(0, rule);
        }
        self.rules = Arc::new(rules);
        Ok(())
    }

    /// Change the mode live; a locked policy may go to enforce only.
    pub(crate) fn set_mode_live(&mut self, mode: Mode) -> Result<(), String> {
        if self.lock && mode == Mode::Audit && self.mode == Mode::Enforce {
            return Err(
                "policy is locked (lock = yes): cannot switch to audit mode until kerneld restarts"
                    .into(),
            );
        }
        self.mode = mode;
        self.live_mode = Some(mode);
        Ok(())
    }

    /// The rules as text, one per line with hit counters (`kdstat policy`).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "policy: mode={}, match={}, default={}, lock={}, unknown-requester={}\n",
            match self.mode {
                Mode::Enforce => "enforce",
                Mode::Audit => "audit",
            },
            match self.order {
                MatchOrder::First => "first",
                MatchOrder::MostSpecific => "specific",
            },
            if self.default_allow { "allow" } else { "deny" },
            if self.lock { "yes" } else { "no" },
            if self.unknown_requester_root {
                "root"
            } else {
                "user"
            },
        );
        if self.rules.is_empty() {
            s.push_str("no rules\n");
        }
        for r in self.rules.iter() {
            // Rule text and file path come from files: escaped.
            s.push_str(&format!(
                "{:>8} hits  {}  ({})\n",
                r.hits.load(Ordering::Relaxed),
                escape(&r.to_string()),
                escape(&r.origin)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(lines: &[&str]) -> Policy {
        let mut p = Policy::default();
        let rules = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Rule::parse(&w, &format!("test:{}", i + 1)).unwrap()
            })
            .collect();
        p.set_rules(rules);
        p
    }

    fn user(uid: u32) -> Requester {
        Requester {
            pid: 1234,
            uid,
            gid: uid,
            comm: "sh".into(),
            cgroup: "/user.slice".into(),
            ..Requester::default()
        }
    }

    #[test]
    fn identity_is_made_of_the_fields_the_rules_read() {
        let who = user(1000);
        assert_eq!(
            policy(&["deny module x if signed"]).identity(Some(&who)),
            ""
        );
        let p = policy(&["deny request x if uid!=0"]);
        assert_eq!(p.identity(Some(&who)), "uid=1000");
        assert_eq!(p.identity(None), "unknown");
        let mut other = who.clone();
        other.comm = "bash".into();
        assert_eq!(p.identity(Some(&other)), p.identity(Some(&who)));
        let p = policy(&[
            "deny request x if comm=sh",
            "allow request y if cgroup=/x gid=1",
        ]);
        assert_eq!(
            p.identity(Some(&who)),
            "gid=1000 comm=sh cgroup=/user.slice"
        );
        assert_ne!(p.identity(Some(&other)), p.identity(Some(&who)));
    }

    #[test]
    fn first_match_wins_by_default() {
        let p = policy(&["allow request net-pf-10", "deny request net-pf-*"]);
        assert!(p.decide("net-pf-10", &[], None).allowed);
        let d = p.decide("net-pf-33", &[], None);
        assert!(!d.allowed);
        assert!(d.rule.contains("deny request net-pf-*"), "{}", d.rule);
        assert!(d.rule.contains("test:2"));
        let p = policy(&["deny request net-pf-*", "allow request net-pf-10"]);
        assert!(!p.decide("net-pf-10", &[], None).allowed);
    }

    #[test]
    fn most_specific_wins_when_asked() {
        let mut p = policy(&["deny request net-pf-*", "allow request net-pf-10"]);
        p.order = MatchOrder::MostSpecific;
        assert!(p.decide("net-pf-10", &[], None).allowed);
        assert!(!p.decide("net-pf-3", &[], None).allowed);
        let mut p = policy(&["deny request net-*", "allow request net-pf-*"]);
        p.order = MatchOrder::MostSpecific;
        assert!(p.decide("net-pf-3", &[], None).allowed);
    }

    #[test]
    fn a_denied_module_denies_its_dependants() {
        let p = policy(&["deny module llc"]);
        let d = p.decide(
            "rtnl-link-bridge",
            &["bridge".into(), "stp".into(), "llc".into()],
            None,
        );
        assert!(!d.allowed);
        assert_eq!(d.module.as_deref(), Some("llc"));
        assert!(p.decide("rtnl-link-dummy", &["dummy".into()], None).allowed);
    }

    #[test]
    fn module_patterns_treat_dash_and_underscore_alike() {
        let p = policy(&["deny module can-raw"]);
        assert!(!p.decide("net-pf-29", &["can_raw".into()], None).allowed);
    }

    #[test]
    fn default_deny_with_allowed_request_allows_its_modules() {
        let mut p = policy(&["allow request rtnl-link-dummy", "deny module evil"]);
        p.default_allow = false;
        assert!(p.decide("rtnl-link-dummy", &["dummy".into()], None).allowed);
        assert!(!p.decide("net-pf-3", &["ax25".into()], None).allowed);
        assert!(!p.decide("rtnl-link-dummy", &["evil".into()], None).allowed);
    }

    #[test]
    fn default_deny_with_allowed_modules() {
        let mut p = policy(&["allow module dummy"]);
        p.default_allow = false;
        assert!(p.decide("rtnl-link-dummy", &["dummy".into()], None).allowed);
        let d = p.decide("rtnl-link-bridge", &["bridge".into(), "stp".into()], None);
        assert!(!d.allowed);
        assert_eq!(d.rule, "default");
        assert!(
            !p.decide("net-pf-3", &[], None).allowed,
            "nothing resolves: default"
        );
    }

    #[test]
    fn unknown_requester_fails_closed_for_other_conditions() {
        let p = policy(&["allow request * if comm=systemd-udevd", "deny request *"]);
        assert!(
            !p.decide("x", &[], None).allowed,
            "allow rule must not apply to an unknown requester"
        );
        let mut p2 = p.clone();
        p2.unknown_requester_root = true;
        assert!(p2.decide("x", &[], None).allowed);
        let p = policy(&["deny request * if comm=sh"]);
        assert!(!p.decide("x", &[], None).allowed);
    }

    #[test]
    fn audit_mode_allows_but_reports() {
        let mut p = policy(&["deny request net-pf-33"]);
        p.mode = Mode::Audit;
        let d = p.decide("net-pf-33", &[], None);
        assert!(d.allowed);
        assert!(d.would_deny);
    }

    #[test]
    fn requester_conditions() {
        let p = policy(&["deny request * if uid!=0"]);
        assert!(!p.decide("net-pf-29", &[], Some(&user(1000))).allowed);
        assert!(p.decide("net-pf-29", &[], Some(&user(0))).allowed);
        // Unknown requester: treated as a user by default, as root if set.
        assert!(!p.decide("net-pf-29", &[], None).allowed);
        let mut p2 = p.clone();
        p2.unknown_requester_root = true;
        assert!(p2.decide("net-pf-29", &[], None).allowed);
        let p = policy(&["allow request * if comm=systemd-udevd", "deny request *"]);
        let mut udev = user(0);
        udev.comm = "systemd-udevd".into();
        assert!(p.decide("x", &[], Some(&udev)).allowed);
        assert!(!p.decide("x", &[], Some(&user(0))).allowed);
        let p = policy(&["deny request * if cgroup=/system.slice/docker-*"]);
        let mut c = user(0);
        c.cgroup = "/system.slice/docker-abc.scope".into();
        assert!(!p.decide("x", &[], Some(&c)).allowed);
    }

    #[test]
    fn hits_are_counted() {
        let p = policy(&["deny request a", "allow request b"]);
        p.decide("a", &[], None);
        p.decide("a", &[], None);
        p.decide("b", &[], None);
        assert_eq!(p.rules[0].hits.load(Ordering::Relaxed), 2);
        assert_eq!(p.rules[1].hits.load(Ordering::Relaxed), 1);
        assert!(p.describe().contains("2 hits  deny request a"));
    }

    #[test]
    fn lock_allows_only_tightening() {
        let mut p = policy(&["deny request a"]);
        p.lock = true;
        let allow = Rule::parse(&["allow", "request", "a"], "live").unwrap();
        assert!(p.add_live_rule(allow).is_err());
        let deny = Rule::parse(&["deny", "request", "b"], "live").unwrap();
        assert!(p.add_live_rule(deny).is_ok());
        assert!(!p.decide("b", &[], None).allowed);
        assert!(p.set_mode_live(Mode::Audit).is_err());
        assert_eq!(p.mode, Mode::Enforce);
    }

    fn signed(signer: &str, intree: bool) -> Option<Provenance> {
        Some(Provenance {
            signed: true,
            signer: signer.into(),
            sig_key: "15:FD".into(),
            sig_hashalgo: "sha256".into(),
            intree,
        })
    }

    #[test]
    fn provenance_conditions_judge_each_module() {
        let p = policy(&["deny module * if !signed if uid!=0"]);
        assert!(p.needs_provenance());
        assert!(p.needs_requester());
        let mods = ["bridge".to_string(), "stp".to_string()];
        let debian = signed("Build time autogenerated kernel key", true);
        let both = [debian.clone(), debian.clone()];
        assert!(p.decide_with("x", &mods, &both, Some(&user(1000))).allowed);
        let one_unsigned = [debian.clone(), Some(Provenance::default())];
        let d = p.decide_with("x", &mods, &one_unsigned, Some(&user(1000)));
        assert!(!d.allowed);
        assert_eq!(d.module.as_deref(), Some("stp"));
        assert!(
            d.rule.contains("deny module * if !signed uid!=0 (test:1)"),
            "{}",
            d.rule
        );
        // Root may load it; the rule's hit counts once.
        assert!(
            p.decide_with("x", &mods, &one_unsigned, Some(&user(0)))
                .allowed
        );
        assert_eq!(p.rules[0].hits.load(Ordering::Relaxed), 1);
        // Unreadable provenance: deny rules apply, allow rules do not.
        assert!(!p.decide_with("x", &mods, &[], Some(&user(1000))).allowed);
        let mut allow = policy(&["allow module * if signer=Build*", "deny module *"]);
        assert!(!allow.needs_requester());
        assert!(allow.decide_with("x", &mods, &both, None).allowed);
        assert!(!allow.decide_with("x", &mods, &[], None).allowed);
        let other = [signed("Someone else", true), debian.clone()];
        assert!(!allow.decide_with("x", &mods, &other, None).allowed);
        allow.mode = Mode::Audit;
        let d = allow.decide_with("x", &mods, &other, None);
        assert!(d.allowed && d.would_deny, "{d:?}");
        let p = policy(&["deny module * if !intree"]);
        let oot = [
            debian.clone(),
            signed("Build time autogenerated kernel key", false),
        ];
        assert!(!p.decide_with("x", &mods, &oot, None).allowed);
        assert!(p.decide_with("x", &mods, &both, None).allowed);
        let p = policy(&["deny module * if intree signed"]);
        assert!(!p.decide_with("x", &mods, &both, None).allowed);
        assert!(p.decide_with("x", &mods[1..], &oot[1..], None).allowed);
        assert!(p.describe().contains("deny module * if intree signed"));
        let p = policy(&["deny module dccp* if !signed", "deny module x if uid=3"]);
        assert!(p.needs_provenance_of("dccp_ipv4"));
        assert!(!p.needs_provenance_of("x"));
    }

    #[test]
    fn provenance_conditions_are_for_module_rules() {
        let w: Vec<&str> = "deny request net-pf-* if !signed"
            .split_whitespace()
            .collect();
        assert!(Rule::parse(&w, "t").unwrap_err().contains("`module` rules"));
        let w: Vec<&str> = "deny module * if signer=".split_whitespace().collect();
        assert!(Rule::parse(&w, "t").unwrap_err().contains("signer name"));
        for c in ["signed", "!signed", "intree", "!intree", "signer=Build*"] {
            let line = format!("allow module * if {c}");
            let w: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(Rule::parse(&w, "t").unwrap().to_string(), line);
        }
    }

    #[test]
    fn bad_rules_say_why() {
        let e = |l: &str| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Rule::parse(&w, "t").unwrap_err()
        };
        assert!(e("deny").contains("request"));
        assert!(e("deny request").contains("pattern"));
        assert!(e("deny request x if").contains("condition"));
        assert!(e("deny request x if euid=3").contains("unknown condition"));
        assert!(e("deny request x if uid=bob").contains("number"));
    }
}

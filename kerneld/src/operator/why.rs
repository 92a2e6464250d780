//! `kdstat why MODULE`: why a module is loaded.
//!
//! For a module kerneld loaded, the record keeps the name that was
//! requested, the requester as traced, the time, the module of the same
//! request that pulled it in, and the rule that allowed it.  For any other
//! module, what the kernel says: its state, refcount and holders from
//! /sys/module.  For a module that is not loaded, what kerneld saw of it:
//! the recent requests for it (denied by which rule, for whom and when;
//! failed and why; blacklisted), a failure it still answers from memory,
//! or that it was not asked for.  The control word is `why NAME` (text)
//! or `why NAME json`.

use crate::backend::Usage;
use crate::state::record::Entry;
use crate::who::requester::Requester;
use crate::work::answer::Kind;
use kmod_ipc::escape::escape;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The version of the `why` JSON document: a new field keeps it, a
/// renamed, removed or changed one takes the next number.
pub(crate) const JSON_SCHEMA: u64 = 1;

/// One request kerneld answered lately, as `why` sees it.
#[derive(Debug, Clone)]
pub(crate) struct Asked {
    /// The name requested (`fs-minix`, `minix`).
    pub(crate) name: String,
    pub(crate) requester: Option<Requester>,
    /// What the answer was (a remembered one: what it remembered).
    pub(crate) kind: Kind,
    pub(crate) status: i64,
    /// The answer (`minix: denied by policy: deny module minix (...)`).
    pub(crate) text: String,
    /// How long ago.
    pub(crate) ago: Duration,
}

/// What kerneld saw lately of requests: the ring of recent ones (newest
/// last), its size, and the negative cache's answer for a name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) recent: Vec<Asked>,
    /// How many requests the ring keeps.
    pub(crate) window: usize,
    /// The failure answered from memory for the name, and for how long.
    pub(crate) remembered: Option<(String, Duration)>,
}

/// What became of a request, in one word.
fn outcome(a: &Asked) -> &'static str {
    match a.kind {
        Kind::Denied => "denied",
        Kind::Blacklisted => "blacklisted",
        Kind::AlreadyLoaded | Kind::Loaded => "done",
        Kind::NotFound | Kind::Failed => "failed",
    }
}

/// Whether the recent request `a` is about module `name`: asked as it, as
/// an alias ending in it (`fs-minix`), or an answer that names it (a
/// module rule's denial, a failed insert).
fn about(a: &Asked, name: &str) -> bool {
    let n = norm(name);
    let asked = norm(&a.name);
    asked == n
        || asked.ends_with(&format!("_{n}"))
        || a.text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .any(|w| same_module(w, &n))
}

/// The recent requests about `name`, newest first.
fn asked_about<'a>(seen: &'a Seen, name: &str) -> Vec<&'a Asked> {
    seen.recent
        .iter()
        .rev()
        .filter(|a| about(a, name))
        .collect()
}

/// `20 s ago`, `3 min ago`.
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s ago")
    } else if s < 7200 {
        format!("{} min ago", s / 60)
    } else {
        format!("{} h ago", s / 3600)
    }
}

/// The lines on what kerneld saw of a module that is not loaded.
fn seen_text(name: &str, seen: &Seen) -> String {
    let mut out = String::new();
    let asked = asked_about(seen, name);
    for a in &asked {
        let _ = write!(out, "  {} {}: {}", ago(a.ago), outcome(a), escape(&a.text));
        match &a.requester {
            Some(r) => {
                let _ = writeln!(out, "; requested by {}", requester_text(r));
            }
            None => out.push_str("; requester unknown\n"),
        }
    }
    if let Some((text, left)) = &seen.remembered {
        let _ = writeln!(
            out,
            "  answered from memory for {} s more: {}",
            left.as_secs().max(1),
            escape(text)
        );
    }
    if asked.is_empty() && seen.remembered.is_none() {
        let _ = writeln!(
            out,
            "  not requested lately: none of the last {} requests kerneld answered was for it",
            seen.window
        );
    }
    out
}

fn seen_json(name: &str, seen: &Seen) -> (Value, Value) {
    let asked = asked_about(seen, name)
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "requested_as": a.name,
                "outcome": outcome(a),
                "status": a.status,
                "answer": a.text,
                "seconds_ago": a.ago.as_secs(),
                "requester": a.requester.as_ref().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
            })
        })
        .collect::<Vec<_>>();
    let remembered = match &seen.remembered {
        Some((text, left)) => serde_json::json!({ "answer": text, "seconds_left": left.as_secs() }),
        None => Value::Null,
    };
    (Value::from(asked), remembered)
}

/// Check the name given to `why`: a module name (letters, digits, `-`,
/// `_`), or an alias that some recorded module was requested as.
pub(crate) fn check_name(name: &str) -> Result<&str, String> {
    crate::names::validate(name.as_bytes())
        .map_err(|e| format!("why {name:?}: {e}; give a module name such as `kdstat why bridge`"))
}

use crate::names::{normalise as norm, same_module};

/// The recorded modules `name` stands for: the module of that name, else
/// those requested as `name` (an alias such as `net-pf-2-proto-132`).
fn find<'a>(record: &'a BTreeMap<String, Entry>, name: &str) -> Vec<(&'a String, &'a Entry)> {
    let own: Vec<_> = record
        .iter()
        .filter(|(k, _)| same_module(k, name))
        .collect();
    if !own.is_empty() {
        return own;
    }
    record
        .iter()
        .filter(|(_, e)| e.requested_as == name && e.pulled_in_by.is_none())
        .collect()
}

/// `pid 802 (sockas, uid 1000, gid 1000, /user.slice/..., parent bash)`.
/// Command names and cgroup are escaped: any user chooses them.
fn requester_text(r: &Requester) -> String {
    let mut s = format!(
        "pid {} ({}, uid {}, gid {}",
        r.pid,
        escape(&r.comm),
        r.uid,
        r.gid
    );
    if !r.cgroup.is_empty() {
        let _ = write!(s, ", {}", escape(&r.cgroup));
    }
    if !r.parent_comm.is_empty() {
        let _ = write!(s, ", parent {}", escape(&r.parent_comm));
    }
    s.push(')');
    s
}

/// What the kernel says of a module, in words.
fn usage_text(u: &Usage) -> String {
    match u {
        Usage::NotLoaded => "not in the kernel now".into(),
        Usage::Builtin => "built into the kernel".into(),
        Usage::Loaded {
            refcnt,
            holders,
            live,
        } => {
            let mut s = format!(
                "{}, refcount {refcnt}",
                if *live { "live" } else { "not live yet" }
            );
            if holders.is_empty() {
                s.push_str(", no holders");
            } else {
                let _ = write!(s, ", held by {}", escape(&holders.join(" ")));
            }
            s
        }
    }
}

fn usage_document(u: &Usage) -> KernelView {
    match u {
        Usage::NotLoaded => KernelView {
            state: ModuleState::NotLoaded,
            refcount: None,
            holders: Vec::new(),
        },
        Usage::Builtin => KernelView {
            state: ModuleState::Builtin,
            refcount: None,
            holders: Vec::new(),
        },
        Usage::Loaded {
            refcnt,
            holders,
            live,
        } => KernelView {
            state: if *live {
                ModuleState::Live
            } else {
                ModuleState::Coming
            },
            refcount: Some(*refcnt),
            holders: holders.clone(),
        },
    }
}

/// A local time as `YYYY-MM-DD HH:MM:SS`.
fn local_time(unix: u64) -> String {
    kmod_ipc::local_time(unix as i64).unwrap_or_else(|| format!("@{unix}"))
}

/// The text answer; `usage` tells the kernel's view of a module.  What a
/// request, a requester or the module tree named is escaped.
pub(crate) fn text(
    name: &str,
    record: &BTreeMap<String, Entry>,
    usage: &dyn Fn(&str) -> Usage,
    seen: &Seen,
) -> String {
    let found = find(record, name);
    if found.is_empty() {
        let u = usage(name);
        let shown = escape(name);
        return match u {
            Usage::NotLoaded => format!(
                "{shown}: not loaded (no module of that name is in the kernel, \
                 and kerneld loaded nothing requested as {shown})\n{}",
                seen_text(name, seen)
            ),
            Usage::Builtin => format!("{shown}: built into the kernel, not loaded by kerneld\n"),
            u => format!(
                "{shown}: not loaded by kerneld (by hand, at boot or by another loader); \
                 the kernel says: {}\n",
                usage_text(&u)
            ),
        };
    }
    let mut out = String::new();
    for (m, e) in found {
        let _ = write!(
            out,
            "{}: loaded {} for {}",
            escape(m),
            local_time(e.loaded_at),
            escape(&e.requested_as)
        );
        if let Some(by) = &e.pulled_in_by {
            let _ = write!(out, " (pulled in by {})", escape(by));
        }
        match &e.requester {
            Some(r) => {
                let _ = write!(out, " requested by {}", requester_text(r));
            }
            None => out.push_str(" by an unknown requester"),
        }
        if e.allowed_by.is_empty() {
            out.push_str(", rule not recorded (loaded before kerneld kept it)");
        } else {
            let _ = write!(out, ", allowed by {}", escape(&e.allowed_by));
        }
        if !e.dependencies.is_empty() {
            let _ = write!(out, "; pulled in {}", escape(&e.dependencies.join(", ")));
        }
        let _ = writeln!(out, "\n  now: {}", usage_text(&usage(m)));
    }
    out
}

/// The JSON answer (`kdstat why NAME --json`): a [`WhyDocument`] as a
/// JSON value.
pub(crate) fn json(
    name: &str,
    record: &BTreeMap<String, Entry>,
    usage: &dyn Fn(&str) -> Usage,
    seen: &Seen,
) -> Value {
    // The document is plain data: serialising it cannot fail.
    serde_json::to_value(document(name, record, usage, seen)).unwrap_or(Value::Null)
}

/// The answer to `why NAME`: one module object per module `name` stands
/// for; `requests` lists the recent requests about `name` (newest first)
/// and `remembered` the failure answered from memory, when no module of
/// that name is loaded (empty and null otherwise).
pub(crate) fn document(
    name: &str,
    record: &BTreeMap<String, Entry>,
    usage: &dyn Fn(&str) -> Usage,
    seen: &Seen,
) -> WhyDocument {
    let found = find(record, name);
    let modules = if found.is_empty() {
        vec![WhyModule::Other {
            module: name.to_string(),
            loaded_by_kerneld: false,
            kernel: usage_document(&usage(name)),
        }]
    } else {
        found
            .into_iter()
            .map(|(m, e)| WhyModule::Recorded {
                module: m.clone(),
                loaded_by_kerneld: true,
                requested_as: e.requested_as.clone(),
                loaded_at: e.loaded_at,
                requester: e.requester.clone(),
                pulled_in_by: e.pulled_in_by.clone(),
                allowed_by: (!e.allowed_by.is_empty()).then(|| e.allowed_by.clone()),
                dependencies: e.dependencies.clone(),
                kernel: usage_document(&usage(m)),
            })
            .collect()
    };
    let not_loaded = matches!(
        modules.as_slice(),
        [WhyModule::Other {
            kernel: KernelView {
                state: ModuleState::NotLoaded,
                ..
            },
            ..
        }]
    );
    let (requests, remembered) = if not_loaded {
        seen_json(name, seen)
    } else {
        (Value::from(Vec::<Value>::new()), Value::Null)
    };
    WhyDocument {
        schema: JSON_SCHEMA,
        name: name.to_string(),
        modules,
        requests,
        remembered,
        loads: crate::modload::loads_of(name),
    }
}

// The why document's types.  Their doc comments are the descriptions of
// the published JSON Schema (schema/why.json, generated by xtask).

/// Why a module is loaded, as `kdstat why NAME --json` prints it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(title = "kerneld why (kdstat why NAME --json)")
)]
pub struct WhyDocument {
    /// The document's version: fields are only added within one number.
    pub(crate) schema: u64,
    /// The name asked about: a module, or an alias some recorded module
    /// was requested as.
    pub(crate) name: String,
    /// The modules the name stands for (one when kerneld loaded none).
    pub(crate) modules: Vec<WhyModule>,
    /// When no module of that name is loaded: the recent requests about
    /// it, newest first (empty otherwise).
    pub(crate) requests: Value,
    /// When no module of that name is loaded: the failure kerneld answers
    /// from memory for it, if any (null otherwise).
    pub(crate) remembered: Value,
    /// The loads of the module the kernel reported through kerneld's BPF
    /// LSM program (module-loads), whoever made them, newest first; empty
    /// when it is off or saw none.
    pub(crate) loads: Vec<crate::modload::SeenLoad>,
}

/// One module: from kerneld's record when kerneld loaded it, else only
/// the kernel's view.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
// Built once per answer and serialised at once: boxing would save nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WhyModule {
    /// A module kerneld loaded.
    Recorded {
        /// The module's name.
        module: String,
        /// Always true here.
        #[cfg_attr(feature = "schema", schemars(extend("const" = true)))]
        loaded_by_kerneld: bool,
        /// The name that was requested (`rtnl-link-bridge`).
        requested_as: String,
        /// When it was loaded, Unix seconds.
        loaded_at: u64,
        /// Who asked, as traced; null when unknown.
        requester: Option<Requester>,
        /// The module of the same request that needed it, or whose soft
        /// dependency it is; null for the module asked for.
        pulled_in_by: Option<String>,
        /// The policy rule that allowed the request, or `default`; null
        /// for modules recorded before kerneld kept it.
        allowed_by: Option<String>,
        /// Modules loaded with it by the same request.
        dependencies: Vec<String>,
        kernel: KernelView,
    },
    /// A module kerneld did not load (by hand, at boot, another loader,
    /// or not loaded at all).
    Other {
        /// The name asked about.
        module: String,
        /// Always false here.
        #[cfg_attr(feature = "schema", schemars(extend("const" = false)))]
        loaded_by_kerneld: bool,
        kernel: KernelView,
    },
}

/// What the kernel says of the module now (/sys/module).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct KernelView {
    pub(crate) state: ModuleState,
    /// Its reference count; null unless loaded.
    pub(crate) refcount: Option<u32>,
    /// Modules that hold it.
    pub(crate) holders: Vec<String>,
}

/// `live`, `coming` (still initialising), `builtin`, or `not loaded`.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) enum ModuleState {
    #[serde(rename = "live")]
    Live,
    #[serde(rename = "coming")]
    Coming,
    #[serde(rename = "builtin")]
    Builtin,
    #[serde(rename = "not loaded")]
    NotLoaded,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeKernel;
    use crate::backend::{Host, Loader};
    use crate::state::record::Record;

    #[test]
    fn a_chain_a_hand_loaded_module_and_an_unknown_one() {
        let mut k =
            FakeKernel::with_tree(&[("bridge", &["stp", "llc"]), ("stp", &["llc"]), ("llc", &[])])
                .alias("rtnl-link-bridge", "bridge");
        let mut res = k.resolve("rtnl-link-bridge").unwrap();
        res.allowed_by = "default".into();
        let out = k.load("rtnl-link-bridge").unwrap();
        let mut r = Record::in_memory();
        let who = Requester {
            pid: 802,
            uid: 1000,
            gid: 1000,
            comm: "ip".into(),
            cgroup: "/user.slice/user-1000.slice".into(),
            parent_comm: "bash".into(),
            ..Requester::default()
        };
        r.add_for("rtnl-link-bridge", &res, &out.inserted, Some(&who));
        let usage = |m: &str| k.usage(m);
        let t = text("llc", &r.modules, &usage, &Seen::default());
        assert!(
            t.contains(" for rtnl-link-bridge (pulled in by stp) requested by pid 802 (ip, uid 1000, gid 1000, /user.slice/user-1000.slice, parent bash), allowed by default"),
            "{t}"
        );
        assert!(
            t.contains("now: live, refcount 0, held by bridge stp"),
            "{t}"
        );
        let t = text("bridge", &r.modules, &usage, &Seen::default());
        assert!(t.contains("; pulled in llc, stp"), "{t}");
        // The alias finds the module asked for, not its dependencies.
        let t = text("rtnl-link-bridge", &r.modules, &usage, &Seen::default());
        assert!(t.starts_with("bridge: loaded "), "{t}");
        assert_eq!(t.lines().count(), 2, "{t}");
        // Loaded by hand: only the kernel's view.
        let mut k2 = FakeKernel::with_tree(&[("can", &[])]);
        k2.load("can").unwrap();
        let usage2 = |m: &str| k2.usage(m);
        let t = text("can", &r.modules, &usage2, &Seen::default());
        assert!(t.starts_with("can: not loaded by kerneld"), "{t}");
        assert!(t.contains("live, refcount 0, no holders"), "{t}");
        let t = text("nosuch", &r.modules, &usage2, &Seen::default());
        assert!(t.starts_with("nosuch: not loaded ("), "{t}");
        let j = json("stp", &r.modules, &usage, &Seen::default());
        let m = &j["modules"][0];
        assert_eq!(m["loaded_by_kerneld"], true);
        assert_eq!(m["pulled_in_by"], "bridge");
        assert_eq!(m["requester"]["parent_comm"], "bash");
        assert_eq!(m["kernel"]["holders"][0], "bridge");
        let j = json("can", &r.modules, &usage2, &Seen::default());
        assert_eq!(j["modules"][0]["loaded_by_kerneld"], false);
        assert_eq!(j["modules"][0]["kernel"]["refcount"], 0);
    }

    #[test]
    fn a_module_not_loaded_is_answered_from_what_kerneld_saw() {
        let r = Record::in_memory();
        let usage = |_: &str| Usage::NotLoaded;
        let who = Requester {
            pid: 77,
            uid: 1000,
            gid: 1000,
            comm: "mount".into(),
            ..Requester::default()
        };
        let seen = Seen {
            recent: vec![
                Asked {
                    name: "fs-minix".into(),
                    requester: Some(who),
                    kind: Kind::Denied,
                    status: 1,
                    text: "fs-minix: denied by policy: deny module minix (/etc/kerneld.conf:3) \
                           (module minix)"
                        .into(),
                    ago: Duration::from_secs(20),
                },
                Asked {
                    name: "net-pf-5".into(),
                    requester: None,
                    kind: Kind::NotFound,
                    status: 1,
                    text: "net-pf-5: not found".into(),
                    ago: Duration::from_secs(5),
                },
            ],
            window: 32,
            remembered: Some(("fs-minix: denied by policy".into(), Duration::from_secs(3))),
        };
        let t = text("minix", &r.modules, &usage, &seen);
        assert!(t.starts_with("minix: not loaded ("), "{t}");
        assert!(
            t.contains("\n  20 s ago denied: fs-minix: denied by policy: deny module minix (/etc/kerneld.conf:3)"),
            "{t}"
        );
        assert!(t.contains("requested by pid 77 (mount, uid 1000"), "{t}");
        assert!(t.contains("answered from memory for 3 s more"), "{t}");
        assert!(!t.contains("net-pf-5"), "{t}");
        let t = text(
            "appletalk",
            &r.modules,
            &usage,
            &Seen {
                window: 32,
                ..Seen::default()
            },
        );
        assert!(
            t.contains("not requested lately: none of the last 32"),
            "{t}"
        );
        let j = json("minix", &r.modules, &usage, &seen);
        assert_eq!(j["schema"], JSON_SCHEMA);
        assert_eq!(j["requests"][0]["outcome"], "denied");
        assert_eq!(j["requests"][0]["requested_as"], "fs-minix");
        assert_eq!(j["requests"][0]["seconds_ago"], 20);
        assert_eq!(j["requests"][0]["requester"]["comm"], "mount");
        assert_eq!(j["remembered"]["seconds_left"], 3);
    }

    #[test]
    fn bad_names_say_what_to_give() {
        assert!(check_name("../etc")
            .unwrap_err()
            .contains("kdstat why bridge"));
        assert!(check_name("").is_err());
        assert_eq!(check_name("bridge"), Ok("bridge"));
    }
}

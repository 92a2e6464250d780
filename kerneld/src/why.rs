//! `kdstat why MODULE`: why a module is loaded.
//!
//! For a module kerneld loaded, the record keeps the name that was
//! requested, the requester as traced, the time, the module of the same
//! request that pulled it in, and the rule that allowed it.  For any other
//! module, what the kernel says: its state, refcount and holders from
//! /sys/module.  The control word is `why NAME` (text) or `why NAME json`.

use crate::backend::Usage;
use crate::record::Entry;
use crate::requester::Requester;
use kmod_ipc::escape::escape;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Check the name given to `why`: a module name (letters, digits, `-`,
/// `_`), or an alias that some recorded module was requested as.
pub fn check_name(name: &str) -> Result<&str, String> {
    crate::names::validate(name.as_bytes())
        .map_err(|e| format!("why {name:?}: {e}; give a module name such as `kdstat why bridge`"))
}

/// Module names compare with `-` and `_` alike.
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The recorded modules `name` stands for: the module of that name, else
/// those requested as `name` (an alias such as `net-pf-2-proto-132`).
fn find<'a>(record: &'a BTreeMap<String, Entry>, name: &str) -> Vec<(&'a String, &'a Entry)> {
    let n = norm(name);
    let own: Vec<_> = record.iter().filter(|(k, _)| norm(k) == n).collect();
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
    let mut buf = [0u8; 64];
    let t = unix as libc::time_t;
    // SAFETY: localtime_r and strftime get valid pointers; strftime writes
    // at most buf.len() bytes and returns how many.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return format!("@{unix}");
        }
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            c"%Y-%m-%d %H:%M:%S".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The text answer; `usage` tells the kernel's view of a module.  What a
/// request, a requester or the module tree named is escaped.
pub fn text(name: &str, record: &BTreeMap<String, Entry>, usage: &dyn Fn(&str) -> Usage) -> String {
    let found = find(record, name);
    if found.is_empty() {
        let u = usage(name);
        let name = escape(name);
        return match u {
            Usage::NotLoaded => format!(
                "{name}: not loaded (no module of that name is in the kernel, \
                 and kerneld loaded nothing requested as {name})\n"
            ),
            Usage::Builtin => format!("{name}: built into the kernel, not loaded by kerneld\n"),
            u => format!(
                "{name}: not loaded by kerneld (by hand, at boot or by another loader); \
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
pub fn json(name: &str, record: &BTreeMap<String, Entry>, usage: &dyn Fn(&str) -> Usage) -> Value {
    // The document is plain data: serialising it cannot fail.
    serde_json::to_value(document(name, record, usage)).unwrap_or(Value::Null)
}

/// The answer to `why NAME`: one module object per module `name` stands
/// for.
pub fn document(
    name: &str,
    record: &BTreeMap<String, Entry>,
    usage: &dyn Fn(&str) -> Usage,
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
    WhyDocument {
        name: name.to_string(),
        modules,
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
    /// The name asked about: a module, or an alias some recorded module
    /// was requested as.
    pub name: String,
    /// The modules the name stands for (one when kerneld loaded none).
    pub modules: Vec<WhyModule>,
}

/// One module: from kerneld's record when kerneld loaded it, else only
/// the kernel's view.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
// Built once per answer and serialised at once: boxing would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum WhyModule {
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
pub struct KernelView {
    pub state: ModuleState,
    /// Its reference count; null unless loaded.
    pub refcount: Option<u32>,
    /// Modules that hold it.
    pub holders: Vec<String>,
}

/// `live`, `coming` (still initialising), `builtin`, or `not loaded`.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ModuleState {
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
    use crate::backend::ModuleBackend;
    use crate::record::Record;

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
        let t = text("llc", &r.modules, &usage);
        assert!(
            t.contains(" for rtnl-link-bridge (pulled in by stp) requested by pid 802 (ip, uid 1000, gid 1000, /user.slice/user-1000.slice, parent bash), allowed by default"),
            "{t}"
        );
        assert!(
            t.contains("now: live, refcount 0, held by bridge stp"),
            "{t}"
        );
        let t = text("bridge", &r.modules, &usage);
        assert!(t.contains("; pulled in llc, stp"), "{t}");
        // The alias finds the module asked for, not its dependencies.
        let t = text("rtnl-link-bridge", &r.modules, &usage);
        assert!(t.starts_with("bridge: loaded "), "{t}");
        assert_eq!(t.lines().count(), 2, "{t}");
        // Loaded by hand: only the kernel's view.
        let mut k2 = FakeKernel::with_tree(&[("can", &[])]);
        k2.load("can").unwrap();
        let usage2 = |m: &str| k2.usage(m);
        let t = text("can", &r.modules, &usage2);
        assert!(t.starts_with("can: not loaded by kerneld"), "{t}");
        assert!(t.contains("live, refcount 0, no holders"), "{t}");
        let t = text("nosuch", &r.modules, &usage2);
        assert!(t.starts_with("nosuch: not loaded ("), "{t}");
        let j = json("stp", &r.modules, &usage);
        let m = &j["modules"][0];
        assert_eq!(m["loaded_by_kerneld"], true);
        assert_eq!(m["pulled_in_by"], "bridge");
        assert_eq!(m["requester"]["parent_comm"], "bash");
        assert_eq!(m["kernel"]["holders"][0], "bridge");
        let j = json("can", &r.modules, &usage2);
        assert_eq!(j["modules"][0]["loaded_by_kerneld"], false);
        assert_eq!(j["modules"][0]["kernel"]["refcount"], 0);
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

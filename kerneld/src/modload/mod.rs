//! Every module load on the host, seen (and in enforce mode decided) in
//! the kernel through the BPF LSM: `module-loads = observe|enforce` in
//! kerneld.conf.
//!
//! - `event`: one event of the program, read from its ring buffer
//! - `verdicts`: the module tree judged by the module rules, by content
//! - `host`: what this host's loaders hand the kernel (what enforce mode
//!   can judge by content)
//! - `report`: the status of it all, and the loads counted
//! - `pin`: the program's links pinned, to outlive a kerneld that dies
//! - `bpf` (feature `bpf-lsm`): loading the program, filling its maps,
//!   reading its events
//!
//! The program lives while kerneld holds it: when kerneld stops or dies,
//! the kernel detaches it and loads are as without kerneld (fail open, so
//! that a dead kerneld never keeps a storage or network driver from
//! loading at boot).  With `module-loads-pin = yes` its links are pinned,
//! and it outlives a kerneld that dies (fail closed, by the verdicts of
//! that moment) until a kerneld starts again or the pins are removed.

// Read and judged for `bpf`, which only the bpf-lsm feature builds.
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
pub(crate) mod event;
pub(crate) mod host;
pub mod pin;
pub(crate) mod report;
pub mod verdicts;

#[cfg(feature = "bpf-lsm")]
mod bpf;

use event::LoadEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// What kerneld does with module loads that are not its own requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No program (the default).
    #[default]
    Off,
    /// Every load reported, none refused.
    Observe,
    /// Loads judged by content and refused by the kernel when denied.
    Enforce,
}

/// The `module-loads*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    pub mode: Mode,
    /// Refuse (enforce mode) a finit_module() of a file with no verdict:
    /// one outside the module tree, or changed since it was judged.
    pub(crate) refuse_unknown: bool,
    /// Refuse (enforce mode) every init_module(): a module image from
    /// memory, with no file to judge.
    pub(crate) refuse_init_module: bool,
    /// Pin the program's links, so that it outlives a kerneld that dies.
    pub(crate) pin: bool,
}

impl Settings {
    /// Read one `module-loads*` line; false: not such a key.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let refuse = |v: &str| match v {
            "allow" => Ok(false),
            "refuse" => Ok(true),
            _ => Err(format!("{key} is allow or refuse, not {v:?}")),
        };
        match key {
            "module-loads" => {
                self.mode = match value {
                    "off" => Mode::Off,
                    "observe" => Mode::Observe,
                    "enforce" => Mode::Enforce,
                    _ => {
                        return Err(format!(
                            "module-loads is off, observe or enforce, not {value:?}"
                        ))
                    }
                }
            }
            "module-loads-unknown" => self.refuse_unknown = refuse(value)?,
            "module-loads-init-module" => self.refuse_init_module = refuse(value)?,
            "module-loads-pin" => {
                self.pin = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(format!("module-loads-pin is yes or no, not {value:?}")),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn describe(&self) -> String {
        let word = |r: bool| if r { "refuse" } else { "allow" };
        let pinned = if self.pin { ", pinned" } else { "" };
        match self.mode {
            Mode::Off => "off".into(),
            Mode::Observe => format!("observe{pinned}"),
            Mode::Enforce => format!(
                "enforce (unknown files: {}, init_module: {}){pinned}",
                word(self.refuse_unknown),
                word(self.refuse_init_module)
            ),
        }
    }
}

/// Loads kept for `kdstat why`.
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
const KEPT: usize = 1024;

/// One load as `why` tells it.
#[derive(Debug, Clone)]
struct Seen {
    at: SystemTime,
    event: LoadEvent,
}

static SEEN: Mutex<VecDeque<Seen>> = Mutex::new(VecDeque::new());

/// Keep `e` for `why`.
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
pub(crate) fn remember(e: &LoadEvent) {
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.len() == KEPT {
        seen.pop_front();
    }
    seen.push_back(Seen {
        at: SystemTime::now(),
        event: e.clone(),
    });
}

/// What the program saw of loads of module `name` (newest first), as
/// lines for `kdstat why`; empty when it saw none or is not running.
pub(crate) fn why_text(name: &str) -> String {
    let n = name.replace('-', "_");
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for s in seen.iter().rev() {
        if s.event.module().as_deref() != Some(n.as_str()) {
            continue;
        }
        let ago = s.at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        out.push_str(&format!(
            "  load seen {ago} s ago: {}\n",
            s.event.describe()
        ));
    }
    if out.is_empty() {
        out
    } else {
        format!(
            "module loads of {} seen in the kernel (BPF LSM):\n{out}",
            kmod_ipc::escape::escape(name)
        )
    }
}

/// Opens a module backend, for the provenance of module files.
pub type Backends = Box<dyn Fn() -> Option<Box<dyn crate::backend::Loader + Send>> + Send>;

/// Why the policy changed, for the log line of the judging it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// SIGHUP reloaded the configuration.
    Reloaded,
    /// kdstat added a rule or set the mode live.
    Live,
}

/// The policy changed: the verdicts are worked out again, so that the
/// program refuses what the requests' policy denies from now on.
pub fn policy_changed(_policy: &crate::policy::Policy, _why: Change) {
    #[cfg(feature = "bpf-lsm")]
    bpf::policy_changed(_policy, _why);
}

/// One load of a module as `why` (JSON) tells it.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct SeenLoad {
    /// When the event was read, Unix seconds.
    pub(crate) at: u64,
    /// `finit_module` (a file) or `init_module` (an image from memory).
    pub(crate) syscall: String,
    /// The file read, as the kernel names it; null for init_module.
    pub(crate) file: Option<String>,
    /// The file's SHA-256 as stored (hex); null when not hashed.
    pub(crate) sha256: Option<String>,
    /// The loader: its pid (thread group), command and cgroup v2 id.
    pub(crate) pid: u32,
    pub(crate) comm: String,
    pub(crate) cgroup_id: u64,
    /// `allowed`, `refused` or `would-be-refused` (observe mode).
    pub(crate) outcome: String,
}

/// What the program saw of loads of module `name` (newest first).
pub(crate) fn loads_of(name: &str) -> Vec<SeenLoad> {
    let n = name.replace('-', "_");
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    seen.iter()
        .rev()
        .filter(|s| s.event.module().as_deref() == Some(n.as_str()))
        .map(|s| {
            let e = &s.event;
            SeenLoad {
                at: s
                    .at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                syscall: "finit_module".into(),
                file: Some(e.name.clone()),
                sha256: e.sha256_hex(),
                pid: e.tgid,
                comm: e.comm.clone(),
                cgroup_id: e.cgroup_id,
                outcome: if e.refused() {
                    "refused"
                } else if matches!(e.reason, event::Reason::Denied) {
                    "would-be-refused"
                } else {
                    "allowed"
                }
                .into(),
            }
        })
        .collect()
}

/// A running program; dropping it detaches the program.
pub struct Running {
    #[cfg(feature = "bpf-lsm")]
    _inner: bpf::Loaded,
}

/// Load and attach the program as `settings` say, judging the tree under
/// `module_dir` first in enforce mode.  Events go to the log and to
/// `why`.  Err: why it could not, and what to do.
///
/// `backend` opens a module backend, for the provenance of module files.
/// `pin_dir`: where this kerneld's key pins the program
/// ([`pin::dir_for`]); what an earlier kerneld left there is replaced, or
/// removed when this one does not pin.
pub fn start(
    settings: Settings,
    module_dir: &std::path::Path,
    pin_dir: &std::path::Path,
    policy: &crate::policy::Policy,
    backend: Backends,
) -> Result<Option<Running>, String> {
    if settings.mode == Mode::Off {
        report::started(settings, None);
        pin::remove_left(pin_dir);
        return Ok(None);
    }
    // Once, before the program: what its verdicts can reach here.
    let host = host::Host::read(module_dir);
    report::started(settings, Some(host.clone()));
    #[cfg(feature = "bpf-lsm")]
    let r = bpf::start(settings, module_dir, pin_dir, policy, backend, &host)
        .map(|inner| Some(Running { _inner: inner }));
    #[cfg(not(feature = "bpf-lsm"))]
    let r = {
        let _ = (module_dir, policy, backend, host);
        Err(
            "module-loads is set, but this kerneld was built without the BPF LSM program \
             (cargo feature bpf-lsm); module loads other than kerneld's own are not seen"
                .into(),
        )
    };
    let r = r.map_err(|e| {
        let left = std::fs::read_dir(pin_dir).is_ok_and(|mut d| d.next().is_some());
        if settings.pin && left {
            format!(
                "{e}; what an earlier kerneld pinned in {} stays attached, deciding by its \
                 verdicts",
                pin_dir.display()
            )
        } else {
            e
        }
    });
    report::attached(r.as_ref().map(|_| ()).map_err(Clone::clone));
    // Not pinning: nothing an earlier kerneld pinned stays (when pinning,
    // the new program replaced it, or it stays if none could be attached).
    if !settings.pin {
        pin::remove_left(pin_dir);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_checked() {
        let mut s = Settings::default();
        assert_eq!(s.set("module-loads", "enforce"), Ok(true));
        assert_eq!(s.set("module-loads-unknown", "refuse"), Ok(true));
        assert_eq!(s.set("delay", "5"), Ok(false));
        assert!(s.set("module-loads", "on").is_err());
        assert!(s.set("module-loads-init-module", "yes").is_err());
        assert_eq!(
            s.describe(),
            "enforce (unknown files: refuse, init_module: allow)"
        );
        assert_eq!(s.set("module-loads-pin", "yes"), Ok(true));
        assert!(s.set("module-loads-pin", "refuse").is_err());
        assert_eq!(
            s.describe(),
            "enforce (unknown files: refuse, init_module: allow), pinned"
        );
    }
}

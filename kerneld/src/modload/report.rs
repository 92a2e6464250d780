//! What the status says of module-loads: the mode, whether the program
//! is attached (or why not), what it can judge on this host, what becomes
//! of it when kerneld stops, the verdicts in force, and the loads counted
//! by syscall, verdict and outcome.  Kept here, beside the program, since
//! the program lives apart from the daemon's handles (it starts before
//! them, and its reader thread counts).

use super::event::{Hook, LoadEvent, Reason};
use super::host::{Host, HostDocument};
use super::{Mode, Settings};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Loads counted since kerneld started (atomics: the reader thread
/// counts, the status reads).
#[derive(Debug, Default)]
struct Counters {
    finit_module: AtomicU64,
    init_module: AtomicU64,
    requests: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    unknown: AtomicU64,
    fallback: AtomicU64,
    refused: AtomicU64,
    would_be_refused: AtomicU64,
    reported: AtomicU64,
    unreadable: AtomicU64,
}

static COUNTERS: Counters = Counters {
    finit_module: AtomicU64::new(0),
    init_module: AtomicU64::new(0),
    requests: AtomicU64::new(0),
    allowed: AtomicU64::new(0),
    denied: AtomicU64::new(0),
    unknown: AtomicU64::new(0),
    fallback: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    would_be_refused: AtomicU64::new(0),
    reported: AtomicU64::new(0),
    unreadable: AtomicU64::new(0),
};

#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
fn add(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    #[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
    fn count(&self, e: &LoadEvent) {
        add(&self.reported);
        match e.hook {
            Hook::ReadFile => add(&self.finit_module),
            Hook::LoadData => add(&self.init_module),
            // A request is no load: kerneld's own policy answers it.
            Hook::ModuleRequest => {
                add(&self.requests);
                return;
            }
        }
        match e.reason {
            Reason::Allowed => add(&self.allowed),
            Reason::Denied => add(&self.denied),
            Reason::Unknown => add(&self.unknown),
            Reason::Fallback => add(&self.fallback),
            Reason::InitModule | Reason::None => {}
        }
        if e.refused() {
            add(&self.refused);
        } else if matches!(e.reason, Reason::Denied | Reason::Fallback) {
            add(&self.would_be_refused);
        }
    }

    fn document(&self) -> CountersDocument {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersDocument {
            finit_module: get(&self.finit_module),
            init_module: get(&self.init_module),
            requests: get(&self.requests),
            allowed: get(&self.allowed),
            denied: get(&self.denied),
            unknown: get(&self.unknown),
            fallback: get(&self.fallback),
            refused: get(&self.refused),
            would_be_refused: get(&self.would_be_refused),
            reported: get(&self.reported),
            unreadable: get(&self.unreadable),
        }
    }
}

/// Count one event the program reported.
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
pub(crate) fn count(e: &LoadEvent) {
    COUNTERS.count(e);
}

/// Count one event kerneld could not read.
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
pub(crate) fn count_unreadable() {
    add(&COUNTERS.unreadable);
}

/// What the program is, set at start and by the verdict thread.
#[derive(Debug, Default)]
struct State {
    settings: Settings,
    attached: bool,
    error: Option<String>,
    host: Option<Host>,
    verdicts: Option<VerdictsDocument>,
    /// Where the program's links are pinned, when they are.
    pinned: Option<std::path::PathBuf>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state(f: impl FnOnce(&mut State)) {
    let mut s = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(s.get_or_insert_with(State::default));
}

/// At start: the settings and the host's facts.
pub(super) fn started(settings: Settings, host: Option<Host>) {
    with_state(|s| {
        s.settings = settings;
        s.host = host;
    });
}

/// The program is attached, or could not be (why).
pub(super) fn attached(result: Result<(), String>) {
    with_state(|s| match result {
        Ok(()) => {
            s.attached = true;
            s.error = None;
        }
        Err(e) => {
            s.attached = false;
            s.error = Some(e);
        }
    });
}

/// The program's links are pinned in `dir` (None: not pinned).
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
pub(super) fn pinned(dir: Option<std::path::PathBuf>) {
    with_state(|s| s.pinned = dir);
}

/// The verdicts in force were worked out.
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
pub(crate) fn judged(files: usize, denied: usize, unreadable: usize, took: Duration) {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    with_state(|s| {
        s.verdicts = Some(VerdictsDocument {
            files,
            denied,
            unreadable,
            judged_at: at,
            duration_ms: took.as_secs_f64() * 1000.0,
        })
    });
}

/// What becomes of the program when kerneld stops or dies, the program
/// pinned in `pinned` or not.
pub(crate) fn on_stop_text(pinned: Option<&std::path::Path>) -> String {
    match pinned {
        None => "when kerneld stops or dies, the kernel detaches the program: loads are then \
                 neither seen nor refused (fail open, so that a dead kerneld never keeps a \
                 storage or network driver from loading)"
            .into(),
        Some(d) => format!(
            "pinned in {}: if kerneld dies, the program goes on deciding by the verdicts of \
             that moment, unseen (a module installed since is unknown to it), until a kerneld \
             of this key starts and replaces it or the directory is removed; when kerneld \
             stops on request, it removes the pins and the program is detached",
            kmod_ipc::escape::escape(&d.display().to_string())
        ),
    }
}

/// The status document's `module_loads`.
pub(crate) fn document() -> ModuleLoadsDocument {
    let s = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let d = State::default();
    let s = s.as_ref().unwrap_or(&d);
    let word = |r: bool| if r { Refusal::Refuse } else { Refusal::Allow };
    ModuleLoadsDocument {
        mode: s.settings.mode,
        unknown_files: word(s.settings.refuse_unknown),
        init_module_loads: word(s.settings.refuse_init_module),
        attached: s.attached,
        error: s.error.clone(),
        on_stop: if s.pinned.is_some() {
            OnStop::Pinned
        } else {
            OnStop::Detach
        },
        pinned_in: s.pinned.as_ref().map(|d| d.display().to_string()),
        host: s.host.as_ref().map(HostDocument::of),
        verdicts: s.verdicts.clone(),
        counters: COUNTERS.document(),
    }
}

/// The status text's lines of module-loads.
pub(crate) fn text(d: &ModuleLoadsDocument) -> String {
    let settings = Settings {
        mode: d.mode,
        refuse_unknown: d.unknown_files == Refusal::Refuse,
        refuse_init_module: d.init_module_loads == Refusal::Refuse,
        pin: d.pinned_in.is_some(),
    };
    if d.mode == Mode::Off {
        return "module loads (BPF LSM): off: only kerneld's own requests are decided\n".into();
    }
    let mut out = format!("module loads (BPF LSM): {}, ", settings.describe());
    match (&d.error, d.attached) {
        (_, true) => out.push_str("attached; "),
        (Some(e), false) => {
            out.push_str(&format!(
                "NOT attached ({}): no load is seen or refused\n",
                kmod_ipc::escape::escape(e)
            ));
        }
        (None, false) => out.push_str("not attached yet\n"),
    }
    if d.attached {
        out.push_str(&on_stop_text(
            d.pinned_in.as_deref().map(std::path::Path::new),
        ));
        out.push('\n');
    }
    if let Some(h) = &d.host {
        if d.mode == Mode::Enforce {
            out.push_str(&format!("  can judge: {}\n", h.summary));
        }
    }
    if let Some(v) = &d.verdicts {
        out.push_str(&format!(
            "  verdicts: {} module files judged, {} contents denied, {} unreadable, in {:.0} ms\n",
            v.files, v.denied, v.unreadable, v.duration_ms
        ));
    }
    let c = &d.counters;
    out.push_str(&format!(
        "  loads seen: {} finit_module, {} init_module ({} allowed, {} denied, {} unknown, {} \
         fallback); {} refused, {} would be refused; {} requests; {} events read, {} unreadable\n",
        c.finit_module,
        c.init_module,
        c.allowed,
        c.denied,
        c.unknown,
        c.fallback,
        c.refused,
        c.would_be_refused,
        c.requests,
        c.reported,
        c.unreadable
    ));
    out
}

// The document's types; their doc comments describe schema/status.json.

/// `allow` or `refuse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum Refusal {
    Allow,
    Refuse,
}

/// What becomes of the program when kerneld stops or dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnStop {
    /// The kernel detaches it: loads go on unseen and unjudged.
    Detach,
    /// Its links are pinned (module-loads-pin): if kerneld dies it goes on
    /// deciding by the verdicts of that moment; a kerneld that stops on
    /// request removes the pins.
    Pinned,
}

/// Module loads by every loader, seen (and in enforce mode decided) in the
/// kernel through the BPF LSM: the `module-loads*` settings.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct ModuleLoadsDocument {
    /// `off`, `observe` or `enforce` (module-loads).
    pub(crate) mode: Mode,
    /// What enforce mode does with a module file it has no verdict for
    /// (module-loads-unknown).
    pub(crate) unknown_files: Refusal,
    /// What enforce mode does with init_module(), which carries no file
    /// (module-loads-init-module).
    pub(crate) init_module_loads: Refusal,
    /// Whether the program is attached now.
    pub(crate) attached: bool,
    /// Why it is not attached; null when it is, or when off.
    pub(crate) error: Option<String>,
    /// What becomes of it when kerneld stops or dies.
    pub(crate) on_stop: OnStop,
    /// The directory of its pinned links (module-loads-pin); null when
    /// not pinned.
    pub(crate) pinned_in: Option<String>,
    /// What this host's loaders hand the kernel (worked out at start);
    /// null when off.
    pub(crate) host: Option<HostDocument>,
    /// The verdicts in force; null before the tree was judged.
    pub(crate) verdicts: Option<VerdictsDocument>,
    pub(crate) counters: CountersDocument,
}

/// The verdicts the program applies.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct VerdictsDocument {
    /// Module files judged.
    pub(crate) files: usize,
    /// Contents with a deny verdict.
    pub(crate) denied: usize,
    /// Files that could not be read (unknown to the program).
    pub(crate) unreadable: usize,
    /// When they were worked out, Unix seconds.
    pub(crate) judged_at: u64,
    /// How long hashing and judging the tree took, in milliseconds.
    pub(crate) duration_ms: f64,
}

/// Events of the program since kerneld started.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub(crate) struct CountersDocument {
    /// Loads of a module file (finit_module).
    pub(crate) finit_module: u64,
    /// Loads of an image from memory (init_module).
    pub(crate) init_module: u64,
    /// Requests of the kernel (request_module) seen; not loads.
    pub(crate) requests: u64,
    /// finit_module loads whose content has an allow verdict.
    pub(crate) allowed: u64,
    /// finit_module loads whose content has a deny verdict.
    pub(crate) denied: u64,
    /// finit_module loads of a content with no verdict.
    pub(crate) unknown: u64,
    /// init_module loads that were a loader's fallback after its
    /// finit_module was refused.
    pub(crate) fallback: u64,
    /// Loads the kernel refused (enforce mode).
    pub(crate) refused: u64,
    /// Loads enforce mode would refuse (observe mode).
    pub(crate) would_be_refused: u64,
    /// Events read from the program (loads and requests).
    pub(crate) reported: u64,
    /// Events kerneld could not read.
    pub(crate) unreadable: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(hook: Hook, reason: Reason, verdict: i32) -> LoadEvent {
        LoadEvent {
            hook,
            id: 2,
            tgid: 1,
            pid: 1,
            cgroup_id: 1,
            verdict,
            hash_rc: 4,
            reason,
            enforcing: verdict != 0,
            comm: "insmod".into(),
            sha256: None,
            name: String::new(),
        }
    }

    #[test]
    fn loads_are_counted_by_syscall_verdict_and_outcome() {
        let c = Counters::default();
        c.count(&event(Hook::ReadFile, Reason::Denied, -1));
        c.count(&event(Hook::LoadData, Reason::Fallback, -1));
        c.count(&event(Hook::ReadFile, Reason::Denied, 0));
        c.count(&event(Hook::ReadFile, Reason::Allowed, 0));
        c.count(&event(Hook::ReadFile, Reason::Unknown, 0));
        c.count(&event(Hook::LoadData, Reason::InitModule, 0));
        c.count(&event(Hook::ModuleRequest, Reason::None, 0));
        let d = c.document();
        assert_eq!((d.finit_module, d.init_module, d.requests), (4, 2, 1));
        assert_eq!((d.allowed, d.denied, d.unknown, d.fallback), (1, 2, 1, 1));
        assert_eq!((d.refused, d.would_be_refused), (2, 1));
        assert_eq!((d.reported, d.unreadable), (7, 0));
    }

    #[test]
    fn the_text_says_off_or_what_is_attached_and_what_it_judges() {
        let mut d = ModuleLoadsDocument {
            mode: Mode::Off,
            unknown_files: Refusal::Allow,
            init_module_loads: Refusal::Allow,
            attached: false,
            error: None,
            on_stop: OnStop::Detach,
            pinned_in: None,
            host: None,
            verdicts: None,
            counters: CountersDocument::default(),
        };
        assert!(text(&d).starts_with("module loads (BPF LSM): off"));
        d.mode = Mode::Enforce;
        d.error = Some("no BTF".into());
        let t = text(&d);
        assert!(t.contains("NOT attached (no BTF)"), "{t}");
        d.error = None;
        d.attached = true;
        d.host = Some(HostDocument::of(&Host::of(
            Some(30),
            Some("xz".into()),
            &[std::path::PathBuf::from("/m/a.ko.xz")],
        )));
        let t = text(&d);
        assert!(t.contains("attached; when kerneld stops or dies"), "{t}");
        assert!(t.contains("  can judge: 1 of the 1 module files"), "{t}");
        assert!(t.contains("  loads seen: 0 finit_module"), "{t}");
    }
}

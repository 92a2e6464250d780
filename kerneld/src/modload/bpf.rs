//! Loading the BPF LSM program (kerneld/bpf/modload.bpf.c, built by
//! build.rs with clang) with aya, filling its maps and reading its events.

use super::event::{Hook, LoadEvent};
use super::verdicts;
use super::{Backends, Settings};
use crate::operator::log;
use crate::policy::Policy;
use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::programs::links::PinnedLink;
use aya::programs::Lsm;
use aya::{Btf, Ebpf, EbpfLoader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type VerdictMap = HashMap<MapData, [u8; 32], u32>;

/// Where a new policy (SIGHUP) goes to the verdict thread.
static POLICY: OnceLock<Mutex<Sender<(Policy, super::Change)>>> = OnceLock::new();

/// How often the module tree is looked at for changes.
const TREE_POLL: Duration = Duration::from_secs(2);

/// The policy changed: judge the tree again.
pub(super) fn policy_changed(p: &Policy, why: super::Change) {
    if let Some(tx) = POLICY.get() {
        let _ = tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((p.clone(), why));
    }
}

/// What changes when a module file is added, removed or rewritten: every
/// module file's path, size, mtime and inode.
fn tree_stamp(dir: &Path) -> Vec<(PathBuf, u64, i64, i64, u64)> {
    verdicts::module_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::symlink_metadata(&p).ok()?;
            Some((p, m.size(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

/// Judge the tree and make the map say so: the new verdicts first, then
/// the stale ones out, so that no known file is unknown meanwhile.
fn judge(
    map: &mut VerdictMap,
    dir: &Path,
    policy: &Policy,
    backend: &Backends,
    what: &str,
) -> Result<(), String> {
    let t = Instant::now();
    let mut kmod = backend();
    let mut provenance = |m: &str| kmod.as_mut().and_then(|k| k.provenance(m));
    let v = verdicts::compute(dir, policy, &mut provenance).map_err(|e| {
        format!(
            "judging the module tree {}: {e}; module-loads needs it readable",
            dir.display()
        )
    })?;
    for (hash, verdict) in &v.by_hash {
        map.insert(hash, verdict.value(), 0)
            .map_err(|e| format!("filling the verdicts map: {e}"))?;
    }
    let stale: Vec<[u8; 32]> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !v.by_hash.contains_key(k))
        .collect();
    for k in &stale {
        let _ = map.remove(k);
    }
    let took = t.elapsed();
    super::report::judged(v.files, v.denied, v.unreadable.len(), took);
    log::notice(&format!(
        "module loads: {what} {} module files in {} ({} contents denied, {} stale verdicts \
         dropped) in {} ms",
        v.files,
        dir.display(),
        v.denied,
        stale.len(),
        took.as_millis()
    ));
    for u in &v.unreadable {
        log::warn(&format!(
            "module loads: not judged (unknown to the program): {u}"
        ));
    }
    Ok(())
}

/// Judge the tree again when it changes (a module installed, replaced,
/// removed) or the policy does (SIGHUP, or a rule or mode set live).
fn keep_judging(
    mut map: VerdictMap,
    dir: PathBuf,
    mut policy: Policy,
    backend: Backends,
    mut stamp: Vec<(PathBuf, u64, i64, i64, u64)>,
    rx: Receiver<(Policy, super::Change)>,
) {
    loop {
        let what = match rx.recv_timeout(TREE_POLL) {
            Ok((p, why)) => {
                policy = p;
                match why {
                    super::Change::Reloaded => "policy reloaded: judged",
                    super::Change::Live => "policy changed live: judged",
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = tree_stamp(&dir);
                if now == stamp {
                    continue;
                }
                stamp = now;
                "module tree changed: judged"
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Err(e) = judge(&mut map, &dir, &policy, &backend, what) {
            log::error(&format!("module loads: {e}; the verdicts in force stay"));
        }
    }
}

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/modload.bpf.o"));

/// The programs, each with the LSM hook it attaches to.
const PROGRAMS: [(&str, &str); 3] = [
    ("kerneld_read_file", "kernel_read_file"),
    ("kerneld_load_data", "kernel_load_data"),
    ("kerneld_module_request", "kernel_module_request"),
];

/// The loaded, attached program; dropping it detaches it (its pins
/// removed: a kerneld that stops on request leaves nothing attached).
pub(super) struct Loaded {
    _ebpf: Ebpf,
    pins: Option<PathBuf>,
    /// The pinned links, held open: unpinned first and closed after, the
    /// last reference goes with the close, which detaches at once (a pin
    /// removed alone detaches later, from a kernel work queue).
    links: Vec<PinnedLink>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        for link in std::mem::take(&mut self.links) {
            match link.unpin() {
                Ok(_) => {}
                // A later kerneld of the key (a takeover) removed it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::error(&format!("module loads: unpinning a link: {e}")),
            }
        }
        if let Some(d) = &self.pins {
            // Gone already when a later kerneld of the key replaced it.
            match std::fs::remove_dir_all(d) {
                Ok(()) => log::notice(&format!(
                    "module loads: the program's pins in {} removed: it is detached",
                    d.display()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::error(&format!(
                    "module loads: cannot remove the program's pins {}: {e}; it stays \
                     attached until they are removed",
                    d.display()
                )),
            }
        }
    }
}

/// The directory this kerneld pins its links in, under `pin_dir`, with
/// the BPF filesystem mounted at /sys/fs/bpf (mounted here if it is not).
fn pin_here(pin_dir: &Path) -> Result<PathBuf, String> {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    let bpffs = Path::new(super::pin::BPFFS);
    let mounted = statfs(bpffs).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    if !mounted {
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| {
            format!(
                "{} is not a BPF filesystem and mounting one there failed: {}",
                bpffs.display(),
                e.desc()
            )
        })?;
    }
    let mine = pin_dir.join(std::process::id().to_string());
    std::fs::create_dir_all(&mine).map_err(|e| format!("creating {}: {e}", mine.display()))?;
    Ok(mine)
}

fn hint(e: impl std::fmt::Display) -> String {
    format!(
        "{e}; the BPF LSM needs a kernel with CONFIG_BPF_LSM=y, `bpf` in the active LSMs \
         (/sys/kernel/security/lsm), BTF (/sys/kernel/btf/vmlinux), and CAP_BPF with \
         CAP_PERFMON (root)"
    )
}

pub(super) fn start(
    settings: Settings,
    module_dir: &Path,
    pin_dir: &Path,
    policy: &Policy,
    backend: Backends,
    host: &super::host::Host,
) -> Result<Loaded, String> {
    // Without securityfs mounted the list cannot be read: then loading
    // the program says whether the BPF LSM is there.
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm");
    if let Ok(lsms) = lsms.as_deref().map(str::trim) {
        if !lsms.split(',').any(|l| l == "bpf") {
            return Err(hint(format!(
                "the BPF LSM is not active (/sys/kernel/security/lsm: {lsms:?}; an lsm= on \
                 the kernel command line that omits bpf turns it off)"
            )));
        }
    }
    let btf = Btf::from_sys_fs().map_err(|e| hint(format!("kernel BTF: {e}")))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(OBJECT)
        .map_err(|e| hint(format!("loading the BPF object: {e}")))?;

    let enforce = settings.mode == super::Mode::Enforce;
    {
        let map = ebpf
            .map_mut("config")
            .ok_or("the BPF object has no config map")?;
        let mut config: Array<&mut MapData, [u32; 4]> =
            Array::try_from(map).map_err(|e| format!("the config map: {e}"))?;
        let value = [
            u32::from(enforce),
            u32::from(settings.refuse_unknown),
            u32::from(settings.refuse_init_module),
            0,
        ];
        config
            .set(0, value, 0)
            .map_err(|e| format!("setting the config map: {e}"))?;
    }
    // The verdicts exist before the program decides anything; in observe
    // mode they say what enforce would refuse.
    let map = ebpf
        .take_map("verdicts")
        .ok_or("the BPF object has no verdicts map")?;
    let mut map: VerdictMap =
        HashMap::try_from(map).map_err(|e| format!("the verdicts map: {e}"))?;
    let stamp = tree_stamp(module_dir);
    judge(&mut map, module_dir, policy, &backend, "judged")?;

    let mut pins = None;
    let mut links = Vec::new();
    if settings.pin {
        match pin_here(pin_dir) {
            Ok(d) => pins = Some(d),
            Err(e) => log::error(&format!(
                "module-loads-pin = yes: cannot pin the program ({e}); it is attached \
                 unpinned, and goes with kerneld"
            )),
        }
    }
    // Pinned links stay if attaching fails half-way: remove them then.
    let unpin = |pins: &Option<PathBuf>| {
        if let Some(d) = pins {
            let _ = std::fs::remove_dir_all(d);
        }
    };
    for (name, hook) in PROGRAMS {
        let prog: &mut Lsm = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("the BPF object has no program {name}"))?
            .try_into()
            .map_err(|e| format!("program {name}: {e}"))?;
        prog.load(hook, &btf)
            .map_err(|e| hint(format!("loading program {name} for hook {hook}: {e}")))?;
        let link = prog.attach().map_err(|e| {
            unpin(&pins);
            hint(format!("attaching program {name} to hook {hook}: {e}"))
        })?;
        if let Some(d) = &pins {
            let pinned = prog
                .take_link(link)
                .map_err(|e| e.to_string())
                .and_then(|l| {
                    aya::programs::links::FdLink::from(l)
                        .pin(d.join(hook))
                        .map_err(|e| e.to_string())
                });
            match pinned {
                Ok(l) => links.push(l),
                Err(e) => {
                    unpin(&pins);
                    return Err(format!(
                        "pinning program {name} in {}: {e}; set module-loads-pin = no to run \
                         it unpinned",
                        d.display()
                    ));
                }
            }
        }
    }
    // Attached: what an earlier kerneld of the key pinned goes now, not
    // before, so that loads were never without a program.
    if let Some(d) = &pins {
        let (removed, failed) = super::pin::remove_stale(pin_dir, Some(d));
        for r in removed {
            log::notice(&format!(
                "module loads: the program a kerneld (pid {r}) left pinned is replaced by \
                 this one"
            ));
        }
        for f in failed {
            log::error(&format!(
                "module loads: cannot remove a pinned program ({f}): two programs decide \
                 until it is removed by hand"
            ));
        }
    }
    super::report::pinned(pins.clone());

    let (tx, rx) = std::sync::mpsc::channel();
    let _ = POLICY.set(Mutex::new(tx));
    let (dir, policy) = (module_dir.to_path_buf(), policy.clone());
    std::thread::Builder::new()
        .name("kerneld-verdicts".into())
        .spawn(move || keep_judging(map, dir, policy, backend, stamp, rx))
        .map_err(|e| format!("cannot start the verdict thread: {e}"))?;

    let events = ebpf
        .take_map("events")
        .ok_or("the BPF object has no events map")?;
    let ring = RingBuf::try_from(events).map_err(|e| format!("the events ring buffer: {e}"))?;
    std::thread::Builder::new()
        .name("kerneld-modload".into())
        .spawn(move || read_events(ring))
        .map_err(|e| format!("cannot start the module load reader thread: {e}"))?;
    log::notice(&format!(
        "module loads: the BPF LSM program is attached: {}{}; {}; {}",
        settings.describe(),
        init_module_note(enforce),
        host.describe(),
        super::report::on_stop_text(pins.as_deref())
    ));
    Ok(Loaded {
        _ebpf: ebpf,
        pins,
        links,
    })
}

/// What enforce mode can and cannot judge: init_module() has no file.
fn init_module_note(enforce: bool) -> &'static str {
    if !enforce {
        return "";
    }
    "; finit_module() of module files is judged by content; init_module() carries no file: \
     the fallback of a loader whose finit_module() was just refused (libkmod up to kmod 30, \
     busybox) is refused too, any other follows module-loads-init-module; concurrent \
     finit_module() of one file share the first caller's verdict"
}

fn read_events(mut ring: RingBuf<MapData>) {
    let fd = ring.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            log::error(&format!(
                "module loads: cannot wait for events: {}; no more loads are reported \
                 (the program still decides)",
                std::io::Error::last_os_error()
            ));
            return;
        }
        while let Some(item) = ring.next() {
            match LoadEvent::parse(&item) {
                Some(e) => report(&e),
                None => {
                    super::report::count_unreadable();
                    log::warn(
                        "module loads: an event kerneld cannot read (program and daemon out of step)",
                    )
                }
            }
        }
    }
}

fn report(e: &LoadEvent) {
    let mut fields = log::Fields::new();
    fields
        .push(
            "MODLOAD_HOOK",
            match e.hook {
                Hook::ReadFile => "finit_module",
                Hook::LoadData => "init_module",
                Hook::ModuleRequest => "request",
            },
        )
        .push_num("MODLOAD_PID", e.tgid)
        .push("MODLOAD_COMM", &e.comm)
        .push_num("MODLOAD_CGROUP_ID", e.cgroup_id)
        .push_num("MODLOAD_READ_ID", e.id);
    if !e.name.is_empty() {
        fields.push(
            if e.hook == Hook::ModuleRequest {
                "MODLOAD_ALIAS"
            } else {
                "MODLOAD_FILE"
            },
            &e.name,
        );
    }
    if let Some(m) = e.module() {
        fields.push("MODULE", &m);
    }
    if let Some(h) = e.sha256_hex() {
        fields.push("MODLOAD_SHA256", &h);
    }
    let (level, event) = if e.refused() {
        (log::Level::Warning, log::Event::ModuleLoadRefused)
    } else {
        (log::Level::Info, log::Event::ModuleLoad)
    };
    log::event(level, event, &fields, &e.describe());
    if let Some(m) = e.audit_message() {
        crate::operator::audit::record(m);
    }
    super::report::count(e);
    super::remember(e);
}

//! Who asked: following the kernel's `module:module_request` tracepoint.
//!
//! The kernel runs the module helper from a kernel worker, so the shim
//! cannot know which task called request_module().  The tracepoint
//! `module:module_request` fires in the requesting task itself, with the
//! requested name, just before the helper is started; that task then waits
//! for the helper, so it is still there to be looked at in /proc when the
//! shim's request reaches kerneld.
//!
//! tracefs rather than perf_event_open: a private trace instance
//! (`instances/kerneld`) gives text lines with comm, pid and name, needs no
//! parsing of the raw sample layout (which changes between kernels), and
//! does not disturb the global trace buffer or other tracers.  A reader
//! thread keeps the recent events; a request claims the oldest unclaimed
//! event for its name, so two users asking at once each get their own, and
//! an event nobody claims (the module was already loaded and the helper
//! never asked) simply ages out.
//!
//! The tracepoint also fires for the requests of the in-kernel sender,
//! which name their requester themselves: those events are dropped
//! unread ([`Tracer::skip`]).  While that sender is loaded, the reader
//! therefore leaves the task to be read from /proc when its event is
//! claimed (it is still there: it waits in the kernel for the answer to
//! its request), so that a request from the kernel costs the reader a
//! line and no file; else it reads the task at once, off the receive
//! thread, as the helper's requests need it.

use crate::operator::log;
use crate::who::requester::Requester;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Events older than this are dropped unclaimed.
const EVENT_TTL: Duration = Duration::from_secs(30);
/// How long a request waits for its event to be read.
const CLAIM_WAIT: Duration = Duration::from_millis(50);

/// Requests that named their requester whose event was not read yet,
/// kept at most: each is a name (at most 55 bytes) and an instant.
const SKIPS_MAX: usize = 1024;

#[derive(Debug)]
struct Event {
    name: String,
    pid: u32,
    comm: String,
    /// The task, if read when the event was.
    task: Option<Requester>,
    seen: Instant,
}

impl Event {
    fn requester(self) -> Requester {
        self.task.unwrap_or_else(|| read_task(self.pid, self.comm))
    }
}

/// Whether the in-kernel sender (kernel/module/ of the sources) is loaded.
fn kernel_sender_loaded() -> bool {
    Path::new("/sys/module/kerneld_shim").exists()
}

/// The events read and not claimed yet, and the names whose next event is
/// to be dropped.
#[derive(Debug, Default)]
struct Events {
    queue: VecDeque<Event>,
    /// Requests that named their requester before the reader saw their
    /// event: the next event of each name is dropped as it arrives.
    skips: VecDeque<(String, Instant)>,
}

impl Events {
    /// Drop what is older than [`EVENT_TTL`].
    fn prune(&mut self, now: Instant) {
        let old = |seen: Instant| now.saturating_duration_since(seen) > EVENT_TTL;
        while self.queue.front().is_some_and(|e| old(e.seen)) {
            self.queue.pop_front();
        }
        while self.skips.front().is_some_and(|s| old(s.1)) {
            self.skips.pop_front();
        }
    }

    /// An event from the reader: kept, or dropped if a request already
    /// named its requester (false).
    fn arrived(&mut self, e: Event) -> bool {
        self.prune(e.seen);
        if let Some(i) = self.skips.iter().position(|s| s.0 == e.name) {
            self.skips.remove(i);
            return false;
        }
        self.queue.push_back(e);
        true
    }

    /// The oldest unclaimed event of `name`, taken.
    fn take(&mut self, name: &str) -> Option<Event> {
        let i = self.queue.iter().position(|e| e.name == name)?;
        self.queue.remove(i)
    }

    /// A request for `name` named its requester: its event, read or still
    /// to come, is nobody's to claim.
    fn skip(&mut self, name: &str, now: Instant) {
        if self.take(name).is_some() {
            return;
        }
        self.prune(now);
        if self.skips.len() >= SKIPS_MAX {
            self.skips.pop_front();
        }
        self.skips.push_back((name.to_string(), now));
    }
}

/// A running tracepoint reader.
pub struct Tracer {
    instance: PathBuf,
    events: Arc<(Mutex<Events>, Condvar)>,
}

const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn find_tracefs() -> Result<PathBuf, String> {
    for t in TRACEFS {
        if Path::new(t).join("instances").is_dir() {
            return Ok(PathBuf::from(t));
        }
    }
    // Not mounted yet: try to mount it where it belongs.
    let r = nix::mount::mount(
        Some("tracefs"),
        TRACEFS[0],
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    if r.is_ok() && Path::new(TRACEFS[0]).join("instances").is_dir() {
        return Ok(PathBuf::from(TRACEFS[0]));
    }
    Err("tracefs is not available (no /sys/kernel/tracing)".into())
}

impl Tracer {
    /// Set up the trace instance and start the reader thread.
    pub fn start() -> Result<Tracer, String> {
        let root = find_tracefs()?;
        let instance = root.join("instances").join("kerneld");
        if !instance.is_dir() {
            std::fs::create_dir(&instance)
                .map_err(|e| format!("cannot create trace instance {}: {e}", instance.display()))?;
        }
        let enable = instance.join("events/module/module_request/enable");
        if !enable.exists() {
            let _ = std::fs::remove_dir(&instance);
            return Err("the kernel has no module:module_request tracepoint".into());
        }
        std::fs::write(&enable, "1").map_err(|e| format!("cannot enable the tracepoint: {e}"))?;
        let pipe = std::fs::File::open(instance.join("trace_pipe"))
            .map_err(|e| format!("cannot open trace_pipe: {e}"))?;
        let events: Arc<(Mutex<Events>, Condvar)> = Arc::default();
        let ev = Arc::clone(&events);
        std::thread::Builder::new()
            .name("kerneld-trace".into())
            .spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some((pid, comm, name)) = parse_line(&line) {
                        let (lock, cv) = &*ev;
                        let task = (!kernel_sender_loaded()).then(|| read_task(pid, comm.clone()));
                        let e = Event {
                            name,
                            pid,
                            comm,
                            task,
                            seen: Instant::now(),
                        };
                        if lock.lock().unwrap().arrived(e) {
                            cv.notify_all();
                        }
                    }
                }
                log::warn("requester tracing stopped: trace_pipe closed");
            })
            .map_err(|e| format!("cannot start the trace reader: {e}"))?;
        Ok(Tracer { instance, events })
    }

    /// The requester of a kernel request for `name`: the oldest unclaimed
    /// event with that name, waiting briefly for the reader to catch up.
    pub(crate) fn claim(&self, name: &str) -> Option<Requester> {
        let deadline = Instant::now() + CLAIM_WAIT;
        let (lock, cv) = &*self.events;
        let mut q = lock.lock().unwrap();
        let e = loop {
            if let Some(e) = q.take(name) {
                break e;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            q = cv.wait_timeout(q, left).unwrap().0;
        };
        drop(q);
        Some(e.requester())
    }

    /// The requester of a kernel request for `name`, if its event was
    /// read already: no wait (for the receive thread, when no rule looks
    /// at the requester).
    pub(crate) fn claim_now(&self, name: &str) -> Option<Requester> {
        let e = self.events.0.lock().unwrap().take(name)?;
        Some(e.requester())
    }

    /// A request for `name` named its requester itself (the in-kernel
    /// sender): its event, read already or not, is dropped without a
    /// look at the task, and nothing waits for it.
    pub(crate) fn skip(&self, name: &str) {
        self.events.0.lock().unwrap().skip(name, Instant::now());
    }

    pub(crate) fn describe(&self) -> String {
        format!("module:module_request via {}", self.instance.display())
    }

    /// Switch the tracepoint off and remove the instance.
    pub fn stop(&self) {
        let _ = std::fs::write(
            self.instance.join("events/module/module_request/enable"),
            "0",
        );
        let _ = std::fs::remove_dir(&self.instance);
    }
}

/// `comm-pid [cpu] flags ts: module_request: NAME wait=1 call_site=...`
fn parse_line(line: &str) -> Option<(u32, String, String)> {
    let at = line.find(": module_request: ")?;
    let name = line[at + 18..].split_whitespace().next()?.to_string();
    let head = line[..line.find(" [")?].trim();
    let dash = head.rfind('-')?;
    let pid = head[dash + 1..].parse().ok()?;
    Some((pid, head[..dash].to_string(), name))
}

/// Identity of a task, read from /proc while it waits for its module.
fn read_task(pid: u32, comm: String) -> Requester {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let field = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().nth(1)) // effective id
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let cgroup = std::fs::read_to_string(dir.join("cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_string();
    let namespaces = ["mnt", "net", "pid", "user"]
        .iter()
        .filter_map(|ns| std::fs::read_link(dir.join("ns").join(ns)).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    let comm = std::fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or(comm);
    let parent_comm = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&p| p != 0)
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    Requester {
        pid,
        uid: field("Uid:"),
        gid: field("Gid:"),
        comm,
        cgroup,
        namespaces,
        parent_comm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_parse() {
        let l = "           ip-812     [000] .....    12.345678: module_request: rtnl-link-dummy wait=1 call_site=__rtnl_newlink+0x5c/0x900";
        assert_eq!(
            parse_line(l),
            Some((812, "ip".into(), "rtnl-link-dummy".into()))
        );
        let l =
            " kworker/u4:1-33 [001] d..1. 1.0: module_request: crypto-crc32c wait=1 call_site=x";
        assert_eq!(
            parse_line(l),
            Some((33, "kworker/u4:1".into(), "crypto-crc32c".into()))
        );
        let l = "  my-prog-x-77 [000] ..... 1.0: module_request: net-pf-29 wait=1 call_site=y";
        assert_eq!(parse_line(l).unwrap().0, 77);
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line(" x-1 [0] 1.0: sched_switch: a"), None);
    }

    fn event(name: &str, pid: u32, seen: Instant) -> Event {
        Event {
            name: name.into(),
            pid,
            comm: "ip".into(),
            task: None,
            seen,
        }
    }

    #[test]
    fn skipped_events_are_dropped_whether_read_before_or_after() {
        let now = Instant::now();
        let mut ev = Events::default();
        // Read before the request that names its requester.
        assert!(ev.arrived(event("net-pf-1", 10, now)));
        ev.skip("net-pf-1", now);
        assert!(ev.take("net-pf-1").is_none());
        // Read after it: dropped on arrival, once.
        ev.skip("net-pf-2", now);
        assert!(!ev.arrived(event("net-pf-2", 11, now)));
        assert!(ev.arrived(event("net-pf-2", 12, now)));
        assert_eq!(ev.take("net-pf-2").map(|e| e.pid), Some(12));
        // Other names are untouched, oldest first.
        ev.skip("net-pf-3", now);
        assert!(ev.arrived(event("net-pf-4", 13, now)));
        assert!(ev.arrived(event("net-pf-4", 14, now)));
        assert_eq!(ev.take("net-pf-4").map(|e| e.pid), Some(13));
        assert_eq!(ev.skips.len(), 1);
    }

    #[test]
    fn events_and_skips_age_out_and_skips_are_bounded() {
        let t0 = Instant::now();
        let later = t0 + EVENT_TTL + Duration::from_secs(1);
        let mut ev = Events::default();
        assert!(ev.arrived(event("old", 1, t0)));
        ev.skip("gone", t0);
        assert!(ev.arrived(event("new", 2, later)));
        assert!(ev.take("old").is_none(), "aged out");
        assert!(ev.arrived(event("gone", 3, later)), "the skip aged out");
        for i in 0..SKIPS_MAX + 10 {
            ev.skip(&format!("n{i}"), later);
        }
        assert_eq!(ev.skips.len(), SKIPS_MAX);
    }

    #[test]
    fn a_task_not_read_with_its_event_is_read_when_claimed() {
        let me = Event {
            name: "x".into(),
            pid: std::process::id(),
            comm: "x".into(),
            task: None,
            seen: Instant::now(),
        };
        assert_eq!(me.requester().pid, std::process::id());
    }

    #[test]
    fn own_task_reads_back() {
        let me = read_task(std::process::id(), "x".into());
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        assert!(!me.comm.is_empty());
        assert!(!me.parent_comm.is_empty(), "the test runner has a parent");
    }
}

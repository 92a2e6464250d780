//! Section 9, failover: kerneld killed with SIGKILL.  How soon the shim,
//! run as the kernel runs it, has its request served by the fallback (the
//! real modprobe, here a stand-in that exits 0), with no request in flight
//! and with one; and how soon a successor started at once on the queue
//! left in a flood answers a status request.

use crate::proc::{self, free_key, run_once, Kerneld, KerneldSpec};
use crate::sections::{interleave, Section};
use crate::stats::{Ratio, Summary};
use crate::table::{num, verdict, Table};
use kerneld_tests::flood::flood;
use kmod_ipc::{Client, Key, MsgType, Queue};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The goal: from SIGKILL to a request served by the fallback.
const GOAL: Duration = Duration::from_millis(1500);

/// What section 9 needs.
pub struct Setup<'a> {
    pub kerneld: &'a Path,
    pub shim: &'a Path,
    pub work: &'a Path,
    pub module_dir: &'a Path,
    /// Repetitions of (a) and (b).
    pub reps: usize,
    /// Repetitions of (c).
    pub flood_reps: usize,
    /// Messages of (c) before the SIGKILL; half as many follow it.
    pub flood_messages: usize,
}

/// How the shim's fallback came about, from its log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Paths {
    /// Saw no live kerneld before sending.
    unsent: usize,
    /// Sent, saw kerneld gone while waiting, took the request back.
    taken_back: usize,
    /// Anything else (a failure: the shim's log line is kept).
    other: usize,
}

impl Paths {
    fn count(&mut self, log: &str) {
        if !log.contains("; running ") {
            self.other += 1;
        } else if log.contains("request taken back") {
            self.taken_back += 1;
        } else if log.contains("is not running") {
            self.unsent += 1;
        } else {
            self.other += 1;
        }
    }

    fn json(&self) -> Value {
        json!({ "unsent": self.unsent, "taken_back": self.taken_back, "other": self.other })
    }
}

/// The successor's takeover log line: `took over kerneld's own queue at
/// key K (id N, M messages waiting); dropped X requests whose senders
/// stopped waiting and Y replies nobody reads, kept Z[, L lost (...)]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    pub waiting: u64,
    pub dropped_requests: u64,
    pub dropped_replies: u64,
    pub kept: u64,
    pub lost: u64,
}

/// The last takeover line in a kerneld log.
pub fn parse_takeover(log: &str) -> Option<Takeover> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("took over kerneld's own queue"))?;
    let after = |marker: &str| -> Option<u64> {
        let rest = &line[line.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let before = |marker: &str| -> Option<u64> {
        let head = &line[..line.find(marker)?];
        let digits: String = head
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits.parse().ok()
    };
    Some(Takeover {
        waiting: before(" messages waiting")?,
        dropped_requests: after("; dropped ")?,
        dropped_replies: before(" replies nobody reads")?,
        kept: after(", kept ")?,
        lost: before(" lost (").unwrap_or(0),
    })
}

fn true_bin() -> PathBuf {
    ["/bin/true", "/usr/bin/true"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/bin/true"))
}

pub fn failover(s: &Setup) -> Section {
    let dir = s.work.join("failover");
    // A registry of its own: the kerneld processes killed here leave their
    // instance files behind, which belong in the work directory.
    let keys = dir.join("keys");
    let conf = dir.join("shim.conf");
    let shim_log = dir.join("shim.log");
    std::fs::create_dir_all(&keys)
        .and_then(|_| {
            std::fs::write(
                &conf,
                format!(
                    "# section 9: the fallback is a stand-in that exits 0\nshim-modprobe = {}\nshim-fallback = modprobe\nshim-timeout = 30\n",
                    true_bin().display()
                ),
            )
        })
        .unwrap_or_else(|e| proc::abort(&format!("{}: {e}", dir.display())));
    let start = |name: &str, config: &str| {
        Kerneld::start_in(
            &KerneldSpec {
                name,
                bin: s.kerneld,
                work: &dir,
                module_dir: s.module_dir,
                config,
                modprobe_d: None,
            },
            Some(&keys),
        )
        .unwrap_or_else(|e| proc::abort(&e))
    };
    // The shim as the kernel runs it: a bare environment, no terminal.
    let shim = |key: Key| {
        let _ = std::fs::write(&shim_log, "");
        let mut c = Command::new(s.shim);
        c.env_clear()
            .env("HOME", "/")
            .env("PATH", "/sbin:/usr/sbin:/bin:/usr/bin")
            .env("KERNELD_KEY", key.to_string())
            .env("KERNELD_CONFIG", &conf)
            .env("KERNELD_SHIM_LOG", &shim_log)
            .env("KERNELD_KEYS_DIR", &keys)
            .args(["-q", "--", "kdbench-failover"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let log = || std::fs::read_to_string(&shim_log).unwrap_or_default();
    // Shared by both sides of (a): the first few failures, told in full.
    let failures: RefCell<Vec<String>> = RefCell::new(Vec::new());
    let fail = |what: &str, detail: String| {
        let mut f = failures.borrow_mut();
        if f.len() < 5 {
            f.push(format!("{what}: {}", detail.trim()));
        }
    };

    // (a) No request in flight: kerneld is killed, the shim runs once it
    // is dead, against the same shim with no queue at all.
    let mut paths_a = Paths::default();
    let bad_a = Cell::new(0usize);
    let mut n_a = 0usize;
    // The first pair warms the caches and is not reported.
    let warm = Cell::new(true);
    let (killed, no_queue) = interleave(
        s.reps,
        1,
        || {
            n_a += 1;
            let kd = start(&format!("a{n_a}"), "");
            let mut kd = kd;
            let t0 = Instant::now();
            kd.sigkill();
            kd.reap();
            let r = run_once(&mut shim(kd.key));
            let ns = t0.elapsed().as_nanos() as u64;
            let l = log();
            if warm.get() {
                return ns;
            }
            paths_a.count(&l);
            if !matches!(r, Ok(ref r) if r.status == 0) {
                bad_a.set(bad_a.get() + 1);
                fail("(a) after SIGKILL", format!("{r:?} {l}"));
            }
            ns
        },
        || {
            let r = run_once(&mut shim(free_key()));
            if warm.replace(false) {
                return 0;
            }
            match r {
                Ok(r) if r.status == 0 => r.ns,
                other => {
                    bad_a.set(bad_a.get() + 1);
                    fail("(a) no queue", format!("{other:?} {}", log()));
                    other.map_or(0, |r| r.ns)
                }
            }
        },
    );
    proc::progress();
    let mut bad_a = bad_a.get();

    // The same, the shim started at once after the kill: it races the
    // death, as a request_module() right after it would.
    let mut paths_race = Paths::default();
    let mut race = Vec::with_capacity(s.reps);
    for i in 0..s.reps {
        let kd = start(&format!("r{i}"), "");
        let t0 = Instant::now();
        kd.sigkill();
        let r = run_once(&mut shim(kd.key));
        race.push(t0.elapsed().as_nanos() as u64);
        let l = log();
        paths_race.count(&l);
        if !matches!(r, Ok(ref r) if r.status == 0) {
            bad_a += 1;
            fail("(a) racing the death", format!("{r:?} {l}"));
        }
    }

    // (b) A request in flight: kerneld stopped, so the shim sees it live,
    // sends and waits; then SIGKILL.
    let mut paths_b = Paths::default();
    let mut bad_b = 0usize;
    let mut in_flight = Vec::with_capacity(s.reps);
    for i in 0..s.reps {
        let kd = start(&format!("b{i}"), "");
        if let Err(e) = kd.pause() {
            proc::abort(&e);
        }
        let q = Queue::open(kd.key).unwrap_or_else(|e| proc::abort(&e.to_string()));
        let mut child = shim(kd.key)
            .spawn()
            .unwrap_or_else(|e| proc::abort(&format!("{}: {e}", s.shim.display())));
        let end = Instant::now() + Duration::from_secs(10);
        while q.stat().map_or(0, |st| st.messages) == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_micros(500));
        }
        let t0 = Instant::now();
        kd.sigkill();
        let st = child.wait();
        in_flight.push(t0.elapsed().as_nanos() as u64);
        proc::progress();
        let l = log();
        paths_b.count(&l);
        let left = q.stat().map_or(0, |st| st.messages);
        if !matches!(st, Ok(ref st) if st.success()) || left != 0 {
            bad_b += 1;
            fail(
                "(b) in flight",
                format!("{st:?}, {left} messages left in the queue; {l}"),
            );
        }
    }

    // (c) A SIGKILL in a flood from clients that never read their replies
    // (tests/src/flood.rs, 16 KiB queue): the successor starts at once on
    // the same key and state directory.
    // Each flood run comes after the same kill and successor with nothing
    // in the queue: the successor's own start, for comparison.
    let successor_answers = |kd: &mut Kerneld| -> Result<(), String> {
        kd.respawn()?;
        let r = Client::connect(kd.key)
            .and_then(|c| {
                c.request(
                    MsgType::Status,
                    b"",
                    Client::tool_reply_id(),
                    Some(Duration::from_secs(30)),
                )
            })
            .map_err(|e| e.to_string())?;
        proc::progress();
        match r.status {
            0 => Ok(()),
            n => Err(format!("status {n}: {}", r.text_lossy())),
        }
    };
    let mut idle = Vec::new();
    let mut successor = Vec::new();
    let mut takeovers = Vec::new();
    for i in 0..s.flood_reps {
        let mut kd = start(&format!("c-idle{i}"), "# defaults\n");
        let t0 = Instant::now();
        kd.sigkill();
        match successor_answers(&mut kd) {
            Ok(()) => idle.push(t0.elapsed().as_nanos() as u64),
            Err(e) => fail("(c) successor on an empty queue", e),
        }
        drop(kd);

        let mut kd = start(&format!("c{i}"), "# defaults\n");
        let q = Queue::open(kd.key).unwrap_or_else(|e| proc::abort(&e.to_string()));
        let _ = q.set_max_bytes(16384);
        let seed = 0x6b64_0000 + i as u64;
        if let Err(e) = flood(&q, s.flood_messages, seed, Duration::from_secs(120)) {
            proc::abort(&format!("flood: {e}"));
        }
        let t0 = Instant::now();
        kd.sigkill();
        // The flood's senders die with it: what they left is what the
        // successor finds.  (A flood going on at full rate would time the
        // flood, not the successor: the status request competes with it
        // for every free byte of the queue.)
        let answer = successor_answers(&mut kd);
        let ns = t0.elapsed().as_nanos() as u64;
        let klog = std::fs::read_to_string(&kd.log).unwrap_or_default();
        match answer {
            Ok(()) => successor.push(ns),
            Err(e) => fail("(c) successor in a flood", e),
        }
        match parse_takeover(&klog) {
            Some(t) => takeovers.push(t),
            None => fail(
                "(c) no takeover line in the successor's log",
                klog.lines().rev().take(3).collect::<Vec<_>>().join(" / "),
            ),
        }
    }

    let (sk, sr, sn, sf, ss, si) = (
        Summary::of(&killed),
        Summary::of(&race),
        Summary::of(&no_queue),
        Summary::of(&in_flight),
        Summary::of(&successor),
        Summary::of(&idle),
    );
    let ratio = Ratio::of(&no_queue, &killed);
    let goal_ns = GOAL.as_nanos() as f64;
    let met_a = sk.n > 0 && bad_a == 0 && sk.max.max(sr.max) <= goal_ns;
    let met_b = sf.n > 0 && bad_b == 0 && sf.max <= goal_ns;
    let ms = |x: f64| num(x / 1e6);
    let mut t = Table::new(&["figure", "median ms", "p99 ms", "max ms", "n", "goal"]);
    t.row(vec![
        "(a) SIGKILL, then the shim once kerneld is dead: from the kill to the shim's exit, served by the fallback"
            .into(),
        ms(sk.median),
        ms(sk.p99),
        ms(sk.max),
        sk.n.to_string(),
        format!("≤ 1.5 s: {}", verdict(met_a)),
    ]);
    t.row(vec![
        "(a) the same shim with no queue at all: the fallback's own cost".into(),
        ms(sn.median),
        ms(sn.p99),
        ms(sn.max),
        sn.n.to_string(),
        String::new(),
    ]);
    t.row(vec![
        format!(
            "(a) after SIGKILL / no queue (pairwise; ratio of medians {})",
            num(ratio.of_medians)
        ),
        format!("**{}x**", num(ratio.pairwise_median)),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "(a) the shim started at once after the kill, racing the death".into(),
        ms(sr.median),
        ms(sr.p99),
        ms(sr.max),
        sr.n.to_string(),
        String::new(),
    ]);
    t.row(vec![
        "(b) a request in flight (kerneld stopped, then SIGKILLed): from the kill to the shim's exit"
            .into(),
        ms(sf.median),
        ms(sf.p99),
        ms(sf.max),
        sf.n.to_string(),
        format!("≤ 1.5 s: {}", verdict(met_b)),
    ]);
    t.row(vec![
        format!(
            "(c) SIGKILL after {} messages of a flood, successor started at once: from the kill to its first status answer",
            s.flood_messages
        ),
        ms(ss.median),
        ms(ss.p99),
        ms(ss.max),
        ss.n.to_string(),
        "(for information)".into(),
    ]);
    t.row(vec![
        "(c) the same with nothing in the queue: the successor's own start".into(),
        ms(si.median),
        ms(si.p99),
        ms(si.max),
        si.n.to_string(),
        String::new(),
    ]);
    let mut notes = vec![
        format!(
            "the shim runs as the kernel runs it (`kerneld-modprobe -q -- NAME`, bare environment) with `shim-fallback = modprobe` and `shim-modprobe = {}`; (a) interleaves the two sides: a kerneld started on a private key is killed, and the shim starts once it is reaped (or at once, racing its death: the fourth row); the times count from the kill",
            true_bin().display()
        ),
        format!(
            "the shim saw no live kerneld before sending / took its request back after sending: (a) once kerneld is dead {}/{} times, (a) racing the death {}/{}: a shim started within a millisecond or so of the kill can still find the dying kerneld's instance lock held (the lock goes with the last of its files, closed late in the exit of its last thread), so it sends and learns of the death at its next look, up to {w} ms later; (b) {}/{}: the kill follows the send at once, so nearly a whole period of {w} ms passes before the shim looks again, then the take-back and the exec",
            paths_a.unsent,
            paths_a.taken_back,
            paths_race.unsent,
            paths_race.taken_back,
            paths_b.unsent,
            paths_b.taken_back,
            w = kmod_ipc::WATCH_PERIOD.as_millis()
        ),
        format!(
            "(c) the flood as in section 7 (16 KiB queue, a third of the messages asking for replies nobody reads), killed with kerneld: the successor (same key, state directory and configuration) finds the queue full of what its predecessor had not read and the replies nobody reads; the status request waits for room in the queue like any sender"
        ),
    ];
    if !takeovers.is_empty() {
        notes.push(format!(
            "(c) the successor's takeover, per run (messages waiting: requests dropped + replies dropped, kept, lost): {}",
            takeovers
                .iter()
                .map(|t| format!(
                    "{}: {} + {}, {}, {}",
                    t.waiting, t.dropped_requests, t.dropped_replies, t.kept, t.lost
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let failures = failures.into_inner();
    if !failures.is_empty() {
        notes.push(format!(
            "{} failed runs (a: {bad_a}, b: {bad_b}, c: {}): {}",
            bad_a + bad_b + 2 * s.flood_reps - successor.len() - idle.len(),
            2 * s.flood_reps - successor.len() - idle.len(),
            failures.join("; ")
        ));
    }
    Section {
        title: "9. Failover: kerneld killed with SIGKILL".into(),
        table: t.render(),
        notes,
        json: json!({
            "goal_ms": GOAL.as_millis() as u64,
            "after_sigkill": {
                "shim_after_kill": sk.json_us(),
                "shim_no_queue": sn.json_us(),
                "shim_racing_the_death": sr.json_us(),
                "paths_racing_the_death": paths_race.json(),
                "ratio_after_kill_over_no_queue": ratio.json(),
                "paths": paths_a.json(),
                "failed": bad_a,
                "goal_met": met_a,
            },
            "in_flight": {
                "shim_after_kill": sf.json_us(),
                "paths": paths_b.json(),
                "failed": bad_b,
                "goal_met": met_b,
            },
            "flood": {
                "messages_before_kill": s.flood_messages,
                "queue_capacity_bytes": 16384,
                "kill_to_status_answer": ss.json_us(),
                "kill_to_status_answer_empty_queue": si.json_us(),
                "takeovers": takeovers.iter().map(|t| json!({
                    "waiting": t.waiting,
                    "dropped_requests": t.dropped_requests,
                    "dropped_replies": t.dropped_replies,
                    "kept": t.kept,
                    "lost": t.lost,
                })).collect::<Vec<_>>(),
            },
            "failures": failures,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_line() {
        let log = "kerneld: started\nkerneld[12]: took over kerneld's own queue at key 0x6b620001 (id 7, 412 messages waiting); dropped 130 requests whose senders stopped waiting and 95 replies nobody reads, kept 187\n";
        assert_eq!(
            parse_takeover(log),
            Some(Takeover {
                waiting: 412,
                dropped_requests: 130,
                dropped_replies: 95,
                kept: 187,
                lost: 0
            })
        );
        let lost = log.replace(
            "kept 187",
            "kept 187, 3 lost (the queue filled up meanwhile)",
        );
        assert_eq!(parse_takeover(&lost).map(|t| t.lost), Some(3));
        assert_eq!(parse_takeover("kerneld: started\n"), None);
    }

    #[test]
    fn fallback_paths_from_the_shim_log() {
        let mut p = Paths::default();
        p.count("kerneld (pid 9) is not running; its queue ... ; running /bin/true\n");
        p.count("kerneld (pid 9) is not running; its queue ...; request taken back; running /bin/true\n");
        p.count("request for \"x\": timed out\n");
        assert_eq!(
            p,
            Paths {
                unsent: 1,
                taken_back: 1,
                other: 1
            }
        );
    }
}

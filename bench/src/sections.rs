//! The measurements taken on this machine: the floor, the decision,
//! throughput, the storm, memory and size.  Every comparison interleaves
//! its two sides (A B, then B A, ...) so both see the same load.

use crate::proc::{self, fresh_id, run_once, Conn, Echo, Kerneld, Run};
use crate::stats::{round3, us, Ratio, Summary};
use crate::table::{num, verdict, Table};
use kmod_ipc::MsgType;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// One section's results: a table and its figures.
pub struct Section {
    pub title: String,
    pub table: String,
    pub notes: Vec<String>,
    pub json: Value,
}

/// Run `a` and `b` `n` times each, interleaved, after `warm` untimed
/// rounds; each closure returns the nanoseconds of its own operation.
pub fn interleave(
    n: usize,
    warm: usize,
    mut a: impl FnMut() -> u64,
    mut b: impl FnMut() -> u64,
) -> (Vec<u64>, Vec<u64>) {
    for _ in 0..warm {
        a();
        b();
    }
    let (mut va, mut vb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if i % 2 == 0 {
            va.push(a());
            vb.push(b());
        } else {
            vb.push(b());
            va.push(a());
        }
    }
    (va, vb)
}

fn timed_rtt(c: &Conn, t: MsgType, text: &[u8], id: i64, check: &mut dyn FnMut(i64, &[u8])) -> u64 {
    let t0 = Instant::now();
    let r = c.rtt(t, text, id, None);
    let ns = t0.elapsed().as_nanos() as u64;
    match r {
        Ok((status, reply)) => check(status, &reply),
        Err(e) => proc::abort(&format!("round trip failed: {e}")),
    }
    ns
}

// -------------------------------------------------------------------------
// 1. The floor

pub fn floor(kd: &Kerneld, reps: usize) -> Section {
    let echo = Echo::start().unwrap_or_else(|e| proc::abort(&e));
    let raw = Conn::open(echo.key).unwrap_or_else(|e| proc::abort(&e));
    let kc = kd.conn();
    let (ia, ib) = (fresh_id(), fresh_id());
    let (mut bad_raw, mut bad) = (0usize, 0usize);
    let mut measure = |reps: usize| {
        interleave(
            reps,
            reps / 10,
            || {
                timed_rtt(&raw, MsgType::Status, b"", ia, &mut |s, _| {
                    bad_raw += (s != 0) as usize
                })
            },
            || {
                timed_rtt(&kc, MsgType::Status, b"", ib, &mut |s, t| {
                    if s != 0 || !t.starts_with(b"Version") {
                        bad += 1;
                    }
                })
            },
        )
    };
    // Placement decides much of a round trip (a wake-up on another CPU
    // costs more than one on the same), and left to the scheduler the two
    // servers land differently from run to run.  So both are measured in
    // the same placements: client and servers on two CPUs, then all on one.
    let cpus = proc::all_cpus();
    let last = *cpus.last().unwrap_or(&0);
    let place = |client: usize, servers: usize| {
        proc::pin(0, &[client]);
        proc::pin(echo.pid(), &[servers]);
        proc::pin(kd.pid(), &[servers]);
    };
    let mut runs = Vec::new();
    if cpus.len() > 1 {
        place(0, last);
        let (a, b) = measure(reps);
        runs.push((
            format!(", client on CPU 0, servers on CPU {last}"),
            "two_cpus",
            a,
            b,
        ));
    }
    place(last, last);
    let (a, b) = measure(reps);
    runs.push((format!(", all on CPU {last}"), "one_cpu", a, b));
    for pid in [0, echo.pid(), kd.pid()] {
        proc::pin(pid, &cpus);
    }
    drop(echo);
    let bad = bad + bad_raw;
    let mut t = Table::new(&["round trip", "median µs", "p99 µs", "n"]);
    let mut doc = json!({ "bad_replies": bad, "goal_max_ratio": 2.0 });
    let mut goal = true;
    for (label, key, a, b) in &runs {
        let key: &str = key;
        let (sa, sb) = (Summary::of(a), Summary::of(b));
        let r = Ratio::of(a, b);
        let met = r.pairwise_median <= 2.0;
        goal &= met;
        t.row(vec![
            format!("raw SysV request/reply (echo process, kmod-ipc){label}"),
            num(us(sa.median)),
            num(us(sa.p99)),
            sa.n.to_string(),
        ]);
        t.row(vec![
            format!("kerneld status (type 255, text \"\"){label}"),
            num(us(sb.median)),
            num(us(sb.p99)),
            sb.n.to_string(),
        ]);
        t.row(vec![
            format!(
                "**kerneld / raw**{label} (pairwise median; ratio of medians {})",
                num(r.of_medians)
            ),
            format!("**{}x**", num(r.pairwise_median)),
            "goal ≤ 2x".into(),
            verdict(met),
        ]);
        doc[key] = json!({
            "raw": sa.json_us(),
            "kerneld_status": sb.json_us(),
            "ratio_kerneld_over_raw": r.json(),
            "goal_met": met,
        });
    }
    doc["goal_met"] = json!(goal);
    let mut notes = vec![
        "each pair: one request on the raw queue, one to kerneld (order alternating), from one client thread; the echo process receives, decodes and replies as kerneld's receiver does; processes pinned as stated, since where the scheduler happens to put each server otherwise decides more than the servers do".to_string(),
    ];
    if bad > 0 {
        notes.push(format!("{bad} replies had an unexpected status or text"));
    }
    Section {
        title: "1. The floor: one round trip on a SysV queue".into(),
        table: t.render(),
        notes,
        json: doc,
    }
}

// -------------------------------------------------------------------------
// 2. The decision

pub struct Modprobe {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub kver: String,
}

impl Modprobe {
    pub fn command(&self, name: &str, config: Option<&Path>) -> Command {
        self.command_with(name, config, true)
    }

    /// With `dry_run` false modprobe tries the insertion too: only where
    /// the running kernel cannot load modules at all.
    fn command_with(&self, name: &str, config: Option<&Path>, dry_run: bool) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-d").arg(&self.root).arg("-S").arg(&self.kver);
        if let Some(d) = config {
            c.arg("-C").arg(d);
        }
        if dry_run {
            c.arg("-n");
        }
        c.arg("-q").arg(name);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

/// One row of the decision table.
struct Case<'a> {
    label: &'a str,
    name: &'a str,
    kd: &'a Kerneld,
    /// modprobe -C DIR (the blacklist case).
    modprobe_conf: Option<&'a Path>,
    /// Prime the daemon's negative cache first.
    cached: bool,
    /// modprobe without -n (it attempts the insertion, as kerneld does).
    insert: bool,
}

pub struct Decision {
    pub section: Section,
    pub shim_runs: Vec<Run>,
    pub modprobe_runs: Vec<Run>,
}

#[allow(clippy::too_many_arguments)]
pub fn decision(
    fair: &Kerneld,
    blacklist: &Kerneld,
    cached: &Kerneld,
    blacklist_dir: &Path,
    modprobe: &Modprobe,
    shim: &Path,
    shim_conf: &Path,
    reps: usize,
) -> Decision {
    let case = |label, name, kd, modprobe_conf, cached, insert| Case {
        label,
        name,
        kd,
        modprobe_conf,
        cached,
        insert,
    };
    let unknown = "kdbench-no-such-module";
    let mut cases = vec![
        case("unknown name", unknown, fair, None, false, false),
        case(
            "blacklisted alias (`blacklist dummy`)",
            "rtnl-link-dummy",
            blacklist,
            Some(blacklist_dir),
            false,
            false,
        ),
        case(
            "name that resolves, insertion refused (no module support here)",
            "rtnl-link-dummy",
            fair,
            None,
            false,
            false,
        ),
        // What the VM sees for a module already loaded: the name resolves
        // and nothing is inserted.  Here the module is built into the
        // Debian kernel (modules.builtin), the one kind of "already in the
        // kernel" this kernel without module support can show.
        case(
            "name that resolves to a module already in the kernel (`crypto-sha256-generic`: built-in sha256_generic)",
            "crypto-sha256-generic",
            fair,
            None,
            false,
            false,
        ),
        case(
            "unknown name, negative cache (default config)",
            unknown,
            cached,
            None,
            true,
            false,
        ),
    ];
    // Without module support in this kernel, modprobe can try the
    // insertion too, harmlessly (reading and decompressing dummy.ko.xz
    // first); kerneld refuses it as soon as the name is resolved.
    if !Path::new("/proc/modules").exists() {
        cases.push(case(
            "name that resolves, against modprobe without -n (which attempts the insertion)",
            "rtnl-link-dummy",
            fair,
            None,
            false,
            true,
        ));
    }
    let mut t = Table::new(&[
        "request-module",
        "kerneld µs, median (p99)",
        "exec modprobe µs, median (p99)",
        "speed-up (pairwise)",
        "goal ≥ 50x",
        "kerneld back to back µs",
        "speed-up back to back",
        "speed-up, not pinned",
    ]);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut modprobe_runs = Vec::new();
    let cpus = proc::all_cpus();
    let one = *cpus.last().unwrap_or(&0);
    for c in &cases {
        let conn = c.kd.conn();
        let id = fresh_id();
        let mut replies: Vec<(i64, String)> = Vec::new();
        let mut statuses: Vec<i32> = Vec::new();
        if c.cached {
            let _ = conn.rtt(MsgType::RequestModule, c.name.as_bytes(), id, None);
        }
        // First as the scheduler places everything...
        let (sched_a, sched_b) = interleave(
            reps / 2,
            3,
            || {
                timed_rtt(
                    &conn,
                    MsgType::RequestModule,
                    c.name.as_bytes(),
                    id,
                    &mut |_, _| {},
                )
            },
            || {
                run_once(&mut modprobe.command_with(c.name, c.modprobe_conf, !c.insert))
                    .unwrap_or_else(|e| proc::abort(&format!("modprobe: {e}")))
                    .ns
            },
        );
        let sched = Ratio::of(&sched_a, &sched_b);
        // ...then with the bench, kerneld and every modprobe on one CPU,
        // the same placement for every sample.
        proc::pin(0, &[one]);
        proc::pin(c.kd.pid(), &[one]);
        let cached_before = c.kd.counter("cached");
        let (a, b) = interleave(
            reps,
            3,
            || {
                timed_rtt(
                    &conn,
                    MsgType::RequestModule,
                    c.name.as_bytes(),
                    id,
                    &mut |s, t| {
                        if replies.len() < 2 || !replies.iter().any(|(rs, _)| *rs == s) {
                            replies.push((s, String::from_utf8_lossy(t).into_owned()));
                        }
                    },
                )
            },
            || {
                let r = run_once(&mut modprobe.command_with(c.name, c.modprobe_conf, !c.insert))
                    .unwrap_or_else(|e| proc::abort(&format!("modprobe: {e}")));
                if !statuses.contains(&r.status) {
                    statuses.push(r.status);
                }
                modprobe_runs.push(r);
                r.ns
            },
        );
        let cached_hits = c.kd.counter("cached") - cached_before;
        // The same requests back to back, with no exec in between to
        // evict kerneld from the caches (what a burst of requests sees).
        let warm: Vec<u64> = (0..(reps * 5).max(500))
            .map(|_| {
                timed_rtt(
                    &conn,
                    MsgType::RequestModule,
                    c.name.as_bytes(),
                    id,
                    &mut |_, _| {},
                )
            })
            .collect();
        let sw = Summary::of(&warm);
        proc::pin(0, &cpus);
        proc::pin(c.kd.pid(), &cpus);
        let (sa, sb) = (Summary::of(&a), Summary::of(&b));
        let r = Ratio::of(&a, &b);
        let goal = r.pairwise_median >= 50.0;
        t.row(vec![
            c.label.into(),
            format!("{} ({})", num(us(sa.median)), num(us(sa.p99))),
            format!("{} ({})", num(us(sb.median)), num(us(sb.p99))),
            format!("**{}x**", num(r.pairwise_median)),
            verdict(goal),
            num(us(sw.median)),
            format!("{}x", num(sb.median / sw.median)),
            format!("{}x", num(sched.pairwise_median)),
        ]);
        let reply = replies.first().cloned().unwrap_or_default();
        notes.push(format!(
            "{}: kerneld answers status {} \"{}\"; modprobe exits {:?}{}",
            c.label,
            reply.0,
            reply.1.trim(),
            statuses,
            if c.cached {
                format!(
                    "; {cached_hits} of {} answers came from the negative cache",
                    reps + 3
                )
            } else {
                String::new()
            }
        ));
        rows.push(json!({
            "case": c.label,
            "name": c.name,
            "kerneld": sa.json_us(),
            "kerneld_back_to_back": sw.json_us(),
            "not_pinned": {
                "kerneld": Summary::of(&sched_a).json_us(),
                "modprobe_exec": Summary::of(&sched_b).json_us(),
                "speedup_modprobe_over_kerneld": sched.json(),
            },
            "speedup_back_to_back_of_medians": round3(sb.median / sw.median),
            "modprobe_exec": sb.json_us(),
            "speedup_modprobe_over_kerneld": r.json(),
            "goal_min_speedup": 50.0,
            "goal_met": goal,
            "kerneld_replies": replies.iter().map(|(s, t)| json!({"status": s, "text": t})).collect::<Vec<_>>(),
            "modprobe_exit_statuses": statuses,
            "cached_answers": c.cached.then_some(cached_hits),
            "negative_cache": if c.cached { "default (5 s, 30/min)" } else { "off (negative-cache = 0, rate-limit = 0)" },
            "modprobe_dry_run": !c.insert,
        }));
    }

    // The whole host path: exec the shim (as the kernel would) against
    // exec'ing modprobe, for the unknown name.
    let mut shim_runs = Vec::new();
    let mut shim_status = Vec::new();
    let mut mp_runs = Vec::new();
    let shim_reps = reps.max(10);
    let (a, b) = interleave(
        shim_reps,
        3,
        || {
            let r = run_once(
                Command::new(shim)
                    .args(["-q", "--", "kdbench-no-such-module"])
                    .env("KERNELD_KEY", fair.key.to_string())
                    .env("KERNELD_CONFIG", shim_conf)
                    .env("KERNELD_SHIM_LOG", "/dev/null")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .unwrap_or_else(|e| proc::abort(&format!("shim: {e}")));
            if !shim_status.contains(&r.status) {
                shim_status.push(r.status);
            }
            shim_runs.push(r);
            r.ns
        },
        || {
            let r = run_once(&mut modprobe.command("kdbench-no-such-module", None))
                .unwrap_or_else(|e| proc::abort(&format!("modprobe: {e}")));
            mp_runs.push(r);
            r.ns
        },
    );
    modprobe_runs.extend(mp_runs);
    let (sa, sb) = (Summary::of(&a), Summary::of(&b));
    let r = Ratio::of(&a, &b);
    t.row(vec![
        "unknown name, exec kerneld-modprobe (the shim) → kerneld, not pinned".into(),
        format!("{} ({})", num(us(sa.median)), num(us(sa.p99))),
        format!("{} ({})", num(us(sb.median)), num(us(sb.p99))),
        format!("{}x", num(r.pairwise_median)),
        "(for information)".into(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    notes.push(format!(
        "the shim exits {shim_status:?} (1: not loaded); its exec is what the kernel pays per request_module()"
    ));
    notes.insert(
        0,
        format!("pairs: one kerneld request, one exec of modprobe (order alternating), so every kerneld request follows an exec that has evicted it from the CPU caches, as a sporadic request from the kernel does; the bench, kerneld and modprobe all on CPU {one} (placement otherwise varies from run to run: the last column is a shorter run left to the scheduler); \"back to back\": the same request repeated with nothing in between"),
    );
    Decision {
        section: Section {
            title: "2. The decision: kerneld against exec'ing `modprobe -n -q`".into(),
            table: t.render(),
            notes,
            json: json!({
                "cases": rows,
                "shim_exec_vs_modprobe_exec": {
                    "shim": sa.json_us(),
                    "modprobe": sb.json_us(),
                    "speedup_modprobe_over_shim": r.json(),
                    "shim_exit_statuses": shim_status,
                },
            }),
        },
        shim_runs,
        modprobe_runs,
    }
}

// -------------------------------------------------------------------------
// 3. Throughput

#[derive(Default)]
struct ClientResult {
    lat: Vec<u64>,
    sent: u64,
    ok: u64,
    wrong: u64,
    lost: u64,
    id: i64,
}

pub fn throughput(kd: &Kerneld, levels: &[usize], dur: Duration) -> (Section, Value) {
    use std::os::unix::thread::JoinHandleExt;
    let mut t = Table::new(&[
        "clients",
        "requests",
        "requests/s",
        "p50 µs",
        "p99 µs",
        "lost",
        "answered twice",
        "wrong answer",
    ]);
    let mut rows = Vec::new();
    let mut hwm_after = json!(null);
    for &n in levels {
        let barrier = Arc::new(Barrier::new(n + 1));
        let give_up = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for th in 0..n {
            let (barrier, give_up) = (barrier.clone(), give_up.clone());
            let conn = kd.conn();
            let h = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut r = ClientResult {
                        id: fresh_id(),
                        ..Default::default()
                    };
                    barrier.wait();
                    let end = Instant::now() + dur;
                    let mut name = String::new();
                    while Instant::now() < end {
                        name.clear();
                        use std::fmt::Write;
                        let _ = write!(name, "kdbench-{th}-{}", r.sent);
                        r.sent += 1;
                        let t0 = Instant::now();
                        match conn.rtt(
                            MsgType::RequestModule,
                            name.as_bytes(),
                            r.id,
                            Some(&give_up),
                        ) {
                            Ok((status, text)) => {
                                r.lat.push(t0.elapsed().as_nanos() as u64);
                                // The answer names the module it is about:
                                // "kdbench-3-17: not found".
                                let head = text.split(|&c| c == b':').next().unwrap_or(&[]);
                                if status == 1 && head == name.as_bytes() {
                                    r.ok += 1;
                                } else {
                                    r.wrong += 1;
                                }
                            }
                            Err(_) => {
                                r.lost += 1;
                                break;
                            }
                        }
                    }
                    r
                })
                .expect("spawn a client thread");
            handles.push(h);
        }
        barrier.wait();
        let t0 = Instant::now();
        // Clients finish their last request after the deadline; one still
        // waiting 15 s later has lost its reply.
        let grace = t0 + dur + Duration::from_secs(15);
        while handles.iter().any(|h| !h.is_finished()) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(5));
        }
        give_up.store(true, Ordering::SeqCst);
        while handles.iter().any(|h| !h.is_finished()) {
            for h in handles.iter().filter(|h| !h.is_finished()) {
                kmod_ipc::interrupt_thread(h.as_pthread_t());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = t0.elapsed();
        let results: Vec<ClientResult> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // A second answer to any request would be waiting on its id now.
        std::thread::sleep(Duration::from_millis(200));
        let conn = kd.conn();
        let twice: usize = results.iter().map(|r| conn.count_waiting(r.id)).sum();
        let lat: Vec<u64> = results.iter().flat_map(|r| r.lat.iter().copied()).collect();
        let sent: u64 = results.iter().map(|r| r.sent).sum();
        let ok: u64 = results.iter().map(|r| r.ok).sum();
        let wrong: u64 = results.iter().map(|r| r.wrong).sum();
        let lost: u64 = results.iter().map(|r| r.lost).sum();
        let s = Summary::of(&lat);
        // Requests per second over the clients' measured window.
        let rate = lat.len() as f64 / elapsed.as_secs_f64().max(dur.as_secs_f64());
        t.row(vec![
            n.to_string(),
            sent.to_string(),
            format!("{rate:.0}"),
            num(us(s.median)),
            num(us(s.p99)),
            lost.to_string(),
            twice.to_string(),
            wrong.to_string(),
        ]);
        rows.push(json!({
            "clients": n,
            "seconds": round3(elapsed.as_secs_f64()),
            "sent": sent,
            "answered": lat.len(),
            "answered_correctly": ok,
            "wrong_answer": wrong,
            "lost": lost,
            "answered_twice": twice,
            "requests_per_second": rate.round(),
            "latency": s.json_us(),
        }));
        if n == *levels.iter().max().unwrap_or(&0) {
            hwm_after =
                json!({"clients": n, "vm_hwm_kb": kd.vm("VmHWM"), "vm_rss_kb": kd.vm("VmRSS")});
        }
    }
    (
        Section {
            title: "3. Throughput: concurrent clients, each asking for its own unknown names".into(),
            table: t.render(),
            notes: vec![format!(
                "each client thread has its own reply id and asks for `kdbench-<thread>-<n>` for {} s; an answer counts as correct when its status is 1 and its text starts with the requested name; kerneld with negative-cache = 0, rate-limit = 0",
                dur.as_secs_f64()
            )],
            json: json!({ "levels": rows }),
        },
        hwm_after,
    )
}

// -------------------------------------------------------------------------
// 4. The storm

pub fn storm(
    kd: &Kerneld,
    count_file: &Path,
    clients: usize,
    runs: usize,
    action: Duration,
) -> Section {
    let mut t = Table::new(&[
        "run",
        "requests",
        "answers",
        "actions run",
        "merged (counter)",
        "total ms",
        "over the action",
    ]);
    let mut rows = Vec::new();
    let mut all_ok = true;
    for run in 1..=runs {
        let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |s| s.lines().count());
        let actions_before = lines(count_file);
        let merged_before = kd.counter("merged");
        let barrier = Arc::new(Barrier::new(clients + 1));
        let mut handles = Vec::new();
        for _ in 0..clients {
            let (barrier, conn) = (barrier.clone(), kd.conn());
            handles.push(
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let id = fresh_id();
                        barrier.wait();
                        let sent = Instant::now();
                        let r = conn.rtt(MsgType::RequestModule, b"kdbench-slow", id, None);
                        (r, sent, Instant::now())
                    })
                    .unwrap_or_else(|e| proc::abort(&format!("cannot start storm thread: {e}"))),
            );
        }
        barrier.wait();
        let mut answers = 0;
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        let mut texts: Vec<String> = Vec::new();
        for h in handles {
            let (r, sent, done) = h.join().unwrap();
            first = Some(first.map_or(sent, |f| f.min(sent)));
            if let Ok((status, text)) = r {
                let text = String::from_utf8_lossy(&text).into_owned();
                if status == 0 && text.contains("kdbench-slow") {
                    answers += 1;
                }
                if !texts.contains(&text) && texts.len() < 3 {
                    texts.push(text);
                }
            }
            last = Some(last.map_or(done, |l| l.max(done)));
        }
        // From the first request sent to the last answer received.
        let total = match (first, last) {
            (Some(f), Some(l)) => l - f,
            _ => Duration::ZERO,
        };
        proc::progress();
        let actions = lines(count_file) - actions_before;
        let merged = kd.counter("merged") - merged_before;
        let ok = actions == 1 && answers == clients && merged == clients as u64 - 1;
        all_ok &= ok;
        let over = total.as_secs_f64() * 1000.0 - action.as_secs_f64() * 1000.0;
        t.row(vec![
            run.to_string(),
            clients.to_string(),
            answers.to_string(),
            actions.to_string(),
            merged.to_string(),
            format!("{:.0}", total.as_secs_f64() * 1000.0),
            format!("+{over:.0} ms"),
        ]);
        rows.push(json!({
            "run": run,
            "requests": clients,
            "answers": answers,
            "actions": actions,
            "merged": merged,
            "total_ms": round3(total.as_secs_f64() * 1000.0),
            "over_action_ms": round3(over),
            "reply_texts": texts,
            "ok": ok,
        }));
    }
    let cap = kd.json()["queue"]["max_bytes"].as_u64();
    Section {
        title: format!("4. The storm: {clients} concurrent identical requests"),
        table: t.render(),
        notes: vec![
            format!(
                "{clients} threads each send `kdbench-slow` on their own reply id at once; modprobe.d says `install kdbench-slow` = append a line to a file, then sleep {} s; one action, {} merged, every request answered: {}",
                action.as_secs_f64(),
                clients - 1,
                if all_ok { "yes" } else { "NO" }
            ),
            format!(
                "queue capacity {} bytes (kerneld could not raise it to 4 MiB without CAP_SYS_RESOURCE): senders wait in msgsnd for room",
                cap.map_or("?".into(), |c| c.to_string())
            ),
        ],
        json: json!({ "runs": rows, "all_ok": all_ok, "queue_capacity_bytes": cap }),
    }
}

// -------------------------------------------------------------------------
// 6. Memory and size

pub fn memory(
    mixed: &Kerneld,
    after_throughput: &Value,
    shim: &Path,
    shim_runs: &[Run],
    modprobe_runs: &[Run],
) -> Section {
    // A mix of requests on a fresh daemon: status, the JSON document,
    // unknown names, names that resolve, a blacklist-free alias.
    let c = mixed.conn();
    let id = fresh_id();
    let mix: &[(MsgType, &str)] = &[
        (MsgType::Status, ""),
        (MsgType::Status, "json"),
        (MsgType::RequestModule, "rtnl-link-dummy"),
        (MsgType::RequestModule, "net-pf-10"),
        (MsgType::RequestModule, "fs-binfmt_misc"),
        (MsgType::RequestModule, "char-major-10-200"),
        (MsgType::RequestModule, "crypto-crc32c"),
        (MsgType::RequestModule, "net-pf-2-proto-132"),
        (MsgType::RequestModule, "rtnl-link-bridge"),
        (MsgType::ReleaseModule, "dummy"),
        (MsgType::Status, "policy"),
    ];
    for round in 0..20 {
        for (t, text) in mix {
            let _ = c.rtt(*t, text.as_bytes(), id, None);
        }
        for i in 0..50 {
            let _ = c.rtt(
                MsgType::RequestModule,
                format!("kdbench-mem-{round}-{i}").as_bytes(),
                id,
                None,
            );
        }
    }
    let hwm = mixed.vm("VmHWM").unwrap_or(0);
    let rss = mixed.vm("VmRSS").unwrap_or(0);
    let size = std::fs::metadata(shim).map_or(0, |m| m.len());
    let shim_rss = Summary::of(
        &shim_runs
            .iter()
            .map(|r| r.maxrss_kb as u64)
            .collect::<Vec<_>>(),
    );
    let mp_rss = Summary::of(
        &modprobe_runs
            .iter()
            .map(|r| r.maxrss_kb as u64)
            .collect::<Vec<_>>(),
    );
    let goal = hwm <= 8 * 1024;
    let mut t = Table::new(&["figure", "value", "goal"]);
    t.row(vec![
        "kerneld peak RSS (VmHWM), Debian 6.12 index open, after 1200 mixed requests".into(),
        format!("{hwm} kB ({:.1} MiB)", hwm as f64 / 1024.0),
        format!("≤ 8 MiB: {}", verdict(goal)),
    ]);
    t.row(vec![
        "kerneld RSS (VmRSS) then".into(),
        format!("{rss} kB"),
        String::new(),
    ]);
    if let Some(h) = after_throughput["vm_hwm_kb"].as_u64() {
        t.row(vec![
            format!(
                "kerneld peak RSS after {} concurrent clients (one libkmod context per concurrent action)",
                after_throughput["clients"]
            ),
            format!("{h} kB ({:.1} MiB)", h as f64 / 1024.0),
            String::new(),
        ]);
    }
    t.row(vec![
        "kerneld-modprobe (shim) size on disk, release build".into(),
        format!("{size} bytes ({} KiB)", size / 1024),
        String::new(),
    ]);
    t.row(vec![
        "kerneld-modprobe peak RSS (wait4 ru_maxrss), median / max".into(),
        format!("{:.0} / {:.0} kB", shim_rss.median, shim_rss.max),
        String::new(),
    ]);
    t.row(vec![
        "modprobe -n -q peak RSS, median / max (for comparison)".into(),
        format!("{:.0} / {:.0} kB", mp_rss.median, mp_rss.max),
        String::new(),
    ]);
    Section {
        title: "6. Memory and size".into(),
        table: t.render(),
        notes: Vec::new(),
        json: json!({
            "kerneld_vm_hwm_kb_after_mix": hwm,
            "kerneld_vm_rss_kb_after_mix": rss,
            "goal_max_hwm_kb": 8192,
            "goal_met": goal,
            "kerneld_after_throughput": after_throughput,
            "shim_size_bytes": size,
            "shim_maxrss_kb": {"median": shim_rss.median, "max": shim_rss.max, "n": shim_rss.n},
            "modprobe_maxrss_kb": {"median": mp_rss.median, "max": mp_rss.max, "n": mp_rss.n},
        }),
    }
}

//! `kerneld-bench compare OLD NEW`: two kerneld binaries side by side, for
//! the before/after figures of an optimisation.  Both daemons run at once
//! on their own queues; every request goes to one then the other (order
//! alternating), so both see the same machine load.

use crate::proc::{self, fresh_id, Conn, Kerneld, KerneldSpec};
use crate::sections::interleave;
use crate::stats::{us, Ratio, Summary};
use crate::table::{num, Table};
use kmod_ipc::MsgType;
use std::path::Path;
use std::time::{Duration, Instant};

fn rtt_ns(c: &Conn, t: MsgType, text: &[u8], id: i64) -> u64 {
    let t0 = Instant::now();
    if let Err(e) = c.rtt(t, text, id, None) {
        proc::abort(&format!("compare: {e}"));
    }
    t0.elapsed().as_nanos() as u64
}

/// Requests per second of `clients` threads asking for unique unknown names.
fn rate(kd: &Kerneld, clients: usize, dur: Duration, tag: &str) -> f64 {
    let start = Instant::now() + Duration::from_millis(50);
    let handles: Vec<_> = (0..clients)
        .map(|th| {
            let conn = kd.conn();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let id = fresh_id();
                while Instant::now() < start {
                    std::hint::spin_loop();
                }
                let mut n = 0u64;
                while Instant::now() < start + dur {
                    let name = format!("kdcmp-{tag}-{th}-{n}");
                    let _ = conn.rtt(MsgType::RequestModule, name.as_bytes(), id, None);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / dur.as_secs_f64()
}

/// One request after an exec of /bin/true, which evicts the daemon from
/// the CPU caches as a sporadic request from the kernel finds it.
fn cold_rtt_ns(c: &Conn, t: MsgType, text: &[u8], id: i64) -> u64 {
    if let Err(e) = std::process::Command::new("/bin/true").status() {
        proc::abort(&format!("compare: /bin/true: {e}"));
    }
    rtt_ns(c, t, text, id)
}

/// `storm` on `kd`: (total ms, actions, merged, answers == clients).
fn storm(kd: &Kerneld, count_file: &Path) -> (f64, u64, u64, bool) {
    let s = crate::sections::storm(kd, count_file, 1000, 1, Duration::from_millis(500));
    let r = &s.json["runs"][0];
    (
        r["total_ms"].as_f64().unwrap_or(f64::NAN),
        r["actions"].as_u64().unwrap_or(0),
        r["merged"].as_u64().unwrap_or(0),
        r["answers"].as_u64() == Some(1000),
    )
}

/// One latency row: medians and p99 of both daemons, and their ratio.
fn latency_row(t: &mut Table, label: String, old: &[u64], new: &[u64]) {
    let (sa, sb, r) = (Summary::of(old), Summary::of(new), Ratio::of(old, new));
    t.row(vec![
        label,
        num(us(sa.median)),
        num(us(sa.p99)),
        num(us(sb.median)),
        num(us(sb.p99)),
        format!(
            "{} (of medians {})",
            num(r.pairwise_median),
            num(r.of_medians)
        ),
    ]);
}

pub fn run(
    old: &Path,
    new: &Path,
    module_dir: &Path,
    work: &Path,
    conf_dir: &Path,
    count_file: &Path,
    reps: usize,
) {
    let fair = "negative-cache = 0\nrate-limit = 0\n";
    let default = "# defaults\n";
    let start = |name: &str, bin: &Path, config: &str, d: Option<&Path>| {
        Kerneld::start(&KerneldSpec {
            name,
            bin,
            work,
            module_dir,
            config,
            modprobe_d: d,
        })
        .unwrap_or_else(|e| proc::abort(&e))
    };
    let pairs = [
        (
            start("old-fair", old, fair, None),
            start("new-fair", new, fair, None),
        ),
        (
            start("old-cached", old, default, None),
            start("new-cached", new, default, None),
        ),
        (
            start("old-bl", old, fair, Some(conf_dir)),
            start("new-bl", new, fair, Some(conf_dir)),
        ),
    ];
    let cases: [(&str, usize, MsgType, &str); 6] = [
        ("status (type 255, \"\")", 0, MsgType::Status, ""),
        (
            "unknown name",
            0,
            MsgType::RequestModule,
            "kdbench-no-such-module",
        ),
        (
            "unknown name, negative cache",
            1,
            MsgType::RequestModule,
            "kdbench-no-such-module",
        ),
        (
            "blacklisted alias",
            2,
            MsgType::RequestModule,
            "rtnl-link-dummy",
        ),
        (
            "name that resolves (insertion refused: ENOSYS)",
            0,
            MsgType::RequestModule,
            "rtnl-link-dummy",
        ),
        (
            "name already in the kernel (crypto-sha256-generic, built in)",
            0,
            MsgType::RequestModule,
            "crypto-sha256-generic",
        ),
    ];
    let mut t = Table::new(&[
        "case",
        "old median µs",
        "old p99 µs",
        "new median µs",
        "new p99 µs",
        "new / old (pairwise)",
    ]);
    for (label, p, ty, text) in cases {
        let (a, b) = (pairs[p].0.conn(), pairs[p].1.conn());
        let (ia, ib) = (fresh_id(), fresh_id());
        let (va, vb) = interleave(
            reps,
            reps / 10 + 3,
            || rtt_ns(&a, ty, text.as_bytes(), ia),
            || rtt_ns(&b, ty, text.as_bytes(), ib),
        );
        latency_row(&mut t, label.into(), &va, &vb);
    }
    {
        // Cold: fewer pairs, each request after an exec.
        let (a, b) = (pairs[0].0.conn(), pairs[0].1.conn());
        let (ia, ib) = (fresh_id(), fresh_id());
        let text = b"kdbench-no-such-module";
        let n = (reps / 10).max(20);
        let (va, vb) = interleave(
            n,
            3,
            || cold_rtt_ns(&a, MsgType::RequestModule, text, ia),
            || cold_rtt_ns(&b, MsgType::RequestModule, text, ib),
        );
        latency_row(
            &mut t,
            format!("unknown name, cold (after an exec; {n} pairs)"),
            &va,
            &vb,
        );
    }
    for (clients, p) in [(1, 0), (8, 0), (64, 0), (8, 1)] {
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        for round in 0..4 {
            let d = Duration::from_millis(700);
            if round % 2 == 0 {
                ra.push(rate(&pairs[p].0, clients, d, &format!("a{round}")));
                rb.push(rate(&pairs[p].1, clients, d, &format!("b{round}")));
            } else {
                rb.push(rate(&pairs[p].1, clients, d, &format!("b{round}")));
                ra.push(rate(&pairs[p].0, clients, d, &format!("a{round}")));
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|x, y| x.total_cmp(y));
            (v[1] + v[2]) / 2.0
        };
        let (ma, mb) = (med(&mut ra), med(&mut rb));
        t.row(vec![
            format!(
                "throughput, {clients} clients{} (requests/s)",
                if p == 1 { ", default config" } else { "" }
            ),
            format!("{ma:.0}"),
            String::new(),
            format!("{mb:.0}"),
            String::new(),
            format!("{} (rate new / old)", num(mb / ma)),
        ]);
    }
    // The storm: 1000 identical requests for one slow install command,
    // old then new then new then old.
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for round in 0..2 {
        if round == 0 {
            sa.push(storm(&pairs[2].0, count_file));
            sb.push(storm(&pairs[2].1, count_file));
        } else {
            sb.push(storm(&pairs[2].1, count_file));
            sa.push(storm(&pairs[2].0, count_file));
        }
    }
    let show = |v: &[(f64, u64, u64, bool)]| {
        v.iter()
            .map(|(ms, actions, merged, all)| {
                format!(
                    "{ms:.0} ms, {actions} action, {merged} merged{}",
                    if *all { "" } else { ", NOT all answered" }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mean = |v: &[(f64, u64, u64, bool)]| v.iter().map(|r| r.0).sum::<f64>() / v.len() as f64;
    t.row(vec![
        "1000-request storm (500 ms action; 2 runs each)".into(),
        show(&sa),
        String::new(),
        show(&sb),
        String::new(),
        format!("{} (mean total new / old)", num(mean(&sb) / mean(&sa))),
    ]);
    let hwm = |k: &Kerneld| k.vm("VmHWM").map_or("?".into(), |v| format!("{v} kB"));
    t.row(vec![
        "peak RSS (VmHWM): fair / default / blacklist daemons".into(),
        pairs
            .iter()
            .map(|p| hwm(&p.0))
            .collect::<Vec<_>>()
            .join(" / "),
        String::new(),
        pairs
            .iter()
            .map(|p| hwm(&p.1))
            .collect::<Vec<_>>()
            .join(" / "),
        String::new(),
        String::new(),
    ]);
    for (a, b) in &pairs {
        eprintln!(
            "VmHWM {}: {:?} kB, {}: {:?} kB",
            a.name,
            a.vm("VmHWM"),
            b.name,
            b.vm("VmHWM")
        );
    }
    println!(
        "old: {}\nnew: {}\n\n{}",
        old.display(),
        new.display(),
        t.render()
    );
}

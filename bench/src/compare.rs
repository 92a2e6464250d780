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

pub fn run(old: &Path, new: &Path, module_dir: &Path, work: &Path, conf_dir: &Path, reps: usize) {
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
        let (sa, sb, r) = (Summary::of(&va), Summary::of(&vb), Ratio::of(&va, &vb));
        t.row(vec![
            label.into(),
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

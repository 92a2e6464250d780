//! Section 5, the kernel path in a QEMU guest (TCG: only ratios mean
//! anything).  bench/vm/run.sh boots the test harness's guest with
//! bench/vm/guest.sh, which times request_module() calls served in turn by
//! the stock modprobe and by kerneld-modprobe + kerneld.

use crate::proc;
use crate::sections::Section;
use crate::stats::{Ratio, Summary};
use crate::table::{num, verdict, Table};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What the guest printed.
#[derive(Debug, Default)]
pub struct Guest {
    /// (measure, helper) -> samples in ns, in round order.
    pub samples: BTreeMap<(String, String), Vec<u64>>,
    pub info: Vec<(String, String)>,
    pub errors: Vec<String>,
    pub finished: bool,
}

/// Parse the guest's VMBENCH lines.
pub fn parse(text: &str) -> Guest {
    let mut g = Guest::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("VMBENCH ") else {
            continue;
        };
        let mut w = rest.split_whitespace();
        match w.next() {
            Some("S") => {
                let (Some(m), Some(h)) = (w.next(), w.next()) else {
                    continue;
                };
                if h.starts_with("warm") {
                    continue;
                }
                g.samples
                    .entry((m.to_string(), h.to_string()))
                    .or_default()
                    .extend(w.filter_map(|x| x.parse::<u64>().ok()));
            }
            Some("INFO") => {
                let k = w.next().unwrap_or("").to_string();
                g.info.push((k, w.collect::<Vec<_>>().join(" ")));
            }
            Some("E") => g.errors.push(w.collect::<Vec<_>>().join(" ")),
            Some("END") => g.finished = true,
            _ => {}
        }
    }
    g
}

pub fn run(repo: &Path, bin_dir: &Path, rounds: usize, per: usize, shim_variants: bool) -> Section {
    eprintln!(
        "kerneld-bench: 5. booting the VM ({rounds} rounds of {per}); this takes a few minutes under TCG"
    );
    match boot(repo, bin_dir, "6.12", rounds, per, shim_variants, None) {
        Ok(g) => section(&g),
        Err(s) => s,
    }
}

/// The kernels of section 5b: our patched 6.12 and 7.3 (kernel/build.sh
/// --series), as bench/vm/run.sh names them.
pub const SHIM_SERIES: [&str; 2] = ["shim", "shim-7.3"];

/// Section 5b on `series` (one of SHIM_SERIES), with 2 CPUs, where the
/// in-kernel sender is measured against both helpers in the same boot.
pub fn run_shim(repo: &Path, bin_dir: &Path, series: &str, rounds: usize, per: usize) -> Section {
    eprintln!(
        "kerneld-bench: 5b. booting our {} kernel with the in-kernel sender ({rounds} rounds of {per}); the first time kernel/build.sh builds it (5 to 20 minutes)",
        shim_kernel(series)
    );
    match boot(repo, bin_dir, series, rounds, per, false, None) {
        Ok(g) => section_shim(&g, series),
        Err(mut s) => {
            s.title = shim_title(series);
            s
        }
    }
}

/// The kernel series of a SHIM_SERIES name.
fn shim_kernel(series: &str) -> &str {
    series.strip_prefix("shim-").unwrap_or("6.12")
}

/// Boot bench/vm/run.sh on `series` with `guest` in place of
/// bench/vm/guest.sh, and parse what the guest printed; Err: why not.
pub fn boot_guest(
    repo: &Path,
    bin_dir: &Path,
    series: &str,
    rounds: usize,
    per: usize,
    guest: &Path,
) -> Result<Guest, String> {
    boot(repo, bin_dir, series, rounds, per, false, Some(guest)).map_err(|s| {
        let mut why = s.notes.join("; ");
        if let Some(e) = s.json["errors"].as_array().filter(|e| !e.is_empty()) {
            why.push_str(&format!("; guest errors: {e:?}"));
        }
        why
    })
}

/// Boot bench/vm/run.sh on `series` and parse what the guest printed.
fn boot(
    repo: &Path,
    bin_dir: &Path,
    series: &str,
    rounds: usize,
    per: usize,
    shim_variants: bool,
    guest: Option<&Path>,
) -> Result<Guest, Section> {
    let script = repo.join("bench/vm/run.sh");
    let mut child = match Command::new("bash")
        .arg(&script)
        .args(
            guest
                .map(|g| ["--guest".as_ref(), g.as_os_str()])
                .into_iter()
                .flatten(),
        )
        .args(["--series", series])
        .args([
            "--rounds",
            &rounds.to_string(),
            "--per-round",
            &per.to_string(),
        ])
        .args(shim_variants.then_some("--shim-variants"))
        .env("KERNELD_BIN_DIR", bin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Err(failed(&format!("cannot run {}: {e}", script.display()))),
    };
    let out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    // The guest makes no round trips here: keep the watchdog quiet.
    let status = loop {
        proc::progress();
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(500)),
            Err(e) => return Err(failed(&format!("waiting for the VM: {e}"))),
        }
    };
    let text = reader.join().unwrap_or_default();
    let g = parse(&text);
    if !status.success() || !g.finished {
        let mut s = failed(&format!("the VM bench did not finish ({status})"));
        s.json["errors"] = json!(g.errors);
        return Err(s);
    }
    Ok(g)
}

fn shim_title(series: &str) -> String {
    format!(
        "5b. The in-kernel sender: request_module() posted by the kernel itself (our {}, QEMU guest)",
        shim_kernel(series)
    )
}

/// Goal of issue 25: the in-kernel sender within 1.5x the floor for an
/// unknown name.
const FLOOR_GOAL: f64 = 1.5;

/// Section 5b from what the guest printed: the Rust shim against stock
/// modprobe and kerneld-modprobe as the usermode helper.
pub fn section_shim(g: &Guest, series: &str) -> Section {
    let info: serde_json::Map<String, Value> =
        g.info.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let get_info = |k: &str| {
        info.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let clocksource = get_info("clocksource");
    if clocksource == "jiffies" || clocksource == "?" {
        let mut s = failed(&format!(
            "the guest ran on clocksource {clocksource}: its times are 4 ms steps, the run is discarded"
        ));
        s.title = shim_title(series);
        return s;
    }
    let mut t = Table::new(&[
        "in the guest (TCG)",
        "stock modprobe helper, median ms (p99)",
        "kerneld-modprobe helper, median ms (p99)",
        "in-kernel sender, median ms (p99)",
        "stock / in-kernel (pairwise)",
        "kerneld-modprobe / in-kernel (pairwise)",
        "goal",
        "floor, median ms",
        "stock / floor: the most any path could gain",
        "in-kernel / floor (pairwise): kerneld's own share",
    ]);
    let ms = |s: &Summary| format!("{} ({})", num(s.median / 1e6), num(s.p99 / 1e6));
    let mut rows = Vec::new();
    for (measure, label, goal_stock, goal_kd, goal_floor) in [
        (
            "unknown",
            "request_module() of an unknown name",
            Some(100.0),
            Some(50.0),
            Some(FLOOR_GOAL),
        ),
        (
            "dummy-cycle",
            "load/unload cycle of dummy (link add, del, rmmod)",
            Some(2.0),
            None,
            None,
        ),
        (
            "dummy-load",
            "… of which the load (link add)",
            None,
            None,
            None,
        ),
    ] {
        let get = |h: &str| {
            g.samples
                .get(&(measure.to_string(), h.to_string()))
                .cloned()
                .unwrap_or_default()
        };
        let (stock, kd, shim, floor) = (get("stock"), get("kerneld"), get("shim"), get("floor"));
        if stock.is_empty() || kd.is_empty() || shim.is_empty() {
            continue;
        }
        let (ss, sk, sh) = (Summary::of(&stock), Summary::of(&kd), Summary::of(&shim));
        // Ratio::of(a, b) is b / a: the speed-up is a / b, its inverse.
        let (rs, rk) = (Ratio::of(&shim, &stock), Ratio::of(&shim, &kd));
        let met_s = goal_stock.map(|gl| rs.pairwise_median >= gl);
        let met_k = goal_kd.map(|gl| rk.pairwise_median >= gl);
        let mut goal = Vec::new();
        if let (Some(gl), Some(m)) = (goal_stock, met_s) {
            goal.push(format!("≥ {gl}x vs stock: {}", verdict(m)));
        }
        if let (Some(gl), Some(m)) = (goal_kd, met_k) {
            goal.push(format!("≥ {gl}x vs kerneld-modprobe: {}", verdict(m)));
        }
        let (floor_cells, floor_doc, met_f) = if floor.is_empty() {
            (
                [String::new(), String::new(), String::new()],
                Value::Null,
                None,
            )
        } else {
            let (sf, rf) = (Summary::of(&floor), Ratio::of(&floor, &stock));
            // Pair by pair, so that a slow stretch of the host weighs on
            // both sides of each ratio alike.
            let over = Ratio::of(&floor, &shim);
            let met = goal_floor.map(|gl| over.pairwise_median <= gl);
            (
                [
                    num(sf.median / 1e6),
                    format!("{}x", num(rf.pairwise_median)),
                    format!("{}x", num(over.pairwise_median)),
                ],
                json!({
                    "time": sf.json_us(),
                    "speedup_over_stock": rf.json(),
                    "in_kernel_over_floor": over.json(),
                    "goal_max_over_floor": goal_floor,
                    "goal_met": met,
                }),
                met,
            )
        };
        if let (Some(gl), Some(m)) = (goal_floor, met_f) {
            goal.push(format!("≤ {gl}x the floor: {}", verdict(m)));
        }
        let mut cells = vec![
            label.to_string(),
            ms(&ss),
            ms(&sk),
            ms(&sh),
            format!("**{}x**", num(rs.pairwise_median)),
            format!("**{}x**", num(rk.pairwise_median)),
            if goal.is_empty() {
                "(for information)".into()
            } else {
                goal.join("; ")
            },
        ];
        cells.extend(floor_cells);
        t.row(cells);
        rows.push(json!({
            "measure": measure,
            "what": label,
            "stock_modprobe_helper": ss.json_us(),
            "kerneld_modprobe_helper": sk.json_us(),
            "in_kernel_sender": sh.json_us(),
            "speedup_over_stock": rs.json(),
            "speedup_over_kerneld_modprobe": rk.json(),
            "goal_min_speedup_over_stock": goal_stock,
            "goal_min_speedup_over_kerneld_modprobe": goal_kd,
            "goal_met_stock": met_s,
            "goal_met_kerneld_modprobe": met_k,
            "floor": floor_doc,
        }));
    }
    let (fo_kd, fo_shim) = (failover_of(g, "kerneld"), failover_of(g, "shim"));
    if fo_kd.is_some() || fo_shim.is_some() {
        let cell =
            |f: &Option<(Summary, bool, Value)>| f.as_ref().map_or(String::new(), |f| ms(&f.0));
        let mut goal = Vec::new();
        if let Some(f) = &fo_kd {
            goal.push(("kerneld-modprobe", f.1));
        }
        if let Some(f) = &fo_shim {
            goal.push(("in-kernel", f.1));
        }
        t.row(vec![
            FAILOVER_LABEL.into(),
            String::new(),
            cell(&fo_kd),
            cell(&fo_shim),
            String::new(),
            String::new(),
            failover_goal(&goal),
        ]);
    }
    let mut notes = vec![format!(
        "same guest, same boot (QEMU TCG, {} vCPUs, clocksource {clocksource}): each round serves the kernel with each in turn (the first one rotates): kerneld_shim.ko loaded with /proc/sys/kernel/modprobe naming nothing, then unloaded with the stock modprobe and kerneld-modprobe as the helper; guest: {}, {}, {}",
        get_info("cpus"),
        get_info("kernel"),
        get_info("kmod"),
        get_info("kerneld"),
    )];
    notes.push(
        "floor: what no path can go below, in the same rounds. An unknown name posted by the in-kernel sender to a queue whose bare C loop (bench/vm/kdvmbench.c serve) answers \"not loaded\" at once, with no lookup, policy, log or record; a dummy cycle that begins with finit_module() of dummy.ko, so that the link add finds the module in place and nobody is asked. What the floor leaves of a dummy cycle, the link's creation and deletion and the module's removal, is the kernel's own work and the same for every path".into(),
    );
    notes.push(format!(
        "the in-kernel sender got {} answers (from kerneld and the floor's loop) and fell back {} times (a fallback would have failed: no helper)",
        get_info("shim-answered"),
        get_info("shim-fell-back"),
    ));
    notes.push(
        "speed-ups are medians of the per-pair ratios (helper time / in-kernel time, pair by pair)"
            .into(),
    );
    if fo_kd.is_some() || fo_shim.is_some() {
        notes.push(format!(
            "{}; the in-kernel sender's read_wait_ms: {}",
            failover_note(g),
            get_info("shim-read-wait-ms")
        ));
    }
    if !g.errors.is_empty() {
        notes.push(format!(
            "{} errors in the guest: {}",
            g.errors.len(),
            g.errors.join("; ")
        ));
    }
    Section {
        title: shim_title(series),
        table: t.render(),
        notes,
        json: json!({
            "rows": rows,
            "failover": {
                "goal_ms": FAILOVER_GOAL_MS,
                "kerneld_modprobe_helper": fo_kd.map(|f| f.2),
                "in_kernel_sender": fo_shim.map(|f| f.2),
            },
            "guest": info,
            "errors": g.errors,
        }),
    }
}

/// The failover goal (issue 22): from SIGKILL to a request served by the
/// fallback.
const FAILOVER_GOAL_MS: f64 = 1500.0;

const FAILOVER_LABEL: &str = "failover: SIGKILL to a request served by the fallback (link add of dummy, /sbin/modprobe loads it)";

/// The failover samples of one path (`kdvmbench failover`): its summary,
/// whether every sample met the goal, and its JSON.
fn failover_of(g: &Guest, helper: &str) -> Option<(Summary, bool, Value)> {
    let get = |m: &str| g.samples.get(&(m.to_string(), helper.to_string()));
    let v = get("failover").filter(|v| !v.is_empty())?;
    let s = Summary::of(v);
    let met = s.max / 1e6 <= FAILOVER_GOAL_MS;
    let dead = get("failover-dead").map(|d| Summary::of(d).json_us());
    Some((
        s,
        met,
        json!({ "kill_to_served": s.json_us(), "kill_to_dead": dead, "goal_met": met }),
    ))
}

fn failover_goal(parts: &[(&str, bool)]) -> String {
    format!(
        "every sample ≤ 1.5 s: {}",
        parts
            .iter()
            .map(|(who, met)| format!("{who} {}", verdict(*met)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn failover_note(g: &Guest) -> String {
    let reps = g
        .info
        .iter()
        .find(|(k, _)| k == "failover-reps")
        .map_or("?", |(_, v)| v.as_str());
    // Under TCG the death itself takes a share worth telling.
    let dead: Vec<String> = [("kerneld", "kerneld-modprobe"), ("shim", "in-kernel")]
        .iter()
        .filter_map(|(h, who)| {
            let d = g
                .samples
                .get(&("failover-dead".to_string(), h.to_string()))?;
            Some(format!("{} ms ({who})", num(Summary::of(d).median / 1e6)))
        })
        .collect();
    format!(
        "{FAILOVER_LABEL}: after the rounds, {reps} times per path, a kerneld started on the key (taking over the queue its predecessor left) is SIGKILLed; as soon as it is dead (pidfd; median {}) the link add asks for rtnl-link-dummy, timed from the kill to the link's creation (bench/vm/kdvmbench.c failover). The in-kernel sender takes its request back unread after read_wait_ms and runs /sbin/modprobe as the usermode helper; kerneld-modprobe sees no live kerneld and execs /sbin/modprobe (shim-fallback = modprobe, only for this measure)",
        dead.join(", ")
    )
}

fn failed(why: &str) -> Section {
    eprintln!("kerneld-bench: {why}");
    Section {
        title: "5. The kernel path in a VM".into(),
        table: String::new(),
        notes: vec![format!("not measured: {why}")],
        json: json!({ "error": why }),
    }
}

/// Other builds of the shim the guest may have measured (bench/vm/run.sh
/// --shim-variants): helper label, column title, JSON name, note.
const SHIM_VARIANTS: [(&str, &str, &str, &str); 2] = [
    (
        "kerneld-dynamic",
        "dynamic PIE shim",
        "dynamic_pie_shim",
        "dynamic PIE shim: the plain `cargo build --release` of kerneld-modprobe (ld.so, libc.so.6 and libgcc_s mapped and linked at every exec)",
    ),
    (
        "kerneld-static",
        "static non-PIE shim",
        "static_non_pie_shim",
        "static non-PIE shim: linked `-C target-feature=+crt-static -C relocation-model=static`, without ASLR; TCG translates the code of every exec of position-independent code anew (ASLR puts it elsewhere each time), which a fixed address avoids",
    ),
];

pub fn section(g: &Guest) -> Section {
    let variants: Vec<_> = SHIM_VARIANTS
        .iter()
        .filter(|(h, ..)| g.samples.keys().any(|(_, got)| got == h))
        .collect();
    let mut head: Vec<String> = [
        "in the guest (TCG)",
        "stock modprobe median ms (p99)",
        "kerneld median ms (p99)",
        "kerneld / stock (pairwise)",
        "goal",
    ]
    .map(String::from)
    .to_vec();
    for (_, title, ..) in &variants {
        head.push(format!("kerneld, {title}, median ms (p99)"));
        head.push(format!("{title} / stock (pairwise)"));
    }
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head);
    let mut rows = Vec::new();
    let ms = |s: &Summary| format!("{} ({})", num(s.median / 1e6), num(s.p99 / 1e6));
    for (measure, label, goal) in [
        ("unknown", "request_module() of an unknown name", Some(0.5)),
        (
            "dummy-cycle",
            "load/unload cycle of dummy (link add, del, rmmod)",
            Some(1.0),
        ),
        ("dummy-load", "… of which the load (link add)", None),
    ] {
        let get = |h: &str| {
            g.samples
                .get(&(measure.to_string(), h.to_string()))
                .cloned()
                .unwrap_or_default()
        };
        let (stock, kd) = (get("stock"), get("kerneld"));
        if stock.is_empty() || kd.is_empty() {
            continue;
        }
        let (ss, sk) = (Summary::of(&stock), Summary::of(&kd));
        let r = Ratio::of(&stock, &kd);
        let met = goal.map(|g| r.pairwise_median <= g);
        let mut row = vec![
            label.to_string(),
            ms(&ss),
            ms(&sk),
            format!(
                "**{}** (of medians {})",
                num(r.pairwise_median),
                num(r.of_medians)
            ),
            match (goal, met) {
                (Some(gl), Some(m)) => format!("≤ {gl}: {}", verdict(m)),
                _ => "(for information)".into(),
            },
        ];
        let mut doc = json!({
            "measure": measure,
            "what": label,
            "stock_modprobe": ss.json_us(),
            "kerneld": sk.json_us(),
            "ratio_kerneld_over_stock": r.json(),
            "goal_max_ratio": goal,
            "goal_met": met,
        });
        for (helper, _, name, _) in &variants {
            let v = get(helper);
            if v.is_empty() {
                row.extend(["".into(), "".into()]);
                continue;
            }
            let (sv, rv) = (Summary::of(&v), Ratio::of(&stock, &v));
            row.push(ms(&sv));
            row.push(format!(
                "{} (of medians {})",
                num(rv.pairwise_median),
                num(rv.of_medians)
            ));
            doc[format!("kerneld_{name}")] = sv.json_us();
            doc[format!("ratio_{name}_over_stock")] = rv.json();
        }
        t.row(row);
        rows.push(doc);
    }
    let fo = failover_of(g, "kerneld");
    if let Some((sf, met, _)) = &fo {
        let mut row = vec![
            FAILOVER_LABEL.to_string(),
            String::new(),
            ms(sf),
            String::new(),
            failover_goal(&[("kerneld-modprobe", *met)]),
        ];
        row.extend(variants.iter().flat_map(|_| [String::new(), String::new()]));
        t.row(row);
    }
    let info: Value = g
        .info
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let mut notes = vec![format!(
        "same guest, same boot (QEMU TCG, 1 vCPU): each round sets /proc/sys/kernel/modprobe to each helper in turn (the first one rotates) and times every call in the guest (CLOCK_MONOTONIC around the netlink request that makes the kernel call request_module()); guest: {}, {}, {}",
        info["kernel"].as_str().unwrap_or("?"),
        info["kmod"].as_str().unwrap_or("?"),
        info["kerneld"].as_str().unwrap_or("?"),
    )];
    notes.push(format!(
        "kerneld counted {} request_module ({} succeeded, {} failed, {} cached); shim-fallback = fail, so every kerneld figure was served by kerneld",
        info["kerneld-request_module"].as_str().unwrap_or("?"),
        info["kerneld-succeeded"].as_str().unwrap_or("?"),
        info["kerneld-failed"].as_str().unwrap_or("?"),
        info["kerneld-cached"].as_str().unwrap_or("?"),
    ));
    notes.push("kerneld: the shim as installed (scripts/build-release.sh), a static PIE: no dynamic loader, loaded at a random address".into());
    for (.., note) in &variants {
        notes.push(note.to_string());
    }
    if fo.is_some() {
        notes.push(failover_note(g));
    }
    if !g.errors.is_empty() {
        notes.push(format!(
            "{} errors in the guest: {}",
            g.errors.len(),
            g.errors.join("; ")
        ));
    }
    Section {
        title: "5. The kernel path: request_module() in a QEMU guest".into(),
        table: t.render(),
        notes,
        json: json!({
            "rows": rows,
            "failover": {
                "goal_ms": FAILOVER_GOAL_MS,
                "kerneld_modprobe_helper": fo.map(|f| f.2),
            },
            "guest": info,
            "errors": g.errors,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_lines() {
        let g = parse(
            "VMBENCH INFO kernel 6.12\nVMBENCH S unknown stock 10 20\nVMBENCH S unknown warm-stock 1\n\
             VMBENCH S unknown stock 30\nVMBENCH E dummy kerneld: oops\nnoise\nVMBENCH END\n",
        );
        assert_eq!(g.samples[&("unknown".into(), "stock".into())], [10, 20, 30]);
        assert_eq!(g.samples.len(), 1);
        assert_eq!(g.errors, ["dummy kerneld: oops"]);
        assert_eq!(g.info, [("kernel".to_string(), "6.12".to_string())]);
        assert!(g.finished);
    }

    #[test]
    fn shim_section_ratios_and_jiffies() {
        let text = "VMBENCH INFO clocksource tsc\nVMBENCH INFO cpus 2\n\
             VMBENCH S unknown stock 20000000 22000000\n\
             VMBENCH S unknown kerneld 10000000 11000000\n\
             VMBENCH S unknown shim 100000 110000\nVMBENCH END\n";
        let s = section_shim(&parse(text), "shim");
        let row = &s.json["rows"][0];
        assert_eq!(row["speedup_over_stock"]["pairwise_median"], 200.0);
        assert_eq!(
            row["speedup_over_kerneld_modprobe"]["pairwise_median"],
            100.0
        );
        assert_eq!(row["goal_met_stock"], true);
        assert!(s.table.contains("200"), "{}", s.table);
        assert_eq!(row["floor"], Value::Null, "no floor measured here");
        let with_floor = text.replace(
            "VMBENCH END",
            "VMBENCH S unknown floor 40000 44000\nVMBENCH END",
        );
        let s = section_shim(&parse(&with_floor), "shim");
        let floor = &s.json["rows"][0]["floor"];
        assert_eq!(floor["speedup_over_stock"]["pairwise_median"], 500.0);
        assert!(s.table.contains("500.0x"), "{}", s.table);
        // 100/40 and 110/44, pair by pair: 2.5x the floor, over the goal.
        assert_eq!(floor["in_kernel_over_floor"]["pairwise_median"], 2.5);
        assert_eq!(floor["goal_met"], false);
        assert!(s.table.contains("≤ 1.5x the floor: "), "{}", s.table);
        assert!(s.title.contains("our 6.12"), "{}", s.title);
        let s = section_shim(
            &parse(&with_floor.replace("40000 44000", "80000 88000")),
            "shim-7.3",
        );
        assert_eq!(s.json["rows"][0]["floor"]["goal_met"], true, "1.25x");
        assert!(s.title.contains("our 7.3"), "{}", s.title);
        let with_failover = text.replace(
            "VMBENCH END",
            "VMBENCH S failover shim 1100000000\nVMBENCH S failover-dead shim 2000000\n\
             VMBENCH S failover shim 1600000000\nVMBENCH S failover kerneld 90000000\n\
             VMBENCH INFO failover-reps 2\nVMBENCH END",
        );
        let s = section_shim(&parse(&with_failover), "shim");
        let fo = &s.json["failover"];
        assert_eq!(fo["in_kernel_sender"]["kill_to_served"]["n"], 2);
        assert_eq!(fo["in_kernel_sender"]["goal_met"], false, "1.6 s > 1.5 s");
        assert_eq!(fo["in_kernel_sender"]["kill_to_dead"]["n"], 1);
        assert_eq!(fo["kerneld_modprobe_helper"]["goal_met"], true);
        assert!(
            s.table.contains("kerneld-modprobe met, in-kernel MISSED"),
            "{}",
            s.table
        );
        let s = section(&parse(&with_failover));
        assert_eq!(
            s.json["failover"]["kerneld_modprobe_helper"]["goal_met"],
            true
        );
        assert!(
            s.table.contains("SIGKILL to a request served"),
            "{}",
            s.table
        );
        let s = section_shim(&parse(&text.replace("tsc", "jiffies")), "shim");
        assert!(s.notes[0].contains("discarded"), "{:?}", s.notes);
    }
}

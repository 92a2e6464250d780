//! Section 10, module-loads: what the BPF LSM program adds to a module
//! load, in a QEMU guest of Debian's 6.12 (bench/vm/modload-guest.sh:
//! dummy loaded by finit_module() and by init_module() with the program
//! off, observing and enforcing, round after round), and the time to
//! judge the whole module tree, here on the host (the guest's tree has a
//! few files only).

use crate::sections::Section;
use crate::stats::{round3, us, Ratio, Summary};
use crate::table::{num, Table};
use crate::vm;
use kerneld::modload::verdicts;
use kerneld::policy::{Policy, Rule};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

const TITLE: &str =
    "10. Module loads through the BPF LSM: the hook's cost and judging the tree (module-loads)";

fn failed(why: &str) -> Section {
    eprintln!("kerneld-bench: {why}");
    Section {
        title: TITLE.into(),
        table: String::new(),
        notes: vec![format!("not measured: {why}")],
        json: json!({ "error": why }),
    }
}

/// Judge `module_dir` as kerneld does at start (SHA-256 of every module
/// file, the module rules; no provenance rule, so no file is opened by
/// libkmod): one untimed run to warm the page cache, then `runs` timed.
fn judge_tree(module_dir: &Path, runs: usize) -> Result<(Summary, usize, u64), String> {
    let mut policy = Policy::default();
    policy.set_rules(vec![
        Rule::parse(&["deny", "module", "dccp*"], "bench").map_err(|e| e.to_string())?
    ]);
    let bytes: u64 = verdicts::module_files(module_dir)
        .map_err(|e| format!("{}: {e}", module_dir.display()))?
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut files = 0;
    let mut samples = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        let v = verdicts::compute(module_dir, &policy, &mut |_| None)
            .map_err(|e| format!("judging {}: {e}", module_dir.display()))?;
        let ns = t.elapsed().as_nanos() as u64;
        files = v.files;
        if i > 0 {
            samples.push(ns);
        }
    }
    Ok((Summary::of(&samples), files, bytes))
}

/// Median of the per-pair differences b[i] - a[i], in ns.
fn pairwise_delta(a: &[u64], b: &[u64]) -> f64 {
    let mut d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| *y as f64 - *x as f64)
        .collect();
    d.sort_by(|x, y| x.total_cmp(y));
    match d.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => d[n / 2],
        n => (d[n / 2 - 1] + d[n / 2]) / 2.0,
    }
}

pub fn run(repo: &Path, bin_dir: &Path, module_dir: &Path, rounds: usize, per: usize) -> Section {
    eprintln!("kerneld-bench: 10. module-loads: judging the module tree, then the VM ({rounds} rounds of {per})");
    let tree = judge_tree(module_dir, 5);
    let guest = match vm::boot_guest(
        repo,
        bin_dir,
        "6.12",
        rounds,
        per,
        &repo.join("bench/vm/modload-guest.sh"),
    ) {
        Ok(g) => g,
        Err(e) => return failed(&e),
    };
    section(&guest, &tree)
}

fn section(g: &vm::Guest, tree: &Result<(Summary, usize, u64), String>) -> Section {
    let info = |k: &str| {
        g.info
            .iter()
            .find(|(key, _)| key == k)
            .map_or_else(|| "?".to_string(), |(_, v)| v.clone())
    };
    let clocksource = info("clocksource");
    if clocksource == "jiffies" || clocksource == "?" {
        return failed(&format!(
            "the guest ran on clocksource {clocksource}: its times are 4 ms steps, the run is discarded"
        ));
    }
    let mut t = Table::new(&[
        "in the guest (TCG), per call",
        "off, median µs (p99)",
        "observe, median µs (p99)",
        "enforce, median µs (p99)",
        "observe − off (pairwise median µs)",
        "enforce − off (pairwise median µs)",
        "enforce / off (pairwise)",
    ]);
    let cell = |s: &Summary| format!("{} ({})", num(us(s.median)), num(us(s.p99)));
    let mut rows = Vec::new();
    let bytes = info("module-bytes");
    for (measure, label) in [
        (
            "finit",
            format!("finit_module() of dummy.ko ({bytes} bytes): the hook, SHA-256 of the file, the verdict"),
        ),
        (
            "init",
            "init_module() of the same image: the hook alone, no file, no hash".to_string(),
        ),
    ] {
        let get = |m: &str| {
            g.samples
                .get(&(measure.to_string(), m.to_string()))
                .cloned()
                .unwrap_or_default()
        };
        let (off, obs, enf) = (get("off"), get("observe"), get("enforce"));
        if off.is_empty() || obs.is_empty() || enf.is_empty() {
            continue;
        }
        let (so, sb, se) = (Summary::of(&off), Summary::of(&obs), Summary::of(&enf));
        let (dob, den) = (pairwise_delta(&off, &obs), pairwise_delta(&off, &enf));
        let r = Ratio::of(&off, &enf);
        t.row(vec![
            label.clone(),
            cell(&so),
            cell(&sb),
            cell(&se),
            num(us(dob)),
            format!("**{}**", num(us(den))),
            format!("{}x", num(r.pairwise_median)),
        ]);
        rows.push(json!({
            "measure": measure,
            "what": label,
            "off": so.json_us(),
            "observe": sb.json_us(),
            "enforce": se.json_us(),
            "observe_minus_off_us": us(dob),
            "enforce_minus_off_us": us(den),
            "enforce_over_off": r.json(),
        }));
    }
    if rows.is_empty() {
        let mut s = failed("the guest gave no samples for the three modes");
        s.json["errors"] = json!(g.errors);
        return s;
    }
    let mut notes = vec![format!(
        "same guest, same boot (QEMU TCG, clocksource {clocksource}, {}, {}; LSMs {}): each round loads and removes dummy {} times by each call in each mode in turn (the first mode rotates); off is no program, observe and enforce a kerneld with module-loads set (dummy, put in the module tree, has an allow verdict); only the system call is timed",
        info("kernel"),
        info("kerneld"),
        info("lsm"),
        info("rounds").split_whitespace().last().unwrap_or("?"),
    )];
    notes.push(
        "finit_module() runs the sleepable kernel_read_file hook: bpf_ima_file_hash() reads and hashes the whole file, then a map lookup and an event in the ring buffer; init_module() runs the kernel_load_data hook, which has no file to hash: its row is the hook's cost without the hash".into(),
    );
    let tree_doc = match tree {
        Ok((s, files, bytes)) => {
            t.row(vec![
                format!(
                    "judging the whole tree on the host: {files} module files, {} MB (SHA-256 of each, the module rules)",
                    num(*bytes as f64 / 1e6)
                ),
                String::new(),
                String::new(),
                format!("{} ms (of {}, warm cache)", num(s.median / 1e6), s.n),
                String::new(),
                String::new(),
                String::new(),
            ]);
            json!({
                "files": files,
                "bytes": bytes,
                "median_ms": round3(s.median / 1e6),
                "min_ms": round3(s.min / 1e6),
                "max_ms": round3(s.max / 1e6),
                "runs": s.n,
            })
        }
        Err(e) => {
            notes.push(format!("the tree was not judged on the host: {e}"));
            json!({ "error": e })
        }
    };
    notes.push(format!(
        "judging the tree is what kerneld does at start, when a module file changes, on SIGHUP and when a rule is set live; on the host it runs the daemon's own code (kerneld::modload::verdicts) over Debian's 6.12 tree, after one untimed run; in the guest (its few files) kerneld logged: {}",
        info("judged")
    ));
    if !g.errors.is_empty() {
        notes.push(format!("guest errors: {}", g.errors.join("; ")));
    }
    let json: Value = json!({ "calls": rows, "judge_tree": tree_doc, "errors": g.errors });
    Section {
        title: TITLE.into(),
        table: t.render(),
        notes,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_lines_become_rows_with_pairwise_deltas() {
        let mut text = String::from(
            "VMBENCH INFO clocksource tsc\nVMBENCH INFO module-bytes 20000\nVMBENCH INFO rounds 2 per-round 3\n",
        );
        for (m, base) in [("off", 100_000), ("observe", 130_000), ("enforce", 140_000)] {
            text.push_str(&format!(
                "VMBENCH S finit {m} {base} {base} {base}\nVMBENCH S init {m} 50000 50000 50000\n"
            ));
        }
        text.push_str("VMBENCH S finit warm-off 1\nVMBENCH END\n");
        let g = vm::parse(&text);
        let s = section(&g, &Err("no tree".into()));
        assert_eq!(
            s.json["calls"][0]["enforce_minus_off_us"], 40.0,
            "{}",
            s.json
        );
        assert_eq!(
            s.json["calls"][1]["enforce_minus_off_us"], 0.0,
            "{}",
            s.json
        );
        assert!(s.table.contains("dummy.ko (20000 bytes)"), "{}", s.table);
        assert_eq!(s.json["judge_tree"]["error"], "no tree");
    }
}

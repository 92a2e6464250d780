//! kerneld-bench: how fast kerneld answers, against exec'ing modprobe and
//! against the bare SysV queue; throughput, a storm of identical requests,
//! the kernel path in a VM, memory and size.  One run measures everything,
//! prints the tables and writes bench/results/latest.{json,md}.
//!
//! Run it through `scripts/bench.sh` (as root).  Everything it starts uses
//! private queue keys and temporary directories; nothing is loaded.

mod compare;
mod failover;
mod modload;
mod proc;
mod sections;
mod stats;
mod sustain;
mod table;
mod vm;

use proc::{Kerneld, KerneldSpec};
use sections::{Modprobe, Section};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const USAGE: &str = "\
kerneld-bench: kerneld against exec'ing modprobe, and against the queue itself

Usage: kerneld-bench [OPTIONS]
  --quick              fewer repetitions (a smoke test; figures are rough)
  --only LIST          sections to run, comma-separated: floor, decision,
                       throughput, storm, vm (5 and 5b), shim (5b alone:
                       the in-kernel sender on our 6.12 and 7.3), memory,
                       flood, sustained, failover, modload (default: all);
                       results are then only printed, unless --write
  --no-vm              skip the VM sections (5 and 10)
  --write              write bench/results/latest.{json,md} even with --only
  --bin-dir DIR        kerneld binaries (default: this program's directory)
  --module-root ROOT   module tree root (default: tests/vm/fetch-kernel.sh 6.12)
  --kver KVER          its kernel version (with --module-root)
  --out DIR            where latest.json and latest.md go (default bench/results)
  --floor-reps N       round trips per side in section 1 (default 20000)
  --decision-reps N    requests per side and case in section 2 (default 300)
  --seconds S          seconds per throughput level (default 3)
  --storm-clients N    concurrent identical requests (default 1000)
  --storm-runs N       storms (default 3)
  --vm-rounds N        rounds per helper in the VM (default 10)
  --vm-per-round N     requests per round and measure (default 10)
  --no-shim-variants   in the VM, leave out kerneld with the shim built as a
                       dynamic PIE and as a static non-PIE (for comparison)
  --flood-messages N   messages of the flood in section 7 (default 100000)
  --sustained N        requests of section 8 (default 400000)
  --failover-reps N    kerneld processes killed per case of section 9 (a)
                       and (b) (default 20)
  --failover-floods N  floods killed in section 9 (c) (default 5)
  --failover-flood N   messages of each before the kill (default 20000)
  --keep-work          keep the temporary directory (daemon logs)
";

struct Opts {
    only: Option<Vec<String>>,
    no_vm: bool,
    write: bool,
    bin_dir: Option<PathBuf>,
    module_root: Option<PathBuf>,
    kver: Option<String>,
    out: Option<PathBuf>,
    floor_reps: usize,
    decision_reps: usize,
    seconds: f64,
    storm_clients: usize,
    storm_runs: usize,
    vm_rounds: usize,
    vm_per_round: usize,
    flood_messages: usize,
    sustained: usize,
    failover_reps: usize,
    failover_floods: usize,
    failover_flood: usize,
    keep_work: bool,
    quick: bool,
    no_shim_variants: bool,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        only: None,
        no_vm: false,
        write: false,
        bin_dir: None,
        module_root: None,
        kver: None,
        out: None,
        floor_reps: 20_000,
        decision_reps: 300,
        seconds: 3.0,
        storm_clients: 1000,
        storm_runs: 3,
        vm_rounds: 10,
        vm_per_round: 10,
        flood_messages: 100_000,
        sustained: 400_000,
        failover_reps: 20,
        failover_floods: 5,
        failover_flood: 20_000,
        keep_work: false,
        quick: false,
        no_shim_variants: false,
    };
    if args.iter().any(|a| a == "--quick") {
        o.quick = true;
        o.floor_reps = 2000;
        o.decision_reps = 30;
        o.seconds = 1.0;
        o.storm_runs = 1;
        o.vm_rounds = 2;
        o.vm_per_round = 5;
        o.flood_messages = 20_000;
        o.sustained = 40_000;
        o.failover_reps = 5;
        o.failover_floods = 2;
        o.failover_flood = 5000;
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<String, String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| -> Result<usize, String> {
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--quick" => {}
            "--no-vm" => o.no_vm = true,
            "--write" => o.write = true,
            "--keep-work" => o.keep_work = true,
            "--no-shim-variants" => o.no_shim_variants = true,
            "--only" => o.only = Some(val(a)?.split(',').map(|s| s.trim().to_string()).collect()),
            "--bin-dir" => o.bin_dir = Some(val(a)?.into()),
            "--module-root" => o.module_root = Some(val(a)?.into()),
            "--kver" => o.kver = Some(val(a)?),
            "--out" => o.out = Some(val(a)?.into()),
            "--floor-reps" => o.floor_reps = num(a, val(a)?)?,
            "--decision-reps" => o.decision_reps = num(a, val(a)?)?,
            "--seconds" => {
                let v = val(a)?;
                o.seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds: not a number: {v}"))?
            }
            "--storm-clients" => o.storm_clients = num(a, val(a)?)?,
            "--storm-runs" => o.storm_runs = num(a, val(a)?)?,
            "--vm-rounds" => o.vm_rounds = num(a, val(a)?)?,
            "--vm-per-round" => o.vm_per_round = num(a, val(a)?)?,
            "--flood-messages" => o.flood_messages = num(a, val(a)?)?,
            "--sustained" => o.sustained = num(a, val(a)?)?,
            "--failover-reps" => o.failover_reps = num(a, val(a)?)?,
            "--failover-floods" => o.failover_floods = num(a, val(a)?)?,
            "--failover-flood" => o.failover_flood = num(a, val(a)?)?,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    if let Some(only) = &o.only {
        for s in only {
            if ![
                "floor",
                "decision",
                "throughput",
                "storm",
                "vm",
                "shim",
                "memory",
                "flood",
                "sustained",
                "failover",
                "modload",
            ]
            .contains(&s.as_str())
            {
                return Err(format!("--only: unknown section {s}"));
            }
        }
    }
    Ok(o)
}

impl Opts {
    fn runs(&self, section: &str) -> bool {
        if (section == "vm" || section == "shim" || section == "modload") && self.no_vm {
            return false;
        }
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }
}

/// First line of a command's output, or "unknown".
fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__echo") {
        std::process::exit(proc::echo_main(args.get(1).map_or("", |s| s.as_str())));
    }
    if args.first().map(String::as_str) == Some("compare") {
        compare_main(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("drive") {
        std::process::exit(drive(&args[1..]));
    }
    let o = parse_args(&args).unwrap_or_else(|e| {
        eprintln!("kerneld-bench: {e}");
        std::process::exit(2)
    });
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("kerneld-bench: must run as root (kerneld and its queues need it)");
        std::process::exit(4);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf();
    let bin_dir = o.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| repo.join("target/release"))
    });
    let kerneld_bin = bin_dir.join("kerneld");
    let shim_bin = bin_dir.join("kerneld-modprobe");
    for b in [&kerneld_bin, &shim_bin] {
        if !b.exists() {
            eprintln!(
                "kerneld-bench: {} missing (cargo build --release)",
                b.display()
            );
            std::process::exit(1);
        }
    }
    let (root, kver) = match (&o.module_root, &o.kver) {
        (Some(r), Some(k)) => (r.clone(), k.clone()),
        _ => fetch_kernel(&repo),
    };
    let module_dir = root.join("lib/modules").join(&kver);
    let modprobe = Modprobe {
        bin: ["/sbin/modprobe", "/usr/sbin/modprobe"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("modprobe")),
        root: root.clone(),
        kver: kver.clone(),
    };

    let work = std::env::temp_dir().join(format!("kerneld-bench.{}", std::process::id()));
    std::fs::create_dir_all(&work)
        .unwrap_or_else(|e| proc::abort(&format!("{}: {e}", work.display())));
    let conf_dir = work.join("modprobe.d");
    std::fs::create_dir_all(&conf_dir).expect("create modprobe.d");
    let count_file = work.join("install-runs");
    let action = Duration::from_millis(500);
    std::fs::write(
        conf_dir.join("kdbench.conf"),
        format!(
            "# kerneld-bench: the blacklist case and the storm's slow action\nblacklist dummy\n\
             install kdbench-slow echo run >> {} ; /bin/sleep {}\n",
            count_file.display(),
            action.as_secs_f64()
        ),
    )
    .expect("write modprobe.d");
    let shim_conf = work.join("shim.conf");
    std::fs::write(&shim_conf, "shim-fallback = fail\nshim-timeout = 30\n")
        .expect("write shim.conf");

    proc::start_watchdog(Duration::from_secs(60));
    let fair_conf = "# the decision itself: no negative cache, no rate limit\nnegative-cache = 0\nrate-limit = 0\n";
    let default_conf = "# built-in defaults (negative-cache = 5, rate-limit = 30)\n";
    let start = |name: &str, config: &str, modprobe_d: Option<&Path>| {
        Kerneld::start(&KerneldSpec {
            name,
            bin: &kerneld_bin,
            work: &work,
            module_dir: &module_dir,
            config,
            modprobe_d,
        })
        .unwrap_or_else(|e| proc::abort(&e))
    };

    eprintln!(
        "kerneld-bench: module tree {} ({kver}), binaries in {}, work in {}",
        root.display(),
        bin_dir.display(),
        work.display()
    );
    let fair = start("fair", fair_conf, None);
    let mut out: Vec<Section> = Vec::new();
    let mut shim_runs = Vec::new();
    let mut modprobe_runs = Vec::new();
    let mut after_tp = json!(null);

    if o.runs("floor") {
        eprintln!(
            "kerneld-bench: 1. the floor ({} round trips each)",
            o.floor_reps
        );
        out.push(sections::floor(&fair, o.floor_reps));
    }
    if o.runs("decision") {
        eprintln!(
            "kerneld-bench: 2. the decision ({} requests per side and case)",
            o.decision_reps
        );
        let blacklist = start("blacklist", fair_conf, Some(&conf_dir));
        let cached = start("cached", default_conf, None);
        let d = sections::decision(
            &fair,
            &blacklist,
            &cached,
            &conf_dir,
            &modprobe,
            &shim_bin,
            &shim_conf,
            o.decision_reps,
        );
        shim_runs = d.shim_runs;
        modprobe_runs = d.modprobe_runs;
        out.push(d.section);
    }
    if o.runs("throughput") {
        eprintln!("kerneld-bench: 3. throughput ({} s per level)", o.seconds);
        let (s, hwm) = sections::throughput(&fair, &[1, 8, 64], Duration::from_secs_f64(o.seconds));
        after_tp = hwm;
        out.push(s);
    }
    if o.runs("storm") {
        eprintln!(
            "kerneld-bench: 4. the storm ({} clients, {} runs)",
            o.storm_clients, o.storm_runs
        );
        let storm_kd = start("storm", fair_conf, Some(&conf_dir));
        out.push(sections::storm(
            &storm_kd,
            &count_file,
            o.storm_clients,
            o.storm_runs,
            action,
        ));
    }
    if o.runs("vm") {
        out.push(vm::run(
            &repo,
            &bin_dir,
            o.vm_rounds,
            o.vm_per_round,
            !o.no_shim_variants,
        ));
    }
    if o.runs("vm") || o.runs("shim") {
        for series in vm::SHIM_SERIES {
            out.push(vm::run_shim(
                &repo,
                &bin_dir,
                series,
                o.vm_rounds,
                o.vm_per_round,
            ));
        }
    }
    if o.runs("memory") {
        eprintln!("kerneld-bench: 6. memory and size");
        if shim_runs.is_empty() {
            for _ in 0..20 {
                let mut c = Command::new(&shim_bin);
                c.args(["-q", "--", "kdbench-no-such-module"])
                    .env("KERNELD_KEY", fair.key.to_string())
                    .env("KERNELD_CONFIG", &shim_conf)
                    .env("KERNELD_SHIM_LOG", "/dev/null")
                    .stdin(std::process::Stdio::null());
                shim_runs.extend(proc::run_once(&mut c));
                let mut m = modprobe.command("kdbench-no-such-module", None);
                modprobe_runs.extend(proc::run_once(&mut m));
            }
        }
        let mixed = start("memory", default_conf, None);
        out.push(sections::memory(
            &mixed,
            &after_tp,
            &shim_bin,
            &shim_runs,
            &modprobe_runs,
        ));
    }
    if o.runs("flood") {
        eprintln!(
            "kerneld-bench: 7. a flood of {} messages from dead clients",
            o.flood_messages
        );
        let flooded = start("flood", default_conf, None);
        out.push(sustain::flood_recovery(&flooded, o.flood_messages));
    }
    if o.runs("sustained") {
        eprintln!(
            "kerneld-bench: 8. memory over {} requests from 64 clients",
            o.sustained
        );
        let busy = start("sustained", default_conf, None);
        out.push(sustain::sustained_memory(&busy, o.sustained, 64));
    }
    if o.runs("failover") {
        eprintln!(
            "kerneld-bench: 9. failover ({} kills per case, {} floods of {} messages)",
            o.failover_reps, o.failover_floods, o.failover_flood
        );
        out.push(failover::failover(&failover::Setup {
            kerneld: &kerneld_bin,
            shim: &shim_bin,
            work: &work,
            module_dir: &module_dir,
            reps: o.failover_reps,
            flood_reps: o.failover_floods,
            flood_messages: o.failover_flood,
        }));
    }
    if o.runs("modload") {
        out.push(modload::run(
            &repo,
            &bin_dir,
            &module_dir,
            o.vm_rounds,
            o.vm_per_round,
        ));
    }
    drop(fair);

    let meta = json!({
        "generated_at": first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "command": format!("kerneld-bench {}", args.join(" ")).trim().to_string(),
        "quick": o.quick,
        "machine": {
            "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "cpu": cpu_model(),
            "kernel": first_line("uname", &["-sr"]),
            "shared": "other work may run at the same time: compare ratios, taken pair by pair",
        },
        "versions": {
            "kerneld": first_line(kerneld_bin.to_str().unwrap_or("kerneld"), &["--version"]),
            "rustc": first_line("rustc", &["--version"]),
            "kmod": first_line(modprobe.bin.to_str().unwrap_or("modprobe"), &["--version"]),
            "git": first_line("git", &["-C", repo.to_str().unwrap_or("."), "describe", "--always", "--dirty"]),
        },
        "module_tree": { "root": root, "kver": kver },
    });
    let md = render_md(&meta, &out);
    println!("{md}");
    let mut doc = meta.clone();
    for s in &out {
        let key = s.title.split(':').next().unwrap_or(&s.title).to_string();
        doc["sections"][key] = json!({ "title": s.title, "results": s.json, "notes": s.notes });
    }
    if o.only.is_none() || o.write {
        let dir = o.out.clone().unwrap_or_else(|| repo.join("bench/results"));
        if let Err(e) = write_results(&dir, &doc, &md) {
            eprintln!(
                "kerneld-bench: cannot write results in {}: {e}",
                dir.display()
            );
            std::process::exit(1);
        }
        eprintln!(
            "kerneld-bench: wrote {0}/latest.json and {0}/latest.md",
            dir.display()
        );
    }
    if o.keep_work {
        eprintln!("kerneld-bench: kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// `kerneld-bench compare OLD-KERNELD NEW-KERNELD [REPS]`.
fn compare_main(args: &[String]) {
    let (Some(old), Some(new)) = (args.first(), args.get(1)) else {
        eprintln!("usage: kerneld-bench compare OLD-KERNELD NEW-KERNELD [REPS]");
        std::process::exit(2);
    };
    let reps = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3000);
    let (root, kver) = fetch_kernel(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
    let work = std::env::temp_dir().join(format!("kerneld-bench-cmp.{}", std::process::id()));
    let conf_dir = work.join("modprobe.d");
    std::fs::create_dir_all(&conf_dir).expect("work dir");
    let count_file = work.join("install-runs");
    std::fs::write(
        conf_dir.join("kdbench.conf"),
        format!(
            "blacklist dummy\ninstall kdbench-slow echo run >> {} ; /bin/sleep 0.5\n",
            count_file.display()
        ),
    )
    .expect("modprobe.d");
    proc::start_watchdog(Duration::from_secs(60));
    compare::run(
        Path::new(old),
        Path::new(new),
        &root.join("lib/modules").join(&kver),
        &work,
        &conf_dir,
        &count_file,
        reps,
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The Debian 6.12 module tree: ROOT and KVER from tests/vm/fetch-kernel.sh.
fn fetch_kernel(repo: &Path) -> (PathBuf, String) {
    let out = Command::new(repo.join("tests/vm/fetch-kernel.sh"))
        .arg("6.12")
        .output()
        .unwrap_or_else(|e| proc::abort(&format!("fetch-kernel.sh: {e}")));
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let mut w = line.split_whitespace();
    match (w.next(), w.next()) {
        (Some(r), Some(k)) if out.status.success() => (PathBuf::from(r), k.to_string()),
        _ => proc::abort(&format!(
            "tests/vm/fetch-kernel.sh 6.12 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// `kerneld-bench drive KEY COUNT TYPE TEXT`: send COUNT requests one
/// after the other to the daemon at KEY and print the mean round trip; a
/// TEXT with `{}` gets the request number (unique names).  For profiling
/// a daemon run under valgrind or perf.
fn drive(args: &[String]) -> i32 {
    let [key, count, t, text] = args else {
        eprintln!("usage: kerneld-bench drive KEY COUNT TYPE TEXT   (TEXT with {{}}: numbered)");
        return 2;
    };
    let (Ok(key), Ok(count), Some(t)) = (
        key.parse::<kmod_ipc::Key>(),
        count.parse::<usize>(),
        kmod_ipc::MsgType::parse(t),
    ) else {
        eprintln!("kerneld-bench drive: bad KEY, COUNT or TYPE");
        return 2;
    };
    let conn = match proc::Conn::open(key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kerneld-bench drive: {e}");
            return 1;
        }
    };
    let id = proc::fresh_id();
    let t0 = std::time::Instant::now();
    let mut failed = 0;
    for i in 0..count {
        let text = text.replace("{}", &i.to_string());
        match conn.rtt(t, text.as_bytes(), id, None) {
            Ok((0, _)) => {}
            Ok(_) => failed += 1,
            Err(e) => {
                eprintln!("kerneld-bench drive: {e}");
                return 1;
            }
        }
    }
    let el = t0.elapsed();
    println!(
        "{count} requests in {:.3} s: {:.1} µs each, {failed} answered with a non-zero status",
        el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / count.max(1) as f64
    );
    0
}

fn render_md(meta: &Value, out: &[Section]) -> String {
    let m = &meta["machine"];
    let v = &meta["versions"];
    let mut s = format!(
        "Measured {} with `{}`{}: {} CPUs ({}), {}; {}, {}, {}, git {}.\n",
        meta["generated_at"].as_str().unwrap_or("?"),
        meta["command"].as_str().unwrap_or("?"),
        if meta["quick"].as_bool() == Some(true) {
            " (quick: rough figures)"
        } else {
            ""
        },
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        v["kerneld"].as_str().unwrap_or("?"),
        v["rustc"].as_str().unwrap_or("?"),
        v["kmod"].as_str().unwrap_or("?"),
        v["git"].as_str().unwrap_or("?"),
    );
    s.push_str(&format!(
        "Module tree: Debian {} ({}). The machine is shared: every comparison interleaves its two sides and gives the median of the pair-by-pair ratios.\n",
        meta["module_tree"]["kver"].as_str().unwrap_or("?"),
        meta["module_tree"]["root"].as_str().unwrap_or("?"),
    ));
    for sec in out {
        s.push_str(&format!("\n#### {}\n\n", sec.title));
        s.push_str(&sec.table);
        if !sec.notes.is_empty() {
            s.push('\n');
            for n in &sec.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
    }
    s
}

fn write_results(dir: &Path, doc: &Value, md: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let put = |name: &str, text: &str| -> std::io::Result<()> {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))
    };
    put(
        "latest.json",
        &(serde_json::to_string_pretty(doc).unwrap_or_default() + "\n"),
    )?;
    put("latest.md", md)
}

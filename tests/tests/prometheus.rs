//! The Prometheus exposition of a real kerneld, with real traffic behind
//! its figures: `kdstat --prometheus`, and the file kerneld writes for
//! node_exporter's textfile collector (`metrics-dir`).  Both are checked
//! with `promtool check metrics` (Debian's prometheus package, installed
//! by scripts/install-deps.sh): without promtool these tests fail.
//!
//! Needs the binaries (`cargo build --workspace --bins`).

use kerneld_tests::daemon::{Kerneld, LIMIT};
use kerneld_tests::fake::{bin, finish, run, Outcome, TempDir};
use kmod_ipc::{Header, Message, MsgType};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Poll `f` until it returns Some, within LIMIT.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `promtool check metrics` on `text`: it must print nothing and exit 0.
fn assert_promtool_accepts(text: &str) {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is not installed: this test checks the output with \
                 `promtool check metrics`; install Debian's prometheus package \
                 (scripts/install-deps.sh does)"
            )
        });
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = finish(child, LIMIT);
    assert!(
        out.code() == 0 && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\non:\n{text}"
    );
}

/// The value of the series `series` (name and labels as written).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e} in:\n{text}"))
}

/// A modprobe.d install command that waits for DIR/gate: an action that
/// stays in flight until the test lets it finish.
fn gated_install(name: &str, dir: &TempDir) -> String {
    format!(
        "install {name} while [ ! -e {gate} ]; do sleep 0.05; done; true\n",
        gate = dir.join("gate").display(),
    )
}

/// Wait until the status shows one job for `text` with `waiters` waiters.
fn wait_for_job(k: &Kerneld, text: &str, waiters: u64) {
    eventually(&format!("a job for {text} with {waiters} waiters"), || {
        let j = k.status_json();
        j["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|job| job["text"] == text && job["waiters"].as_u64() == Some(waiters))
            .then_some(())
    });
}

fn kdstat_prometheus(k: &Kerneld, proc_modprobe: &Path) -> Outcome {
    let out = run(
        Command::new(bin("kdstat"))
            .args(["--key", &k.key_arg(), "--timeout", "30", "--prometheus"])
            .env("KERNELD_PROC_MODPROBE", proc_modprobe),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "kdstat --prometheus: {out:?}\n{}", k.log());
    out
}

/// Every kind of answer once or more: succeeded, not found, cached,
/// denied, merged, malformed.  Returns the number of module requests.
fn traffic(k: &Kerneld, gate: &TempDir) -> u64 {
    let r = k.request(MsgType::RequestModule, "kdtest-ok");
    assert_eq!(r.status, 0, "{r:?}");
    for _ in 0..2 {
        // Not found, then the same answered from the negative cache.
        let r = k.request(MsgType::RequestModule, "no-such-module-xyz");
        assert_eq!(r.status, 1, "{r:?}");
    }
    let r = k.request(MsgType::RequestModule, "kdtest-denied");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(r.text_lossy().contains("denied by policy"), "{r:?}");
    // Three identical requests: one action, two merged into it.
    std::thread::scope(|s| {
        let waiting: Vec<_> = (0..3)
            .map(|_| s.spawn(|| k.request(MsgType::RequestModule, "kdtest-slow")))
            .collect();
        wait_for_job(k, "kdtest-slow", 3);
        std::fs::write(gate.join("gate"), "").unwrap();
        for w in waiting {
            let r = w.join().unwrap();
            assert_eq!(r.status, 0, "{r:?}");
        }
    });
    // Malformed: a reply id that is a request type kerneld serves.
    let m = Message::request(MsgType::Status, 5, Header::Old, "");
    k.queue().send(&m, usize::MAX, false).unwrap();
    k.wait_log("dropping debug with reply id 5");
    7
}

fn daemon(gate: &TempDir, config: &str) -> Kerneld {
    Kerneld::builder()
        .modprobe(&format!(
            "install kdtest-ok true\n{}",
            gated_install("kdtest-slow", gate)
        ))
        .config(&format!(
            "negative-cache = 600\ndeny request kdtest-denied\n{config}"
        ))
        .start()
}

#[test]
fn kdstat_prometheus_passes_promtool_and_counts_the_traffic() {
    let gate = TempDir::new();
    let k = daemon(&gate, "");
    let requests = traffic(&k, &gate);
    let helper = gate.join("modprobe");
    std::fs::write(&helper, "/usr/sbin/kerneld-modprobe\n").unwrap();
    let out = kdstat_prometheus(&k, &helper);
    let t = &out.stdout;
    assert_promtool_accepts(t);
    for (series, want) in [
        ("kerneld_up", 1),
        ("kerneld_requests_total{type=\"request_module\"}", requests),
        ("kerneld_answers_total{result=\"succeeded\"}", 2),
        // Not found, its cached repeat, the denial.
        ("kerneld_answers_total{result=\"failed\"}", 3),
        ("kerneld_requests_denied_total", 1),
        ("kerneld_requests_cached_total", 1),
        ("kerneld_requests_merged_total", 2),
        ("kerneld_messages_malformed_total", 1),
        ("kerneld_modules_loaded", 0),
        ("kerneld_policy_rules", 1),
        ("kerneld_module_helper_shim", 1),
        ("kerneld_journal_lines_dropped_total", 0),
        // module-loads is off: no program, nothing seen.
        ("kerneld_module_loads_mode{mode=\"off\"}", 1),
        ("kerneld_module_loads_mode{mode=\"enforce\"}", 0),
        ("kerneld_module_loads_attached", 0),
        ("kerneld_module_loads_total{syscall=\"finit_module\"}", 0),
        ("kerneld_module_load_verdicts_total{verdict=\"denied\"}", 0),
    ] {
        assert_eq!(value(t, series), want as f64, "{series} in:\n{t}");
    }
    let rule = format!(
        "kerneld_policy_rule_hits_total{{rule=\"deny request kdtest-denied\",origin=\"{}:2\"}}",
        k.config_path().display()
    );
    assert_eq!(value(t, &rule), 1.0, "{t}");
    assert!(value(t, "kerneld_requests_total{type=\"status\"}") >= 1.0);
    let j = k.status_json();
    assert_eq!(
        value(t, "kerneld_start_time_seconds"),
        j["started_at"].as_u64().unwrap() as f64
    );

    // Another helper than the shim.
    std::fs::write(&helper, "/sbin/modprobe\n").unwrap();
    let t = kdstat_prometheus(&k, &helper).stdout;
    assert_eq!(value(&t, "kerneld_module_helper_shim"), 0.0, "{t}");
}

#[test]
fn kerneld_writes_the_textfile_at_each_sweep_and_replaces_it_whole() {
    let gate = TempDir::new();
    let dir = TempDir::new();
    // A link where the file goes is replaced, not written through.
    let victim = gate.join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("kerneld.prom")).unwrap();
    let mut k = daemon(&gate, &format!("metrics-dir = {}\n", dir.path().display()));
    let file = dir.join("kerneld.prom");
    let read = || {
        let m = std::fs::symlink_metadata(&file).ok()?;
        m.file_type()
            .is_file()
            .then(|| (m.ino(), std::fs::read_to_string(&file).unwrap()))
    };
    let (first_inode, first) = eventually("kerneld.prom written at start", read);
    assert_promtool_accepts(&first);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert_eq!(value(&first, "kerneld_up"), 1.0);

    let requests = traffic(&k, &gate);
    // Sweep every second from now on: the next one writes the traffic.
    assert_eq!(k.control("delay=1").status, 0);
    let series = "kerneld_requests_total{type=\"request_module\"}";
    let (inode, text) = eventually("the traffic in kerneld.prom after a sweep", || {
        read().filter(|(_, t)| t.contains(&format!("{series} {requests}\n")))
    });
    assert_promtool_accepts(&text);
    assert_eq!(value(&text, "kerneld_requests_merged_total"), 2.0);
    // Replaced by a rename: a new file, no temporary one left beside it.
    assert_ne!(inode, first_inode);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["kerneld.prom"], "left in the directory: {names:?}");

    // At the stop: the last figures, with kerneld_up 0.
    let status = k.stop();
    assert!(status.success(), "{status}");
    let (_, last) = read().expect("kerneld.prom after the stop");
    assert_promtool_accepts(&last);
    assert_eq!(value(&last, "kerneld_up"), 0.0, "{last}");
    assert_eq!(value(&last, series), requests as f64, "{last}");
}

#[test]
fn a_relative_metrics_dir_is_refused() {
    let dir = TempDir::new();
    let conf = dir.join("kerneld.conf");
    std::fs::write(&conf, "metrics-dir = textfiles\n").unwrap();
    let out = kerneld_tests::daemon::check_config(&conf);
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("metrics-dir must be an absolute path"),
        "{out:?}"
    );
}

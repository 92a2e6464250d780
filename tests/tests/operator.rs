//! Failures an operator must see (issue 16): a detached start reports its
//! problems and its status, a failed --register is an error, the previous
//! module helper comes back without the shim (also across an uninstall),
//! every habitual signal is handled, the pid file, SIGHUP's start-only
//! settings, and --check-config's messages.  Real kerneld processes on
//! fresh keys, with KERNELD_PROC_MODPROBE standing in for
//! /proc/sys/kernel/modprobe.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{Kerneld, LIMIT};
use kerneld_tests::fake::{bin, run, TempDir};
use kmod_ipc::{Error, Key, Queue};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Poll `f` until it returns true, within LIMIT.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + LIMIT;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {LIMIT:?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn gone(key: Key) -> bool {
    matches!(Queue::open(key), Err(Error::NotRunning { .. }))
}

/// Whether `pid` is a live kerneld (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !stat.is_empty() && !state.starts_with('Z')
}

/// A stand-in for /proc/sys/kernel/modprobe holding `value`.
fn proc_file(dir: &TempDir, value: &str) -> PathBuf {
    let p = dir.join("proc-modprobe");
    std::fs::write(&p, format!("{value}\n")).unwrap();
    p
}

fn read_value(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap()
        .trim_end_matches('\n')
        .to_string()
}

/// Kills a detached kerneld if the test ends before it stopped.
struct Detached(u32);

impl Drop for Detached {
    fn drop(&mut self) {
        if alive(self.0) {
            // SAFETY: kill(2) on the daemon this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

fn started_pid(stdout: &str) -> u32 {
    let line = stdout.trim();
    line.strip_prefix(&format!("Starting kerneld, version {VERSION} (pid "))
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
}

// ---- the detached start ------------------------------------------------------

#[test]
fn a_detached_start_shows_its_warnings_and_reports_the_daemon_pid() {
    let ex = Kerneld::builder().background().run_to_exit();
    let out = &ex.outcome;
    assert_eq!(out.code(), 0, "{out:?}");
    let pid = started_pid(&out.stdout);
    let _guard = Detached(pid);
    // The warnings of the start reached the terminal; the notices did not.
    assert!(
        out.stderr.contains("kerneld: warning: no module index in"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("started, version"), "{out:?}");
    let pid_file = ex.dir.join("state/kerneld.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{pid}\n")
    );
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    eventually("the detached kerneld removes its queue", || gone(ex.key));
    eventually("the detached kerneld removes its pid file", || {
        !pid_file.exists()
    });
    eventually("the detached kerneld exits", || !alive(pid));
}

#[test]
fn a_detached_start_that_fails_exits_with_the_daemons_status_and_message() {
    let first = Kerneld::start();
    let ex = Kerneld::builder()
        .key(first.key())
        .background()
        .run_to_exit();
    let out = &ex.outcome;
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(
        out.stdout, "",
        "no 'Starting' line for a daemon that did not start"
    );
    assert!(
        out.stderr.contains(&format!(
            "kerneld: error: another kerneld, pid {} (type=-255",
            first.pid()
        )),
        "{out:?}"
    );
    assert_eq!(
        first.control("status").status,
        0,
        "the first one is untouched"
    );
}

// ---- --register ------------------------------------------------------------

#[test]
fn a_failed_register_is_an_error_in_both_modes() {
    let dir = TempDir::new();
    // A helper file that cannot be read: as on a kernel without modules.
    let missing = dir.join("no-such-dir/modprobe");
    for background in [false, true] {
        let mut b = Kerneld::builder()
            .arg("--register")
            .env("KERNELD_PROC_MODPROBE", &missing);
        if background {
            b = b.background();
        }
        let ex = b.run_to_exit();
        let out = &ex.outcome;
        assert_eq!(out.code(), 1, "background={background}: {out:?}");
        assert!(
            out.stderr.contains("kerneld: error: --register: ")
                && out.stderr.contains("--register failed (exit status: 1)")
                && out
                    .stderr
                    .contains("the kernel would never ask kerneld for a module"),
            "{out:?}"
        );
        assert!(
            out.stderr.contains(&missing.display().to_string()),
            "{out:?}"
        );
        assert!(gone(ex.key), "the queue of a failed start is removed");
        assert!(!ex.dir.join("state/kerneld.pid").exists());
    }
}

#[test]
fn register_then_restore_by_kerneld_itself_even_when_the_shim_is_gone() {
    let dir = TempDir::new();
    let proc = proc_file(&dir, "/sbin/modprobe");
    // A copy of the shim that is deleted while kerneld runs, as an
    // uninstall would.
    let shim = dir.join("kerneld-modprobe");
    std::fs::copy(bin("kerneld-modprobe"), &shim).unwrap();
    let mut k = Kerneld::builder()
        .arg("--register")
        .arg("--shim")
        .arg(shim.to_str().unwrap())
        .env("KERNELD_PROC_MODPROBE", &proc)
        .start();
    assert_eq!(read_value(&proc), shim.display().to_string());
    let record = k.dir().join("state/previous-modprobe");
    assert_eq!(read_value(&record), "/sbin/modprobe");
    std::fs::remove_file(&shim).unwrap();
    assert_eq!(k.stop().code(), Some(0));
    assert_eq!(read_value(&proc), "/sbin/modprobe");
    assert!(!record.exists(), "the record is used up");
    let log = k.log();
    assert!(
        log.contains(&format!(
            "{} runs \"/sbin/modprobe\" again (the helper before kerneld)",
            proc.display()
        )),
        "{log}"
    );
    assert!(!log.contains("kerneld: error:"), "{log}");
}

#[test]
fn a_helper_changed_by_someone_else_is_left_alone_at_stop() {
    let dir = TempDir::new();
    let proc = proc_file(&dir, "/usr/bin/true");
    let mut k = Kerneld::builder()
        .arg("--register")
        .env("KERNELD_PROC_MODPROBE", &proc)
        .start();
    assert!(read_value(&proc).ends_with("/kerneld-modprobe"));
    std::fs::write(&proc, "/opt/other-helper\n").unwrap();
    assert_eq!(k.stop().code(), Some(0));
    assert_eq!(read_value(&proc), "/opt/other-helper");
    assert!(k.log().contains("left as it is"), "{}", k.log());
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn uninstall_while_kerneld_register_runs_unregisters_first() {
    let dest = TempDir::new();
    let target = bin("kerneld").parent().unwrap().to_path_buf();
    let install = |action: &str, extra: &[(&str, &Path)]| {
        let mut cmd = Command::new(repo().join("dist/install.sh"));
        cmd.arg(action)
            .env("DESTDIR", dest.path())
            .env("PREFIX", "/usr/local")
            .env("TARGET_DIR", &target)
            .env_remove("UNITDIR")
            .env_remove("KERNELD_STATE_DIR");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        run(&mut cmd, LIMIT)
    };
    let out = install("install", &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let shim = dest.join("usr/local/sbin/kerneld-modprobe");
    let dir = TempDir::new();
    let proc = proc_file(&dir, "/sbin/modprobe");
    let mut k = Kerneld::builder()
        .arg("--register")
        .arg("--shim")
        .arg(shim.to_str().unwrap())
        .env("KERNELD_PROC_MODPROBE", &proc)
        .start();
    assert_eq!(read_value(&proc), shim.display().to_string());
    let state = k.dir().join("state");
    let out = install(
        "uninstall",
        &[
            ("KERNELD_PROC_MODPROBE", &proc),
            ("KERNELD_STATE_DIR", &state),
        ],
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("unregistering it first"), "{out:?}");
    assert!(!shim.exists(), "uninstalled");
    // The kernel has its previous helper before the shim is gone.
    assert_eq!(read_value(&proc), "/sbin/modprobe");
    // kerneld stops cleanly and leaves the helper as uninstall set it.
    assert_eq!(k.stop().code(), Some(0));
    assert_eq!(read_value(&proc), "/sbin/modprobe");
    let log = k.log();
    assert!(log.contains("left as it is"), "{log}");
    assert!(!log.contains("kerneld: error:"), "{log}");
}

// ---- signals -----------------------------------------------------------------

#[test]
fn sigusr1_sigusr2_sigalrm_and_sighup_leave_kerneld_serving() {
    let mut k = Kerneld::start();
    k.signal(libc::SIGUSR1);
    k.wait_log(&format!(
        "kerneld: SIGUSR1: Version {VERSION}, pid={},",
        k.pid()
    ));
    k.signal(libc::SIGUSR2);
    k.wait_log("kerneld: SIGUSR2: debug logging on");
    assert_eq!(k.status_json()["debug"], true);
    k.signal(libc::SIGUSR2);
    k.wait_log("kerneld: SIGUSR2: debug logging off");
    k.signal(libc::SIGALRM);
    k.wait_log("kerneld: SIGALRM ignored");
    k.sighup();
    k.wait_log("kerneld: SIGHUP: reloading");
    assert!(k.running(), "{}", k.log());
    assert_eq!(k.control("status").status, 0);
    assert_eq!(k.stop().code(), Some(0));
}

#[test]
fn sigterm_sigint_and_sigquit_stop_cleanly() {
    for (sig, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
    ] {
        let mut k = Kerneld::start();
        let pid_file = k.dir().join("state/kerneld.pid");
        assert!(pid_file.exists());
        k.signal(sig);
        let status = k.wait_exit(LIMIT);
        assert_eq!(status.code(), Some(0), "{name}: {status}\n{}", k.log());
        let log = k.log();
        assert!(log.contains(&format!("kerneld: {name}: stopping")), "{log}");
        assert!(log.contains("kerneld: stopped"), "{log}");
        assert!(gone(k.key()), "{name}: the queue is removed");
        assert!(!pid_file.exists(), "{name}: the pid file is removed");
    }
}

// ---- the pid file ------------------------------------------------------------

#[test]
fn the_pid_file_is_whole_renamed_into_place_and_follows_restarts() {
    let mut k = Kerneld::start();
    let state = k.dir().join("state");
    let pid_file = state.join("kerneld.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", k.pid())
    );
    let leftovers: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kerneld.pid") && n != "kerneld.pid")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // A killed kerneld leaves it; the next one replaces it with its pid.
    k.sigkill();
    assert!(pid_file.exists());
    k.restart();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", k.pid())
    );
    assert_eq!(k.stop().code(), Some(0));
    assert!(!pid_file.exists());
}

// ---- SIGHUP and settings read at start only --------------------------------

#[test]
fn sighup_names_each_start_only_setting_that_changed_and_the_live_way() {
    let k = Kerneld::builder()
        .config("delay = 60\nnegative-cache = 5\nmax-workers = 8\n")
        .start();
    std::fs::write(
        k.config_path(),
        "delay = 9\nnegative-cache = 7\nmax-workers = 8\nkeep = yes\n",
    )
    .unwrap();
    k.sighup();
    let log = k.wait_log("configuration reloaded");
    assert!(
        log.contains(
            "kerneld: warning: SIGHUP: delay changed from 60 to 9 in the file, but delay is read at \
             start only and stays 60 (the value in force); `kdstat delay=9` changes it now"
        ),
        "{log}"
    );
    assert!(
        log.contains("SIGHUP: keep changed from unset to yes in the file, but keep is read at start only and stays no (the value in force); `kdstat keep` changes it now"),
        "{log}"
    );
    assert!(
        log.contains("SIGHUP: negative-cache changed from 5 to 7 in the file, but negative-cache is read at start only and stays as it is; it takes effect when kerneld restarts"),
        "{log}"
    );
    assert!(!log.contains("max-workers changed"), "{log}");
    let r = k.control("status");
    assert!(r.text_lossy().contains("delay=60, nokeep"), "{r:?}");
}

#[test]
fn sighup_names_the_delay_in_force_not_the_one_read_at_start() {
    let k = Kerneld::builder().config("delay = 60\n").start();
    assert_eq!(k.control("delay=5").status, 0);
    std::fs::write(k.config_path(), "delay = 9\n").unwrap();
    k.sighup();
    let log = k.wait_log("configuration reloaded");
    assert!(
        log.contains(
            "SIGHUP: delay changed from 60 to 9 in the file, but delay is read at start only \
             and stays 5 (the value in force); `kdstat delay=9` changes it now"
        ),
        "{log}"
    );
    // The file now says what is in force: nothing to warn about.
    assert_eq!(k.control("delay=9").status, 0);
    std::fs::write(k.config_path(), "delay = 9\nkeep = no\n").unwrap();
    k.sighup();
    let log = k.wait_log_count("configuration reloaded", 2);
    assert_eq!(log.matches("delay changed").count(), 1, "{log}");
    assert!(!log.contains("keep changed"), "{log}");
}

// ---- --check-config ------------------------------------------------------------

#[test]
fn check_config_names_a_missing_file() {
    let out = run(
        Command::new(bin("kerneld")).args([
            "--check-config",
            "--config",
            "/nonexistent/kerneld.conf",
        ]),
        LIMIT,
    );
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr
            .starts_with("kerneld: configuration error: /nonexistent/kerneld.conf: cannot read: "),
        "{out:?}"
    );
    assert!(!out.stderr.contains(":0:"), "{out:?}");
    // The default file may be missing: kerneld then says so.
    let out = run(Command::new(bin("kerneld")).arg("--check-config"), LIMIT);
    assert_eq!(out.code(), 0, "{out:?}");
    if Path::new("/etc/kerneld.conf").exists() {
        assert!(out.stdout.starts_with("/etc/kerneld.conf: OK ("), "{out:?}");
    } else {
        assert_eq!(
            out.stdout,
            "/etc/kerneld.conf: not present: defaults (no policy rules; every request is allowed)\n"
        );
    }
}

#[test]
fn check_config_reports_every_error_and_json_for_ci() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.join("kerneld.d")).unwrap();
    std::fs::write(dir.join("kerneld.d/10-a.conf"), "colour = blue\n").unwrap();
    let main = dir.join("kerneld.conf");
    std::fs::write(
        &main,
        "delay = soon\ninclude kerneld.d/*.conf\ndeny request net-pf-31\nbogus\n",
    )
    .unwrap();
    let check = |extra: &[&str]| {
        run(
            Command::new(bin("kerneld"))
                .arg("--check-config")
                .arg("--config")
                .arg(&main)
                .args(extra),
            LIMIT,
        )
    };
    let out = check(&[]);
    assert_eq!(out.code(), 3, "{out:?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("kerneld: configuration error: "))
        .collect();
    assert_eq!(errors.len(), 3, "{out:?}");
    assert!(errors[0].contains("kerneld.conf:1: delay needs"), "{out:?}");
    assert!(
        errors[1].contains("10-a.conf:1: unknown setting"),
        "{out:?}"
    );
    assert!(errors[2].contains("kerneld.conf:4: expected"), "{out:?}");
    assert!(out.stderr.contains(": 3 configuration errors;"), "{out:?}");

    let out = check(&["--json"]);
    assert_eq!(out.code(), 3, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(doc["schema"], 1, "{doc}");
    assert_eq!(doc["ok"], false, "{doc}");
    let lines: Vec<u64> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 1, 4], "{doc}");
    assert!(
        doc["errors"][1]["file"]
            .as_str()
            .unwrap()
            .ends_with("kerneld.d/10-a.conf"),
        "{doc}"
    );

    // Fixed: clean, in text and JSON.
    std::fs::write(dir.join("kerneld.d/10-a.conf"), "keep = yes\n").unwrap();
    std::fs::write(&main, "include kerneld.d/*.conf\ndeny request net-pf-31\n").unwrap();
    let out = check(&[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("{}: OK (1 policy rules)\n", main.display()),
        "{out:?}"
    );
    let doc: serde_json::Value = serde_json::from_str(&check(&["--json"]).stdout).unwrap();
    assert_eq!(
        (doc["ok"].clone(), doc["rules"].clone()),
        (true.into(), 1.into())
    );
}

#[test]
fn check_config_with_a_module_tree_warns_of_patterns_that_match_nothing() {
    let tree = kerneld_tests::daemon::debian_tree();
    let dir = TempDir::new();
    let main = dir.join("kerneld.conf");
    std::fs::write(
        &main,
        "deny module sctpp sctp\ndeny module dcc*\ndeny request net-pf-132\n",
    )
    .unwrap();
    let out = run(
        Command::new(bin("kerneld"))
            .arg("--check-config")
            .arg("--config")
            .arg(&main)
            .arg("--module-dir")
            .arg(tree),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "kerneld: warning: {}:1: module pattern \"sctpp\" matches no module of the tree \
             (deny module sctpp sctp)\n",
            main.display()
        ),
        "{out:?}"
    );
    assert!(
        out.stdout.ends_with("OK (3 policy rules, 1 warning)\n"),
        "{out:?}"
    );
    let out = run(
        Command::new(bin("kerneld"))
            .arg("--check-config")
            .arg("--json")
            .arg("--config")
            .arg(&main)
            .arg("--module-dir")
            .arg(tree),
        LIMIT,
    );
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["warnings"][0]["line"], 1, "{doc}");
    assert_eq!(doc["ok"], true, "{doc}");
}

#[test]
fn print_config_shows_the_merged_lines_with_their_origin() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.join("kerneld.d")).unwrap();
    std::fs::write(dir.join("kerneld.d/20-b.conf"), "delay = 9\n").unwrap();
    std::fs::write(dir.join("kerneld.d/10-a.conf"), "deny request net-pf-31\n").unwrap();
    let main = dir.join("kerneld.conf");
    std::fs::write(
        &main,
        "# comment\ndelay = 60\ninclude kerneld.d/*.conf\nkeep = no\n",
    )
    .unwrap();
    let print = |extra: &[&str]| {
        run(
            Command::new(bin("kerneld"))
                .arg("--print-config")
                .args(extra)
                // The environment names the file, as it does for the shim.
                .env("KERNELD_CONFIG", &main),
            LIMIT,
        )
    };
    let out = print(&[]);
    assert_eq!(out.code(), 0, "{out:?}");
    let d = dir.path().display();
    assert_eq!(
        out.stdout.lines().skip(1).collect::<Vec<_>>(),
        [
            format!("delay = 60  # {d}/kerneld.conf:2"),
            format!("deny request net-pf-31  # {d}/kerneld.d/10-a.conf:1"),
            format!("delay = 9  # {d}/kerneld.d/20-b.conf:1"),
            format!("keep = no  # {d}/kerneld.conf:4"),
        ],
        "{out:?}"
    );
    let out = print(&["--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["lines"][2]["text"], "delay = 9", "{doc}");
    assert_eq!(doc["lines"][2]["line"], 1, "{doc}");
}

//! kdstat and kdsend against the real kerneld (the fake one is in
//! kdstat.rs and kdsend.rs): what they print is what the daemon says and
//! does.
//!
//! Needs the binaries: `cargo build --workspace --bins` first; the policy
//! test needs the Debian module tree (tests/vm/fetch-kernel.sh).

use kerneld_tests::daemon::{unique_reply_id, Kerneld, LIMIT};
use kerneld_tests::fake::{bin, finish, run, spawn, Outcome, TempDir};
use kmod_ipc::{Client, MsgType};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn tool(name: &str, k: &Kerneld, args: &[&str]) -> Outcome {
    run(
        Command::new(bin(name))
            .args(["--key", &k.key_arg(), "--timeout", "30"])
            .args(args),
        LIMIT,
    )
}

fn kdstat(k: &Kerneld, args: &[&str]) -> Outcome {
    let out = tool("kdstat", k, args);
    assert_eq!(out.code(), 0, "kdstat {args:?}: {out:?}\n{}", k.log());
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn classic(k: &Kerneld, delay: u64, keep: &str, debug: &str) -> String {
    format!(
        "Version {VERSION}, pid={}, delay={delay}, {keep}, {debug}",
        k.pid()
    )
}

#[test]
fn kdstat_prints_the_classic_first_line_with_the_daemon_pid() {
    let k = Kerneld::builder().arg("delay=2").start();
    let out = kdstat(&k, &[]);
    assert_eq!(first_line(&out.stdout), classic(&k, 2, "nokeep", "nodebug"));
    assert!(
        out.stdout.contains("\njob queue:\nno jobs waiting\n"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "queue: key {}, id {}, ",
            k.key_arg(),
            k.queue().id()
        )),
        "{out:?}"
    );
    assert_eq!(out.stderr, "");
    // As a classic word and in the configuration too.
    let k = Kerneld::builder()
        .config("delay = 45\nkeep = yes\n")
        .start();
    let out = kdstat(&k, &["status"]);
    assert_eq!(first_line(&out.stdout), classic(&k, 45, "keep", "nodebug"));
}

#[test]
fn each_control_word_takes_effect() {
    let k = Kerneld::start();
    let steps: [(&str, u64, &str, &str); 6] = [
        ("delay=7", 7, "nokeep", "nodebug"),
        ("keep", 7, "keep", "nodebug"),
        ("debug", 7, "keep", "debug"),
        ("nokeep", 7, "nokeep", "debug"),
        ("nodebug", 7, "nokeep", "nodebug"),
        ("delay=3600", 3600, "nokeep", "nodebug"),
    ];
    for (word, delay, keep, debug) in steps {
        let want = classic(&k, delay, keep, debug);
        // The answer to the word shows the change...
        let out = kdstat(&k, &[word]);
        assert_eq!(first_line(&out.stdout), want, "after {word}");
        // ...and so does the next status, and the daemon's log.
        let out = kdstat(&k, &[]);
        assert_eq!(first_line(&out.stdout), want, "status after {word}");
        k.wait_log(&format!("kerneld: control: {word}\n"));
    }
    let j = k.status_json();
    assert_eq!(
        (&j["delay"], &j["keep"], &j["debug"]),
        (&3600.into(), &false.into(), &false.into())
    );
}

#[test]
fn kdstat_flush_drops_waiting_messages_and_says_how_many() {
    let k = Kerneld::start();
    let q = k.queue();
    // Stop the daemon so that messages wait: the flush first, then four
    // more of the same type (the daemon takes the lowest type first, and
    // messages of one type in order).
    k.pause();
    let child = spawn(
        Command::new(bin("kdstat"))
            .args(["--key", &k.key_arg(), "--timeout", "30", "flush"])
            .stdin(Stdio::null()),
    );
    let end = Instant::now() + LIMIT;
    while q.stat().unwrap().messages < 1 {
        assert!(Instant::now() < end, "kdstat sent nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = Client::connect(k.key()).unwrap();
    for _ in 0..3 {
        client.send(MsgType::Status, b"status", 0).unwrap();
    }
    let waiting = unique_reply_id();
    client.send(MsgType::Status, b"status", waiting).unwrap();
    k.signal(libc::SIGCONT);
    let out = finish(child, LIMIT);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(first_line(&out.stdout), "flushed 4 entries", "{out:?}");
    assert_eq!(
        out.stdout.lines().nth(1),
        Some(classic(&k, 60, "nokeep", "nodebug").as_str())
    );
    // A flushed sender that waits is told so rather than left hanging.
    let r = client.wait_reply(waiting, Some(LIMIT)).unwrap();
    assert_eq!(r.status, 1);
    assert_eq!(r.text_lossy(), "flushed by the operator (kdstat flush)");
    assert_eq!(k.queue().stat().unwrap().messages, 0);
    k.wait_log("flushed 4 waiting messages");
    // With nothing waiting:
    let out = kdstat(&k, &["flush"]);
    assert_eq!(first_line(&out.stdout), "flushed 0 entries");
}

#[test]
fn kdstat_json_has_the_documented_fields() {
    let k = Kerneld::builder().arg("delay=5").start();
    let out = kdstat(&k, &["--json"]);
    let j: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("kdstat --json: {e}: {}", out.stdout));
    assert_eq!(j["version"], VERSION);
    assert_eq!(j["pid"], k.pid());
    assert_eq!(j["key"], k.key_arg());
    assert!(j["uptime_seconds"].as_f64().unwrap() >= 0.0, "{j}");
    assert_eq!(j["delay"], 5);
    assert_eq!(j["keep"], false);
    assert_eq!(j["debug"], false);
    assert_eq!(j["jobs"], serde_json::json!([]));
    assert_eq!(j["loaded_modules"], serde_json::json!([]));
    let next = j["next_sweep_seconds"]
        .as_f64()
        .expect("a number without keep");
    assert!((0.0..=5.0).contains(&next), "{j}");
    let c = &j["counters"];
    assert!(c["requests"].is_object(), "{j}");
    // Readiness check and this request: two status requests so far.
    assert_eq!(c["requests"]["debug"], 2, "{j}");
    for f in ["succeeded", "failed", "merged", "expired", "bad_messages"] {
        assert_eq!(c[f], 0, "counters.{f} in {j}");
    }
    let q = &j["queue"];
    for f in ["messages", "bytes", "max_bytes"] {
        assert!(q[f].is_u64(), "queue.{f} in {j}");
    }
    assert_eq!(q["max_bytes"], k.queue().stat().unwrap().max_bytes);
    assert!(j["policy"].is_object(), "{j}");
    assert_eq!(j["policy"]["mode"], "enforce");
    // With keep there is no next sweep.
    kdstat(&k, &["keep"]);
    let out = kdstat(&k, &["--json"]);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["keep"], true);
    assert_eq!(j["next_sweep_seconds"], serde_json::Value::Null);
}

#[test]
fn kdstat_reports_daemon_errors_and_a_stopped_daemon() {
    let mut k = Kerneld::start();
    let out = tool("kdstat", &k, &["frobnicate"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("kdstat: unknown control word \"frobnicate\""),
        "{out:?}"
    );
    assert_eq!(out.stdout, "");
    k.stop();
    let out = tool("kdstat", &k, &[]);
    assert_eq!(out.code(), 3, "{out:?}");
}

#[test]
fn kdsend_without_r_queues_and_returns_and_the_daemon_serves_it() {
    let dir = TempDir::new();
    let k = Kerneld::builder()
        .modprobe(&format!(
            "install kdtest-sent touch {}\n",
            dir.join("ran").display()
        ))
        .start();
    let out = tool("kdsend", &k, &["2", "kdtest-sent"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    k.wait_log("request_module: kdtest-sent: loaded install command for kdtest_sent");
    assert!(dir.join("ran").exists());
    // Id 0: no reply was left on the queue.
    assert_eq!(k.queue().stat().unwrap().messages, 0);
}

#[test]
fn kdsend_with_r_prints_the_daemons_status_and_text() {
    let k = Kerneld::start();
    let out = tool("kdsend", &k, &["-r", "request_module", "kdtest-missing"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "status 1\nkdtest-missing: not found\n");
    let out = tool("kdsend", &k, &["-r", "4", "kdtest-missing"]);
    assert_eq!(
        out.stdout,
        "status 0\nkdtest-missing will be released in 60 s\n"
    );
    let out = tool("kdsend", &k, &["-r", "--old-header", "255", "delay=11"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(
        out.stdout.lines().nth(1),
        Some(classic(&k, 11, "nokeep", "nodebug").as_str())
    );
    let out = tool("kdsend", &k, &["-r", "42", "x"]);
    assert_eq!(out.stdout, "status 1\nunknown message type 42\n");
}

#[test]
fn kdstat_policy_shows_rules_with_hit_counters() {
    let k = Kerneld::builder()
        .debian_tree()
        .config("negative-cache = 0\ndeny request net-pf-31\ndeny module llc\n")
        .start();
    for name in [
        "net-pf-31",
        "net-pf-31",
        "rtnl-link-bridge",
        "rtnl-link-dummy",
    ] {
        k.request(MsgType::RequestModule, name);
    }
    let out = kdstat(&k, &["policy"]);
    let conf = k.config_path();
    assert_eq!(
        out.stdout,
        format!(
            "policy: mode=enforce, match=first, default=allow, lock=no, unknown-requester=user\n\
             \x20      2 hits  deny request net-pf-31  ({conf}:2)\n\
             \x20      1 hits  deny module llc  ({conf}:3)\n",
            conf = conf.display()
        )
    );
}

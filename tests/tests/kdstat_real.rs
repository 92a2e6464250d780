//! kdstat and kdsend against the real kerneld (the fake one is in
//! kdstat.rs and kdsend.rs): what they print is what the daemon says and
//! does.
//!
//! Needs the binaries: `cargo build --workspace --bins` first; the policy
//! test needs the Debian module tree (tests/vm/fetch-kernel.sh).

use kerneld_tests::daemon::{unique_reply_id, Kerneld, LIMIT};
use kerneld_tests::fake::{bin, finish, run, spawn, Outcome, TempDir};
use kmod_ipc::{Client, MsgType};
use std::collections::BTreeSet;
use std::path::Path;
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
        out.stdout.contains("\nno jobs waiting\n") && !out.stdout.contains("job queue:"),
        "the 1995 status: no heading without jobs: {out:?}"
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
fn kdstat_flush_says_what_it_leaves_and_status_counts_it() {
    let k = Kerneld::start();
    let q = k.queue();
    // A message of a type above 255 (a reply, or another program's): not
    // kerneld's to flush, and the status counts it in the queue.
    q.send_raw(300, b"\0\0not for kerneld", false).unwrap();
    let out = kdstat(&k, &["flush"]);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("flushed 0 entries"), "{out:?}");
    assert_eq!(
        lines.next(),
        Some(
            "left 1 message in the queue: replies, and types kerneld does not serve \
             (above 255), are not flushed"
        ),
        "{out:?}"
    );
    assert_eq!(
        lines.next(),
        Some(classic(&k, 60, "nokeep", "nodebug").as_str())
    );
    assert!(
        out.stdout.contains("queue: key ") && out.stdout.contains(", 1 message ("),
        "{out:?}"
    );
    assert_eq!(k.status_json()["queue"]["messages"], 1);
    k.wait_log("flushed 0 waiting messages; left 1 that kerneld does not serve");
    // Ours: taken away again.
    assert!(q
        .recv_raw(kmod_ipc::TypeFilter::Exactly(300), true)
        .unwrap()
        .is_some());
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
    // Readiness check and this request: two status requests so far,
    // counted under the name kdsend gives type 255.
    assert_eq!(c["requests"]["status"], 2, "{j}");
    assert_eq!(c["requests"].get("debug"), None, "{j}");
    assert_eq!(j["schema"], 1, "{j}");
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
        "status 1\nkdtest-missing: kerneld did not load it (kdstat lists what it loaded)\n"
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

/// The JSON part of kdstat --help: from its heading to the exit statuses.
fn help_json_section() -> String {
    let out = run(Command::new(bin("kdstat")).arg("--help"), LIMIT);
    assert_eq!(out.code(), 0, "{out:?}");
    let start = out.stdout.find("JSON (--json)").expect("a JSON section");
    let end = out
        .stdout
        .find("Exit status:")
        .expect("an exit status section");
    out.stdout[start..end].to_string()
}

/// The JSON STATUS section of kdstat(8), as roff source lines.
fn man_json_section() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/kdstat.8");
    let page = std::fs::read_to_string(&path).unwrap();
    page.lines()
        .skip_while(|l| *l != ".SH JSON STATUS")
        .skip(1)
        .take_while(|l| !l.starts_with(".SH "))
        .map(str::to_string)
        .collect()
}

/// The words of a text: runs of letters, digits and underscores, with
/// roff's hyphen escape read as a hyphen.
fn words(text: &str) -> BTreeSet<String> {
    let mut text = text.replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        text = text.replace(font, "");
    }
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The arguments of a roff macro line, quotes removed.
fn macro_args(line: &str) -> Vec<String> {
    let rest = line.split_once(' ').map_or("", |(_, r)| r);
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// Every key of the document at every depth, by name, but not the keys
/// of maps keyed by data (the request counters by type name).
fn key_names(v: &serde_json::Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) if path != "counters.requests" => {
            for (k, v) in m {
                out.insert(k.clone());
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                key_names(v, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                key_names(v, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn json_fields_agree_with_help_and_manual() {
    // A daemon with a policy rule and a recent request, so that those
    // objects have their fields.
    let k = Kerneld::builder()
        .config("deny request kdtest-denied\n")
        .start();
    k.request(MsgType::RequestModule, "kdtest-missing");
    let j = k.status_json();
    let help = help_json_section();
    let man = man_json_section();
    let (help_words, man_words) = (words(&help), words(&man.join("\n")));

    // The schema number is the one both describe.
    let schema = j["schema"].as_u64().expect("a schema number");
    assert!(help.contains(&format!("schema {schema}")), "{help}");
    assert!(
        man.iter().any(|l| l.contains(&format!("schema {schema}"))),
        "kdstat(8) does not describe schema {schema}"
    );

    // Top level: the same fields in the document, the help and the page.
    let doc_top: BTreeSet<String> = j.as_object().unwrap().keys().cloned().collect();
    // Help: the lines indented by two spaces that start with a field name,
    // names before the column of types ("keep, debug   boolean").
    let help_top: BTreeSet<String> = help
        .lines()
        .filter(|l| l.starts_with("  ") && l[2..].starts_with(|c: char| c.is_ascii_lowercase()))
        .flat_map(|l| {
            let names = l[2..].split("  ").next().unwrap();
            names.split(", ").map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    // Page: the bold names of each tag line (the line after .TP).
    let mut man_top = BTreeSet::new();
    for pair in man.windows(2) {
        if pair[0] != ".TP" {
            continue;
        }
        let line = &pair[1];
        let args = macro_args(line);
        let bold: Vec<&String> = if line.starts_with(".BR ") {
            args.iter().step_by(2).collect()
        } else if line.starts_with(".B ") {
            args.iter().take(1).collect()
        } else {
            Vec::new()
        };
        man_top.extend(bold.into_iter().map(|s| s.replace("\\-", "-")));
    }
    // kdstat itself adds kernel_shim while the kerneld_shim module is
    // loaded: documented with the daemon's fields, never in its document.
    let mut doc_top = doc_top;
    doc_top.insert("kernel_shim".to_string());
    assert_eq!(help_top, doc_top, "kdstat --help against the document");
    assert_eq!(man_top, doc_top, "kdstat(8) against the document");

    // Every field name at any depth is named in both.
    let mut names = BTreeSet::new();
    key_names(&j, "", &mut names);
    for name in &names {
        assert!(help_words.contains(name), "{name} is not in kdstat --help");
        assert!(man_words.contains(name), "{name} is not in kdstat(8)");
    }
}

#[test]
fn status_text_counts_in_words() {
    let k = Kerneld::start();
    // A message of a type kerneld never receives stays in the queue.
    let out = tool("kdsend", &k, &["300", "kdtest-stays"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let out = kdstat(&k, &[]);
    let queue_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("queue: "))
        .unwrap_or_else(|| panic!("no queue line: {out:?}"));
    assert!(
        queue_line.contains(", 1 message ("),
        "one message, singular: {queue_line}"
    );
    let requests = out
        .stdout
        .lines()
        .find(|l| l.starts_with("requests: "))
        .unwrap_or_else(|| panic!("no requests line: {out:?}"));
    // Type 255 counted under the name kdsend and kerneld(7) give it.
    assert!(requests.contains("status "), "{requests}");
    assert!(!requests.contains("debug"), "{requests}");
    let policy = out
        .stdout
        .lines()
        .find(|l| l.starts_with("policy: "))
        .unwrap_or_else(|| panic!("no policy line: {out:?}"));
    assert!(policy.starts_with("policy: 0 rules, "), "{policy}");
    let k = Kerneld::builder().config("deny request kdtest-x\n").start();
    let out = kdstat(&k, &[]);
    assert!(out.stdout.contains("\npolicy: 1 rule, "), "{out:?}");
}

#[test]
fn kdsend_e_exits_with_the_answers_status() {
    let k = Kerneld::start();
    // Not found: status 1, exit 1, as modprobe; the answer is printed.
    let out = tool("kdsend", &k, &["-e", "request_module", "kdtest-missing"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout, "status 1\nkdtest-missing: not found\n");
    // Status 0: exit 0.
    let out = tool("kdsend", &k, &["--exit-status", "255", "status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.starts_with("status 0\nVersion "), "{out:?}");
    // Without -e an answer with status 1 still exits 0.
    let out = tool("kdsend", &k, &["-r", "request_module", "kdtest-missing"]);
    assert_eq!(out.code(), 0, "{out:?}");
}

/// `kdstat why` for a module that is not loaded answers from what kerneld
/// saw: the denial with its rule and requester, the failure answered from
/// memory, or that it was not asked for lately.
#[test]
fn kdstat_why_says_what_became_of_a_module_that_is_not_loaded() {
    let k = Kerneld::builder()
        .debian_tree()
        .config("negative-cache = 600\ndeny module minix\n")
        .start();
    let r = k.request(MsgType::RequestModule, "fs-minix");
    assert_eq!(r.status, 1, "{r:?}");
    let out = kdstat(&k, &["why", "minix"]);
    assert!(out.stdout.starts_with("minix: not loaded ("), "{out:?}");
    let rule = format!("deny module minix ({}:2)", k.config_path().display());
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(" denied: fs-minix: denied by policy: "))
        .unwrap_or_else(|| panic!("no denial line: {out:?}"));
    assert!(line.contains(&rule), "{out:?}");
    // For whom: a request sent straight to the queue has no traced
    // requester, and says so.
    assert!(
        line.contains("; requested by pid ") || line.ends_with("; requester unknown"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("  answered from memory for "),
        "{out:?}"
    );
    let out = kdstat(&k, &["why", "minix", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["schema"], 1, "{j}");
    assert_eq!(j["requests"][0]["outcome"], "denied", "{j}");
    assert_eq!(j["requests"][0]["requested_as"], "fs-minix", "{j}");
    assert!(j["remembered"]["seconds_left"].as_u64().unwrap() > 0, "{j}");
    // Never asked for.
    let out = kdstat(&k, &["why", "appletalk"]);
    assert!(
        out.stdout
            .contains("  not requested lately: none of the last "),
        "{out:?}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&kdstat(&k, &["why", "appletalk", "--json"]).stdout).unwrap();
    assert_eq!(j["requests"], serde_json::json!([]), "{j}");
    assert_eq!(j["remembered"], serde_json::Value::Null, "{j}");
}

/// The status says what the kernel runs as its module helper, and whether
/// it is kerneld's shim: without it no request reaches kerneld.
#[test]
fn the_status_names_the_module_helper_and_whether_it_is_the_shim() {
    let dir = TempDir::new();
    let proc_file = dir.join("modprobe");
    std::fs::write(&proc_file, "/sbin/modprobe\n").unwrap();
    let k = Kerneld::builder()
        .env("KERNELD_PROC_MODPROBE", &proc_file)
        .start();
    let out = kdstat(&k, &[]);
    assert!(
        out.stdout.contains(
            "\nmodule helper: /sbin/modprobe (not kerneld's shim: the kernel's requests do not \
             reach kerneld; kerneld --register or kerneld-modprobe --register)\n"
        ),
        "{out:?}"
    );
    let shim = bin("kerneld-modprobe");
    std::fs::write(&proc_file, format!("{}\n", shim.display())).unwrap();
    let out = kdstat(&k, &[]);
    assert!(
        out.stdout.contains(&format!(
            "\nmodule helper: {} (kerneld's shim)\n",
            shim.display()
        )),
        "{out:?}"
    );
    let j = k.status_json();
    assert_eq!(j["helper"]["path"], shim.display().to_string(), "{j}");
    assert_eq!(j["helper"]["kerneld_shim"], true, "{j}");
}

//! Strings a requester controls never reach the administrator's terminal
//! or the log raw.  An unprivileged user chooses its command name (any 15
//! bytes but NUL, with prctl(PR_SET_NAME)) and may name its cgroups: with
//! ESC, BEL, CSI, CR and LF in them, the real kerneld and the real kdstat
//! must show them escaped (`\x1b`, `\n`) in text, and JSON must carry
//! them as JSON escapes that parse back to the same string.
//!
//! The requester comes in the origin extension the in-kernel sender
//! appends to a request, as the kernel module would write it.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{unique_reply_id, Kerneld, LIMIT};
use kerneld_tests::fake::{bin, run, Outcome, TempDir};
use kmod_ipc::origin::RequestOrigin;
use kmod_ipc::{Client, MsgType};
use std::os::unix::net::UnixDatagram;
use std::process::Command;

/// request_module: the type of the in-kernel sender's requests.
const REQUEST_MODULE: i64 = 2;

/// 14 bytes: clear the screen, a carriage return and a line feed that
/// would forge a line, a bell, CSI as one C1 character, DEL.
const COMM: &str = "\x1b[2J\r\nok\x07\u{9b}1m\x7f";
/// What text output shows instead.
const COMM_SHOWN: &str = "\\x1b[2J\\r\\nok\\a\\xc2\\x9b1m\\x7f";
/// A cgroup name that sets the terminal's title.
const CGROUP: &str = "/user.slice/\x1b]0;owned\x07\nx";
const CGROUP_SHOWN: &str = "/user.slice/\\x1b]0;owned\\a\\nx";

/// The bytes that must not reach a terminal: C0 but line feeds, DEL, and
/// the C1 characters (U+0080 to U+009F).
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| c != '\n' && c.is_control())
        .collect()
}

fn kdstat(k: &Kerneld, args: &[&str]) -> Outcome {
    let out = run(
        Command::new(bin("kdstat"))
            .args(args)
            .arg("--key")
            .arg(k.key_arg()),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "kdstat {args:?}: {out:?}");
    out
}

/// The requester, as the kernel names it.
fn origin() -> RequestOrigin {
    RequestOrigin {
        pid: 4243,
        uid: 65534,
        gid: 65534,
        comm: COMM.into(),
        cgroup: CGROUP.into(),
    }
}

#[test]
fn a_hostile_comm_and_cgroup_are_escaped_in_status_logs_and_journal() {
    let dir = TempDir::new();
    let journal_path = dir.join("journal.sock");
    let journal = UnixDatagram::bind(&journal_path).unwrap();
    journal.set_read_timeout(Some(LIMIT)).unwrap();
    let k = Kerneld::builder()
        .env("KERNELD_JOURNAL_SOCKET", &journal_path)
        .start();

    let id = unique_reply_id();
    let body = origin().request_body(id, b"kdtest-hostile").unwrap();
    k.queue().send_raw(REQUEST_MODULE, &body, false).unwrap();
    let reply = Client::connect(k.key())
        .unwrap()
        .wait_reply(id, Some(LIMIT))
        .unwrap();
    assert_eq!(reply.status, 1, "{}", reply.text_lossy());

    // The log line (stderr in the foreground): escaped, on one line.
    let log = k.wait_log("request_module for pid 4243 ");
    let line = log
        .lines()
        .find(|l| l.contains("request_module for pid 4243 "))
        .unwrap();
    assert!(
        line.contains(&format!("({COMM_SHOWN}) cgroup {CGROUP_SHOWN}")),
        "{line}"
    );
    assert_eq!(raw_controls(&log), [], "{log:?}");

    // The journal: MESSAGE and the fields escaped the same way.
    let mut buf = vec![0u8; 65536];
    let entry = loop {
        let n = journal
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no journal entry for the request ({e})"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains("REQUEST=kdtest-hostile\n") {
            break text;
        }
    };
    assert!(
        entry.contains(&format!("\nREQUESTER_COMM={COMM_SHOWN}\n")),
        "{entry:?}"
    );
    assert!(
        entry.contains(&format!("\nREQUESTER_CGROUP={CGROUP_SHOWN}\n")),
        "{entry:?}"
    );
    let message = entry
        .lines()
        .find_map(|l| l.strip_prefix("MESSAGE="))
        .unwrap();
    assert!(message.contains(COMM_SHOWN), "{entry:?}");
    // Each line of the entry is one field: nothing forged.
    assert!(entry.lines().all(|l| l.contains('=')), "{entry:?}");
    assert_eq!(raw_controls(&entry), [], "{entry:?}");

    // kdstat's text: the recent request with its requester, escaped.
    let out = kdstat(&k, &[]);
    assert!(
        out.stdout
            .contains(&format!("kdtest-hostile from pid 4243 uid 65534 gid 65534 ({COMM_SHOWN}) cgroup {CGROUP_SHOWN}:")),
        "{out:?}"
    );
    assert_eq!(raw_controls(&out.stdout), [], "{:?}", out.stdout);

    // kdstat --json: no raw control byte either, and it parses back to
    // the requester's own bytes.
    let out = kdstat(&k, &["--json"]);
    assert_eq!(raw_controls(&out.stdout), [], "{:?}", out.stdout);
    assert_eq!(out.stdout.matches('\n').count(), 1, "{:?}", out.stdout);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let recent = j["recent_requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "kdtest-hostile")
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(recent["requester"]["comm"], COMM, "{j}");
    assert_eq!(recent["requester"]["cgroup"], CGROUP, "{j}");
}

#[test]
fn kdstat_why_escapes_a_recorded_hostile_requester() {
    // The record as kerneld writes it after loading a module for such a
    // requester (JSON carries the raw bytes).
    let requester = serde_json::json!({
        "pid": 4243, "uid": 65534, "gid": 65534,
        "comm": COMM, "cgroup": CGROUP, "parent_comm": COMM,
    });
    let record = serde_json::json!({
        "dummy": {
            "requested_as": "rtnl-link-dummy", "dependencies": [],
            "loaded_at": 1_700_000_000u64, "unused_sweeps": 0,
            "requester": requester, "allowed_by": "default",
        }
    });
    let k = Kerneld::builder()
        .record(&record.to_string())
        .arg("keep")
        .start();

    let out = kdstat(&k, &["why", "dummy"]);
    assert!(
        out.stdout.contains(&format!(
            "requested by pid 4243 ({COMM_SHOWN}, uid 65534, gid 65534, {CGROUP_SHOWN}, parent {COMM_SHOWN})"
        )),
        "{out:?}"
    );
    assert_eq!(raw_controls(&out.stdout), [], "{:?}", out.stdout);
    // Two lines, as for any module: none forged.
    assert_eq!(out.stdout.lines().count(), 2, "{:?}", out.stdout);

    let out = kdstat(&k, &["why", "dummy", "--json"]);
    assert_eq!(raw_controls(&out.stdout), [], "{:?}", out.stdout);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["modules"][0]["requester"]["comm"], COMM, "{j}");
    assert_eq!(j["modules"][0]["requester"]["parent_comm"], COMM, "{j}");
    assert_eq!(j["modules"][0]["requester"]["cgroup"], CGROUP, "{j}");
}

#[test]
fn a_module_name_with_escapes_is_logged_and_answered_escaped() {
    let k = Kerneld::builder().start();
    let name = "kdtest-\x1b[31m\r\nfake";
    let r = k.request(MsgType::RequestModule, name);
    assert_ne!(r.status, 0, "{}", r.text_lossy());
    // kdsend shows the answer escaped.
    let out = run(
        Command::new(bin("kdsend"))
            .args(["-r", "request_module", name, "--key"])
            .arg(k.key_arg()),
        LIMIT,
    );
    assert_eq!(raw_controls(&out.stdout), [], "{out:?}");
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("fake")),
        "{out:?}"
    );
    // Refused (names are checked), and said so on one line.
    let log = k.wait_log_count("refused request_module for \"kdtest-", 2);
    assert_eq!(raw_controls(&log), [], "{log:?}");
    assert!(!log.lines().any(|l| l.starts_with("fake")), "{log}");
}

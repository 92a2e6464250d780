//! The journal and systemd (issue 16): kerneld's entries in the journal's
//! native protocol carry MESSAGE_ID per event kind and the fields kerneld(8)
//! documents (REQUEST=, MODULE=, STATUS=, POLICY_RULE=, REQUESTER_*=), and
//! sd_notify says READY=1, STATUS=, RELOADING=1 with MONOTONIC_USEC, and
//! STOPPING=1.  A real kerneld, with KERNELD_JOURNAL_SOCKET and
//! NOTIFY_SOCKET on datagram sockets this test binds.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{unique_reply_id, Kerneld, LIMIT};
use kerneld_tests::fake::TempDir;
use kmod_ipc::origin::RequestOrigin;
use kmod_ipc::{Client, MsgType};

/// request_module: the type of the in-kernel sender's requests.
const REQUEST_MODULE: i64 = 2;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Instant;

/// The MESSAGE_IDs of kerneld(8), JOURNAL.
const STARTED: &str = "d453e4ba6e84425fa4c87ffaa724afb3";
const STOPPED: &str = "e31fbf7c4dd24a21a8e173b489192a64";
const RELOADED: &str = "a569f17c24324775980e4777eb94405d";
const REQUEST_FAILED: &str = "f49091f9fa044775ac7f4d94cb5dd67f";
const POLICY_DENIED: &str = "924e3d83b1274710a87e64c9ef5c0dd4";

/// One entry: its fields in order (a key may repeat).
type Entry = Vec<(String, String)>;

fn parse(datagram: &[u8]) -> Entry {
    let text = std::str::from_utf8(datagram).expect("kerneld sends UTF-8 text fields");
    assert!(
        text.ends_with('\n'),
        "entry not newline-terminated: {text:?}"
    );
    text.lines()
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("a line without '=' (binary form?): {l:?}"));
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "bad field name {k:?}"
            );
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn get<'a>(e: &'a Entry, key: &str) -> Vec<&'a str> {
    e.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn one<'a>(e: &'a Entry, key: &str) -> &'a str {
    match get(e, key).as_slice() {
        [v] => v,
        other => panic!("{key}: {other:?} in {e:?}"),
    }
}

/// A datagram socket bound in `dir`, reading with a timeout of LIMIT.
fn bind(dir: &Path, name: &str) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join(name);
    let s = UnixDatagram::bind(&path).expect("bind a datagram socket");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    (s, path)
}

/// Read datagrams until one satisfies `want`; the ones before it too.
fn until(
    s: &UnixDatagram,
    what: &str,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + LIMIT;
    let mut buf = vec![0u8; 65536];
    loop {
        assert!(Instant::now() < end, "{what}: not received; got {seen:#?}");
        let n = s
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: nothing received ({e}); got {seen:#?}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(text.clone());
        if want(&text) {
            return text;
        }
    }
}

fn entry_with(s: &UnixDatagram, seen: &mut Vec<String>, id: &str, field: &str) -> Entry {
    let text = until(s, &format!("MESSAGE_ID={id} with {field}"), seen, |t| {
        t.contains(&format!("MESSAGE_ID={id}\n"))
            && format!("\n{t}").contains(&format!("\n{field}\n"))
    });
    parse(text.as_bytes())
}

#[test]
fn journal_entries_carry_message_ids_and_fields() {
    let dir = TempDir::new();
    let (journal, path) = bind(dir.path(), "journal.sock");
    let mut k = Kerneld::builder()
        .env("KERNELD_JOURNAL_SOCKET", &path)
        .config("deny request sctp\n")
        .start();
    let mut seen = Vec::new();

    let started = entry_with(&journal, &mut seen, STARTED, "SYSLOG_IDENTIFIER=kerneld");
    assert!(
        one(&started, "MESSAGE").starts_with("started, version "),
        "{started:?}"
    );
    assert_eq!(one(&started, "PRIORITY"), "5");
    assert_eq!(one(&started, "SYSLOG_FACILITY"), "3");

    // A request the policy denies, from a requester the in-kernel sender
    // names: the policy's entry and the request's.
    let origin = RequestOrigin {
        pid: 4242,
        uid: 1000,
        gid: 1000,
        comm: "trigger".into(),
        cgroup: "/user.slice/user-1000.slice".into(),
    };
    let id = unique_reply_id();
    let body = origin.request_body(id, b"sctp").unwrap();
    k.queue().send_raw(REQUEST_MODULE, &body, false).unwrap();
    let client = Client::connect(k.key()).unwrap();
    let reply = client.wait_reply(id, Some(LIMIT)).unwrap();
    assert_eq!(reply.status, 1, "{}", reply.text_lossy());

    // One entry: the request's, of the policy's kind, with the rule.
    let policy = entry_with(&journal, &mut seen, POLICY_DENIED, "REQUEST=sctp");
    assert_eq!(get(&policy, "MODULE"), ["sctp"], "{policy:?}");
    assert!(
        one(&policy, "POLICY_RULE").starts_with("deny request sctp ("),
        "{policy:?}"
    );
    assert_eq!(one(&policy, "STATUS"), "1");
    assert_eq!(one(&policy, "REQUESTER_PID"), "4242");
    assert_eq!(one(&policy, "REQUESTER_UID"), "1000");
    assert_eq!(one(&policy, "REQUESTER_COMM"), "trigger");
    assert_eq!(
        one(&policy, "REQUESTER_CGROUP"),
        "/user.slice/user-1000.slice"
    );
    // A denial is a warning, as any failed request.
    assert_eq!(one(&policy, "PRIORITY"), "4");
    assert!(
        one(&policy, "MESSAGE").starts_with("request_module for pid 4242 uid 1000"),
        "{policy:?}"
    );
    assert!(
        one(&policy, "MESSAGE").contains("sctp: denied by policy: deny request sctp ("),
        "{policy:?}"
    );
    assert!(one(&policy, "MESSAGE").ends_with(" ms)"), "{policy:?}");

    // A name that is not found, from a queue writer (no requester known).
    let r = k.request(MsgType::RequestModule, "no-such-module-xyz");
    assert_eq!(r.status, 1);
    let missing = entry_with(
        &journal,
        &mut seen,
        REQUEST_FAILED,
        "REQUEST=no-such-module-xyz",
    );
    assert!(get(&missing, "REQUESTER_PID").is_empty(), "{missing:?}");
    assert!(
        one(&missing, "MESSAGE").contains("not found"),
        "{missing:?}"
    );

    k.sighup();
    entry_with(&journal, &mut seen, RELOADED, "PRIORITY=5");

    k.stop();
    let stopped = entry_with(&journal, &mut seen, STOPPED, "MESSAGE=stopped");
    assert_eq!(one(&stopped, "SYSLOG_IDENTIFIER"), "kerneld");
    // Every entry is well formed, and lines with no kind carry no MESSAGE_ID.
    for s in &seen {
        let e = parse(s.as_bytes());
        assert_eq!(get(&e, "MESSAGE").len(), 1, "{e:?}");
        assert!(get(&e, "MESSAGE_ID").len() <= 1, "{e:?}");
    }
    read_back_with_journalctl(&dir, &seen);
}

/// What journald would store, read back by journalctl: the entries in the
/// journal's export format, written to a journal file by
/// systemd-journal-remote, then `journalctl --file F -t kerneld MODULE=sctp`.
fn read_back_with_journalctl(dir: &TempDir, entries: &[String]) {
    let remote = Path::new("/lib/systemd/systemd-journal-remote");
    assert!(
        remote.exists(),
        "{} is missing: install systemd-journal-remote (scripts/install-deps.sh)",
        remote.display()
    );
    let mut export = String::new();
    for (i, e) in entries.iter().enumerate() {
        // The fields journald adds itself (trusted, with a leading _ or __).
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=4b0c8e5d7c1e4a3e9f1d2c3b4a596877\n",
            1_700_000_000_000_000u64 + i as u64,
            1 + i
        ));
        export.push_str(e);
        export.push('\n');
    }
    let export_path = dir.join("entries.export");
    std::fs::write(&export_path, export).unwrap();
    let file = dir.join("kerneld.journal");
    let out = std::process::Command::new(remote)
        .arg("-o")
        .arg(&file)
        .arg(&export_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "systemd-journal-remote: {out:?}");
    let query = |matches: &[&str]| -> Vec<serde_json::Value> {
        let out = std::process::Command::new("journalctl")
            .arg("--file")
            .arg(&file)
            .args(["-o", "json", "-t", "kerneld"])
            .args(matches)
            .output()
            .unwrap();
        assert!(out.status.success(), "journalctl: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let sctp = query(&["MODULE=sctp"]);
    let ids: Vec<&str> = sctp
        .iter()
        .map(|e| e["MESSAGE_ID"].as_str().unwrap_or(""))
        .collect();
    // One entry per request, a denial's too.
    assert_eq!(ids, [POLICY_DENIED], "{sctp:#?}");
    assert_eq!(sctp[0]["REQUESTER_COMM"], "trigger");
    let denied = query(&[&format!("MESSAGE_ID={POLICY_DENIED}")]);
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["REQUEST"], "sctp");
}

#[test]
fn without_the_journal_socket_lines_still_go_to_stderr() {
    let dir = TempDir::new();
    let k = Kerneld::builder()
        .env("KERNELD_JOURNAL_SOCKET", dir.join("absent.sock"))
        .start();
    k.request(MsgType::RequestModule, "no-such-module-abc");
    k.wait_log("request_module: no-such-module-abc: not found");
}

#[test]
fn sd_notify_says_ready_reloading_and_stopping() {
    let dir = TempDir::new();
    let (notify, path) = bind(dir.path(), "notify.sock");
    let mut k = Kerneld::builder().env("NOTIFY_SOCKET", &path).start();
    let mut seen = Vec::new();
    let ready = until(&notify, "READY=1", &mut seen, |t| t.contains("READY=1\n"));
    assert!(ready.contains(&format!("MAINPID={}\n", k.pid())), "{ready}");
    assert!(ready.contains("STATUS=serving key "), "{ready}");
    // Before it: what it was doing while starting.
    assert!(
        seen.iter()
            .any(|s| s == "STATUS=starting: claiming the queue\n"),
        "{seen:#?}"
    );

    let before = monotonic_usec();
    k.sighup();
    let reloading = until(&notify, "RELOADING=1", &mut seen, |t| {
        t.contains("RELOADING=1\n")
    });
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading}"))
        .parse()
        .unwrap();
    assert!(
        usec >= before && usec <= monotonic_usec(),
        "{usec} vs {before}"
    );
    let again = until(&notify, "READY=1 after the reload", &mut seen, |t| {
        t.contains("READY=1\n")
    });
    assert!(
        again.contains("STATUS=serving, reloaded by SIGHUP"),
        "{again}"
    );

    k.stop();
    until(&notify, "STOPPING=1", &mut seen, |t| {
        t.starts_with("STOPPING=1\n")
    });
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
}

/// A journal that never reads (a hung journald) must not slow requests:
/// kerneld sends without blocking, drops what the journal does not take
/// and counts it.  A real datagram socket, bound and never read, whose
/// queue fills after a few lines (net.unix.max_dgram_qlen, 10 by default).
#[test]
fn a_journal_that_never_reads_slows_no_request() {
    const N: usize = 300;
    let dir = TempDir::new();
    let (journal, path) = bind(dir.path(), "hung-journal.sock");
    let k = Kerneld::builder()
        .env("KERNELD_JOURNAL_SOCKET", &path)
        .start();
    let client = Client::connect(k.key()).unwrap();
    let began = Instant::now();
    // All at once, as a flood of requests would come; each name is new,
    // so each is looked up, answered and logged.
    let ids: Vec<i64> = (0..N)
        .map(|i| {
            let id = unique_reply_id();
            client
                .send(
                    MsgType::RequestModule,
                    format!("no-such-module-hung-{i}").as_bytes(),
                    id,
                )
                .unwrap();
            id
        })
        .collect();
    for (i, id) in ids.into_iter().enumerate() {
        let reply = client
            .wait_reply(id, Some(LIMIT))
            .unwrap_or_else(|e| panic!("request {i} of {N}: {e}\n{}", k.log()));
        assert_eq!(reply.status, 1, "{}", reply.text_lossy());
    }
    // Not asserted (no timed assertions), but shown with --nocapture.
    eprintln!(
        "{N} requests answered in {:.2} s with a journal that never reads",
        began.elapsed().as_secs_f64()
    );
    let dropped = k.counter("journal_dropped");
    assert!(dropped > 0, "no journal line counted as dropped");
    // The text status says it too (lines logged since may add to it).
    let text = k.control("status").text_lossy();
    let shown: u64 = text
        .split("journal lines dropped ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `journal lines dropped N` in:\n{text}"));
    assert!(shown >= dropped, "{text}");
    // Said once in the log, not once per line.
    let log = k.wait_log("the journal does not take lines");
    assert_eq!(
        log.matches("the journal does not take lines").count(),
        1,
        "{log}"
    );

    // The journal reads again: once its pause is over kerneld tries it
    // again, and tells it how many lines it missed.
    journal.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    while journal.recv(&mut buf).is_ok() {}
    journal.set_nonblocking(false).unwrap();
    let end = Instant::now() + LIMIT;
    let mut i = 0;
    let back = loop {
        assert!(Instant::now() < end, "kerneld never used the journal again");
        // A line to send (each name new, so each is logged).
        i += 1;
        k.request(MsgType::RequestModule, &format!("no-such-module-back-{i}"));
        let log = k.log();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("the journal takes lines again"))
        {
            break l.to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(back.contains(" were dropped while it did not"), "{back}");
    let mut seen = Vec::new();
    until(&journal, "the account of dropped lines", &mut seen, |t| {
        t.contains("MESSAGE=the journal takes lines again; ")
    });
}

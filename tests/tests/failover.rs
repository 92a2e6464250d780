//! When kerneld dies (issue 22, section 1): the senders fall back at once
//! instead of waiting on the queue it left behind, a request in flight is
//! taken back so that nothing performs it twice, kdstat says what is left,
//! and the next kerneld drops what nobody waits for.  Real kerneld
//! processes killed with SIGKILL, the real shim and kdstat, real queues.
//!
//! The messages left in the queue are built here byte by byte from the
//! 1995 layout (`long mtype; long id; char text[]`), not with kmod-ipc.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{Kerneld, LIMIT};
use kerneld_tests::fake::{bin, finish, run, spawn};
use kerneld_tests::shim::Setup;
use kmod_ipc::{Client, Queue};
use std::process::Command;
use std::time::Duration;

/// A pid that ran and is gone.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("run true");
    let pid = c.id();
    c.wait().expect("reap true");
    pid
}

/// A message body in the 1995 layout with the new header: `long id;
/// short version = 2; short pid;` then the text, no NUL.
fn body(id: i64, text: &[u8]) -> Vec<u8> {
    let mut b = id.to_ne_bytes().to_vec();
    b.extend_from_slice(&2i16.to_ne_bytes());
    b.extend_from_slice(&0i16.to_ne_bytes());
    b.extend_from_slice(text);
    b
}

const HELPER_ID_FIRST: i64 = 0x8000_0000;

#[test]
fn after_sigkill_the_shim_falls_back_without_sending() {
    let mut k = Kerneld::start();
    let pid = k.pid();
    k.sigkill();
    let q = Queue::open(k.key()).expect("the queue stays after SIGKILL");

    let shim = Setup::new("");
    let out = shim.request(k.key(), "net-pf-10");
    assert_eq!(out.code(), 0, "{out:?} {}", shim.log());
    assert_eq!(
        shim.modprobe_argv(),
        Some(vec!["-q".into(), "--".into(), "net-pf-10".into()])
    );
    let log = shim.log();
    assert!(
        log.contains(&format!(
            "kerneld (pid {pid}) is not running; its queue at key"
        )),
        "{log}"
    );
    assert!(log.contains("kerneld.pid"), "names the pid file: {log}");
    assert_eq!(q.stat().unwrap().messages, 0, "nothing sent to the dead");

    // shim-fallback = fail: fails, still unsent.
    let shim = Setup::new("shim-fallback = fail\n");
    assert_eq!(shim.request(k.key(), "net-pf-10").code(), 1);
    assert_eq!(shim.modprobe_argv(), None);
    assert_eq!(q.stat().unwrap().messages, 0);
}

#[test]
fn a_request_unread_when_kerneld_dies_is_taken_back_then_falls_back() {
    let mut k = Kerneld::start();
    // Stopped: alive for the shim, so it sends and waits; unread.
    k.pause();
    let shim = Setup::new("");
    let child = spawn(&mut shim.command(k.key(), &["-q", "--", "kdtest-in-flight"]));
    let q = k.queue();
    let sent = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        q.stat().unwrap().messages == 1
    });
    assert!(
        sent,
        "the shim sent nothing to a live kerneld: {}",
        shim.log()
    );
    k.sigkill();
    let out = finish(child, LIMIT);
    assert_eq!(out.code(), 0, "{out:?} {}", shim.log());
    assert_eq!(
        shim.modprobe_argv(),
        Some(vec!["-q".into(), "--".into(), "kdtest-in-flight".into()])
    );
    assert!(shim.log().contains("request taken back"), "{}", shim.log());
    assert_eq!(q.stat().unwrap().messages, 0, "taken back");

    // The next kerneld finds nothing to perform: modprobe did it.
    k.restart();
    k.wait_log("took over kerneld's own queue");
    assert!(!k.log().contains("kdtest-in-flight"), "{}", k.log());
}

#[test]
fn kdstat_says_a_killed_kerneld_is_not_running() {
    let mut k = Kerneld::start();
    let pid = k.pid();
    k.sigkill();
    let out = run(
        Command::new(bin("kdstat")).args(["--key", &k.key_arg()]),
        LIMIT,
    );
    assert_eq!(out.code(), 3, "{out:?}");
    let want = format!("kdstat: kerneld (pid {pid}) is not running; its queue at key");
    assert!(out.stderr.starts_with(&want), "{out:?}");
    assert!(out.stderr.contains("is left with 0 messages"), "{out:?}");
    let pid_file = k.dir().join("state").join("kerneld.pid");
    assert!(
        out.stderr
            .contains(&format!("pid file {} names pid {pid}", pid_file.display())),
        "{out:?}"
    );
    assert!(out.stderr.contains("last receiver"), "{out:?}");
    assert_eq!(k.queue().stat().unwrap().messages, 0, "nothing sent");
}

#[test]
fn the_successor_drops_what_nobody_waits_for_and_serves_the_rest() {
    let mut k = Kerneld::start();
    k.pause();
    let q = k.queue();
    let gone = dead_pid();
    // A helper killed while waiting, its reply, a tool that gave up.
    q.send_raw(
        2,
        &body(HELPER_ID_FIRST + i64::from(gone), b"kdtest-stale-helper"),
        true,
    )
    .unwrap();
    q.send_raw(HELPER_ID_FIRST + i64::from(gone), &body(0, b""), true)
        .unwrap();
    q.send_raw(255, &body(1024 + i64::from(gone), b""), true)
        .unwrap();
    // A tool that still waits (this process, 1024 + pid, just now).
    let mine = 1024 + i64::from(std::process::id());
    q.send_raw(255, &body(mine, b""), true).unwrap();
    k.sigkill();
    assert_eq!(q.stat().unwrap().messages, 4);

    k.restart();
    let log = k.wait_log("took over kerneld's own queue");
    assert!(
        log.contains(
            "4 messages waiting); dropped 2 requests whose senders stopped waiting and 1 replies \
             nobody reads, kept 1"
        ),
        "{log}"
    );
    // The live tool's request was served.
    let reply = Client::connect(k.key())
        .unwrap()
        .wait_reply(mine, Some(LIMIT))
        .expect("the kept request's answer");
    assert_eq!(reply.status, 0, "{reply:?}");
    assert!(!log.contains("kdtest-stale-helper"), "{log}");
}

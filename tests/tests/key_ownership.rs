//! The key is kerneld's (issue 13, sections 4 and 5; issue 22): a queue a
//! squatter made at the key is removed by kerneld and taken by the shim
//! for "kerneld not running", and one
//! kerneld serves a key per message type.  Real processes on real queues:
//! the squatter is `kerneld-test-squatter`, which becomes nobody before it
//! calls msgget.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{Kerneld, LIMIT};
use kerneld_tests::fake::{bin, run, unused_key, RawQueue};
use kerneld_tests::shim::Setup;
use kmod_ipc::{Error, Key, MsgType, Queue};
use std::process::Command;

/// A queue at `key` created by nobody (uid 65534) with mode 0600, left in
/// place; its id.
fn squat(key: Key) -> i32 {
    let out = run(
        Command::new(bin("kerneld-test-squatter")).arg(key.to_string()),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    let qid: i32 = out
        .stdout
        .trim()
        .strip_prefix("uid=65534 qid=")
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("squatter printed {out:?}"));
    let st = Queue::open(key).unwrap().stat().unwrap();
    assert_eq!((st.uid, st.cuid, st.mode & 0o777), (65534, 65534, 0o600));
    qid
}

/// Removes whatever queue is left at the key when the test ends.
struct Cleanup(Key);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(q) = Queue::open(self.0) {
            let _ = q.remove();
        }
    }
}

/// The instance files of a key in /run/kerneld/keys (`KEY.PID`).
fn key_files(key: Key) -> Vec<String> {
    let prefix = format!("{:#010x}.", key.0 as u32);
    std::fs::read_dir("/run/kerneld/keys")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---- kerneld removes a squatter's queue ------------------------------------

#[test]
fn a_squatters_queue_is_removed_logged_and_replaced() {
    let key = unused_key();
    let _c = Cleanup(key);
    let squatted = squat(key);
    let k = Kerneld::builder().key(key).start_without_status();
    let log = k.log();
    assert!(
        log.contains(&format!(
            "kerneld: warning: removed a message queue at key {key} that was not kerneld's: \
             id {squatted}: owner uid 65534 gid 65534, creator uid 65534 gid 65534, mode 600"
        )),
        "{log}"
    );
    assert!(log.contains("the kernel keeps no creator pid"), "{log}");
    let q = k.queue();
    assert_ne!(q.id(), squatted);
    let st = q.stat().unwrap();
    assert_eq!((st.uid, st.cuid, st.mode & 0o777), (0, 0, 0o600));
    let r = k.control("status");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        r.text_lossy().contains(&format!("pid={},", k.pid())),
        "{r:?}"
    );
}

#[test]
fn a_root_queue_open_to_others_is_replaced_too() {
    // Root's queue with group or other bits is not kerneld's either.
    let raw = RawQueue::create(0o666);
    let first = raw.0.id();
    let k = Kerneld::builder().key(raw.0.key()).start_without_status();
    let log = k.log();
    assert!(
        log.contains(&format!(
            "id {first}: owner uid 0 gid 0, creator uid 0 gid 0, mode 666"
        )),
        "{log}"
    );
    assert!(matches!(raw.0.stat(), Err(Error::Removed)));
    assert_eq!(k.queue().stat().unwrap().mode & 0o777, 0o600);
}

#[test]
fn a_squatter_looping_on_msgget_never_holds_the_key_for_kerneld() {
    // The squatter recreates its queue as fast as it can for 10 s while
    // kerneld starts.  kerneld either wins the key within its attempts
    // (then the queue is root's, and the squatter cannot get it back), or
    // refuses to start and says why: it never serves the squatter's queue.
    let key = unused_key();
    let _c = Cleanup(key);
    squat(key);
    let mut looping = Command::new(bin("kerneld-test-squatter"))
        .args([key.to_string(), "10".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    match Kerneld::builder().key(key).try_start_without_status() {
        Ok(k) => {
            let st = k.queue().stat().unwrap();
            assert_eq!((st.uid, st.cuid), (0, 0), "{}", k.log());
            assert_eq!(k.control("status").status, 0);
        }
        Err((status, log)) => {
            assert_eq!(status.code(), Some(1), "{log}");
            assert!(log.contains("was taken again"), "{log}");
            assert!(log.contains("each of the 16 times"), "{log}");
        }
    }
    let _ = looping.kill();
    let _ = looping.wait();
}

// ---- the shim takes a squatter's queue for no kerneld ------------------------

#[test]
fn without_a_queue_or_with_a_squatters_the_shim_falls_back() {
    let key = unused_key();
    let _c = Cleanup(key);

    // No queue at all: kerneld is not running; hand over to modprobe.
    let shim = Setup::new("");
    let out = shim.request(key, "net-pf-99");
    assert_eq!(out.code(), 0, "{out:?} {}", shim.log());
    assert_eq!(
        shim.modprobe_argv(),
        Some(vec!["-q".into(), "--".into(), "net-pf-99".into()])
    );
    assert!(
        shim.log().contains("kerneld is not running"),
        "{}",
        shim.log()
    );

    // A squatter's queue is no kerneld either (issue 22): refusing would
    // let any local user switch off module loading for the host, so the
    // request is not sent to it and falls back as configured; the owner is
    // logged, once a minute at most.
    let qid = squat(key);
    let shim = Setup::new("");
    let out = shim.request(key, "net-pf-99");
    assert_eq!(out.code(), 0, "{out:?} {}", shim.log());
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    assert_eq!(
        shim.modprobe_argv(),
        Some(vec!["-q".into(), "--".into(), "net-pf-99".into()]),
        "not handed to modprobe: {}",
        shim.log()
    );
    let log = shim.log();
    assert!(
        log.contains(&format!(
            "the queue at key {key} (id {qid}) is not kerneld's: owner uid 65534, creator uid \
             65534, mode 600 (kerneld's is root's with mode 0600): handled as no kerneld running"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("ipcrm -q {qid}")), "{log}");
    assert_eq!(Queue::open(key).unwrap().stat().unwrap().messages, 0);

    // With shim-fallback = fail it fails, still unsent, and the owner is
    // not logged again within the minute.
    let shim = Setup::new("shim-fallback = fail\n");
    assert_eq!(shim.request(key, "net-pf-99").code(), 1);
    assert_eq!(shim.modprobe_argv(), None);
    let log = shim.log();
    assert!(log.contains("not kerneld's; shim-fallback = fail"), "{log}");
    assert!(
        !log.contains("owner uid"),
        "logged twice in a minute: {log}"
    );
    assert_eq!(Queue::open(key).unwrap().stat().unwrap().messages, 0);

    // Once kerneld has replaced the squatter's queue, requests reach it.
    let k = Kerneld::builder().key(key).start_without_status();
    let shim = Setup::new("");
    let out = shim.request(key, "kdtest-no-such-module");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(shim.modprobe_argv(), None);
    assert_eq!(
        shim.log(),
        "",
        "kerneld answered; nothing to complain about"
    );
    k.wait_log("kdtest-no-such-module: not found");
}

// ---- one kerneld per key and message type -----------------------------------

#[test]
fn a_second_kerneld_on_the_same_key_is_refused_naming_the_first() {
    let k = Kerneld::start();
    let qid = k.queue().id();
    let second = Kerneld::builder().key(k.key()).run_to_exit();
    let out = &second.outcome;
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "another kerneld, pid {} (type=-255, state dir {}), serves key {} with message types \
             that overlap type=-255",
            k.pid(),
            k.dir().join("state").display(),
            k.key()
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains(&format!("kill {}", k.pid())), "{out:?}");
    // The first one goes on, on the same queue.
    assert_eq!(k.queue().id(), qid);
    let r = k.control("status");
    assert!(
        r.text_lossy().contains(&format!("pid={},", k.pid())),
        "{r:?}"
    );
    // The refused one left no file of its own.
    assert_eq!(
        key_files(k.key()),
        vec![format!("{:#010x}.{}", k.key().0 as u32, k.pid())]
    );
}

#[test]
fn type_partitions_share_one_queue_and_the_last_one_removes_it() {
    let mut loads = Kerneld::builder().arg("type=2").start_without_status();
    let key = loads.key();
    let _c = Cleanup(key);
    let mut releases = Kerneld::builder()
        .key(key)
        .arg("type=3")
        .start_without_status();
    let qid = loads.queue().id();
    assert_eq!(releases.queue().id(), qid, "one queue");
    assert!(releases.log().contains("took over kerneld's own queue"));

    // A third one wanting every type overlaps both.
    let all = Kerneld::builder().key(key).run_to_exit();
    let out = &all.outcome;
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("another kerneld, pid {} (type=2,", loads.pid()))
            || out
                .stderr
                .contains(&format!("another kerneld, pid {} (type=3,", releases.pid())),
        "{out:?}"
    );

    // Each serves its own type.
    let r = loads.request(MsgType::RequestModule, "kdtest-no-such-module");
    assert_eq!(r.text_lossy(), "kdtest-no-such-module: not found");
    loads.wait_log("kdtest-no-such-module: not found");
    let r = releases.request(MsgType::ReleaseModule, "kdtest-no-such-module");
    assert_eq!(r.status, 1, "{r:?}");
    releases.wait_log("kdtest-no-such-module");

    // The first to stop leaves the queue to the other.
    assert_eq!(loads.stop().code(), Some(0));
    let log = loads.log();
    assert!(
        log.contains(&format!(
            "leaving the queue at key {key} to the kerneld that still serve it: pid {} (type=3,",
            releases.pid()
        )),
        "{log}"
    );
    assert_eq!(Queue::open(key).unwrap().id(), qid, "the queue stayed");
    let r = releases.request(MsgType::ReleaseModule, "kdtest-other");
    assert_eq!(r.status, 1, "{r:?}");
    // The last one removes it.
    assert_eq!(releases.stop().code(), Some(0));
    assert!(matches!(Queue::open(key), Err(Error::NotRunning { .. })));
    assert_eq!(key_files(key), Vec::<String>::new());
}

#[test]
fn a_killed_instance_does_not_hold_the_key() {
    let mut k = Kerneld::start();
    let key = k.key();
    let qid = k.queue().id();
    k.sigkill();
    // Its file stays behind, unlocked; the next kerneld removes it and
    // takes the queue over.
    let next = Kerneld::builder().key(key).start();
    assert!(next.log().contains(&format!(
        "took over kerneld's own queue at key {key} (id {qid}"
    )));
    assert_eq!(next.queue().id(), qid);
    assert_eq!(
        key_files(key),
        vec![format!("{:#010x}.{}", key.0 as u32, next.pid())]
    );
}

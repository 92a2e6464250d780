//! The state directory and what is found in it, and reply ids that are
//! message types served on the queue: the real kerneld, real files, real
//! SysV queues.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and root (the
//! tests hand a directory to uid 65534 with chown).

use kerneld_tests::daemon::{unique_reply_id, Kerneld, LIMIT};
use kmod_ipc::{Client, Header, Message, MsgType, Queue};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

/// The record (`loaded.json`) and where a bad one is moved.
fn record(state: &Path) -> std::path::PathBuf {
    state.join("loaded.json")
}

fn aside(state: &Path) -> std::path::PathBuf {
    state.join("loaded.json.corrupt")
}

/// Start (the start waits for the answer to a status request), check the
/// log names the reason and the place the record was moved to, and that
/// SIGTERM still stops the daemon.
fn starts_despite(plant: fn(&Path), why: &str) -> (Kerneld, std::path::PathBuf) {
    let mut k = Kerneld::builder().state(plant).start();
    let state = k.dir().join("state");
    k.wait_log(&format!(
        "{} {why}; moved to {}, starting with an empty record",
        record(&state).display(),
        aside(&state).display()
    ));
    assert_eq!(k.control("").status, 0);
    assert!(
        std::fs::symlink_metadata(record(&state)).is_err(),
        "the bad record is no longer at its place"
    );
    assert!(k.stop().success(), "{}", k.log());
    (k, state)
}

#[test]
fn a_fifo_in_place_of_the_record_is_moved_aside() {
    let (_k, state) = starts_despite(
        |s| nix::unistd::mkfifo(&record(s), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo"),
        "is a FIFO, not a regular file",
    );
    let m = std::fs::symlink_metadata(aside(&state)).unwrap();
    assert!(m.file_type().is_fifo());
}

#[test]
fn a_link_to_dev_zero_in_place_of_the_record_is_moved_aside() {
    let (_k, state) = starts_despite(
        |s| std::os::unix::fs::symlink("/dev/zero", record(s)).expect("symlink"),
        "is a symbolic link (none is followed in a state directory)",
    );
    assert_eq!(
        std::fs::read_link(aside(&state)).unwrap(),
        Path::new("/dev/zero"),
        "the link itself was moved"
    );
}

#[test]
fn an_oversize_record_is_moved_aside_unread() {
    // 75 MB, sparse: as large as the one that held up the start.
    let (_k, state) = starts_despite(
        |s| {
            let f = std::fs::File::create(record(s)).unwrap();
            f.set_len(75_000_000).unwrap();
        },
        "is 75000000 bytes, more than the 16777216 bytes read of it",
    );
    assert_eq!(std::fs::metadata(aside(&state)).unwrap().len(), 75_000_000);
}

#[test]
fn a_new_state_directory_is_made_mode_0700() {
    let k = Kerneld::start();
    let m = std::fs::metadata(k.dir().join("state")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 0));
}

#[test]
fn a_state_directory_of_another_user_is_refused() {
    let out = Kerneld::builder()
        .state(|s| std::os::unix::fs::chown(s, Some(65534), Some(65534)).expect("chown"))
        .run_to_exit();
    let state = out.dir.join("state");
    assert_eq!(out.outcome.code(), 3, "{:?}", out.outcome);
    assert!(
        out.outcome.stderr.contains(&format!(
            "state directory {} is owned by uid 65534, not by kerneld's user (uid 0)",
            state.display()
        )),
        "{:?}",
        out.outcome
    );
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "nothing was made in it"
    );
}

#[test]
fn a_state_directory_others_may_write_is_refused_and_left_as_it_is() {
    for (mode, who) in [
        (0o777, "its group and any user"),
        (0o770, "its group"),
        (0o1703, "any user"),
    ] {
        let out = Kerneld::builder()
            .state(move |s| std::fs::set_permissions(s, PermissionsExt::from_mode(mode)).unwrap())
            .run_to_exit();
        let state = out.dir.join("state");
        assert_eq!(out.outcome.code(), 3, "{:?}", out.outcome);
        assert!(
            out.outcome.stderr.contains(&format!(
                "state directory {} has mode {mode:04o}: {who} may write it",
                state.display()
            )),
            "{:?}",
            out.outcome
        );
        let m = std::fs::metadata(&state).unwrap();
        assert_eq!(m.mode() & 0o7777, mode, "not changed");
    }
}

/// `victim`, outside the state directory, with a known content.
fn victim(state: &Path) -> std::path::PathBuf {
    state.parent().unwrap().join("victim")
}

#[test]
fn links_planted_in_the_state_directory_are_not_written_through() {
    let record_of = r#"{"kdtest-gone":{"requested_as":"kdtest-gone","dependencies":[],"loaded_at":1,"unused_sweeps":0}}"#;
    let mut k = Kerneld::builder()
        .record(record_of)
        .arg("delay=1")
        .state(|s| {
            std::fs::write(victim(s), b"precious").unwrap();
            for name in [".kerneld.pid.tmp", "loaded.json.tmp"] {
                std::os::unix::fs::symlink(victim(s), s.join(name)).unwrap();
            }
        })
        .start();
    let state = k.dir().join("state");
    // The pid file went through its temporary name.
    let pid = std::fs::read_to_string(state.join("kerneld.pid")).unwrap();
    assert_eq!(pid, format!("{}\n", k.pid()));
    // The first sweep forgets the module that is not loaded and saves the
    // record, through its temporary name.
    let end = Instant::now() + LIMIT;
    while std::fs::read_to_string(record(&state)).unwrap_or_default() != "{}" {
        assert!(
            Instant::now() < end,
            "no save within {LIMIT:?}\n{}",
            k.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for name in [".kerneld.pid.tmp", "loaded.json.tmp"] {
        assert!(
            std::fs::symlink_metadata(state.join(name)).is_err(),
            "{name}"
        );
    }
    assert_eq!(std::fs::read(victim(&state)).unwrap(), b"precious");
    assert!(k.stop().success());
    assert_eq!(std::fs::read(victim(&state)).unwrap(), b"precious");
}

#[test]
fn a_link_in_place_of_the_state_lock_is_refused() {
    let out = Kerneld::builder()
        .state(|s| std::os::unix::fs::symlink(victim(s), s.join("kerneld.lock")).unwrap())
        .run_to_exit();
    let state = out.dir.join("state");
    assert_eq!(out.outcome.code(), 1, "{:?}", out.outcome);
    assert!(
        out.outcome.stderr.contains(&format!(
            "cannot open {}",
            state.join("kerneld.lock").display()
        )),
        "{:?}",
        out.outcome
    );
    assert!(!victim(&state).exists(), "not created through the link");
}

// ---- reply ids ---------------------------------------------------------------

/// Send a request with reply id `id` as a (hostile) client would, with
/// the new header naming pid `pid`.
fn send_raw(queue: &Queue, t: MsgType, id: i64, pid: i16, text: &str) {
    let m = Message::request(t, id, Header::New { pid }, text);
    queue.send(&m, usize::MAX, false).expect("send");
}

/// Debug lines of messages of type `t` the daemon received.
fn received(log: &str, t: i64) -> usize {
    log.lines()
        .filter(|l| l.contains("received ") && l.contains(&format!("(type {t}) id")))
        .count()
}

#[test]
fn a_reply_id_in_1_to_255_is_refused_and_sampled_in_the_log() {
    let k = Kerneld::builder().arg("debug").start();
    let queue = k.queue();
    for _ in 0..20 {
        send_raw(&queue, MsgType::Status, 2, 4242, "");
    }
    // Answered after the twenty: the daemon keeps serving, and had it
    // answered id 2, it would have received that reply (type 2) first.
    assert_eq!(k.control("").status, 0);
    let log = k.log();
    let line = "dropping debug with reply id 2 (type 255, from pid 4242): it is a message \
                type this kerneld serves, so the reply would come back to it as a request";
    // The first 16 are logged, then only the 32nd, 64th...
    for n in 1..=20 {
        let logged = log.contains(&format!("{line} ({n} so far)"));
        assert_eq!(logged, n <= 16, "{n}\n{log}");
    }
    assert_eq!(received(&log, 2), 0, "no reply of type 2 came back\n{log}");
    assert_eq!(queue.stat().unwrap().messages, 0, "{log}");
}

#[test]
fn the_type_an_instance_serves_is_refused_as_a_reply_id() {
    // An arp instance (type=256) on its own key.
    let k = Kerneld::builder()
        .arg("type=256")
        .arg("debug")
        .start_without_status();
    let queue = k.queue();
    send_raw(&queue, MsgType::Arp, 256, 4243, "10.0.0.1");
    send_raw(&queue, MsgType::Arp, 2, 4243, "10.0.0.1");
    k.wait_log(
        "dropping arp with reply id 256 (type 256, from pid 4243): it is a message type \
         this kerneld serves, so the reply would come back to it as a request (1 so far)",
    );
    k.wait_log(
        "dropping arp with reply id 2 (type 256, from pid 4243): ids 1..255 are message \
         types kerneld serves on this queue, so the reply would be read as a request (2 so far)",
    );
    // A request with a usable id is still answered; had the daemon answered
    // id 256, it would have received its own reply before this request.
    let client = Client::connect(k.key()).unwrap();
    let id = unique_reply_id();
    let r = client
        .request(MsgType::Arp, b"10.0.0.1", id, Some(LIMIT))
        .expect("an answer to a usable id");
    let log = k.log();
    assert!(!r.text_lossy().is_empty(), "{r:?}");
    assert_eq!(received(&log, 256), 3, "only the three requests\n{log}");
    assert_eq!(queue.stat().unwrap().messages, 0, "{log}");
}

#[test]
fn the_type_another_instance_serves_is_refused_as_a_reply_id() {
    // The default instance and an arp instance (type=256) share one key.
    let k = Kerneld::builder().arg("debug").start();
    let arp = Kerneld::builder()
        .key(k.key())
        .arg("type=256")
        .arg("debug")
        .start_without_status();
    arp.wait_log("started");
    let queue = k.queue();
    send_raw(&queue, MsgType::Status, 256, 4244, "");
    k.wait_log(
        "dropping debug with reply id 256 (type 255, from pid 4244): another kerneld on this \
         queue serves that message type, so it would read the reply as a request (1 so far)",
    );
    // Both still serve their own types; the arp instance never saw a
    // "request" of type 256 made of the default instance's reply.
    assert_eq!(k.control("").status, 0);
    let client = Client::connect(k.key()).unwrap();
    let r = client
        .request(MsgType::Arp, b"10.0.0.1", unique_reply_id(), Some(LIMIT))
        .expect("the arp instance answers");
    assert!(!r.text_lossy().is_empty(), "{r:?}");
    assert_eq!(received(&arp.log(), 256), 1, "{}", arp.log());
    assert_eq!(queue.stat().unwrap().messages, 0);
}

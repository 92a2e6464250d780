//! kdsend against a fake kerneld on real SysV queues.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::fake::{self, bin, run, Action, FakeDaemon, Outcome, LIMIT};
use kmod_ipc::{Header, MsgType, TOOL_ID_BASE};
use std::process::Command;

fn kdsend(fake: &FakeDaemon, args: &[&str]) -> Outcome {
    run(
        Command::new(bin("kdsend"))
            .args(["--key", &fake.key_arg()])
            .args(args),
        LIMIT,
    )
}

#[test]
fn without_r_sends_id_0_and_does_not_wait() {
    // A daemon that never answers: waiting would end in a timeout (124).
    let fake = FakeDaemon::with_handler(|_| Action::Ignore);
    let out = kdsend(&fake, &["2", "ppp"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "");
    let got = fake.wait_received(1, LIMIT);
    assert_eq!(got[0].mtype, 2);
    assert_eq!(got[0].id, 0, "no reply wanted");
    assert_eq!(got[0].text_str(), "ppp");
    assert_eq!(got[0].header, Header::new_with_pid(out.pid));
}

#[test]
fn with_r_prints_status_and_text() {
    let fake = FakeDaemon::with_handler(|r| {
        if r.mtype == 2 {
            Action::reply(1, "modprobe: FATAL: Module ppp not found")
        } else {
            Action::reply(0, "")
        }
    });
    let out = kdsend(&fake, &["-r", "2", "ppp"]);
    assert_eq!(out.code(), 0, "answered, whatever the status: {out:?}");
    assert_eq!(
        out.stdout,
        "status 1\nmodprobe: FATAL: Module ppp not found\n"
    );
    let got = fake.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, TOOL_ID_BASE + i64::from(out.pid));
    assert_eq!(got[0].text_str(), "ppp");
}

#[test]
fn r_255_status_prints_the_daemon_status() {
    let fake = FakeDaemon::start();
    let out = kdsend(&fake, &["-r", "255", "status"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("status 0"));
    assert!(lines.next().unwrap().starts_with("Version "), "{out:?}");
    assert_eq!(lines.next(), Some("no jobs waiting"));
}

#[test]
fn types_are_numbers_or_names() {
    let fake = FakeDaemon::start();
    let cases = [
        ("4", MsgType::DelayedRelease),
        ("release", MsgType::ReleaseModule),
        ("request_module", MsgType::RequestModule),
        ("cancel_release", MsgType::CancelRelease),
        ("status", MsgType::Status),
        ("1", MsgType::System),
    ];
    for (i, (name, t)) in cases.iter().enumerate() {
        let out = kdsend(&fake, &["-r", name, "ppp"]);
        assert_eq!(out.code(), 0, "{name}: {out:?}");
        let got = fake.wait_received(i + 1, LIMIT);
        assert_eq!(got[i].mtype, t.number(), "{name}");
    }
}

#[test]
fn message_is_optional() {
    let fake = FakeDaemon::start();
    let out = kdsend(&fake, &["-r", "255"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(fake.received()[0].text, b"");
}

#[test]
fn old_header_is_the_1995_layout() {
    let fake = FakeDaemon::start();
    let out = kdsend(&fake, &["--old-header", "-r", "2", "ppp"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout, "status 0\n");
    let got = fake.received();
    assert_eq!(got[0].header, Header::Old);
    assert_eq!(got[0].id, TOOL_ID_BASE + i64::from(out.pid));
    // And without -r.
    let out = kdsend(&fake, &["--old-header", "3", "ppp"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let got = fake.wait_received(2, LIMIT);
    assert_eq!(got[1].header, Header::Old);
    assert_eq!((got[1].mtype, got[1].id), (3, 0));
}

#[test]
fn types_above_255_are_sent_with_a_warning() {
    let fake = FakeDaemon::start();
    let out = kdsend(&fake, &["256", "10.0.0.1"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stderr.contains("only receives types up to 255"),
        "{out:?}"
    );
    // It waits in the queue, where kerneld never looks.
    let st = fake.queue().stat().unwrap();
    assert_eq!(st.messages, 1);
    assert!(fake.received().is_empty());
}

#[test]
fn not_running_is_exit_3() {
    let key = fake::unused_key();
    for args in [&["2", "ppp"][..], &["-r", "2", "ppp"]] {
        let out = run(
            Command::new(bin("kdsend"))
                .args(["--key", &key.to_string()])
                .args(args),
            LIMIT,
        );
        assert_eq!(out.code(), 3, "{out:?}");
        assert_eq!(
            out.stderr,
            format!("kdsend: kerneld is not running (no message queue at key {key})\n")
        );
    }
}

#[test]
fn no_reply_with_r_is_exit_124() {
    let fake = FakeDaemon::with_handler(|_| Action::Ignore);
    let out = kdsend(&fake, &["--timeout", "1", "-r", "2", "ppp"]);
    assert_eq!(out.code(), 124, "{out:?}");
    assert!(out.stderr.contains("no reply from kerneld"), "{out:?}");
    assert_eq!(out.stdout, "");
}

#[test]
fn key_comes_from_the_environment() {
    let fake = FakeDaemon::start();
    let out = run(
        Command::new(bin("kdsend"))
            .env("KERNELD_KEY", fake.key_arg())
            .args(["-r", "2", "ppp"]),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(fake.received().len(), 1);
}

#[test]
fn usage_errors_are_exit_2() {
    let fake = FakeDaemon::start();
    for args in [
        &[][..],
        &["frobnicate", "ppp"],
        &["0", "ppp"],
        &["2", "ppp", "extra"],
        &["--timeout", "-1", "2", "ppp"],
    ] {
        let out = kdsend(&fake, args);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
    }
    assert!(fake.received().is_empty());
}

#[test]
fn help_has_the_classic_examples() {
    let out = run(Command::new(bin("kdsend")).arg("--help"), LIMIT);
    assert_eq!(out.code(), 0);
    for example in ["kdsend 2 ppp", "kdsend 4 ppp", "kdsend -r 255 status"] {
        assert!(out.stdout.contains(example), "{example} missing");
    }
}

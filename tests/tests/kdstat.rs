//! kdstat against a fake kerneld on real SysV queues.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::fake::{self, bin, run, Action, FakeDaemon, Outcome, LIMIT};
use kmod_ipc::{Header, MsgType, TOOL_ID_BASE};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

fn kdstat(fake: &FakeDaemon, args: &[&str]) -> Outcome {
    run(
        Command::new(bin("kdstat"))
            .args(["--key", &fake.key_arg()])
            .args(args),
        LIMIT,
    )
}

/// The request must be type 255 with the word, reply id 1024 + the
/// kdstat process's pid, and the new header carrying that pid.
fn assert_status_request(fake: &FakeDaemon, out: &Outcome, word: &str) {
    let got = fake.received();
    let last = got.last().expect("kerneld received nothing");
    assert_eq!(last.mtype, MsgType::Status.number(), "{last:?}");
    assert_eq!(last.text_str(), word);
    assert_eq!(last.id, TOOL_ID_BASE + i64::from(out.pid), "{last:?}");
    assert_eq!(last.header, Header::new_with_pid(out.pid));
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `Version <v>, pid=<pid>, delay=<seconds>, [no]keep, [no]debug`.
fn assert_classic_first_line(line: &str) {
    let fields: Vec<&str> = line.split(", ").collect();
    assert_eq!(fields.len(), 5, "{line:?}");
    assert!(fields[0].starts_with("Version "), "{line:?}");
    let pid = fields[1].strip_prefix("pid=").expect("pid=");
    assert!(pid.parse::<u32>().is_ok(), "{line:?}");
    let delay = fields[2].strip_prefix("delay=").expect("delay=");
    assert!(delay.parse::<u64>().is_ok(), "{line:?}");
    assert!(["keep", "nokeep"].contains(&fields[3]), "{line:?}");
    assert!(["debug", "nodebug"].contains(&fields[4]), "{line:?}");
}

#[test]
fn prints_the_classic_status() {
    let fake = FakeDaemon::start();
    let out = kdstat(&fake, &[]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_classic_first_line(first_line(&out.stdout));
    assert!(
        out.stdout.contains("\nno jobs waiting\n") && !out.stdout.contains("job queue:"),
        "the 1995 status: no heading without jobs: {out:?}"
    );
    assert_eq!(out.stderr, "");
    assert_eq!(fake.received().len(), 1);
    assert_status_request(&fake, &out, "");
}

#[test]
fn control_words_are_sent_as_type_255_and_print_the_status() {
    let fake = FakeDaemon::start();
    let cases: [(&str, &str); 8] = [
        ("debug", ", debug"),
        ("nodebug", ", nodebug"),
        ("keep", ", keep,"),
        ("nokeep", ", nokeep,"),
        ("delay=42", ", delay=42,"),
        ("status", "Version "),
        ("flush", "flushed 0 entries\nVersion "),
        ("policy", "allow * (hits 0)"),
    ];
    for (word, expect) in cases {
        let out = kdstat(&fake, &[word]);
        assert_eq!(out.code(), 0, "{word}: {out:?}");
        assert!(out.stdout.contains(expect), "{word}: {out:?}");
        assert_status_request(&fake, &out, word);
    }
    assert_eq!(fake.received().len(), cases.len());
}

#[test]
fn status_changes_show_in_the_printed_status() {
    let fake = FakeDaemon::start();
    let out = kdstat(&fake, &["keep"]);
    assert_classic_first_line(first_line(&out.stdout));
    assert!(
        first_line(&out.stdout).ends_with(", keep, nodebug"),
        "{out:?}"
    );
    let out = kdstat(&fake, &["flush"]);
    assert_eq!(first_line(&out.stdout), "flushed 0 entries");
    assert_classic_first_line(out.stdout.lines().nth(1).unwrap());
}

#[test]
fn daemon_errors_go_to_stderr_with_status_1() {
    let fake = FakeDaemon::start();
    let out = kdstat(&fake, &["frobnicate"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "kdstat: kerneld: unknown word \"frobnicate\"\n");
    assert_status_request(&fake, &out, "frobnicate");
}

#[test]
fn json_output_parses() {
    let fake = FakeDaemon::start();
    let out = kdstat(&fake, &["--json"]);
    assert_eq!(out.code(), 0, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("kdstat --json parses");
    assert_eq!(doc["version"], fake::FAKE_VERSION);
    assert_eq!(doc["delay"], 60);
    assert!(doc["counters"]["requests"].is_object(), "{doc}");
    assert_status_request(&fake, &out, "json");
}

#[test]
fn json_that_does_not_parse_is_an_error() {
    let fake = FakeDaemon::with_handler(|_| Action::reply(0, "{\"version\": "));
    let out = kdstat(&fake, &["--json"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("not valid JSON"), "{out:?}");
}

#[test]
fn long_replies_arrive_whole() {
    // 20 000 bytes in parts of 100: nothing may be cut or lost.
    let body: String = (0..1000).map(|i| format!("line {i:014}\n")).collect();
    assert_eq!(body.len(), 20_000);
    let text = body.clone();
    let fake = FakeDaemon::builder(move |_| Action::reply(0, text.clone()))
        .part_max(100)
        .start();
    let out = kdstat(&fake, &[]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout, body);
}

#[test]
fn not_running_is_exit_3_with_the_classic_message() {
    let key = fake::unused_key();
    let out = run(
        Command::new(bin("kdstat")).args(["--key", &key.to_string()]),
        LIMIT,
    );
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(
        out.stderr,
        format!("kdstat: kerneld is not running (no message queue at key {key})\n")
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn not_running_at_the_default_key_names_it() {
    // Only meaningful when no kerneld runs here.
    if kmod_ipc::Queue::open(kmod_ipc::DEFAULT_KEY).is_ok() {
        return;
    }
    let out = run(Command::new(bin("kdstat")).env_remove("KERNELD_KEY"), LIMIT);
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(
        out.stderr,
        "kdstat: kerneld is not running (no message queue at key 0x6b65726e)\n"
    );
}

#[test]
fn no_reply_is_exit_124() {
    let fake = FakeDaemon::with_handler(|_| Action::Ignore);
    let out = kdstat(&fake, &["--timeout", "1"]);
    assert_eq!(out.code(), 124, "{out:?}");
    assert!(out.stderr.contains("no reply from kerneld"), "{out:?}");
    assert_eq!(fake.received().len(), 1, "the request was sent");
}

#[test]
fn key_comes_from_the_environment() {
    let fake = FakeDaemon::start();
    let out = run(
        Command::new(bin("kdstat")).env("KERNELD_KEY", fake.key_arg()),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
    assert_status_request(&fake, &out, "");
    // Decimal works too.
    let out = run(
        Command::new(bin("kdstat")).env("KERNELD_KEY", fake.key().0.to_string()),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?}");
}

#[test]
fn permission_denied_is_exit_4() {
    let fake = FakeDaemon::start();
    // Run kdstat as nobody against the root-owned 0600 queue.
    let mut cmd = Command::new(bin("kdstat"));
    cmd.args(["--key", &fake.key_arg()]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run(&mut cmd, LIMIT);
    assert_eq!(out.code(), 4, "{out:?}");
    assert!(out.stderr.contains("root is needed"), "{out:?}");
    assert!(fake.received().is_empty());
}

#[test]
fn usage_errors_are_exit_2() {
    let fake = FakeDaemon::start();
    for args in [
        &["--bogus"][..],
        &["--json", "keep"],
        &["--watch", "0"],
        &["--timeout", "soon"],
        &["--watch", "1", "keep"],
    ] {
        let out = kdstat(&fake, args);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
    }
    let out = run(Command::new(bin("kdstat")).args(["--key", "kern"]), LIMIT);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(fake.received().is_empty());
}

#[test]
fn help_documents_live_settings_and_json_fields() {
    let out = run(Command::new(bin("kdstat")).arg("--help"), LIMIT);
    assert_eq!(out.code(), 0);
    assert!(
        out.stdout.contains("until kerneld restarts"),
        "{}",
        out.stdout
    );
    for field in [
        "uptime_seconds",
        "loaded_modules",
        "next_sweep_seconds",
        "bad_messages",
    ] {
        assert!(out.stdout.contains(field), "{field} undocumented");
    }
}

/// Run `kdstat --watch 0.2 EXTRA...` against `fake` with stdout on a pipe
/// until it has sent four requests (so at least three frames are out),
/// then interrupt it as Ctrl-C would.
fn watch_into_a_pipe(fake: &FakeDaemon, extra: &[&str]) -> Outcome {
    let child = fake::spawn(
        Command::new(bin("kdstat"))
            .args(["--key", &fake.key_arg(), "--watch", "0.2"])
            .args(extra)
            .stdin(std::process::Stdio::null()),
    );
    fake.wait_received(4, LIMIT);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = fake::finish(child, LIMIT);
    assert_eq!(out.code(), 0, "{out:?}");
    out
}

#[test]
fn watch_into_a_pipe_prints_frames_one_after_the_other_without_escapes() {
    let fake = FakeDaemon::start();
    let out = watch_into_a_pipe(&fake, &[]);
    assert!(
        !out.stdout.contains('\x1b'),
        "escape sequences in a pipe: {out:?}"
    );
    let heading = "Every 0.2s: kerneld at key ";
    let frames: Vec<&str> = out.stdout.split(heading).skip(1).collect();
    assert!(frames.len() >= 3, "{out:?}");
    assert!(out.stdout.starts_with(heading), "{out:?}");
    for frame in &frames[..3] {
        let mut lines = frame.lines();
        lines.next(); // the rest of the heading: key and time
        assert_eq!(lines.next(), Some(""));
        assert_classic_first_line(lines.next().unwrap());
    }
    for r in fake.received() {
        assert_eq!(r.mtype, 255);
        assert_eq!(r.text_str(), "status");
    }
}

#[test]
fn watch_json_is_one_document_per_line() {
    let fake = FakeDaemon::start();
    let out = watch_into_a_pipe(&fake, &["--json"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 3, "{out:?}");
    assert!(out.stdout.ends_with('\n'), "{out:?}");
    for line in lines {
        let doc: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON document per line: {e}: {line:?}"));
        assert_eq!(doc["version"], fake::FAKE_VERSION);
    }
    assert_eq!(out.stderr, "");
    for r in fake.received() {
        assert_eq!(r.mtype, 255);
        assert_eq!(r.text_str(), "json");
    }
}

#[test]
fn watch_json_reports_a_document_that_does_not_parse() {
    let fake = FakeDaemon::with_handler(|_| Action::reply(0, "{\"version\": "));
    let out = kdstat(&fake, &["--watch", "0.2", "--json"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("not valid JSON"), "{out:?}");
}

/// A pseudo-terminal: (controller, terminal) descriptors.
fn openpty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut controller, mut terminal) = (-1, -1);
    // SAFETY: openpty writes two descriptors; name, termios and winsize
    // may be null.
    let r = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and ours alone.
    unsafe {
        (
            std::fs::File::from_raw_fd(controller),
            std::fs::File::from_raw_fd(terminal),
        )
    }
}

#[test]
fn watch_on_a_terminal_redraws_in_place_until_interrupted() {
    use std::io::Read;
    let fake = FakeDaemon::start();
    let (mut controller, terminal) = openpty();
    let mut child = Command::new(bin("kdstat"))
        .args(["--key", &fake.key_arg(), "--watch", "0.2"])
        .stdin(std::process::Stdio::null())
        .stdout(terminal)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The terminal side is the child's alone now: the controller reads
    // until the child has gone (EIO).
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match controller.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => screen.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&screen).into_owned()
    });
    fake.wait_received(4, LIMIT);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let screen = reader.join().unwrap();
    // The terminal turns \n into \r\n.
    let screen = screen.replace("\r\n", "\n");
    let frames: Vec<&str> = screen.split("\x1b[H\x1b[2J").skip(1).collect();
    assert!(frames.len() >= 3, "{screen:?}");
    assert!(screen.starts_with("\x1b[H\x1b[2J"), "{screen:?}");
    for frame in &frames[..3] {
        let mut lines = frame.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("Every 0.2s: kerneld at key "));
        assert_eq!(lines.next(), Some(""));
        assert_classic_first_line(lines.next().unwrap());
    }
}

#[test]
fn watch_keeps_going_when_kerneld_stops() {
    let fake = FakeDaemon::start();
    let dir = fake::TempDir::new();
    let screen = dir.join("screen");
    let mut child = Command::new(bin("kdstat"))
        .args(["--key", &fake.key_arg(), "--watch", "0.1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&screen).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + LIMIT;
    let wait_for = |child: &mut std::process::Child, want: &str| {
        while !std::fs::read_to_string(&screen).unwrap().contains(want) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "kdstat --watch ended ({status:?}): {:?} {:?}",
                    std::fs::read_to_string(&screen).unwrap(),
                    std::fs::read_to_string(dir.join("stderr")).unwrap()
                );
            }
            assert!(std::time::Instant::now() < end, "no frame shows {want:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A failure before the first frame ends kdstat; after it, it does not.
    wait_for(&mut child, "\nVersion ");
    let key = fake.key();
    drop(fake);
    // It must survive the missing daemon and report it in place.
    wait_for(
        &mut child,
        &format!("kdstat: kerneld is not running (no message queue at key {key})"),
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

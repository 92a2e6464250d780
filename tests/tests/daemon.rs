//! The real kerneld binary on real SysV queues: invocation, every request
//! type, merging, malformed input, signals and restarts.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and, for the
//! tests marked so, the Debian 6.12 module tree (tests/vm/fetch-kernel.sh).

use kerneld_tests::daemon::{host_has_module_support, unique_reply_id, Kerneld, LIMIT};
use kerneld_tests::fake::{bin, run, TempDir};
use kmod_ipc::{Client, Error, Header, Message, MsgType, Queue, TypeFilter};
use std::process::Command;
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn text(r: &kmod_ipc::Reply) -> String {
    r.text_lossy()
}

/// Poll `f` until it returns Some, within LIMIT.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A modprobe.d install command that waits for `gate` to exist, then
/// appends a line to `count`: an action that stays in flight until the
/// test lets it finish, and that shows how often it ran.
fn gated_install(name: &str, dir: &TempDir) -> String {
    format!(
        "install {name} while [ ! -e {gate} ]; do sleep 0.05; done; echo ran >> {count}\n",
        gate = dir.join("gate").display(),
        count = dir.join("count").display()
    )
}

fn open_gate(dir: &TempDir) {
    std::fs::write(dir.join("gate"), "").unwrap();
}

fn runs_of_install(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.join("count"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Wait until the status shows one job for `text` with `waiters` waiters.
fn wait_for_job(k: &Kerneld, text: &str, waiters: u64) {
    eventually(&format!("a job for {text} with {waiters} waiters"), || {
        let j = k.status_json();
        j["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|job| job["text"] == text && job["waiters"].as_u64() == Some(waiters))
            .then_some(())
    });
}

// ---- invocation ----------------------------------------------------------

#[test]
fn help_exits_0_with_the_classic_usage() {
    let out = run(Command::new(bin("kerneld")).arg("--help"), LIMIT);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout
            .contains("Usage: kerneld [debug] [keep] [delay=<seconds>] [type=<message number>]"),
        "{out:?}"
    );
    assert!(out.stdout.contains("--foreground"), "{out:?}");
}

#[test]
fn unknown_word_is_a_usage_error() {
    let out = run(Command::new(bin("kerneld")).arg("frobnicate"), LIMIT);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stderr.contains("unknown word 'frobnicate'"), "{out:?}");
    assert!(out.stderr.contains("Usage: kerneld [debug]"), "{out:?}");
    assert_eq!(out.stdout, "");
}

#[test]
fn version_is_printed() {
    let out = run(Command::new(bin("kerneld")).arg("--version"), LIMIT);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.stdout.trim(), format!("kerneld {VERSION}"));
}

#[test]
fn non_root_is_refused_with_exit_4() {
    let ex = Kerneld::builder()
        .config("")
        .wrapper(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .run_to_exit();
    let out = &ex.outcome;
    assert_eq!(out.code(), 4, "{out:?}");
    assert!(out.stderr.contains("must be run as root"), "{out:?}");
    assert!(
        matches!(Queue::open(ex.key), Err(Error::NotRunning { .. })),
        "no queue may be created"
    );
}

/// Kills a detached kerneld if the test ends before stopping it.
struct Detached(u32);

impl Drop for Detached {
    fn drop(&mut self) {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.0)).unwrap_or_default();
        if comm.trim() == "kerneld" {
            // SAFETY: kill(2) on the daemon this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

#[test]
fn without_foreground_it_detaches_and_reports_the_daemon_pid() {
    let ex = Kerneld::builder().background().run_to_exit();
    let out = &ex.outcome;
    assert_eq!(out.code(), 0, "{out:?}");
    let line = out.stdout.trim();
    let pid: u32 = line
        .strip_prefix(&format!("Starting kerneld, version {VERSION} (pid "))
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert_ne!(pid, out.pid, "the pid printed is the detached child's");
    let _guard = Detached(pid);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "kerneld", "pid {pid} is not a live kerneld");
    // It serves the queue: its status names the same pid.
    let client = Client::connect(ex.key).expect("the detached kerneld's queue");
    let r = client
        .request(MsgType::Status, b"", unique_reply_id(), Some(LIMIT))
        .unwrap();
    assert!(
        first_line(&text(&r)).contains(&format!("pid={pid},")),
        "{r:?}"
    );
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    // A clean stop removes the queue; the process then goes (or stays a
    // zombie of whoever adopted it).
    eventually("the detached kerneld removes its queue", || {
        matches!(Queue::open(ex.key), Err(Error::NotRunning { .. })).then_some(())
    });
    eventually("the detached kerneld exits", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        (stat.is_empty() || state.starts_with('Z')).then_some(())
    });
}

#[test]
fn config_syntax_error_exits_3_naming_file_and_line() {
    let ex = Kerneld::builder()
        .config("delay = 5\n# fine\nfrobnicate\n")
        .run_to_exit();
    let out = &ex.outcome;
    assert_eq!(out.code(), 3, "{out:?}");
    let path = ex.dir.join("kerneld.conf");
    assert!(
        out.stderr.contains(&format!("{}:3: ", path.display())),
        "{out:?}"
    );
    assert!(
        matches!(Queue::open(ex.key), Err(Error::NotRunning { .. })),
        "no queue may be created"
    );
}

// A queue at the key that is not kerneld's is removed and replaced: see
// key_ownership.rs.

// ---- request module (2) ----------------------------------------------------

#[test]
fn request_for_an_unknown_name_is_not_found() {
    let k = Kerneld::builder().debian_tree().start();
    let r = k.request(MsgType::RequestModule, "kdtest-no-such-module");
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(text(&r), "kdtest-no-such-module: not found");
    let j = k.status_json();
    assert_eq!(j["counters"]["failed"], 1, "{j}");
    assert_eq!(j["counters"]["requests"]["request_module"], 1, "{j}");
}

#[test]
fn request_for_a_real_module_reports_what_the_kernel_said() {
    let k = Kerneld::builder().debian_tree().start();
    let r = k.request(MsgType::RequestModule, "rtnl-link-dummy");
    if host_has_module_support() {
        // A kernel that loads modules: either dummy went in, or the
        // reason names the module (another kernel's tree: bad format).
        assert!(
            r.status == 0 || text(&r).contains("could not insert dummy"),
            "{r:?}"
        );
    } else {
        // This host: finit_module is ENOSYS, and the answer says so,
        // given at once on the receiving thread (its log line follows the
        // answer).
        assert_eq!(r.status, 1, "{r:?}");
        assert_eq!(
            text(&r),
            "rtnl-link-dummy: could not insert dummy: the running kernel has no loadable \
             module support (Function not implemented (os error 38))"
        );
        let log = k.wait_log("warning: request_module: rtnl-link-dummy: could not insert dummy");
        assert!(
            log.contains("warning: this kernel has no loadable module support"),
            "{log}"
        );
    }
}

#[test]
fn a_blacklisted_alias_succeeds_without_loading() {
    let k = Kerneld::builder()
        .debian_tree()
        .modprobe("blacklist dummy\n")
        .start();
    let r = k.request(MsgType::RequestModule, "rtnl-link-dummy");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        text(&r),
        "rtnl-link-dummy: blacklisted (dummy), nothing loaded"
    );
    // The blacklist covers aliases only, as with modprobe: the module's
    // own name is still tried.
    let r = k.request(MsgType::RequestModule, "dummy");
    assert!(!text(&r).contains("blacklisted"), "{r:?}");
}

#[test]
fn an_install_command_runs_instead_of_loading() {
    let dir = TempDir::new();
    let k = Kerneld::builder()
        .modprobe(&format!(
            "install kdtest-slow echo \"$MODPROBE_MODULE\" >> {}\n",
            dir.join("ran").display()
        ))
        .start();
    let r = k.request(MsgType::RequestModule, "kdtest-slow");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        text(&r),
        "kdtest-slow: loaded install command for kdtest_slow"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ran")).unwrap(),
        "kdtest_slow\n"
    );
}

#[test]
fn a_failing_install_command_is_reported() {
    let k = Kerneld::builder()
        .modprobe("install kdtest-broken /bin/false\n")
        .start();
    let r = k.request(MsgType::RequestModule, "kdtest-broken");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).contains("install command failed"), "{r:?}");
}

// ---- release, delayed release, cancel (3, 4, 5) ----------------------------

#[test]
fn release_of_a_module_not_loaded_fails_with_a_reason() {
    let k = Kerneld::start();
    let r = k.request(MsgType::ReleaseModule, "kdtest-not-loaded");
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(
        text(&r),
        "release kdtest-not-loaded: kdtest-not-loaded is not loaded"
    );
    // printk is in /sys/module on every kernel, and never a module.
    let r = k.request(MsgType::ReleaseModule, "printk");
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(text(&r), "release printk: printk is built into the kernel");
    k.wait_log("kerneld: release printk: printk is built into the kernel\n");
}

/// A record saying that kerneld loaded these modules.
fn record_of(names: &[&str]) -> String {
    let entries: Vec<String> = names
        .iter()
        .map(|n| {
            format!(r#""{n}": {{"requested_as": "{n}", "dependencies": [], "loaded_at": 1, "unused_sweeps": 0}}"#)
        })
        .collect();
    format!("{{{}}}", entries.join(", "))
}

#[test]
fn a_delayed_release_of_a_module_kerneld_did_not_load_is_refused() {
    let k = Kerneld::start();
    let r = k.request(MsgType::DelayedRelease, "kdtest-bogus");
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(
        text(&r),
        "kdtest-bogus: kerneld did not load it (kdstat lists what it loaded)"
    );
    k.wait_log("delayed release of kdtest-bogus refused");
}

#[test]
fn delayed_release_is_announced_and_cancelled() {
    let k = Kerneld::builder()
        .arg("delay=600")
        .record(&record_of(&["kdtest-mod"]))
        .start();
    let r = k.request(MsgType::DelayedRelease, "kdtest-mod");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(text(&r), "kdtest-mod will be released in 600 s");
    let r = k.request(MsgType::CancelRelease, "kdtest-mod");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(text(&r), "release of kdtest-mod cancelled");
    let r = k.request(MsgType::CancelRelease, "kdtest-mod");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(text(&r), "no release of kdtest-mod was pending");
}

#[test]
fn a_delayed_release_happens_after_the_delay() {
    let k = Kerneld::builder()
        .arg("delay=1")
        .record(&record_of(&["kdtest-later"]))
        .start();
    let r = k.request(MsgType::DelayedRelease, "kdtest-later");
    assert_eq!(text(&r), "kdtest-later will be released in 1 s");
    k.wait_log("delayed release of kdtest-later is due");
    k.wait_log("release kdtest-later: kdtest-later is not loaded");
}

#[test]
fn a_new_request_cancels_a_pending_delayed_release() {
    let k = Kerneld::builder()
        .arg("delay=600")
        .record(&record_of(&["kdtest-again"]))
        .start();
    let r = k.request(MsgType::DelayedRelease, "kdtest-again");
    assert_eq!(r.status, 0, "{r:?}");
    k.request(MsgType::RequestModule, "kdtest-again");
    let r = k.request(MsgType::CancelRelease, "kdtest-again");
    assert_eq!(text(&r), "no release of kdtest-again was pending");
}

// ---- programs (1, 6, 7, 8) -------------------------------------------------

#[test]
fn system_requests_are_refused_by_default() {
    let k = Kerneld::start();
    let r = k.request(MsgType::System, "/bin/echo hi");
    assert_eq!(r.status, 1, "{r:?}");
    let t = text(&r);
    assert!(t.contains("disabled"), "{t}");
    assert!(t.contains("system-command = COMMAND ARGS"), "{t}");
}

#[test]
fn a_listed_system_command_runs_and_returns_its_output() {
    let k = Kerneld::builder()
        .config("system-command = /bin/echo hi\n")
        .start();
    let r = k.request(MsgType::System, "/bin/echo hi");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(text(&r), "hi\n");
    // Only the exact command line.
    let r = k.request(MsgType::System, "/bin/echo hi there");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).contains("not a listed system-command"), "{r:?}");
}

#[test]
fn request_route_runs_the_route_program_with_the_text() {
    let dir = TempDir::new();
    let args = dir.join("args");
    let script = dir.script(
        "request-route",
        &format!(
            "printf '%s\\n' \"$@\" >> {}\n[ \"$1\" = 10.9.9.9 ] && exit 3\necho routed \"$1\"\n",
            args.display()
        ),
    );
    let k = Kerneld::builder()
        .config(&format!("route-program = {}\n", script.display()))
        .start();
    let r = k.request(MsgType::RequestRoute, "10.1.2.3");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(text(&r), "routed 10.1.2.3\n");
    // The program's exit status is the reply's status.
    let r = k.request(MsgType::RequestRoute, "10.9.9.9");
    assert_eq!(r.status, 3, "{r:?}");
    // Text that is not one printable word never reaches the program.
    let r = k.request(MsgType::RequestRoute, "10.0.0.1 -rf");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).contains("refused"), "{r:?}");
    assert_eq!(
        std::fs::read_to_string(&args).unwrap(),
        "10.1.2.3\n10.9.9.9\n"
    );
}

#[test]
fn blanker_on_and_off_start_and_stop_the_program() {
    let dir = TempDir::new();
    let pidfile = dir.join("pid");
    let script = dir.script(
        "blanker",
        &format!("echo $$ > {}\nexec sleep 600\n", pidfile.display()),
    );
    let k = Kerneld::builder()
        .config(&format!("blanker-program = {}\n", script.display()))
        .start();
    let r = k.request(MsgType::Blanker, "on");
    assert_eq!((r.status, text(&r).as_str()), (0, "screen blanker started"));
    let pid: u32 = eventually("the blanker writes its pid", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let r = k.request(MsgType::Blanker, "on");
    assert_eq!(
        (r.status, text(&r).as_str()),
        (0, "screen blanker already running")
    );
    let r = k.request(MsgType::Blanker, "off");
    assert_eq!((r.status, text(&r).as_str()), (0, "screen blanker stopped"));
    // Stopped and reaped before the answer.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    // Nothing to stop: status 1, as the 1995 daemon answered.
    let r = k.request(MsgType::Blanker, "off");
    assert_eq!(
        (r.status, text(&r).as_str()),
        (1, "screen blanker was not running")
    );
    let r = k.request(MsgType::Blanker, "sideways");
    assert_eq!(r.status, 1, "{r:?}");
}

#[test]
fn pnp_is_unsupported() {
    let k = Kerneld::start();
    let r = k.request(MsgType::Pnp, "PNP0501");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).contains("unsupported"), "{r:?}");
}

// ---- status and control (255), unknown types, reply ids ---------------------

#[test]
fn status_words_change_the_daemon() {
    let k = Kerneld::start();
    let r = k.control("");
    assert_eq!(r.status, 0);
    let pid = k.pid();
    assert_eq!(
        first_line(&text(&r)),
        format!("Version {VERSION}, pid={pid}, delay=60, nokeep, nodebug")
    );
    assert_eq!(
        first_line(&text(&k.control("status"))),
        first_line(&text(&r))
    );

    let r = k.control("debug");
    assert!(first_line(&text(&r)).ends_with(", nokeep, debug"), "{r:?}");
    // Debug logs every message received.
    k.request(MsgType::Pnp, "kdtest-debugged");
    k.wait_log("debug: received pnp (type 8)");
    let r = k.control("nodebug");
    assert!(
        first_line(&text(&r)).ends_with(", nokeep, nodebug"),
        "{r:?}"
    );

    let r = k.control("keep");
    assert!(first_line(&text(&r)).ends_with(", keep, nodebug"), "{r:?}");
    assert!(text(&r).contains("no sweeps (keep)"), "{r:?}");
    assert_eq!(
        k.status_json()["next_sweep_seconds"],
        serde_json::Value::Null
    );
    let r = k.control("nokeep");
    assert!(
        first_line(&text(&r)).ends_with(", nokeep, nodebug"),
        "{r:?}"
    );
    assert!(k.status_json()["next_sweep_seconds"].is_number());

    let r = k.control("delay=9");
    assert!(first_line(&text(&r)).contains(", delay=9, "), "{r:?}");
    assert_eq!(k.status_json()["delay"], 9);
    let r = k.control("delay=0");
    assert_eq!(r.status, 1, "{r:?}");
    let r = k.control("delay=soon");
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(
        k.status_json()["delay"],
        9,
        "a refused word changes nothing"
    );

    let r = k.control("flush");
    assert_eq!(r.status, 0);
    assert!(text(&r).starts_with("flushed 0 entries\nVersion "), "{r:?}");

    let r = k.control("policy");
    assert_eq!(r.status, 0);
    assert!(
        text(&r).starts_with("policy: mode=enforce, match=first"),
        "{r:?}"
    );

    let r = k.control("frobnicate");
    assert_eq!(r.status, 1);
    assert!(text(&r).contains("unknown control word"), "{r:?}");
    let log = k.log();
    assert!(log.contains("kerneld: control: delay=9"), "{log}");
}

#[test]
fn an_unknown_type_gets_an_error_reply() {
    let k = Kerneld::start();
    let r = k.request(MsgType::Unknown(42), "whatever");
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(text(&r), "unknown message type 42");
    let j = k.status_json();
    assert_eq!(j["counters"]["requests"]["unknown"], 1, "{j}");
    k.wait_log("unknown message type 42");
}

#[test]
fn reply_ids_up_to_255_and_negative_ids_get_no_reply() {
    let k = Kerneld::start();
    let q = k.queue();
    let before = k.counter("bad_messages");
    for id in [5, 255, -7] {
        let m = Message::request(MsgType::Status, id, Header::Old, "");
        q.send(&m, usize::MAX, false).unwrap();
        k.wait_log(&format!(
            "dropping debug with reply id {id} (type 255, from an unknown pid):"
        ));
    }
    // Nothing is left on the queue: no reply of type 5 or 255 went out.
    assert_eq!(q.stat().unwrap().messages, 0);
    assert!(q.recv_raw(TypeFilter::Any, true).unwrap().is_none());
    assert_eq!(k.counter("bad_messages"), before + 3);
    assert_eq!(k.control("").status, 0, "the daemon still answers");
}

#[test]
fn requests_with_id_0_are_served_without_a_reply() {
    let dir = TempDir::new();
    let k = Kerneld::builder()
        .modprobe(&format!(
            "install kdtest-quiet touch {}\n",
            dir.join("ran").display()
        ))
        .start();
    let client = Client::connect(k.key()).unwrap();
    client
        .send(MsgType::RequestModule, b"kdtest-quiet", 0)
        .unwrap();
    eventually("the id-0 request is served", || {
        dir.join("ran").exists().then_some(())
    });
    k.wait_log("request_module: kdtest-quiet: loaded install command");
    assert_eq!(k.queue().stat().unwrap().messages, 0);
}

// ---- merging ---------------------------------------------------------------

#[test]
fn concurrent_identical_requests_share_one_action() {
    const N: usize = 20;
    let dir = TempDir::new();
    let k = Kerneld::builder()
        .modprobe(&gated_install("kdtest-slow", &dir))
        .start();
    let merged_before = k.counter("merged");
    let barrier = std::sync::Barrier::new(N);
    let replies: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    k.request(MsgType::RequestModule, "kdtest-slow")
                })
            })
            .collect();
        // All N wait on one job before it may finish.
        wait_for_job(&k, "kdtest-slow", N as u64);
        open_gate(&dir);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 0, "{r:?}");
        assert_eq!(
            text(r),
            "kdtest-slow: loaded install command for kdtest_slow"
        );
    }
    assert_eq!(runs_of_install(&dir), 1, "the install command ran once");
    let j = k.status_json();
    assert_eq!(
        j["counters"]["merged"].as_u64(),
        Some(merged_before + N as u64 - 1),
        "{j}"
    );
    assert_eq!(j["counters"]["succeeded"], 1, "{j}");
    assert_eq!(j["jobs"], serde_json::json!([]), "{j}");
}

// ---- malformed input -------------------------------------------------------

#[test]
fn text_sent_without_a_nul_is_read_as_the_1995_senders_meant_it() {
    let k = Kerneld::start();
    let q = k.queue();
    let client = Client::connect(k.key()).unwrap();
    let ask = |t: i64, body: Vec<u8>, id: i64| {
        q.send_raw(t, &body, false).unwrap();
        client
            .wait_reply(id, Some(LIMIT))
            .unwrap_or_else(|e| panic!("type {t}: {e}\n{}", k.log()))
    };
    // Linux 2.0's request_module(): header and strlen(name) bytes.
    for (header, name) in [(&[][..], "kdtest-old"), (&[2, 0, 7, 0][..], "kdtest-new")] {
        let (a, b) = (unique_reply_id(), unique_reply_id());
        let mut bare = a.to_ne_bytes().to_vec();
        bare.extend_from_slice(header);
        bare.extend_from_slice(name.as_bytes());
        let ra = ask(2, bare, a);
        assert_eq!((ra.status, text(&ra)), (1, format!("{name}: not found")));
        // The same with a NUL: the same request (so the cached answer).
        let mut terminated = b.to_ne_bytes().to_vec();
        terminated.extend_from_slice(header);
        terminated.extend_from_slice(name.as_bytes());
        terminated.push(0);
        let rb = ask(2, terminated, b);
        assert_eq!(
            (rb.status, text(&rb)),
            (1, format!("{name}: not found (cached)"))
        );
    }
    // The 1995 kdstat's status request: the bare header.
    let id = unique_reply_id();
    let r = ask(255, id.to_ne_bytes().to_vec(), id);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(text(&r).starts_with("Version "), "{r:?}");
    let after = k.status_json();
    assert_eq!(after["counters"]["bad_messages"], 0, "{after}");
}

#[test]
fn garbage_gets_error_replies_and_the_daemon_carries_on() {
    let k = Kerneld::start();
    let q = k.queue();
    let client = Client::connect(k.key()).unwrap();
    let before = k.status_json()["counters"].clone();

    let with_id = |id: i64, rest: &[u8]| -> Vec<u8> {
        let mut b = id.to_ne_bytes().to_vec();
        b.extend_from_slice(rest);
        b
    };
    // (type, body, reply id if one is wanted, expected start of the reply)
    let mut cases: Vec<(i64, Vec<u8>, Option<i64>, &str)> = Vec::new();
    // Shorter than an id: nobody to answer.
    cases.push((2, vec![1, 2, 3], None, ""));
    cases.push((255, vec![], None, ""));
    // 8000 bytes of text: more than the protocol's 1024.
    let id = unique_reply_id();
    let mut long = vec![b'a'; 8000];
    long.push(0);
    cases.push((255, with_id(id, &long), Some(id), "malformed message: "));
    // Bytes that are no name at all.
    let id = unique_reply_id();
    cases.push((
        2,
        with_id(id, &[0xde, 0xad, 0xbe, 0xef, 0, 0x11]),
        Some(id),
        "refused: ",
    ));
    // Malformed and wanting no reply.
    cases.push((2, with_id(0, &[b'a'; 2000]), None, ""));
    // Hostile names, for each type that takes a module name.
    let hostile: [&[u8]; 9] = [
        b"../../etc/passwd",
        b"/lib/modules/x.ko",
        b"a..b",
        b"ppp;reboot",
        b"$(touch kdtest-pwned)",
        b"x\ny",
        b"",
        b"-r",
        &[b'a'; 300],
    ];
    for (i, name) in hostile.iter().enumerate() {
        let t = [2, 3, 4, 5][i % 4];
        let id = unique_reply_id();
        let mut body = id.to_ne_bytes().to_vec();
        body.extend_from_slice(name);
        body.push(0);
        cases.push((t, body, Some(id), "refused: "));
    }

    for (t, body, _, _) in &cases {
        q.send_raw(*t, body, false).unwrap();
    }
    for (t, body, id, start) in &cases {
        let Some(id) = id else { continue };
        let r = client.wait_reply(*id, Some(LIMIT)).unwrap_or_else(|e| {
            panic!("type {t} body {body:?}: {e}\n{}", k.log());
        });
        assert_eq!(r.status, 1, "type {t} body {body:?}: {r:?}");
        assert!(text(&r).starts_with(start), "type {t} body {body:?}: {r:?}");
    }
    // Still serving, every bad message counted, nothing run.
    let after = k.status_json()["counters"].clone();
    assert_eq!(
        after["bad_messages"].as_u64().unwrap() - before["bad_messages"].as_u64().unwrap(),
        cases.len() as u64,
        "{after}"
    );
    assert_eq!(after["succeeded"], before["succeeded"], "{after}");
    assert!(!std::path::Path::new("kdtest-pwned").exists());
    assert!(!std::path::Path::new("/kdtest-pwned").exists());
    assert_eq!(k.queue().stat().unwrap().messages, 0);
    let log = k.log();
    assert!(
        log.contains("warning: malformed message of type 2"),
        "{log}"
    );
    assert!(log.contains("module name contains '/'"), "{log}");
}

#[test]
fn a_queue_full_of_requests_does_not_deadlock_the_daemon() {
    let mut k = Kerneld::start();
    let q = k.queue();
    let id = unique_reply_id();
    // Stop the daemon and fill its queue with status requests: each
    // answer is far larger than a request, so there is no room for the
    // first one until the daemon has taken more requests off the queue.
    k.pause();
    let request = Message::request(MsgType::Status, id, Header::new_with_pid(1), "");
    let mut n = 0;
    loop {
        match q.send(&request, usize::MAX, true) {
            Ok(()) => n += 1,
            Err(Error::Sys { source, .. }) if source.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => panic!("filling the queue: {e}"),
        }
    }
    assert!(n > 100, "only {n} requests fit");
    k.signal(libc::SIGCONT);
    let client = Client::connect(k.key()).unwrap();
    for i in 0..n {
        let r = client
            .wait_reply(id, Some(LIMIT))
            .unwrap_or_else(|e| panic!("reply {i} of {n}: {e}\n{}", k.log()));
        assert_eq!(r.status, 0, "{r:?}");
        assert!(text(&r).starts_with("Version "), "{r:?}");
    }
    assert_eq!(k.control("").status, 0);
    assert!(k.stop().success(), "{}", k.log());
}

// ---- signals, shutdown and restart -----------------------------------------

#[test]
fn sigterm_removes_the_queue_and_waiting_clients_learn_at_once() {
    let mut k = Kerneld::start();
    let key = k.key();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let c = Client::connect(key).unwrap();
        // SAFETY: gettid cannot fail.
        tx.send(unsafe { libc::gettid() }).unwrap();
        // Wait on an id nobody answers: only the queue's removal ends it.
        c.wait_reply(unique_reply_id(), None)
    });
    let tid = rx.recv().unwrap();
    // Best seen blocked in msgrcv (a receive that starts after the
    // removal fails the same way); without kernel symbols wchan says 0.
    eventually("the waiter blocks in msgrcv", || {
        let wchan = std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan")).ok()?;
        (wchan == "do_msgrcv" || wchan == "0").then_some(())
    });
    let status = k.stop();
    assert_eq!(status.code(), Some(0), "{}", k.log());
    match waiter.join().unwrap() {
        Err(Error::Removed) => {}
        other => panic!("the waiting client got {other:?}"),
    }
    assert!(matches!(
        Client::connect(key),
        Err(Error::NotRunning { .. })
    ));
    let log = k.log();
    assert!(log.contains("kerneld: SIGTERM: stopping"), "{log}");
    assert!(log.ends_with("kerneld: stopped\n"), "{log}");
}

#[test]
fn a_request_in_flight_is_answered_before_exit() {
    let dir = TempDir::new();
    let mut k = Kerneld::builder()
        .modprobe(&gated_install("kdtest-slow", &dir))
        .start();
    let key = k.key();
    let requester = std::thread::spawn(move || {
        Client::connect(key).unwrap().request(
            MsgType::RequestModule,
            b"kdtest-slow",
            unique_reply_id(),
            Some(LIMIT),
        )
    });
    wait_for_job(&k, "kdtest-slow", 1);
    k.sigterm();
    k.wait_log("stopping: answering requests in flight");
    open_gate(&dir);
    let r = requester
        .join()
        .unwrap()
        .expect("the in-flight request's reply");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(k.wait_exit(LIMIT).code(), Some(0));
    assert!(matches!(
        Client::connect(key),
        Err(Error::NotRunning { .. })
    ));
    assert_eq!(runs_of_install(&dir), 1);
}

#[test]
fn a_restarted_daemon_serves_requests_that_waited() {
    let mut k = Kerneld::start();
    let old_pid = k.pid();
    k.sigkill();
    let q = Queue::open(k.key()).expect("a killed kerneld leaves its queue");
    let key = k.key();
    // A tool's id (1024 + pid, this process) tells the next kerneld that
    // its sender still waits (an id that names no live sender would be
    // dropped as stale: see failover.rs).
    let requester = std::thread::spawn(move || {
        Client::connect(key).unwrap().request(
            MsgType::Unknown(42),
            b"while away",
            Client::tool_reply_id(),
            Some(LIMIT),
        )
    });
    eventually("the request waits on the queue", || {
        (q.stat().unwrap().messages == 1).then_some(())
    });
    k.restart();
    assert_ne!(k.pid(), old_pid);
    let r = requester
        .join()
        .unwrap()
        .expect("answered by the new kerneld");
    assert_eq!(r.status, 1);
    assert_eq!(text(&r), "unknown message type 42");
    k.wait_log(
        "dropped 0 requests whose senders stopped waiting and 0 replies nobody reads, kept 1",
    );
    assert_eq!(
        k.queue().id(),
        q.id(),
        "the queue was taken over, not replaced"
    );
}

#[test]
fn a_queue_removed_under_the_daemon_is_recreated() {
    let k = Kerneld::start();
    let old = k.queue();
    old.remove().unwrap();
    k.wait_log("was removed under kerneld; created it again");
    let r = k.control("");
    assert_eq!(r.status, 0, "{r:?}");
    assert_ne!(k.queue().id(), old.id());
    assert!(
        text(&r).contains(&format!("id {}, ", k.queue().id())),
        "{r:?}"
    );
}

#[test]
fn sighup_reloads_the_configuration_and_keeps_it_when_broken() {
    let k = Kerneld::builder().config("delay = 60\n").start();
    assert!(text(&k.control("policy")).contains("no rules"));
    std::fs::write(k.config_path(), "delay = 60\ndeny request kdtest-x\n").unwrap();
    k.sighup();
    k.wait_log("configuration reloaded from");
    let p = text(&k.control("policy"));
    assert!(p.contains("deny request kdtest-x"), "{p}");

    std::fs::write(k.config_path(), "delay = 60\ndeny\n").unwrap();
    k.sighup();
    let log = k.wait_log("SIGHUP: reload failed: configuration not reloaded");
    let path = k.config_path();
    assert!(
        log.contains(&format!(
            "the one in force stays (1 policy rules; the module index was reopened): {}:2: ",
            path.display()
        )),
        "{log}"
    );
    let p = text(&k.control("policy"));
    assert!(p.contains("deny request kdtest-x"), "{p}");
    assert_eq!(k.control("").status, 0);
}

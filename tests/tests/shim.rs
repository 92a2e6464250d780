//! kerneld-modprobe, the kernel's helper, against a fake kerneld on real
//! SysV queues, run the way the kernel runs it: `-q -- NAME`, a minimal
//! environment and (where said) fds 0-2 closed.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::check_config;
use kerneld_tests::fake::{self, bin, run, Action, FakeDaemon, Outcome, RawQueue, TempDir, LIMIT};
use kerneld_tests::shim::Setup;
use kmod_ipc::Header;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel path writes nothing to fds 0-2.
fn assert_silent(out: &Outcome) {
    assert_eq!(out.stdout, "", "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
}

fn answer_type_2(status: i64, text: &'static str) -> impl FnMut(&fake::Received) -> Action {
    move |r| {
        if r.mtype == 2 {
            Action::reply(status, text)
        } else {
            Action::reply(1, "unexpected")
        }
    }
}

#[test]
fn status_0_is_exit_0_with_a_kernel_style_id() {
    // Other lines of the file belong to kerneld and must be ignored.
    let setup = Setup::new("# kerneld\ndelay = 60\nkeep\nalias char-major-108 ppp\n\n");
    let fake = FakeDaemon::with_handler(answer_type_2(0, ""));
    let out = setup.request(fake.key(), "ppp");
    assert_eq!(out.code(), 0, "{out:?} {}", setup.log());
    assert_silent(&out);
    let got = fake.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mtype, 2);
    assert_eq!(got[0].text_str(), "ppp");
    // A kernel request's id (from 0x7fff0000, KERNELD_MINSEQ), past the
    // in-kernel sender's 0x7fff0000..=0x7fffffff.
    assert_eq!(got[0].id, 0x8000_0000 + i64::from(out.pid));
    assert_eq!(got[0].header, Header::new_with_pid(out.pid));
    assert_eq!(setup.modprobe_argv(), None, "no fallback");
    assert_eq!(setup.log(), "", "nothing to complain about");
}

#[test]
fn status_1_is_exit_1_and_logged_by_kerneld_only() {
    let setup = Setup::new("");
    let fake = FakeDaemon::with_handler(answer_type_2(1, "modprobe: FATAL: Module nope not found"));
    let out = setup.request(fake.key(), "nope");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_silent(&out);
    // kerneld logs each refusal with its reason; a second line from the
    // shim would only repeat it, at the cost of a syslog call per request.
    assert_eq!(setup.log(), "", "the shim repeats kerneld's refusal");
    assert_eq!(setup.modprobe_argv(), None, "kerneld answered: no fallback");
}

#[test]
fn other_nonzero_statuses_are_exit_1() {
    let setup = Setup::new("");
    let fake = FakeDaemon::with_handler(answer_type_2(-2, ""));
    assert_eq!(setup.request(fake.key(), "x").code(), 1);
}

#[test]
fn without_kerneld_runs_the_real_modprobe_with_the_same_arguments() {
    let setup = Setup::new("");
    let out = setup.request(fake::unused_key(), "char-major-108");
    assert_eq!(out.code(), 0, "{out:?} {}", setup.log());
    assert_silent(&out);
    assert_eq!(
        setup.modprobe_argv().expect("the real modprobe ran"),
        ["-q", "--", "char-major-108"]
    );
    assert!(setup.log().contains("not running"), "{}", setup.log());
}

#[test]
fn the_real_modprobes_exit_status_is_the_shims() {
    let setup = Setup::new("");
    let failing = setup.dir.script("failing-modprobe", "exit 1\n");
    std::fs::write(
        setup.dir.join("kerneld.conf"),
        format!("shim-modprobe = {}\n", failing.display()),
    )
    .unwrap();
    assert_eq!(setup.request(fake::unused_key(), "ppp").code(), 1);
}

#[test]
fn fallback_fail_fails_at_once() {
    let setup = Setup::new("shim-fallback = fail\n");
    let out = setup.request(fake::unused_key(), "ppp");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_silent(&out);
    assert_eq!(setup.modprobe_argv(), None);
    assert!(
        setup.log().contains("shim-fallback = fail"),
        "{}",
        setup.log()
    );
}

#[test]
fn no_reply_within_shim_timeout_is_exit_1() {
    let setup = Setup::new("shim-timeout = 1\n");
    let fake = FakeDaemon::with_handler(|_| Action::Ignore);
    let out = setup.request(fake.key(), "ppp");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_silent(&out);
    assert_eq!(fake.received().len(), 1, "the request was sent");
    assert!(setup.log().contains("no reply"), "{}", setup.log());
    assert_eq!(
        setup.modprobe_argv(),
        None,
        "a slow kerneld is no reason to fall back"
    );
}

#[test]
fn queue_removed_while_waiting_falls_back() {
    let setup = Setup::new("");
    let fake = FakeDaemon::with_handler(|_| Action::RemoveQueue);
    let out = setup.request(fake.key(), "ppp");
    assert_eq!(out.code(), 0, "{out:?} {}", setup.log());
    assert_eq!(fake.received().len(), 1);
    assert_eq!(
        setup.modprobe_argv().expect("fallback ran"),
        ["-q", "--", "ppp"]
    );

    let setup = Setup::new("shim-fallback = fail\n");
    let fake = FakeDaemon::with_handler(|_| Action::RemoveQueue);
    assert_eq!(setup.request(fake.key(), "ppp").code(), 1);
    assert_eq!(setup.modprobe_argv(), None);
}

/// Spawn with fds 0, 1 and 2 closed, as the kernel's worker does.
fn with_std_fds_closed(cmd: &mut Command) -> &mut Command {
    // SAFETY: close is async-signal-safe; this runs after the standard
    // streams were set up, so it closes them for good.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 0..3 {
                libc::close(fd);
            }
            Ok(())
        })
    }
}

#[test]
fn works_with_fds_0_to_2_closed() {
    let setup = Setup::new("");
    let fake = FakeDaemon::with_handler(answer_type_2(0, ""));
    let out = run(
        with_std_fds_closed(&mut setup.command(fake.key(), &["-q", "--", "ppp"])),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?} {}", setup.log());
    assert_eq!(fake.received().len(), 1);

    let fake = FakeDaemon::with_handler(answer_type_2(1, "no"));
    let out = run(
        with_std_fds_closed(&mut setup.command(fake.key(), &["-q", "--", "ppp"])),
        LIMIT,
    );
    assert_eq!(out.code(), 1, "{out:?}");

    // And the fallback still gets its arguments.
    let out = run(
        with_std_fds_closed(&mut setup.command(fake::unused_key(), &["-q", "--", "ppp"])),
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:?} {}", setup.log());
    assert_eq!(setup.modprobe_argv().unwrap(), ["-q", "--", "ppp"]);
}

#[test]
fn other_arguments_go_to_the_real_modprobe() {
    let setup = Setup::new("");
    let fake = FakeDaemon::with_handler(answer_type_2(0, ""));
    let out = run(&mut setup.command(fake.key(), &["-r", "ppp"]), LIMIT);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(setup.modprobe_argv().unwrap(), ["-r", "ppp"]);
    assert!(fake.received().is_empty(), "not a request for kerneld");

    let setup = Setup::new("shim-fallback = fail\n");
    let out = run(&mut setup.command(fake.key(), &["-r", "ppp"]), LIMIT);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(setup.modprobe_argv(), None);
    assert!(setup.log().contains("-r"), "{}", setup.log());
}

#[test]
fn refuses_to_exec_itself() {
    let setup = Setup::new("");
    let shim = bin("kerneld-modprobe");
    let link = setup.dir.join("modprobe-link");
    std::os::unix::fs::symlink(&shim, &link).unwrap();
    for target in [&shim, &link] {
        std::fs::write(
            setup.dir.join("kerneld.conf"),
            format!("shim-modprobe = {}\n", target.display()),
        )
        .unwrap();
        let out = setup.request(fake::unused_key(), "ppp");
        assert_eq!(out.code(), 1, "{out:?}");
        assert!(setup.log().contains("is this program"), "{}", setup.log());
    }
}

/// `shim-fallback = fial` is refused by kerneld; the shim cannot read it
/// either, and fails rather than run modprobe past the deny rules.
#[test]
fn a_shim_line_it_cannot_read_fails_safe() {
    let setup = Setup::new("deny request net-pf-33\nshim-fallback = fial\n");
    let check = check_config(&setup.dir.join("kerneld.conf"));
    assert_eq!(check.code(), 3, "kerneld refuses it: {check:?}");
    assert!(
        check
            .stderr
            .contains("kerneld.conf:3: shim-fallback must be"),
        "{check:?}"
    );
    let out = setup.request(fake::unused_key(), "net-pf-33");
    assert_eq!(out.code(), 1, "{out:?} {}", setup.log());
    assert_silent(&out);
    assert_eq!(setup.modprobe_argv(), None, "modprobe must not run");
    let log = setup.log();
    assert!(
        log.contains("kerneld.conf:3: shim-fallback must be `modprobe` or `fail`, not \"fial\""),
        "{log}"
    );
    assert!(log.contains("failing safe"), "{log}");
}

/// A file that includes itself six times was 6^8 reads for the shim
/// (more than 30 s a request) and one error for kerneld: now each include
/// is refused at once, by both.
#[test]
fn a_file_that_includes_itself_fails_at_once() {
    let setup = Setup::new(&"include kerneld.conf\n".repeat(6));
    let check = check_config(&setup.dir.join("kerneld.conf"));
    assert_eq!(check.code(), 3, "kerneld refuses it: {check:?}");
    assert!(check.stderr.contains("kerneld.conf:2: "), "{check:?}");
    assert!(check.stderr.contains("includes itself"), "{check:?}");
    let out = setup.request(fake::unused_key(), "ppp");
    assert_eq!(out.code(), 1, "{out:?} {}", setup.log());
    assert_silent(&out);
    assert_eq!(setup.modprobe_argv(), None, "modprobe must not run");
    let log = setup.log();
    let lines: Vec<&str> = log.lines().collect();
    // Six refused includes, the first four logged, then how many more:
    // the work is one read per include line, not one per path through them.
    assert_eq!(lines.len(), 4 + 1 + 1, "{log}");
    for (i, line) in lines[..4].iter().enumerate() {
        assert!(line.contains(&format!("kerneld.conf:{}: ", i + 2)), "{log}");
        assert!(line.contains("kerneld.conf includes itself"), "{log}");
        assert!(line.contains("failing safe"), "{log}");
    }
    assert!(lines[4].contains("2 more problems in "), "{log}");
    assert!(lines[5].contains("shim-fallback = fail"), "{log}");
}

/// What `kerneld --check-config` accepts the shim reads as the same value,
/// and what kerneld refuses the shim cannot read, and so fails safe.
#[test]
fn check_config_and_the_shim_agree_on_every_value() {
    // The line, and the settings the shim shows (None: refused by both).
    let table: &[(&str, Option<&str>)] = &[
        ("shim-timeout = 30", Some("shim-timeout = 30\n")),
        ("shim-timeout = 0.5", Some("shim-timeout = 0.5\n")),
        ("shim-timeout = +5", Some("shim-timeout = 5\n")),
        ("shim-timeout = 1e3", Some("shim-timeout = 1000\n")),
        ("shim-timeout=2.5e-1", Some("shim-timeout = 0.25\n")),
        ("shim-timeout = 3600", Some("shim-timeout = 3600\n")),
        ("shim-fallback = fail", Some("shim-fallback = fail\n")),
        (
            "shim-fallback = modprobe",
            Some("shim-fallback = modprobe\n"),
        ),
        (
            "shim-modprobe = /opt/mod#probe",
            Some("shim-modprobe = /opt/mod#probe\n"),
        ),
        ("shim-timeout = 0", None),
        ("shim-timeout = -1", None),
        ("shim-timeout = 3601", None),
        ("shim-timeout = 1e300", None),
        ("shim-timeout = inf", None),
        ("shim-timeout = nan", None),
        ("shim-timeout = 5 s", None),
        ("shim-timeout = 1e-10", None),
        ("shim-timeout 5", None),
        ("shim-fallback = fial", None),
        ("shim-fallback = Fail", None),
        ("shim-modprobe = modprobe", None),
        ("shim-modprobe =", None),
        ("shim-fallbak = fail", None),
    ];
    for &(line, shown) in table {
        let setup = Setup::new(&format!("{line}\n"));
        let conf = setup.dir.join("kerneld.conf");
        let check = check_config(&conf);
        let show = run(
            &mut setup.command(fake::unused_key(), &["--show-config"]),
            LIMIT,
        );
        match shown {
            Some(want) => {
                assert_eq!(check.code(), 0, "{line}: kerneld accepts it: {check:?}");
                assert_eq!(show.code(), 0, "{line}: the shim reads it: {show:?}");
                assert!(show.stdout.contains(want), "{line}: {show:?}");
                assert_eq!(show.stderr, "", "{line}");
            }
            None => {
                assert_eq!(check.code(), 3, "{line}: kerneld refuses it: {check:?}");
                assert!(
                    check.stderr.contains("kerneld.conf:2: "),
                    "{line}: {check:?}"
                );
                assert_eq!(show.code(), 1, "{line}: the shim cannot read it: {show:?}");
                assert!(
                    show.stdout.contains("shim-fallback = fail\n"),
                    "{line}: {show:?}"
                );
                assert!(show.stderr.contains("kerneld.conf:2: "), "{line}: {show:?}");
            }
        }
    }
}

/// `shim-fallback = fail` in an included file (the rare-protocols split
/// kerneld.conf(5) suggests) is the shim's setting as it is kerneld's.
#[test]
fn an_included_shim_fallback_is_read_as_kerneld_reads_it() {
    let setup = Setup::new("include rare.conf\n");
    std::fs::write(
        setup.dir.join("rare.conf"),
        "deny request net-pf-33\nshim-fallback = fail\n",
    )
    .unwrap();
    let check = check_config(&setup.dir.join("kerneld.conf"));
    assert_eq!(check.code(), 0, "kerneld accepts it: {check:?}");
    let out = setup.request(fake::unused_key(), "net-pf-33");
    assert_eq!(out.code(), 1, "{out:?} {}", setup.log());
    assert_silent(&out);
    assert_eq!(setup.modprobe_argv(), None, "modprobe must not run");
    assert!(
        setup.log().contains("shim-fallback = fail"),
        "{}",
        setup.log()
    );
}

/// Drop-ins (`include DIR/*.conf`) are the shim's as they are kerneld's:
/// the last in lexical order wins, and no match is no error.
#[test]
fn drop_ins_are_read_by_the_shim_in_lexical_order() {
    let setup = Setup::new("include kerneld.d/*.conf\ninclude none.d/*.conf\n");
    let dropins = setup.dir.join("kerneld.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(dropins.join("10-a.conf"), "shim-fallback = modprobe\n").unwrap();
    std::fs::write(dropins.join("90-z.conf"), "shim-fallback = fail\n").unwrap();
    std::fs::write(
        dropins.join("95-z.conf.dpkg-old"),
        "shim-fallback = modprobe\n",
    )
    .unwrap();
    let check = check_config(&setup.dir.join("kerneld.conf"));
    assert_eq!(check.code(), 0, "kerneld accepts it: {check:?}");
    let out = setup.request(fake::unused_key(), "net-pf-33");
    assert_eq!(out.code(), 1, "{out:?} {}", setup.log());
    assert_eq!(setup.modprobe_argv(), None, "modprobe must not run");
    assert!(
        setup.log().contains("shim-fallback = fail"),
        "{}",
        setup.log()
    );
}

/// An include the shim cannot read may have said `fail`: it fails safe,
/// and says so in its log, naming the include line.
#[test]
fn an_unreadable_include_fails_safe() {
    let setup = Setup::new("include missing.conf\nshim-fallback = modprobe\n");
    let check = check_config(&setup.dir.join("kerneld.conf"));
    assert_ne!(check.code(), 0, "kerneld refuses it: {check:?}");
    assert!(
        check.stderr.contains("kerneld.conf:2: cannot read"),
        "{check:?}"
    );
    let out = setup.request(fake::unused_key(), "ppp");
    assert_eq!(out.code(), 1, "{out:?} {}", setup.log());
    assert_eq!(setup.modprobe_argv(), None, "modprobe must not run");
    let log = setup.log();
    assert!(log.contains("kerneld.conf:2: cannot read"), "{log}");
    assert!(log.contains("failing safe"), "{log}");
}

#[test]
fn a_queue_others_could_have_made_is_not_kerneld() {
    let queue = RawQueue::create(0o666);
    // Not kerneld's queue: nothing is sent to it, and the request falls
    // back as without kerneld (see key_ownership.rs for a squatter).
    let setup = Setup::new("");
    let out = setup.request(queue.0.key(), "ppp");
    assert_eq!(out.code(), 0, "{out:?} {}", setup.log());
    assert_eq!(
        setup.modprobe_argv(),
        Some(vec!["-q".into(), "--".into(), "ppp".into()])
    );
    assert_eq!(queue.0.stat().unwrap().messages, 0, "nothing sent to it");
    assert!(
        setup
            .log()
            .contains("is not kerneld's: owner uid 0, creator uid 0, mode 666"),
        "{}",
        setup.log()
    );
    let setup = Setup::new("shim-fallback = fail\n");
    assert_eq!(setup.request(queue.0.key(), "ppp").code(), 1);
    assert_eq!(setup.modprobe_argv(), None);
    assert_eq!(queue.0.stat().unwrap().messages, 0, "nothing sent to it");
}

#[test]
fn concurrent_shims_get_their_own_replies() {
    // Odd names are refused, so each shim must get its own answer.
    let fake = FakeDaemon::with_handler(|r| {
        let n: u32 = r.text_str().trim_start_matches("mod").parse().unwrap();
        Action::reply(i64::from(n % 2), "")
    });
    let setup = Setup::new("");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut cmd = setup.command(fake.key(), &["-q", "--", &format!("mod{i}")]);
            (i, fake::spawn(cmd.stdin(std::process::Stdio::null())))
        })
        .collect();
    let mut pids = Vec::new();
    for (i, child) in children {
        let out = fake::finish(child, LIMIT);
        assert_eq!(out.code(), i % 2, "mod{i}: {out:?}");
        pids.push(out.pid);
    }
    let mut ids: Vec<i64> = fake.received().iter().map(|r| r.id).collect();
    ids.sort();
    let mut want: Vec<i64> = pids.iter().map(|&p| 0x8000_0000 + i64::from(p)).collect();
    want.sort();
    assert_eq!(ids, want);
}

#[test]
fn help_and_version_print_to_stdout() {
    let setup = Setup::new("");
    let out = run(&mut setup.command(fake::unused_key(), &["--help"]), LIMIT);
    assert_eq!(out.code(), 0);
    assert!(
        out.stdout.contains("kerneld-modprobe [-q] [--] NAME"),
        "{out:?}"
    );
    assert!(out.stdout.contains("shim-fallback"), "{out:?}");
    let out = run(
        &mut setup.command(fake::unused_key(), &["--version"]),
        LIMIT,
    );
    assert_eq!(out.code(), 0);
    assert!(out.stdout.starts_with("kerneld-modprobe "), "{out:?}");
    // kmod's short form is ours too, not a job for the real modprobe.
    let short = run(&mut setup.command(fake::unused_key(), &["-V"]), LIMIT);
    assert_eq!((short.code(), &short.stdout), (0, &out.stdout), "{short:?}");
    assert_eq!(setup.modprobe_argv(), None);
}

#[test]
fn register_and_unregister_round_trip() {
    let dir = TempDir::new();
    let proc_file = dir.join("modprobe");
    let state = dir.join("state");
    let record = state.join("previous-modprobe");
    std::fs::write(&proc_file, "/sbin/modprobe\n").unwrap();
    let shim = std::fs::canonicalize(bin("kerneld-modprobe")).unwrap();
    let shim = shim.to_str().unwrap();
    let manage = |arg: &str| {
        run(
            Command::new(bin("kerneld-modprobe"))
                .arg(arg)
                .env("KERNELD_PROC_MODPROBE", &proc_file)
                .env("KERNELD_STATE_DIR", &state),
            LIMIT,
        )
    };
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap();

    let out = manage("--register");
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains(shim), "{out:?}");
    assert_eq!(read(&proc_file), format!("{shim}\n"));
    assert_eq!(read(&record), "/sbin/modprobe\n");

    // Again: the record must still hold the real previous value.
    let out = manage("--register");
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(read(&proc_file), format!("{shim}\n"));
    assert_eq!(read(&record), "/sbin/modprobe\n");

    let out = manage("--unregister");
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(read(&proc_file), "/sbin/modprobe\n");
    assert!(!record.exists(), "record removed");

    // Any previous value is restored, not just the default.
    std::fs::write(&proc_file, "/usr/local/sbin/modprobe\n").unwrap();
    assert_eq!(manage("--register").code(), 0);
    assert_eq!(read(&record), "/usr/local/sbin/modprobe\n");
    assert_eq!(manage("--unregister").code(), 0);
    assert_eq!(read(&proc_file), "/usr/local/sbin/modprobe\n");

    // With no record, unregister falls back to /sbin/modprobe.
    std::fs::write(&proc_file, format!("{shim}\n")).unwrap();
    assert_eq!(manage("--unregister").code(), 0);
    assert_eq!(read(&proc_file), "/sbin/modprobe\n");
}

#[test]
fn register_never_writes_through_a_link_nor_reads_a_fifo() {
    let dir = TempDir::new();
    let proc_file = dir.join("modprobe");
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(&proc_file, "/sbin/modprobe\n").unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let record = state.join("previous-modprobe");
    std::os::unix::fs::symlink(&victim, &record).unwrap();
    let manage = |arg: &str, state: &Path| {
        run(
            Command::new(bin("kerneld-modprobe"))
                .arg(arg)
                .env("KERNELD_PROC_MODPROBE", &proc_file)
                .env("KERNELD_STATE_DIR", state),
            LIMIT,
        )
    };
    let out = manage("--register", &state);
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        "/sbin/modprobe\n"
    );
    assert!(!std::fs::symlink_metadata(&record).unwrap().is_symlink());

    // A FIFO at the record's name: refused at once, the helper untouched.
    std::fs::remove_file(&record).unwrap();
    nix::unistd::mkfifo(&record, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let before = std::fs::read_to_string(&proc_file).unwrap();
    let out = manage("--unregister", &state);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("is a FIFO, not a regular file"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&proc_file).unwrap(), before);

    // A state directory others may write is refused before anything.
    std::fs::write(&proc_file, "/sbin/modprobe\n").unwrap();
    let open = dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = manage("--register", &open);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("chmod go-w"), "{out:?}");
    assert!(!open.join("previous-modprobe").exists());
}

#[test]
fn register_reports_errors_on_stderr() {
    let dir = TempDir::new();
    let out = run(
        Command::new(bin("kerneld-modprobe"))
            .arg("--register")
            .env("KERNELD_PROC_MODPROBE", dir.join("missing/modprobe"))
            .env("KERNELD_STATE_DIR", dir.join("state")),
        LIMIT,
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.starts_with("kerneld-modprobe: "), "{out:?}");
    assert!(!dir.join("state/previous-modprobe").exists());
}

#[test]
fn the_stand_in_modprobe_is_a_real_program() {
    // Guards the other tests: the stand-in records its arguments.
    let setup = Setup::new("");
    let out = run(Command::new(&setup.modprobe).args(["a", "b c"]), LIMIT);
    assert_eq!(out.code(), 0);
    assert_eq!(setup.modprobe_argv().unwrap(), ["a", "b c"]);
}

/// A journal: a datagram socket the shim is pointed at
/// (KERNELD_JOURNAL_SOCKET), and the entries it received.
struct Journal {
    sock: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

impl Journal {
    fn bind(dir: &TempDir) -> Journal {
        let path = dir.join("journal.socket");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        Journal { sock, path }
    }

    /// The shim of `setup` sending to this journal rather than the test
    /// log.
    fn command(&self, setup: &Setup, key: kmod_ipc::Key, name: &str) -> Command {
        let mut cmd = setup.command(key, &["-q", "--", name]);
        cmd.env_remove("KERNELD_SHIM_LOG")
            .env("KERNELD_JOURNAL_SOCKET", &self.path);
        cmd
    }

    /// The next entry with this MESSAGE_ID, as `KEY=value` lines (entries
    /// of other lines are skipped).
    fn entry_with(&self, id: &str) -> Vec<(String, String)> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self
                .sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no entry with MESSAGE_ID={id}: {e}"));
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(text.ends_with('\n'), "{text:?}");
            let entry: Vec<(String, String)> = text
                .lines()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{l:?}"));
                    (k.to_string(), v.to_string())
                })
                .collect();
            if entry.iter().any(|(k, v)| k == "MESSAGE_ID" && v == id) {
                return entry;
            }
        }
    }
}

fn field<'a>(entry: &'a [(String, String)], key: &str) -> &'a str {
    let values: Vec<&str> = entry
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    match values[..] {
        [v] => v,
        _ => panic!("{key}: {values:?} in {entry:?}"),
    }
}

/// The MESSAGE_IDs of kerneld-modprobe(8), LOGGING.
const NO_REPLY: &str = "a8fd96b1f6de484a81ab4a690058e387";
const FOREIGN_QUEUE: &str = "e137aa26d48e4a0686295014921f9328";

#[test]
fn no_reply_reaches_the_journal_with_its_message_id() {
    let setup = Setup::new("shim-timeout = 0.5\n");
    let journal = Journal::bind(&setup.dir);
    let fake = FakeDaemon::with_handler(|_| Action::Ignore);
    let out = run(&mut journal.command(&setup, fake.key(), "ppp"), LIMIT);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_silent(&out);
    let e = journal.entry_with(NO_REPLY);
    assert_eq!(field(&e, "SYSLOG_IDENTIFIER"), "kerneld-modprobe");
    assert_eq!(field(&e, "PRIORITY"), "4");
    assert_eq!(field(&e, "REQUEST"), "ppp");
    assert_eq!(field(&e, "KERNELD_KEY"), fake.key().to_string());
    assert_eq!(field(&e, "SHIM_TIMEOUT"), "0.5");
    assert!(
        field(&e, "MESSAGE").contains("no reply from kerneld"),
        "{e:?}"
    );
    // The test log hook was off: nothing went there.
    assert_eq!(setup.log(), "");
}

#[test]
fn a_foreign_queue_reaches_the_journal_with_its_message_id() {
    let queue = RawQueue::create(0o666);
    let setup = Setup::new("shim-fallback = fail\n");
    let journal = Journal::bind(&setup.dir);
    let out = run(&mut journal.command(&setup, queue.0.key(), "ppp"), LIMIT);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_silent(&out);
    let e = journal.entry_with(FOREIGN_QUEUE);
    assert_eq!(field(&e, "PRIORITY"), "3");
    assert_eq!(field(&e, "REQUEST"), "ppp");
    assert_eq!(field(&e, "KERNELD_KEY"), queue.0.key().to_string());
    assert_eq!(field(&e, "QUEUE_ID"), queue.0.id().to_string());
    assert_eq!(field(&e, "QUEUE_UID"), "0");
    assert_eq!(field(&e, "QUEUE_MODE"), "666");
    assert!(field(&e, "MESSAGE").contains("is not kerneld's"), "{e:?}");
    assert_eq!(queue.0.stat().unwrap().messages, 0, "nothing sent to it");
}

#[test]
fn a_journal_socket_nobody_listens_on_is_no_obstacle() {
    // Nobody bound there any more: the shim uses syslog (here, without
    // /dev/log, nowhere) and answers as usual.
    let setup = Setup::new("shim-fallback = fail\n");
    let dead = setup.dir.join("dead.socket");
    drop(std::os::unix::net::UnixDatagram::bind(&dead).unwrap());
    let mut cmd = setup.command(fake::unused_key(), &["-q", "--", "ppp"]);
    cmd.env_remove("KERNELD_SHIM_LOG")
        .env("KERNELD_JOURNAL_SOCKET", &dead);
    let out = run(&mut cmd, LIMIT);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_silent(&out);
}

#[test]
fn a_journal_that_does_not_read_does_not_hold_up_the_request() {
    // A hung journal: its socket's queue is full, and nothing reads it.
    let queue = RawQueue::create(0o666);
    let setup = Setup::new("shim-fallback = fail\n");
    let journal = Journal::bind(&setup.dir);
    let filler = std::os::unix::net::UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while filler.send_to(b"MESSAGE=filler\n", &journal.path).is_ok() {
        queued += 1;
    }
    assert!(queued > 0);
    // The foreign queue's line and the fallback's are dropped, not waited
    // on: the shim answers (run() would fail the test after LIMIT).
    let out = run(&mut journal.command(&setup, queue.0.key(), "ppp"), LIMIT);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_silent(&out);
}

//! No value kills the daemon: every duration and count has a range, and
//! one out of it is refused with that range, whether it comes as a word,
//! an option, a line of kerneld.conf or a control word sent live; the
//! configuration files are regular files of bounded size.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{check_config, Kerneld, LIMIT};
use kerneld_tests::fake::{bin, run, TempDir};
use std::process::Command;

const HUGE: [&str; 3] = ["18446744073709551615", "9223372036854775807", "0"];

#[test]
fn a_huge_delay_sent_live_is_refused_and_the_daemon_serves_on() {
    let k = Kerneld::builder().arg("delay=7").start();
    for v in HUGE {
        let r = k.control(&format!("delay={v}"));
        assert_eq!(r.status, 1, "{r:?}");
        assert_eq!(
            r.text_lossy(),
            format!("delay={v}: delay needs a whole number of seconds from 1 to 604800, not {v:?}")
        );
    }
    let j = k.status_json();
    assert_eq!(j["delay"], 7, "{j}");
    let r = k.control("delay=604800");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(k.status_json()["delay"], 604800);
}

#[test]
fn out_of_range_words_and_options_are_usage_errors() {
    for args in [
        vec!["delay=18446744073709551615"],
        vec!["delay=0"],
        vec!["--delay", "0"],
        vec!["--delay", "9223372036854775807"],
        vec!["type=0"],
        vec!["type=1024"],
        vec!["--type", "-256"],
    ] {
        let out = run(Command::new(bin("kerneld")).args(&args), LIMIT);
        assert_eq!(out.code(), 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(" from "), "{args:?}: {out:?}");
    }
}

#[test]
fn check_config_refuses_values_out_of_range_naming_the_line() {
    let dir = TempDir::new();
    for (line, range) in [
        ("delay = 18446744073709551615", "from 1 to 604800"),
        ("delay = 0", "from 1 to 604800"),
        ("negative-cache = 9223372036854775807", "from 0 to 86400"),
        ("rate-limit = 99999999999", "from 0 to 60000"),
        ("max-workers = 5000", "from 1 to 1024"),
        ("include /dev/zero", "not a regular file"),
    ] {
        let conf = dir.join("kerneld.conf");
        std::fs::write(&conf, format!("# bounds\n{line}\n")).unwrap();
        let out = check_config(&conf);
        assert_eq!(out.code(), 3, "{line}: {out:?}");
        let at = format!("{}:2: ", conf.display());
        assert!(
            out.stderr.contains(&at) && out.stderr.contains(range),
            "{line}: {out:?}"
        );
    }
}

#[test]
fn a_reload_that_includes_a_fifo_is_refused_at_once() {
    let k = Kerneld::builder().config("delay = 9\n").start();
    let fifo = k.dir().join("rules.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    std::fs::write(k.config_path(), format!("include {}\n", fifo.display())).unwrap();
    k.sighup();
    k.wait_log("not a regular file");
    // Still serving, on the old configuration.
    assert_eq!(k.control("").status, 0);
    assert_eq!(k.status_json()["delay"], 9);
}

//! Policy and hardening of the real kerneld: allow/deny rules on requested
//! names and on every module a request would load (the Debian 6.12 tree
//! gives real dependencies), audit mode, the negative cache and rate
//! limit, the lock, and configuration errors.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and the Debian
//! module tree (tests/vm/fetch-kernel.sh).

use kerneld_tests::daemon::{check_config, host_has_module_support, Kerneld, LIMIT};
use kerneld_tests::fake::{bin, run, TempDir};
use kmod_ipc::{MsgType, Reply};
use std::process::Command;

fn text(r: &Reply) -> String {
    r.text_lossy()
}

fn with_policy(config: &str) -> Kerneld {
    Kerneld::builder().debian_tree().config(config).start()
}

fn request(k: &Kerneld, name: &str) -> Reply {
    k.request(MsgType::RequestModule, name)
}

/// `name` was refused by `rule` (as shown, with its origin).
fn assert_denied(k: &Kerneld, name: &str, rule: &str) {
    let r = request(k, name);
    assert_eq!(r.status, 1, "{r:?}");
    assert_eq!(text(&r), format!("{name}: denied by policy: {rule}"));
}

/// `name` went ahead to loading `module`: on this host that fails with
/// ENOSYS; a kernel that loads modules may also succeed.
fn assert_attempted(k: &Kerneld, name: &str, module: &str) {
    let r = request(k, name);
    let t = text(&r);
    assert!(!t.contains("denied"), "{name}: {r:?}");
    if host_has_module_support() {
        assert!(
            r.status == 0 || t.contains(&format!("could not insert {module}")),
            "{r:?}"
        );
    } else {
        assert_eq!(r.status, 1, "{r:?}");
        assert!(
            t.starts_with(&format!("{name}: could not insert {module}: ")),
            "{r:?}"
        );
        assert!(t.contains("no loadable module support"), "{r:?}");
    }
}

fn origin(k: &Kerneld, line: usize) -> String {
    format!("{}:{line}", k.config_path().display())
}

/// The line of a request for `name` the policy denied or, in audit mode,
/// would have: the request's own (one line per request), which carries
/// the rule, then the modules in brackets.
fn decision_line(log: &str, name: &str) -> String {
    let needle = format!(": {name}: ");
    log.lines()
        .find(|l| {
            l.contains("request_module")
                && l.contains(&needle)
                && (l.contains(": denied by policy: ")
                    || l.contains(", allowed by audit mode (would deny by "))
        })
        .unwrap_or_else(|| panic!("no policy decision logged for {name}:\n{log}"))
        .to_string()
}

/// The line of the request for `name` (one per request: an allowed one
/// says by what).
fn request_line(log: &str, name: &str) -> String {
    let needle = format!("request_module: {name}: ");
    log.lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no request line for {name}:\n{log}"))
        .to_string()
}

/// `name`'s request logged one line, whatever the policy said.
fn assert_one_line(log: &str, name: &str) {
    let needle = format!(": {name}: ");
    assert_eq!(
        log.lines().filter(|l| l.contains(&needle)).count(),
        1,
        "not one line for {name}:\n{log}"
    );
}

fn bracketed(line: &str) -> Vec<String> {
    let inner = line
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(m, _)| m)
        .unwrap_or_else(|| panic!("no module list in {line:?}"));
    inner.split_whitespace().map(String::from).collect()
}

#[test]
fn a_request_rule_denies_matching_names_only() {
    let k = with_policy("deny request net-pf-*\n");
    let rule = format!("deny request net-pf-* ({})", origin(&k, 1));
    assert_denied(&k, "net-pf-31", &rule);
    assert_denied(&k, "net-pf-5", &rule);
    assert_attempted(&k, "rtnl-link-dummy", "dummy");
    let j = k.status_json();
    assert_eq!(j["counters"]["denied"], 2, "{j}");
    assert_eq!(j["policy"]["rules"][0]["hits"], 2, "{j}");
}

#[test]
fn the_first_matching_rule_decides_by_default() {
    let k = with_policy("allow request net-pf-29\ndeny request net-pf-*\n");
    assert_attempted(&k, "net-pf-29", "can");
    assert_denied(
        &k,
        "net-pf-31",
        &format!("deny request net-pf-* ({})", origin(&k, 2)),
    );
    let k = with_policy("deny request net-pf-*\nallow request net-pf-29\n");
    assert_denied(
        &k,
        "net-pf-29",
        &format!("deny request net-pf-* ({})", origin(&k, 1)),
    );
}

#[test]
fn match_specific_lets_the_most_literal_rule_decide() {
    let k = with_policy("match = specific\ndeny request net-pf-*\nallow request net-pf-29\n");
    assert_attempted(&k, "net-pf-29", "can");
    assert_denied(
        &k,
        "net-pf-31",
        &format!("deny request net-pf-* ({})", origin(&k, 2)),
    );
    assert!(text(&k.control("policy")).starts_with("policy: mode=enforce, match=specific"));
}

#[test]
fn audit_mode_lets_a_denied_request_proceed_and_logs_it() {
    let k = with_policy("mode = audit\ndeny request net-pf-29\n");
    assert_attempted(&k, "net-pf-29", "can");
    let log = k.wait_log("request_module: net-pf-29: ");
    // One line: the request's, which says what audit mode let through.
    assert_one_line(&log, "net-pf-29");
    let line = decision_line(&log, "net-pf-29");
    assert!(
        line.contains(&format!(
            " ms), allowed by audit mode (would deny by deny request net-pf-29 ({}) -> [can",
            origin(&k, 2)
        )),
        "{line}"
    );
    assert!(line.ends_with("])"), "{line}");
    let j = k.status_json();
    assert_eq!(j["counters"]["denied"], 0, "{j}");
    assert_eq!(j["policy"]["mode"], "audit", "{j}");
}

#[test]
fn a_denied_module_denies_every_request_that_would_load_it() {
    let k = with_policy("deny module llc\n");
    let rule = format!("deny module llc ({})", origin(&k, 1));
    // bridge needs stp, which needs llc.
    assert_denied(&k, "rtnl-link-bridge", &rule);
    assert_attempted(&k, "rtnl-link-dummy", "dummy");
    // A request's line is written after its answer: wait for it.
    let log = k.wait_log("request_module: rtnl-link-dummy: ");
    let line = decision_line(&log, "rtnl-link-bridge");
    assert!(
        line.starts_with(&format!(
            "kerneld: warning: request_module: rtnl-link-bridge: denied by policy: {rule} (module llc) -> ["
        )),
        "{line}"
    );
    assert!(line.ends_with(" ms)"), "{line}");
    assert_one_line(&log, "rtnl-link-bridge");
    // Every module of the request, each once, the requested one first.
    let mut modules = bracketed(&line);
    assert_eq!(modules[0], "bridge", "{line}");
    modules.sort();
    assert_eq!(modules, ["bridge", "llc", "stp"], "{line}");
    assert_one_line(&log, "rtnl-link-dummy");
    let line = request_line(&log, "rtnl-link-dummy");
    assert!(line.ends_with(" ms), allowed by default"), "{line}");
}

#[test]
fn every_decision_is_logged_with_name_modules_and_rule() {
    let k = with_policy("allow request net-pf-29\ndeny module bluetooth\ndeny request net-pf-32\n");
    request(&k, "net-pf-29");
    request(&k, "net-pf-31");
    request(&k, "net-pf-32");
    request(&k, "rtnl-link-dummy");
    k.wait_log("request_module: net-pf-29: ");
    let log = k.wait_log("request_module: rtnl-link-dummy: ");
    // Allowed: one line, the request's, which names the rule.
    assert_one_line(&log, "net-pf-29");
    let line = request_line(&log, "net-pf-29");
    assert!(
        line.ends_with(&format!(
            " ms), allowed by allow request net-pf-29 ({})",
            origin(&k, 1)
        )),
        "{line}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("net-pf-29")).count(),
        1,
        "{log}"
    );
    let line = decision_line(&log, "net-pf-31");
    assert!(
        line.starts_with(&format!(
            "kerneld: warning: request_module: net-pf-31: denied by policy: \
             deny module bluetooth ({}) (module bluetooth) -> [bluetooth",
            origin(&k, 2)
        )),
        "{line}"
    );
    assert!(line.ends_with(" ms)"), "{line}");
    assert_one_line(&log, "net-pf-31");
    // A request rule decides on the name, before it is resolved.
    let denied = decision_line(&log, "net-pf-32");
    assert!(
        denied.starts_with(&format!(
            "kerneld: warning: request_module: net-pf-32: denied by policy: \
             deny request net-pf-32 ({}) -> [] (",
            origin(&k, 3)
        )),
        "{denied}"
    );
    assert_one_line(&log, "net-pf-32");
    let modules = bracketed(&line);
    let mut unique = modules.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), modules.len(), "listed twice: {line}");
    assert!(modules.contains(&"rfkill".to_string()), "{line}");
    assert_one_line(&log, "rtnl-link-dummy");
    assert!(request_line(&log, "rtnl-link-dummy").ends_with(", allowed by default"));
}

#[test]
fn failures_are_answered_from_the_negative_cache() {
    let k = with_policy("negative-cache = 600\n");
    let before = k.counter("cached");
    let r = request(&k, "kdtest-unknown");
    assert_eq!(
        (r.status, text(&r)),
        (1, "kdtest-unknown: not found".into())
    );
    let r = request(&k, "kdtest-unknown");
    assert_eq!(
        (r.status, text(&r)),
        (1, "kdtest-unknown: not found (cached)".into())
    );
    assert_eq!(k.counter("cached"), before + 1);
    // Other names are looked up for themselves.
    let r = request(&k, "kdtest-other");
    assert_eq!(text(&r), "kdtest-other: not found");
    // Denials are remembered too.
    let k = with_policy("negative-cache = 600\ndeny request net-pf-31\n");
    request(&k, "net-pf-31");
    let r = request(&k, "net-pf-31");
    assert!(text(&r).ends_with(" (cached)"), "{r:?}");
    assert!(text(&r).contains("denied by policy"), "{r:?}");
    // SIGHUP forgets them.
    k.sighup();
    k.wait_log("configuration reloaded from");
    assert!(!text(&request(&k, "net-pf-31")).contains("cached"));
}

#[test]
fn a_name_is_tried_at_most_rate_limit_times_a_minute() {
    let k = with_policy("negative-cache = 0\nrate-limit = 3\n");
    for _ in 0..3 {
        let r = request(&k, "kdtest-again");
        assert_eq!(text(&r), "kdtest-again: not found");
    }
    let r = request(&k, "kdtest-again");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).contains("rate limited"), "{r:?}");
    let r = request(&k, "kdtest-different");
    assert_eq!(text(&r), "kdtest-different: not found");
}

#[test]
fn live_rules_and_mode_when_not_locked() {
    let k = with_policy("");
    assert_attempted(&k, "rtnl-link-dummy", "dummy");
    let r = k.control("deny request rtnl-link-*");
    assert_eq!(r.status, 0, "{r:?}");
    assert!(
        text(&r).contains("deny request rtnl-link-*  (live)"),
        "{r:?}"
    );
    assert_denied(&k, "rtnl-link-dummy", "deny request rtnl-link-* (live)");
    let r = k.control("allow request net-pf-29");
    assert_eq!(r.status, 0, "{r:?}");
    let r = k.control("mode=audit");
    assert_eq!(r.status, 0, "{r:?}");
    assert_attempted(&k, "rtnl-link-dummy", "dummy");
    let r = k.control("deny frobnicate x");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).starts_with("bad rule: "), "{r:?}");
}

#[test]
fn live_rules_outlast_a_reload_and_say_so() {
    let k = with_policy("delay = 60\ndeny request net-pf-31\n");
    assert_eq!(k.control("deny request net-pf-5 if uid!=0").status, 0);
    assert_eq!(k.control("allow request kdtest-allowed").status, 0);
    // An unrelated change, as a configuration manager would push it.
    std::fs::write(
        k.config_path(),
        "delay = 60\nnegative-cache = 0\ndeny request net-pf-31\n",
    )
    .unwrap();
    k.sighup();
    let log = k.wait_log("SIGHUP: reload done");
    assert!(
        log.contains("SIGHUP: kept 2 policy rules added live by kdstat (they last until restart"),
        "{log}"
    );
    assert!(log.contains("SIGHUP: reload done, 3 policy rules"), "{log}");
    let p = text(&k.control("policy"));
    let lines: Vec<&str> = p.lines().filter(|l| l.contains(" hits  ")).collect();
    // Live denies first, the file's rules, live allows last.
    assert_eq!(lines.len(), 3, "{p}");
    assert!(
        lines[0].ends_with("deny request net-pf-5 if uid!=0  (live)"),
        "{p}"
    );
    assert!(
        lines[1].ends_with(&format!("deny request net-pf-31  ({})", origin(&k, 3))),
        "{p}"
    );
    assert!(
        lines[2].ends_with("allow request kdtest-allowed  (live)"),
        "{p}"
    );
    // Still enforced: the test runs as root, so `uid!=0` needs a user; the
    // file's rule from its new line shows the file was read.
    assert_denied(
        &k,
        "net-pf-31",
        &format!("deny request net-pf-31 ({})", origin(&k, 3)),
    );
}

#[test]
fn a_live_mode_outlasts_a_reload() {
    let k = with_policy("deny request rtnl-link-*\n");
    assert_denied(
        &k,
        "rtnl-link-dummy",
        &format!("deny request rtnl-link-* ({})", origin(&k, 1)),
    );
    assert_eq!(k.control("mode=audit").status, 0);
    std::fs::write(
        k.config_path(),
        "deny request rtnl-link-*\nnegative-cache = 0\n",
    )
    .unwrap();
    k.sighup();
    k.wait_log("SIGHUP: reload done");
    let p = text(&k.control("policy"));
    assert!(
        p.starts_with("policy: mode=audit,"),
        "the reload dropped the live mode: {p}"
    );
    assert_attempted(&k, "rtnl-link-dummy", "dummy");
}

#[test]
fn a_refused_reload_says_it_failed() {
    let k = with_policy("deny request net-pf-31\n");
    std::fs::write(k.config_path(), "deny request net-pf-31\ndelay = soon\n").unwrap();
    k.sighup();
    let log = k.wait_log("SIGHUP: reload failed");
    assert!(
        log.contains(&format!(
            "SIGHUP: reload failed: configuration not reloaded, the one in force stays \
             (1 policy rules; the module index was reopened): {}:2: ",
            k.config_path().display()
        )),
        "{log}"
    );
    assert!(!log.contains("reload done"), "{log}");
    assert!(!log.contains("configuration reloaded"), "{log}");
    // The next good file is taken.
    std::fs::write(k.config_path(), "\n").unwrap();
    k.sighup();
    let log = k.wait_log("SIGHUP: reload done, 0 policy rules");
    assert_eq!(log.matches("reload failed").count(), 1, "{log}");
}

#[test]
fn a_locked_policy_only_tightens_until_restart() {
    let k = with_policy("lock = yes\ndeny request net-pf-31\n");
    let r = k.control("deny request rtnl-link-dummy");
    assert_eq!(r.status, 0, "{r:?}");
    assert_denied(&k, "rtnl-link-dummy", "deny request rtnl-link-dummy (live)");
    let r = k.control("allow request net-pf-31");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).contains("policy is locked"), "{r:?}");
    // The same through kdstat, whose words make one control message.
    let kdstat = |words: &[&str]| {
        run(
            Command::new(bin("kdstat"))
                .args(["--key", &k.key_arg(), "--timeout", "30"])
                .args(words),
            LIMIT,
        )
    };
    let out = kdstat(&["deny", "request", "kdtest-x"]);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        out.stdout.contains("deny request kdtest-x  (live)"),
        "{out:?}"
    );
    let out = kdstat(&["allow", "request", "kdtest-y"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("policy is locked"), "{out:?}");
    assert!(!text(&k.control("policy")).contains("kdtest-y"));
    let r = k.control("mode=audit");
    assert_eq!(r.status, 1, "{r:?}");
    assert!(text(&r).contains("cannot switch to audit mode"), "{r:?}");
    let r = k.control("mode=enforce");
    assert_eq!(r.status, 0, "{r:?}");

    // A looser configuration on SIGHUP does not loosen the rules.
    std::fs::write(k.config_path(), "lock = no\n").unwrap();
    k.sighup();
    let log = k.wait_log("SIGHUP: reload done");
    assert!(
        log.contains("policy is locked (lock = yes): rules kept until restart"),
        "{log}"
    );
    // The count is the locked policy's (the file now has none), live
    // rules included.
    assert!(log.contains("SIGHUP: reload done, 3 policy rules"), "{log}");
    let p = text(&k.control("policy"));
    assert!(p.contains("lock=yes"), "{p}");
    assert!(p.contains("deny request rtnl-link-dummy"), "{p}");
    assert!(p.contains("deny request net-pf-31"), "{p}");
    assert_denied(
        &k,
        "net-pf-31",
        &format!("deny request net-pf-31 ({})", origin(&k, 2)),
    );
}

#[test]
fn configuration_errors_name_file_and_line() {
    let dir = TempDir::new();
    let main = dir.join("kerneld.conf");
    let sub = dir.join("rules.conf");
    std::fs::write(&main, "delay = 30\ninclude rules.conf\n").unwrap();
    std::fs::write(&sub, "deny request net-pf-31\n\ndeny request x if euid=3\n").unwrap();
    let check = |path: &std::path::Path| check_config(path);
    let out = check(&main);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{}:3: unknown condition \"euid=3\"",
            sub.display()
        )),
        "{out:?}"
    );
    std::fs::write(&sub, "deny request net-pf-31\nmode = lenient\n").unwrap();
    let out = check(&main);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{}:2: mode must be", sub.display())),
        "{out:?}"
    );
    std::fs::write(&sub, "deny request net-pf-31\nallow module dummy\n").unwrap();
    let out = check(&main);
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("OK (2 policy rules)"), "{out:?}");

    // The daemon refuses to start on the same errors.
    let ex = Kerneld::builder().config("deny\n").run_to_exit();
    assert_eq!(ex.outcome.code(), 3, "{:?}", ex.outcome);
    assert!(
        ex.outcome.stderr.contains(&format!(
            "configuration error: {}:1: ",
            ex.dir.join("kerneld.conf").display()
        )),
        "{:?}",
        ex.outcome
    );
}

#[test]
fn a_request_rule_denies_even_without_a_module_index() {
    // No module index at all: every name resolves to nothing, yet the
    // denial is the answer, logged and counted (in audit mode, logged).
    let k = Kerneld::builder()
        .config("deny request net-pf-33\n")
        .start();
    let rule = format!("deny request net-pf-33 ({})", origin(&k, 1));
    assert_denied(&k, "net-pf-33", &rule);
    k.wait_log(&format!(
        "request_module: net-pf-33: denied by policy: {rule} -> [] ("
    ));
    assert_eq!(k.counter("denied"), 1);
    let r = request(&k, "net-pf-34");
    assert_eq!(text(&r), "net-pf-34: not found");

    let audit = Kerneld::builder()
        .config("mode = audit\ndeny request net-pf-33\n")
        .start();
    let r = request(&audit, "net-pf-33");
    assert_eq!(text(&r), "net-pf-33: not found");
    audit.wait_log("request_module: net-pf-33: not found (");
    let line = decision_line(&audit.log(), "net-pf-33");
    assert!(
        line.ends_with(&format!(
            " ms), allowed by audit mode (would deny by deny request net-pf-33 ({}) -> [])",
            origin(&audit, 2)
        )),
        "{line}"
    );
}

/// Module rules judge what the request would load: a candidate the
/// modprobe.d blacklist skips is not judged (issue: `blacklist vcan` with
/// `deny module vcan` denied rtnl-link-vcan, which loads nothing).
#[test]
fn a_blacklisted_candidate_that_loads_nothing_is_not_judged() {
    let k = Kerneld::builder()
        .debian_tree()
        .modprobe("blacklist vcan\nblacklist crc32c_intel\n")
        .config("deny module vcan\ndeny module crc32c_intel\n")
        .start();
    // The only candidate is blacklisted: modprobe -q loads nothing and
    // exits 0, and so does kerneld.
    let r = request(&k, "rtnl-link-vcan");
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(
        text(&r),
        "rtnl-link-vcan: blacklisted (vcan), nothing loaded"
    );
    // crc32c names crc32c_intel and crc32c_generic; modprobe inserts only
    // the generic one, and that one no rule denies.
    assert_attempted(&k, "crc32c", "crc32c_generic");
    assert_eq!(k.counter("denied"), 0);
    assert!(!k.log().contains("policy: deny"), "{}", k.log());
    // Asked for by its own name, a module is not blacklisted (as with
    // modprobe): then it would load, and the rule denies it.
    assert_denied(&k, "vcan", &format!("deny module vcan ({})", origin(&k, 1)));
    assert_denied(
        &k,
        "crc32c_intel",
        &format!("deny module crc32c_intel ({})", origin(&k, 2)),
    );
}

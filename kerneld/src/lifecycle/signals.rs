//! Signals: a thread waits for every signal an administrator may send
//! (kerneld(8), SIGNALS), blocked in every other thread.

use kerneld::config::Config;
use kerneld::operator::control::Reloaded;
use kerneld::operator::log;
use kerneld::server::Daemon;
use kerneld::server::Settings;
use nix::sys::signal::{SigHandler, SigSet, Signal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The signals the signal thread waits for: every one an administrator
/// may send out of habit (see kerneld(8), SIGNALS).
const HANDLED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// Block the signals the signal thread waits for, before any thread
/// starts, so that every thread inherits the mask.
pub(crate) fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    let _ = set.thread_block();
    // SAFETY: setting dispositions to SIG_IGN/SIG_DFL runs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn);
        // A shell that started us in the background may have left SIGINT
        // and SIGQUIT ignored; programs we start (the screen blanker is
        // stopped with SIGQUIT) must get the default actions back.
        let _ = nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigDfl);
        let _ = nix::sys::signal::signal(Signal::SIGQUIT, SigHandler::SigDfl);
    }
    set
}

/// SIGHUP: log each setting of the new file that differs from the running
/// configuration but is read at start only, with the live way to change it.
/// `in_force` are the live settings: the warning names the value that
/// stays, which `kdstat` or the command line may have set.
fn log_start_only_changes(old: &Config, new: &Config, in_force: Settings) {
    let show = |v: Option<String>| v.unwrap_or_else(|| "unset".into());
    let mut changes: Vec<(&str, String, String, String)> = Vec::new();
    // A change the file makes that is in force already (set live, or on
    // the command line) needs no warning.
    let n = new.delay.unwrap_or(60);
    if old.delay != new.delay && n != in_force.delay {
        changes.push((
            "delay",
            show(old.delay.map(|d| d.to_string())),
            show(new.delay.map(|d| d.to_string())),
            format!(
                "stays {} (the value in force); `kdstat delay={n}` changes it now",
                in_force.delay
            ),
        ));
    }
    // The on/off words: `kdstat keep` / `kdstat nokeep`, and so on.
    for (name, from, to, now) in [
        ("keep", old.keep, new.keep, in_force.keep),
        ("debug", old.debug, new.debug, in_force.debug),
    ] {
        let wanted = to.unwrap_or(false);
        if from != to && wanted != now {
            let no = if wanted { "" } else { "no" };
            changes.push((
                name,
                show(from.map(yes_no)),
                show(to.map(yes_no)),
                format!(
                    "stays {} (the value in force); `kdstat {no}{name}` changes it now",
                    yes_no(now)
                ),
            ));
        }
    }
    let restart = || "stays as it is; it takes effect when kerneld restarts".to_string();
    if old.max_workers != new.max_workers {
        changes.push((
            "max-workers",
            old.max_workers.to_string(),
            new.max_workers.to_string(),
            restart(),
        ));
    }
    if old.state_dir != new.state_dir {
        changes.push((
            "state-dir",
            show(old.state_dir.as_ref().map(|p| p.display().to_string())),
            show(new.state_dir.as_ref().map(|p| p.display().to_string())),
            restart(),
        ));
    }
    if old.negative_cache != new.negative_cache {
        changes.push((
            "negative-cache",
            old.negative_cache.as_secs().to_string(),
            new.negative_cache.as_secs().to_string(),
            restart(),
        ));
    }
    if old.rate_limit_per_minute != new.rate_limit_per_minute {
        changes.push((
            "rate-limit",
            old.rate_limit_per_minute.to_string(),
            new.rate_limit_per_minute.to_string(),
            restart(),
        ));
    }
    for (name, from, to, how) in changes {
        log::warn(&format!(
            "SIGHUP: {name} changed from {from} to {to} in the file, but {name} is read at start \
             only and {how}"
        ));
    }
}

/// SIGHUP: read the file once, judge it and put it in force from that one
/// reading (an edit meanwhile waits for the next SIGHUP), and say how it
/// went: a refused file is a failed reload, not a done one.
fn reload(daemon: &Daemon, config: &Path, required: bool) {
    crate::notify::reloading();
    log::notice("SIGHUP: reloading the configuration and the module index");
    let new = Config::load(config, required);
    if let Ok(new) = &new {
        log_start_only_changes(&daemon.config(), new, daemon.settings());
    }
    match daemon.reload(new) {
        Reloaded::Refused { error, rules } => {
            log::error(&format!(
                "SIGHUP: reload failed: configuration not reloaded, the one in force stays \
                 ({rules} policy rules; the module index was reopened): {error}; fix the file \
                 (kerneld --check-config) and send SIGHUP again"
            ));
            crate::notify::ready(&format!(
                "serving, reload by SIGHUP FAILED (configuration error, see the log), \
                 {rules} policy rules"
            ));
        }
        Reloaded::Done {
            rules,
            live_kept,
            locked,
        } => {
            if locked {
                log::notice("policy is locked (lock = yes): rules kept until restart");
            }
            if live_kept > 0 {
                log::notice(&format!(
                    "SIGHUP: kept {} added live by kdstat (they last until restart; \
                     kdstat policy shows them as `live`)",
                    count(live_kept, "policy rule")
                ));
            }
            log::notice(&format!("configuration reloaded from {}", config.display()));
            // The module-loads program's verdicts follow the new rules.
            kerneld::modload::policy_changed(&daemon.policy(), kerneld::modload::Change::Reloaded);
            log::event(
                log::Level::Notice,
                log::Event::Reloaded,
                &log::Fields::new(),
                &format!("SIGHUP: reload done, {rules} policy rules"),
            );
            crate::notify::ready(&format!(
                "serving, reloaded by SIGHUP, {rules} policy rules"
            ));
        }
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

pub(crate) fn spawn_signal_thread(
    set: SigSet,
    daemon: Arc<Daemon>,
    receiver_done: Arc<AtomicBool>,
    config: PathBuf,
    required: bool,
) {
    let main_thread = nix::sys::pthread::pthread_self();
    std::thread::Builder::new()
        .name("kerneld-signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else {
                continue;
            };
            match sig {
                Signal::SIGHUP => reload(&daemon, &config, required),
                Signal::SIGUSR1 => {
                    for line in kerneld::operator::status::text(&daemon.snapshot()).lines() {
                        log::notice(&format!("SIGUSR1: {line}"));
                    }
                }
                Signal::SIGUSR2 => {
                    let word = if daemon.settings().debug {
                        "nodebug"
                    } else {
                        "debug"
                    };
                    daemon.control(word);
                    log::notice(&format!(
                        "SIGUSR2: debug logging {}",
                        if word == "debug" { "on" } else { "off" }
                    ));
                }
                Signal::SIGALRM => log::notice("SIGALRM ignored"),
                _ => {
                    crate::notify::stopping();
                    log::notice(&format!("{sig}: stopping"));
                    daemon.stop();
                    // Break the receiver out of msgrcv; repeat in case the
                    // signal lands just before it blocks again.
                    while !receiver_done.load(Ordering::SeqCst) {
                        kmod_ipc::interrupt_thread(main_thread);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    return;
                }
            }
        })
        .expect("spawn the signal thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_signals_are_the_habitual_ones() {
        for s in [
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGQUIT,
            Signal::SIGHUP,
        ] {
            assert!(HANDLED.contains(&s), "{s}");
        }
        // The receiver's interrupt signal must stay out of the set.
        let rt = kmod_ipc::interrupt_signal();
        assert!(HANDLED.iter().all(|s| *s as i32 != rt));
    }
}

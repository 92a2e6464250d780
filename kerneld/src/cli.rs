//! Command line: the 1995 words (`debug keep delay=60 type=2`) and flags.

use crate::limits;
use clap::{CommandFactory, Parser};
use kmod_ipc::{Key, TypeFilter};
use std::path::PathBuf;

/// The daemon that loads and unloads kernel modules on request.
#[derive(Debug, Parser)]
#[command(
    name = "kerneld",
    version,
    override_usage = "kerneld [debug] [keep] [delay=<seconds>] [type=<message number>] [OPTIONS]",
    about = "Serve the kernel's module requests: load on request_module(), unload idle modules",
    long_about = "kerneld receives kernel requests (\"load the module behind net-pf-10\", \
\"release ppp\", \"status\") on a SysV message queue, performs them through libkmod as \
modprobe would, answers with the status, and unloads idle modules it loaded. \
The kernel reaches it through kerneld-modprobe(8), registered as the kernel's module helper.\n\n\
The classic words of the 1995 kerneld are accepted: debug, keep, delay=<seconds>, \
type=<message number>.",
    after_help = "Exit status: 0 clean stop, 1 runtime failure, 2 usage error, \
3 configuration error, 4 not root / permission denied.\n\
Files: /etc/kerneld.conf (kerneld.conf(5)), /run/kerneld/loaded.json (modules kerneld loaded).\n\
See kerneld(8), kerneld(7) for the protocol, kdstat(8) to watch and tune it."
)]
pub struct Cli {
    /// Classic words: `debug`, `keep`, `delay=<seconds>`, `type=<message number>`.
    #[arg(value_name = "WORD")]
    pub(crate) words: Vec<String>,

    /// Log every message received (also `debug`).
    #[arg(long)]
    pub(crate) debug: bool,

    /// Never unload idle modules (also `keep`).
    #[arg(long)]
    pub(crate) keep: bool,

    /// Seconds between sweeps for idle modules, and the delay of a delayed
    /// release, 1 to 604800 (also `delay=N`; default 60).
    #[arg(long, value_name = "SECONDS", value_parser = |s: &str| limits::DELAY.parse(s))]
    pub(crate) delay: Option<u64>,

    /// Serve only this message type, 1 to 1023 (256: arp); negative N
    /// serves every type up to |N|, at most 255 (also `type=N`; default
    /// -255).
    #[arg(
        long = "type",
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = limits::parse_type
    )]
    pub(crate) msg_type: Option<i64>,

    /// Queue key, hex (0x6b65726e) or decimal.
    #[arg(long, env = "KERNELD_KEY", value_name = "KEY")]
    pub key: Option<Key>,

    /// Configuration file (also KERNELD_CONFIG, which kerneld-modprobe
    /// reads too).
    #[arg(long, env = "KERNELD_CONFIG", value_name = "PATH", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Stay attached to the terminal (for service managers); logs go to
    /// stderr too.
    #[arg(long, short = 'f')]
    pub foreground: bool,

    /// Register kerneld-modprobe as the kernel's module helper at start and
    /// restore the previous helper at a clean stop.
    #[arg(long)]
    pub register: bool,

    /// The shim to register (default: kerneld-modprobe beside this program).
    #[arg(long, value_name = "PATH")]
    pub shim: Option<PathBuf>,

    /// Module directory, as modprobe -d ROOT -S VERSION gives
    /// ROOT/lib/modules/VERSION (default /lib/modules/$(uname -r)).
    #[arg(long, value_name = "DIR")]
    pub module_dir: Option<PathBuf>,

    /// modprobe.d directory to read instead of the standard ones
    /// (repeatable).
    #[arg(long = "modprobe-d", value_name = "DIR")]
    pub modprobe_d: Vec<PathBuf>,

    /// Where kerneld keeps its state (default /run/kerneld, made mode
    /// 0700): the record of loaded modules (loaded.json), the lock that
    /// keeps one kerneld per directory (kerneld.lock), the pid file
    /// (kerneld.pid) and the previous module helper (previous-modprobe).
    /// One owned by another user, or that group or others may write, is
    /// refused (exit status 3).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Write the status in the Prometheus format as DIR/kerneld.prom at
    /// start, at each sweep and at stop, for node_exporter's textfile
    /// collector (overrides metrics-dir in the configuration file).
    #[arg(long, value_name = "DIR")]
    pub metrics_dir: Option<PathBuf>,

    /// Check the configuration file and its includes, report every error
    /// (not only the first) and exit: 0 if valid, 3 if not.  With
    /// --module-dir, module patterns that match no module of that tree are
    /// warnings.
    #[arg(long)]
    pub check_config: bool,

    /// Print the configuration as kerneld reads it, includes merged in
    /// place, each line followed by its file and line; then exit (0, or 3
    /// with errors, which are reported as --check-config does).
    #[arg(long, conflicts_with = "check_config")]
    pub print_config: bool,

    /// With --check-config or --print-config: one JSON document on
    /// stdout (for CI annotations).
    #[arg(long)]
    pub json: bool,
}

/// Settings from the command line after the classic words are read.
#[derive(Debug, Clone, Default)]
pub struct Words {
    pub debug: bool,
    pub keep: bool,
    pub delay: Option<u64>,
    pub msg_type: Option<i64>,
}

impl Cli {
    /// Fold the classic words into flags; an unknown word exits with the
    /// usage line and status 2, as clap does for unknown options.
    pub fn words(&self) -> Words {
        let mut w = Words {
            debug: self.debug,
            keep: self.keep,
            delay: self.delay,
            msg_type: self.msg_type,
        };
        for word in &self.words {
            let bad = |msg: String| -> ! {
                Cli::command()
                    .error(clap::error::ErrorKind::InvalidValue, msg)
                    .exit()
            };
            match word.as_str() {
                "debug" => w.debug = true,
                "keep" => w.keep = true,
                _ => {
                    if let Some(v) = word.strip_prefix("delay=") {
                        w.delay = Some(
                            limits::DELAY
                                .parse(v)
                                .unwrap_or_else(|e| bad(format!("delay={v}: {e}"))),
                        );
                    } else if let Some(v) = word.strip_prefix("type=") {
                        w.msg_type = Some(
                            limits::parse_type(v).unwrap_or_else(|e| bad(format!("type={v}: {e}"))),
                        );
                    } else {
                        bad(format!(
                            "unknown word '{word}' (expected debug, keep, delay=<seconds> or type=<n>)"
                        ))
                    }
                }
            }
        }
        w
    }
}

/// The receive filter for `type=N`.
pub fn filter_for(msg_type: Option<i64>) -> TypeFilter {
    match msg_type {
        None => TypeFilter::UpTo(255),
        Some(n) if n < 0 => TypeFilter::UpTo(-n),
        Some(n) => TypeFilter::Exactly(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_words_fold_into_flags() {
        let cli = Cli::parse_from(["kerneld", "debug", "keep", "delay=7", "type=2"]);
        let w = cli.words();
        assert!(w.debug && w.keep);
        assert_eq!(w.delay, Some(7));
        assert_eq!(w.msg_type, Some(2));
        assert_eq!(filter_for(w.msg_type), TypeFilter::Exactly(2));
        assert_eq!(filter_for(None), TypeFilter::UpTo(255));
        assert_eq!(filter_for(Some(-8)), TypeFilter::UpTo(8));
    }

    #[test]
    fn flags_work_too() {
        let cli = Cli::parse_from(["kerneld", "--delay", "3", "--keep", "--type", "-255"]);
        let w = cli.words();
        assert_eq!(w.delay, Some(3));
        assert!(w.keep);
        assert_eq!(w.msg_type, Some(-255));
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }
}

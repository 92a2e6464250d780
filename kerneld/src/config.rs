//! `/etc/kerneld.conf`: settings and policy, read at start and on SIGHUP.
//!
//! One setting or rule per line, `#` starts a comment:
//!
//! ```text
//! delay = 60
//! keep-module = e1000e usbcore
//! system-command = /bin/date
//! include /etc/kerneld/rare-protocols.conf
//! mode = enforce
//! deny request net-pf-33
//! allow module dummy
//! ```
//!
//! Lines starting with `shim-` belong to kerneld-modprobe, which reads this
//! file too; the daemon checks them with the shim's own reader
//! ([`kmod_ipc::conf::shim`]) and otherwise ignores them.  Both read the
//! lines, includes and bounds through [`kmod_ipc::conf`], so that they see
//! the same settings, and a file kerneld accepts is one the shim reads.
//! See kerneld.conf(5) for every key.

use crate::limits;
use crate::policy::{MatchOrder, Mode, Pattern, Policy, Rule};
use kmod_ipc::conf;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default configuration file.
pub const DEFAULT_PATH: &str = "/etc/kerneld.conf";

/// A syntax or semantic error, with where it is (line 0: the file as a
/// whole, shown without a line number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {problem}", at_line(*.line))]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// `:N` after the file name, or nothing for line 0 (the file itself).
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

/// Everything the configuration file sets.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (None: no file, built-in defaults).
    pub(crate) path: Option<PathBuf>,
    pub delay: Option<u64>,
    pub keep: Option<bool>,
    pub debug: Option<bool>,
    /// Upper bound of requests worked on at once.
    pub max_workers: usize,
    /// Where the record of loaded modules lives.
    pub state_dir: Option<PathBuf>,
    /// Module names (globs) never expired.
    pub(crate) keep_modules: Vec<Pattern>,
    /// Exact command lines a type-1 (system) message may run.
    pub(crate) system_commands: Vec<String>,
    pub(crate) route_program: PathBuf,
    pub(crate) blanker_program: PathBuf,
    pub(crate) pnp_program: Option<PathBuf>,
    pub(crate) arp_program: Option<PathBuf>,
    /// How long a failed or denied name is answered from memory.
    pub negative_cache: Duration,
    /// At most this many real attempts per name per minute.
    pub rate_limit_per_minute: u32,
    /// Where to write kerneld.prom for node_exporter at each sweep.
    pub(crate) metrics_dir: Option<PathBuf>,
    pub policy: Policy,
    /// Module loads seen or decided through the BPF LSM (`module-loads*`).
    pub module_loads: crate::modload::Settings,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            path: None,
            delay: None,
            keep: None,
            debug: None,
            max_workers: 64,
            state_dir: None,
            keep_modules: Vec::new(),
            system_commands: Vec::new(),
            route_program: PathBuf::from("/sbin/request-route"),
            blanker_program: PathBuf::from("/sbin/screenblanker"),
            pnp_program: None,
            arp_program: None,
            negative_cache: Duration::from_secs(5),
            rate_limit_per_minute: 30,
            metrics_dir: None,
            policy: Policy::default(),
            module_loads: crate::modload::Settings::default(),
        }
    }
}

impl Config {
    /// Read `path`.  A missing file is fine only when it is the default
    /// path (`required` false): kerneld then runs on built-in defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        match conf::read(path) {
            Ok(bytes) => cfg = Config::from_bytes(path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
            Err(e) => {
                return Err(ConfigError {
                    file: path.display().to_string(),
                    line: 0,
                    problem: format!("cannot read: {e}"),
                })
            }
        }
        Ok(cfg)
    }

    /// The configuration `text`, read from `path` (which names it in
    /// errors and anchors relative includes).
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::from_bytes(path, text.as_bytes())
    }

    /// The file's bytes: as in included files, a line that is not UTF-8 is
    /// an error with its number, and a comment may hold any bytes.
    fn from_bytes(path: &Path, text: &[u8]) -> Result<Config, ConfigError> {
        let read = Config::read_all(path, text, false);
        match read.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(read.config),
        }
    }

    /// Read `path` to its end, going on past errors, for the linter
    /// (`--check-config`, `--print-config`): every error, and every line
    /// with where it came from.  A missing file is fine only when it is not
    /// `required` (`present` then says so).
    pub fn read_for_check(path: &Path, required: bool) -> Checked {
        match conf::read(path) {
            Ok(bytes) => Config::read_all(path, &bytes, true),
            Err(e) => {
                let missing_is_fine = e.kind() == std::io::ErrorKind::NotFound && !required;
                Checked {
                    config: Config::default(),
                    present: false,
                    errors: if missing_is_fine {
                        Vec::new()
                    } else {
                        vec![ConfigError {
                            file: path.display().to_string(),
                            line: 0,
                            problem: format!("cannot read: {e}"),
                        }]
                    },
                    lines: Vec::new(),
                }
            }
        }
    }

    /// Every error of the file and its includes (up to [`MAX_ERRORS`]),
    /// and every line with `keep_lines`.
    fn read_all(path: &Path, text: &[u8], keep_lines: bool) -> Checked {
        let mut cfg = Config {
            path: Some(path.to_path_buf()),
            ..Config::default()
        };
        let mut reader = Reader {
            cfg: &mut cfg,
            rules: Vec::new(),
            errors: Vec::new(),
            more_errors: 0,
            lines: Vec::new(),
            keep_lines,
        };
        let Ok(()) = conf::walk(path, text, &mut reader);
        let Reader {
            rules,
            mut errors,
            more_errors,
            lines,
            ..
        } = reader;
        if more_errors > 0 {
            errors.push(ConfigError {
                file: path.display().to_string(),
                line: 0,
                problem: format!("{more_errors} more errors not shown"),
            });
        }
        if rules.len() > crate::policy::MAX_RULES {
            errors.push(ConfigError {
                file: path.display().to_string(),
                line: 0,
                problem: format!(
                    "{} policy rules, more than the {} a policy holds",
                    rules.len(),
                    crate::policy::MAX_RULES
                ),
            });
        } else {
            cfg.policy.set_rules(rules);
        }
        Checked {
            config: cfg,
            present: true,
            errors,
            lines,
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "delay" => self.delay = Some(limits::DELAY.parse(value)?),
            "keep" => self.keep = Some(parse_bool(key, value)?),
            "debug" => self.debug = Some(parse_bool(key, value)?),
            "max-workers" => self.max_workers = limits::MAX_WORKERS.parse(value)? as usize,
            "state-dir" => self.state_dir = Some(PathBuf::from(value)),
            "metrics-dir" => {
                if !value.starts_with('/') {
                    return Err(format!(
                        "metrics-dir must be an absolute path (node_exporter's textfile \
                         directory), not {value:?}"
                    ));
                }
                self.metrics_dir = Some(PathBuf::from(value))
            }
            "keep-module" => {
                for p in value.split([' ', ',']).filter(|s| !s.is_empty()) {
                    self.keep_modules.push(Pattern::module(p)?);
                }
            }
            "system-command" => {
                if value.is_empty() {
                    return Err("system-command needs a command line".into());
                }
                self.system_commands.push(value.to_string())
            }
            "route-program" => self.route_program = PathBuf::from(value),
            "blanker-program" => self.blanker_program = PathBuf::from(value),
            "pnp-program" => self.pnp_program = Some(PathBuf::from(value)),
            "arp-program" => self.arp_program = Some(PathBuf::from(value)),
            "negative-cache" => {
                self.negative_cache = Duration::from_secs(limits::NEGATIVE_CACHE.parse(value)?)
            }
            "rate-limit" => self.rate_limit_per_minute = limits::RATE_LIMIT.parse(value)? as u32,
            "mode" => {
                self.policy.mode = match value {
                    "enforce" => Mode::Enforce,
                    "audit" => Mode::Audit,
                    _ => return Err(format!("mode must be `enforce` or `audit`, not {value:?}")),
                }
            }
            "match" => {
                self.policy.order = match value {
                    "first" => MatchOrder::First,
                    "specific" => MatchOrder::MostSpecific,
                    _ => {
                        return Err(format!(
                            "match must be `first` or `specific`, not {value:?}"
                        ))
                    }
                }
            }
            "lock" => self.policy.lock = parse_bool(key, value)?,
            "default" => {
                self.policy.default_allow = match value {
                    "allow" => true,
                    "deny" => false,
                    _ => return Err(format!("default must be `allow` or `deny`, not {value:?}")),
                }
            }
            "unknown-requester" => {
                self.policy.unknown_requester_root = match value {
                    "root" => true,
                    "user" => false,
                    _ => {
                        return Err(format!(
                            "unknown-requester must be `root` or `user`, not {value:?}"
                        ))
                    }
                }
            }
            _ if self.module_loads.set(key, value)? => {}
            _ => return Err(format!("unknown setting {key:?}")),
        }
        Ok(())
    }
}

/// What the linter gets: the configuration as far as it could be read,
/// every error, and every line with its origin.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    /// Whether the file was there (a missing default file is no error).
    pub present: bool,
    /// In the order of the lines.
    pub errors: Vec<ConfigError>,
    /// Every setting and rule line of the file and its includes, in the
    /// order read: `(file, line number, text)`.
    pub(crate) lines: Vec<(PathBuf, usize, String)>,
}

/// Hands the lines of the file and its includes to [`Config::set`] and
/// [`Rule::parse`]; an include that cannot be followed is an error.  It
/// goes on past errors (the walk's bounds keep that short), so that one
/// reading finds them all.
struct Reader<'c> {
    cfg: &'c mut Config,
    rules: Vec<Rule>,
    errors: Vec<ConfigError>,
    /// Errors past [`MAX_ERRORS`], counted only.
    more_errors: usize,
    lines: Vec<(PathBuf, usize, String)>,
    keep_lines: bool,
}

/// Errors kept of one reading: a file of a million bad lines must not
/// cost a million messages.
pub(crate) const MAX_ERRORS: usize = 100;

impl Reader<'_> {
    fn error(&mut self, e: ConfigError) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        } else {
            self.more_errors += 1;
        }
    }
}

impl conf::Visitor for Reader<'_> {
    type Error = std::convert::Infallible;

    fn line(&mut self, l: &conf::Line<'_>) -> Result<(), Self::Error> {
        if self.keep_lines {
            self.lines.push((
                l.file.to_path_buf(),
                l.number,
                String::from_utf8_lossy(l.text).into_owned(),
            ));
        }
        if let Err(e) = self.read_line(l) {
            self.error(e);
        }
        Ok(())
    }

    fn include_failed(&mut self, e: conf::IncludeError<'_>) -> Result<(), Self::Error> {
        self.error(ConfigError {
            file: e.line.file.display().to_string(),
            line: e.line.number,
            problem: e.problem.to_string(),
        });
        Ok(())
    }
}

impl Reader<'_> {
    fn read_line(&mut self, l: &conf::Line<'_>) -> Result<(), ConfigError> {
        let err = |problem: String| ConfigError {
            file: l.file.display().to_string(),
            line: l.number,
            problem,
        };
        // The shim's lines, read as the shim reads them: refused here
        // exactly when the shim cannot read them (and then fails safe).
        if let Some(setting) = conf::shim::setting(l.text) {
            return setting.map(|_| ()).map_err(err);
        }
        let line = std::str::from_utf8(l.text).map_err(|_| err("not valid UTF-8".into()))?;
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        if matches!(words[0], "allow" | "deny") {
            let at = format!("{}:{}", l.file.display(), l.number);
            self.rules.push(Rule::parse(&words, &at).map_err(err)?);
            return Ok(());
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(format!(
                "expected `key = value`, `allow ...`, `deny ...` or `include PATH`, found {line:?}"
            )));
        };
        self.cfg.set(key.trim(), value.trim()).map_err(err)
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("{key} must be yes or no, not {value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("kerneld-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A file of its own per call: tests run in parallel.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = dir.join(format!("t{n}.conf"));
        std::fs::write(&p, text).unwrap();
        let r = Config::load(&p, true);
        std::fs::remove_file(&p).ok();
        r
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let e = parse("include /dev/zero\n").unwrap_err();
        assert!(e.problem.contains("not a regular file"), "{e}");
        let dir = std::env::temp_dir().join(format!("kerneld-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Returns at once (no writer would ever come).
        let e = parse(&format!("include {}\n", fifo.display())).unwrap_err();
        assert!(e.problem.contains("not a regular file"), "{e}");
        let big = dir.join("big.conf");
        std::fs::write(&big, "#".repeat(conf::MAX_FILE_BYTES as usize + 1)).unwrap();
        let e = parse(&format!("include {}\n", big.display())).unwrap_err();
        assert!(e.problem.contains("larger than"), "{e}");
        // A loop is refused at its first include, not after 8 levels.
        let looping = dir.join("loop.conf");
        std::fs::write(&looping, "include loop.conf\n".repeat(6)).unwrap();
        let e = Config::load(&looping, true).unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.problem.contains("includes itself"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn values_out_of_their_range_are_errors() {
        for (line, range) in [
            ("delay = 18446744073709551615", "from 1 to 604800"),
            ("delay = 9223372036854775807", "from 1 to 604800"),
            ("delay = 0", "from 1 to 604800"),
            ("negative-cache = 9223372036854775807", "from 0 to 86400"),
            ("rate-limit = 4294967296", "from 0 to 60000"),
            ("max-workers = 0", "from 1 to 1024"),
            ("shim-timeout = 1e300", "at most 3600"),
        ] {
            let e = parse(&format!("{line}\n")).unwrap_err();
            assert!(e.problem.contains(range), "{line}: {e}");
        }
    }

    #[test]
    fn settings_are_read() {
        let c = parse(
            "# comment\ndelay = 7\nkeep = yes\nkeep-module = a, b c\nsystem-command = /bin/date -u\n\
             mode = audit\nshim-fallback = fail\nnegative-cache = 2\n",
        )
        .unwrap();
        assert_eq!(c.delay, Some(7));
        assert_eq!(c.keep, Some(true));
        assert_eq!(c.keep_modules, ["a", "b", "c"]);
        assert_eq!(c.system_commands, ["/bin/date -u"]);
        assert_eq!(c.policy.mode, Mode::Audit);
        assert_eq!(c.negative_cache, Duration::from_secs(2));
    }

    #[test]
    fn comments_and_fractional_shim_timeout() {
        let c = parse("route-program = /opt/a#b # the program\nshim-timeout = 2.5\n").unwrap();
        assert_eq!(c.route_program, Path::new("/opt/a#b"));
        assert!(parse("shim-timeout = -1\n").is_err());
    }

    /// The forms the shim reads are accepted, the ones it cannot read are
    /// refused (tests/tests/shim.rs checks the shim's side).
    #[test]
    fn shim_lines_are_checked_as_the_shim_reads_them() {
        for ok in [
            "shim-timeout = 30",
            "shim-timeout = 0.5",
            "shim-timeout = +5",
            "shim-timeout = 1e3",
            "shim-fallback = fail",
            "shim-fallback = modprobe",
            "shim-modprobe = /sbin/modprobe",
        ] {
            assert!(parse(&format!("{ok}\n")).is_ok(), "{ok}");
        }
        for bad in [
            "shim-fallback = fial",
            "shim-timeout = 5000",
            "shim-timeout = nan",
            "shim-modprobe = modprobe",
            "shim-modprobe =",
            "shim-timeout",
        ] {
            assert!(parse(&format!("{bad}\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = parse("delay = 5\ndelay = soon\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("whole number"), "{e}");
        assert!(e.to_string().contains(".conf:2: "), "{e}");
        let e = parse("bogus\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("colour = blue\n").unwrap_err();
        assert!(e.problem.contains("unknown setting"));
        let e = parse("shim-fallback = maybe\n").unwrap_err();
        assert!(e.problem.contains("shim-fallback"));
        let e = parse("shim-fallbak = fail\n").unwrap_err();
        assert!(e.problem.contains("unknown setting"), "{e}");
    }

    #[test]
    fn the_check_reads_past_errors_and_keeps_every_line() {
        let dir = std::env::temp_dir().join(format!("kerneld-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k.conf");
        std::fs::write(dir.join("inc.conf"), "deny module x\nbogus\n").unwrap();
        std::fs::write(
            &p,
            "delay = soon\ninclude inc.conf\ninclude missing.conf\ndelay = 5\n",
        )
        .unwrap();
        let c = Config::read_for_check(&p, true);
        let at: Vec<(String, usize)> = c
            .errors
            .iter()
            .map(|e| (e.file.rsplit('/').next().unwrap().to_string(), e.line))
            .collect();
        assert_eq!(
            at,
            [
                ("k.conf".into(), 1),
                ("inc.conf".into(), 2),
                ("k.conf".into(), 3)
            ]
        );
        assert_eq!(c.config.delay, Some(5));
        let lines: Vec<_> = c.lines.iter().map(|(_, n, t)| (*n, t.as_str())).collect();
        assert_eq!(
            lines,
            [
                (1, "delay = soon"),
                (1, "deny module x"),
                (2, "bogus"),
                (4, "delay = 5")
            ]
        );
        // Loading stops at the first, as before.
        assert_eq!(Config::load(&p, true).unwrap_err().line, 1);
        let missing = Config::read_for_check(&dir.join("none.conf"), false);
        assert!(!missing.present && missing.errors.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_line_that_is_not_utf8_is_an_error_with_its_number() {
        let dir = std::env::temp_dir().join(format!("kerneld-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bytes.conf");
        std::fs::write(
            &p,
            b"# caf\xe9 in a comment is fine\ndelay = 5\nkeep-module = \xff\n",
        )
        .unwrap();
        let e = Config::load(&p, true).unwrap_err();
        assert_eq!((e.line, e.problem.as_str()), (3, "not valid UTF-8"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_given_file_is_not() {
        let p = Path::new("/nonexistent/kerneld.conf");
        assert!(Config::load(p, false).is_ok());
        assert!(Config::load(p, true).is_err());
    }
}

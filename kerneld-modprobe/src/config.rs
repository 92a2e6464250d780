//! The shim's lines of /etc/kerneld.conf.
//!
//! The file belongs to the daemon; the shim reads only the `shim-` lines
//! and ignores every other line, so the daemon may grow its format freely.
//! It reads the lines, the includes and the `shim-` values with kerneld's
//! own code ([`kmod_ipc::conf`] and [`kmod_ipc::conf::shim`]), so what
//! `kerneld --check-config` accepts the shim reads the same way, and what
//! it refuses the shim cannot read either.
//!
//! Whatever the shim cannot read fails safe: a `shim-` line it cannot
//! read, an include it cannot follow (missing, a loop, past a bound) or a
//! file it cannot read may have said `shim-fallback = fail`, so the shim
//! then fails without kerneld whatever the other lines say, rather than
//! run modprobe past a policy.

use kmod_ipc::conf::{self, shim};
use std::path::PathBuf;
use std::time::Duration;

pub use kmod_ipc::conf::shim::{Fallback, DEFAULT_MODPROBE};

/// Default configuration file.
pub const DEFAULT_PATH: &str = "/etc/kerneld.conf";
/// Environment variable that overrides it (used by tests).
pub const PATH_ENV: &str = "KERNELD_CONFIG";

/// Problems logged one by one; past them, only how many more there were
/// (a file of many bad lines must not flood the log at every request).
const LOGGED_PROBLEMS: usize = 4;

/// The shim's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub fallback: Fallback,
    pub modprobe: PathBuf,
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            fallback: Fallback::Modprobe,
            modprobe: PathBuf::from(DEFAULT_MODPROBE),
            timeout: shim::DEFAULT_TIMEOUT,
        }
    }
}

/// The file to read: `KERNELD_CONFIG`, else /etc/kerneld.conf.
pub fn path() -> PathBuf {
    std::env::var_os(PATH_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Read the configuration; a missing file means the defaults.  A file
/// that cannot be read fails safe, and every problem goes to `warn` (the
/// log).
pub fn load(warn: &mut dyn FnMut(String)) -> Config {
    let path = path();
    match conf::read(&path) {
        Ok(bytes) => parse(&bytes, &path, warn),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
        Err(e) => {
            warn(format!(
                "{}: cannot read: {e}; failing safe: shim-fallback = fail",
                path.display()
            ));
            Config {
                fallback: Fallback::Fail,
                ..Config::default()
            }
        }
    }
}

/// Parse the shim's lines of `text` (read from `path`, named in warnings)
/// and of the files it includes.  The walk goes on past a problem, so that
/// the other lines (`shim-timeout`) still count, and the bounds of the
/// walk keep it short whatever the files say.
pub fn parse(text: &[u8], path: &std::path::Path, warn: &mut dyn FnMut(String)) -> Config {
    let mut reader = Reader {
        config: Config::default(),
        warn,
        problems: 0,
    };
    let Ok(()) = conf::walk(path, text, &mut reader);
    let mut config = reader.config;
    if reader.problems > LOGGED_PROBLEMS {
        (reader.warn)(format!(
            "{} more problems in {} not logged",
            reader.problems - LOGGED_PROBLEMS,
            path.display()
        ));
    }
    if reader.problems > 0 {
        config.fallback = Fallback::Fail;
    }
    config
}

/// Takes the `shim-` lines; every other line belongs to kerneld.
struct Reader<'w> {
    config: Config,
    warn: &'w mut dyn FnMut(String),
    /// Lines and includes that could not be read.
    problems: usize,
}

impl Reader<'_> {
    /// Count a problem at `file:line`, and log it if it is among the first.
    fn problem(&mut self, file: &std::path::Path, line: usize, why: &dyn std::fmt::Display) {
        self.problems += 1;
        if self.problems <= LOGGED_PROBLEMS {
            (self.warn)(format!(
                "{}:{line}: {why}; failing safe: shim-fallback = fail whatever the other lines say",
                file.display()
            ));
        }
    }
}

impl conf::Visitor for Reader<'_> {
    type Error = std::convert::Infallible;

    fn line(&mut self, l: &conf::Line<'_>) -> Result<(), Self::Error> {
        match shim::setting(l.text) {
            None => {}
            Some(Ok(shim::Setting::Fallback(f))) => self.config.fallback = f,
            Some(Ok(shim::Setting::Modprobe(p))) => self.config.modprobe = p.to_path_buf(),
            Some(Ok(shim::Setting::Timeout(t))) => self.config.timeout = t,
            Some(Err(why)) => self.problem(l.file, l.number, &why),
        }
        Ok(())
    }

    fn include_failed(&mut self, e: conf::IncludeError<'_>) -> Result<(), Self::Error> {
        self.problem(e.line.file, e.line.number, &e.problem);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse_ok(text: &str) -> Config {
        parse(text.as_bytes(), Path::new("t"), &mut |w| {
            panic!("unexpected warning {w}")
        })
    }

    fn parse_warnings(text: &str) -> (Config, Vec<String>) {
        let mut w = Vec::new();
        let c = parse(text.as_bytes(), Path::new("t"), &mut |s| w.push(s));
        (c, w)
    }

    #[test]
    fn defaults_for_empty_and_foreign_lines() {
        let c = parse_ok("# kerneld\n\ndelay = 60\nkeep\nalias foo bar\nx = shim-fallback\n");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn reads_its_keys() {
        let c = parse_ok(
            "  shim-fallback = fail  # no modprobe here\n\
             shim-modprobe=/opt/x#y/modprobe\n\
             shim-timeout = 2.5\n",
        );
        assert_eq!(c.fallback, Fallback::Fail);
        assert_eq!(c.modprobe, PathBuf::from("/opt/x#y/modprobe"));
        assert_eq!(c.timeout, Duration::from_millis(2500));
    }

    /// The forms kerneld has always accepted are read, not ignored.
    #[test]
    fn timeouts_in_every_form_kerneld_accepts() {
        for (value, ms) in [
            ("30", 30_000),
            ("0.5", 500),
            ("+5", 5000),
            ("1e3", 1_000_000),
        ] {
            let c = parse_ok(&format!("shim-timeout = {value}\n"));
            assert_eq!(c.timeout, Duration::from_millis(ms), "{value}");
            assert_eq!(c.fallback, Fallback::Modprobe, "{value}");
        }
    }

    #[test]
    fn later_lines_win() {
        let c = parse_ok("shim-fallback = fail\nshim-fallback = modprobe\n");
        assert_eq!(c.fallback, Fallback::Modprobe);
    }

    #[test]
    fn a_line_it_cannot_read_fails_safe() {
        for bad in [
            "shim-fallback = fial",
            "shim-fallback = maybe",
            "shim-modprobe = modprobe",
            "shim-timeout = 0",
            "shim-timeout = 1e300",
            "shim-timeout = 5000",
            "shim-timeout = soon",
            "shim-timeout 5",
            "shim-fallbak = fail",
        ] {
            // Not even a later `modprobe` undoes it.
            let (c, w) = parse_warnings(&format!("{bad}\nshim-fallback = modprobe\n"));
            assert_eq!(c.fallback, Fallback::Fail, "{bad}");
            assert_eq!(w.len(), 1, "{bad}: {w:?}");
            assert!(
                w[0].starts_with("t:1: ") && w[0].contains("failing safe"),
                "{}",
                w[0]
            );
        }
        let (c, w) = parse_warnings("shim-timeout = 5\nshim-timeout = nan\n");
        assert_eq!(
            c.timeout,
            Duration::from_secs(5),
            "a bad line changes nothing"
        );
        assert!(w[0].contains("shim-timeout needs a number"), "{}", w[0]);
    }

    #[test]
    fn many_problems_are_counted_not_all_logged() {
        let (c, w) = parse_warnings(&"shim-fallback = fial\n".repeat(100));
        assert_eq!(c.fallback, Fallback::Fail);
        assert_eq!(w.len(), LOGGED_PROBLEMS + 1, "{w:?}");
        assert_eq!(w[LOGGED_PROBLEMS], "96 more problems in t not logged");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shim-conf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn included_files_are_read_like_kerneld_reads_them() {
        let d = temp_dir("inc");
        std::fs::write(
            d.join("rare.conf"),
            "deny request net-pf-33\nshim-fallback = fail\n",
        )
        .unwrap();
        let top = d.join("kerneld.conf");
        let c = parse(
            b"delay = 60\ninclude rare.conf\nshim-timeout = 4\n",
            &top,
            &mut |w| panic!("unexpected warning {w}"),
        );
        assert_eq!(c.fallback, Fallback::Fail);
        assert_eq!(c.timeout, Duration::from_secs(4));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn an_include_that_cannot_be_followed_fails_safe() {
        let d = temp_dir("bad");
        let top = d.join("kerneld.conf");
        std::fs::write(&top, "").unwrap();
        for include in [
            "include missing.conf",
            "include /dev/zero",
            "include a b",
            "include kerneld.conf",
        ] {
            let text = format!("{include}\nshim-fallback = modprobe\nshim-timeout = 3\n");
            let mut w = Vec::new();
            let c = parse(text.as_bytes(), &top, &mut |s| w.push(s));
            assert_eq!(c.fallback, Fallback::Fail, "{include}");
            assert_eq!(
                c.timeout,
                Duration::from_secs(3),
                "the other lines still count"
            );
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(
                w[0].contains("kerneld.conf:1: ") && w[0].contains("failing safe"),
                "{}",
                w[0]
            );
        }
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_file_it_cannot_read_fails_safe() {
        let d = temp_dir("top");
        let big = d.join("kerneld.conf");
        std::fs::write(&big, vec![b'#'; conf::MAX_FILE_BYTES as usize + 1]).unwrap();
        // No other test of this crate reads the variable.
        std::env::set_var(PATH_ENV, &big);
        let mut w = Vec::new();
        let c = load(&mut |s| w.push(s));
        std::env::remove_var(PATH_ENV);
        assert_eq!(c.fallback, Fallback::Fail);
        assert!(w[0].contains("larger than"), "{w:?}");
        std::fs::remove_dir_all(&d).ok();
    }
}

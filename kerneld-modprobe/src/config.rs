//! The shim's lines of /etc/kerneld.conf.
//!
//! The file belongs to the daemon; the shim reads only `shim-fallback`,
//! `shim-modprobe` and `shim-timeout` and ignores every other line, so the
//! daemon may grow its format freely.  It follows `include` lines with
//! kerneld's own reader ([`kmod_ipc::conf`]), so both see the same lines.

use kmod_ipc::conf;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// Default configuration file.
pub const DEFAULT_PATH: &str = "/etc/kerneld.conf";
/// Environment variable that overrides it (used by tests).
pub const PATH_ENV: &str = "KERNELD_CONFIG";
/// Default `shim-modprobe`.
pub const DEFAULT_MODPROBE: &str = "/sbin/modprobe";
/// Default `shim-timeout`, in seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to do when kerneld cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Exec the real modprobe with our arguments, so modules still load.
    Modprobe,
    /// Fail the request at once.
    Fail,
}

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
            timeout: DEFAULT_TIMEOUT,
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

/// Read the configuration; a missing file means the defaults, and every
/// problem goes to `warn` (the log) with the default kept.  Includes are
/// followed as kerneld follows them (see [`kmod_ipc::conf`]).
pub fn load(warn: &mut dyn FnMut(String)) -> Config {
    let path = path();
    match conf::read(&path) {
        Ok(bytes) => parse(&bytes, &path, warn),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
        Err(e) => {
            warn(format!("{}: {e}; using the defaults", path.display()));
            Config::default()
        }
    }
}

/// Parse the shim's lines of `text` (read from `path`, named in warnings)
/// and of the files it includes.
///
/// Byte by byte rather than with `str` searching and float parsing: it runs
/// at every request_module(), and every line of code it executes is start-up
/// time (under emulation, translated afresh at each exec).
///
/// An include that cannot be followed fails safe: it may hold
/// `shim-fallback = fail`, so the shim then fails without kerneld
/// whatever the other lines say, rather than run modprobe past a policy.
pub fn parse(text: &[u8], path: &std::path::Path, warn: &mut dyn FnMut(String)) -> Config {
    let mut reader = Reader {
        config: Config::default(),
        warn,
        include_failed: false,
    };
    let Ok(()) = conf::walk(path, text, &mut reader);
    let mut config = reader.config;
    if reader.include_failed {
        config.fallback = Fallback::Fail;
    }
    config
}

/// Takes the `shim-` lines; every other line belongs to kerneld.
struct Reader<'w> {
    config: Config,
    warn: &'w mut dyn FnMut(String),
    include_failed: bool,
}

impl conf::Visitor for Reader<'_> {
    type Error = std::convert::Infallible;

    fn line(&mut self, l: &conf::Line<'_>) -> Result<(), Self::Error> {
        let config = &mut self.config;
        let Some(setting) = l.text.strip_prefix(b"shim-") else {
            return Ok(());
        };
        let name_end = setting
            .iter()
            .position(|&b| b == b'=' || b.is_ascii_whitespace())
            .unwrap_or(setting.len());
        let (name, rest) = setting.split_at(name_end);
        if !matches!(name, b"fallback" | b"modprobe" | b"timeout") {
            return Ok(());
        }
        let warn = &mut *self.warn;
        let mut bad = |why: &str| {
            warn(format!(
                "{}:{}: {why} in {:?}; using the default",
                l.file.display(),
                l.number,
                String::from_utf8_lossy(l.text)
            ))
        };
        let Some(value) = rest.trim_ascii_start().strip_prefix(b"=") else {
            bad("expected `key = value`");
            return Ok(());
        };
        let value = value.trim_ascii();
        match name {
            b"fallback" => match value {
                b"modprobe" => config.fallback = Fallback::Modprobe,
                b"fail" => config.fallback = Fallback::Fail,
                _ => {
                    bad("shim-fallback must be `modprobe` or `fail`");
                    config.fallback = Fallback::Modprobe;
                }
            },
            b"modprobe" => {
                if value.starts_with(b"/") {
                    config.modprobe = PathBuf::from(std::ffi::OsStr::from_bytes(value));
                } else {
                    bad("shim-modprobe must be an absolute path");
                    config.modprobe = PathBuf::from(DEFAULT_MODPROBE);
                }
            }
            _ => match seconds(value) {
                Some(t) => config.timeout = t,
                None => {
                    bad("shim-timeout must be a number of seconds above 0");
                    config.timeout = DEFAULT_TIMEOUT;
                }
            },
        }
        Ok(())
    }

    fn include_failed(&mut self, e: conf::IncludeError<'_>) -> Result<(), Self::Error> {
        (self.warn)(format!(
            "{}:{}: {}; failing safe: shim-fallback = fail whatever the other lines say",
            e.line.file.display(),
            e.line.number,
            e.problem
        ));
        self.include_failed = true;
        Ok(())
    }
}

/// `SECONDS[.FRACTION]`, above 0 and at most 10^6 seconds.
fn seconds(value: &[u8]) -> Option<Duration> {
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    let digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole = &whole[whole.iter().take_while(|&&d| d == b'0').count()..];
    if whole.len() > 7 {
        return None;
    }
    let secs = whole
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    // Nanoseconds from the first nine digits of the fraction.
    let nanos = (0..9).fold(0u32, |acc, i| {
        acc * 10 + fraction.get(i).map_or(0, |&d| u32::from(d - b'0'))
    });
    let t = Duration::new(secs, nanos);
    (t > Duration::ZERO && t <= Duration::from_secs(1_000_000)).then_some(t)
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
        let c = parse_ok("# kerneld\n\ndelay = 60\nkeep\nshim-fallbackish = x\nalias foo bar\n");
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

    #[test]
    fn seconds_are_decimal_numbers_above_zero() {
        let ms = |v: &str| seconds(v.as_bytes()).map(|d| d.as_millis());
        assert_eq!(ms("2.5"), Some(2500));
        assert_eq!(ms(".25"), Some(250));
        assert_eq!(ms("5."), Some(5000));
        assert_eq!(ms("000000030"), Some(30_000));
        assert_eq!(ms("1000000"), Some(1_000_000_000));
        assert_eq!(seconds(b"0.000000001"), Some(Duration::from_nanos(1)));
        for bad in [
            "",
            ".",
            "0",
            "0.0",
            "1000000.5",
            "10000000",
            "1e3",
            "-1",
            "+1",
            "1.2.3",
            "nan",
            "5 s",
        ] {
            assert_eq!(seconds(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn later_lines_win() {
        let c = parse_ok("shim-fallback = fail\nshim-fallback = modprobe\n");
        assert_eq!(c.fallback, Fallback::Modprobe);
    }

    #[test]
    fn malformed_lines_warn_and_keep_defaults() {
        let (c, w) = parse_warnings(
            "shim-fallback = maybe\nshim-modprobe = modprobe\nshim-timeout = 0\nshim-timeout 5\n",
        );
        assert_eq!(c, Config::default());
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].contains("t:1:"), "{}", w[0]);
        assert!(w[3].contains("key = value"), "{}", w[3]);
        let (c, w) = parse_warnings("shim-timeout = 5\nshim-timeout = nan\n");
        assert_eq!(
            c.timeout, DEFAULT_TIMEOUT,
            "a bad line resets to the default"
        );
        assert_eq!(w.len(), 1);
        let (_, w) = parse_warnings("shim-timeout = 1e300\n");
        assert_eq!(w.len(), 1);
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
    fn an_include_that_cannot_be_read_fails_safe() {
        let d = temp_dir("bad");
        let top = d.join("kerneld.conf");
        for include in ["include missing.conf", "include /dev/zero", "include a b"] {
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
}

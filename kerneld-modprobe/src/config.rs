//! The shim's lines of /etc/kerneld.conf.
//!
//! The file belongs to the daemon; the shim reads only `shim-fallback`,
//! `shim-modprobe` and `shim-timeout` and ignores every other line, so the
//! daemon may grow its format freely.

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
/// problem goes to `warn` (the log) with the default kept.
pub fn load(warn: &mut dyn FnMut(String)) -> Config {
    let path = path();
    match std::fs::read(&path) {
        Ok(bytes) => parse(&String::from_utf8_lossy(&bytes), &path, warn),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
        Err(e) => {
            warn(format!("{}: {e}; using the defaults", path.display()));
            Config::default()
        }
    }
}

/// Parse the text of the file (`path` only names it in warnings).
pub fn parse(text: &str, path: &std::path::Path, warn: &mut dyn FnMut(String)) -> Config {
    let mut config = Config::default();
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        // Our lines are those whose first word is one of our keys.
        let word_end = line
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(line.len());
        let key = &line[..word_end];
        if !matches!(key, "shim-fallback" | "shim-modprobe" | "shim-timeout") {
            continue;
        }
        let mut bad = |why: &str| {
            warn(format!(
                "{}:{}: {why} in {line:?}; using the default",
                path.display(),
                n + 1
            ))
        };
        let Some(value) = line[word_end..].trim_start().strip_prefix('=') else {
            bad("expected `key = value`");
            continue;
        };
        let value = value.trim();
        match key {
            "shim-fallback" => match value {
                "modprobe" => config.fallback = Fallback::Modprobe,
                "fail" => config.fallback = Fallback::Fail,
                _ => {
                    bad("shim-fallback must be `modprobe` or `fail`");
                    config.fallback = Fallback::Modprobe;
                }
            },
            "shim-modprobe" => {
                if value.starts_with('/') {
                    config.modprobe = PathBuf::from(value);
                } else {
                    bad("shim-modprobe must be an absolute path");
                    config.modprobe = PathBuf::from(DEFAULT_MODPROBE);
                }
            }
            _ => match value.parse::<f64>() {
                // The upper bound keeps Duration::from_secs_f64 from panicking.
                Ok(s) if s > 0.0 && s <= 1e6 => config.timeout = Duration::from_secs_f64(s),
                _ => {
                    bad("shim-timeout must be a number of seconds above 0");
                    config.timeout = DEFAULT_TIMEOUT;
                }
            },
        }
    }
    config
}

/// Cut a comment: a line starting with `#`, or `#` after whitespace (a
/// `#` inside a word, as in a path, stays).
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("t"), &mut |w| {
            panic!("unexpected warning {w}")
        })
    }

    fn parse_warnings(text: &str) -> (Config, Vec<String>) {
        let mut w = Vec::new();
        let c = parse(text, Path::new("t"), &mut |s| w.push(s));
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
}

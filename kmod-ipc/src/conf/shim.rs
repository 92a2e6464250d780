//! The `shim-` lines of `kerneld.conf`, read the one way: kerneld-modprobe
//! reads its settings with [`setting`], and `kerneld --check-config`
//! refuses exactly the lines [`setting`] cannot read.  Before, each had its
//! own reader: `shim-fallback = fial` was refused by kerneld while the shim
//! ran modprobe past the deny rules, and `shim-timeout = 1e3` was accepted
//! by kerneld and ignored by the shim.
//!
//! It runs in the shim at every request_module(): the common values
//! (`30`, `fail`) are read without allocating, and only an error builds a
//! message.

use std::path::Path;
use std::time::Duration;

/// Default `shim-modprobe`.
pub const DEFAULT_MODPROBE: &str = "/sbin/modprobe";
/// Default `shim-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest `shim-timeout`, in seconds.
pub const TIMEOUT_MAX_SECS: u64 = 3600;

/// What the shim does when kerneld cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Exec the real modprobe with the kernel's arguments.
    Modprobe,
    /// Fail the request at once.
    Fail,
}

/// One `shim-` setting, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting<'a> {
    Fallback(Fallback),
    /// An absolute path.
    Modprobe(&'a Path),
    /// Above 0 and at most [`TIMEOUT_MAX_SECS`].
    Timeout(Duration),
}

/// Read a line of the configuration (its text as [`super::Line`] gives
/// it): `None` when it is not a `shim-` line, else the setting or why it
/// cannot be read.
///
/// The key is what stands before the first `=`, as for every setting of
/// kerneld; a key that starts with `shim-` and is not one of the three is
/// an error, not someone else's line (most likely a misspelt key, which
/// the shim must not take for its default).
pub fn setting(text: &[u8]) -> Option<Result<Setting<'_>, String>> {
    if !text.starts_with(b"shim-") {
        return None;
    }
    let Some(eq) = text.iter().position(|&b| b == b'=') else {
        return Some(Err(format!(
            "expected `key = value`, found {:?}",
            String::from_utf8_lossy(text)
        )));
    };
    let key = text[..eq].trim_ascii();
    let value = text[eq + 1..].trim_ascii();
    Some(match key {
        b"shim-fallback" => fallback(value).map(Setting::Fallback),
        b"shim-modprobe" => modprobe(value).map(Setting::Modprobe),
        b"shim-timeout" => timeout(value).map(Setting::Timeout),
        _ => Err(format!(
            "unknown setting {:?} (the shim's are shim-fallback, shim-modprobe and shim-timeout)",
            String::from_utf8_lossy(key)
        )),
    })
}

/// `modprobe` or `fail`.
pub fn fallback(value: &[u8]) -> Result<Fallback, String> {
    match value {
        b"modprobe" => Ok(Fallback::Modprobe),
        b"fail" => Ok(Fallback::Fail),
        _ => Err(format!(
            "shim-fallback must be `modprobe` or `fail`, not {:?}",
            String::from_utf8_lossy(value)
        )),
    }
}

/// An absolute path, in UTF-8 as every line kerneld reads.
pub fn modprobe(value: &[u8]) -> Result<&Path, String> {
    match std::str::from_utf8(value) {
        Ok(path) if path.starts_with('/') => Ok(Path::new(path)),
        _ => Err(format!(
            "shim-modprobe must be an absolute path, not {:?}",
            String::from_utf8_lossy(value)
        )),
    }
}

/// Seconds as a decimal number (`30`, `2.5`, `+5`, `1e3`: what Rust's
/// `f64` parser takes, as kerneld always took), above 0 and at most
/// [`TIMEOUT_MAX_SECS`], and at least a nanosecond once rounded.
pub fn timeout(value: &[u8]) -> Result<Duration, String> {
    let secs = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    match secs {
        // NaN fails both comparisons; the bounds keep from_secs_f64 from
        // panicking.
        Some(t) if t > 0.0 && t <= TIMEOUT_MAX_SECS as f64 => {
            let d = Duration::from_secs_f64(t);
            if d > Duration::ZERO {
                return Ok(d);
            }
        }
        _ => {}
    }
    Err(format!(
        "shim-timeout needs a number of seconds above 0 and at most {TIMEOUT_MAX_SECS}, not {:?}",
        String::from_utf8_lossy(value)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> Option<Result<Setting<'_>, String>> {
        setting(line.as_bytes())
    }

    #[test]
    fn other_lines_are_not_the_shims() {
        for line in [
            "delay = 60",
            "deny request net-pf-33",
            "x shim-fallback = fail",
        ] {
            assert_eq!(read(line), None, "{line}");
        }
    }

    #[test]
    fn fallback_is_modprobe_or_fail_exactly() {
        assert_eq!(
            read("shim-fallback = fail"),
            Some(Ok(Setting::Fallback(Fallback::Fail)))
        );
        assert_eq!(
            read("shim-fallback=modprobe"),
            Some(Ok(Setting::Fallback(Fallback::Modprobe)))
        );
        for bad in ["fial", "Fail", "", "fail now", "modprobe,fail"] {
            let e = read(&format!("shim-fallback = {bad}"))
                .unwrap()
                .unwrap_err();
            assert!(e.contains("shim-fallback must be"), "{bad}: {e}");
        }
    }

    #[test]
    fn modprobe_is_an_absolute_utf8_path() {
        assert_eq!(
            read("shim-modprobe = /opt/x#y/modprobe"),
            Some(Ok(Setting::Modprobe(Path::new("/opt/x#y/modprobe"))))
        );
        for bad in ["modprobe", "", "./modprobe"] {
            let e = read(&format!("shim-modprobe = {bad}"))
                .unwrap()
                .unwrap_err();
            assert!(e.contains("absolute path"), "{bad}: {e}");
        }
        assert!(setting(b"shim-modprobe = /sbin/\xff").unwrap().is_err());
    }

    #[test]
    fn timeout_forms() {
        let ms = |v: &str| timeout(v.as_bytes()).map(|d| d.as_millis()).ok();
        for (value, want) in [
            ("30", 30_000),
            ("0.5", 500),
            ("2.5", 2500),
            (".25", 250),
            ("5.", 5000),
            ("+5", 5000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("2.5e-1", 250),
            ("000000030", 30_000),
            ("3600", 3_600_000),
            ("3600.0", 3_600_000),
        ] {
            assert_eq!(ms(value), Some(want), "{value}");
        }
        assert_eq!(timeout(b"1e-9"), Ok(Duration::from_nanos(1)));
        for bad in [
            "", ".", "0", "0.0", "-0", "-1", "+-1", "3600.5", "1e4", "1e300", "inf", "infinity",
            "nan", "NaN", "1.2.3", "5 s", "5s", "0x10", "1e-10", "1e-320", "\u{665}",
        ] {
            let e = timeout(bad.as_bytes()).unwrap_err();
            assert!(e.contains("at most 3600"), "{bad}: {e}");
        }
        assert!(timeout(b"\xff").is_err());
    }

    #[test]
    fn keys_are_whole_and_need_a_value() {
        for bad in [
            "shim-timeout 5",
            "shim-fallback",
            "shim-fallbak = fail",
            "shim-fallback x = fail",
            "shim- = 1",
        ] {
            assert!(read(bad).unwrap().is_err(), "{bad}");
        }
        let e = read("shim-fallbak = fail").unwrap().unwrap_err();
        assert!(e.contains("unknown setting \"shim-fallbak\""), "{e}");
        assert_eq!(
            read("shim-timeout\t=\t4"),
            Some(Ok(Setting::Timeout(Duration::from_secs(4))))
        );
    }
}

//! The queue key: `0x6b65726e` by default, `KERNELD_KEY` or `--key` otherwise.

use std::fmt;
use std::str::FromStr;

/// The default key, the bytes "kern".
pub const DEFAULT_KEY: Key = Key(0x6b65_726e);
/// Environment variable every program honours for the key.
pub const KEY_ENV: &str = "KERNELD_KEY";

/// A SysV IPC key (`key_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub i32);

impl Key {
    /// The key from an explicit option, else `KERNELD_KEY`, else the default.
    /// A malformed `KERNELD_KEY` is an error naming the variable.
    pub fn resolve(option: Option<Key>) -> Result<Key, String> {
        if let Some(k) = option {
            return Ok(k);
        }
        match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|e| format!("{KEY_ENV}={v:?}: {e}")),
            _ => Ok(DEFAULT_KEY),
        }
    }
}

impl FromStr for Key {
    type Err = String;

    /// Hex with `0x`, or decimal (negative allowed, as key_t is signed).
    fn from_str(s: &str) -> Result<Key, String> {
        let s = s.trim();
        let parsed = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            u32::from_str_radix(hex, 16).map(|v| v as i32).ok()
        } else {
            s.parse::<i32>()
                .ok()
                .or_else(|| s.parse::<u32>().ok().map(|v| v as i32))
        };
        match parsed {
            // IPC_PRIVATE (0) would create a new private queue each time.
            Some(0) => Err("key 0 is IPC_PRIVATE and cannot name a shared queue".into()),
            Some(k) => Ok(Key(k)),
            None => Err(format!(
                "invalid key {s:?}: give hex (0x6b65726e) or decimal"
            )),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0 as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_decimal() {
        assert_eq!("0x6b65726e".parse::<Key>().unwrap(), DEFAULT_KEY);
        assert_eq!("1801810542".parse::<Key>().unwrap(), DEFAULT_KEY);
        assert_eq!("0xffffffff".parse::<Key>().unwrap(), Key(-1));
        assert_eq!("-5".parse::<Key>().unwrap(), Key(-5));
        assert!("0".parse::<Key>().is_err());
        assert!("kern".parse::<Key>().is_err());
        assert!("0x1ffffffff".parse::<Key>().is_err());
    }

    #[test]
    fn displays_as_hex() {
        assert_eq!(DEFAULT_KEY.to_string(), "0x6b65726e");
        assert_eq!(Key(-1).to_string(), "0xffffffff");
    }
}

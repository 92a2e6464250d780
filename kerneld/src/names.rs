//! Validation of names from messages, before anything else sees them.
//!
//! Requested names come from the kernel (`net-pf-10`, `crypto-cbc(aes)`,
//! `char-major-10-200`) or from any process that can write to the queue.
//! Nothing from a message ever reaches a shell, but a name is also a path
//! component inside libkmod and a word in logs, so only the characters real
//! module names and aliases use are accepted.

use std::borrow::Cow;

/// A module name as the kernel and libkmod compare it: `-` read as `_`.
/// Borrowed when it has no `-` (libkmod's own names have none).  The one
/// place this rule is written.
pub(crate) fn normalise(name: &str) -> Cow<'_, str> {
    if name.contains('-') {
        Cow::Owned(name.replace('-', "_"))
    } else {
        Cow::Borrowed(name)
    }
}

/// Whether two module names name the same module (see [`normalise`]),
/// without allocating.
pub(crate) fn same_module(a: &str, b: &str) -> bool {
    let n = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| n(x) == n(y))
}

/// Longest name accepted.  The kernel's request_module() stops at 55 bytes
/// (MODULE_NAME_LEN); hand-made modalias requests can be longer.
pub(crate) const NAME_MAX: usize = 255;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadName {
    #[error("empty module name")]
    Empty,
    #[error("module name longer than {NAME_MAX} bytes ({0})")]
    TooLong(usize),
    #[error("module name contains '/'")]
    Slash,
    #[error("module name contains '..'")]
    DotDot,
    #[error("module name contains a control character (byte {0:#04x})")]
    Control(u8),
    #[error("module name contains a character not allowed in module names ({0:?})")]
    Forbidden(char),
    #[error("module name is not ASCII (byte {0:#04x})")]
    NotAscii(u8),
    #[error("module name starts with '-'")]
    LeadingDash,
}

/// Check a requested name and return it as a string.
pub(crate) fn validate(name: &[u8]) -> Result<&str, BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(BadName::TooLong(name.len()));
    }
    for &b in name {
        match b {
            b'/' => return Err(BadName::Slash),
            0..=0x1f | 0x7f => return Err(BadName::Control(b)),
            0x80..=0xff => return Err(BadName::NotAscii(b)),
            b if b.is_ascii_alphanumeric() => {}
            b'-' | b'_' | b'.' | b',' | b':' | b'+' | b'=' | b'@' | b'(' | b')' | b'%' => {}
            other => return Err(BadName::Forbidden(other as char)),
        }
    }
    if name.windows(2).any(|w| w == b"..") {
        return Err(BadName::DotDot);
    }
    if name[0] == b'-' {
        return Err(BadName::LeadingDash);
    }
    Ok(std::str::from_utf8(name).expect("checked ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_names_pass() {
        for n in [
            "dummy",
            "rtnl-link-dummy",
            "net-pf-10",
            "crypto-cbc(aes)",
            "crypto-cbc(aes)-all",
            "char-major-10-200",
            "fs-binfmt_misc",
            "net-pf-16-proto-16-family-nl80211",
            "cpu:type:x86,ven0000fam0006mod003F:feature:,0000",
            "pci:v00008086d00001533sv*",
        ]
        .iter()
        .filter(|n| !n.contains('*'))
        {
            assert_eq!(validate(n.as_bytes()), Ok(*n), "{n}");
        }
    }

    #[test]
    fn hostile_names_fail() {
        assert_eq!(validate(b""), Err(BadName::Empty));
        assert_eq!(validate(b"../../etc/passwd"), Err(BadName::Slash));
        assert_eq!(validate(b"a..b"), Err(BadName::DotDot));
        assert_eq!(validate(b"ppp;reboot"), Err(BadName::Forbidden(';')));
        assert_eq!(validate(b"$(id)"), Err(BadName::Forbidden('$')));
        assert_eq!(validate(b"a b"), Err(BadName::Forbidden(' ')));
        assert_eq!(validate(b"`x`"), Err(BadName::Forbidden('`')));
        assert_eq!(validate(b"x\ny"), Err(BadName::Control(b'\n')));
        assert_eq!(validate(b"\xffab"), Err(BadName::NotAscii(0xff)));
        assert_eq!(validate(b"-r"), Err(BadName::LeadingDash));
        assert_eq!(validate(b"glob*"), Err(BadName::Forbidden('*')));
        assert_eq!(validate(&[b'a'; 256]), Err(BadName::TooLong(256)));
        assert!(validate(&[b'a'; 255]).is_ok());
    }
}

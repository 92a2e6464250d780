//! Strings that a requester or a file controls, made safe for a terminal
//! or a log line.
//!
//! A requester's command name (any 15 bytes but NUL, set with
//! `prctl(PR_SET_NAME)` by any user), its cgroup name, a module name in a
//! request, a path or a rule read from a file: written as they are, an
//! ESC or CSI would drive the administrator's terminal, and a CR or LF
//! would forge a line of `kdstat` or of the log.  [`escape`] shows such
//! characters C-style, as systemd does (`\n`, `\x1b`), so that they are
//! seen instead of obeyed.
//!
//! Escaped: the C0 controls, DEL and the C1 controls (U+0080 to U+009F,
//! CSI among them), as their bytes; and the Unicode characters that
//! reorder or break a line on display (bidirectional overrides and
//! isolates, U+2028/U+2029), as their UTF-8 bytes.  A backslash is left as
//! it is: systemd's own names carry `\x2d` and read best unchanged, and
//! this keeps escaping idempotent (what is escaped once may be escaped
//! again on its way to the log without doubling backslashes).  So the
//! form is for the eye, not to be decoded: JSON output carries the raw
//! string, which a program should read instead.

use std::borrow::Cow;

/// `s` with every control character shown as a C-style escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// As [`escape`], but line feeds are kept: for a multi-line text whose
/// lines were laid out by its writer (the daemon's status, as kdstat
/// prints it), where each field in it was escaped already.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// A JSON text as it may reach a terminal: the characters [`escape`]
/// rewrites, which a JSON encoder leaves raw inside strings (DEL, C1, the
/// bidirectional controls; serde_json escapes only C0), written as
/// `\uXXXX` escapes of JSON itself, so that a parser reads back the same
/// string.  Line feeds are kept (whitespace of a pretty document; a JSON
/// string cannot hold one raw).  Such characters cannot occur outside
/// strings in valid JSON, so no other context is changed.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    if !json
        .bytes()
        .any(|b| (b < 0x20 && b != b'\n') || matches!(b, 0x7f | 0xc2 | 0xe2))
    {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if c == '\n' || !needs_escape(c) {
            out.push(c);
        } else {
            // All of them are in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is one [`escape`] rewrites.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_with(s: &str, keep_newline: bool) -> Cow<'_, str> {
    // Most strings have nothing to escape and are used as they are: a
    // byte scan decides, looking for a byte that may begin an escaped
    // character (C0, DEL, 0xC2 for C1, 0xE2 for U+2028..U+2069).
    let may =
        |b: u8| (b < 0x20 && !(keep_newline && b == b'\n')) || matches!(b, 0x7f | 0xc2 | 0xe2);
    if !s.bytes().any(may) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c) || (keep_newline && c == '\n') {
            out.push(c);
            continue;
        }
        match c {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str("\\x");
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
            }
        }
    }
    Cow::Owned(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(escape("ab\x1b[31mc"), "ab\\x1b[31mc");
        assert_eq!(
            escape("\x07\x08\t\n\x0b\x0c\r\x00\x7f"),
            "\\a\\b\\t\\n\\v\\f\\r\\x00\\x7f"
        );
        // CSI as one C1 character: its two UTF-8 bytes.
        assert_eq!(escape("x\u{9b}2J"), "x\\xc2\\x9b2J");
        // A right-to-left override would reorder what follows.
        assert_eq!(escape("a\u{202e}b"), "a\\xe2\\x80\\xaeb");
        assert_eq!(escape_lines("a\nb\rc\n"), "a\nb\\rc\n");
    }

    #[test]
    fn printable_text_is_kept_and_not_copied() {
        for s in [
            "request_module: sctp: not found",
            "caf\u{e9} \u{a0}x \u{20ac} \u{2013}",
            "/system.slice/systemd-fsck@dev-disk-by\\x2duuid.service",
        ] {
            assert_eq!(escape(s), s);
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert!(matches!(escape_lines("two\nlines"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_gets_json_escapes_and_parses_back_the_same() {
        assert_eq!(
            escape_json("{\"comm\":\"a\u{7f}b\u{9b}c\u{202e}\"}"),
            "{\"comm\":\"a\\u007fb\\u009bc\\u202e\"}"
        );
        assert!(matches!(
            escape_json("{\"a\": \"caf\u{e9}\"}\n"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn the_result_is_printable_and_escaping_again_changes_nothing() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let once = escape(&all).into_owned();
        assert!(!once.chars().any(needs_escape));
        assert_eq!(escape(&once), once);
    }
}

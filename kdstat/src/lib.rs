//! What kdstat and kdsend share: option parsing and how errors become
//! messages and exit statuses.

pub mod cli;
pub mod prometheus;
pub mod shim;

use kmod_ipc::{Client, Error, Key, MsgType, Reply};
use std::io::ErrorKind;
use std::time::Duration;

/// The daemon answered with a non-zero status, or any unexpected failure.
pub const EXIT_FAILURE: i32 = 1;
/// A usage error (as clap's own).
pub const EXIT_USAGE: i32 = 2;
/// No queue at the key, or one that no live kerneld serves.
pub const EXIT_NOT_RUNNING: i32 = 3;
/// The queue exists but this user may not use it.
pub const EXIT_PERMISSION: i32 = 4;
/// No reply within the timeout (the status `timeout(1)` uses).
pub const EXIT_TIMEOUT: i32 = 124;

/// A failure of a tool, ready to be reported: message and exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    /// Print `PROGRAM: message` on stderr and exit with the status.
    pub fn exit(&self, program: &str) -> ! {
        eprintln!("{program}: {}", self.message);
        std::process::exit(self.code)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let (message, code) = match &e {
            Error::NotRunning { .. } | Error::NotServed { .. } => (e.to_string(), EXIT_NOT_RUNNING),
            Error::PermissionDenied { .. } => (e.to_string(), EXIT_PERMISSION),
            // msgget(key, 0) succeeds for anyone; the permission check
            // comes at msgsnd/msgrcv, which report it as a system error.
            Error::Sys { source, .. } if source.kind() == ErrorKind::PermissionDenied => (
                format!("permission denied on the kerneld message queue: root is needed ({e})"),
                EXIT_PERMISSION,
            ),
            Error::Timeout(_) => (e.to_string(), EXIT_TIMEOUT),
            _ => (e.to_string(), EXIT_FAILURE),
        };
        Failure { message, code }
    }
}

/// Send a request that wants a reply, to a kerneld that must be alive:
/// a queue that a killed kerneld left behind is reported as such (exit
/// status 3, as with no queue), not waited on until the timeout.
pub fn request(
    client: &Client,
    t: MsgType,
    text: &[u8],
    timeout: Option<Duration>,
) -> Result<Reply, Failure> {
    let id = Client::tool_reply_id();
    match client.request_served(t, text, id, timeout.unwrap_or(Duration::MAX)) {
        Ok(r) => Ok(r),
        Err(Error::NotServed { key, .. }) => Err(Failure {
            message: format!(
                "{}. Start kerneld again (`systemctl start kerneld`): it takes the queue over \
                 and drops what nobody waits for",
                kmod_ipc::instances::left_behind(key, client.queue())
            ),
            code: EXIT_NOT_RUNNING,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Clap parser for `--key`: hex `0x...` or decimal.
pub fn parse_key(s: &str) -> Result<Key, String> {
    s.parse()
}

/// How long to wait for a reply; `None` waits forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

/// Clap parser for `--timeout`: seconds, fractions allowed; 0 waits forever.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    let secs = parse_seconds(s)?;
    Ok(Timeout((secs > 0.0).then(|| Duration::from_secs_f64(secs))))
}

/// Clap parser for an interval that must be positive (`--watch`).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_seconds(s)? {
        secs if secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err("the interval must be more than 0 seconds".into()),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        // The upper bound keeps Duration::from_secs_f64 from panicking.
        Ok(v) if v.is_finite() && (0.0..=1e9).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds (0 to 1e9)")),
    }
}

/// Text as it should reach a terminal: lossy UTF-8, control characters
/// other than line feeds escaped (`\x1b`: an older daemon may send a
/// requester's command name raw), with a final newline (unless empty).
pub fn with_newline(text: &[u8]) -> String {
    let mut s = kmod_ipc::escape::escape_lines(&String::from_utf8_lossy(text)).into_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// A JSON document as it should reach a terminal: lossy UTF-8, with the
/// characters an encoder may leave raw in strings (DEL, C1) as JSON
/// escapes, so that it still parses to the same values.
pub fn json_text(text: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(text);
    kmod_ipc::escape::escape_json(&s).into_owned().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("5").unwrap().0, Some(Duration::from_secs(5)));
        assert_eq!(
            parse_timeout("0.5").unwrap().0,
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_timeout("0").unwrap().0, None);
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("nan").is_err());
        assert!(parse_timeout("1e300").is_err());
        assert!(parse_interval("0").is_err());
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn exit_codes() {
        let key = kmod_ipc::DEFAULT_KEY;
        let f = Failure::from(Error::NotRunning { key });
        assert_eq!(f.code, EXIT_NOT_RUNNING);
        assert_eq!(
            f.message,
            "kerneld is not running (no message queue at key 0x6b65726e)"
        );
        assert_eq!(
            Failure::from(Error::PermissionDenied { key }).code,
            EXIT_PERMISSION
        );
        let eacces = Error::Sys {
            call: "msgsnd",
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        let f = Failure::from(eacces);
        assert_eq!(f.code, EXIT_PERMISSION);
        assert!(f.message.contains("root is needed"), "{}", f.message);
        assert_eq!(
            Failure::from(Error::Timeout(Duration::from_secs(1))).code,
            EXIT_TIMEOUT
        );
        assert_eq!(Failure::from(Error::Removed).code, EXIT_FAILURE);
    }

    #[test]
    fn newline_added_once() {
        assert_eq!(with_newline(b"a"), "a\n");
        assert_eq!(with_newline(b"a\n"), "a\n");
        assert_eq!(with_newline(b""), "");
    }

    #[test]
    fn control_characters_but_line_feeds_are_escaped() {
        assert_eq!(
            with_newline(b"comm \x1b[2J\rx\nnext"),
            "comm \\x1b[2J\\rx\nnext\n"
        );
    }
}

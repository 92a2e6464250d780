//! Error types of the protocol and of the queue.

use crate::key::Key;
use thiserror::Error;

/// Why a byte string is not a valid `struct kerneld_msg`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Shorter than the fixed header.
    #[error("message truncated: {len} bytes, shorter than its header")]
    Truncated { len: usize },
    /// Longer than the receive buffer of `max` body bytes: cut on receipt
    /// (see [`Queue::with_body_max`](crate::Queue::with_body_max)).
    #[error("message longer than the receive buffer of {max} bytes")]
    Cut { max: usize },
    /// Text longer than allowed.
    #[error("message text of {len} bytes exceeds the limit of {max}")]
    TextTooLong { len: usize, max: usize },
    /// A NUL inside text to be sent.
    #[error("message text contains a NUL byte")]
    NulInText,
}

/// Errors of the queue transport and the client.
#[derive(Debug, Error)]
pub enum Error {
    /// No queue at the key: the daemon is not running.
    #[error("kerneld is not running (no message queue at key {key})")]
    NotRunning { key: Key },
    /// The queue exists but we may not use it.
    #[error("permission denied on the kerneld message queue at key {key}: root is needed")]
    PermissionDenied { key: Key },
    /// An existing queue is owned by someone else or writable by others.
    #[error(
        "refusing the message queue at key {key} (id {qid}): owner uid {uid}, mode {mode:03o}; \
         it must be owned by uid {want_uid} and not accessible to others. \
         Remove it with `ipcrm -q {qid}` if it is stale or hostile"
    )]
    Squatted {
        key: Key,
        qid: i32,
        uid: u32,
        mode: u32,
        want_uid: u32,
    },
    /// A foreign queue came back at the key after each of `attempts`
    /// removals ([`Queue::claim`](crate::Queue::claim)): a process is
    /// recreating it in a loop.
    #[error(
        "the message queue at key {key} was taken again (last by uid {uid}, id {qid}) each of the \
         {attempts} times it was removed: a process is recreating it in a loop. Find it (`ipcs -q -c` \
         shows the owner; `ps -u {uid}`), stop it, then start kerneld again"
    )]
    Retaken {
        key: Key,
        attempts: u32,
        uid: u32,
        qid: i32,
    },
    /// No live kerneld takes the request on the queue at `key`: the queue
    /// was left behind by a kerneld that died.  `sent`: the request had
    /// been sent and was taken back, so nothing will perform it.
    #[error("no live kerneld serves the message queue at key {key} (left behind by a kerneld that died)")]
    NotServed { key: Key, sent: bool },
    /// The queue was removed while we used it.
    #[error("the kerneld message queue was removed (kerneld stopped)")]
    Removed,
    /// A blocking call was interrupted by a signal (`EINTR`).
    #[error("interrupted by a signal")]
    Interrupted,
    /// A reply id a client cannot wait on: replies are received by exact
    /// type, and types up to 255 are requests the daemon itself receives.
    #[error("reply id {0} is unusable: it must be above 255")]
    InvalidReplyId(i64),
    /// No reply within the timeout.
    #[error("no reply from kerneld within {0:.1?}")]
    Timeout(std::time::Duration),
    /// A message that does not decode.
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    /// Any other system call failure.
    #[error("{call} failed: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn sys(call: &'static str) -> Error {
        Error::Sys {
            call,
            source: std::io::Error::last_os_error(),
        }
    }
}

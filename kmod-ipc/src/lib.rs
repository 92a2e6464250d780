//! The kerneld wire protocol and its SysV message queue transport.
//!
//! In Linux 1.3.57 to 2.1.89 the kernel asked a user-space daemon, kerneld,
//! to load and unload modules.  Both sides talked over one SysV message queue
//! using `struct kerneld_msg`.  This crate speaks that protocol byte for byte,
//! laid out for today's x86_64 (where C `long` is 8 bytes), so that old
//! clients, the kernel shim and the tools of this workspace understand each
//! other.
//!
//! # The message
//!
//! A SysV message is a `long mtype` followed by `msgsz` bytes of body.  For
//! kerneld the whole buffer is:
//!
//! ```text
//! old header                         new header (NEW_KERNELD_PROTOCOL)
//! offset size field                  offset size field
//!      0    8 long  mtype                 0    8 long  mtype
//!      8    8 long  id                    8    8 long  id
//!     16    n char  text[]               16    2 short version (= 2)
//!                                        18    2 short pid
//!                                        20    n char  text[]
//! ```
//!
//! `msgsz` (what `msgsnd` is given) counts everything after `mtype`: 8 for
//! `id`, 4 more for `version`/`pid` in the new format, then the text.  A
//! received message is read as *new* when its body is at least 12 bytes
//! long and the `version` field is 2, else as *old*, exactly as the 1996
//! daemon decided.  A reply mirrors the format of its request.
//!
//! The `pid` field is a C `short`: today's pids (up to 4194304) do not fit,
//! so it carries the pid truncated to 16 bits.  Programs in this workspace
//! keep the full pid wherever they know it (logs, status, JSON).
//!
//! # Types, ids and replies
//!
//! `mtype` is the request type ([`MsgType`]): 1 system, 2 request module,
//! 3 release module, 4 delayed release, 5 cancel release, 6 request route,
//! 7 blanker, 8 pnp, 255 status/control, 256 arp.  The daemon receives with
//! type filter `-255` (the lowest type not above 255), so messages of type
//! 256 and above, including all replies, never reach it.
//!
//! A request whose `id` is 0 wants no answer.  Otherwise the answer is a
//! message whose `mtype` is the request's `id` and whose `id` field carries
//! the status (0 success); its text may carry output.  Kernel-style ids
//! start at [`KERNELD_MINSEQ`] (0x7fff0000); operator tools use
//! [`TOOL_ID_BASE`] + their pid (1024 + pid), as kdstat and kdsend did.
//! An id from 1 to 255 would make a reply the daemon itself receives; the
//! daemon refuses such requests.
//!
//! A reply too long for one message (the kernel's `msgmax`, 8192 bytes by
//! default) is sent as several messages on the same reply id: every part
//! but the last has status [`REPLY_CONTINUES`]; [`Client`] joins them.
//!
//! # Text
//!
//! The text is the bytes after the header up to the first NUL, or up to
//! the end of the body when there is none.  The 1995 senders put no NUL
//! on the wire: the Linux 2.0 kernel sent `strlen(name)` bytes, kdsend
//! `KDHDR + strlen(text)`, and kdstat's status request was the bare
//! header; the 1995 daemon terminated the text itself.  A sender may add
//! the NUL; it is not required.  Bytes after a NUL are not text (a 1995
//! daemon never read them).
//!
//! Everything this crate encodes, requests and replies alike, carries the
//! text followed by one NUL, which `msgsz` counts: a 1995 receiver, which
//! terminated what it got, and a C reader that takes the text as a string
//! both read it correctly.
//!
//! Text is at most [`DEFAULT_TEXT_MAX`] (1024) bytes by default, as in
//! 1995, and never more than the kernel's `msgmax` allows.  Module names
//! are bytes, not necessarily UTF-8.  Decoding never panics: any byte
//! string yields a [`Message`] or a [`DecodeError`]; only a body shorter
//! than the old header ([`DecodeError::Truncated`]) or text over the limit
//! ([`DecodeError::TextTooLong`]) is malformed.
//!
//! # The queue
//!
//! The queue is found by a key ([`Key`]): default `0x6b65726e` ("kern"),
//! overridden by the `KERNELD_KEY` environment variable or a `--key`
//! option.  Only the daemon creates it ([`Queue::create`], mode 0600, owner
//! checked); clients only open it ([`Queue::open`]), and a missing queue is
//! reported as [`Error::NotRunning`].  [`Client`] wraps the usual
//! request/reply exchange with a timeout.

mod client;
pub mod conf;
mod error;
pub mod escape;
pub mod files;
pub mod instances;
mod key;
mod localtime;
mod msg;
pub mod origin;
mod queue;
mod timer;
/// The wire format's constants and byte-slice functions, `core` only:
/// the kernel module of kernel/module/ `include!`s this file.
pub mod wire {
    include!("wire.rs");
}

pub use client::{Client, Reply, WATCH_PERIOD};
pub use error::{DecodeError, Error};
pub use key::{Key, DEFAULT_KEY, KEY_ENV};
pub use localtime::{local_now, local_time};
pub use msg::{
    encode_into, Header, Message, MessageView, MsgType, DEFAULT_TEXT_MAX, HEADER_NEW_LEN,
    HEADER_OLD_LEN, KERNELD_MINSEQ, MAX_DAEMON_TYPE, NEW_PROTOCOL_VERSION, REPLY_CONTINUES,
    TOOL_ID_BASE,
};
pub use queue::{
    body_id, msgmax, Claimed, Foreign, How, Queue, QueueStat, Swept, TypeFilter, CLAIM_ATTEMPTS,
};
pub use timer::{install_interrupt_handler, interrupt_signal, interrupt_thread, Alarm};

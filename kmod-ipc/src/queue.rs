//! The SysV message queue, over libc `msgget/msgsnd/msgrcv/msgctl`.

use crate::error::{DecodeError, Error};
use crate::key::Key;
use crate::msg::Message;
use std::io;

mod claim;
mod sweep;
pub(crate) use claim::pid_and_comm;
pub use claim::{Claimed, Foreign, How, CLAIM_ATTEMPTS};
pub use sweep::{body_id, Swept};

// The wire format writes `mtype` and `id` as i64 where C has `long`: the
// two agree only where `long` is 8 bytes (x86_64 and other LP64 targets).
const _: () = assert!(std::mem::size_of::<libc::c_long>() == 8);

/// Which messages a receive takes (`msgtyp` of `msgrcv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFilter {
    /// The first message of any type (0).
    Any,
    /// The first message of exactly this type (n > 0; the kernel reads
    /// n <= 0 as `Any` or `UpTo`, so callers must not pass it).
    Exactly(i64),
    /// The message with the lowest type not above n (-n, n > 0); the
    /// daemon uses `UpTo(255)`.
    UpTo(i64),
}

impl TypeFilter {
    fn msgtyp(self) -> libc::c_long {
        match self {
            TypeFilter::Any => 0,
            TypeFilter::Exactly(n) => n as libc::c_long,
            // saturating: UpTo(i64::MIN) must not panic on overflow.
            TypeFilter::UpTo(n) => n.saturating_neg() as libc::c_long,
        }
    }
}

/// Figures from `msgctl(IPC_STAT)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    /// Messages waiting.
    pub messages: u64,
    /// Bytes waiting.
    pub bytes: u64,
    /// Capacity in bytes (`msg_qbytes`).
    pub max_bytes: u64,
    /// Pid of the last `msgsnd`.
    pub last_sender: i32,
    /// Pid of the last `msgrcv`.
    pub last_receiver: i32,
    /// When the last `msgsnd` was, in seconds since the epoch (0: never).
    /// No message in the queue is younger.
    pub last_send_time: i64,
    /// Owner uid.
    pub uid: u32,
    /// Creator uid.
    pub cuid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// The kernel's largest message body (`/proc/sys/kernel/msgmax`, 8192 if
/// unreadable).
pub fn msgmax() -> usize {
    // One read into a small buffer: every client opens a queue, and
    // fs::read_to_string's size query and probing cost more than the read.
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/proc/sys/kernel/msgmax")
        .and_then(|mut f| f.read(&mut buf))
        .ok()
        .and_then(|n| std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok())
        .unwrap_or(8192)
}

/// An open kerneld message queue.
#[derive(Debug, Clone)]
pub struct Queue {
    qid: i32,
    key: Key,
    body_max: usize,
}

impl Queue {
    /// Open the existing queue at `key`, as every client does.  No queue is
    /// [`Error::NotRunning`]; no permission is [`Error::PermissionDenied`].
    pub fn open(key: Key) -> Result<Queue, Error> {
        // SAFETY: msgget has no memory arguments.
        let qid = unsafe { libc::msgget(key.0, 0) };
        if qid < 0 {
            return Err(match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOENT) => Error::NotRunning { key },
                Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { key },
                _ => Error::sys("msgget"),
            });
        }
        Ok(Queue {
            qid,
            key,
            body_max: msgmax(),
        })
    }

    /// Create the queue at `key` with mode 0600, or
    /// take over an existing one if it is safe: owned and created by our
    /// effective uid, with no permission bits for group or others.  A queue
    /// left by a killed daemon is reused, so requests waiting in it are
    /// served.  Anything else is [`Error::Squatted`]: whoever owns the queue
    /// could read the kernel's requests and answer for the daemon.  The
    /// daemon itself uses [`Queue::claim`], which removes such a queue.
    pub fn create(key: Key) -> Result<Queue, Error> {
        // SAFETY: msgget has no memory arguments.
        let qid = unsafe { libc::msgget(key.0, libc::IPC_CREAT | 0o600) };
        if qid < 0 {
            return Err(match io::Error::last_os_error().raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { key },
                _ => Error::sys("msgget"),
            });
        }
        let q = Queue {
            qid,
            key,
            body_max: msgmax(),
        };
        let st = q.stat()?;
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if st.uid != euid || st.cuid != euid || st.mode & 0o077 != 0 {
            return Err(Error::Squatted {
                key,
                qid,
                uid: st.uid,
                mode: st.mode & 0o777,
                want_uid: euid,
            });
        }
        Ok(q)
    }

    /// The queue id (`msqid`).
    pub fn id(&self) -> i32 {
        self.qid
    }

    /// The key it was found by.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The largest body this queue takes (the kernel's msgmax).
    pub fn body_max(&self) -> usize {
        self.body_max
    }

    /// Use a receive buffer (and send limit) smaller than msgmax, as a
    /// reader with a fixed buffer has: longer messages are cut on receipt.
    /// Never raised above msgmax, never below one byte.
    pub fn with_body_max(mut self, body_max: usize) -> Queue {
        self.body_max = body_max.clamp(1, self.body_max.max(1));
        self
    }

    /// The largest text that fits in one message with the given header.
    pub fn text_max(&self, header: crate::msg::Header) -> usize {
        self.body_max.saturating_sub(header.len() + 1)
    }

    /// Send a message.  `text_max` bounds its text; `nowait` fails with
    /// `EAGAIN` instead of blocking on a full queue.
    pub fn send(&self, msg: &Message, text_max: usize, nowait: bool) -> Result<(), Error> {
        let text_max = text_max.min(self.text_max(msg.header));
        let buf = msg.encode(text_max)?;
        self.send_buf(&buf, nowait, true)
    }

    /// Like [`Queue::send`] (blocking), but a signal ends the wait on a full
    /// queue with [`Error::Interrupted`], so a client's timeout covers it.
    pub(crate) fn send_interruptible(&self, msg: &Message, text_max: usize) -> Result<(), Error> {
        let text_max = text_max.min(self.text_max(msg.header));
        let buf = msg.encode(text_max)?;
        self.send_buf(&buf, false, false)
    }

    /// Send raw bytes as the body of a message of type `mtype`, unchecked:
    /// for tests and fuzzers that must put malformed messages on the queue.
    pub fn send_raw(&self, mtype: i64, body: &[u8], nowait: bool) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(8 + body.len());
        buf.extend_from_slice(&mtype.to_ne_bytes());
        buf.extend_from_slice(body);
        self.send_buf(&buf, nowait, true)
    }

    /// Send a message already encoded whole (`mtype` first, as
    /// [`crate::msg::encode_into`] writes it), for a sender that reuses
    /// its buffer.  A body longer than [`Queue::body_max`] is refused.
    pub fn send_encoded(&self, buf: &[u8], nowait: bool) -> Result<(), Error> {
        if buf.len() < 8 + crate::msg::HEADER_OLD_LEN {
            return Err(DecodeError::Truncated { len: buf.len() }.into());
        }
        if buf.len() - 8 > self.body_max {
            return Err(DecodeError::TextTooLong {
                len: buf.len() - 8,
                max: self.body_max,
            }
            .into());
        }
        self.send_buf(buf, nowait, true)
    }

    fn send_buf(&self, buf: &[u8], nowait: bool, retry_eintr: bool) -> Result<(), Error> {
        let flags = if nowait { libc::IPC_NOWAIT } else { 0 };
        loop {
            // SAFETY: buf holds mtype (8 bytes) and buf.len() - 8 body bytes.
            let r = unsafe {
                libc::msgsnd(
                    self.qid,
                    buf.as_ptr() as *const libc::c_void,
                    buf.len() - 8,
                    flags,
                )
            };
            if r == 0 {
                return Ok(());
            }
            // Capture errno before is_removed() makes another system call.
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) if retry_eintr => continue,
                Some(libc::EINTR) => return Err(Error::Interrupted),
                // EIDRM: removed while we waited; EINVAL: already gone when
                // we called (but also a bad mtype or size, hence the check).
                Some(libc::EIDRM) => return Err(Error::Removed),
                Some(libc::EINVAL) if self.is_removed() => return Err(Error::Removed),
                _ => {
                    return Err(Error::Sys {
                        call: "msgsnd",
                        source: err,
                    })
                }
            }
        }
    }

    /// Receive one message body.  Returns `Ok(None)` when `nowait` and no
    /// message matches, `Err(Error::Interrupted)` on `EINTR`.  A body
    /// longer than [`Queue::body_max`] is cut (`MSG_NOERROR`) rather than
    /// left to jam the queue, and comes back with `body_max + 1` bytes, so
    /// that a caller can tell it from one that fit ([`Queue::recv`] reports
    /// it as [`DecodeError::Cut`]).
    pub fn recv_raw(
        &self,
        filter: TypeFilter,
        nowait: bool,
    ) -> Result<Option<(i64, Vec<u8>)>, Error> {
        // Not zeroed: msgrcv writes what is kept, and zeroing msgmax bytes
        // (8 KiB) cost more than the rest of a receive.
        let mut buf: Vec<u8> = Vec::new();
        let Some(mtype) = self.recv_buf(filter, nowait, &mut buf)? else {
            return Ok(None);
        };
        buf.drain(..8);
        Ok(Some((mtype, buf)))
    }

    /// Like [`Queue::recv_raw`], into `buf`, which a receiver keeps from
    /// one message to the next: once it has grown to `8 + body_max + 1`
    /// bytes, receiving allocates nothing.  Returns the type and the body,
    /// borrowed from `buf` (cut bodies have `body_max + 1` bytes, as with
    /// `recv_raw`).
    pub fn recv_into<'b>(
        &self,
        filter: TypeFilter,
        nowait: bool,
        buf: &'b mut Vec<u8>,
    ) -> Result<Option<(i64, &'b [u8])>, Error> {
        Ok(self
            .recv_buf(filter, nowait, buf)?
            .map(|mtype| (mtype, &buf[8..])))
    }

    /// msgrcv into `buf` (mtype, then the body); its length is set to what
    /// was received.
    fn recv_buf(
        &self,
        filter: TypeFilter,
        nowait: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Option<i64>, Error> {
        // One byte more than body_max tells a cut body from one that fits
        // (no message exceeds msgmax, so at msgmax the byte stays unused).
        let size = self.body_max + 1;
        buf.clear();
        buf.reserve(8 + size);
        let mut flags = libc::MSG_NOERROR;
        if nowait {
            flags |= libc::IPC_NOWAIT;
        }
        // SAFETY: buf has room (capacity) for mtype and `size` body bytes.
        let n = unsafe {
            libc::msgrcv(
                self.qid,
                buf.as_mut_ptr() as *mut libc::c_void,
                size,
                filter.msgtyp(),
                flags,
            )
        };
        if n < 0 {
            // Capture errno before is_removed() makes another system call.
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOMSG) => Ok(None),
                Some(libc::EINTR) => Err(Error::Interrupted),
                Some(libc::EIDRM) => Err(Error::Removed),
                Some(libc::EINVAL) if self.is_removed() => Err(Error::Removed),
                _ => Err(Error::Sys {
                    call: "msgrcv",
                    source: err,
                }),
            };
        }
        // SAFETY: msgrcv wrote mtype (8 bytes) and n <= size body bytes.
        unsafe { buf.set_len(8 + n as usize) };
        Ok(Some(i64::from_ne_bytes(
            buf[..8].try_into().expect("8 bytes"),
        )))
    }

    /// Receive and decode one message.  The outer result is the transport;
    /// the inner one tells whether the body was a valid message.
    #[allow(clippy::type_complexity)]
    pub fn recv(
        &self,
        filter: TypeFilter,
        text_max: usize,
        nowait: bool,
    ) -> Result<Option<(i64, Result<Message, DecodeError>)>, Error> {
        Ok(self.recv_raw(filter, nowait)?.map(|(mtype, body)| {
            let decoded = if body.len() > self.body_max {
                Err(DecodeError::Cut { max: self.body_max })
            } else {
                Message::decode_body(mtype, &body, text_max)
            };
            (mtype, decoded)
        }))
    }

    /// Remove the queue (`IPC_RMID`); blocked receivers get `EIDRM`.
    pub fn remove(&self) -> Result<(), Error> {
        // SAFETY: IPC_RMID takes no buffer.
        let r = unsafe { libc::msgctl(self.qid, libc::IPC_RMID, std::ptr::null_mut()) };
        if r != 0 {
            return Err(Error::sys("msgctl(IPC_RMID)"));
        }
        Ok(())
    }

    fn ipc_stat(&self) -> Result<libc::msqid_ds, Error> {
        // SAFETY: msqid_ds is plain data filled by IPC_STAT.
        unsafe {
            let mut ds: libc::msqid_ds = std::mem::zeroed();
            if libc::msgctl(self.qid, libc::IPC_STAT, &mut ds) != 0 {
                return Err(match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EIDRM) | Some(libc::EINVAL) => Error::Removed,
                    Some(libc::EACCES) => Error::PermissionDenied { key: self.key },
                    _ => Error::sys("msgctl(IPC_STAT)"),
                });
            }
            Ok(ds)
        }
    }

    /// Whether the queue id no longer names a queue.  Only that: a failing
    /// IPC_STAT for lack of permission means the queue is still there.
    fn is_removed(&self) -> bool {
        matches!(self.ipc_stat(), Err(Error::Removed))
    }

    /// Figures of the queue; [`Error::Removed`] if it is gone.
    pub fn stat(&self) -> Result<QueueStat, Error> {
        let ds = self.ipc_stat()?;
        Ok(QueueStat {
            messages: ds.msg_qnum,
            bytes: ds.__msg_cbytes,
            max_bytes: ds.msg_qbytes,
            last_sender: ds.msg_lspid,
            last_receiver: ds.msg_lrpid,
            last_send_time: ds.msg_stime,
            uid: ds.msg_perm.uid,
            cuid: ds.msg_perm.cuid,
            mode: ds.msg_perm.mode as u32,
        })
    }

    /// Raise (or lower) the capacity in bytes; raising above the system's
    /// msgmnb needs CAP_SYS_RESOURCE.  The 16 KiB default holds only a few
    /// hundred requests, too few for a storm of concurrent callers.
    pub fn set_max_bytes(&self, bytes: u64) -> Result<(), Error> {
        let mut ds = self.ipc_stat()?;
        ds.msg_qbytes = bytes as _;
        // SAFETY: ds came from IPC_STAT and is passed back to IPC_SET.
        if unsafe { libc::msgctl(self.qid, libc::IPC_SET, &mut ds) } != 0 {
            return Err(Error::sys("msgctl(IPC_SET)"));
        }
        Ok(())
    }

    /// Change owner and mode (`IPC_SET`): for tests that build a squatted
    /// queue, and for nothing else.
    pub fn set_owner_mode(&self, uid: u32, mode: u32) -> Result<(), Error> {
        let mut ds = self.ipc_stat()?;
        ds.msg_perm.uid = uid;
        ds.msg_perm.mode = mode as _;
        // SAFETY: as in set_max_bytes.
        if unsafe { libc::msgctl(self.qid, libc::IPC_SET, &mut ds) } != 0 {
            return Err(Error::sys("msgctl(IPC_SET)"));
        }
        Ok(())
    }

    /// Create a queue with any mode at a key, bypassing the checks of
    /// [`Queue::create`]: for tests only.
    pub fn create_unchecked(key: Key, mode: i32) -> Result<Queue, Error> {
        // SAFETY: msgget has no memory arguments.
        let qid = unsafe { libc::msgget(key.0, libc::IPC_CREAT | mode) };
        if qid < 0 {
            return Err(Error::sys("msgget"));
        }
        Ok(Queue {
            qid,
            key,
            body_max: msgmax(),
        })
    }
}

//! The daemon's claim on its key: create the queue exclusively, take over
//! a queue it left itself, and remove a foreign one.
//!
//! Any local user can create a queue at kerneld's key before kerneld does
//! (`msgget(0x6b65726e, IPC_CREAT | 0600)` as nobody).  A daemon that then
//! refused to start would leave the shim falling back to the real modprobe,
//! without policy, audit or rate limit; so [`Queue::claim`] removes such a
//! queue (root may), reports who owned it, and creates its own with
//! `IPC_CREAT | IPC_EXCL`, so that it never serves a queue someone else
//! made in the window between the removal and the creation.  A squatter
//! looping on `msgget` can win that window; the claim tries
//! [`CLAIM_ATTEMPTS`] times before it gives up with [`Error::Retaken`].

use super::{msgmax, Queue};
use crate::error::Error;
use crate::key::Key;
use std::io;

/// How many times [`Queue::claim`] removes a foreign queue and tries to
/// create its own before giving up.
pub const CLAIM_ATTEMPTS: u32 = 16;

/// A queue found at the key that the claimant did not make, as `IPC_STAT`
/// showed it just before it was removed.  The kernel keeps no creator pid
/// for a message queue: the pids are those of the last `msgsnd` and
/// `msgrcv` (0 if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub qid: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Messages that were waiting in it (discarded with it).
    pub messages: u64,
    /// Pid of the last `msgsnd` (0: none).
    pub last_sender: i32,
    /// Pid of the last `msgrcv` (0: none).
    pub last_receiver: i32,
    /// When it was created or last changed (`msg_ctime`, seconds since the
    /// epoch).
    pub changed: i64,
}

/// `pid` with its command name if it still runs (`1234 (sh)`), or `none`.
pub(crate) fn pid_and_comm(pid: i32) -> String {
    if pid <= 0 {
        return "none".into();
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(c) => format!("{pid} ({})", c.trim_end()),
        Err(_) => format!("{pid} (gone)"),
    }
}

/// `12 s ago` for a time in seconds since the epoch.
fn ago(when: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match now.checked_sub(when) {
        Some(s) if s >= 0 => format!("{s} s ago"),
        _ => format!("at {when} (seconds since the epoch)"),
    }
}

impl Foreign {
    fn from_ds(qid: i32, ds: &libc::msqid_ds) -> Foreign {
        Foreign {
            qid,
            uid: ds.msg_perm.uid,
            gid: ds.msg_perm.gid,
            cuid: ds.msg_perm.cuid,
            cgid: ds.msg_perm.cgid,
            mode: u32::from(ds.msg_perm.mode) & 0o777,
            messages: ds.msg_qnum,
            last_sender: ds.msg_lspid,
            last_receiver: ds.msg_lrpid,
            changed: ds.msg_ctime,
        }
    }

    /// One line for the log: owner, creator, mode, contents and the pids
    /// the kernel recorded.
    pub fn describe(&self) -> String {
        format!(
            "id {}: owner uid {} gid {}, creator uid {} gid {}, mode {:03o}, {} message{} waiting, \
             last msgsnd by pid {}, last msgrcv by pid {}, created or last changed {} (the kernel \
             keeps no creator pid)",
            self.qid,
            self.uid,
            self.gid,
            self.cuid,
            self.cgid,
            self.mode,
            self.messages,
            if self.messages == 1 { "" } else { "s" },
            pid_and_comm(self.last_sender),
            pid_and_comm(self.last_receiver),
            ago(self.changed)
        )
    }
}

/// How the claimant came to hold the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Created afresh (`IPC_CREAT | IPC_EXCL`).
    Created,
    /// Its own queue was there already (left by a daemon that was killed,
    /// or served by another instance on other message types), with this
    /// many messages waiting.
    Reused { messages: u64 },
}

/// The result of [`Queue::claim`].
#[derive(Debug)]
pub struct Claimed {
    pub queue: Queue,
    pub how: How,
    /// Foreign queues removed on the way, oldest first.
    pub removed: Vec<Foreign>,
}

/// Whether a queue is the claimant's own: owned and created by `euid`,
/// nothing for group or others.
fn own(ds: &libc::msqid_ds, euid: u32) -> bool {
    ds.msg_perm.uid == euid && ds.msg_perm.cuid == euid && ds.msg_perm.mode & 0o077 == 0
}

fn errno() -> Option<i32> {
    io::Error::last_os_error().raw_os_error()
}

/// `IPC_RMID` on `qid`; the errno if it failed.
fn remove(qid: i32) -> Result<(), Option<i32>> {
    // SAFETY: IPC_RMID takes no buffer.
    if unsafe { libc::msgctl(qid, libc::IPC_RMID, std::ptr::null_mut()) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// How many threads race a looping squatter for the key.
const RACERS: usize = 4;

/// The CPUs we may run on, except the one this thread runs on now.
fn other_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, sched_getcpu, CpuSet};
    let here = sched_getcpu().ok();
    let Ok(mine) = sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| Some(c) != here && mine.is_set(c).unwrap_or(false))
        .collect()
}

/// Remove `qid` while other threads keep trying to create our queue at
/// `key`.  A squatter looping on msgget is already waiting for the kernel's
/// lock of the queue ids when the removal releases it, so a creation begun
/// only after the removal returned would come second every time.  Racers
/// that are running at that moment get their chance: they are kept off
/// the CPU of the removing thread, so that they share the others with the
/// squatter.  The result of the removal, and the id of our queue if a
/// racer created it.
fn remove_racing(key: Key, qid: i32) -> (Result<(), Option<i32>>, Option<i32>) {
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    let stop = AtomicBool::new(false);
    let won = AtomicI32::new(-1);
    let cpus = other_cpus();
    let removed = std::thread::scope(|s| {
        for i in 0..RACERS {
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let (stop, won) = (&stop, &won);
            s.spawn(move || {
                if let Some(cpu) = cpu {
                    let mut set = nix::sched::CpuSet::new();
                    if set.set(cpu).is_ok() {
                        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                    }
                }
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: msgget has no memory arguments.
                    let q =
                        unsafe { libc::msgget(key.0, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
                    if q >= 0 {
                        won.store(q, Ordering::SeqCst);
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    if errno() != Some(libc::EEXIST) {
                        return;
                    }
                }
            });
        }
        let removed = remove(qid);
        // Time for the racers' next attempts once the key is free.
        std::thread::sleep(std::time::Duration::from_millis(2));
        stop.store(true, Ordering::Relaxed);
        removed
    });
    let q = won.load(Ordering::SeqCst);
    (removed, (q >= 0).then_some(q))
}

impl Queue {
    /// The daemon's way to get its queue: create it (mode 0600) with
    /// `IPC_CREAT | IPC_EXCL`; take over the queue at the key if it is our
    /// own (owner and creator our effective uid, no permission bits for
    /// group or others); otherwise remove that foreign queue and try again,
    /// up to [`CLAIM_ATTEMPTS`] times.
    ///
    /// Errors: [`Error::Squatted`] when a foreign queue cannot be removed
    /// (we are not root), [`Error::Retaken`] when one came back after each
    /// removal, [`Error::PermissionDenied`] when we may not even look.
    pub fn claim(key: Key) -> Result<Claimed, Error> {
        Queue::claim_inner(key, CLAIM_ATTEMPTS, true, &mut || {})
    }

    /// [`Queue::claim`] with `between` run after each removal, before the
    /// next creation (where a squatter would race us): for tests.
    #[doc(hidden)]
    pub fn claim_with(
        key: Key,
        attempts: u32,
        between: &mut dyn FnMut(),
    ) -> Result<Claimed, Error> {
        Queue::claim_inner(key, attempts, false, between)
    }

    fn claim_inner(
        key: Key,
        attempts: u32,
        race: bool,
        between: &mut dyn FnMut(),
    ) -> Result<Claimed, Error> {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        let mut removed: Vec<Foreign> = Vec::new();
        let queue = |qid| Queue {
            qid,
            key,
            body_max: msgmax(),
        };
        for _ in 0..attempts.max(1) {
            // SAFETY: msgget has no memory arguments.
            let qid = unsafe { libc::msgget(key.0, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
            if qid >= 0 {
                return Ok(Claimed {
                    queue: queue(qid),
                    how: How::Created,
                    removed,
                });
            }
            match errno() {
                Some(libc::EEXIST) => {}
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    return Err(Error::PermissionDenied { key })
                }
                _ => return Err(Error::sys("msgget(IPC_CREAT|IPC_EXCL)")),
            }
            // Someone's queue is there: whose?
            // SAFETY: as above.
            let qid = unsafe { libc::msgget(key.0, 0) };
            if qid < 0 {
                match errno() {
                    // Gone meanwhile: create it again.
                    Some(libc::ENOENT) => continue,
                    Some(libc::EACCES) | Some(libc::EPERM) => {
                        return Err(Error::PermissionDenied { key })
                    }
                    _ => return Err(Error::sys("msgget")),
                }
            }
            let q = queue(qid);
            let ds = match q.ipc_stat() {
                Ok(ds) => ds,
                Err(Error::Removed) => continue,
                Err(e) => return Err(e),
            };
            if own(&ds, euid) {
                return Ok(Claimed {
                    queue: q,
                    how: How::Reused {
                        messages: ds.msg_qnum,
                    },
                    removed,
                });
            }
            let foreign = Foreign::from_ds(qid, &ds);
            let (rmid, ours) = if race {
                remove_racing(key, qid)
            } else {
                (remove(qid), None)
            };
            if let Err(errno) = rmid {
                match errno {
                    Some(libc::EINVAL) | Some(libc::EIDRM) => continue,
                    Some(libc::EPERM) | Some(libc::EACCES) => {
                        return Err(Error::Squatted {
                            key,
                            qid,
                            uid: foreign.uid,
                            mode: foreign.mode,
                            want_uid: euid,
                        })
                    }
                    _ => {
                        return Err(Error::Sys {
                            call: "msgctl(IPC_RMID)",
                            source: io::Error::from_raw_os_error(errno.unwrap_or(libc::EIO)),
                        })
                    }
                }
            }
            removed.push(foreign);
            if let Some(qid) = ours {
                return Ok(Claimed {
                    queue: queue(qid),
                    how: How::Created,
                    removed,
                });
            }
            between();
        }
        let last = removed.last().cloned();
        Err(Error::Retaken {
            key,
            attempts: removed.len() as u32,
            uid: last.as_ref().map_or(0, |f| f.uid),
            qid: last.as_ref().map_or(-1, |f| f.qid),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn euid() -> u32 {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    }

    /// A key of this test process, never the daemon's.
    fn key(n: i32) -> Key {
        Key(0x4c00_0000 | ((std::process::id() as i32 & 0xfff) << 8) | n)
    }

    struct Gone(Key);
    impl Drop for Gone {
        fn drop(&mut self) {
            if let Ok(q) = Queue::open(self.0) {
                let _ = q.remove();
            }
        }
    }

    #[test]
    fn a_free_key_is_created_and_our_own_queue_is_reused() {
        let k = key(1);
        let _g = Gone(k);
        let c = Queue::claim(k).unwrap();
        assert_eq!(c.how, How::Created);
        assert!(c.removed.is_empty());
        let st = c.queue.stat().unwrap();
        assert_eq!((st.uid, st.cuid, st.mode & 0o777), (euid(), euid(), 0o600));
        c.queue.send_raw(2, b"\0\0\0\0\0\0\0\0ppp", true).unwrap();
        let again = Queue::claim(k).unwrap();
        assert_eq!(again.how, How::Reused { messages: 1 });
        assert_eq!(again.queue.id(), c.queue.id());
    }

    #[test]
    fn a_foreign_queue_is_removed_and_reported() {
        if euid() != 0 {
            return; // Only root may remove a stranger's queue.
        }
        let k = key(2);
        let _g = Gone(k);
        let squat = Queue::create_unchecked(k, 0o666).unwrap();
        squat.send_raw(2, b"\0\0\0\0\0\0\0\0ppp", true).unwrap();
        squat.set_owner_mode(65534, 0o622).unwrap();
        let c = Queue::claim(k).unwrap();
        assert_eq!(c.how, How::Created);
        assert_ne!(c.queue.id(), squat.id());
        assert_eq!(c.removed.len(), 1);
        let f = &c.removed[0];
        assert_eq!(
            (f.qid, f.uid, f.mode, f.messages),
            (squat.id(), 65534, 0o622, 1)
        );
        assert_eq!(f.last_sender, std::process::id() as i32);
        let line = f.describe();
        assert!(line.contains("owner uid 65534"), "{line}");
        assert!(line.contains("mode 622"), "{line}");
        assert!(
            line.contains(&format!("last msgsnd by pid {}", std::process::id())),
            "{line}"
        );
        assert!(matches!(squat.stat(), Err(Error::Removed)));
        assert_eq!(
            c.queue.stat().unwrap().messages,
            0,
            "the squatter's messages are gone"
        );
    }

    #[test]
    fn a_squatter_that_keeps_winning_the_race_is_reported() {
        if euid() != 0 {
            return;
        }
        let k = key(3);
        let _g = Gone(k);
        let mut made = 0;
        let mut squat = || {
            made += 1;
            let q = Queue::create_unchecked(k, 0o600).unwrap();
            q.set_owner_mode(65534, 0o600).unwrap();
        };
        squat();
        let r = Queue::claim_with(k, 4, &mut squat);
        match r {
            Err(
                e @ Error::Retaken {
                    attempts: 4,
                    uid: 65534,
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(text.contains("4 times"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(made, 5);
        // A squatter that gives up after two wins loses the third round.
        let mut left = 2;
        let mut squat_twice = || {
            if left > 0 {
                left -= 1;
                let q = Queue::create_unchecked(k, 0o600).unwrap();
                q.set_owner_mode(65534, 0o600).unwrap();
            }
        };
        let c = Queue::claim_with(k, 4, &mut squat_twice).unwrap();
        assert_eq!(c.how, How::Created);
        assert_eq!(c.removed.len(), 3);
        assert_eq!(c.queue.stat().unwrap().uid, euid());
    }
}

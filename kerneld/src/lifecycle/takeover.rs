//! Taking over a queue left behind by a kerneld that died (SIGKILL, the
//! OOM killer, a stop timeout): what was waiting in it is sorted before
//! the first request is served.
//!
//! A request is served only if its sender may still be waiting for the
//! answer; a System V message carries no time of its own, but none is
//! younger than the queue's last `msgsnd`, which bounds every message's
//! age from below:
//!
//! - kerneld-modprobe's ids (0x80000000 + pid): while that pid still runs
//!   kerneld-modprobe; it takes its request back itself when it sees no
//!   live kerneld, so what is left is a helper's that was killed;
//! - the in-kernel sender's ids (0x7fff0000..0x7fffffff), and requests with
//!   the kernel's origin extension: if the last send is under 30 s old
//!   (the kernel's longest wait) and the requester, where named, still
//!   runs;
//! - operator tools' ids (1024 + pid): while that pid runs and the last
//!   send is under 5 s old (kdstat's and kdsend's default wait);
//! - any other id (id 0 and 1995-style senders), which tells nothing of
//!   its sender: if the last send is under 5 s old, as for the tools.
//!
//! Replies (types above 255) left by the dead instance are dropped unless
//! their waiter (a helper or tool pid, as above) still runs; they are
//! looked at only when no other live instance shares the queue, since
//! another instance's replies are none of this one's business.

use kmod_ipc::wire::{HELPER_ID_FIRST, KERNEL_ID_COUNT, KERNEL_ID_FIRST};
use kmod_ipc::MAX_DAEMON_TYPE;
use kmod_ipc::{body_id, origin::RequestOrigin, Queue, Swept, TypeFilter};

use kerneld::edge::waiter::{self, Waiter};

/// The in-kernel sender's longest wait for an answer.
const KERNEL_PATIENCE: i64 = 30;
/// The operator tools' default wait, and the rule for unknown senders.
const TOOL_PATIENCE: i64 = 5;

/// What the sweep did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) stale_requests: u64,
    pub(crate) stale_replies: u64,
    pub(crate) swept: Swept,
}

/// Sort what waits in `queue`: drop the requests of `filter` nobody waits
/// for, and, when `alone` (no other live instance on the key), the
/// replies nobody reads.  Called under the key's lock.
pub(crate) fn sweep(
    queue: &Queue,
    filter: TypeFilter,
    alone: bool,
) -> Result<Report, kmod_ipc::Error> {
    let st = queue.stat()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let age = now.saturating_sub(st.last_send_time).max(0);
    let mut report = Report::default();
    let mut keep = |mtype: i64, body: &[u8]| {
        let id = body_id(body).unwrap_or(0);
        if mtype > MAX_DAEMON_TYPE {
            let live = waiter::known_alive(id);
            if !live {
                report.stale_replies += 1;
            }
            return live;
        }
        if !serves(filter, mtype) {
            return true;
        }
        let live = request_awaited(id, body, age);
        if !live {
            report.stale_requests += 1;
        }
        live
    };
    let which = if alone { TypeFilter::Any } else { filter };
    report.swept = queue.sweep(which, &mut keep)?;
    Ok(report)
}

fn serves(filter: TypeFilter, mtype: i64) -> bool {
    match filter {
        TypeFilter::Any => true,
        TypeFilter::Exactly(n) => mtype == n,
        TypeFilter::UpTo(n) => mtype <= n,
    }
}

/// Whether the sender of a request with reply id `id` and `body` may still
/// be waiting, the last send on the queue being `age` seconds ago.
fn request_awaited(id: i64, body: &[u8], age: i64) -> bool {
    let waiter = Waiter::of(id);
    if let Waiter::Helper(_) = waiter {
        return waiter.runs() == Some(true);
    }
    let origin = RequestOrigin::from_body(body);
    if (KERNEL_ID_FIRST..HELPER_ID_FIRST).contains(&id) || origin.is_some() {
        return age < KERNEL_PATIENCE && origin.is_none_or(|o| waiter::runs(o.pid));
    }
    age < TOOL_PATIENCE && waiter.runs() != Some(false)
}

// The kernel's range ends where the helper's begins.
const _: () = assert!(KERNEL_ID_FIRST + KERNEL_ID_COUNT == HELPER_ID_FIRST);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_senders_follow_the_tools_patience() {
        assert!(request_awaited(0, &[0; 12], 0));
        assert!(!request_awaited(0, &[0; 12], TOOL_PATIENCE));
        // The kernel's ids wait longer, ...
        assert!(request_awaited(KERNEL_ID_FIRST, &[0; 12], TOOL_PATIENCE));
        assert!(!request_awaited(KERNEL_ID_FIRST, &[0; 12], KERNEL_PATIENCE));
        // ... the helper's as long as it runs (pid 0x7fffffff never does).
        assert!(!request_awaited(HELPER_ID_FIRST + 0x7fff_ffff, &[0; 12], 0));
        // A tool's id, as long as the tool runs.
        let me = kmod_ipc::TOOL_ID_BASE + i64::from(std::process::id());
        assert!(request_awaited(me, &[0; 12], 0));
        assert!(!request_awaited(me, &[0; 12], TOOL_PATIENCE));
    }
}

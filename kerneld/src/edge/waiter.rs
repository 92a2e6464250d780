//! Who waits on a reply id, and whether that process still runs: read
//! from the id alone, as the 1995 protocol gives nothing else.
//!
//! - kerneld-modprobe's ids (0x80000000 + pid): while that pid still runs
//!   kerneld-modprobe (a pid reused by another program waits for nothing);
//! - operator tools' ids (1024 + pid): while that pid runs;
//! - the in-kernel sender's ids and any other id tell nothing of their
//!   waiter.

use kmod_ipc::wire::{HELPER_ID_FIRST, KERNEL_ID_FIRST};
use kmod_ipc::TOOL_ID_BASE;

/// The waiter behind a reply id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// kerneld-modprobe, by pid.
    Helper(u32),
    /// kdstat, kdsend or another tool, by pid.
    Tool(u32),
    /// The kernel, a 1995-style sender, or anyone: nothing to check.
    Unknown,
}

impl Waiter {
    pub fn of(id: i64) -> Waiter {
        if let Some(pid) = id
            .checked_sub(HELPER_ID_FIRST)
            .and_then(|p| u32::try_from(p).ok())
        {
            return Waiter::Helper(pid);
        }
        if (TOOL_ID_BASE..KERNEL_ID_FIRST).contains(&id) {
            if let Ok(pid) = u32::try_from(id - TOOL_ID_BASE) {
                return Waiter::Tool(pid);
            }
        }
        Waiter::Unknown
    }

    /// Whether the waiter still runs: `None` when the id cannot tell.
    pub fn runs(self) -> Option<bool> {
        match self {
            Waiter::Helper(pid) => Some(is_helper(pid)),
            Waiter::Tool(pid) => Some(runs(pid)),
            Waiter::Unknown => None,
        }
    }
}

/// Whether the process waiting on reply id `id` is known to run.
pub fn known_alive(id: i64) -> bool {
    Waiter::of(id).runs() == Some(true)
}

pub fn runs(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` is a kerneld-modprobe (its command name, cut at 15
/// bytes).
fn is_helper(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_ascii_end() == &b"kerneld-modprobe"[..15])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges() {
        assert_eq!(Waiter::of(HELPER_ID_FIRST + 42), Waiter::Helper(42));
        assert_eq!(Waiter::of(KERNEL_ID_FIRST), Waiter::Unknown);
        assert_eq!(Waiter::of(1024 + 7), Waiter::Tool(7));
        assert_eq!(Waiter::of(255), Waiter::Unknown);
        assert_eq!(Waiter::of(0), Waiter::Unknown);
    }

    #[test]
    fn liveness() {
        // Pid 0x7fffffff never runs; this test's own pid does.
        assert_eq!(
            Waiter::of(HELPER_ID_FIRST + 0x7fff_ffff).runs(),
            Some(false)
        );
        assert!(known_alive(TOOL_ID_BASE + i64::from(std::process::id())));
        // Above the largest pid the kernel gives (4194304): gone.
        assert_eq!(Waiter::of(TOOL_ID_BASE + 4_194_304 + 5).runs(), Some(false));
        assert_eq!(Waiter::of(KERNEL_ID_FIRST).runs(), None);
    }
}

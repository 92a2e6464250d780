//! One event of the BPF program (kerneld/bpf/modload.bpf.c, `struct
//! event`), read from the ring buffer's bytes.  The layout is the C
//! struct's: keep the offsets here in step with it.

use std::fmt::Write;

/// Which hook saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// finit_module(2): a module file read (`kernel_read_file`).
    ReadFile,
    /// init_module(2): a module image from memory (`kernel_load_data`).
    LoadData,
    /// request_module(): the alias the kernel asked for.
    ModuleRequest,
}

/// Why the program decided as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    None,
    /// The file's hash has an allow verdict.
    Allowed,
    /// The file's hash has a deny verdict.
    Denied,
    /// No verdict for the hash (a file outside the tree, changed since,
    /// or no hash).
    Unknown,
    /// init_module(2): no file to judge.
    InitModule,
    /// init_module(2) by a thread whose finit_module(2) was just refused:
    /// the loader's fallback (libkmod up to kmod 30, busybox), the same
    /// load.
    Fallback,
}

/// A module load (or request) the kernel saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadEvent {
    pub(crate) hook: Hook,
    /// The kernel_read_file id (2 READING_MODULE, 7 READING_MODULE_COMPRESSED).
    pub(crate) id: u32,
    /// The calling process (thread group id) and thread.
    pub(crate) tgid: u32,
    pub(crate) pid: u32,
    /// The caller's cgroup v2 id (the cgroup directory's inode number).
    pub(crate) cgroup_id: u64,
    /// What the hook returned: 0, or -EPERM when refused.
    pub(crate) verdict: i32,
    /// bpf_ima_file_hash's return: the algorithm (4: SHA-256) or -errno;
    /// 0 when not tried.
    pub(crate) hash_rc: i32,
    pub(crate) reason: Reason,
    /// The program was in enforce mode.
    pub(crate) enforcing: bool,
    pub(crate) comm: String,
    /// The file's SHA-256, when hashed.
    pub(crate) sha256: Option<[u8; 32]>,
    /// The file's path (finit_module) or the alias asked for (request).
    pub(crate) name: String,
}

/// The size of `struct event`.
pub(crate) const SIZE: usize = 344;

const SHA256_ALGO: i32 = 4;
/// kernel_read_file_id's READING_MODULE (READING_MODULE_COMPRESSED is 7).
const READING_MODULE: u32 = 2;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl LoadEvent {
    /// Read one event; None if the bytes are not one (too short, unknown
    /// hook): a program and a daemon out of step.
    pub(crate) fn parse(b: &[u8]) -> Option<LoadEvent> {
        if b.len() < SIZE {
            return None;
        }
        let hook = match u32_at(b, 0) {
            1 => Hook::ReadFile,
            2 => Hook::LoadData,
            3 => Hook::ModuleRequest,
            _ => return None,
        };
        let reason = match u32_at(b, 32) {
            1 => Reason::Allowed,
            2 => Reason::Denied,
            3 => Reason::Unknown,
            4 => Reason::InitModule,
            5 => Reason::Fallback,
            _ => Reason::None,
        };
        let mut cg = [0u8; 8];
        cg.copy_from_slice(&b[16..24]);
        let hash_rc = u32_at(b, 28) as i32;
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&b[56..88]);
        Some(LoadEvent {
            hook,
            id: u32_at(b, 4),
            tgid: u32_at(b, 8),
            pid: u32_at(b, 12),
            cgroup_id: u64::from_ne_bytes(cg),
            verdict: u32_at(b, 24) as i32,
            hash_rc,
            reason,
            enforcing: u32_at(b, 36) != 0,
            comm: cstr(&b[40..56]),
            sha256: (hash_rc == SHA256_ALGO).then_some(sha),
            name: cstr(&b[88..SIZE]),
        })
    }

    pub(crate) fn refused(&self) -> bool {
        self.verdict != 0
    }

    /// The module's name from its file (`/lib/modules/.../dummy.ko.xz` →
    /// `dummy`), as the kernel will call it; None for init_module and
    /// requests.
    pub(crate) fn module(&self) -> Option<String> {
        (self.hook == Hook::ReadFile).then(|| super::verdicts::module_of_file(&self.name))?
    }

    /// The loader in words: `insmod (pid 412)`.
    pub(crate) fn caller(&self) -> String {
        format!("{} (pid {})", self.comm, self.tgid)
    }

    pub(crate) fn sha256_hex(&self) -> Option<String> {
        self.sha256.map(|s| hex(&s))
    }

    /// The log line.
    pub(crate) fn describe(&self) -> String {
        let mut s = String::new();
        match self.hook {
            Hook::ReadFile => {
                let _ = write!(
                    s,
                    "module load: finit_module of {}{} by {}, cgroup id {}",
                    kmod_ipc::escape::escape(&self.name),
                    // 7.x reads compressed files under an id of their own.
                    if self.id == READING_MODULE {
                        ""
                    } else {
                        " (compressed, decompressed by the kernel)"
                    },
                    kmod_ipc::escape::escape(&self.caller()),
                    self.cgroup_id
                );
                match self.sha256_hex() {
                    Some(h) => {
                        let _ = write!(s, ", sha256 {h}");
                    }
                    None => {
                        let _ = write!(s, ", not hashed ({})", self.hash_rc);
                    }
                }
            }
            Hook::LoadData => {
                let _ = write!(
                    s,
                    "module load: init_module (an image from memory, no file) by {}, cgroup id {}",
                    kmod_ipc::escape::escape(&self.caller()),
                    self.cgroup_id
                );
            }
            Hook::ModuleRequest => {
                let _ = write!(
                    s,
                    "module request: the kernel asks for {} on behalf of {}",
                    kmod_ipc::escape::escape(&self.name),
                    kmod_ipc::escape::escape(&self.caller())
                );
                return s;
            }
        }
        let why = match self.reason {
            Reason::Allowed => "its content has an allow verdict",
            Reason::Denied => "its content has a deny verdict",
            Reason::Unknown => "no verdict for its content",
            Reason::InitModule => "init_module carries no file to judge",
            Reason::Fallback => {
                "the loader's init_module fallback after its finit_module was refused"
            }
            Reason::None => "",
        };
        let _ = write!(
            s,
            ": {} ({why}{})",
            if self.refused() {
                "refused"
            } else if matches!(self.reason, Reason::Denied | Reason::Fallback) {
                "would be refused"
            } else {
                "allowed"
            },
            if self.enforcing { "" } else { "; observe mode" }
        );
        s
    }
}

impl LoadEvent {
    /// The audit record of a refused load, or of one enforce mode would
    /// refuse (observe mode); None for any other.  Shaped as the request
    /// denials' records (crate::operator::audit), `op=module-load`.
    pub(crate) fn audit_message(&self) -> Option<String> {
        use crate::operator::audit::encode;
        let would = !self.refused() && matches!(self.reason, Reason::Denied | Reason::Fallback);
        if !self.refused() && !would {
            return None;
        }
        let (decision, res) = if would {
            ("would-deny", "success")
        } else {
            ("deny", "failed")
        };
        let (syscall, file, sha) = match self.hook {
            Hook::ReadFile => (
                "finit_module",
                encode(&self.name),
                self.sha256_hex().unwrap_or_else(|| "?".into()),
            ),
            _ => ("init_module", "?".into(), "?".into()),
        };
        let reason = match self.reason {
            Reason::Denied => "denied-content",
            Reason::Unknown => "unknown-content",
            Reason::InitModule => "init-module",
            Reason::Fallback => "fallback",
            Reason::Allowed | Reason::None => "?",
        };
        Some(format!(
            "op=module-load decision={decision} mode={} syscall={syscall} reason={reason} \
             file={file} sha256={sha} loader_pid={} loader_comm={} loader_cgroup_id={} \
             exe={} hostname=? addr=? terminal=? res={res}",
            if self.enforcing { "enforce" } else { "observe" },
            self.tgid,
            encode(&self.comm),
            self.cgroup_id,
            crate::operator::audit::exe(),
        ))
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(hook: u32, verdict: i32, reason: u32, name: &str) -> Vec<u8> {
        let mut b = vec![0u8; SIZE];
        b[0..4].copy_from_slice(&hook.to_ne_bytes());
        b[4..8].copy_from_slice(&2u32.to_ne_bytes());
        b[8..12].copy_from_slice(&412u32.to_ne_bytes());
        b[12..16].copy_from_slice(&413u32.to_ne_bytes());
        b[16..24].copy_from_slice(&77u64.to_ne_bytes());
        b[24..28].copy_from_slice(&verdict.to_ne_bytes());
        b[28..32].copy_from_slice(&4i32.to_ne_bytes());
        b[32..36].copy_from_slice(&reason.to_ne_bytes());
        b[36..40].copy_from_slice(&1u32.to_ne_bytes());
        b[40..46].copy_from_slice(b"insmod");
        b[56..88].copy_from_slice(&[0xab; 32]);
        b[88..88 + name.len()].copy_from_slice(name.as_bytes());
        b
    }

    #[test]
    fn a_refused_finit_module_reads_back_with_its_caller_and_hash() {
        let e = LoadEvent::parse(&raw(1, -1, 2, "/lib/modules/x/kernel/dummy.ko.xz")).unwrap();
        assert_eq!(e.hook, Hook::ReadFile);
        assert_eq!((e.tgid, e.pid, e.cgroup_id), (412, 413, 77));
        assert!(e.refused());
        assert_eq!(e.module().as_deref(), Some("dummy"));
        let d = e.describe();
        assert!(d.contains("by insmod (pid 412)"), "{d}");
        assert!(d.contains(&"ab".repeat(32)), "{d}");
        assert!(
            d.ends_with("refused (its content has a deny verdict)"),
            "{d}"
        );
    }

    #[test]
    fn a_refused_fallback_says_so() {
        let e = LoadEvent::parse(&raw(2, -1, 5, "")).unwrap();
        assert_eq!((e.hook, e.reason), (Hook::LoadData, Reason::Fallback));
        assert_eq!(e.module(), None);
        let d = e.describe();
        assert!(
            d.contains("init_module (an image from memory, no file) by insmod (pid 412)"),
            "{d}"
        );
        assert!(
            d.contains("refused (the loader's init_module fallback"),
            "{d}"
        );
    }

    #[test]
    fn refusals_and_would_be_refusals_make_audit_records() {
        let e = LoadEvent::parse(&raw(1, -1, 2, "/m/dummy.ko")).unwrap();
        let m = e.audit_message().unwrap();
        assert!(m.starts_with("op=module-load decision=deny mode=enforce syscall=finit_module reason=denied-content file=\"/m/dummy.ko\" sha256=abab"), "{m}");
        assert!(
            m.contains("loader_pid=412 loader_comm=\"insmod\" loader_cgroup_id=77"),
            "{m}"
        );
        assert!(m.ends_with("res=failed"), "{m}");
        // A hostile path cannot forge a field.
        let e = LoadEvent::parse(&raw(1, -1, 2, "/tmp/a res=success")).unwrap();
        assert!(e
            .audit_message()
            .unwrap()
            .contains("file=2F746D702F61207265733D73756363657373 "));
        // Allowed: no record.
        let e = LoadEvent::parse(&raw(1, 0, 1, "/m/veth.ko")).unwrap();
        assert_eq!(e.audit_message(), None);
    }

    #[test]
    fn short_or_unknown_bytes_are_no_event() {
        assert_eq!(LoadEvent::parse(&[0u8; 12]), None);
        assert_eq!(LoadEvent::parse(&raw(9, 0, 0, "")), None);
    }

    #[test]
    fn a_request_carries_the_alias() {
        let e = LoadEvent::parse(&raw(3, 0, 0, "net-pf-29")).unwrap();
        assert_eq!(e.module(), None);
        assert!(e.describe().contains("asks for net-pf-29"));
    }
}

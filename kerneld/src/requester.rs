//! Who asked: the task behind a request.
//!
//! The kernel runs the module helper from a kernel worker as root, so the
//! shim cannot know who triggered it; `trace.rs` recovers the requesting
//! task from the `module:module_request` tracepoint.  Requests that come
//! straight from a queue writer (kdsend, old clients) have only the 16-bit
//! pid of the new header.

/// The task that caused a request, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// Full pid (not the 16 bits of the wire header).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Command name (`comm`).
    pub comm: String,
    /// cgroup v2 path (`/user.slice/...`), empty if unknown.
    pub cgroup: String,
    /// Namespace identities, `net:[4026531840]` style, if read in time.
    pub namespaces: Vec<String>,
}

impl Requester {
    /// A short description for logs: `pid 812 uid 1000 (sh)`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "pid {} uid {} gid {} ({})",
            self.pid, self.uid, self.gid, self.comm
        );
        if !self.cgroup.is_empty() {
            s.push_str(&format!(" cgroup {}", self.cgroup));
        }
        s
    }

    /// As JSON for status documents.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pid": self.pid,
            "uid": self.uid,
            "gid": self.gid,
            "comm": self.comm,
            "cgroup": self.cgroup,
            "namespaces": self.namespaces,
        })
    }
}

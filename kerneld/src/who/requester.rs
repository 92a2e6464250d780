//! Who asked: the task behind a request.
//!
//! The kernel runs the module helper from a kernel worker as root, so the
//! shim cannot know who triggered it; `trace.rs` recovers the requesting
//! task from the `module:module_request` tracepoint.  The in-kernel sender
//! (kernel/module/) knows the requester and says so in the request itself,
//! after the name's NUL ([`kmod_ipc::origin`]); that wins over the trace.
//! Requests that come straight from a queue writer (kdsend, old clients)
//! have only the 16-bit pid of the new header.

use kmod_ipc::escape::escape;
use kmod_ipc::origin::RequestOrigin;
use serde::{Deserialize, Serialize};

/// The task that caused a request, as far as it is known.  Kept in the
/// record of loaded modules (`kdstat why`); fields missing from an older
/// record read as their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct Requester {
    /// Full pid (not the 16 bits of the wire header).
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Command name (`comm`).
    pub comm: String,
    /// cgroup v2 path (`/user.slice/...`), empty if unknown.
    pub cgroup: String,
    /// Namespace identities, `net:[4026531840]` style, if read in time.
    pub namespaces: Vec<String>,
    /// The parent's command name, empty if unknown (only tracing reads
    /// it).
    pub parent_comm: String,
}

impl Requester {
    /// The requester named by a request body's origin extension, if it has
    /// one (only the in-kernel sender writes it; the queue is root's).
    pub(crate) fn from_body(body: &[u8]) -> Option<Requester> {
        let o = RequestOrigin::from_body(body)?;
        Some(Requester {
            pid: o.pid,
            uid: o.uid,
            gid: o.gid,
            comm: o.comm,
            cgroup: o.cgroup,
            namespaces: Vec::new(),
            parent_comm: String::new(),
        })
    }

    /// A short description for logs and kdstat: `pid 812 uid 1000 (sh)`,
    /// the command and cgroup escaped (any user chooses them).
    pub(crate) fn describe(&self) -> String {
        let mut s = String::with_capacity(48 + self.comm.len() + self.cgroup.len());
        self.describe_into(&mut s);
        s
    }

    /// [`Requester::describe`] appended to `s`: one string for the whole
    /// log line (it is written for every request that names its requester).
    pub(crate) fn describe_into(&self, s: &mut String) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(s, "pid {} uid {} gid {} (", self.pid, self.uid, self.gid);
        s.push_str(&escape(&self.comm));
        s.push(')');
        if !self.cgroup.is_empty() {
            s.push_str(" cgroup ");
            s.push_str(&escape(&self.cgroup));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_the_origin_extension() {
        let o = RequestOrigin {
            pid: 123_456,
            uid: 1000,
            gid: 1000,
            comm: "trigger".into(),
            cgroup: "/user.slice/user-1000.slice".into(),
        };
        let body = o.request_body(0x7fff_0001, b"net-pf-29").unwrap();
        let r = Requester::from_body(&body).unwrap();
        assert_eq!(
            r.describe(),
            "pid 123456 uid 1000 gid 1000 (trigger) cgroup /user.slice/user-1000.slice"
        );
        assert_eq!(Requester::from_body(&body[..20]), None);
    }
}

//! Who asked, as the kernel tells it: the *origin extension* of a request.
//!
//! The new header's `short pid` cannot hold today's pids, and a request
//! carries nothing else about its requester.  The in-kernel sender
//! (kernel/module/ of the kerneld sources) therefore appends, after the
//! module name and one NUL, the requester's pid, uid, gid, command and
//! cgroup.  A 1995 daemon reads the text as a C string and never sees the
//! extension, so such a request is still a valid old one.
//!
//! The layout is defined once, in [`crate::wire`] (a `core`-only file the
//! kernel module `include!`s): see [`wire::ORIGIN_MAGIC`] for the table.
//! This module turns it into owned values for the daemon.

use crate::wire;

/// The requester of a request, from its origin extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOrigin {
    /// Thread group id in the initial pid namespace (the full pid).
    pub pid: u32,
    /// User id in the initial user namespace.
    pub uid: u32,
    /// Group id in the initial user namespace.
    pub gid: u32,
    /// Command name (`comm`), lossily UTF-8.
    pub comm: String,
    /// cgroup v2 path, lossily UTF-8; empty if unknown.
    pub cgroup: String,
}

impl RequestOrigin {
    /// The origin extension of a request body (what follows `mtype`), if
    /// it has a well-formed one after the text's first NUL.
    pub fn from_body(body: &[u8]) -> Option<RequestOrigin> {
        let o = wire::parse_origin(wire::trailer(body))?;
        Some(RequestOrigin {
            pid: o.pid,
            uid: o.uid,
            gid: o.gid,
            comm: String::from_utf8_lossy(o.comm).into_owned(),
            cgroup: String::from_utf8_lossy(o.cgroup).into_owned(),
        })
    }

    /// The body of a request to load `name` with this origin, with reply
    /// id `id`, as the kernel module sends it (for tests and `kdsend`-like
    /// tools).  `None` if the name or comm breaks the limits of
    /// [`wire::encode_request_body`].
    pub fn request_body(&self, id: i64, name: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; wire::REQUEST_BODY_MAX];
        let o = wire::Origin {
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
            comm: self.comm.as_bytes(),
            cgroup: self.cgroup.as_bytes(),
        };
        let n = wire::encode_request_body(&mut buf, id, self.pid, name, Some(&o))?;
        buf.truncate(n);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Header, Message, MsgType};

    fn sample() -> RequestOrigin {
        RequestOrigin {
            pid: 4_000_123,
            uid: 1000,
            gid: 1001,
            comm: "trigger".into(),
            cgroup: "/user.slice/user-1000.slice".into(),
        }
    }

    #[test]
    fn round_trip_and_the_name_decodes_as_before() {
        let body = sample().request_body(0x7fff_0005, b"net-pf-29").unwrap();
        assert_eq!(RequestOrigin::from_body(&body), Some(sample()));
        let m = Message::decode_body(2, &body, crate::DEFAULT_TEXT_MAX).unwrap();
        assert_eq!(m.msg_type(), MsgType::RequestModule);
        assert_eq!(m.id, 0x7fff_0005);
        assert_eq!(m.text, b"net-pf-29");
        // The header's pid: the low 16 bits, as a C short.
        assert_eq!(
            m.header,
            Header::New {
                pid: (4_000_123u32 & 0xffff) as u16 as i16
            }
        );
    }

    #[test]
    fn a_1995_reader_sees_the_name_only() {
        let body = sample()
            .request_body(0x7fff_0000, b"rtnl-link-dummy")
            .unwrap();
        // What the 1996 daemon did: text from offset 12 as a C string.
        let text = &body[12..];
        let cstr = &text[..text.iter().position(|&b| b == 0).unwrap()];
        assert_eq!(cstr, b"rtnl-link-dummy");
    }

    #[test]
    fn without_extension_there_is_no_origin_and_no_nul() {
        let mut buf = [0u8; 64];
        let n = wire::encode_request_body(&mut buf, 7, 12, b"dummy", None).unwrap();
        assert_eq!(n, 12 + 5);
        assert_eq!(RequestOrigin::from_body(&buf[..n]), None);
    }

    #[test]
    fn malformed_extensions_are_ignored() {
        let body = sample().request_body(1, b"x").unwrap();
        let ext = 12 + 2; // after "x\0"
        let mut bad = body.clone();
        bad[ext] = b'K';
        assert_eq!(RequestOrigin::from_body(&bad), None, "magic");
        let mut bad = body.clone();
        bad[ext + 4] = 2;
        assert_eq!(RequestOrigin::from_body(&bad), None, "version");
        let mut bad = body.clone();
        bad[ext + 5] = 16;
        assert_eq!(RequestOrigin::from_body(&bad), None, "comm too long");
        assert_eq!(
            RequestOrigin::from_body(&body[..body.len() - 1]),
            None,
            "cut short"
        );
        let mut bad = body.clone();
        bad[ext + wire::ORIGIN_FIXED_LEN] = 0;
        assert_eq!(RequestOrigin::from_body(&bad), None, "NUL in comm");
        // Every prefix and every single-byte change: never a panic.
        for n in 0..body.len() {
            let _ = RequestOrigin::from_body(&body[..n]);
            for v in [0u8, 1, 0xff] {
                let mut b = body.clone();
                b[n] = v;
                let _ = RequestOrigin::from_body(&b);
            }
        }
    }

    #[test]
    fn limits() {
        let mut o = sample();
        o.cgroup = "/".repeat(wire::ORIGIN_CGROUP_MAX + 1);
        let body = o.request_body(1, b"x").unwrap();
        assert_eq!(
            RequestOrigin::from_body(&body).unwrap().cgroup,
            "",
            "long cgroup sent empty"
        );
        o.comm = "c".repeat(wire::ORIGIN_COMM_MAX + 1);
        assert_eq!(o.request_body(1, b"x"), None);
        let o = sample();
        assert_eq!(o.request_body(1, &[b'n'; wire::NAME_MAX + 1]), None);
        assert_eq!(o.request_body(1, b""), None);
        assert_eq!(o.request_body(1, b"a\0b"), None);
        let mut o = sample();
        o.comm = "c".repeat(wire::ORIGIN_COMM_MAX);
        o.cgroup = "g".repeat(wire::ORIGIN_CGROUP_MAX);
        let body = o.request_body(1, &[b'n'; wire::NAME_MAX]).unwrap();
        assert_eq!(body.len(), wire::REQUEST_BODY_MAX);
    }

    #[test]
    fn kernel_ids_wrap_within_the_kernel_range() {
        assert_eq!(wire::kernel_id(0), crate::KERNELD_MINSEQ);
        assert_eq!(wire::kernel_id(0xffff), 0x7fff_ffff);
        assert_eq!(wire::kernel_id(0x1_0000), crate::KERNELD_MINSEQ);
        // kerneld-modprobe's ids (HELPER_ID_FIRST + pid) start past them.
        assert_eq!(wire::HELPER_ID_FIRST, wire::kernel_id(0xffff) + 1);
        assert_eq!(wire::kernel_id(u32::MAX), 0x7fff_ffff);
    }

    /// msg.rs and key.rs define these too: they must agree with wire.rs,
    /// which the kernel module includes.
    #[test]
    fn wire_agrees_with_msg_and_key() {
        assert_eq!(wire::KERNEL_ID_FIRST, crate::KERNELD_MINSEQ);
        assert_eq!(wire::NEW_PROTOCOL_VERSION, crate::NEW_PROTOCOL_VERSION);
        assert_eq!(wire::HEADER_OLD_LEN, crate::HEADER_OLD_LEN);
        assert_eq!(wire::HEADER_NEW_LEN, crate::HEADER_NEW_LEN);
        assert_eq!(wire::TYPE_REQUEST_MODULE, MsgType::RequestModule.number());
        assert_eq!(wire::KEY, crate::DEFAULT_KEY.0);
        // A reply as kerneld makes it: status in the id field.
        let req = Message::request(
            MsgType::RequestModule,
            0x7fff_0001,
            Header::new_with_pid(1),
            "x",
        );
        let reply = req
            .reply(-2, 1, "no such module")
            .encode_body(1024)
            .unwrap();
        assert_eq!(wire::reply_status(&reply), Some(-2));
        assert_eq!(wire::header_len(&reply), wire::HEADER_NEW_LEN);
    }
}

//! Network links that keep their module busy without a reference.
//!
//! A link created through rtnetlink (`ip link add d0 type dummy`) does not
//! take a reference on its module: `dummy` shows refcount 0 while `d0`
//! exists, and unloading it deletes `d0`.  The idle sweep therefore asks
//! the kernel which link kinds exist (an RTM_GETLINK dump, reading
//! IFLA_LINKINFO/IFLA_INFO_KIND) and treats a module requested as
//! `rtnl-link-KIND`, or named KIND, as in use while such a link exists.
//! Links the module made itself while loading (`dummy0`, `ifb0`, `bond0`:
//! drivers create `numdummies`/`numifbs`/`max_bonds` of them at init) are
//! noted at load time and do not count: otherwise such a module could never
//! expire.  Only kerneld's own network namespace is seen.

use nix::sys::socket::{
    recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};
use std::os::fd::AsRawFd;

const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterate over netlink attributes in `buf`: (type, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, payload))
    })
}

/// The links of this network namespace that have a kind (`dummy`,
/// `bridge`, `vxlan`, ...), as (ifindex, kind); empty if netlink cannot be
/// used.
pub(crate) fn links() -> Vec<(i32, String)> {
    let mut kinds = Vec::new();
    let Ok(fd) = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    ) else {
        return kinds;
    };
    // nlmsghdr (16 bytes) + ifinfomsg (16 bytes)
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    if send(fd.as_raw_fd(), &req, MsgFlags::empty()).is_err() {
        return kinds;
    }
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n @ 1..) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        if !parse_dump(&buf[..n], &mut kinds) {
            break;
        }
    }
    kinds
}

/// Add the (ifindex, kind) of each RTM_NEWLINK in one datagram of the dump
/// to `kinds`; false once the dump is over (done, error, or garbage).
fn parse_dump(mut msgs: &[u8], kinds: &mut Vec<(i32, String)>) -> bool {
    while msgs.len() >= 16 {
        let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
        let ty = u16::from_ne_bytes([msgs[4], msgs[5]]);
        if len < 16 || len > msgs.len() || ty == NLMSG_DONE || ty == NLMSG_ERROR {
            return false;
        }
        if ty == RTM_NEWLINK && len >= 32 {
            // ifinfomsg: family, pad, type (u16), index (i32), ...
            let index = i32::from_ne_bytes([msgs[20], msgs[21], msgs[22], msgs[23]]);
            for (t, p) in attrs(&msgs[32..len]) {
                if t == IFLA_LINKINFO {
                    for (it, ip) in attrs(p) {
                        if it == IFLA_INFO_KIND {
                            let kind = ip.split(|&b| b == 0).next().unwrap_or(&[]);
                            kinds.push((index, String::from_utf8_lossy(kind).into_owned()));
                        }
                    }
                }
            }
        }
        msgs = &msgs[align4(len).min(msgs.len())..];
    }
    true
}

/// Whether a module, recorded as requested by `requested_as`, serves links
/// of `kind`.
pub(crate) fn serves_kind(module: &str, requested_as: &str, kind: &str) -> bool {
    let served = requested_as.strip_prefix("rtnl-link-").unwrap_or(module);
    kind == served || kind == module.replace('_', "-")
}

/// Whether a module serves a link that exists, other than the links in
/// `own` (those it made itself while loading).
pub(crate) fn serves_live_link(
    module: &str,
    requested_as: &str,
    links: &[(i32, String)],
    own: &[i32],
) -> bool {
    links
        .iter()
        .any(|(i, k)| !own.contains(i) && serves_kind(module, requested_as, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_stop_at_garbage() {
        let mut b = Vec::new();
        b.extend_from_slice(&9u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(b"dummy\0\0\0");
        let v: Vec<_> = attrs(&b).collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, 1);
        assert_eq!(&v[0].1[..5], b"dummy");
        assert_eq!(attrs(&[200, 0, 1, 0]).count(), 0, "length past the end");
        assert_eq!(attrs(&[1, 0]).count(), 0);
    }

    #[test]
    fn dump_of_this_namespace_works() {
        // The loopback link has no kind; the call must simply not fail.
        assert!(!links().iter().any(|(_, k)| k.is_empty()));
    }

    #[test]
    fn modules_match_their_link_kind() {
        let links = vec![(5, "dummy".to_string()), (6, "bridge".to_string())];
        assert!(serves_live_link("dummy", "rtnl-link-dummy", &links, &[]));
        assert!(serves_live_link("bridge", "bridge", &links, &[]));
        assert!(!serves_live_link("vxlan", "rtnl-link-vxlan", &links, &[]));
        // Dependencies loaded for a bridge stay while the bridge exists.
        assert!(serves_live_link("stp", "rtnl-link-bridge", &links, &[]));
        // dummy0, made by the module's own init, does not hold it.
        assert!(!serves_live_link("dummy", "rtnl-link-dummy", &links, &[5]));
    }
}

//! Denials reach the Linux audit subsystem: a real kerneld denies a
//! request whose requester the in-kernel sender names (origin extension),
//! and the audit record is read back as auditd would get it, from the
//! kernel's read-only multicast group of audit records (AUDIT_NLGRP_READLOG,
//! which needs CAP_AUDIT_READ: run as root).
//!
//! The kernel drops user records while audit is disabled (no auditd ran
//! since boot): the test enables it for its run and disables it again.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{unique_reply_id, Kerneld, LIMIT};
use kmod_ipc::origin::RequestOrigin;
use kmod_ipc::Client;
use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
    SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use std::os::fd::{AsRawFd, OwnedFd};

const REQUEST_MODULE: i64 = 2;
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_TRUSTED_APP: u16 = 1121;
const AUDIT_STATUS_ENABLED: u32 = 1;
const AUDIT_NLGRP_READLOG: u32 = 1;
/// A comm that would forge fields and end the record if written raw.
const COMM: &str = "x res=success\"\n";

fn audit_socket(groups: u32) -> OwnedFd {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkAudit,
    )
    .expect("open a NETLINK_AUDIT socket: the kernel needs CONFIG_AUDIT");
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .expect("bind the audit socket (the multicast group needs CAP_AUDIT_READ: run as root)");
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(LIMIT.as_secs() as i64, 0),
    )
    .unwrap();
    fd
}

fn send(fd: &OwnedFd, kind: u16, payload: &[u8]) {
    let mut p = Vec::new();
    p.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
    p.extend_from_slice(&kind.to_ne_bytes());
    p.extend_from_slice(&(1u16 | 4).to_ne_bytes()); // request, ack
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(payload);
    sendto(
        fd.as_raw_fd(),
        &p,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .unwrap();
}

/// The next message: its type and payload.
fn receive(fd: &OwnedFd) -> (u16, Vec<u8>) {
    try_receive(fd).expect("no audit message within the limit")
}

fn try_receive(fd: &OwnedFd) -> Option<(u16, Vec<u8>)> {
    let mut buf = vec![0u8; 16384];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    let len = (u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize).min(n);
    let kind = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
    Some((kind, buf[16..len].to_vec()))
}

/// struct audit_status's `enabled`, read with AUDIT_GET.
fn audit_enabled(fd: &OwnedFd) -> u32 {
    send(fd, AUDIT_GET, &[]);
    loop {
        let (kind, p) = receive(fd);
        if kind == AUDIT_GET {
            return u32::from_ne_bytes(p[4..8].try_into().unwrap());
        }
    }
}

fn set_enabled(fd: &OwnedFd, on: u32) {
    let mut status = [0u8; 64];
    status[0..4].copy_from_slice(&AUDIT_STATUS_ENABLED.to_ne_bytes());
    status[4..8].copy_from_slice(&on.to_ne_bytes());
    send(fd, AUDIT_SET, &status);
    let (kind, p) = receive(fd);
    assert_eq!(kind, 2, "AUDIT_SET: no ack");
    assert_eq!(&p[0..4], &[0; 4], "AUDIT_SET enabled={on} refused");
}

/// Audit enabled for the test's run; disabled again after if it was.
struct Enabled(OwnedFd, bool);

impl Enabled {
    fn new() -> Enabled {
        let fd = audit_socket(0);
        let was = audit_enabled(&fd);
        if was == 0 {
            set_enabled(&fd, 1);
        }
        Enabled(fd, was == 0)
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        if self.1 {
            set_enabled(&self.0, 0);
        }
    }
}

/// The first TRUSTED_APP record that contains `needle`.
fn record_with(fd: &OwnedFd, needle: &str, k: &Kerneld) -> String {
    loop {
        let Some((kind, p)) = try_receive(fd) else {
            panic!("no audit record with {needle}; kerneld's log:\n{}", k.log());
        };
        let text = String::from_utf8_lossy(&p).into_owned();
        if kind == AUDIT_TRUSTED_APP && text.contains(needle) {
            return text;
        }
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02X}")).collect()
}

/// Send a request from the requester the kernel module would name.
fn request(k: &Kerneld, name: &str) -> i64 {
    let origin = RequestOrigin {
        pid: 4242,
        uid: 1000,
        gid: 1001,
        comm: COMM.into(),
        cgroup: "/user.slice/user-1000.slice".into(),
    };
    let id = unique_reply_id();
    let body = origin.request_body(id, name.as_bytes()).unwrap();
    k.queue().send_raw(REQUEST_MODULE, &body, false).unwrap();
    Client::connect(k.key())
        .unwrap()
        .wait_reply(id, Some(LIMIT))
        .unwrap()
        .status
}

#[test]
fn a_denial_is_an_audit_record_naming_its_requester() {
    let _enabled = Enabled::new();
    let records = audit_socket(AUDIT_NLGRP_READLOG);
    let name = format!("kdtest-audit-{}", std::process::id());
    let k = Kerneld::builder()
        .config(&format!("deny request {name}\n"))
        .start();
    assert_eq!(request(&k, &name), 1);
    let r = record_with(&records, &format!("request=\"{name}\""), &k);
    // The kernel's part: the sender is kerneld; then kerneld's message.
    assert!(r.contains(&format!(" pid={} uid=0 ", k.pid())), "{r}");
    let rule = format!("deny request {name} ({}:1)", k.config_path().display());
    let want = format!(
        "msg='op=module-request decision=deny mode=enforce request=\"{name}\" modules=? \
         rule={} requester_pid=4242 requester_uid=1000 requester_gid=1001 \
         requester_comm={} requester_cgroup=\"/user.slice/user-1000.slice\" exe=",
        hex(&rule),
        hex(COMM)
    );
    assert!(r.contains(&want), "{r}\nwant: {want}");
    assert!(
        r.ends_with(" hostname=? addr=? terminal=? res=failed'"),
        "{r}"
    );
    // The hostile comm forged nothing.
    assert_eq!(r.matches("res=").count(), 1, "{r}");
    assert!(!r.contains('\n'), "{r}");

    // Audit mode: the would-deny is recorded, as a success.
    let k = Kerneld::builder()
        .config(&format!("mode = audit\ndeny request {name}\n"))
        .start();
    request(&k, &name);
    let r = record_with(&records, &format!(" pid={} ", k.pid()), &k);
    assert!(
        r.contains(&format!(
            "msg='op=module-request decision=would-deny mode=audit request=\"{name}\" "
        )),
        "{r}"
    );
    assert!(r.contains(" requester_pid=4242 "), "{r}");
    assert!(r.ends_with(" res=success'"), "{r}");
}

//! Denials (and audit mode's would-denies) to the Linux audit subsystem,
//! as user records of type AUDIT_TRUSTED_APP, shaped as libaudit's
//! `audit_log_user_message` shapes them, so that `ausearch -m TRUSTED_APP`
//! and what already reads the audit log find them.  The kernel's own
//! record of the module load names kerneld as its subject; this one names
//! the task that caused the request.
//!
//! A small module over a NETLINK_AUDIT socket rather than libaudit: one
//! message type is sent, and the netlink crates that speak audit bring a
//! dozen crates for the fifty lines below.
//!
//! Records are sent by a thread of their own: the kernel may hold a sender
//! while its audit backlog is full (auditd lagging), which must not hold a
//! request.  A record that finds the thread's queue full is dropped and
//! counted.  Without audit (a kernel without CONFIG_AUDIT, a container
//! whose user namespace the kernel does not audit, no CAP_AUDIT_WRITE)
//! kerneld says so once and sends nothing more.

use crate::who::requester::Requester;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;

/// AUDIT_TRUSTED_APP (linux/audit.h): a trusted application's message.
pub(crate) const AUDIT_TRUSTED_APP: u16 = 1121;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
/// Records waiting for the sender thread; past that they are dropped.
const BACKLOG: usize = 256;

static SENDER: OnceLock<SyncSender<String>> = OnceLock::new();

/// Start the sender thread, which opens the audit socket; without audit,
/// say so once (the records are then skipped).  The socket is opened in
/// that thread: on a kernel without audit, socket() asks for the
/// net-pf-16-proto-9 module, a request kerneld itself must answer, so its
/// main thread must not wait for it.
pub fn start() {
    // On a kernel without audit, socket(NETLINK_AUDIT) makes the kernel
    // request_module("net-pf-16-proto-9"): through the helper, of this very
    // kerneld, which is not serving yet.  The start would hang until the
    // helper gives up.  /proc/self/loginuid exists exactly with audit.
    // (The socket is opened in the sender's thread all the same, so that
    // nothing of the start waits on it.)
    if !std::path::Path::new("/proc/self/loginuid").exists() {
        crate::operator::log::info(
            "audit records of denials are not sent: this kernel has no audit support \
             (CONFIG_AUDIT)",
        );
        return;
    }
    let (tx, rx) = sync_channel::<String>(BACKLOG);
    let spawned = std::thread::Builder::new()
        .name("audit".into())
        .spawn(move || {
            let fd = match open() {
                Ok(fd) => fd,
                Err(e) => {
                    crate::operator::log::info(&format!(
                        "audit records of denials are not sent: cannot open the audit socket: {}",
                        crate::errno::errno_text(e)
                    ));
                    // Skipped, as when there is no audit: not lost.
                    for _ in rx.iter() {}
                    return;
                }
            };
            for msg in rx.iter() {
                if let Err(e) = send(&fd, &msg) {
                    crate::operator::log::warn(&format!(
                        "audit records of denials are not sent: the kernel refused one: {}{}",
                        crate::errno::errno_text(e),
                        match e {
                            Errno::EPERM => " (kerneld needs CAP_AUDIT_WRITE)",
                            Errno::ECONNREFUSED => " (no audit in this namespace)",
                            _ => "",
                        }
                    ));
                    // Refusals do not mend: the records stop here.
                    for _ in rx.iter() {}
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => {
            let _ = SENDER.set(tx);
        }
        Err(e) => crate::operator::log::warn(&format!(
            "audit records of denials are not sent: cannot start a thread: {e}"
        )),
    }
}

fn open() -> Result<OwnedFd, Errno> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkAudit,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    Ok(fd)
}

/// Send one user message and read the kernel's answer, which it queues
/// while handling the send: no wait for it.
fn send(fd: &OwnedFd, msg: &str) -> Result<(), Errno> {
    let packet = packet(AUDIT_TRUSTED_APP, msg);
    sendto(
        fd.as_raw_fd(),
        &packet,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 256];
    let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(n) => n,
        Err(Errno::EAGAIN) => return Ok(()),
        Err(e) => return Err(e),
    };
    // nlmsghdr (16 bytes), then for NLMSG_ERROR a negative errno (0: ack).
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if err < 0 {
            return Err(Errno::from_raw(-err));
        }
    }
    Ok(())
}

/// A netlink message of `kind` carrying `msg` and its NUL, as libaudit
/// sends it (the kernel drops the last byte).
pub(crate) fn packet(kind: u16, msg: &str) -> Vec<u8> {
    let len = 16 + msg.len() + 1;
    let mut p = Vec::with_capacity(len.next_multiple_of(4));
    p.extend_from_slice(&(len as u32).to_ne_bytes());
    p.extend_from_slice(&kind.to_ne_bytes());
    p.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    p.extend_from_slice(&0u32.to_ne_bytes()); // sequence
    p.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p.resize(len.next_multiple_of(4), 0);
    p
}

/// A value as audit writes untrusted strings: in double quotes, or in
/// uppercase hex when it has a quote, a space, a control character or a
/// byte outside ASCII (`audit_log_n_untrustedstring`), so that nobody can
/// forge a field.
pub(crate) fn encode(value: &str) -> String {
    let plain = value
        .bytes()
        .all(|b| b != b'"' && (0x21..=0x7e).contains(&b));
    if plain {
        format!("\"{value}\"")
    } else {
        value.bytes().map(|b| format!("{b:02X}")).collect()
    }
}

/// kerneld's executable, encoded, for the record's `exe=`.
pub(crate) fn exe() -> &'static str {
    static EXE: OnceLock<String> = OnceLock::new();
    EXE.get_or_init(|| match std::env::current_exe() {
        Ok(p) => encode(&p.to_string_lossy()),
        Err(_) => "?".into(),
    })
}

/// The text of the record of a denial (`would`: audit mode's would-deny)
/// of request `name`, which would load `modules`, by `rule`.
pub(crate) fn message(
    name: &str,
    modules: &[String],
    rule: &str,
    would: bool,
    who: Option<&Requester>,
) -> String {
    let (decision, mode, res) = if would {
        ("would-deny", "audit", "success")
    } else {
        ("deny", "enforce", "failed")
    };
    let modules = if modules.is_empty() {
        "?".into()
    } else {
        encode(&modules.join(","))
    };
    let requester = match who {
        Some(r) => format!(
            "requester_pid={} requester_uid={} requester_gid={} requester_comm={} requester_cgroup={}",
            r.pid,
            r.uid,
            r.gid,
            encode(&r.comm),
            if r.cgroup.is_empty() {
                "?".into()
            } else {
                encode(&r.cgroup)
            }
        ),
        None => "requester_pid=? requester_uid=? requester_gid=? requester_comm=? \
                 requester_cgroup=?"
            .into(),
    };
    format!(
        "op=module-request decision={decision} mode={mode} request={} modules={modules} \
         rule={} {requester} exe={} hostname=? addr=? terminal=? res={res}",
        encode(name),
        encode(rule),
        exe()
    )
}

/// Record a denial, or a would-deny; never waits.
pub(crate) fn denial(
    name: &str,
    modules: &[String],
    rule: &str,
    would: bool,
    who: Option<&Requester>,
) {
    let Some(tx) = SENDER.get() else {
        return;
    };
    // A full backlog drops the record rather than wait.
    let _ = tx.try_send(message(name, modules, rule, would, who));
}

/// Send a record made elsewhere (the module loads of `modload`); never
/// waits.
#[cfg_attr(not(feature = "bpf-lsm"), allow(dead_code))]
pub(crate) fn record(msg: String) {
    let Some(tx) = SENDER.get() else {
        return;
    };
    let _ = tx.try_send(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_values_are_quoted_or_hex_encoded_as_audit_does() {
        assert_eq!(encode("sh"), "\"sh\"");
        assert_eq!(encode("/user.slice/a-1.scope"), "\"/user.slice/a-1.scope\"");
        // A space, a quote, a control character or a non-ASCII byte could
        // forge a field or end the record: hex, as the kernel writes comm.
        assert_eq!(encode("a b"), "612062");
        assert_eq!(encode("x\"y"), "782279");
        assert_eq!(encode("a\nres=success"), "610A7265733D73756363657373");
        assert_eq!(encode("é"), "C3A9");
        assert_eq!(encode(""), "\"\"");
    }

    #[test]
    fn a_record_names_the_request_modules_rule_and_requester() {
        let who = Requester {
            pid: 812,
            uid: 1000,
            gid: 1000,
            comm: "evil res=success".into(),
            cgroup: "/user.slice".into(),
            ..Requester::default()
        };
        let m = message(
            "net-pf-29",
            &["can".into(), "can_raw".into()],
            "deny request net-pf-29 (/etc/kerneld.conf:3)",
            false,
            Some(&who),
        );
        let head = format!(
            "op=module-request decision=deny mode=enforce request=\"net-pf-29\" \
             modules=\"can,can_raw\" rule={} requester_pid=812 requester_uid=1000 \
             requester_gid=1000 requester_comm={} requester_cgroup=\"/user.slice\" exe=",
            encode("deny request net-pf-29 (/etc/kerneld.conf:3)"),
            encode("evil res=success")
        );
        assert!(m.starts_with(&head), "{m}");
        assert!(
            m.ends_with(" hostname=? addr=? terminal=? res=failed"),
            "{m}"
        );
        assert_eq!(m.matches("res=").count(), 1, "{m}");
        let m = message("sctp", &[], "default", true, None);
        assert!(m.contains(" decision=would-deny mode=audit "), "{m}");
        assert!(m.contains(" modules=? "), "{m}");
        assert!(m.contains(" requester_pid=? "), "{m}");
        assert!(m.ends_with(" res=success"), "{m}");
    }

    #[test]
    fn a_packet_is_a_netlink_message_with_the_text_and_its_nul() {
        let p = packet(AUDIT_TRUSTED_APP, "op=x");
        assert_eq!(u32::from_ne_bytes(p[0..4].try_into().unwrap()), 21);
        assert_eq!(u16::from_ne_bytes(p[4..6].try_into().unwrap()), 1121);
        assert_eq!(&p[16..21], b"op=x\0");
        assert_eq!(p.len(), 24);
    }
}

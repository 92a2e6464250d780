//! sd_notify(3): tell systemd what kerneld is doing (`READY=1`,
//! `RELOADING=1`, `STOPPING=1`, and a `STATUS=` line that `systemctl
//! status kerneld` shows).
//!
//! Twenty lines over a std `UnixDatagram` rather than the `sd-notify`
//! crate: the same code, and abstract socket names (`@...`) are std's
//! `SocketAddrExt`.  Without `NOTIFY_SOCKET` (not under systemd) nothing
//! is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send one notification (`KEY=value` lines); errors are ignored, as
/// sd_notify's are by most daemons: systemd may simply not listen.
fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    if let Ok(a) = addr {
        let _ = sock.send_to_addr(state.as_bytes(), &a);
    }
}

/// STATUS= text: one line.
fn status_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// Ready (at start, and after a reload), with what kerneld is doing.
pub(crate) fn ready(status: &str) {
    send(&format!(
        "READY=1\nSTATUS={}\nMAINPID={}\n",
        status_line(status),
        std::process::id()
    ));
}

/// What kerneld is doing, while it does it.
pub(crate) fn status(status: &str) {
    send(&format!("STATUS={}\n", status_line(status)));
}

/// A reload begins (SIGHUP); [`ready`] ends it.  MONOTONIC_USEC is what
/// systemd (Type=notify-reload, 253 and later) checks against the time it
/// sent the signal.
pub(crate) fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration and the module index\n"
    ));
}

/// The stop begins: requests in flight are answered, then the queue goes.
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=stopping: answering the requests in flight\n");
}

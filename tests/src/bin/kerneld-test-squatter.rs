//! A squatter for the tests: an unprivileged process that creates a
//! message queue at kerneld's key before kerneld does.
//!
//! ```text
//! kerneld-test-squatter KEY            create the queue once and exit (it stays)
//! kerneld-test-squatter KEY SECONDS    recreate it whenever it is gone, for SECONDS
//! ```
//!
//! Started as root, it first becomes nobody (uid and gid 65534, no
//! supplementary groups) and checks that it cannot become root again, so
//! the queue is a real unprivileged user's: `msgget(KEY, IPC_CREAT | 0600)`.
//! It prints `uid=U qid=Q` for the first queue, and in the looping form
//! `created N` at the end.  Exit status 0, 1 on failure, 2 on usage.

use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (key, seconds) = match args.as_slice() {
        [k] => (k.clone(), None),
        [k, s] => (k.clone(), s.parse::<u64>().ok()),
        _ => {
            eprintln!("usage: kerneld-test-squatter KEY [SECONDS]");
            std::process::exit(2);
        }
    };
    let Ok(key) = key.parse::<kmod_ipc::Key>() else {
        eprintln!("kerneld-test-squatter: bad key {key:?}");
        std::process::exit(2);
    };
    if Uid::effective().is_root() {
        let drop = setgroups(&[])
            .and_then(|()| setgid(Gid::from_raw(NOBODY)))
            .and_then(|()| setuid(Uid::from_raw(NOBODY)));
        if let Err(e) = drop {
            eprintln!("kerneld-test-squatter: cannot become nobody: {e}");
            std::process::exit(1);
        }
        if setuid(Uid::from_raw(0)).is_ok() {
            eprintln!("kerneld-test-squatter: could become root again");
            std::process::exit(1);
        }
    }
    let create = |excl: bool| {
        let flags = libc::IPC_CREAT | if excl { libc::IPC_EXCL } else { 0 } | 0o600;
        // SAFETY: msgget has no memory arguments.
        unsafe { libc::msgget(key.0, flags) }
    };
    let qid = create(false);
    if qid < 0 {
        eprintln!(
            "kerneld-test-squatter: msgget: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    println!("uid={} qid={qid}", Uid::effective());
    let Some(seconds) = seconds else {
        return;
    };
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut created = 1u64;
    while Instant::now() < end {
        if create(true) >= 0 {
            created += 1;
        }
    }
    println!("created {created}");
}

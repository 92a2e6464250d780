//! Fuzz the daemon's request handling: any message type and body given to
//! `dispatch::handle`, over the fake kernel (tests never load real modules),
//! must be answered or refused without a panic, and leave the daemon
//! answering status requests.  Control words (type 255) are reached
//! through a dictionary, with fuzzed values and rules after them.
#![no_main]

use kerneld::config::Config;
use kerneld::server::{Daemon, Parts, Settings};
use kerneld::backend::fake::FakeKernel;
use kerneld::state::record::Record;
use kmod_ipc::{Key, Queue, TypeFilter};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

static DAEMON: OnceLock<(Arc<Daemon>, Queue)> = OnceLock::new();

extern "C" fn remove_queue() {
    if let Some((_, q)) = DAEMON.get() {
        let _ = q.remove();
    }
}

fn daemon() -> &'static (Arc<Daemon>, Queue) {
    DAEMON.get_or_init(|| {
        let key = Key(0x4600_0000 | (std::process::id() as i32 & 0x00ff_ffff));
        let queue = Queue::create_unchecked(key, 0o600).expect("private queue");
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(remove_queue);
        }
        let fake = FakeKernel::with_tree(&[("dummy", &[]), ("bridge", &["stp", "llc"]), ("stp", &["llc"]), ("llc", &[])])
            .alias("rtnl-link-dummy", "dummy")
            .alias("rtnl-link-bridge", "bridge")
            .shared();
        let d = Daemon::new(Parts {
            settings: Settings { delay: 60, keep: false, debug: false },
            config: Config::default(),
            queue: queue.clone(),
            filter: TypeFilter::UpTo(255),
            backend: fake.backend(),
            record: Record::in_memory(),
            fingerprint: Box::new(|| 0),
            tracer: None,
        });
        (d, queue)
    })
}

/// Control words (type 255), each followed by fuzzed bytes: the values
/// and rules they take are where a number can overflow or a rule not
/// parse.
const WORDS: [&str; 16] = [
    "delay=", "debug", "nodebug", "keep", "nokeep", "flush", "mode=audit", "mode=enforce",
    "allow request ", "deny request ", "deny module ", "allow module ", "json", "policy",
    "status", "",
];

fuzz_target!(|data: &[u8]| {
    let (d, q) = daemon();
    let control;
    let (mtype, body) = match data.split_first() {
        // 255 with a second byte: a control word, the rest its argument,
        // after an id that asks for a reply (as kdstat sends it).
        Some((255, rest)) if !rest.is_empty() => {
            let mut b = (1024 + i64::from(std::process::id())).to_ne_bytes().to_vec();
            b.extend_from_slice(WORDS[usize::from(rest[0]) % WORDS.len()].as_bytes());
            b.extend_from_slice(&rest[1..]);
            control = b;
            (255, &control[..])
        }
        // The first byte picks the type, so every type is reached often.
        Some((&t, rest)) => (i64::from(t) + if t == 0 { 256 } else { 0 }, rest),
        None => (2, data),
    };
    kerneld::work::dispatch::handle(d, mtype, body);
    // Keep the queue from filling with replies nobody reads.
    while let Ok(Some(_)) = q.recv_raw(TypeFilter::Any, true) {}
    // The daemon still answers its status.
    let status = d.control("");
    assert_eq!(status.status, 0);
    assert!(status.text.starts_with("Version "));
});

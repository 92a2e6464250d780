//! The queue never stays jammed: after a flood of 100,000 random messages,
//! a third of them asking for replies that nobody reads, at the default
//! queue capacity of 16 KiB, kerneld answers a status request, and the
//! unread replies are gone from the queue.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::Kerneld;
use kerneld_tests::flood::{flood, status_answered_in};
use std::time::{Duration, Instant};

const MESSAGES: usize = 100_000;

#[test]
fn a_flood_of_unread_replies_does_not_jam_the_queue() {
    let k = Kerneld::start();
    let q = k.queue();
    // The default capacity, whatever kerneld could raise it to here.
    q.set_max_bytes(16384).unwrap();
    let f = flood(&q, MESSAGES, 0x6b64, Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}\n{}", k.log()));
    assert_eq!(f.sent, MESSAGES);
    assert!(f.unread > MESSAGES / 4, "{f:?}");
    status_answered_in(k.key(), Duration::from_secs(10)).unwrap_or_else(|e| {
        let st = q.stat().unwrap();
        let log = k.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        panic!(
            "{e} ({f:?}); queue: {} messages, {} bytes\n{}",
            st.messages,
            st.bytes,
            tail.join("\n")
        )
    });

    // Unread replies do not stay: the queue empties by itself.
    let t0 = Instant::now();
    loop {
        let st = q.stat().unwrap();
        if st.messages == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} messages ({} bytes) still waiting\n{}",
            st.messages,
            st.bytes,
            k.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let j = k.status_json();
    assert!(j["counters"]["replies_purged"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn a_status_request_is_answered_while_a_flood_goes_on() {
    // The flood of the test above, still going on while the status
    // request waits: replies to ids that tell nothing of their clients
    // keep the queue over half full, and a reply for a client known to
    // wait must still go out before it stops waiting.
    let k = Kerneld::start();
    let q = k.queue();
    q.set_max_bytes(16384).unwrap();
    let flooder = {
        let q = q.clone();
        std::thread::spawn(move || flood(&q, MESSAGES, 0x6b65, Duration::from_secs(240)))
    };
    while q.stat().unwrap().messages == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let answered = status_answered_in(k.key(), Duration::from_secs(20));
    let during = !flooder.is_finished();
    let f = flooder.join().unwrap();
    answered.unwrap_or_else(|e| {
        let log = k.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!("{e} ({f:?}); {:?}\n{}", q.stat(), tail.join("\n"))
    });
    assert!(during, "the flood ended before the answer ({f:?})");
}

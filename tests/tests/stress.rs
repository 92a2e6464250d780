//! 100,000 random messages at a live kerneld: well-formed requests of
//! every type, hostile names, truncated, unterminated, oversized and
//! random bodies, with reply ids of every kind.  The daemon must stay up,
//! answer every message that wants an answer exactly once, count every
//! message it received, and keep its settings.
//!
//! The queue holds only 16 KiB here (raising it needs CAP_SYS_RESOURCE),
//! so replies must be taken off as they come: every reply id used is in
//! a small set, each read by a thread blocked in an exact-type receive,
//! as a client waits for its answer.
//! Receiving "any type" would steal requests from the daemon, and the
//! daemon answers ids it cannot tell apart from requests (1..255) never.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use kerneld_tests::daemon::{Kerneld, LIMIT};
use kerneld_tests::rng::Rng;
use kmod_ipc::{
    msgmax, Error, Message, MsgType, Queue, TypeFilter, DEFAULT_TEXT_MAX, KERNELD_MINSEQ,
    REPLY_CONTINUES,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MESSAGES: usize = 100_000;

/// Every reply id the test uses; the drainer empties exactly these types.
/// Tool-style (1024 + pid), kernel-style (from KERNELD_MINSEQ), and the
/// largest type a message can have.
fn reply_ids() -> Vec<i64> {
    let mut ids = vec![1024 + i64::from(std::process::id()), 256, 1023];
    ids.extend((0..8).map(|i| KERNELD_MINSEQ + i));
    ids.extend([0x7fff_ffff, 0x1_0000_0000, i64::MAX]);
    ids
}

fn pick_id(rng: &mut Rng, replies: &[i64]) -> i64 {
    match rng.percent() {
        0..=69 => 0,
        70..=84 => *rng.pick(replies),
        // Ids the daemon must drop unanswered.
        85..=92 => 1 + rng.below(255) as i64,
        _ => -(1 + rng.below(1 << 40) as i64),
    }
}

const NAMES: [&str; 8] = [
    "kdstress-a",
    "kdstress-b",
    "net-pf-99",
    "char-major-10-200",
    "crypto-cbc(aes)",
    "fs-kdstress",
    "rtnl-link-kdstress",
    "pci:v00008086d00001533sv00000000",
];

const HOSTILE: [&[u8]; 8] = [
    b"../../etc/passwd",
    b"a/b",
    b"a..b",
    b"ppp;reboot",
    b"$(id)",
    b"x\ny",
    b"-r",
    b"\xff\xfe",
];

/// Status words that read but change nothing; random 255 texts start
/// with '#', which no control word does.
const HARMLESS_WORDS: [&str; 4] = ["", "status", "json", "policy"];

/// One message: its type and body (everything after mtype).
fn random_message(rng: &mut Rng, replies: &[i64]) -> (i64, Vec<u8>) {
    let mtype = match rng.percent() {
        0..=39 => 2,
        40..=49 => 3,
        50..=54 => 4,
        55..=59 => 5,
        60..=64 => 1 + rng.below(8) as i64,
        65..=79 => 255,
        80..=89 => 9 + rng.below(246) as i64,
        // Types the daemon never receives; the drainer takes them.
        90..=96 => *rng.pick(replies),
        // Types msgsnd refuses.
        _ => -(rng.below(3) as i64),
    };
    let id = pick_id(rng, replies);
    let header: Vec<u8> = if rng.below(2) == 0 {
        id.to_ne_bytes().to_vec()
    } else {
        let mut h = id.to_ne_bytes().to_vec();
        h.extend_from_slice(&2i16.to_ne_bytes());
        h.extend_from_slice(&(rng.next_u64() as i16).to_ne_bytes());
        h
    };
    let with_header = |text: &[u8], nul: bool| {
        let mut b = header.clone();
        b.extend_from_slice(text);
        if nul {
            b.push(0);
        }
        b
    };
    let mut body = match rng.percent() {
        // Random bytes of any size, the id kept where it belongs.
        0..=34 => {
            let n = rng.below(9001) as usize;
            let mut b = rng.bytes(n);
            let k = n.min(8);
            b[..k].copy_from_slice(&id.to_ne_bytes()[..k]);
            b
        }
        // Well formed, with a name the daemon can look up.
        35..=59 => with_header(rng.pick(&NAMES).as_bytes(), true),
        // Well formed, hostile name.
        60..=69 => with_header(rng.pick::<&[u8]>(&HOSTILE), true),
        // Well formed, a harmless status word (for any type).
        70..=79 => with_header(rng.pick(&HARMLESS_WORDS).as_bytes(), true),
        // Text and junk after the NUL.
        80..=84 => {
            let mut b = with_header(b"kdstress-a", true);
            b.extend(rng.bytes_below(64));
            b
        }
        // Shorter than an id.
        85..=89 => rng.bytes_below(8),
        // No NUL.
        90..=94 => {
            let n = rng.below(200) as usize;
            with_header(&vec![b'k'; n], false)
        }
        // Longer than the protocol's 1024 bytes of text.
        _ => {
            let n = DEFAULT_TEXT_MAX + 1 + rng.below(7000) as usize;
            with_header(&vec![b'z'; n], true)
        }
    };
    if mtype == 255 {
        // Never a control word that changes the daemon: random text gets
        // a leading '#', which no control word has.
        let start = if body.len() >= 12 && body[8..10] == 2i16.to_ne_bytes() {
            12
        } else {
            8
        };
        let harmless = body.get(start..).is_some_and(|rest| {
            let text = rest.split(|&b| b == 0).next().unwrap_or(&[]);
            HARMLESS_WORDS.iter().any(|w| w.as_bytes() == text)
        });
        if !harmless && body.len() > start {
            body[start] = b'#';
        }
    }
    (mtype, body)
}

/// What the daemon must do with a message, decoded as it decodes it.
enum Expect {
    /// Never received (type above 255): the drainer gets it back.
    Foreign(i64),
    /// Received; counted as a bad message, answered if it has a usable id.
    Bad { reply: Option<i64> },
    /// Received and counted under its type name; answered unless id 0.
    Request {
        kind: &'static str,
        reply: Option<i64>,
    },
}

fn expect(mtype: i64, body: &[u8]) -> Expect {
    if mtype > 255 {
        return Expect::Foreign(mtype);
    }
    let id = body
        .get(..8)
        .map(|b| i64::from_ne_bytes(b.try_into().unwrap()));
    let usable = id.filter(|&i| i > 255);
    match Message::decode_body(mtype, body, DEFAULT_TEXT_MAX) {
        Err(_) => Expect::Bad { reply: usable },
        Ok(m) if (1..=255).contains(&m.id) || m.id < 0 => Expect::Bad { reply: None },
        Ok(m) => Expect::Request {
            kind: match m.msg_type() {
                MsgType::Unknown(_) => "unknown",
                // Counted as kdsend names it (MsgType::name says "debug").
                MsgType::Status => "status",
                t => t.name(),
            },
            reply: usable,
        },
    }
}

/// The body that tells a reader to stop.
const STOP: &[u8] = b"kdstress: stop reading";

/// Reads messages of type `t` as a client does, blocked in `msgrcv`, until
/// it gets [`STOP`]; counts what it took.
fn read_replies(queue: Queue, t: i64, got: Arc<Mutex<BTreeMap<i64, u64>>>) {
    loop {
        match queue.recv_raw(TypeFilter::Exactly(t), false) {
            Ok(Some((mtype, body))) => {
                assert_eq!(mtype, t);
                if body == STOP {
                    return;
                }
                // A long answer (a status in JSON, say) comes in parts:
                // every part but the last says REPLY_CONTINUES, and the
                // answer counts once, at its last part.
                let status = body
                    .get(..8)
                    .map(|b| i64::from_ne_bytes(b.try_into().unwrap()));
                if status == Some(REPLY_CONTINUES) {
                    continue;
                }
                *got.lock().unwrap().entry(t).or_default() += 1;
            }
            Ok(None) | Err(Error::Interrupted) => {}
            Err(e) => panic!("reading replies of type {t}: {e}"),
        }
    }
}

fn counters(j: &serde_json::Value) -> (BTreeMap<String, u64>, u64) {
    let reqs = j["counters"]["requests"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    (reqs, j["counters"]["bad_messages"].as_u64().unwrap())
}

#[test]
fn a_hundred_thousand_random_messages() {
    let mut k = Kerneld::start();
    let pid = k.pid();
    let queue = k.queue();
    let replies = reply_ids();
    let before = k.status_json();
    let (reqs_before, bad_before) = counters(&before);

    let got: Arc<Mutex<BTreeMap<i64, u64>>> = Arc::default();
    let readers: Vec<_> = replies
        .iter()
        .map(|&t| {
            let (q, g) = (queue.clone(), got.clone());
            std::thread::spawn(move || read_replies(q, t, g))
        })
        .collect();

    let mut rng = Rng(0x6b65_726e_0d15_ea5e);
    let mut want_replies: BTreeMap<i64, u64> = BTreeMap::new();
    let mut want_requests: BTreeMap<String, u64> = BTreeMap::new();
    let (mut want_bad, mut refused_by_kernel) = (0u64, 0u64);
    let body_max = msgmax();
    for i in 0..MESSAGES {
        let (mtype, body) = random_message(&mut rng, &replies);
        let first_try = Instant::now();
        let sent = loop {
            match queue.send_raw(mtype, &body, true) {
                Ok(()) => break true,
                Err(Error::Sys { source, .. }) if source.raw_os_error() == Some(libc::EAGAIN) => {
                    // A correctness bound, not a speed limit: the daemon
                    // must keep taking messages off the queue.
                    assert!(
                        first_try.elapsed() < LIMIT,
                        "message {i}: the queue stayed full for {LIMIT:?}\n{}",
                        k.log()
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(Error::Sys { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                    break false
                }
                Err(e) => panic!("message {i}: {e}"),
            }
        };
        // The kernel refuses types below 1 and bodies above msgmax, and
        // only those.
        assert_eq!(
            sent,
            mtype >= 1 && body.len() <= body_max,
            "message {i}: type {mtype}, {} bytes",
            body.len()
        );
        if !sent {
            refused_by_kernel += 1;
            continue;
        }
        match expect(mtype, &body) {
            Expect::Foreign(t) => *want_replies.entry(t).or_default() += 1,
            Expect::Bad { reply } => {
                want_bad += 1;
                if let Some(id) = reply {
                    *want_replies.entry(id).or_default() += 1;
                }
            }
            Expect::Request { kind, reply } => {
                *want_requests.entry(kind.to_string()).or_default() += 1;
                if let Some(id) = reply {
                    *want_replies.entry(id).or_default() += 1;
                }
            }
        }
    }
    assert!(refused_by_kernel > 0 && refused_by_kernel < MESSAGES as u64 / 10);

    // The daemon takes the lowest type first and one type in order, so
    // once a status request is answered it has received everything sent
    // before; answers from its workers may still be on their way.
    let r = k.control("");
    assert_eq!(r.status, 0, "{r:?}");
    // Every answer is read once or, when the queue filled and a reader
    // lagged behind (many answers share an id here), removed unread by
    // kerneld and counted so (kerneld(7)); none is ever sent twice.
    let end = Instant::now() + LIMIT;
    let purged_before = before["counters"]["replies_purged"].as_u64().unwrap();
    let want_total: u64 = want_replies.values().sum();
    let mut status_asked = 0;
    loop {
        let now = got.lock().unwrap().clone();
        for (id, n) in &now {
            let want = want_replies.get(id).copied().unwrap_or(0);
            assert!(*n <= want, "id {id}: {n} answers for {want} requests");
        }
        let got_total: u64 = now.values().sum();
        if got_total == want_total {
            break;
        }
        status_asked += 1;
        let purged = k.status_json()["counters"]["replies_purged"]
            .as_u64()
            .unwrap()
            - purged_before;
        if got_total + purged == want_total {
            eprintln!("{purged} answers removed unread, the rest read");
            break;
        }
        assert!(
            Instant::now() < end,
            "replies by id: got {now:?} and {purged} removed unread, want {want_replies:?}\n{}",
            k.log()
                .lines()
                .rev()
                .take(50)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for &t in &replies {
        queue.send_raw(t, STOP, false).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }

    // Same daemon, same settings, every message accounted for.
    assert!(k.running(), "kerneld died:\n{}", k.log());
    let after = k.status_json();
    assert_eq!(after["pid"], pid);
    assert_eq!(
        (&after["delay"], &after["keep"], &after["debug"]),
        (&60.into(), &false.into(), &false.into()),
        "{after}"
    );
    assert_eq!(after["policy"]["rules"], serde_json::json!([]));
    let (reqs_after, bad_after) = counters(&after);
    let mut got_requests: BTreeMap<String, u64> = reqs_after
        .iter()
        .map(|(k, v)| (k.clone(), v - reqs_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    // The status request above, those of the wait and this json one.
    *got_requests.get_mut("status").unwrap() -= 2 + status_asked;
    got_requests.retain(|_, v| *v > 0);
    assert_eq!(got_requests, want_requests);
    // Undecodable messages and unusable ids, plus names refused after
    // decoding (at most one per name-taking request).
    let named: u64 = [
        "request_module",
        "release_module",
        "delayed_release_module",
        "cancel_release_module",
    ]
    .iter()
    .map(|t| want_requests.get(*t).copied().unwrap_or(0))
    .sum();
    let bad = bad_after - bad_before;
    assert!(
        bad >= want_bad && bad <= want_bad + named,
        "bad_messages grew by {bad}, expected {want_bad} to {}",
        want_bad + named
    );
    assert!(bad > want_bad, "hostile names were counted as bad");
    eprintln!(
        "sent {MESSAGES} ({refused_by_kernel} refused by msgsnd); requests {want_requests:?}; \
         bad {bad} (undecodable or unusable id {want_bad}); replies {}",
        want_replies.values().sum::<u64>()
    );
    // Nothing left behind on the queue.
    assert_eq!(queue.stat().unwrap().messages, 0);
    assert!(k.stop().success(), "{}", k.log());
}

//! Tests on real SysV message queues.  Each test uses its own random key and
//! a guard that removes its queue at the end, also on failure.  The tests
//! run as parallel threads of one process: the client's timer signal is
//! aimed at one thread, and one test checks that it stays so.

mod common;

use common::{free_key, gettid, wait_blocked_in, within, QueueGuard};
use kmod_ipc::{
    Client, Error, Header, Message, MsgType, Queue, TypeFilter, DEFAULT_TEXT_MAX, MAX_DAEMON_TYPE,
    REPLY_CONTINUES,
};
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound for anything that should be quick: the machine is shared.
const LIMIT: Duration = Duration::from_secs(20);

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn pid16() -> i16 {
    std::process::id() as u16 as i16
}

/// Serve `n` requests on `queue` as the daemon would (filter -255), each
/// answered with `answer(request)` split into parts of `part_max` bytes.
fn serve(
    queue: Queue,
    n: usize,
    part_max: usize,
    answer: impl Fn(&Message) -> (i64, Vec<u8>) + Send + 'static,
) -> thread::JoinHandle<Result<Vec<Message>, Error>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (_, m) = queue
                .recv(TypeFilter::UpTo(MAX_DAEMON_TYPE), DEFAULT_TEXT_MAX, false)?
                .expect("blocking receive returns a message");
            let m = m.expect("request decodes");
            if m.wants_reply() {
                let (status, text) = answer(&m);
                for part in m.reply_parts(status, std::process::id(), &text, part_max) {
                    queue.send(&part, usize::MAX, false)?;
                }
            }
            seen.push(m);
        }
        Ok(seen)
    })
}

#[test]
fn create_makes_a_private_queue_owned_by_euid() {
    let g = QueueGuard::create();
    let st = g.queue.stat().unwrap();
    assert_eq!(st.mode & 0o777, 0o600);
    assert_eq!(st.uid, euid());
    assert_eq!(st.cuid, euid());
    assert_eq!(st.messages, 0);
    assert_eq!(st.bytes, 0);
    // A queue left by an earlier daemon of ours is taken over, not refused.
    let again = Queue::create(g.key()).unwrap();
    assert_eq!(again.id(), g.queue.id());
    // Clients find it by key.
    assert_eq!(Queue::open(g.key()).unwrap().id(), g.queue.id());
}

#[test]
fn receive_by_type_filter() {
    let g = QueueGuard::create();
    let q = &g.queue;
    let hdr = Header::Old;
    // Replies (types above 255) first, so a wrong filter would meet them first.
    for (t, text) in [
        (300, "reply"),
        (256, "arp"),
        (7, "blank"),
        (2, "ppp"),
        (255, "status"),
        (2, "second"),
    ] {
        let m = Message::request(MsgType::from_number(t), 0, hdr, text);
        q.send(&m, DEFAULT_TEXT_MAX, false).unwrap();
    }
    let next = |f| {
        let (t, m) = q.recv(f, DEFAULT_TEXT_MAX, true).unwrap()?;
        let m = m.unwrap();
        assert_eq!(m.mtype, t);
        Some((t, m.text_lossy()))
    };
    // UpTo(255): lowest type first, FIFO within a type, never above 255.
    assert_eq!(next(TypeFilter::UpTo(255)), Some((2, "ppp".into())));
    assert_eq!(next(TypeFilter::UpTo(255)), Some((2, "second".into())));
    assert_eq!(next(TypeFilter::UpTo(255)), Some((7, "blank".into())));
    assert_eq!(next(TypeFilter::UpTo(255)), Some((255, "status".into())));
    assert_eq!(next(TypeFilter::UpTo(255)), None);
    // Exactly picks its type past others.
    assert_eq!(next(TypeFilter::Exactly(256)), Some((256, "arp".into())));
    assert_eq!(next(TypeFilter::Exactly(256)), None);
    // Any takes the first in the queue.
    assert_eq!(next(TypeFilter::Any), Some((300, "reply".into())));
    assert_eq!(next(TypeFilter::Any), None);
    assert_eq!(q.stat().unwrap().messages, 0);
}

#[test]
fn a_reused_buffer_receives_and_sends_what_the_owned_api_does() {
    let g = QueueGuard::create();
    let q = &g.queue;
    let mut out = Vec::new();
    for (t, id, hdr, text) in [
        (2, 4000, Header::Old, &b"rtnl-link-dummy"[..]),
        (255, 4001, Header::New { pid: 7 }, &b"json"[..]),
        (3, 0, Header::Old, &b""[..]),
    ] {
        kmod_ipc::encode_into(&mut out, t, id, hdr, text, DEFAULT_TEXT_MAX).unwrap();
        let owned = Message::request(MsgType::from_number(t), id, hdr, text);
        assert_eq!(out, owned.encode(DEFAULT_TEXT_MAX).unwrap());
        q.send_encoded(&out, true).unwrap();
    }
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    while let Some((t, body)) = q.recv_into(TypeFilter::Any, true, &mut buf).unwrap() {
        let view = kmod_ipc::MessageView::decode_body(t, body, DEFAULT_TEXT_MAX).unwrap();
        assert_eq!(
            view.to_message(),
            Message::decode_body(t, body, DEFAULT_TEXT_MAX).unwrap()
        );
        seen.push((t, view.id, view.header, view.text.to_vec()));
    }
    assert_eq!(
        seen,
        [
            (2, 4000, Header::Old, b"rtnl-link-dummy".to_vec()),
            (255, 4001, Header::New { pid: 7 }, b"json".to_vec()),
            (3, 0, Header::Old, Vec::new()),
        ]
    );
    // A NUL inside the text and a truncated buffer are refused, not sent.
    assert!(kmod_ipc::encode_into(&mut out, 2, 1, Header::Old, b"a\0b", 10).is_err());
    assert!(q.send_encoded(&out[..4], true).is_err());
    assert_eq!(q.stat().unwrap().messages, 0);
}

#[test]
fn nonblocking_receive_on_empty_queue_is_none() {
    let g = QueueGuard::create();
    for f in [
        TypeFilter::Any,
        TypeFilter::Exactly(2),
        TypeFilter::UpTo(255),
    ] {
        assert!(g.queue.recv_raw(f, true).unwrap().is_none(), "{f:?}");
    }
}

#[test]
fn client_request_gets_the_servers_reply() {
    let g = QueueGuard::create();
    let server = serve(g.queue.clone(), 2, usize::MAX, |m| {
        let mut out = b"loaded ".to_vec();
        out.extend_from_slice(&m.text);
        (0, out)
    });
    let client = Client::connect(g.key()).unwrap();
    let rid = Client::tool_reply_id();
    let r = client
        .request(MsgType::RequestModule, b"ppp", rid, Some(LIMIT))
        .unwrap();
    assert_eq!(r.status, 0);
    assert_eq!(r.text, b"loaded ppp");
    assert_eq!(r.header, Header::New { pid: pid16() });

    // The 1995 header: the reply mirrors it.
    let old = Client::connect(g.key()).unwrap().with_header(Header::Old);
    let r = old
        .request(MsgType::RequestModule, b"slip", rid + 1, Some(LIMIT))
        .unwrap();
    assert_eq!(r.text, b"loaded slip");
    assert_eq!(r.header, Header::Old);

    let seen = server.join().unwrap().unwrap();
    assert_eq!(seen[0].header, Header::New { pid: pid16() });
    assert_eq!(seen[0].id, rid);
    assert_eq!(seen[0].msg_type(), MsgType::RequestModule);
    assert_eq!(seen[1].header, Header::Old);
}

#[test]
fn request_without_server_times_out() {
    let g = QueueGuard::create();
    let client = Client::connect(g.key()).unwrap();
    let t = Duration::from_millis(300);
    let start = Instant::now();
    let r = client.request(MsgType::RequestModule, b"ppp", 5000, Some(t));
    let took = start.elapsed();
    assert!(matches!(r, Err(Error::Timeout(d)) if d == t), "{r:?}");
    assert!(took >= t, "returned before the timeout: {took:?}");
    // A correctness bound (the timer must fire), not a speed claim.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The request itself was sent and waits for a daemon.
    assert_eq!(g.queue.stat().unwrap().messages, 1);
}

#[test]
fn request_times_out_on_a_full_queue() {
    // A dead daemon leaves its queue full: the send blocks, and the
    // timeout must cover it too.
    let g = QueueGuard::create();
    g.queue.set_max_bytes(64).unwrap();
    let filler = Message::request(MsgType::RequestModule, 0, Header::Old, "x".repeat(40));
    g.queue.send(&filler, DEFAULT_TEXT_MAX, true).unwrap();
    assert!(
        g.queue.send(&filler, DEFAULT_TEXT_MAX, true).is_err(),
        "queue should be full"
    );
    let key = g.key();
    let (r, took) = within(LIMIT, move || {
        let client = Client::connect(key).unwrap();
        let start = Instant::now();
        let r = client.request(
            MsgType::RequestModule,
            b"ppp",
            5000,
            Some(Duration::from_millis(300)),
        );
        (r, start.elapsed())
    });
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn timeout_works_in_a_thread_that_blocks_all_signals() {
    let g = QueueGuard::create();
    let key = g.key();
    let (r, still_blocked) = within(LIMIT, move || {
        // SAFETY: plain signal-mask calls on this thread.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        }
        let client = Client::connect(key).unwrap();
        let r = client.request(
            MsgType::RequestModule,
            b"ppp",
            5000,
            Some(Duration::from_millis(200)),
        );
        // SAFETY: as above.
        let still_blocked = unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, kmod_ipc::interrupt_signal()) == 1
        };
        (r, still_blocked)
    });
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert!(still_blocked, "the thread's signal mask must be restored");
}

#[test]
fn timer_signal_hits_only_its_own_thread() {
    let g = QueueGuard::create();
    // A bystander blocked in a raw receive: any signal would end it with
    // Interrupted instead of the message.
    let q = g.queue.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let bystander = thread::spawn(move || {
        tx.send(gettid()).unwrap();
        q.recv_raw(TypeFilter::Exactly(7777), false)
    });
    wait_blocked_in(rx.recv().unwrap(), libc::SYS_msgrcv);
    let timers: Vec<_> = [150u64, 300, 450]
        .into_iter()
        .map(|ms| {
            let key = g.key();
            thread::spawn(move || {
                Client::connect(key)
                    .unwrap()
                    .wait_reply(6000 + ms as i64, Some(Duration::from_millis(ms)))
            })
        })
        .collect();
    for t in timers {
        let r = t.join().unwrap();
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    }
    // Let any stray periodic signal land before the bystander is released.
    thread::sleep(Duration::from_millis(50));
    g.queue
        .send_raw(7777, b"\0\0\0\0\0\0\0\0hi\0", false)
        .unwrap();
    let got = within(LIMIT, move || bystander.join().unwrap());
    let (t, body) = got.unwrap().expect("the message, not an interruption");
    assert_eq!(t, 7777);
    assert_eq!(&body[8..], b"hi\0");
}

#[test]
fn removal_wakes_a_waiting_client() {
    for timeout in [None, Some(Duration::from_secs(60))] {
        let g = QueueGuard::create();
        let client = Client::connect(g.key()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = thread::spawn(move || {
            tx.send(gettid()).unwrap();
            client.wait_reply(4242, timeout)
        });
        // Removed while blocked in msgrcv: EIDRM.  (Removed before the
        // call, EINVAL, is a_removed_queue_reads_as_removed.)
        wait_blocked_in(rx.recv().unwrap(), libc::SYS_msgrcv);
        g.queue.remove().unwrap();
        let r = within(LIMIT, move || waiter.join().unwrap());
        assert!(matches!(r, Err(Error::Removed)), "{timeout:?}: {r:?}");
    }
}

#[test]
fn a_removed_queue_reads_as_removed() {
    let g = QueueGuard::create();
    let q = g.queue.clone();
    g.queue.remove().unwrap();
    // The id is gone before the call (EINVAL, not EIDRM).
    assert!(matches!(
        q.recv_raw(TypeFilter::Any, true),
        Err(Error::Removed)
    ));
    assert!(matches!(
        q.recv_raw(TypeFilter::Any, false),
        Err(Error::Removed)
    ));
    let m = Message::request(MsgType::RequestModule, 0, Header::Old, "x");
    assert!(matches!(
        q.send(&m, DEFAULT_TEXT_MAX, false),
        Err(Error::Removed)
    ));
    assert!(matches!(q.stat(), Err(Error::Removed)));
}

#[test]
fn removal_wakes_a_sender_blocked_on_a_full_queue() {
    let g = QueueGuard::create();
    g.queue.set_max_bytes(64).unwrap();
    let m = Message::request(MsgType::RequestModule, 0, Header::Old, "x".repeat(40));
    g.queue.send(&m, DEFAULT_TEXT_MAX, true).unwrap();
    let q = g.queue.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let sender = thread::spawn(move || {
        tx.send(gettid()).unwrap();
        q.send(&m, DEFAULT_TEXT_MAX, false)
    });
    wait_blocked_in(rx.recv().unwrap(), libc::SYS_msgsnd);
    g.queue.remove().unwrap();
    let r = within(LIMIT, move || sender.join().unwrap());
    assert!(matches!(r, Err(Error::Removed)), "{r:?}");
}

#[test]
fn an_invalid_message_type_is_not_mistaken_for_removal() {
    let g = QueueGuard::create();
    // mtype must be positive: EINVAL while the queue is alive.
    let r = g.queue.send_raw(0, b"\0\0\0\0\0\0\0\0\0", true);
    match r {
        Err(Error::Sys { call, source }) => {
            assert_eq!(call, "msgsnd");
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_loose_queue_is_refused_as_squatted() {
    let key = free_key();
    let g = QueueGuard::adopt(Queue::create_unchecked(key, 0o666).unwrap());
    match Queue::create(key) {
        Err(Error::Squatted {
            key: k,
            qid,
            uid,
            mode,
            want_uid,
        }) => {
            assert_eq!(k, key);
            assert_eq!(qid, g.queue.id());
            assert_eq!(uid, euid());
            assert_eq!(mode, 0o666);
            assert_eq!(want_uid, euid());
        }
        other => panic!("{other:?}"),
    }
    // Group access alone is enough to refuse it.
    g.queue.set_owner_mode(euid(), 0o640).unwrap();
    assert!(matches!(Queue::create(key), Err(Error::Squatted { .. })));
    // Tightened back, it is ours again.
    g.queue.set_owner_mode(euid(), 0o600).unwrap();
    assert_eq!(Queue::create(key).unwrap().id(), g.queue.id());
}

#[test]
fn a_queue_owned_by_someone_else_is_refused_as_squatted() {
    let g = QueueGuard::create();
    g.queue.set_owner_mode(1000, 0o600).unwrap();
    let want = euid();
    if want == 1000 {
        // Pick another stranger when the tests run as uid 1000.
        g.queue.set_owner_mode(1001, 0o600).unwrap();
    }
    let r = Queue::create(g.key());
    match r {
        Err(Error::Squatted { uid, want_uid, .. }) => {
            assert_ne!(uid, want);
            assert_eq!(want_uid, want);
        }
        Err(Error::PermissionDenied { .. }) if want != 0 => {} // not ours to open
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_queue_means_kerneld_is_not_running() {
    let key = free_key();
    let r = Client::connect(key);
    match r {
        Err(e @ Error::NotRunning { .. }) => {
            let want = format!(
                "kerneld is not running (no message queue at key {:#010x})",
                key.0 as u32
            );
            assert_eq!(e.to_string(), want);
            assert!(want.contains("at key 0x"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(Queue::open(key), Err(Error::NotRunning { .. })));
}

#[test]
fn a_long_reply_in_parts_is_joined() {
    let g = QueueGuard::create();
    // Longer than one message and than the queue's capacity (16 KiB by
    // default), so the server blocks until the client reads: the parts
    // must flow, not pile up.
    let text: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let part_max = g.queue.text_max(Header::new_with_pid(0));
    let expected = text.clone();
    let server = serve(g.queue.clone(), 1, part_max, move |_| (3, text.clone()));
    let client = Client::connect(g.key()).unwrap();
    let r = client
        .request(MsgType::Status, b"", 9000, Some(LIMIT))
        .unwrap();
    assert_eq!(r.status, 3, "the last part carries the real status");
    assert_eq!(r.text.len(), expected.len());
    assert!(r.text == expected, "parts joined in order");
    server.join().unwrap().unwrap();
    assert_eq!(g.queue.stat().unwrap().messages, 0);
}

#[test]
fn reply_parts_sent_by_hand_are_joined() {
    let g = QueueGuard::create();
    let req = Message::request(MsgType::Status, 9100, Header::Old, "");
    for part in req.reply_parts(0, 1, b"one two three", 4) {
        g.queue.send(&part, usize::MAX, false).unwrap();
    }
    assert_eq!(g.queue.stat().unwrap().messages, 4);
    let client = Client::connect(g.key()).unwrap();
    let r = client.wait_reply(9100, Some(LIMIT)).unwrap();
    assert_eq!(r.text, b"one two three");
    assert_eq!(r.status, 0);
    assert_eq!(r.header, Header::Old);
    // An empty status-only reply is one message.
    let parts = req.reply_parts(7, 1, b"", 4);
    assert_eq!(parts.len(), 1);
    g.queue.send(&parts[0], usize::MAX, false).unwrap();
    let r = client.wait_reply(9100, Some(LIMIT)).unwrap();
    assert_eq!((r.status, r.text.len()), (7, 0));
    assert_eq!(REPLY_CONTINUES, 0x4000_0000);
}

#[test]
fn an_oversized_message_does_not_jam_the_queue() {
    let g = QueueGuard::create();
    // A reader with a 64-byte buffer, as a fixed-size C struct would have.
    let small = g.queue.clone().with_body_max(64);
    assert_eq!(small.body_max(), 64);
    let big = Message::request(MsgType::RequestModule, 0, Header::Old, "m".repeat(1000));
    g.queue.send(&big, DEFAULT_TEXT_MAX, false).unwrap();
    let ok = Message::request(MsgType::RequestModule, 0, Header::Old, "ppp");
    g.queue.send(&ok, DEFAULT_TEXT_MAX, false).unwrap();

    // The big one is cut to the buffer: a typed error,
    // and it leaves the queue instead of blocking it with E2BIG forever.
    let (t, body) = small
        .recv_raw(TypeFilter::UpTo(255), true)
        .unwrap()
        .unwrap();
    assert_eq!(
        (t, body.len()),
        (2, 65),
        "one byte past the buffer marks the cut"
    );
    let (_, decoded) = small
        .recv(TypeFilter::UpTo(255), DEFAULT_TEXT_MAX, true)
        .unwrap()
        .unwrap();
    assert_eq!(decoded.unwrap(), ok);
    assert_eq!(g.queue.stat().unwrap().messages, 0);

    // The same through recv: the cut message is reported as cut.
    g.queue.send(&big, DEFAULT_TEXT_MAX, false).unwrap();
    let (_, decoded) = small
        .recv(TypeFilter::Any, DEFAULT_TEXT_MAX, true)
        .unwrap()
        .unwrap();
    assert!(matches!(
        decoded,
        Err(kmod_ipc::DecodeError::Cut { max: 64 })
    ));
    // with_body_max never goes above msgmax.
    let huge = g.queue.clone().with_body_max(usize::MAX);
    assert_eq!(huge.body_max(), g.queue.body_max());
}

#[test]
fn stale_replies_are_discarded_by_request() {
    let g = QueueGuard::create();
    let rid = 7000;
    // Two answers to an earlier request whose client gave up.
    let old_req = Message::request(MsgType::RequestModule, rid, Header::Old, "old");
    for status in [99, 98] {
        g.queue
            .send(&old_req.reply(status, 1, "stale"), usize::MAX, false)
            .unwrap();
    }
    let server = serve(g.queue.clone(), 1, usize::MAX, |_| (0, b"fresh".to_vec()));
    let r = Client::connect(g.key())
        .unwrap()
        .request(MsgType::RequestModule, b"new", rid, Some(LIMIT))
        .unwrap();
    assert_eq!((r.status, r.text.as_slice()), (0, b"fresh".as_slice()));
    server.join().unwrap().unwrap();
    assert_eq!(g.queue.stat().unwrap().messages, 0);
}

#[test]
fn reply_ids_the_daemon_receives_are_refused() {
    let g = QueueGuard::create();
    // A pending request for the daemon that a careless client could steal.
    let pending = Message::request(MsgType::RequestModule, 0, Header::Old, "ppp");
    g.queue.send(&pending, DEFAULT_TEXT_MAX, false).unwrap();
    let client = Client::connect(g.key()).unwrap();
    for rid in [i64::MIN, -1, 0, 1, 2, 255] {
        let r = client.request(MsgType::RequestModule, b"x", rid, Some(LIMIT));
        assert!(
            matches!(r, Err(Error::InvalidReplyId(id)) if id == rid),
            "{r:?}"
        );
        let r = client.wait_reply(rid, Some(LIMIT));
        assert!(matches!(r, Err(Error::InvalidReplyId(_))), "{r:?}");
    }
    // Still there, and nothing was added.
    let st = g.queue.stat().unwrap();
    assert_eq!(st.messages, 1);
    let (_, m) = g
        .queue
        .recv(TypeFilter::UpTo(255), DEFAULT_TEXT_MAX, true)
        .unwrap()
        .unwrap();
    assert_eq!(m.unwrap(), pending);
}

#[test]
fn stat_reports_messages_bytes_and_pids() {
    let g = QueueGuard::create();
    let a = Message::request(MsgType::RequestModule, 0, Header::Old, "ppp");
    let b = Message::request(MsgType::Status, 1100, Header::New { pid: 5 }, "keep");
    g.queue.send(&a, DEFAULT_TEXT_MAX, false).unwrap();
    g.queue.send(&b, DEFAULT_TEXT_MAX, false).unwrap();
    let me = std::process::id() as i32;
    let st = g.queue.stat().unwrap();
    assert_eq!(st.messages, 2);
    // msg_cbytes counts bodies only (msgsz), not mtype.
    assert_eq!(st.bytes, (a.body_len() + b.body_len()) as u64);
    assert_eq!(st.bytes, (8 + 3 + 1) + (12 + 4 + 1));
    assert_eq!(st.last_sender, me);
    assert!(st.max_bytes > 0);
    g.queue.recv_raw(TypeFilter::Any, true).unwrap().unwrap();
    let st = g.queue.stat().unwrap();
    assert_eq!(st.messages, 1);
    assert_eq!(st.bytes, b.body_len() as u64);
    assert_eq!(st.last_receiver, me);

    // A sender in another process shows up as that process.  The buffer is
    // built before fork: the child of a threaded process may only make
    // async-signal-safe calls.
    let buf = a.encode(DEFAULT_TEXT_MAX).unwrap();
    let qid = g.queue.id();
    // SAFETY: the child calls only msgsnd and _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        // SAFETY: buf holds mtype and its body.
        unsafe {
            let r = libc::msgsnd(qid, buf.as_ptr().cast(), buf.len() - 8, 0);
            libc::_exit(if r == 0 { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let st = g.queue.stat().unwrap();
    assert_eq!(st.messages, 2);
    assert_eq!(st.last_sender, child);
    assert_ne!(st.last_sender, me);
}

#[test]
fn a_huge_timeout_does_not_overflow() {
    let g = QueueGuard::create();
    let req = Message::request(MsgType::Status, 9200, Header::Old, "");
    g.queue
        .send(&req.reply(0, 1, "fine"), usize::MAX, false)
        .unwrap();
    let key = g.key();
    let r = within(LIMIT, move || {
        Client::connect(key)
            .unwrap()
            .wait_reply(9200, Some(Duration::MAX))
    });
    assert_eq!(r.unwrap().text, b"fine");
}

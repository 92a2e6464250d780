//! One received message, from its bytes to its answer: decode a borrowed
//! view, apply the id rules, validate the name, count, then the one match
//! over message types.  The logic lives in the modules the match calls
//! (`request`, `expiry`, `control`, `actions` for the worker pool); the
//! reply edge is [`Replies::reply`](crate::edge::reply::Replies::reply).

use crate::names;
use crate::server::Daemon;
use crate::who::requester::Requester;
use crate::work::jobs::{Planned, Work};
use crate::work::programs::Program;
use crate::work::request::{Ask, Plan};
use crate::{log_debug, operator::log};
use kmod_ipc::{Header, MessageView, MsgType, DEFAULT_TEXT_MAX, KERNELD_MINSEQ, MAX_DAEMON_TYPE};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Handle one received body.  Never panics on any input.
pub fn handle(d: &Arc<Daemon>, mtype: i64, body: &[u8]) {
    let msg = match MessageView::decode_body(mtype, body, DEFAULT_TEXT_MAX) {
        Ok(m) => m,
        Err(e) => return bad_message(d, mtype, body, &e.to_string()),
    };
    log_debug!(
        "received {} (type {}) id {} {}'{}'",
        msg.msg_type(),
        msg.mtype,
        msg.id,
        msg.pid()
            .map_or(String::new(), |p| format!("from pid {p} ")),
        msg.text_lossy()
    );
    if let Some(why) = d.replies.unanswerable(msg.id) {
        d.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
        // The first 16 in full, then the 32nd, 64th...: a flood of
        // such requests must not flood the log.
        let n = d.counters.refused_ids.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 16 || n.is_power_of_two() {
            log::warn(&format!(
                "dropping {} with reply id {} (type {}, from {}): {why} ({n} so far)",
                msg.msg_type(),
                msg.id,
                msg.mtype,
                msg.pid()
                    .map_or("an unknown pid".to_string(), |p| format!("pid {p}")),
            ));
        }
        return;
    }
    d.counters.count_request(msg.msg_type());
    match msg.msg_type() {
        MsgType::Status => {
            let out = d.control(&msg.text_lossy());
            d.replies.reply(&msg, out.status, out.text.as_bytes());
        }
        MsgType::RequestModule => {
            if let Some(name) = checked_name(d, &msg) {
                request_module_quick(d, &msg, name, body);
            }
        }
        MsgType::ReleaseModule => {
            if checked_name(d, &msg).is_some() {
                crate::work::actions::submit(d, &msg, Work::Release, None, String::new());
            }
        }
        MsgType::DelayedRelease => {
            if let Some(name) = checked_name(d, &msg) {
                delay_release(d, &msg, name);
            }
        }
        MsgType::CancelRelease => {
            if let Some(name) = checked_name(d, &msg) {
                let text = if d.expiry.cancel(name) {
                    format!("release of {name} cancelled")
                } else {
                    format!("no release of {name} was pending")
                };
                d.replies.reply(&msg, 0, text.as_bytes());
            }
        }
        MsgType::System => run_program(d, &msg, Program::System),
        MsgType::RequestRoute => run_program(d, &msg, Program::Route),
        MsgType::Blanker => run_program(d, &msg, Program::Blanker),
        MsgType::Pnp => run_program(d, &msg, Program::Pnp),
        MsgType::Arp => run_program(d, &msg, Program::Arp),
        MsgType::Unknown(n) => {
            d.counters.failed.fetch_add(1, Ordering::Relaxed);
            log::warn(&format!("unknown message type {n} (id {})", msg.id));
            d.replies
                .reply(&msg, 1, format!("unknown message type {n}").as_bytes());
        }
    }
}

/// Type 2 on the receive thread: a quick answer (remembered failure,
/// denial, unknown name, blacklisted alias, already loaded) is sent
/// from here; a load, or a request identical to one in progress, goes
/// to the worker pool.
fn request_module_quick(d: &Arc<Daemon>, msg: &MessageView, name: &str, body: &[u8]) {
    let requester = requester_of(d, msg, name, body);
    let identity = d.requests.identity(requester.as_ref());
    d.expiry.requested(name, d.settings.delay());
    // Quick answers skip the hop to a worker, unless the same request
    // is in progress (then it joins that).
    let busy = d
        .jobs
        .lock()
        .unwrap()
        .in_progress(MsgType::RequestModule, msg.text, &identity);
    if busy {
        return crate::work::actions::submit(d, msg, Work::Load(None), requester, identity);
    }
    let ask = Ask::new(name, requester.as_ref(), &identity);
    match d.requests.decide(&d.contexts, &ask, &d.counters) {
        Plan::Settled(mut a) => {
            d.counters.count_status(a.outcome.status);
            d.replies
                .reply(msg, a.outcome.status, a.outcome.text.as_bytes());
            // The request's bookkeeping and line come once the requester
            // has its answer: nothing in the answer depends on either.
            // The bookkeeping is done before the next message is read;
            // the line, whose write(2) is the costliest step of a quick
            // answer, is made and written by the log thread.
            d.requests.finish(&ask, &mut a);
            a.line.emit_later(requester);
        }
        Plan::Load(resolution) => {
            let since = ask.since;
            let planned = Planned { resolution, since };
            crate::work::actions::submit(d, msg, Work::Load(Some(planned)), requester, identity);
        }
    }
}

/// Types answered by a program, on the worker pool.
fn run_program(d: &Arc<Daemon>, msg: &MessageView, program: Program) {
    crate::work::actions::submit(d, msg, Work::Program(program), None, String::new());
}

/// Type 5: release `name` later, if kerneld loaded it.
fn delay_release(d: &Daemon, msg: &MessageView, name: &str) {
    let delay = d.settings.delay();
    match d.expiry.delay_release(name, delay) {
        Ok(()) => d.replies.reply(
            msg,
            0,
            format!("{name} will be released in {delay} s").as_bytes(),
        ),
        Err(why) => {
            log::warn(&format!("delayed release of {name} refused: {why}"));
            d.replies.reply(msg, 1, format!("{name}: {why}").as_bytes());
        }
    }
}

/// Who asked for `name`: the task the in-kernel sender names after the
/// text's NUL (the tracer is then not asked), else the traced task for a
/// kernel request through the shim, else nobody known (the 16-bit pid
/// of the new header).  The receive thread waits for a trace event only
/// when a rule looks at the requester; else it takes one already read,
/// and a worker waits for it if the request is a load (`actions.rs`).
fn requester_of(d: &Daemon, msg: &MessageView, name: &str, body: &[u8]) -> Option<Requester> {
    let tracer = d.tracer.as_ref();
    let wait = tracer.is_some() && d.requests.needs_requester();
    if let Some(r) = Requester::from_body(body) {
        // Its tracepoint event, if any, would be misattributed later: it
        // is dropped unread, and nothing waits for it.
        if let Some(t) = tracer {
            t.skip(name);
        }
        return Some(r);
    }
    let t = tracer.filter(|_| msg.id >= KERNELD_MINSEQ)?;
    if wait {
        t.claim(name)
    } else {
        t.claim_now(name)
    }
}

/// The validated name of a request, borrowed from its text (no copy).
fn checked_name<'m>(d: &Daemon, msg: &MessageView<'m>) -> Option<&'m str> {
    match names::validate(msg.text) {
        Ok(n) => Some(n),
        Err(e) => {
            d.counters.failed.fetch_add(1, Ordering::Relaxed);
            d.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
            log::warn(&format!(
                "refused {} for {:?}: {e}",
                msg.msg_type(),
                msg.text_lossy()
            ));
            d.replies.reply(msg, 1, format!("refused: {e}").as_bytes());
            None
        }
    }
}

/// A body that does not decode: counted, logged, and answered if its
/// sender can be identified and waits.
fn bad_message(d: &Daemon, mtype: i64, body: &[u8], why: &str) {
    d.counters.bad_messages.fetch_add(1, Ordering::Relaxed);
    log::warn(&format!(
        "malformed message of type {mtype} ({} bytes): {why}",
        body.len()
    ));
    let Some(id) = body
        .get(..8)
        .map(|b| i64::from_ne_bytes(b.try_into().unwrap()))
    else {
        return;
    };
    if id <= MAX_DAEMON_TYPE {
        return;
    }
    let header = match body.get(8..12) {
        Some(h) if i16::from_ne_bytes([h[0], h[1]]) == kmod_ipc::NEW_PROTOCOL_VERSION => {
            Header::New { pid: 0 }
        }
        _ => Header::Old,
    };
    let req = MessageView {
        mtype,
        id,
        header,
        text: &[],
    };
    d.replies
        .reply(&req, 1, format!("malformed message: {why}").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeKernel;
    use crate::state::expiry::DELAYED_MAX;
    use crate::testing::{counting, daemon, test_key};
    use crate::work::jobs::MAX_WAITERS;
    use kmod_ipc::{Client, Header, Key, Message};
    use std::time::Duration;

    #[test]
    fn identical_requests_share_one_load_and_all_are_answered() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        k.load_time = Duration::from_millis(300);
        let fake = k.shared();
        let (d, _queue) = daemon(fake.clone(), test_key(1));
        for i in 0..5 {
            let m = Message::request(
                MsgType::RequestModule,
                5000 + i,
                Header::Old,
                "rtnl-link-dummy",
            );
            let body = m.encode_body(1024).unwrap();
            handle(&d, m.mtype, &body);
        }
        let client = Client::connect(Key(test_key(1))).unwrap();
        for i in 0..5 {
            let r = client
                .wait_reply(5000 + i, Some(Duration::from_secs(10)))
                .unwrap();
            assert_eq!(r.status, 0, "{}", r.text_lossy());
            assert!(
                r.text_lossy().contains("loaded dummy"),
                "{}",
                r.text_lossy()
            );
        }
        assert_eq!(fake.0.lock().unwrap().loads, ["rtnl-link-dummy"]);
        assert_eq!(d.counters.merged.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn unknown_names_are_answered_without_a_worker_and_loads_use_one() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let (d, _queue) = daemon(k.shared(), test_key(6));
        let client = Client::connect(Key(test_key(6))).unwrap();
        for (i, name) in ["nosuch", "nosuch", "rtnl-link-dummy"].iter().enumerate() {
            let id = 6000 + i as i64;
            let m = Message::request(MsgType::RequestModule, id, Header::Old, *name);
            handle(&d, m.mtype, &m.encode_body(1024).unwrap());
            let r = client
                .wait_reply(id, Some(Duration::from_secs(10)))
                .unwrap();
            let want = if i < 2 { 1 } else { 0 };
            assert_eq!(r.status, want, "{name}: {}", r.text_lossy());
            if i < 2 {
                assert_eq!(d.workers(), 0, "an unknown name needs no worker");
            }
        }
        assert!(d.workers() >= 1, "a load goes to a worker");
        assert_eq!(d.counters.cached.load(Ordering::Relaxed), 1);
        assert_eq!(d.counters.failed.load(Ordering::Relaxed), 2);
        assert_eq!(d.counters.succeeded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_action_gathers_at_most_max_waiters() {
        let mut k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        k.load_time = Duration::from_secs(2);
        let (d, _queue) = daemon(k.shared(), test_key(10));
        let client = Client::connect(Key(test_key(10))).unwrap();
        let send = |id: i64| {
            let m = Message::request(MsgType::RequestModule, id, Header::Old, "rtnl-link-dummy");
            handle(&d, m.mtype, &m.encode_body(1024).unwrap());
        };
        for _ in 0..MAX_WAITERS {
            send(10_000);
        }
        send(10_001);
        let r = client
            .wait_reply(10_001, Some(Duration::from_secs(1)))
            .expect("the request beyond MAX_WAITERS is answered at once");
        assert_eq!(r.status, 1, "{}", r.text_lossy());
        assert!(
            r.text_lossy().contains("identical requests wait"),
            "{}",
            r.text_lossy()
        );
        assert_eq!(d.counters.refused_waiters.load(Ordering::Relaxed), 1);
        assert_eq!(
            d.counters.merged.load(Ordering::Relaxed),
            MAX_WAITERS as u64 - 1
        );
    }

    #[test]
    fn only_modules_kerneld_loaded_can_be_released_later() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let (d, _queue) = daemon(k.shared(), test_key(11));
        let client = Client::connect(Key(test_key(11))).unwrap();
        let ask = |id: i64, name: &str| {
            let m = Message::request(MsgType::DelayedRelease, id, Header::Old, name);
            handle(&d, m.mtype, &m.encode_body(1024).unwrap());
            client
                .wait_reply(id, Some(Duration::from_secs(10)))
                .unwrap()
        };
        let r = ask(11_000, "dummy");
        assert_eq!(r.status, 1, "{}", r.text_lossy());
        assert!(
            r.text_lossy().contains("did not load"),
            "{}",
            r.text_lossy()
        );
        assert_eq!(
            crate::work::actions::request_module(&d, "rtnl-link-dummy", None).status,
            0
        );
        let r = ask(11_001, "dummy");
        assert_eq!(r.status, 0, "{}", r.text_lossy());
        assert_eq!(d.expiry.pending(), 1);
    }

    #[test]
    fn delayed_releases_are_bounded() {
        let k = FakeKernel::with_tree(&[]);
        let (d, _queue) = daemon(k.shared(), test_key(9));
        let client = Client::connect(Key(test_key(9))).unwrap();
        let ask = |i: i64, name: &str| {
            let id = 9000 + i;
            let m = Message::request(MsgType::DelayedRelease, id, Header::Old, name);
            handle(&d, m.mtype, &m.encode_body(1024).unwrap());
            client
                .wait_reply(id, Some(Duration::from_secs(10)))
                .unwrap()
        };
        for i in 0..DELAYED_MAX {
            d.expiry.pend(&format!("m{i}"));
        }
        for name in ["one-too-many", "m7"] {
            let m = [name.to_string()];
            d.expiry.with_record(|r| r.add(name, &m, &m));
        }
        let r = ask(0, "one-too-many");
        assert_eq!(r.status, 1, "{}", r.text_lossy());
        assert!(
            r.text_lossy().contains("pending already"),
            "{}",
            r.text_lossy()
        );
        // A name already pending is rescheduled all the same.
        assert_eq!(ask(1, "m7").status, 0);
        assert_eq!(d.expiry.pending(), DELAYED_MAX);
    }

    /// Allocations per quick answer on the receive thread, the fake
    /// backend's included: before the redesign (dad3877) 9.6, 9.1 and
    /// 12.0; at 250c272 8.6, 6.0 and 11.0; with the reused send buffer,
    /// the borrowed view and jobs without keys 4.6, 2.0 and 7.0, of which
    /// the fake's resolve makes 0, 0 and 4 (a test double: the libkmod
    /// backend allocates otherwise).  Not to grow again.
    const ALLOCS_UNKNOWN: f64 = 5.0;
    const ALLOCS_CACHED: f64 = 2.5;
    const ALLOCS_LOADED: f64 = 7.5;
    /// kerneld's own share (the fake's resolve taken off): the goal of
    /// issue 15.
    const ALLOCS_OWN: f64 = 6.0;

    /// Allocations on the receiving thread per quick answer: handle() of an
    /// unknown name (default configuration: the failure is remembered), of
    /// the same name again (negative cache), and of a module already loaded.
    #[test]
    fn allocations_per_quick_answer() {
        let k = FakeKernel::with_tree(&[("dummy", &[])]).alias("rtnl-link-dummy", "dummy");
        let k = k.shared();
        let (d, _queue) = daemon(k.clone(), test_key(12));
        let client = Client::connect(Key(test_key(12))).unwrap();
        assert_eq!(
            crate::work::actions::request_module(&d, "dummy", None).status,
            0
        );
        const N: u64 = 200;
        let measure = |what: &str, name: &dyn Fn(u64) -> String| {
            let mut total = 0;
            for i in 0..N + 20 {
                let id = 12_000 + i as i64;
                let m = Message::request(MsgType::RequestModule, id, Header::Old, name(i).as_str());
                let body = m.encode_body(1024).unwrap();
                let before = counting::now();
                handle(&d, m.mtype, &body);
                let n = counting::now() - before;
                client
                    .wait_reply(id, Some(Duration::from_secs(10)))
                    .unwrap();
                if i >= 20 {
                    total += n;
                }
            }
            let per = total as f64 / N as f64;
            eprintln!("allocations per quick answer, {what}: {per:.1}");
            per
        };
        // What the fake backend's resolve allocates by itself.
        let backend = |name: &str| {
            let mut f = k.clone();
            let before = counting::now();
            let _ = crate::backend::Loader::resolve(&mut f, name);
            (counting::now() - before) as f64
        };
        let unknown = measure("unknown name", &|i| format!("nosuch-{i}"));
        let cached = measure("negative cache", &|_| "nosuch-5".to_string());
        let loaded = measure("already loaded", &|_| "dummy".to_string());
        let own = [
            unknown - backend("nosuch-1"),
            cached,
            loaded - backend("dummy"),
        ];
        eprintln!("kerneld's own (the fake backend's resolve taken off): {own:?}");
        for n in own {
            assert!(n <= ALLOCS_OWN, "{own:?}");
        }
        assert!(unknown <= ALLOCS_UNKNOWN, "{unknown}");
        assert!(cached <= ALLOCS_CACHED, "{cached}");
        assert!(loaded <= ALLOCS_LOADED, "{loaded}");
    }
}

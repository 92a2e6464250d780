//! 7. A flood from dead clients, and 8. memory under sustained load.

use crate::proc::{fresh_id, progress, Kerneld};
use crate::sections::Section;
use crate::table::{verdict, Table};
use kerneld_tests::flood::{flood, status_answered_in};
use kmod_ipc::MsgType;
use kmod_ipc::Queue;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flood `kd` (at the default 16 KiB capacity) with `messages` random
/// messages, a third of them asking for replies nobody reads; then time a
/// status request, and the queue's return to empty.
pub fn flood_recovery(kd: &Kerneld, messages: usize) -> Section {
    let q = Queue::open(kd.key).unwrap_or_else(|e| crate::proc::abort(&e.to_string()));
    let _ = q.set_max_bytes(16384);
    let before = kd.json();
    let f = flood(&q, messages, 0x6b64, Duration::from_secs(600))
        .unwrap_or_else(|e| crate::proc::abort(&format!("flood: {e}")));
    progress();
    let answered = status_answered_in(kd.key, Duration::from_secs(30))
        .unwrap_or_else(|e| crate::proc::abort(&e));
    let t0 = Instant::now();
    let mut empty = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if q.stat().is_ok_and(|st| st.messages == 0) {
            empty = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = kd.json();
    let delta = |k: &str| {
        after["counters"][k].as_u64().unwrap_or(0) - before["counters"][k].as_u64().unwrap_or(0)
    };
    let (dropped, purged) = (delta("replies_dropped"), delta("replies_purged"));
    let goal = answered <= Duration::from_secs(2);
    let mut t = Table::new(&["figure", "value", "goal"]);
    t.row(vec![
        format!(
            "flood: {} random messages, {} asking for replies nobody reads",
            f.sent, f.unread
        ),
        format!(
            "{:.1} s ({:.0} messages/s; the sender found the queue full {} times)",
            f.took.as_secs_f64(),
            f.sent as f64 / f.took.as_secs_f64(),
            f.full
        ),
        String::new(),
    ]);
    t.row(vec![
        "from the flood's end to the first status answer (queue capacity 16 KiB)".into(),
        format!("{:.1} ms", answered.as_secs_f64() * 1000.0),
        format!("≤ 2 s: {}", verdict(goal)),
    ]);
    t.row(vec![
        "from that answer to an empty queue".into(),
        empty.map_or("not within 60 s".into(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        }),
        String::new(),
    ]);
    t.row(vec![
        "unread replies removed / replies dropped (no room before their client stopped waiting)"
            .into(),
        format!("{purged} / {dropped}"),
        String::new(),
    ]);
    Section {
        title: "7. A flood from clients that never read their replies".into(),
        table: t.render(),
        notes: vec![
            "kerneld removes unread replies oldest first once the queue is three quarters full (those unread for 10 ms), else after 2 s; a reply that finds no room waits at most as long as its client (5 s for the tools, 30 s for the kernel's helper).".into(),
        ],
        json: json!({
            "messages": f.sent,
            "unread_replies_asked": f.unread,
            "flood_seconds": f.took.as_secs_f64(),
            "sender_found_queue_full": f.full,
            "status_answered_ms_after_flood": answered.as_secs_f64() * 1000.0,
            "queue_empty_ms_after_answer": empty.map(|d| d.as_secs_f64() * 1000.0),
            "replies_purged": purged,
            "replies_dropped": dropped,
            "goal_ms": 2000,
            "goal_met": goal,
        }),
    }
}

/// `total` requests from `clients` threads, nearly all over distinct
/// names (as a user space that tries every socket family would send),
/// with status requests mixed in; kerneld's peak RSS along the way.
pub fn sustained_memory(kd: &Kerneld, total: usize, clients: usize) -> Section {
    let start_hwm = kd.vm("VmHWM").unwrap_or(0);
    let done = Arc::new(AtomicUsize::new(0));
    let mut marks = Vec::new();
    let t0 = Instant::now();
    for half in [total / 2, total] {
        let per = (half - done.load(Ordering::SeqCst)) / clients;
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let conn = kd.conn();
                let done = done.clone();
                std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        let id = fresh_id();
                        let mut name = String::new();
                        for i in 0..per {
                            name.clear();
                            let n = done.fetch_add(1, Ordering::Relaxed);
                            use std::fmt::Write;
                            let (t, text): (MsgType, &[u8]) = match i % 50 {
                                0 => (MsgType::Status, b""),
                                25 => (MsgType::Status, b"json"),
                                _ => {
                                    let _ = write!(name, "kdbench-sustain-{c}-{n}");
                                    (MsgType::RequestModule, name.as_bytes())
                                }
                            };
                            if conn.rtt(t, text, id, None).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("spawn a client")
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        progress();
        marks.push((done.load(Ordering::SeqCst), kd.vm("VmHWM").unwrap_or(0)));
    }
    let took = t0.elapsed();
    let last = marks.last().map_or(0, |m| m.1);
    let goal = last <= 8 * 1024;
    let mut t = Table::new(&["figure", "value", "goal"]);
    t.row(vec![
        "kerneld peak RSS (VmHWM) at start".into(),
        format!("{start_hwm} kB"),
        String::new(),
    ]);
    for (i, (n, hwm)) in marks.iter().enumerate() {
        t.row(vec![
            format!("… after {n} requests from {clients} clients, distinct names"),
            format!("{hwm} kB ({:.1} MiB)", *hwm as f64 / 1024.0),
            if i + 1 == marks.len() {
                format!("≤ 8 MiB: {}", verdict(goal))
            } else {
                String::new()
            },
        ]);
    }
    Section {
        title: "8. Memory under sustained load".into(),
        table: t.render(),
        notes: vec![format!(
            "{} requests in {:.1} s; one status request in 50, half of them the JSON document.",
            marks.last().map_or(0, |m| m.0),
            took.as_secs_f64()
        )],
        json: json!({
            "clients": clients,
            "start_vm_hwm_kb": start_hwm,
            "marks": marks.iter().map(|(n, h)| json!({"requests": n, "vm_hwm_kb": h})).collect::<Vec<_>>(),
            "seconds": took.as_secs_f64(),
            "goal_max_hwm_kb": 8192,
            "goal_met": goal,
        }),
    }
}

//! A flood of random messages from clients that never read their replies,
//! and the time kerneld then takes to answer a status request.  Used by
//! the flood test and by the benchmark, which reports the figure.

use crate::rng::Rng;
use kmod_ipc::{Client, Error, Key, MsgType, Queue, KERNELD_MINSEQ};
use std::time::{Duration, Instant};

/// What a flood did.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// Messages sent.
    pub sent: usize,
    /// Of which asked for a reply nobody reads.
    pub unread: usize,
    /// Times a send found the queue full and waited.
    pub full: usize,
    /// From the first send to the last.
    pub took: Duration,
}

/// One random message: a reply id of a dead client for a third of them
/// (kernel-style or tool-style), none for the rest; quick requests of
/// every kind, status requests (long replies), and junk.
fn message(rng: &mut Rng) -> (i64, Vec<u8>, bool) {
    let unread = rng.below(3) == 0;
    let id = match (unread, rng.below(2)) {
        (false, _) => 0,
        (true, 0) => KERNELD_MINSEQ + rng.below(65536) as i64,
        (true, _) => 1024 + 4_194_304 + rng.below(1 << 20) as i64,
    };
    let mut body = id.to_ne_bytes().to_vec();
    if rng.below(2) == 0 {
        body.extend_from_slice(&2i16.to_ne_bytes());
        body.extend_from_slice(&(rng.next_u64() as i16).to_ne_bytes());
    }
    let mtype = match rng.below(10) {
        0..=4 => {
            // Unknown names, a few thousand of them (as a kernel asks).
            body.extend_from_slice(format!("kdflood-{}", rng.below(4000)).as_bytes());
            2
        }
        5 => {
            body.extend_from_slice(b"kdflood-none");
            3 + rng.below(3) as i64
        }
        6 => 255,
        7 => {
            body.extend_from_slice(b"nonsense");
            9 + rng.below(200) as i64
        }
        _ => {
            let n = rng.below(64) as usize;
            body.extend((0..n).map(|_| rng.next_u64() as u8));
            // Not 255: random text there could spell a control word.
            1 + rng.below(254) as i64
        }
    };
    // No NUL, as the 1995 senders sent it, half of the time.
    if rng.below(2) == 0 {
        body.push(0);
    }
    (mtype, body, unread)
}

/// Send `n` random messages as fast as the queue takes them (waiting when
/// it is full); gives up at `limit`.
pub fn flood(queue: &Queue, n: usize, seed: u64, limit: Duration) -> Result<Flood, String> {
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let mut f = Flood {
        sent: 0,
        unread: 0,
        full: 0,
        took: Duration::ZERO,
    };
    while f.sent < n {
        let (mtype, body, unread) = message(&mut rng);
        loop {
            match queue.send_raw(mtype, &body, true) {
                Ok(()) => break,
                Err(Error::Sys { source, .. }) if source.raw_os_error() == Some(libc::EAGAIN) => {
                    f.full += 1;
                    if t0.elapsed() > limit {
                        return Err(format!(
                            "the queue stayed full: {} of {n} messages sent in {limit:?}",
                            f.sent
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        f.sent += 1;
        f.unread += usize::from(unread);
    }
    f.took = t0.elapsed();
    Ok(f)
}

/// From now to the answer of one status request (kdstat's id), waiting
/// at most `limit`.
pub fn status_answered_in(key: Key, limit: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let client = Client::connect(key).map_err(|e| e.to_string())?;
    let r = client
        .request(MsgType::Status, b"", Client::tool_reply_id(), Some(limit))
        .map_err(|e| format!("status after the flood: {e}"))?;
    if r.status != 0 {
        return Err(format!("status after the flood answered {}", r.status));
    }
    Ok(t0.elapsed())
}

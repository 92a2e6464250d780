//! Answers for failing names, kept briefly, and a per-name rate limit.
//!
//! A loop in user space (a program retrying a socket of an unsupported
//! family) would otherwise make kerneld resolve and try again and again.
//! Entries are dropped when the module index or modprobe.d changes, since
//! the answer may then differ.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Answer {
    status: i64,
    text: String,
    until: Instant,
}

/// Size at which a map is first pruned (see [`bound`]).
const PRUNE_AT: usize = 4096;
/// Most names either map holds.  Names come from whoever can make the
/// kernel ask (an unprivileged AF_ALG bind names any crypto algorithm), and
/// thousands a second of distinct ones must not grow kerneld without bound:
/// beyond this the map sheds entries, expired ones first.  Real loops
/// retry a handful of names.
const MAX_NAMES: usize = 8192;

/// Make room in `map` before a new name goes in: drop the entries `stale`
/// says are over, then, if still more than three quarters full, arbitrary
/// ones (it is a cache).  Returns the size at which to call it again:
/// twice what stayed, so a flood costs one pass per doubling (or per
/// quarter of [`MAX_NAMES`]), not one per request.
fn bound<V>(map: &mut HashMap<String, V>, stale: impl Fn(&V) -> bool) -> usize {
    map.retain(|_, v| !stale(v));
    let mut excess = map.len().saturating_sub(MAX_NAMES / 4 * 3);
    if excess > 0 {
        map.retain(|_, _| {
            let keep = excess == 0;
            excess = excess.saturating_sub(1);
            keep
        });
    }
    PRUNE_AT.max(2 * map.len()).min(MAX_NAMES)
}

/// The cache.
#[derive(Debug)]
pub struct NegativeCache {
    ttl: Duration,
    per_minute: u32,
    answers: HashMap<String, Answer>,
    attempts: HashMap<String, VecDeque<Instant>>,
    fingerprint: u64,
    /// Call [`bound`] on `attempts` / `answers` when they reach these sizes.
    attempts_prune_at: usize,
    answers_prune_at: usize,
}

impl NegativeCache {
    pub fn new(ttl: Duration, per_minute: u32) -> NegativeCache {
        NegativeCache {
            ttl,
            per_minute,
            answers: HashMap::new(),
            attempts: HashMap::new(),
            fingerprint: 0,
            attempts_prune_at: PRUNE_AT,
            answers_prune_at: PRUNE_AT,
        }
    }

    /// Forget everything if the index fingerprint changed.
    pub fn check_fingerprint(&mut self, fingerprint: u64) {
        if fingerprint != self.fingerprint {
            self.clear();
            self.fingerprint = fingerprint;
        }
    }

    pub fn clear(&mut self) {
        self.answers.clear();
        self.attempts.clear();
    }

    /// A remembered failure for `name`, if still fresh; or, when `name`
    /// was tried too often in the last minute, its last answer (or a
    /// rate-limit refusal).
    pub fn lookup(&mut self, name: &str, now: Instant) -> Option<(i64, String)> {
        if let Some(a) = self.answers.get(name) {
            if a.until > now {
                return Some((a.status, format!("{} (cached)", a.text)));
            }
        }
        if self.per_minute == 0 {
            // No rate limit: the attempts would never be read.
            return None;
        }
        if !self.attempts.contains_key(name) && self.attempts.len() >= self.attempts_prune_at {
            self.attempts_prune_at = bound(&mut self.attempts, |v| {
                v.back()
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60))
            });
        }
        let tries = self.attempts.entry(name.to_string()).or_default();
        while tries
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            tries.pop_front();
        }
        if tries.len() as u32 >= self.per_minute {
            let last = self
                .answers
                .get(name)
                .map_or_else(|| "failed before".to_string(), |a| a.text.clone());
            return Some((
                1,
                format!(
                    "{last} (rate limited: {} tries in the last minute)",
                    tries.len()
                ),
            ));
        }
        tries.push_back(now);
        None
    }

    /// Whether failures are remembered at all (`negative-cache` > 0), so
    /// a caller can skip what it would compute only for [`insert`].
    ///
    /// [`insert`]: NegativeCache::insert
    pub fn remembers_failures(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Remember a failure.
    pub fn insert(&mut self, name: &str, status: i64, text: &str, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        if !self.answers.contains_key(name) && self.answers.len() >= self.answers_prune_at {
            self.answers_prune_at = bound(&mut self.answers, |a| a.until <= now);
        }
        self.answers.insert(
            name.to_string(),
            Answer {
                status,
                text: text.to_string(),
                until: now + self.ttl,
            },
        );
    }

    /// A success clears the name's history.
    pub fn succeeded(&mut self, name: &str) {
        // Removing hashes the name even from an empty map; with the cache
        // or the rate limit off, or nothing failed lately, they are empty.
        if !self.answers.is_empty() {
            self.answers.remove(name);
        }
        if !self.attempts.is_empty() {
            self.attempts.remove(name);
        }
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_answered_from_memory_until_they_expire() {
        let mut c = NegativeCache::new(Duration::from_secs(5), 0);
        let t0 = Instant::now();
        assert_eq!(c.lookup("net-pf-99", t0), None);
        c.insert("net-pf-99", 1, "not found", t0);
        let (s, text) = c.lookup("net-pf-99", t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(s, 1);
        assert!(text.contains("not found (cached)"));
        assert_eq!(c.lookup("net-pf-99", t0 + Duration::from_secs(6)), None);
    }

    #[test]
    fn rate_limit_per_name() {
        let mut c = NegativeCache::new(Duration::ZERO, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(c.lookup("x", t0 + Duration::from_millis(i)), None);
        }
        let (s, text) = c.lookup("x", t0 + Duration::from_millis(5)).unwrap();
        assert_eq!(s, 1);
        assert!(text.contains("rate limited"), "{text}");
        assert_eq!(c.lookup("y", t0), None, "other names are not limited");
        assert_eq!(
            c.lookup("x", t0 + Duration::from_secs(61)),
            None,
            "the window slides"
        );
    }

    #[test]
    fn a_flood_of_names_stays_bounded() {
        let mut c = NegativeCache::new(Duration::from_secs(5), 30);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            let name = format!("n{i}");
            assert_eq!(c.lookup(&name, t0), None);
            c.insert(&name, 1, "not found", t0);
        }
        // A minute later the old names go first, on the next growth.
        let t1 = t0 + Duration::from_secs(61);
        for i in 0..PRUNE_AT / 2 {
            let name = format!("m{i}");
            assert_eq!(c.lookup(&name, t1), None);
            c.insert(&name, 1, "not found", t1);
        }
        assert!(c.attempts.keys().all(|k| k.starts_with('m')));
        assert!(c.answers.keys().all(|k| k.starts_with('m')));
        assert!(c.lookup("m0", t1).unwrap().1.contains("(cached)"));
        // Far more live names than fit: the maps stay within MAX_NAMES and
        // the newest answers are kept.
        for i in 0..4 * MAX_NAMES {
            let name = format!("f{i}");
            assert_eq!(c.lookup(&name, t1), None);
            c.insert(&name, 1, "not found", t1);
            assert!(c.attempts.len() <= MAX_NAMES && c.answers.len() <= MAX_NAMES);
        }
        let last = format!("f{}", 4 * MAX_NAMES - 1);
        assert!(c.lookup(&last, t1).unwrap().1.contains("(cached)"));
        assert!(c.answers.len() >= MAX_NAMES / 2, "{}", c.answers.len());
    }

    #[test]
    fn index_change_drops_answers() {
        let mut c = NegativeCache::new(Duration::from_secs(5), 0);
        let t0 = Instant::now();
        c.check_fingerprint(1);
        c.insert("a", 1, "not found", t0);
        c.check_fingerprint(1);
        assert!(c.lookup("a", t0).is_some());
        c.check_fingerprint(2);
        assert!(c.lookup("a", t0).is_none());
    }
}

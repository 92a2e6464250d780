//! Answers for failing names, kept briefly, and a per-name rate limit.
//!
//! A loop in user space (a program retrying a socket of an unsupported
//! family) would otherwise make kerneld resolve and try again and again.
//! Entries are dropped when the module index or modprobe.d changes, since
//! the answer may then differ.
//!
//! One map holds both, with a small entry per name: names come by the
//! thousand a second from whoever can make the kernel ask, and the memory
//! they take is kerneld's peak.

use crate::work::answer::{Answer, Kind};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The rate limit counts attempts in windows of this length.
const WINDOW: Duration = Duration::from_secs(60);

/// A failure, kept as the typed answer it was.
#[derive(Debug)]
struct Failure {
    answer: Answer<'static>,
    until: Instant,
}

/// What is known of one name.
#[derive(Debug)]
struct Entry {
    /// Its last failure, while remembered.
    answer: Option<Failure>,
    /// Start of the current minute of attempts, and the attempts in it.
    window: Instant,
    tries: u32,
}

impl Entry {
    /// Nothing in it counts any more at `now`.
    fn stale(&self, now: Instant) -> bool {
        self.answer.as_ref().is_none_or(|a| a.until <= now)
            && now.saturating_duration_since(self.window) >= WINDOW
    }
}

/// Size at which the map is first pruned (see [`bound`]).
const PRUNE_AT: usize = 2048;
/// Most names the map holds.  Names come from whoever can make the kernel
/// ask (an unprivileged AF_ALG bind names any crypto algorithm), and
/// thousands a second of distinct ones must not grow kerneld without bound:
/// beyond this the map sheds entries, stale ones first.  Real loops retry
/// a handful of names.
const MAX_NAMES: usize = 4096;

/// Make room in `map` before a new name goes in: drop the entries that are
/// over, then, if still more than three quarters full, arbitrary ones (it
/// is a cache).  Returns the size at which to call it again: twice what
/// stayed, so a flood costs one pass per doubling (or per quarter of
/// [`MAX_NAMES`]), not one per request.
fn bound(map: &mut HashMap<Box<str>, Entry>, now: Instant) -> usize {
    map.retain(|_, e| !e.stale(now));
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
pub(crate) struct NegativeCache {
    ttl: Duration,
    per_minute: u32,
    names: HashMap<Box<str>, Entry>,
    fingerprint: u64,
    /// Call [`bound`] when the map reaches this size.
    prune_at: usize,
}

impl NegativeCache {
    pub(crate) fn new(ttl: Duration, per_minute: u32) -> NegativeCache {
        NegativeCache {
            ttl,
            per_minute,
            names: HashMap::new(),
            fingerprint: 0,
            prune_at: PRUNE_AT,
        }
    }

    /// Forget everything if the index fingerprint changed.
    pub(crate) fn check_fingerprint(&mut self, fingerprint: u64) {
        if fingerprint != self.fingerprint {
            self.clear();
            self.fingerprint = fingerprint;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.names.clear();
    }

    /// A new entry for `name` (made within the bound), which has none:
    /// one hash of the name.
    fn insert_new(&mut self, name: &str, now: Instant) -> &mut Entry {
        if self.names.len() >= self.prune_at {
            self.prune_at = bound(&mut self.names, now);
        }
        self.names.entry(name.into()).or_insert(Entry {
            answer: None,
            window: now,
            tries: 0,
        })
    }

    /// A remembered failure for `name`, if still fresh; or, when `name`
    /// was tried too often in the last minute, its last answer (or a
    /// rate-limit refusal).  The reply text is made here, from the typed
    /// answer kept; the kind is the kept answer's.  A name met for the
    /// first time (most of them) is hashed twice.
    pub(crate) fn lookup(&mut self, name: &str, now: Instant) -> Option<(Kind, i64, String)> {
        let per_minute = self.per_minute;
        let e = match self.names.get_mut(name) {
            Some(e) => {
                if let Some(a) = e.answer.as_ref().filter(|a| a.until > now) {
                    // One allocation: text() leaves room for the suffix.
                    let mut text = a.answer.text();
                    text.push_str(" (cached)");
                    return Some((a.answer.kind(), a.answer.status(), text));
                }
                e
            }
            // No rate limit: attempts would never be read.
            None if per_minute == 0 => return None,
            None => self.insert_new(name, now),
        };
        if per_minute == 0 {
            return None;
        }
        if now.saturating_duration_since(e.window) >= WINDOW {
            e.window = now;
            e.tries = 0;
        }
        if e.tries >= per_minute {
            let tries = e.tries;
            let (kind, mut text) = match &e.answer {
                Some(a) => (a.answer.kind(), a.answer.text()),
                None => (Kind::Failed, "failed before".to_string()),
            };
            let _ = write!(text, " (rate limited: {tries} tries in the last minute)");
            return Some((kind, 1, text));
        }
        e.tries += 1;
        None
    }

    /// The failure remembered for `name` and how long it stays, without
    /// counting an attempt (`kdstat why`).
    pub(crate) fn remembered(
        &self,
        name: &str,
        now: Instant,
    ) -> Option<(&Answer<'static>, Duration)> {
        let a = self.names.get(name)?.answer.as_ref()?;
        (a.until > now).then(|| (&a.answer, a.until - now))
    }

    /// Whether failures are remembered at all (`negative-cache` > 0), so
    /// a caller can skip what it would compute only for [`insert`].
    ///
    /// [`insert`]: NegativeCache::insert
    pub(crate) fn remembers_failures(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// Remember a failure.
    pub(crate) fn insert(&mut self, name: &str, answer: Answer<'static>, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let until = crate::limits::after(now, self.ttl);
        let failure = Some(Failure { answer, until });
        // Most often the name has its entry already (lookup made it).
        if let Some(e) = self.names.get_mut(name) {
            e.answer = failure;
            return;
        }
        self.insert_new(name, now).answer = failure;
    }

    /// A success clears the name's history.
    pub(crate) fn succeeded(&mut self, name: &str) {
        // Removing hashes the name even from an empty map; with the cache
        // and the rate limit off, or nothing failed lately, it is empty.
        if !self.names.is_empty() {
            self.names.remove(name);
        }
    }

    /// Failures remembered.
    pub(crate) fn len(&self) -> usize {
        self.names.values().filter(|e| e.answer.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found(name: &str) -> Answer<'static> {
        Answer::NotFound {
            name: name.to_string().into(),
        }
    }

    #[test]
    fn failures_are_answered_from_memory_until_they_expire() {
        let mut c = NegativeCache::new(Duration::from_secs(5), 0);
        let t0 = Instant::now();
        assert_eq!(c.lookup("net-pf-99", t0), None);
        c.insert("net-pf-99", not_found("net-pf-99"), t0);
        let (kind, s, text) = c.lookup("net-pf-99", t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(kind, Kind::NotFound);
        assert_eq!(s, 1);
        assert_eq!(text, "net-pf-99: not found (cached)");
        assert_eq!(c.lookup("net-pf-99", t0 + Duration::from_secs(6)), None);
    }

    #[test]
    fn rate_limit_per_name() {
        let mut c = NegativeCache::new(Duration::ZERO, 3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(c.lookup("x", t0 + Duration::from_millis(i)), None);
        }
        let (_, s, text) = c.lookup("x", t0 + Duration::from_millis(5)).unwrap();
        assert_eq!(s, 1);
        assert!(text.contains("rate limited"), "{text}");
        assert_eq!(c.lookup("y", t0), None, "other names are not limited");
        assert_eq!(
            c.lookup("x", t0 + Duration::from_secs(61)),
            None,
            "a new minute counts anew"
        );
    }

    #[test]
    fn a_flood_of_names_stays_bounded() {
        let mut c = NegativeCache::new(Duration::from_secs(5), 30);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            let name = format!("n{i}");
            assert_eq!(c.lookup(&name, t0), None);
            c.insert(&name, not_found(&name), t0);
        }
        // A minute later the old names go first, on the next growth.
        let t1 = t0 + Duration::from_secs(61);
        for i in 0..PRUNE_AT / 2 {
            let name = format!("m{i}");
            assert_eq!(c.lookup(&name, t1), None);
            c.insert(&name, not_found(&name), t1);
        }
        assert!(c.names.keys().all(|k| k.starts_with('m')));
        assert!(c.lookup("m0", t1).unwrap().2.contains("(cached)"));
        // Far more live names than fit: the maps stay within MAX_NAMES and
        // the newest answers are kept.
        for i in 0..4 * MAX_NAMES {
            let name = format!("f{i}");
            assert_eq!(c.lookup(&name, t1), None);
            c.insert(&name, not_found(&name), t1);
            assert!(c.names.len() <= MAX_NAMES);
        }
        let last = format!("f{}", 4 * MAX_NAMES - 1);
        assert!(c.lookup(&last, t1).unwrap().2.contains("(cached)"));
        assert!(c.len() >= MAX_NAMES / 2, "{}", c.len());
    }

    #[test]
    fn index_change_drops_answers() {
        let mut c = NegativeCache::new(Duration::from_secs(5), 0);
        let t0 = Instant::now();
        c.check_fingerprint(1);
        c.insert("a", not_found("a"), t0);
        c.check_fingerprint(1);
        assert!(c.lookup("a", t0).is_some());
        c.check_fingerprint(2);
        assert!(c.lookup("a", t0).is_none());
    }
}

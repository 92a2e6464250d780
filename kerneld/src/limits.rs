//! The range of every duration and count kerneld takes, in one place: the
//! classic words, the options, the configuration file and kdstat's control
//! words are checked against the same bounds, so no value can overflow a
//! timer or grow a table (kerneld.conf(5) lists them).

use std::time::{Duration, Instant};

/// A whole number with its bounds, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub(crate) what: &'static str,
    pub min: u64,
    pub max: u64,
    pub(crate) unit: &'static str,
}

/// Seconds between idle sweeps, and of a delayed release (a week at most).
pub const DELAY: Range = Range {
    what: "delay",
    min: 1,
    max: 604_800,
    unit: "seconds",
};

/// Seconds a failed or denied name is answered from memory (0: never).
pub const NEGATIVE_CACHE: Range = Range {
    what: "negative-cache",
    min: 0,
    max: 86_400,
    unit: "seconds",
};

/// Real attempts per name and minute (0: no limit).
pub const RATE_LIMIT: Range = Range {
    what: "rate-limit",
    min: 0,
    max: 60_000,
    unit: "attempts a minute",
};

/// Requests worked on at once.
pub const MAX_WORKERS: Range = Range {
    what: "max-workers",
    min: 1,
    max: 1024,
    unit: "workers",
};

/// The message types `type=N` may name: one type (1 to 1023: 256 is arp,
/// which only such an instance serves), or every type up to |N| (-1 to
/// -255).  From 1024 on are the tools' and the kernel's reply ids.
pub(crate) const TYPE_MAX: i64 = 1023;
/// The largest |N| of a negative `type=N`: beyond, it would take replies.
pub(crate) const TYPE_RANGE_MAX: i64 = 255;

impl Range {
    /// Parse `text` as a number within the range.
    pub(crate) fn parse(&self, text: &str) -> Result<u64, String> {
        match text.trim().parse::<u64>() {
            Ok(n) if (self.min..=self.max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{} needs a whole number of {} from {} to {}, not {text:?}",
                self.what, self.unit, self.min, self.max
            )),
        }
    }
}

/// Check `type=N`.
pub(crate) fn parse_type(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if n != 0 && (-TYPE_RANGE_MAX..=TYPE_MAX).contains(&n) => Ok(n),
        Ok(0) => Err(
            "type=0 would receive replies too; give a type from 1 to 1023, \
                      or -N for every type up to N (default -255)"
                .into(),
        ),
        _ => Err(format!(
            "type needs a message type from 1 to 1023, or -1 to -255 for every type up \
             to that number, not {text:?}"
        )),
    }
}

/// `now + d`, or the farthest instant there is: never an overflow panic.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| {
        // A century is beyond any range above; halve until it fits.
        let mut far = Duration::from_secs(100 * 365 * 86_400);
        loop {
            if let Some(t) = now.checked_add(far) {
                return t;
            }
            far /= 2;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_refused_with_the_range() {
        assert_eq!(DELAY.parse("60"), Ok(60));
        assert_eq!(DELAY.parse("604800"), Ok(604_800));
        for bad in [
            "0",
            "604801",
            "-1",
            "18446744073709551615",
            "99999999999999999999",
            "1.5",
            "",
        ] {
            let e = DELAY.parse(bad).unwrap_err();
            assert!(e.contains("from 1 to 604800"), "{bad}: {e}");
        }
        assert_eq!(NEGATIVE_CACHE.parse("0"), Ok(0));
        assert!(NEGATIVE_CACHE.parse("9223372036854775807").is_err());
        assert!(RATE_LIMIT.parse("4294967296").is_err());
    }

    #[test]
    fn types_are_below_the_reply_ids_or_a_negative_bound() {
        assert_eq!(parse_type("2"), Ok(2));
        assert_eq!(parse_type("256"), Ok(256), "an arp instance");
        assert_eq!(parse_type("-255"), Ok(-255));
        for bad in ["0", "1024", "-256", "x", "9223372036854775807"] {
            assert!(parse_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_saturate() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}

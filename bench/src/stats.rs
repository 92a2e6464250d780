//! Summaries of latency samples: median and p99 by nearest rank, and
//! ratios taken pair by pair.

use serde_json::{json, Value};

/// A summary of samples in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The median of sorted samples (mean of the middle two for an even count).
fn median(sorted: &[u64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2] as f64,
        _ => (sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0,
    }
}

impl Summary {
    pub fn of(samples: &[u64]) -> Summary {
        let mut s = samples.to_vec();
        s.sort_unstable();
        if s.is_empty() {
            return Summary::default();
        }
        Summary {
            n: s.len(),
            min: s[0] as f64,
            median: median(&s),
            p99: percentile(&s, 99.0),
            max: s[s.len() - 1] as f64,
            mean: s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64,
        }
    }

    /// Microseconds, for tables and JSON.
    pub fn json_us(&self) -> Value {
        json!({
            "n": self.n,
            "min_us": us(self.min),
            "median_us": us(self.median),
            "p99_us": us(self.p99),
            "max_us": us(self.max),
            "mean_us": us(self.mean),
        })
    }
}

/// Nanoseconds to microseconds, rounded to 0.01.
pub fn us(ns: f64) -> f64 {
    (ns / 10.0).round() / 100.0
}

/// Pairwise ratios b[i] / a[i] of interleaved samples, summarised: the
/// median of the per-pair ratios is robust against the load of other
/// programs on a shared machine, as both halves of a pair saw the same.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ratio {
    /// median(b) / median(a)
    pub of_medians: f64,
    /// median over pairs of b[i] / a[i]
    pub pairwise_median: f64,
}

impl Ratio {
    pub fn of(a: &[u64], b: &[u64]) -> Ratio {
        let (sa, sb) = (Summary::of(a), Summary::of(b));
        let mut r: Vec<f64> = a
            .iter()
            .zip(b)
            .filter(|(x, _)| **x > 0)
            .map(|(x, y)| *y as f64 / *x as f64)
            .collect();
        r.sort_by(|x, y| x.total_cmp(y));
        let pairwise_median = match r.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        };
        Ratio {
            of_medians: sb.median / sa.median,
            pairwise_median,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "of_medians": round3(self.of_medians),
            "pairwise_median": round3(self.pairwise_median),
        })
    }
}

pub fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let s = Summary::of(&v);
        assert_eq!(s.median, 50.5);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 100.0);
        let s = Summary::of(&[5, 1, 3]);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.p99, 5.0);
    }

    #[test]
    fn ratios_pair_by_pair() {
        let r = Ratio::of(&[10, 20, 40], &[20, 40, 80]);
        assert_eq!(r.pairwise_median, 2.0);
        assert_eq!(r.of_medians, 2.0);
    }
}

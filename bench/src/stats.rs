//! Small statistics: medians and spreads of per-round samples, latency percentiles.

use serde::Serialize;

/// The median of a set of samples and their range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many samples.
    pub n: usize,
}

impl Spread {
    /// `None` for no samples. The median of an even count is the mean of the middle two.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mid = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
        let median = if n % 2 == 1 {
            mid(n / 2)
        } else {
            (mid(n / 2 - 1) + mid(n / 2)) / 2.0
        };
        Some(Self {
            median,
            min: mid(0),
            max: mid(n - 1),
            n,
        })
    }
}

/// The `q`-quantile (0..=1) of `values` by the nearest-rank method (p99 of 1000 values is the
/// 990th smallest). `None` for no values.
pub fn quantile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    values.get(rank.saturating_sub(1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        assert_eq!(quantile(&mut v, 0.5), Some(500));
        assert_eq!(quantile(&mut v, 0.99), Some(990));
        assert_eq!(quantile(&mut v, 1.0), Some(1000));
        assert_eq!(quantile(&mut v, 0.0), Some(1));
        assert_eq!(quantile(&mut [7], 0.99), Some(7));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}

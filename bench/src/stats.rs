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
    /// The median's distribution-free 95 % confidence interval (order statistics; needs 6
    /// samples or more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci95: Option<(f64, f64)>,
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
            ci95: median_ci_ranks(n, 0.95).map(|(lo, hi)| (mid(lo), mid(hi))),
        })
    }

    /// Half the width of the median's 95 % confidence interval; infinite without one.
    pub fn ci95_half_width(&self) -> f64 {
        self.ci95.map_or(f64::INFINITY, |(lo, hi)| (hi - lo) / 2.0)
    }
}

/// The 0-based ranks (lo, hi) of the sorted samples that bound a distribution-free confidence
/// interval of level `level` for the median of `n` samples: the number of samples below the
/// median is Binomial(n, 1/2), so [x(lo), x(hi)] covers it with probability
/// 1 - 2·P(B ≤ lo) ≥ `level`. `None` when `n` is too small for the level (fewer than 6 at 95 %).
pub fn median_ci_ranks(n: usize, level: f64) -> Option<(usize, usize)> {
    let alpha = (1.0 - level) / 2.0;
    // P(B ≤ k), B ~ Binomial(n, 1/2), term by term.
    let mut term = 0.5f64.powi(i32::try_from(n).ok()?);
    let mut cdf = term;
    if cdf > alpha {
        return None;
    }
    let mut lo = 0;
    for k in 1..n {
        term *= (n - k + 1) as f64 / k as f64;
        if cdf + term > alpha {
            break;
        }
        cdf += term;
        lo = k;
    }
    Some((lo, n - 1 - lo))
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
    fn the_median_interval_has_the_textbook_ranks() {
        // 95 %: none below 6 samples; 6 → the extremes (2/64 = 3.1 % outside); 9 → 2nd and 8th
        // (1-based); 20 → 6th and 15th.
        assert_eq!(median_ci_ranks(5, 0.95), None);
        assert_eq!(median_ci_ranks(6, 0.95), Some((0, 5)));
        assert_eq!(median_ci_ranks(9, 0.95), Some((1, 7)));
        assert_eq!(median_ci_ranks(20, 0.95), Some((5, 14)));
        let s = Spread::of(&(1..=20).map(f64::from).collect::<Vec<_>>()).unwrap();
        assert_eq!(s.ci95, Some((6.0, 15.0)));
        assert_eq!(s.ci95_half_width(), 4.5);
        assert_eq!(
            Spread::of(&[1.0, 2.0]).unwrap().ci95_half_width(),
            f64::INFINITY
        );
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

//! Delay distributions.
//!
//! Exactly one of:
//! - `fixed_ms`: always the same delay (Envoy's `fixed_delay`);
//! - `uniform_ms: {min, max}`: uniform over the inclusive range;
//! - `lognormal: {median_ms, p99_ms, max_ms}`: the shape real latency has — most requests near the
//!   median, a long tail — given by two percentiles an SRE can read off a dashboard. With
//!   `σ = ln(p99/median) / z₀.₉₉` (z₀.₉₉ = 2.3263), a sample is `median · e^(σ·Z)` for a standard
//!   normal `Z`, capped at `max_ms` (default: 10 × p99, at most 10 minutes).

use crate::config::{Delay, MAX_DELAY_MS};
use meshwright_shared::config::{ConfigError, Path};
use meshwright_shared::percent::PercentSpec;
use meshwright_shared::rng::Random;
use serde::Deserialize;

/// The 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874_040_841;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelaySpec {
    pub fixed_ms: Option<u64>,
    pub uniform_ms: Option<UniformSpec>,
    pub lognormal: Option<LogNormalSpec>,
    pub percentage: PercentSpec,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniformSpec {
    pub min: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogNormalSpec {
    pub median_ms: u64,
    pub p99_ms: u64,
    pub max_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DelayDistribution {
    Fixed(u64),
    Uniform { min: u64, max: u64 },
    LogNormal { mu: f64, sigma: f64, max: u64 },
}

impl DelaySpec {
    pub fn compile(&self, field: &Path) -> Result<Delay, ConfigError> {
        let set = usize::from(self.fixed_ms.is_some())
            + usize::from(self.uniform_ms.is_some())
            + usize::from(self.lognormal.is_some());
        if set != 1 {
            return Err(ConfigError::invalid(
                field,
                "set exactly one of fixed_ms, uniform_ms, lognormal",
            ));
        }
        let in_range = |f: Path, v: u64| {
            if v <= MAX_DELAY_MS {
                Ok(v)
            } else {
                Err(ConfigError::out_of_range(f, 0, MAX_DELAY_MS, v))
            }
        };
        let distribution = if let Some(ms) = self.fixed_ms {
            DelayDistribution::Fixed(in_range(field.key("fixed_ms"), ms)?)
        } else if let Some(u) = self.uniform_ms {
            let f = field.key("uniform_ms");
            let max = in_range(f.key("max"), u.max)?;
            if u.min > max {
                return Err(ConfigError::out_of_range(f.key("min"), 0, max, u.min));
            }
            DelayDistribution::Uniform { min: u.min, max }
        } else if let Some(l) = self.lognormal {
            let f = field.key("lognormal");
            let median = in_range(f.key("median_ms"), l.median_ms)?;
            if median == 0 {
                return Err(ConfigError::out_of_range(
                    f.key("median_ms"),
                    1,
                    MAX_DELAY_MS,
                    0,
                ));
            }
            let p99 = in_range(f.key("p99_ms"), l.p99_ms)?;
            if p99 < median {
                return Err(ConfigError::out_of_range(
                    f.key("p99_ms"),
                    median,
                    MAX_DELAY_MS,
                    p99,
                ));
            }
            let max = match l.max_ms {
                Some(m) => in_range(f.key("max_ms"), m)?,
                None => p99.saturating_mul(10).min(MAX_DELAY_MS),
            };
            if max < p99 {
                return Err(ConfigError::out_of_range(
                    f.key("max_ms"),
                    p99,
                    MAX_DELAY_MS,
                    max,
                ));
            }
            DelayDistribution::LogNormal {
                mu: (median as f64).ln(),
                sigma: ((p99 as f64) / (median as f64)).ln() / Z99,
                max,
            }
        } else {
            return Err(ConfigError::invalid(field, "no distribution"));
        };
        Ok(Delay {
            distribution,
            percentage: self.percentage.compile(&field.key("percentage"))?,
        })
    }
}

impl DelayDistribution {
    /// Draws one delay, in milliseconds.
    pub fn sample(&self, rng: &mut impl Random) -> u64 {
        match *self {
            Self::Fixed(ms) => ms,
            Self::Uniform { min, max } => {
                let span = max - min;
                if span == 0 {
                    min
                } else {
                    // span ≤ MAX_DELAY_MS < u32::MAX, so span + 1 fits.
                    min + u64::from(rng.below(u32::try_from(span + 1).unwrap_or(u32::MAX)))
                }
            }
            Self::LogNormal { mu, sigma, max } => {
                let z = standard_normal(rng);
                let ms = (mu + sigma * z).exp().round();
                // NaN or negative cannot occur (exp > 0); `as` saturates at the top anyway.
                (ms as u64).min(max)
            }
        }
    }
}

/// One standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Random) -> f64 {
    let u1 = rng.unit_open0();
    let u2 = rng.unit_open0();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwright_shared::config::parse_json;
    use meshwright_shared::rng::WyRand;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn dist(json: &str) -> DelayDistribution {
        parse_json::<DelaySpec>(json.as_bytes())
            .unwrap()
            .compile(&Path::root().key("delay"))
            .unwrap()
            .distribution
    }

    fn quantile(sorted: &[u64], q: f64) -> u64 {
        sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
    }

    #[test]
    fn fixed_is_fixed() {
        let d = dist(r#"{"fixed_ms": 200, "percentage": 100}"#);
        let mut rng = WyRand::new(1);
        assert!((0..100).all(|_| d.sample(&mut rng) == 200));
    }

    #[test]
    fn uniform_covers_its_range_inclusively() {
        let d = dist(r#"{"uniform_ms": {"min": 10, "max": 14}, "percentage": 100}"#);
        let mut rng = WyRand::new(2);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let v = d.sample(&mut rng);
            assert!((10..=14).contains(&v));
            seen[(v - 10) as usize] += 1;
        }
        // Each value expects 2,000, sd = sqrt(10000 · 0.2 · 0.8) = 40; allow 4 sd.
        assert!(seen.iter().all(|&n| (1840..=2160).contains(&n)), "{seen:?}");
    }

    #[test]
    fn lognormal_hits_its_percentiles() {
        let d = dist(r#"{"lognormal": {"median_ms": 100, "p99_ms": 1000}, "percentage": 100}"#);
        let mut rng = WyRand::new(3);
        let mut v: Vec<u64> = (0..100_000).map(|_| d.sample(&mut rng)).collect();
        v.sort_unstable();
        // With n = 100,000 the sample quantiles' standard errors are a few percent of the
        // value; ±10 % is well over 3 of them.
        let p50 = quantile(&v, 0.50);
        let p99 = quantile(&v, 0.99);
        assert!((90..=110).contains(&p50), "p50 {p50}");
        assert!((900..=1100).contains(&p99), "p99 {p99}");
        assert!(
            *v.last().unwrap() <= 10_000,
            "capped at 10 × p99 by default"
        );
    }

    #[test]
    fn lognormal_respects_its_cap() {
        let d = dist(
            r#"{"lognormal": {"median_ms": 100, "p99_ms": 1000, "max_ms": 1500}, "percentage": 100}"#,
        );
        let mut rng = WyRand::new(4);
        assert!((0..20_000).all(|_| d.sample(&mut rng) <= 1500));
    }

    #[test]
    fn bad_distributions_name_the_field() {
        let bad = |json: &str| {
            parse_json::<DelaySpec>(json.as_bytes())
                .unwrap()
                .compile(&Path::root().key("delay"))
                .unwrap_err()
                .field
        };
        assert_eq!(bad(r#"{"percentage": 1}"#), "delay");
        assert_eq!(
            bad(r#"{"fixed_ms": 1, "uniform_ms": {"min":1,"max":2}, "percentage": 1}"#),
            "delay"
        );
        assert_eq!(
            bad(r#"{"fixed_ms": 600001, "percentage": 1}"#),
            "delay.fixed_ms"
        );
        assert_eq!(
            bad(r#"{"uniform_ms": {"min": 5, "max": 4}, "percentage": 1}"#),
            "delay.uniform_ms.min"
        );
        assert_eq!(
            bad(r#"{"lognormal": {"median_ms": 0, "p99_ms": 4}, "percentage": 1}"#),
            "delay.lognormal.median_ms"
        );
        assert_eq!(
            bad(r#"{"lognormal": {"median_ms": 10, "p99_ms": 4}, "percentage": 1}"#),
            "delay.lognormal.p99_ms"
        );
        assert_eq!(
            bad(r#"{"lognormal": {"median_ms": 1, "p99_ms": 4, "max_ms": 3}, "percentage": 1}"#),
            "delay.lognormal.max_ms"
        );
    }
}

//! Percentages with per-million precision.
//!
//! Config writes a percentage as a JSON number of percent (`12.5`, `0.0001`); it is stored as
//! parts per million, so the finest step is 0.0001 % (Envoy's `FractionalPercent` with a
//! `MILLION` denominator). Values with more decimals are rounded to the nearest ppm.

use crate::config::{ConfigError, Path};
use serde::Deserialize;

/// One million: 100 %.
pub const PPM: u32 = 1_000_000;

/// A probability in parts per million (`0..=1_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Percentage(u32);

impl Percentage {
    pub const ZERO: Self = Self(0);
    pub const HUNDRED: Self = Self(PPM);

    pub fn from_ppm(ppm: u32) -> Option<Self> {
        (ppm <= PPM).then_some(Self(ppm))
    }

    /// From a percent value as written in config; refuses NaN, negatives and > 100.
    pub fn from_percent(field: &Path, percent: f64) -> Result<Self, ConfigError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(ConfigError::out_of_range(field, 0, 100, percent));
        }
        // In range, so the rounded product lies in 0..=1_000_000 and fits u32.
        Ok(Self((percent * 10_000.0).round() as u32))
    }

    pub fn ppm(self) -> u32 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether a uniform roll in `0..1_000_000` falls inside this percentage.
    pub fn contains(self, roll_ppm: u32) -> bool {
        roll_ppm < self.0
    }

    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

/// The wire form: a bare number of percent.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct PercentSpec(pub f64);

impl PercentSpec {
    pub fn compile(self, field: &Path) -> Result<Percentage, ConfigError> {
        Percentage::from_percent(field, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Reason;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn per_million_precision() {
        let p = |v| Percentage::from_percent(&Path::root(), v).unwrap().ppm();
        assert_eq!(p(100.0), 1_000_000);
        assert_eq!(p(0.0), 0);
        assert_eq!(p(10.0), 100_000);
        assert_eq!(p(0.0001), 1);
        assert_eq!(p(12.3456), 123_456);
    }

    #[test]
    fn out_of_range_is_refused() {
        for v in [-0.1, 100.01, f64::NAN, f64::INFINITY] {
            let e = Percentage::from_percent(&Path::root().key("p"), v).unwrap_err();
            assert_eq!(e.field, "p");
            assert!(matches!(e.reason, Reason::OutOfRange { .. }));
        }
    }

    #[test]
    fn roll_semantics() {
        let ten = Percentage::from_ppm(100_000).unwrap();
        assert!(ten.contains(0));
        assert!(ten.contains(99_999));
        assert!(!ten.contains(100_000));
        assert!(!Percentage::ZERO.contains(0));
        assert!(Percentage::HUNDRED.contains(PPM - 1));
    }
}

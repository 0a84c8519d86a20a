//! Injected randomness.
//!
//! Decision logic takes `&mut impl Random`, so tests drive it with fixed sequences and the
//! plugin with [`WyRand`] seeded once per VM from the host (WASI `random_get`).

use crate::percent::PPM;

pub trait Random {
    fn next_u64(&mut self) -> u64;

    /// Uniform in `0..n` (`n > 0`; returns 0 for `n == 0`).
    fn below(&mut self, n: u32) -> u32 {
        crate::hash::to_bucket(self.next_u64(), n)
    }

    /// Uniform in `0..1_000_000`.
    fn roll_ppm(&mut self) -> u32 {
        self.below(PPM)
    }

    /// Uniform in `(0, 1]`: never zero, so `ln` of it is finite.
    fn unit_open0(&mut self) -> f64 {
        // 53 random bits → [0, 2^53), shifted to (0, 2^53].
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// wyrand: a small, fast, statistically good non-cryptographic generator.
#[derive(Debug, Clone)]
pub struct WyRand(u64);

impl WyRand {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl Random for WyRand {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

/// A generator that replays a fixed sequence (cycling); for tests.
#[derive(Debug, Clone)]
pub struct Sequence {
    values: Vec<u64>,
    next: usize,
}

impl Sequence {
    pub fn new(values: Vec<u64>) -> Self {
        Self { values, next: 0 }
    }

    /// A generator whose `roll_ppm` returns exactly `ppm` each time.
    pub fn rolling_ppm(ppm: u32) -> Self {
        // to_bucket(h, PPM) = ((h >> 32) * PPM) >> 32; pick the smallest h that maps to ppm.
        let hi = (u64::from(ppm) << 32).div_ceil(u64::from(PPM));
        Self::new(vec![hi << 32])
    }
}

impl Random for Sequence {
    fn next_u64(&mut self) -> u64 {
        let v = self.values.get(self.next).copied().unwrap_or(0);
        self.next = if self.values.is_empty() {
            0
        } else {
            (self.next + 1) % self.values.len()
        };
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn rolling_ppm_helper_is_exact() {
        for ppm in [0, 1, 99_999, 100_000, 500_000, 999_999] {
            assert_eq!(Sequence::rolling_ppm(ppm).roll_ppm(), ppm);
        }
    }

    #[test]
    fn wyrand_rolls_are_uniform_enough() {
        // 100,000 rolls below 10%: expect 10,000 ± 3 sd (sd ≈ 94.9).
        let mut r = WyRand::new(42);
        let hits = (0..100_000).filter(|_| r.roll_ppm() < 100_000).count() as i64;
        assert!((hits - 10_000).abs() < 285, "{hits}");
    }

    #[test]
    fn unit_open0_is_never_zero() {
        let mut r = Sequence::new(vec![0, u64::MAX]);
        let a = r.unit_open0();
        let b = r.unit_open0();
        assert!(a > 0.0 && a <= 1.0);
        assert!(b > 0.0 && b <= 1.0);
    }
}

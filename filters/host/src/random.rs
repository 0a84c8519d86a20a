//! A per-VM random generator, seeded from the host (WASI `random_get`, which Envoy implements).

use meshwright_shared::rng::WyRand;

/// A fresh generator. Falls back to the clock when the host has no entropy source, which only
/// weakens the spread of random faults, never correctness.
pub fn seeded() -> WyRand {
    let mut seed = [0u8; 8];
    let seed = match getrandom::fill(&mut seed) {
        Ok(()) => u64::from_le_bytes(seed),
        Err(_) => crate::abi::now_nanos().unwrap_or(0x9e37_79b9_7f4a_7c15),
    };
    WyRand::new(seed)
}

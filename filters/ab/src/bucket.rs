//! Deterministic assignment: from `(experiment, user id)` to a variant, with no shared state.
//!
//! ## Positions
//! A *position* is a number in `0..10000` (basis points) computed from a seed and the user id:
//! - `meshwright` (default): the salted 64-bit FNV-1a + MurmurHash3 finaliser of
//!   `meshwright_shared::hash`, mapped onto 10,000 buckets;
//! - `growthbook_v2`: GrowthBook's hash version 2, `fnv1a32(decimal(fnv1a32(seed ‖ id))) % 10000`,
//!   so a backend using a GrowthBook SDK (`hash(seed, id, 2)`) computes the same positions.
//!
//! ## Layout: independent positions, sequential thresholds
//! Each experiment draws, per user, one position for coverage (seed `<salt>|coverage`) and one
//! per variant (seed `<salt>` for the first variant, `<salt>:<variant>` for the others), all
//! independent (variant names cannot contain `|`, so no variant shares the coverage seed). The user is in the experiment iff
//! `coverage position < coverage`. Then the variants are tried in the order listed: variant `i`
//! takes the user iff
//!
//! ```text
//! position_i / 10000  <  weight_i / remaining_i        remaining_i = 10000 − Σ_{k<i} weight_k
//! ```
//!
//! i.e. a share `weight_i / remaining_i` of the users that no earlier variant took — which is
//! `weight_i / 10000` of all users. The last variant's threshold is 1: it takes everyone left.
//! The comparison is exact integer arithmetic (`p · remaining < weight · 10000`).
//!
//! ## Why ramps are monotonic
//! Raise variant `j`'s weight, taking the basis points from any other variants (none rises):
//! - every variant `m` before `j` has a weight that did not rise and a `remaining_m` that did
//!   not fall, so its threshold `w_m / r_m` did not rise: it takes no user it did not take;
//! - `j`'s threshold rises: with `D ≥ Δ ≥ 0` the gain of `j` and the basis points given up
//!   before it, `(w_j + D)/(r_j + Δ) ≥ (w_j + Δ)/(r_j + Δ) ≥ w_j / r_j` because `w_j ≤ r_j`.
//!
//! So a user who had `j` still reaches `j` and still falls under its threshold. Raising the
//! coverage only admits users: the variant positions do not depend on it. Both are checked by
//! property tests below (and with 10,000 users in a real Envoy). Users leave `j` only when `j`'s
//! weight falls — or for a user with a sticky cookie, not even then unless its weight is 0.

use crate::config::{Experiment, Variant};
use meshwright_shared::hash::{fnv1a32, salted_hash, to_bucket};
use serde::Deserialize;

/// Positions and weights are in basis points: `0..10000`.
pub const SPACE: u32 = 10_000;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HashMode {
    #[default]
    Meshwright,
    GrowthbookV2,
}

/// The user's position for `seed`, in `0..10000`.
pub fn position(mode: HashMode, seed: &str, id: &str) -> u32 {
    match mode {
        HashMode::Meshwright => to_bucket(salted_hash(seed, id), SPACE),
        HashMode::GrowthbookV2 => growthbook_v2(seed, id),
    }
}

/// GrowthBook's hash version 2 as an integer position: `fnv1a32(str(fnv1a32(seed + id))) % 10000`
/// (GrowthBook returns it divided by 10000). Identical to the SDKs for ASCII ids; for other
/// characters the SDKs themselves disagree (JavaScript hashes UTF-16 code units), this hashes
/// UTF-8 bytes.
pub fn growthbook_v2(seed: &str, id: &str) -> u32 {
    let mut inner_input = Vec::with_capacity(seed.len() + id.len());
    inner_input.extend_from_slice(seed.as_bytes());
    inner_input.extend_from_slice(id.as_bytes());
    let inner = fnv1a32(&inner_input);
    fnv1a32(inner.to_string().as_bytes()) % SPACE
}

/// Whether the variant takes a user at `position` who reached it.
pub fn takes(variant: &Variant, position: u32) -> bool {
    u64::from(position) * u64::from(variant.remaining)
        < u64::from(variant.weight) * u64::from(SPACE)
}

/// The variant of user `id` in `experiment`, or `None` when the user is outside the coverage.
pub fn choose(experiment: &Experiment, id: &str) -> Option<usize> {
    if experiment.coverage < SPACE
        && position(experiment.hash, &experiment.coverage_seed, id) >= experiment.coverage
    {
        return None;
    }
    experiment.variants.iter().position(|v| {
        // The variant that takes all that is left needs no hash.
        (v.weight == v.remaining && v.weight > 0)
            || takes(v, position(experiment.hash, &v.seed, id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AbConfig;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// GrowthBook hash version 1: `fnv1a32(id + seed) % 1000`, here as an integer.
    fn growthbook_v1(seed: &str, id: &str) -> u32 {
        fnv1a32(format!("{id}{seed}").as_bytes()) % 1000
    }

    #[test]
    fn growthbook_published_hash_vectors() {
        // The "hash" section of GrowthBook's SDK conformance cases, spec version 0.5.4:
        // growthbook/growthbook, packages/sdk-js/test/cases.json (commit 021bf498f75c), rows of
        // [seed, value, version, expected]; expected is the position / 1000 (v1) or / 10000 (v2).
        let v1: [(&str, &str, f64); 7] = [
            ("", "a", 0.22),
            ("", "b", 0.077),
            ("b", "a", 0.946),
            ("ef", "d", 0.652),
            ("asdf", "8952klfjas09ujk", 0.549),
            ("", "123", 0.011),
            ("", "___)((*\":&", 0.563),
        ];
        for (seed, value, expected) in v1 {
            assert_eq!(
                f64::from(growthbook_v1(seed, value)) / 1000.0,
                expected,
                "v1 {seed:?} {value:?}"
            );
        }
        let v2: [(&str, &str, f64); 7] = [
            ("seed", "a", 0.0505),
            ("seed", "b", 0.2696),
            ("foo", "ab", 0.2575),
            ("foo", "def", 0.2019),
            ("89123klj", "8952klfjas09ujkasdf", 0.124),
            ("90850943850283058242805", "123", 0.7516),
            ("()**(%$##$%#$#", "___)((*\":&", 0.0128),
        ];
        for (seed, value, expected) in v2 {
            assert_eq!(
                f64::from(growthbook_v2(seed, value)) / 10_000.0,
                expected,
                "v2 {seed:?} {value:?}"
            );
            assert_eq!(
                position(HashMode::GrowthbookV2, seed, value),
                growthbook_v2(seed, value)
            );
        }
        // (The last row, hash version 99 → null, is GrowthBook's refusal of unknown versions;
        // here an unknown `hash` is refused when the config is parsed.)
    }

    fn experiment(hash: &str, coverage: u32, weights: &[u32]) -> Experiment {
        let variants: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!(r#"{{"name":"v{i}","weight":{w}}}"#))
            .collect();
        let json = format!(
            r#"{{"experiments":[{{"name":"e","header":"x-ab-e","hash":"{hash}","coverage":{coverage},
                "variants":[{}]}}]}}"#,
            variants.join(",")
        );
        AbConfig::from_json(json.as_bytes())
            .unwrap()
            .experiments
            .remove(0)
    }

    #[test]
    fn shares_match_the_weights_within_3_sd() {
        for hash in ["meshwright", "growthbook_v2"] {
            let e = experiment(hash, 10_000, &[5000, 3000, 2000]);
            let n = 30_000u32;
            let mut counts = [0u32; 3];
            for u in 0..n {
                counts[choose(&e, &format!("user-{u}")).unwrap()] += 1;
            }
            for (c, w) in counts.iter().zip([0.5, 0.3, 0.2]) {
                let expected = f64::from(n) * w;
                let sd = (f64::from(n) * w * (1.0 - w)).sqrt();
                assert!(
                    (f64::from(*c) - expected).abs() <= 3.0 * sd,
                    "{hash}: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn coverage_admits_its_share() {
        let e = experiment("meshwright", 2500, &[5000, 5000]);
        let n = 20_000u32;
        let inside = (0..n)
            .filter(|u| choose(&e, &format!("user-{u}")).is_some())
            .count() as f64;
        // 5,000 ± 3 sd (sd = sqrt(20000 · 0.25 · 0.75) ≈ 61.2)
        assert!((inside - 5000.0).abs() <= 184.0, "{inside}");
    }

    #[test]
    fn zero_weight_variants_get_nobody_and_a_full_one_gets_everybody() {
        let e = experiment("meshwright", 10_000, &[0, 10_000, 0]);
        for u in 0..2000 {
            assert_eq!(choose(&e, &format!("u{u}")), Some(1));
        }
    }

    #[test]
    fn a_ramp_from_10_to_30_percent_keeps_every_v2_user() {
        for hash in ["meshwright", "growthbook_v2"] {
            let before = experiment(hash, 10_000, &[9000, 1000]);
            let after = experiment(hash, 10_000, &[7000, 3000]);
            let mut on_v2 = 0;
            for u in 0..10_000 {
                let id = format!("user-{u}");
                if choose(&before, &id) == Some(1) {
                    on_v2 += 1;
                    assert_eq!(choose(&after, &id), Some(1), "{hash} {id}");
                }
            }
            assert!(on_v2 > 900, "{on_v2}");
        }
    }

    /// A GrowthBook SDK evaluating an experiment the way docs/ab.md describes — seed
    /// `<salt>`, hash version 2, explicit `ranges` [[0, w/1e4], [w/1e4, 1]],
    /// coverage as a `filters` entry with seed `<salt>|coverage` and range [0, c/1e4] — here
    /// re-implemented from GrowthBook's published algorithm (`inRange`: start <= n < end).
    fn growthbook_sdk(salt: &str, w: u32, coverage: u32, id: &str) -> Option<usize> {
        let n = |seed: &str| f64::from(growthbook_v2(seed, id)) / 10_000.0;
        let in_range = |n: f64, (start, end): (f64, f64)| n >= start && n < end;
        if !in_range(
            n(&format!("{salt}|coverage")),
            (0.0, f64::from(coverage) / 1e4),
        ) {
            return None;
        }
        let split = f64::from(w) / 1e4;
        let v = n(salt);
        [(0.0, split), (split, 1.0)]
            .iter()
            .position(|r| in_range(v, *r))
    }

    #[test]
    fn a_growthbook_sdk_with_explicit_ranges_computes_the_same_assignment() {
        let e = experiment("growthbook_v2", 6000, &[9000, 1000]);
        for u in 0..10_000 {
            let id = format!("user-{u}");
            assert_eq!(
                choose(&e, &id),
                growthbook_sdk("e", 9000, 6000, &id),
                "{id}"
            );
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Weights for `n` variants summing to 10000.
        fn weights() -> impl Strategy<Value = Vec<u32>> {
            proptest::collection::vec(0u32..=10_000, 1..6).prop_map(|cuts| {
                let mut cuts: Vec<u32> = cuts;
                cuts.sort_unstable();
                let mut w = Vec::with_capacity(cuts.len() + 1);
                let mut last = 0;
                for c in cuts {
                    w.push(c - last);
                    last = c;
                }
                w.push(SPACE - last);
                w
            })
        }

        /// Moves `amount` basis points into variant `j` from the others, in an order given by
        /// `takes_from` (none of the others rises).
        fn raise(w: &[u32], j: usize, amount: u32, takes_from: &[usize]) -> Vec<u32> {
            let mut out = w.to_vec();
            let mut left = amount;
            for k in takes_from
                .iter()
                .copied()
                .chain(0..w.len())
                .filter(|k| *k != j)
            {
                if k >= out.len() {
                    continue;
                }
                let t = left.min(out[k]);
                out[k] -= t;
                out[j] += t;
                left -= t;
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn raising_a_variant_never_takes_it_from_anyone_who_had_it(
                w in weights(), j in 0usize..6, amount in 0u32..=10_000,
                takes_from in proptest::collection::vec(0usize..6, 0..6),
                cov in 0u32..=10_000, cov_up in 0u32..=10_000,
                hash in prop_oneof![Just("meshwright"), Just("growthbook_v2")],
                salt in 0u32..1000,
            ) {
                let j = j % w.len();
                let w2 = raise(&w, j, amount, &takes_from);
                let cov2 = (cov + cov_up).min(SPACE);
                let before = experiment(hash, cov, &w);
                let after = experiment(hash, cov2, &w2);
                for u in 0..200 {
                    let id = format!("{salt}-{u}");
                    let was = choose(&before, &id);
                    let now = choose(&after, &id);
                    if was == Some(j) {
                        prop_assert_eq!(now, Some(j), "{:?} → {:?}, cov {}→{}", w, w2, cov, cov2);
                    }
                    if w2 == w && was.is_some() {
                        prop_assert_eq!(now, was, "coverage {}→{} moved a user", cov, cov2);
                    }
                }
            }

            #[test]
            fn positions_stay_in_range(seed in ".{0,20}", id in ".{0,40}") {
                prop_assert!(position(HashMode::Meshwright, &seed, &id) < SPACE);
                prop_assert!(position(HashMode::GrowthbookV2, &seed, &id) < SPACE);
            }
        }
    }
}

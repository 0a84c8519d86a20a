//! Deterministic, salted hashing for sticky per-user decisions.
//!
//! The same user must get the same fate on every request, worker, replica and restart, with no
//! shared state: the decision is a pure function of `(salt, user key)`. FNV-1a is cheap but its
//! low bits avalanche poorly on similar keys (`user1`, `user2`, …), so the 64-bit FNV-1a state is
//! passed through the MurmurHash3 finaliser before it is mapped onto buckets.

const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits (the hash GrowthBook's bucketing is defined on).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV32_OFFSET, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV32_PRIME)
    })
}

fn fnv1a64_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(FNV64_PRIME);
    }
    h
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV64_OFFSET, bytes)
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A well-mixed 64-bit hash of `salt ‖ 0x1f ‖ key` (the separator keeps `("ab","c")` and
/// `("a","bc")` apart).
pub fn salted_hash(salt: &str, key: &str) -> u64 {
    let h = fnv1a64_extend(FNV64_OFFSET, salt.as_bytes());
    let h = fnv1a64_extend(h, &[0x1f]);
    fmix64(fnv1a64_extend(h, key.as_bytes()))
}

/// Maps a 64-bit hash uniformly onto `0..buckets` (Lemire's multiply-shift on the high bits).
pub fn to_bucket(hash: u64, buckets: u32) -> u32 {
    // (hash >> 32) < 2^32 and buckets < 2^32, so the product fits in u64 and the result < buckets.
    (((hash >> 32) * u64::from(buckets)) >> 32) as u32
}

/// The user's sticky position in parts per million: `0..1_000_000`.
pub fn sticky_ppm(salt: &str, key: &str) -> u32 {
    to_bucket(salted_hash(salt, key), crate::percent::PPM)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn fnv_reference_vectors() {
        // From the FNV reference (isthe.com/chongo/tech/comp/fnv): "", "a", "foobar".
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn sticky_position_is_stable_and_salted() {
        assert_eq!(
            sticky_ppm("rule-a", "user-1"),
            sticky_ppm("rule-a", "user-1")
        );
        let differs = (0..100)
            .filter(|i| {
                let k = format!("user-{i}");
                sticky_ppm("rule-a", &k) != sticky_ppm("rule-b", &k)
            })
            .count();
        assert!(
            differs > 95,
            "salt must change the assignment, changed {differs}/100"
        );
        assert_ne!(salted_hash("ab", "c"), salted_hash("a", "bc"));
    }

    #[test]
    fn buckets_stay_in_range() {
        for h in [0, 1, u64::MAX, u64::MAX / 2, 0xffff_ffff] {
            assert!(to_bucket(h, 10) < 10);
            assert!(to_bucket(h, 1_000_000) < 1_000_000);
        }
        assert_eq!(to_bucket(u64::MAX, 1), 0);
    }

    #[test]
    fn sequential_keys_spread_evenly() {
        // 20,000 keys "user-0".."user-19999" into 10 buckets: each bucket expects 2,000 with
        // sd = sqrt(20000 * 0.1 * 0.9) ≈ 42.4; allow 4 sd.
        let mut counts = [0u32; 10];
        for i in 0..20_000 {
            let b = to_bucket(salted_hash("s", &format!("user-{i}")), 10) as usize;
            counts[b] += 1;
        }
        for c in counts {
            assert!((2000 - 170..=2000 + 170).contains(&c), "{counts:?}");
        }
    }
}

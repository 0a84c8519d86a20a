//! The newest generation of each session that refreshed, as the proxy's shared data holds it:
//! a cookie of an older generation carries a refresh token the IdP already rotated (or refused),
//! which must never be sent again (providers that detect the reuse revoke the whole grant).
//!
//! Sessions are spread over buckets by a hash of their id; a bucket's value is
//! `sid generation until_s;sid generation until_s;…`, at most [`PER_BUCKET`] entries, the ones past their
//! session's end dropped at every write (and, when full, the one ending first). Pure text codec;
//! the glue reads and compare-and-swaps the values.

/// Buckets in the proxy's shared data.
pub const BUCKETS: u64 = 4096;
/// Entries a bucket keeps: 4096 × 16 sessions refreshed within their lifetime before one is
/// forgotten (a forgotten generation only loses this protection).
pub const PER_BUCKET: usize = 16;

/// The shared-data key of `sid`'s bucket.
pub fn bucket_key(sid: &str) -> String {
    let b = meshwright_shared::hash::fnv1a64(sid.as_bytes()) % BUCKETS;
    format!("meshwright.oauth2.generation.{b}")
}

fn entries(text: &str) -> impl Iterator<Item = (&str, u32, u64)> {
    text.split(';').filter_map(|e| {
        let mut p = e.split(' ');
        let sid = p.next().filter(|s| !s.is_empty())?;
        let generation = p.next()?.parse().ok()?;
        let until = p.next()?.parse().ok()?;
        Some((sid, generation, until))
    })
}

/// Whether `text` (a bucket's value) knows a generation of `sid` newer than `generation` at `now_s`.
pub fn newer(text: &str, sid: &str, generation: u32, now_s: u64) -> bool {
    entries(text).any(|(s, g, until)| s == sid && g > generation && until > now_s)
}

/// The bucket's value once `sid`'s newest generation is `generation` (kept until `until_s`); a
/// generation never goes back.
pub fn record(text: &str, sid: &str, generation: u32, until_s: u64, now_s: u64) -> String {
    let mut kept: Vec<(&str, u32, u64)> = Vec::new();
    let mut generation = generation;
    let mut until = until_s;
    for (s, g, u) in entries(text) {
        if u <= now_s {
            continue;
        }
        if s == sid {
            generation = generation.max(g);
            until = until.max(u);
        } else {
            kept.push((s, g, u));
        }
    }
    kept.sort_by_key(|e| std::cmp::Reverse(e.2));
    kept.truncate(PER_BUCKET.saturating_sub(1));
    kept.push((sid, generation, until));
    kept.iter()
        .map(|(s, g, u)| format!("{s} {g} {u}"))
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn older_generations_are_superseded_until_the_session_ends() {
        let v = record("", "sid-a", 1, 2000, 1000);
        assert!(newer(&v, "sid-a", 0, 1000), "the pre-refresh cookie");
        assert!(!newer(&v, "sid-a", 1, 1000), "the current cookie");
        assert!(!newer(&v, "sid-b", 0, 1000), "another session");
        assert!(
            !newer(&v, "sid-a", 0, 2000),
            "forgotten once the session has ended"
        );
        // A generation never goes back (a slow replica writing an older one).
        let v = record(&record(&v, "sid-a", 3, 2000, 1001), "sid-a", 2, 2000, 1002);
        assert!(newer(&v, "sid-a", 2, 1002));
    }

    #[test]
    fn a_bucket_stays_bounded_and_drops_ended_sessions() {
        let mut v = String::new();
        for i in 0..100 {
            v = record(&v, &format!("s{i}"), 1, 5000 + i, 1000);
        }
        assert_eq!(v.split(';').count(), PER_BUCKET);
        assert!(newer(&v, "s99", 0, 1000), "the newest is kept");
        let v = record(&v, "late", 1, 9000, 6000);
        assert_eq!(v, "late 1 9000", "every other session has ended");
        assert!(!newer("garbage;;x y z", "x", 0, 0));
    }
}

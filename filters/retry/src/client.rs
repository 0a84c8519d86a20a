//! Client side (the caller's outbound sidecar): how many retries Envoy's router may make for one
//! request, and how that grant is settled once the retries that really happened are known.
//!
//! The filter runs before the router, which retries internally, so the budget cannot be asked at
//! retry time. Instead each request is granted retries up front (withdrawn from the budget at
//! once, so concurrent requests cannot all spend the same tokens), the router is told with
//! `x-envoy-max-retries`, and when the stream ends the unused part of the grant goes back to the
//! bucket it came from ([`settle`]). A grant of 0 stops the router's retries (measured on Envoy
//! 1.40: 1 upstream attempt instead of 4 with `num_retries: 3`).

use crate::budget::{Budget, Window};
use crate::lease::Local;

/// Request header that caps the router's retries for one request (it overrides the route's
/// `num_retries`, up or down, whenever the route has a retry policy).
pub const MAX_RETRIES_HEADER: &str = "x-envoy-max-retries";

/// Response header with the router's attempt count (only with the virtual host's
/// `include_attempt_count_in_response`); the filter reads the `upstream.request_attempt_count`
/// property first, which needs no route setting.
pub const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";

/// Retries one request asks of the budget: `max_retries`, or fewer when the application itself
/// sent a smaller `x-envoy-max-retries` (a client may lower its retries, never raise them; the
/// filter overwrites the header either way).
pub fn wanted(max_retries: u32, client_header: Option<&str>) -> u32 {
    client_header
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(max_retries, |asked| asked.min(max_retries))
}

/// Retries granted to one request, and where they were withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub wanted: u32,
    pub retries: u32,
    /// Bucket index of the withdrawal (settlements go back there).
    pub bucket: u64,
}

impl Grant {
    /// Retries asked for and not granted.
    pub fn denied(&self) -> u32 {
        self.wanted.saturating_sub(self.retries)
    }
}

/// Counts one original request and grants it `wanted` retries from what this worker holds.
/// None: the lease is short, and [`admit_written`] decides.
pub fn admit(local: &mut Local, wanted: u32) -> Option<Grant> {
    local.count();
    local.take(wanted).map(|bucket| Grant {
        wanted,
        retries: wanted,
        bucket,
    })
}

/// Grants up to `wanted` retries by a write of the shared window (inside a
/// [`crate::budget::step`]); the request was counted by [`admit`].
pub fn admit_written(
    window: &mut Window,
    budget: &Budget,
    local: &mut Local,
    wanted: u32,
) -> Grant {
    let (retries, bucket) = local.write(window, budget, wanted);
    Grant {
        wanted,
        retries,
        bucket,
    }
}

/// The end of a granted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Retries that really happened.
    pub retries: u32,
    /// Tokens back to the grant's bucket (negative: charged extra).
    pub delta: i64,
}

/// Settles a grant with the router's attempt count (1 = no retry; 0 = no upstream request at
/// all). Enforcing, more retries than granted (someone else raised the limit after this filter)
/// are charged; in dry run the router was never limited, so only the unused part of the grant
/// is returned and the budget evolves as it would under enforcement.
pub fn settle(grant: &Grant, attempts: u64, enforced: bool) -> Settlement {
    let retries = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    let delta = i64::from(grant.retries) - i64::from(retries);
    Settlement {
        retries,
        delta: if enforced { delta } else { delta.max(0) },
    }
}

/// The `upstream.request_attempt_count` property: an unsigned integer, 8 bytes little-endian.
pub fn attempts_from_property(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

pub fn attempts_from_header(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_client_can_lower_its_retries_but_not_raise_them() {
        assert_eq!(wanted(2, None), 2);
        assert_eq!(wanted(2, Some("0")), 0);
        assert_eq!(wanted(2, Some(" 1 ")), 1);
        assert_eq!(wanted(2, Some("10")), 2);
        assert_eq!(wanted(2, Some("-1")), 2);
        assert_eq!(wanted(2, Some("lots")), 2);
    }

    #[test]
    fn an_empty_budget_grants_nothing_and_counts_the_denial() {
        let b = Budget::try_new(0.2, 0.0, 10_000).unwrap();
        let mut w = Window::new(&b, 0);
        let mut l = Local::new(true);
        let mut run = |w: &mut Window, want| {
            admit(&mut l, want).unwrap_or_else(|| admit_written(w, &b, &mut l, want))
        };
        let g = run(&mut w, 3);
        assert_eq!((g.retries, g.denied()), (0, 3));
        for _ in 0..9 {
            assert_eq!(run(&mut w, 0).retries, 0);
        }
        // 11 requests: 2.2 tokens.
        let g = run(&mut w, 3);
        assert_eq!((g.retries, g.denied(), g.bucket), (2, 1, 0));
        assert_eq!(w.totals(), (11, 2));
    }

    #[test]
    fn settlement_returns_what_was_not_used() {
        let g = Grant {
            wanted: 3,
            retries: 3,
            bucket: 7,
        };
        assert_eq!(
            settle(&g, 1, true),
            Settlement {
                retries: 0,
                delta: 3
            }
        );
        assert_eq!(
            settle(&g, 3, true),
            Settlement {
                retries: 2,
                delta: 1
            }
        );
        assert_eq!(
            settle(&g, 4, true),
            Settlement {
                retries: 3,
                delta: 0
            }
        );
        assert_eq!(
            settle(&g, 0, true),
            Settlement {
                retries: 0,
                delta: 3
            }
        );
        // More than granted: charged when enforcing, not in dry run.
        assert_eq!(
            settle(&g, 6, true),
            Settlement {
                retries: 5,
                delta: -2
            }
        );
        assert_eq!(
            settle(&g, 6, false),
            Settlement {
                retries: 5,
                delta: 0
            }
        );
        assert_eq!(
            settle(&g, u64::MAX, true).retries,
            u32::MAX,
            "absurd counts saturate"
        );
    }

    #[test]
    fn attempt_counts_are_read_from_the_property_or_the_header() {
        assert_eq!(attempts_from_property(&4u64.to_le_bytes()), Some(4));
        assert_eq!(attempts_from_property(&[4, 0, 0]), None);
        assert_eq!(attempts_from_header("2"), Some(2));
        assert_eq!(attempts_from_header("x"), None);
    }
}

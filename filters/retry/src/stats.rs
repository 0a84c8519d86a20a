//! The retry-budget filter's metrics, declared in one place (documented in
//! docs/retry-budget.md). `<side>` is `client` or `server` (tag `side`), `<dest>` the destination's
//! stat name (tag `destination`, see [`crate::destination::stat_name`]).
//!
//! Per destination, `meshwright.retry_budget.<side>.destination.<dest>.<metric>`:
//!
//! | metric | side | type | meaning |
//! |---|---|---|---|
//! | `requests` | both | counter | requests seen (server: first attempts and retries) |
//! | `retries` | both | counter | retries that happened (client: learned when the stream ends; server: requests with `x-envoy-attempt-count` ≥ 2) |
//! | `retries_granted` | client | counter | retries the budget allowed the router to make |
//! | `retries_denied` | client | counter | retries asked for (`max_retries` per request) and not granted |
//! | `retries_over_budget` | server | counter | retries the budget could not pay (shed, or let through in dry run) |
//! | `retries_shed` | server | counter | retries answered with the shed reply |
//! | `budget` | both | gauge | whole retries the budget can pay now |
//!
//! Per side, `meshwright.retry_budget.<side>.<metric>`:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `cas_conflicts` | counter | shared-data writes that lost a race with another worker and were redone |
//! | `state_errors` | counter | requests whose budget could not be read or written (client: granted 0 retries; server: not shed) |
//! | `state_resets` | counter | stored budgets that were unreadable or of another `ttl` and started over |
//! | `destinations_overflow` | counter | requests counted under `overflow` because `max_destinations` were tracked |
//! | `attempts_unknown` | counter | client: streams whose attempt count could not be learned (the grant is kept) |

use crate::config::Side;

pub const FILTER: &str = "retry_budget";

/// Names of one destination's metrics on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationMetricNames {
    pub requests: String,
    pub retries: String,
    pub retries_granted: String,
    pub retries_denied: String,
    pub retries_over_budget: String,
    pub retries_shed: String,
    pub budget: String,
}

impl DestinationMetricNames {
    /// `dest` must be a stat name ([`crate::destination::stat_name`]).
    pub fn new(side: Side, dest: &str) -> Self {
        let m = |name: &str| {
            format!(
                "meshwright.{FILTER}.{}.destination.{dest}.{name}",
                side.as_str()
            )
        };
        Self {
            requests: m("requests"),
            retries: m("retries"),
            retries_granted: m("retries_granted"),
            retries_denied: m("retries_denied"),
            retries_over_budget: m("retries_over_budget"),
            retries_shed: m("retries_shed"),
            budget: m("budget"),
        }
    }
}

/// Names of a side's filter-wide metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideMetricNames {
    pub cas_conflicts: String,
    pub state_errors: String,
    pub state_resets: String,
    pub destinations_overflow: String,
    pub attempts_unknown: String,
}

impl SideMetricNames {
    pub fn new(side: Side) -> Self {
        let m = |name: &str| format!("meshwright.{FILTER}.{}.{name}", side.as_str());
        Self {
            cas_conflicts: m("cas_conflicts"),
            state_errors: m("state_errors"),
            state_resets: m("state_resets"),
            destinations_overflow: m("destinations_overflow"),
            attempts_unknown: m("attempts_unknown"),
        }
    }
}

/// Shared-data key of a destination's budget (`destination` as normalised by
/// [`crate::destination::normalize`]). Prefixed with the filter's name: Istio sets no `vm_id`, so
/// every WasmPlugin in a proxy shares one shared-data namespace.
pub fn shared_key(side: Side, destination: &str) -> String {
    format!("meshwright.retry.{}.{destination}", side.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwright_shared::stats::STATS_TAGS;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_follow_the_convention() {
        let n = DestinationMetricNames::new(Side::Client, "backend");
        assert_eq!(
            n.retries_granted,
            "meshwright.retry_budget.client.destination.backend.retries_granted"
        );
        assert_eq!(
            SideMetricNames::new(Side::Server).cas_conflicts,
            "meshwright.retry_budget.server.cas_conflicts"
        );
        assert_eq!(
            shared_key(Side::Server, "inbound|8080||"),
            "meshwright.retry.server.inbound|8080||"
        );
    }

    #[test]
    fn the_side_and_destination_tag_extractors_exist() {
        let names: Vec<&str> = STATS_TAGS.iter().map(|(n, _)| *n).collect();
        assert!(
            names.contains(&"side") && names.contains(&"destination"),
            "{names:?}"
        );
    }
}

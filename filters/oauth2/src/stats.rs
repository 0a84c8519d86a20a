//! The OAuth2 filter's metrics, declared in one place (documented in docs/oauth2.md).

use meshwright_shared::stats::metric;

pub const FILTER: &str = "oauth2";

/// Counter names, filter-wide.
pub const COUNTERS: &[&str] = &[
    "requests_authenticated",
    "requests_bypassed",
    "bearer_accepted",
    "bearer_rejected",
    "logins_started",
    "logins_succeeded",
    "claims_missing",
    "userinfo_fetches",
    "userinfo_failures",
    "unauthenticated_401",
    "sessions_invalid",
    "sessions_expired",
    "cookie_too_large",
    "callbacks_rejected",
    "logouts",
    "refreshes",
    "refresh_failures",
    "refreshes_adopted",
    "idp_waits",
    "idp_wait_timeouts",
    "idp_calls_shed",
    "discovery_fetches",
    "discovery_failures",
    "jwks_fetches",
    "jwks_failures",
];

/// `meshwright.oauth2.<name>`
pub fn counter(name: &str) -> String {
    metric(FILTER, name)
}

/// `meshwright.oauth2.reason.<reason>.logins_failed`: failed logins, labelled `reason`.
pub fn login_failed(reason: &str) -> String {
    metric(FILTER, &format!("reason.{reason}.logins_failed"))
}

/// `meshwright.oauth2.reason.<error>.token_errors`: grants the token endpoint refused, labelled
/// `reason` by the RFC 6749 §5.2 `error` (`flow::TOKEN_ERRORS`).
pub fn token_error(error: &str) -> String {
    metric(FILTER, &format!("reason.{error}.token_errors"))
}

#[cfg(test)]
mod tests {
    use crate::flow::{Failure, TOKEN_ERRORS};

    /// The Metrics section of docs/oauth2.md names every counter and every label value.
    #[test]
    fn the_docs_list_every_metric_and_label() {
        let doc = include_str!("../../../docs/oauth2.md");
        let metrics = doc
            .split("## Metrics")
            .nth(1)
            .and_then(|m| m.split("\n## ").next())
            .unwrap_or_default();
        for c in super::COUNTERS {
            assert!(
                metrics.contains(&format!("meshwright_oauth2_{c}`"))
                    || metrics.contains(&format!("`_{c}`")),
                "docs/oauth2.md does not list {c}"
            );
        }
        for label in Failure::ALL.iter().map(|f| f.label()).chain(TOKEN_ERRORS) {
            assert!(
                metrics.contains(&format!("`{label}`")),
                "docs/oauth2.md: reason {label}"
            );
        }
        assert!(metrics.contains("meshwright_oauth2_reason_logins_failed{reason}"));
        assert!(metrics.contains("meshwright_oauth2_reason_token_errors{reason}"));
    }
}

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

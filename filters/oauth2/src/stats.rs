//! The OAuth2 filter's metrics, declared in one place (documented in docs/oauth2.md).

use crate::flow::Outcome;
use meshwright_shared::stats::metric;

pub const FILTER: &str = "oauth2";

/// The filter-wide counters: one variant each, so a counter cannot be misspelt at a call site.
macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Stat {
            $($variant,)*
        }

        impl Stat {
            /// Every counter, in declaration order (`Stat as usize` indexes it).
            pub const ALL: &'static [Stat] = &[$(Stat::$variant,)*];

            /// The counter's name, after `meshwright.oauth2.`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Stat::$variant => $name,)*
                }
            }
        }

        /// Counter names, filter-wide.
        pub const COUNTERS: &[&str] = &[$($name,)*];
    };
}

counters! {
    RequestsAuthenticated => "requests_authenticated",
    RequestsBypassed => "requests_bypassed",
    BearerAccepted => "bearer_accepted",
    BearerRejected => "bearer_rejected",
    LoginsStarted => "logins_started",
    LoginsSucceeded => "logins_succeeded",
    ClaimsMissing => "claims_missing",
    UserinfoFetches => "userinfo_fetches",
    UserinfoFailures => "userinfo_failures",
    Unauthenticated401 => "unauthenticated_401",
    SessionsInvalid => "sessions_invalid",
    SessionsExpired => "sessions_expired",
    CookieTooLarge => "cookie_too_large",
    CallbacksRejected => "callbacks_rejected",
    Logouts => "logouts",
    Refreshes => "refreshes",
    RefreshFailures => "refresh_failures",
    RefreshesAdopted => "refreshes_adopted",
    IdpWaits => "idp_waits",
    IdpWaitTimeouts => "idp_wait_timeouts",
    IdpCallsShed => "idp_calls_shed",
    DiscoveryFetches => "discovery_fetches",
    DiscoveryFailures => "discovery_failures",
    JwksFetches => "jwks_fetches",
    JwksFailures => "jwks_failures",
}

/// The counters a request's outcome adds to (none for the callback, which counts at its end, the
/// JWKS and bad requests).
pub fn outcome_stats(outcome: Outcome) -> &'static [Stat] {
    match outcome {
        Outcome::Authenticated => &[Stat::RequestsAuthenticated],
        Outcome::RefreshAdopted => &[Stat::RequestsAuthenticated, Stat::RefreshesAdopted],
        Outcome::Bypassed => &[Stat::RequestsBypassed],
        Outcome::BearerAccepted => &[Stat::BearerAccepted],
        Outcome::BearerRejected => &[Stat::BearerRejected],
        Outcome::LoginStarted => &[Stat::LoginsStarted],
        Outcome::Unauthenticated401 => &[Stat::Unauthenticated401],
        Outcome::InvalidSession => &[Stat::SessionsInvalid],
        Outcome::ExpiredSession => &[Stat::SessionsExpired],
        Outcome::CookieTooLarge => &[Stat::CookieTooLarge],
        Outcome::CallbackRejected => &[Stat::CallbacksRejected],
        Outcome::Logout => &[Stat::Logouts],
        Outcome::Callback | Outcome::Jwks | Outcome::BadRequest => &[],
    }
}

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
    use super::{Stat, outcome_stats};
    use crate::flow::{Failure, Outcome, TOKEN_ERRORS};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn counters_are_indexed_by_their_variant() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(super::COUNTERS[i], s.name());
        }
    }

    #[test]
    fn outcomes_count_where_the_docs_say() {
        let names = |o| {
            outcome_stats(o)
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Outcome::Authenticated), ["requests_authenticated"]);
        assert_eq!(
            names(Outcome::RefreshAdopted),
            ["requests_authenticated", "refreshes_adopted"],
            "an adopted refresh is an authenticated request too"
        );
        assert_eq!(names(Outcome::Unauthenticated401), ["unauthenticated_401"]);
        assert_eq!(names(Outcome::InvalidSession), ["sessions_invalid"]);
        assert_eq!(names(Outcome::ExpiredSession), ["sessions_expired"]);
        assert_eq!(names(Outcome::CallbackRejected), ["callbacks_rejected"]);
        assert!(
            names(Outcome::Callback).is_empty(),
            "a callback counts when it ends"
        );
        assert!(names(Outcome::Jwks).is_empty());
    }

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

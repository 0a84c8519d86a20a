//! Metric naming shared by every meshwright filter.
//!
//! Names follow Envoy's own convention, dots between segments, with per-object values as a
//! segment: `meshwright.<filter>.<metric>` and `meshwright.<filter>.rule.<rule>.<metric>`.
//! Envoy puts plugin metrics in its `wasmcustom` stat namespace, and `/stats/prometheus` drops
//! that namespace, so `meshwright.fault.rule.checkout.aborts_injected` is exported as
//! `meshwright_fault_rule_checkout_aborts_injected` — or, when the proxy's bootstrap carries
//! the tag extractors below, as `meshwright_fault_rule_aborts_injected{rule="checkout"}`.
//! (Istio: add them with a bootstrap override; see docs/metrics.md.)

/// Envoy `stats_config.stats_tags` entries: (tag name, regex). The regex's first capture group
/// is removed from the name and its second becomes the tag value, Envoy's convention.
///
/// - `rule`: `meshwright.<filter>.rule.<rule>.<metric>`;
/// - `side`: `meshwright.<filter>.<client|server>.…` (a filter that runs on both sides of a call);
/// - `destination`: `meshwright.<filter>[.<side>].destination.<destination>.<metric>`;
/// - `reason`: `meshwright.<filter>.reason.<reason>.<metric>`;
/// - `experiment`, `variant`: `meshwright.<filter>.experiment.<e>[.variant.<v>].<metric>`.
///
/// Envoy applies every extractor to the full name, so `variant` names its experiment segment too.
pub const STATS_TAGS: &[(&str, &str)] = &[
    (
        "rule",
        r"^wasmcustom\.meshwright\.[a-z0-9_]+\.rule\.(([^.]+)\.)",
    ),
    (
        "side",
        r"^wasmcustom\.meshwright\.[a-z0-9_]+\.((client|server)\.)",
    ),
    (
        "destination",
        r"^wasmcustom\.meshwright\.[a-z0-9_]+\.(?:(?:client|server)\.)?destination\.(([^.]+)\.)",
    ),
    (
        "reason",
        r"^wasmcustom\.meshwright\.[a-z0-9_]+\.reason\.(([^.]+)\.)",
    ),
    (
        "experiment",
        r"^wasmcustom\.meshwright\.[a-z0-9_]+\.experiment\.(([^.]+)\.)",
    ),
    (
        "variant",
        r"^wasmcustom\.meshwright\.[a-z0-9_]+\.experiment\.[^.]+\.variant\.(([^.]+)\.)",
    ),
];

/// `meshwright.<filter>.<metric>`
pub fn metric(filter: &str, name: &str) -> String {
    format!("meshwright.{filter}.{name}")
}

/// `meshwright.<filter>.rule.<rule>.<metric>`; `rule` must be a valid stat name
/// ([`crate::config::validate_stat_name`]).
pub fn rule_metric(filter: &str, rule: &str, name: &str) -> String {
    format!("meshwright.{filter}.rule.{rule}.{name}")
}

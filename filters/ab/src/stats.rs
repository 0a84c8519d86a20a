//! The A/B filter's metrics, declared in one place (documented in docs/ab.md).
//!
//! Per experiment and variant:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwright.ab.experiment.<e>.variant.<v>.assigned` | counter | requests given the variant (any way) |
//! | `meshwright.ab.experiment.<e>.variant.<v>.sticky` | counter | of which from the sticky cookie |
//! | `meshwright.ab.experiment.<e>.variant.<v>.overridden` | counter | of which forced by a QA override |
//!
//! Per experiment:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwright.ab.experiment.<e>.not_in_coverage` | counter | targeted requests of users outside the coverage |
//! | `meshwright.ab.experiment.<e>.no_identity` | counter | targeted requests without an identity (and no anonymous id) |
//! | `meshwright.ab.experiment.<e>.client_header_removed` | counter | requests that carried the output header themselves (overwritten or removed) |
//!
//! Filter-wide:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwright.ab.anonymous_ids_issued` | counter | anonymous-id cookies set |
//! | `meshwright.ab.overrides_rejected` | counter | override values refused (not allowed, bad or expired signature, malformed, unknown names) |
//! | `meshwright.ab.sticky_cookies_rejected` | counter | sticky cookies not signed by the filter's key (ignored) |

use meshwright_shared::stats::metric;

pub const FILTER: &str = "ab";

/// `meshwright.ab.experiment.<e>.<name>`
pub fn experiment_metric(experiment: &str, name: &str) -> String {
    metric(FILTER, &format!("experiment.{experiment}.{name}"))
}

/// `meshwright.ab.experiment.<e>.variant.<v>.<name>`
pub fn variant_metric(experiment: &str, variant: &str, name: &str) -> String {
    metric(
        FILTER,
        &format!("experiment.{experiment}.variant.{variant}.{name}"),
    )
}

/// Names of one variant's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantMetricNames {
    pub assigned: String,
    pub sticky: String,
    pub overridden: String,
}

impl VariantMetricNames {
    pub fn new(experiment: &str, variant: &str) -> Self {
        let m = |name| variant_metric(experiment, variant, name);
        Self {
            assigned: m("assigned"),
            sticky: m("sticky"),
            overridden: m("overridden"),
        }
    }
}

/// Names of one experiment's own metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentMetricNames {
    pub not_in_coverage: String,
    pub no_identity: String,
    pub client_header_removed: String,
}

impl ExperimentMetricNames {
    pub fn new(experiment: &str) -> Self {
        let m = |name| experiment_metric(experiment, name);
        Self {
            not_in_coverage: m("not_in_coverage"),
            no_identity: m("no_identity"),
            client_header_removed: m("client_header_removed"),
        }
    }
}

pub fn anonymous_ids_issued() -> String {
    metric(FILTER, "anonymous_ids_issued")
}

pub fn overrides_rejected() -> String {
    metric(FILTER, "overrides_rejected")
}

pub fn sticky_cookies_rejected() -> String {
    metric(FILTER, "sticky_cookies_rejected")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_carry_experiment_and_variant_segments() {
        let v = VariantMetricNames::new("product", "v2");
        assert_eq!(
            v.assigned,
            "meshwright.ab.experiment.product.variant.v2.assigned"
        );
        let e = ExperimentMetricNames::new("product");
        assert_eq!(
            e.not_in_coverage,
            "meshwright.ab.experiment.product.not_in_coverage"
        );
        assert_eq!(anonymous_ids_issued(), "meshwright.ab.anonymous_ids_issued");
    }
}

//! The fault filter's metrics, declared in one place (documented in docs/fault.md).
//!
//! Per rule (and for header control, as rule `header-control`):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwright.fault.rule.<rule>.aborts_injected` | counter | requests answered with the rule's abort |
//! | `meshwright.fault.rule.<rule>.delays_injected` | counter | requests held by the rule's delay |
//! | `meshwright.fault.rule.<rule>.response_faults_injected` | counter | upstream responses replaced |
//! | `meshwright.fault.rule.<rule>.faults_overflow` | counter | faults not injected: `max_active_faults` reached |
//! | `meshwright.fault.rule.<rule>.active_faults` | gauge | requests of this rule with a fault in progress |
//!
//! Filter-wide:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `meshwright.fault.active_faults` | gauge | faults in progress, all rules, all workers |
//! | `meshwright.fault.header_control_rejected` | counter | requests whose fault headers were refused (bad, expired or too long-lived signature, malformed values; unsigned ones are ignored uncounted) |

use meshwright_shared::stats::{metric, rule_metric};

pub const FILTER: &str = "fault";

/// Names of one rule's metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMetricNames {
    pub aborts_injected: String,
    pub delays_injected: String,
    pub response_faults_injected: String,
    pub faults_overflow: String,
    pub active_faults: String,
}

impl RuleMetricNames {
    pub fn new(rule: &str) -> Self {
        let m = |name| rule_metric(FILTER, rule, name);
        Self {
            aborts_injected: m("aborts_injected"),
            delays_injected: m("delays_injected"),
            response_faults_injected: m("response_faults_injected"),
            faults_overflow: m("faults_overflow"),
            active_faults: m("active_faults"),
        }
    }
}

pub fn active_faults() -> String {
    metric(FILTER, "active_faults")
}

pub fn header_control_rejected() -> String {
    metric(FILTER, "header_control_rejected")
}

//! How the benchmark knows a number is a number: every request is checked.
//!
//! - [`HeaderCheck`]s run in the upstream on *every* request: a request that arrives without
//!   what the filter should have done to it is answered `412`, which h2load counts as a failure
//!   (and which no route retries).
//! - [`StatCheck`]s compare Envoy's counters before and after each measured run: e.g. the OAuth2
//!   filter's `requests_authenticated` must grow by exactly the number of requests sent.
//! - [`Probe`]s are single requests sent before measuring, for effects the measured requests
//!   deliberately do not have (a fault rule that fires, a retry limit that bites).

use meshwright_testbed::upstream::{Behaviour, Reply, Seen};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Path prefix the checking upstream always answers with 503 (for retry probes).
pub const PROBE_503: &str = "/bench-probe/503";

/// A condition on one request header as the upstream receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeaderCheck {
    Equals {
        header: String,
        value: String,
    },
    Prefix {
        header: String,
        prefix: String,
    },
    Contains {
        header: String,
        needle: String,
    },
    /// Absent, or present without `needle`.
    Lacks {
        header: String,
        needle: String,
    },
}

impl HeaderCheck {
    pub fn equals(header: &str, value: &str) -> Self {
        Self::Equals {
            header: header.to_owned(),
            value: value.to_owned(),
        }
    }

    pub fn prefix(header: &str, prefix: &str) -> Self {
        Self::Prefix {
            header: header.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    pub fn contains(header: &str, needle: &str) -> Self {
        Self::Contains {
            header: header.to_owned(),
            needle: needle.to_owned(),
        }
    }

    pub fn lacks(header: &str, needle: &str) -> Self {
        Self::Lacks {
            header: header.to_owned(),
            needle: needle.to_owned(),
        }
    }

    /// `Err` says what was wrong.
    pub fn check(&self, header: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let ok = match self {
            Self::Equals { header: h, value } => header(h).as_deref() == Some(value.as_str()),
            Self::Prefix { header: h, prefix } => header(h).is_some_and(|v| v.starts_with(prefix)),
            Self::Contains { header: h, needle } => header(h).is_some_and(|v| v.contains(needle)),
            Self::Lacks { header: h, needle } => header(h).is_none_or(|v| !v.contains(needle)),
        };
        if ok {
            return Ok(());
        }
        let name = match self {
            Self::Equals { header, .. }
            | Self::Prefix { header, .. }
            | Self::Contains { header, .. }
            | Self::Lacks { header, .. } => header,
        };
        Err(format!(
            "upstream expected {}, got {name}: {:?}",
            self.describe(),
            header(name)
        ))
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Equals { header, value } => format!("`{header}: {value}`"),
            Self::Prefix { header, prefix } => format!("`{header}` starting `{prefix}`"),
            Self::Contains { header, needle } => format!("`{header}` containing `{needle}`"),
            Self::Lacks { header, needle } => format!("`{header}` without `{needle}`"),
        }
    }
}

/// A condition on Envoy's stats over a measured run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatCheck {
    /// The sum of the counters matching any of `names` grows by exactly `per_request` × the
    /// requests of the run (0: must not grow). A `*` segment of a name matches any one segment:
    /// `RuleMetricNames::new("*").aborts_injected` is every fault rule's aborts.
    PerRequest {
        names: Vec<String>,
        per_request: u64,
    },
    /// A stat with this exact name exists (the filter is in the chain).
    Present { name: String },
}

impl StatCheck {
    pub fn per_request<S: AsRef<str>>(names: &[S], per_request: u64) -> Self {
        Self::PerRequest {
            names: names.iter().map(|n| n.as_ref().to_owned()).collect(),
            per_request,
        }
    }

    pub fn present(name: &str) -> Self {
        Self::Present {
            name: name.to_owned(),
        }
    }

    /// The sum this check watches (0 for [`Self::Present`]).
    pub fn sum(&self, stats: &BTreeMap<String, u64>) -> u64 {
        match self {
            Self::PerRequest { names, .. } => stats
                .iter()
                .filter(|(k, _)| names.iter().any(|n| matches(n, k)))
                .map(|(_, v)| *v)
                .sum(),
            Self::Present { .. } => 0,
        }
    }

    /// Checks a run of `requests` given the stats before and after it.
    pub fn verify(
        &self,
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        requests: u64,
    ) -> Result<(), String> {
        match self {
            Self::PerRequest { per_request, .. } => {
                let grew = self.sum(after).saturating_sub(self.sum(before));
                let want = per_request * requests;
                if grew == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{} grew by {grew}, expected {want}",
                        self.describe()
                    ))
                }
            }
            Self::Present { name } => {
                if after.contains_key(name) {
                    Ok(())
                } else {
                    Err(format!("no stat {name}: the filter is not in the chain"))
                }
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::PerRequest { names, per_request } => {
                format!("stat {} +{per_request}/request", names.join(" + "))
            }
            Self::Present { name } => format!("stat {name} exists"),
        }
    }
}

/// Whether stat `name` is `pattern`, a `*` segment of `pattern` standing for any one segment.
fn matches(pattern: &str, name: &str) -> bool {
    let (mut p, mut n) = (pattern.split('.'), name.split('.'));
    loop {
        match (p.next(), n.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

/// One request sent before measuring, and what must come of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    pub what: String,
    /// `None`: the variant's own request path.
    pub path: Option<String>,
    /// Added to the variant's request headers (same name: replaced).
    pub headers: Vec<(String, String)>,
    pub status: u16,
    /// How many times the upstream must have been hit on [`PROBE_503`] by this probe.
    pub upstream_503_hits: Option<u64>,
}

/// Counters of a checking upstream.
#[derive(Debug, Clone, Default)]
pub struct Checker {
    pub failures: Arc<AtomicU64>,
    pub probe_503_hits: Arc<AtomicU64>,
    pub first_failure: Arc<Mutex<Option<String>>>,
}

impl Checker {
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    pub fn first_failure(&self) -> Option<String> {
        self.first_failure.lock().ok().and_then(|f| f.clone())
    }

    /// The upstream's behaviour: `200 ok` when every check passes, `412` with the reasons
    /// otherwise; `503` on [`PROBE_503`].
    pub fn behaviour(&self, checks: Vec<HeaderCheck>) -> Behaviour {
        let me = self.clone();
        Arc::new(move |seen: &Seen| {
            if seen.path.starts_with(PROBE_503) {
                me.probe_503_hits.fetch_add(1, Ordering::SeqCst);
                return Reply::status(503);
            }
            let lookup = |h: &str| seen.header(h).map(str::to_owned);
            let errors: Vec<String> = checks
                .iter()
                .filter_map(|c| c.check(lookup).err())
                .collect();
            if errors.is_empty() {
                let mut r = Reply::status(200);
                r.body = bytes::Bytes::from_static(b"ok");
                return r;
            }
            me.failures.fetch_add(1, Ordering::SeqCst);
            let text = errors.join("; ");
            if let Ok(mut first) = me.first_failure.lock()
                && first.is_none()
            {
                *first = Some(text.clone());
            }
            let mut r = Reply::status(412);
            r.body = text.into();
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwright_ab::stats::VariantMetricNames;
    use meshwright_fault::stats::RuleMetricNames;
    use meshwright_testbed::envoy::wasmcustom;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |h| map.get(h).cloned()
    }

    #[test]
    fn header_checks() {
        let h = headers(&[("authorization", "Bearer eyJx"), ("cookie", "a=1; b=2")]);
        assert!(
            HeaderCheck::prefix("authorization", "Bearer ey")
                .check(&h)
                .is_ok()
        );
        assert!(
            HeaderCheck::equals("authorization", "Bearer")
                .check(&h)
                .is_err()
        );
        assert!(HeaderCheck::contains("cookie", "b=2").check(&h).is_ok());
        assert!(
            HeaderCheck::lacks("cookie", "meshwright=")
                .check(&h)
                .is_ok()
        );
        assert!(HeaderCheck::lacks("x-missing", "a").check(&h).is_ok());
        assert!(HeaderCheck::lacks("cookie", "a=1").check(&h).is_err());
        let err = HeaderCheck::equals("x-ab-product", "v1")
            .check(&h)
            .unwrap_err();
        assert!(
            err.contains("x-ab-product") && err.contains("None"),
            "{err}"
        );
    }

    #[test]
    fn stat_checks_sum_matching_counters() {
        let assigned = |v: &str| wasmcustom(&VariantMetricNames::new("product", v).assigned);
        let before: BTreeMap<String, u64> = [
            (assigned("v1"), 5),
            (
                wasmcustom(&VariantMetricNames::new("product", "v1").sticky),
                5,
            ),
        ]
        .into_iter()
        .collect();
        let mut after = before.clone();
        after.insert(assigned("v1"), 15);
        after.insert(assigned("v2"), 10);
        let c = StatCheck::per_request(&[assigned("*")], 1);
        assert!(c.verify(&before, &after, 20).is_ok());
        assert!(c.verify(&before, &after, 19).is_err());
        let none =
            StatCheck::per_request(&[wasmcustom(&RuleMetricNames::new("*").aborts_injected)], 0);
        assert!(none.verify(&before, &after, 20).is_ok());
        assert!(
            StatCheck::present("http.main.fault.aborts_injected")
                .verify(&before, &after, 1)
                .is_err()
        );
    }

    #[test]
    fn a_star_segment_matches_one_segment() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.b.c"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*.c", "a.b.cd"));
    }
}

//! How often the workers' read-modify-writes of one retry budget collide: the retry-budget
//! variants at 2 workers under closed-loop load, where every request of either worker updates
//! the same shared-data entry (compare-and-swap; a write that lost the race is redone and
//! counted in `cas_conflicts`). The CPU rounds run 1 worker, where no write can collide.

use crate::fixtures::Fixtures;
use crate::footprint::WORKERS;
use crate::runner::{self, Placement};
use crate::variants::Variant;
use anyhow::Result;
use meshwright_retry::config::Side;
use meshwright_retry::stats::SideMetricNames;
use serde::Serialize;

/// The variants measured, and the side their budget is on.
pub const VARIANTS: &[(&str, Side)] = &[
    ("retry-client", Side::Client),
    ("retry-server", Side::Server),
];

/// h2load connections (HTTP/1.1 keep-alive): enough to keep both workers busy at once.
pub const CONNECTIONS: u32 = 32;

#[derive(Debug, Clone, Serialize)]
pub struct Contention {
    pub id: String,
    pub name: String,
    pub requests: u64,
    pub requests_per_s: Option<f64>,
    /// Budget writes that lost a race with the other worker and were redone.
    pub cas_conflicts: Option<u64>,
    /// Requests whose budget could not be read or written.
    pub state_errors: Option<u64>,
    pub error: Option<String>,
}

/// Measures each of `variants` that is in [`VARIANTS`] once, with `requests` requests.
pub async fn measure(
    variants: &[&Variant],
    fx: &Fixtures,
    placement: &Placement,
    requests: u64,
) -> Vec<Contention> {
    let mut out = Vec::new();
    for v in variants {
        let Some((_, side)) = VARIANTS.iter().find(|(id, _)| *id == v.id) else {
            continue;
        };
        let mut c = Contention {
            id: v.id.clone(),
            name: v.name.clone(),
            requests,
            requests_per_s: None,
            cas_conflicts: None,
            state_errors: None,
            error: None,
        };
        match once(v, *side, fx, placement, requests).await {
            Ok((rps, conflicts, errors)) => {
                c.requests_per_s = Some(rps);
                c.cas_conflicts = Some(conflicts);
                c.state_errors = Some(errors);
            }
            Err(e) => c.error = Some(format!("{e:#}")),
        }
        out.push(c);
    }
    out
}

/// Requests per second, CAS conflicts and state errors over one checked run.
async fn once(
    v: &Variant,
    side: Side,
    fx: &Fixtures,
    placement: &Placement,
    requests: u64,
) -> Result<(f64, u64, u64)> {
    let r = runner::start(v, fx, placement, WORKERS, placement.all_cpus.clone(), None).await?;
    r.prove().await?;
    let names = SideMetricNames::new(side);
    let read = || async {
        anyhow::Ok((
            r.envoy.metric(&names.cas_conflicts).await?,
            r.envoy.metric(&names.state_errors).await?,
        ))
    };
    let before = read().await?;
    let sample = r
        .measure_cpu(requests, CONNECTIONS, placement.load_cpu.clone())
        .await?;
    let after = read().await?;
    Ok((
        sample.requests_per_s,
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    ))
}

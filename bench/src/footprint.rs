//! What the modules cost before the first request: Envoy's start-to-ready time and its resident
//! memory, at 2 and at 8 workers (one VM per module per worker, plus the main thread's).

use crate::fixtures::Fixtures;
use crate::runner::{self, Placement};
use crate::stats::Spread;
use crate::variants::Variant;
use anyhow::Result;
use meshwright_testbed::client::Http;
use serde::Serialize;
use std::time::Duration;

/// Worker threads of the footprint Envoys (and of the write-conflict runs).
pub const WORKERS: u32 = 2;

/// The second worker count of the footprint table: what each further VM costs.
pub const MANY_WORKERS: u32 = 8;

#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub id: String,
    pub name: String,
    pub filters: Vec<String>,
    /// Envoy's `--concurrency`.
    #[serde(default)]
    pub workers: u32,
    /// Spawn to admin `/ready` (polled every 25 ms), milliseconds.
    pub ready_ms: Option<Spread>,
    /// VmRSS after ready and 20 requests over both workers, MiB.
    pub rss_mib: Option<Spread>,
    pub error: Option<String>,
}

/// Starts each variant `rounds` times (interleaved) with `workers` workers, measures, stops it.
pub async fn measure(
    variants: &[&Variant],
    fx: &Fixtures,
    placement: &Placement,
    rounds: usize,
    workers: u32,
) -> Vec<Footprint> {
    let mut ready: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut filters: Vec<Vec<String>> = vec![Vec::new(); variants.len()];
    let mut errors: Vec<Option<String>> = vec![None; variants.len()];
    for _ in 0..rounds {
        for (i, v) in variants.iter().enumerate() {
            if errors.get(i).is_some_and(Option::is_some) {
                continue;
            }
            match once(v, fx, placement, workers).await {
                Ok((ms, mib, names)) => {
                    if let (Some(r), Some(m), Some(f)) =
                        (ready.get_mut(i), rss.get_mut(i), filters.get_mut(i))
                    {
                        r.push(ms);
                        m.push(mib);
                        *f = names;
                    }
                }
                Err(e) => {
                    if let Some(slot) = errors.get_mut(i) {
                        *slot = Some(format!("{e:#}"));
                    }
                }
            }
        }
    }
    variants
        .iter()
        .enumerate()
        .map(|(i, v)| Footprint {
            id: v.id.clone(),
            name: v.name.clone(),
            filters: filters.get(i).cloned().unwrap_or_default(),
            workers,
            ready_ms: ready.get(i).and_then(|s| Spread::of(s)),
            rss_mib: rss.get(i).and_then(|s| Spread::of(s)),
            error: errors.get(i).cloned().flatten(),
        })
        .collect()
}

async fn once(
    v: &Variant,
    fx: &Fixtures,
    placement: &Placement,
    workers: u32,
) -> Result<(f64, f64, Vec<String>)> {
    let r = runner::start(v, fx, placement, workers, placement.all_cpus.clone(), None).await?;
    let ms = r.start_to_ready.as_secs_f64() * 1000.0;
    // Traffic over several connections, so (most likely) every worker's VMs have served requests.
    let mut tasks = Vec::new();
    for _ in 0..(2 * workers) {
        let http = Http::new(r.envoy.listener("main"));
        let path = r.request.path.clone();
        let headers = r.request.headers.clone();
        tasks.push(tokio::spawn(async move {
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for _ in 0..5 {
                let resp = http.get(&path, &refs).await?;
                anyhow::ensure!(
                    resp.status == 200,
                    "status {}: {}",
                    resp.status,
                    resp.text()
                );
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mib = r.envoy.rss_kib()? as f64 / 1024.0;
    Ok((ms, mib, r.filters.clone()))
}

//! One variant in a real Envoy: start it, prove it works, measure it.

use crate::checks::{Checker, PROBE_503};
use crate::fixtures::{Fixtures, Request};
use crate::h2load::{self, Load};
use crate::stats::quantile;
use crate::variants::{IDP_CLUSTER, Variant, route_retry_policy};
use anyhow::{Context, Result, bail};
use meshwright_testbed::client::Http;
use meshwright_testbed::envoy::{Envoy, Options};
use meshwright_testbed::render::{Bootstrap, Cluster, Listener, Route};
use meshwright_testbed::upstream::Upstream;
use serde::Serialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where things run.
#[derive(Debug, Clone)]
pub struct Placement {
    /// CPUs of the measured Envoy (`taskset -c`).
    pub envoy_cpu: Option<String>,
    /// CPUs of h2load.
    pub load_cpu: Option<String>,
    /// All CPUs (Envoys started for the footprint measurements, which use 2 workers).
    pub all_cpus: Option<String>,
    pub idp: SocketAddr,
}

/// A variant's Envoy, its checking upstream, and the request it receives.
pub struct Running {
    pub variant: Variant,
    pub envoy: Envoy,
    pub upstream: Upstream,
    pub checker: Checker,
    pub request: Request,
    /// The HTTP filters before the router, in order.
    pub filters: Vec<String>,
    /// From spawning Envoy to its admin `/ready` and listeners answering.
    pub start_to_ready: Duration,
}

/// One closed-loop run: Envoy CPU per request and the throughput it reached.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuSample {
    pub cpu_us_per_request: f64,
    pub requests_per_s: f64,
    /// Envoy's CPU time over the run's wall time (1.0 = its core was saturated).
    pub envoy_busy: f64,
}

/// One fixed-rate run: latency percentiles.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySample {
    pub p50_us: u64,
    pub p99_us: u64,
}

/// The Envoy config of a variant: one listener (the variant's filters, a route to `backend`
/// with the mesh's retry policy), the upstream, the IdP cluster, any static secrets.
pub fn bootstrap(
    filters: Vec<Value>,
    backend: SocketAddr,
    idp: SocketAddr,
    secrets: Vec<Value>,
) -> Value {
    let mut l = Listener::new("main")
        .route(Route::to_cluster("/", "backend").retries(route_retry_policy()));
    for f in filters {
        l = l.filter(f);
    }
    let mut config = Bootstrap::new()
        .listener(l)
        .cluster(Cluster::new("backend", &[backend]))
        .cluster(Cluster::new(IDP_CLUSTER, &[idp]))
        .to_json();
    if !secrets.is_empty()
        && let Some(resources) = config
            .get_mut("static_resources")
            .and_then(Value::as_object_mut)
    {
        resources.insert("secrets".into(), json!(secrets));
    }
    config
}

/// Starts `v` with `workers` Envoy worker threads on `cpus` (under callgrind, counting into
/// that file, when `callgrind` is set).
pub async fn start(
    v: &Variant,
    fx: &Fixtures,
    placement: &Placement,
    workers: u32,
    cpus: Option<String>,
    callgrind: Option<std::path::PathBuf>,
) -> Result<Running> {
    let checker = Checker::default();
    let upstream = Upstream::start("backend", checker.behaviour(v.header_checks.clone())).await?;
    let (filters, names) = v.http_filters(&fx.overlay)?;
    let config = bootstrap(filters, upstream.addr, placement.idp, v.secrets());
    let options = Options {
        concurrency: workers,
        env: fx.host_env.clone(),
        cpu_list: cpus,
        callgrind,
        ..Options::default()
    };
    let t = Instant::now();
    let envoy = Envoy::start(&config, &options).await?;
    let start_to_ready = t.elapsed();
    Ok(Running {
        variant: v.clone(),
        envoy,
        upstream,
        checker,
        request: fx.request(v.profile),
        filters: names,
        start_to_ready,
    })
}

fn merged(base: &[(String, String)], extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)))
        .cloned()
        .collect();
    out.extend(extra.iter().cloned());
    out
}

impl Running {
    pub fn url(&self) -> String {
        format!(
            "http://{}{}",
            self.envoy.listener("main"),
            self.request.path
        )
    }

    fn first_failure(&self) -> String {
        match self.checker.first_failure() {
            Some(f) => format!(" (first failed check: {f})"),
            None => String::new(),
        }
    }

    /// One request as the load generator sends it, then the variant's probes.
    pub async fn prove(&self) -> Result<()> {
        let http = Http::new(self.envoy.listener("main"));
        let pairs = |h: &[(String, String)]| -> Vec<(String, String)> { h.to_vec() };
        let send = |path: String, headers: Vec<(String, String)>| {
            let http = http.clone();
            async move {
                let refs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                http.get(&path, &refs).await
            }
        };
        let r = send(self.request.path.clone(), pairs(&self.request.headers)).await?;
        if r.status != 200 || r.text() != "ok" {
            bail!(
                "{}: the benchmark request got {} {:?}{}",
                self.variant.id,
                r.status,
                r.text(),
                self.first_failure()
            );
        }
        for p in &self.variant.probes {
            let before = self.checker.probe_503_hits.load(Ordering::SeqCst);
            let path = p.path.clone().unwrap_or_else(|| self.request.path.clone());
            let r = send(path, merged(&self.request.headers, &p.headers)).await?;
            let hits = self.checker.probe_503_hits.load(Ordering::SeqCst) - before;
            if r.status != p.status {
                bail!(
                    "{}: probe `{}`: status {} {:?}, expected {}",
                    self.variant.id,
                    p.what,
                    r.status,
                    r.text(),
                    p.status
                );
            }
            if let Some(want) = p.upstream_503_hits
                && hits != want
            {
                bail!(
                    "{}: probe `{}`: the upstream was tried {hits} times on {PROBE_503}, expected {want}",
                    self.variant.id,
                    p.what
                );
            }
        }
        Ok(())
    }

    fn load(&self, requests: u64, connections: u32, rps: Option<u64>, cpu: Option<String>) -> Load {
        Load {
            url: self.url(),
            headers: self.request.headers.clone(),
            requests,
            connections,
            rps_per_connection: rps,
            cpu,
        }
    }

    /// Runs `load`, then checks every condition of the variant over it. With `counting`,
    /// callgrind counts instructions just around the load (not the admin calls of the checks).
    async fn checked_run(
        &self,
        load: Load,
        log: Option<std::path::PathBuf>,
        counting: bool,
    ) -> Result<(h2load::Outcome, Duration)> {
        let n = load.requests;
        let stats_before = self.envoy.stats().await?;
        let hits_before = self.upstream.hits();
        let failures_before = self.checker.failures();
        let cpu_before = self.envoy.cpu_time()?;
        let pid = self.envoy.pid();
        if counting {
            crate::instructions::instrument(pid, true)?;
        }
        let outcome =
            tokio::task::spawn_blocking(move || h2load::run(&load, log.as_deref())).await?;
        if counting {
            crate::instructions::instrument(pid, false)?;
        }
        let outcome = outcome?;
        let cpu = self.envoy.cpu_time()?.saturating_sub(cpu_before);
        let stats_after = self.envoy.stats().await?;
        let id = &self.variant.id;
        outcome
            .all_2xx(n)
            .with_context(|| format!("{id}: {}", self.first_failure()))?;
        let failures = self.checker.failures() - failures_before;
        if failures > 0 {
            bail!(
                "{id}: {failures} requests failed the upstream's checks{}",
                self.first_failure()
            );
        }
        let hits = self.upstream.hits() - hits_before;
        if hits != n {
            bail!("{id}: {n} requests sent, {hits} reached the upstream");
        }
        for c in &self.variant.stat_checks {
            c.verify(&stats_before, &stats_after, n)
                .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        }
        Ok((outcome, cpu))
    }

    /// Not measured: VM code paths, connection pools and caches warm up.
    pub async fn warm_up(
        &self,
        requests: u64,
        connections: u32,
        cpu: Option<String>,
    ) -> Result<()> {
        self.checked_run(self.load(requests, connections, None, cpu), None, false)
            .await
            .map(|_| ())
    }

    /// A checked closed-loop run of `requests` with callgrind counting (Envoy started with
    /// `callgrind`).
    pub async fn counted(&self, requests: u64, connections: u32) -> Result<()> {
        self.checked_run(self.load(requests, connections, None, None), None, true)
            .await
            .map(|_| ())
    }

    /// A closed-loop run of `requests` as fast as Envoy answers them.
    pub async fn measure_cpu(
        &self,
        requests: u64,
        connections: u32,
        cpu: Option<String>,
    ) -> Result<CpuSample> {
        let (o, used) = self
            .checked_run(self.load(requests, connections, None, cpu), None, false)
            .await?;
        Ok(CpuSample {
            cpu_us_per_request: used.as_secs_f64() * 1e6 / requests as f64,
            requests_per_s: o.req_per_s,
            envoy_busy: if o.elapsed_s > 0.0 {
                used.as_secs_f64() / o.elapsed_s
            } else {
                0.0
            },
        })
    }

    /// `requests` at a fixed total rate `rps`, spread over `connections`.
    pub async fn measure_latency(
        &self,
        requests: u64,
        rps: u64,
        connections: u32,
        cpu: Option<String>,
    ) -> Result<LatencySample> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("requests.log");
        let per_connection = (rps / u64::from(connections.max(1))).max(1);
        self.checked_run(
            self.load(requests, connections, Some(per_connection), cpu),
            Some(log.clone()),
            false,
        )
        .await?;
        let (mut latencies, not_2xx) = h2load::read_log(&log)?;
        if not_2xx > 0 || latencies.len() as u64 != requests {
            bail!(
                "{}: latency log has {} requests, {not_2xx} not 2xx",
                self.variant.id,
                latencies.len()
            );
        }
        Ok(LatencySample {
            p50_us: quantile(&mut latencies, 0.50).unwrap_or(0),
            p99_us: quantile(&mut latencies, 0.99).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_headers_replace_the_request_headers_of_the_same_name() {
        let base = vec![
            ("accept".to_owned(), "a".to_owned()),
            ("X-Y".to_owned(), "1".to_owned()),
        ];
        let m = merged(&base, &[("x-y".to_owned(), "2".to_owned())]);
        assert_eq!(
            m,
            vec![
                ("accept".to_owned(), "a".to_owned()),
                ("x-y".to_owned(), "2".to_owned())
            ]
        );
    }

    #[test]
    fn the_bootstrap_has_the_filters_the_route_and_the_secrets() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let c = bootstrap(vec![json!({"name": "x"})], a, a, vec![json!({"name": "s"})]);
        let hcm = &c["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["http_filters"][0]["name"], "x");
        assert_eq!(
            hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]["num_retries"],
            3
        );
        assert_eq!(c["static_resources"]["secrets"][0]["name"], "s");
        assert_eq!(c["static_resources"]["clusters"][1]["name"], IDP_CLUSTER);
    }
}

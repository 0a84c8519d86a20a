//! One-off measurement, not a test (performance is never asserted): the Envoy CPU time the
//! retry-budget filter adds per request. Until bench/ exists, run it by hand:
//!
//! ```text
//! cargo xtask build
//! cargo test -p meshwright-testbed --test integration retry_budget_cost:: -- --ignored --nocapture
//! ```
//!
//! Method (as in shared platform facts): Envoy with 1 worker pinned to CPU 0, HTTP/1.1 load from
//! h2load pinned to CPU 1, Envoy's user + system CPU from /proc/<pid>/stat over a fixed number of
//! requests, variants interleaved round by round, medians reported.

use anyhow::{Result, bail};
use meshwright_testbed::envoy::{Envoy, Options};
use meshwright_testbed::install::ensure_apt;
use meshwright_testbed::render::{Route, workload_labels};
use meshwright_testbed::upstream::Reply;
use meshwright_testbed::wasmplugin::{WasmPlugin, WorkloadMode, shipped};
use meshwright_testbed::{Bed, behaviour};
use serde_json::json;
use std::process::Command;

const ROUNDS: usize = 7;
const REQUESTS: u64 = 50_000;

fn route() -> Route {
    Route::to_cluster("/", "backend").retries(json!({"retry_on": "5xx", "num_retries": 3}))
}

fn options() -> Options {
    Options {
        concurrency: 1,
        cpu_list: Some("0".into()),
        ..Options::default()
    }
}

async fn start(plugin: Option<WasmPlugin>, mode: WorkloadMode) -> Result<Bed> {
    let mut b = Bed::builder()
        .workload(workload_labels("store", "v1"), mode, 8081)
        .options(options())
        .routes(|l| l.route(route()))
        .upstream(behaviour(|_| Reply::status(200)));
    if let Some(p) = plugin {
        b = b.plugin(p);
    }
    b.start().await
}

/// Envoy CPU µs per request for one h2load run.
async fn round(envoy: &Envoy) -> Result<f64> {
    let url = format!("http://{}/api/orders", envoy.listener("main"));
    let before = envoy.cpu_time()?;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("taskset")
            .args(["-c", "1", "h2load", "--h1", "-c", "8", "-t", "1", "-n"])
            .arg(REQUESTS.to_string())
            .args(["-H", "x-envoy-attempt-count: 1"])
            .arg(url)
            .output()
    })
    .await??;
    let after = envoy.cpu_time()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&format!("{REQUESTS} succeeded")) {
        bail!("h2load: {text}");
    }
    Ok((after - before).as_secs_f64() * 1e6 / REQUESTS as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "one-off CPU measurement; run with --ignored --nocapture"]
async fn added_envoy_cpu_per_request() -> Result<()> {
    ensure_apt(&["nghttp2-client"])?;
    let variants = [
        ("bare Envoy", start(None, WorkloadMode::Client).await?),
        (
            "wasm filter doing nothing (fault, no rules)",
            start(
                Some(shipped("fault")?.with_plugin_config(json!({"rules": []}))),
                WorkloadMode::Server,
            )
            .await?,
        ),
        (
            "retry budget, client side (shipped config, max_retries 3)",
            start(
                Some(
                    shipped("retry-budget-client")?
                        .edit_plugin_config(|c| c["max_retries"] = json!(3)),
                ),
                WorkloadMode::Client,
            )
            .await?,
        ),
        (
            "retry budget, client side, destination authority",
            start(
                Some(shipped("retry-budget-client")?.edit_plugin_config(|c| {
                    c["max_retries"] = json!(3);
                    c["destination"] = json!("authority");
                })),
                WorkloadMode::Client,
            )
            .await?,
        ),
        (
            "retry budget, server side (shipped config, first attempts)",
            start(Some(shipped("retry-budget-server")?), WorkloadMode::Server).await?,
        ),
    ];
    // Warm up (VM start, connection pools).
    for (_, bed) in &variants {
        round(&bed.envoy).await?;
    }
    let mut samples = vec![Vec::new(); variants.len()];
    for _ in 0..ROUNDS {
        for (i, (_, bed)) in variants.iter().enumerate() {
            samples[i].push(round(&bed.envoy).await?);
        }
    }
    let base = median(&mut samples[0].clone());
    println!(
        "Envoy CPU µs per request, 1 worker, HTTP/1.1, medians of {ROUNDS} interleaved rounds of {REQUESTS}:"
    );
    println!("| variant | µs CPU/req | added | rounds |");
    println!("|---|---|---|---|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let mut s = samples[i].clone();
        let m = median(&mut s);
        let rounds: Vec<String> = samples[i].iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "| {name} | {m:.1} | {:+.1} | {} |",
            m - base,
            rounds.join(" ")
        );
    }
    // The client side's shared-data traffic under this load (1 worker: no conflicts expected).
    let conflicts = variants[2]
        .1
        .envoy
        .stat("wasmcustom.meshwright.retry_budget.client.cas_conflicts")
        .await?;
    println!("client side CAS conflicts: {conflicts}");
    Ok(())
}

/// How often the two workers' read-modify-writes of one destination's budget collide at full
/// load (every request of both workers updates the same shared-data key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "one-off contention measurement; run with --ignored --nocapture"]
async fn cas_conflicts_at_two_workers_under_full_load() -> Result<()> {
    ensure_apt(&["nghttp2-client"])?;
    for side in ["client", "server"] {
        let (plugin, mode) = match side {
            "client" => (shipped("retry-budget-client")?, WorkloadMode::Client),
            _ => (shipped("retry-budget-server")?, WorkloadMode::Server),
        };
        let bed = Bed::builder()
            .workload(workload_labels("store", "v1"), mode, 8081)
            .options(Options {
                concurrency: 2,
                ..Options::default()
            })
            .routes(|l| l.route(route()))
            .upstream(behaviour(|_| Reply::status(200)))
            .plugin(plugin)
            .start()
            .await?;
        let url = format!("http://{}/api/orders", bed.envoy.listener("main"));
        let n = 100_000u64;
        let t = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("h2load")
                .args(["--h1", "-c", "32", "-t", "2", "-n"])
                .arg(n.to_string())
                .args(["-H", "x-envoy-attempt-count: 1"])
                .arg(url)
                .output()
        })
        .await??;
        let secs = t.elapsed().as_secs_f64();
        if !String::from_utf8_lossy(&out.stdout).contains(&format!("{n} succeeded")) {
            bail!("h2load: {}", String::from_utf8_lossy(&out.stdout));
        }
        let conflicts = bed
            .envoy
            .stat(&format!(
                "wasmcustom.meshwright.retry_budget.{side}.cas_conflicts"
            ))
            .await?;
        let errors = bed
            .envoy
            .stat(&format!(
                "wasmcustom.meshwright.retry_budget.{side}.state_errors"
            ))
            .await?;
        println!(
            "{side} side, 2 workers, {n} requests in {secs:.1} s ({:.0}/s): {conflicts} CAS conflicts \
             ({:.3} % of updates), {errors} state errors",
            n as f64 / secs,
            conflicts as f64 * 100.0 / n as f64
        );
    }
    Ok(())
}

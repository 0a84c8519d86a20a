//! The bundle as shipped: its WasmPlugins against the separate filters' ones, and several filters
//! fused in one module on the same stream, in a real Envoy. (Each filter inside the bundle on its
//! own is proven by that filter's tests, run in both forms: `bundle::` in their names.)

use anyhow::{Context, Result};
use meshwright_ab::stats::VariantMetricNames;
use meshwright_fault::stats::RuleMetricNames;
use meshwright_retry::config::Side;
use meshwright_retry::stats::DestinationMetricNames;
use meshwright_testbed::Bed;
use meshwright_testbed::agent::{Agent, login_via_idp};
use meshwright_testbed::forms::section_of;
use meshwright_testbed::idp::{Idp, IdpOptions, free_port};
use meshwright_testbed::paths;
use meshwright_testbed::render::{Cluster, gateway_labels, mesh_proxies, workload_labels};
use meshwright_testbed::wasmplugin::{Overlay, WasmPlugin, WorkloadMode, chain, load_dir, shipped};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What runs on a proxy, filter by filter, in order: (section, its config, failure policy).
fn filters_run(plugins: &[&WasmPlugin]) -> Vec<(String, Value)> {
    let mut run = Vec::new();
    for p in plugins {
        let name = p.spec.plugin_name.as_deref().unwrap_or_default();
        match section_of(name) {
            Some(section) => run.push((section.to_owned(), p.plugin_config())),
            None => {
                assert_eq!(
                    name, "bundle",
                    "{}: not a meshwright plugin",
                    p.metadata.name
                );
                let config = p.plugin_config();
                // The bundle runs its sections in its own order, whatever the YAML's.
                for section in ["oauth2", "ab", "retry_budget", "fault"] {
                    if let Some(c) = config.get(section) {
                        run.push((section.to_owned(), c.clone()));
                    }
                }
            }
        }
    }
    run
}

#[test]
fn the_bundled_set_runs_on_every_proxy_what_the_separate_set_runs() -> Result<()> {
    let separate = load_dir(&paths::wasmplugins())?;
    let bundled = load_dir(&paths::bundle_wasmplugins())?;
    assert!(!bundled.is_empty());
    for p in &bundled {
        // The gateway's carries OAuth2: the full module. Sidecars pull the one without it.
        let url = if p.plugin_config().get("oauth2").is_some() {
            meshwright_testbed::forms::BUNDLE_URL
        } else {
            meshwright_testbed::forms::BUNDLE_SIDECAR_URL
        };
        assert_eq!(p.spec.url, url, "{}", p.metadata.name);
        assert_eq!(p.spec.plugin_name.as_deref(), Some("bundle"));
    }
    for (what, labels, mode, port) in mesh_proxies() {
        let s = filters_run(&chain(&separate, &labels, mode, port));
        let b = filters_run(&chain(&bundled, &labels, mode, port));
        assert_eq!(
            b, s,
            "{what}: the bundled set must run the same filters, in the same order, with the same \
             configuration, as the separate set"
        );
    }
    Ok(())
}

/// The inbound sidecar set: the shipped bundle-sidecar-inbound, its sections edited.
fn sidecar(edit: impl FnOnce(&mut Value)) -> WasmPlugin {
    shipped("bundle-sidecar-inbound")
        .expect("wasmplugins/bundle/bundle-sidecar.yaml")
        .edit_plugin_config(edit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sidecar_set_budgets_then_faults_each_request_in_one_pass() -> Result<()> {
    let plugin = sidecar(|c| {
        // No retries allowed at all: any retry is shed.
        c["retry_budget"]["retry_ratio"] = json!(0);
        c["retry_budget"]["min_retries_per_second"] = json!(0);
        c["fault"] = json!({"rules": [
            {"name": "abort", "match": {"path": {"prefix": "/abort"}},
             "abort": {"http_status": 503, "percentage": 100}},
            {"name": "slow", "match": {"path": {"prefix": "/slow"}},
             "delay": {"fixed_ms": 300, "percentage": 100}},
        ]});
    });
    let mut bed = Bed::builder()
        .plugin(plugin)
        .workload(workload_labels("product", "v1"), WorkloadMode::Server, 8081)
        .start()
        .await?;
    let http = bed.http();
    // The shipped server side's one budget for the workload's inbound traffic.
    let budget = DestinationMetricNames::new(Side::Server, "inbound");
    let aborts = RuleMetricNames::new("abort").aborts_injected;
    let delays = RuleMetricNames::new("slow").delays_injected;

    // A first attempt: counted by the budget, then aborted by the fault filter.
    let r = http.get("/abort", &[]).await?;
    assert_eq!(r.status, 503, "the fault filter ran after the budget");
    assert_eq!(bed.envoy.metric(&aborts).await?, 1);

    // A retry over budget: shed by the budget, never seen by the fault filter.
    let r = http
        .get("/abort", &[("x-envoy-attempt-count", "2")])
        .await?;
    assert_eq!(r.status, 429, "shed: {}", r.text());
    assert_eq!(bed.envoy.metric(&budget.retries_shed).await?, 1);
    assert_eq!(
        bed.envoy.metric(&aborts).await?,
        1,
        "a shed request is not faulted"
    );

    // A delay: the request is held by the last filter, then reaches the upstream.
    let start = Instant::now();
    let r = http.get("/slow", &[]).await?;
    let took = start.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_millis(300), "delayed only {took:?}");
    assert_eq!(bed.envoy.metric(&delays).await?, 1);

    // Untouched requests pass, and the budget counted every request it received.
    assert_eq!(http.get("/plain", &[]).await?.status, 200);
    assert_eq!(bed.envoy.metric(&budget.requests).await?, 4);
    let log = bed.envoy.log();
    assert!(!log.contains("panic"), "{}", bed.envoy.log_tail(40));
    bed.envoy.stop();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_bundle_configs_are_refused_with_the_field_named() -> Result<()> {
    let cases = [
        (json!({}), "."),
        (json!({"faults": {"rules": []}}), "faults"),
        (json!({"fault": {"enabeld": true}}), "fault.enabeld"),
        (
            json!({"retry_budget": {"side": "server"}, "fault": {"rules": [{"name": "a", "abort": {"http_status": 99, "percentage": 1}}]}}),
            "fault.rules[0].abort.http_status",
        ),
        (
            json!({"retry_budget": {"side": "server", "retry_ratio": 11}, "fault": {"rules": []}}),
            "retry_budget.retry_ratio",
        ),
        // The shipped sidecar plugins pull the module without OAuth2.
        (json!({"oauth2": {}, "fault": {"rules": []}}), "oauth2"),
    ];
    for (config, field) in cases {
        let plugin = sidecar(|c| *c = config.clone());
        let err = match Bed::builder()
            .plugin(plugin)
            .workload(workload_labels("product", "v1"), WorkloadMode::Server, 8081)
            .start()
            .await
        {
            Ok(_) => panic!("Envoy accepted {config}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&format!("invalid plugin config at `{field}`")),
            "{config}: the log does not name `{field}`:\n{err}"
        );
    }
    Ok(())
}

/// The shop's product API (the gateway set's A/B experiment matches it).
const PRODUCT_API: &str = "/services/product/api/products";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_set_assigns_a_variant_to_requests_oauth2_let_through_and_to_those_it_held()
-> Result<()> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut idp = Idp::new(
        free_port()?,
        IdpOptions {
            redirect_uris: vec![format!("{base}/oauth2/callback")],
            post_logout_uris: vec![format!("{base}/")],
            token_ttl_s: 12,
            ..IdpOptions::default()
        },
    );
    idp.start().await?;
    let plugin = shipped("bundle-gateway")?.edit_plugin_config(|c| {
        c["oauth2"] = json!({
            "issuer": idp.issuer,
            "idp_cluster": "idp",
            "client_id": "shop",
            "client_secret_env": "MESHWRIGHT_OAUTH2_CLIENT_SECRET",
            "cookie_keys_env": "MESHWRIGHT_OAUTH2_COOKIE_KEYS",
            "cookie": {"name": "meshwright", "secure": false},
            "forward": {"token": "id_token"},
            "refresh": {"before_expiry_s": 6},
            "discovery": {"wait_ms": 3000, "jwks_min_refetch_s": 0},
        });
        // Everybody in the experiment's v2: the header proves the A/B filter ran.
        c["ab"]["experiments"][0]["variants"] =
            json!([{"name": "v1", "weight": 0}, {"name": "v2", "weight": 10000}]);
    });
    let mut overlay = Overlay::local()?;
    overlay.plugin_config.clear();
    let mut bed = Bed::builder()
        .plugin(plugin)
        .overlay(overlay)
        .workload(gateway_labels(), WorkloadMode::Client, 8080)
        .listener_port(port)
        .extra_cluster(Cluster::new(
            "idp",
            &[format!("127.0.0.1:{}", idp.port).parse()?],
        ))
        .env(
            "MESHWRIGHT_OAUTH2_COOKIE_KEYS",
            "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .start()
        .await?;
    let echoed = |r: &meshwright_testbed::client::Response| -> Result<Value> {
        r.json().context("the upstream's echo")
    };

    // Not logged in: OAuth2 answers, the A/B filter never sees the request.
    let api = Agent::api();
    let r = api.get(&format!("{base}{PRODUCT_API}")).await?;
    assert_eq!(r.status, 401);

    // Logged in: OAuth2 lets the request through in the same pass, A/B reads the sub.
    let agent = Agent::new();
    let login_at = Instant::now();
    let (_, page) = login_via_idp(&agent, &format!("{base}{PRODUCT_API}"), "alice").await?;
    assert_eq!(page.status, 200);
    let seen = echoed(&page)?;
    assert!(seen["headers"]["authorization"].is_string());
    assert_eq!(seen["headers"]["x-ab-product"], "v2", "{seen}");
    let assigned_to_v2 = VariantMetricNames::new("product", "v2").assigned;
    let assigned = bed.envoy.metric(&assigned_to_v2).await?;
    assert!(assigned >= 1, "assigned {assigned}");

    // In the refresh window: OAuth2 holds the request while it refreshes the token, then lets
    // it go on — and the A/B filter runs then, before the request reaches the router.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(login_at.elapsed())).await;
    let cookie = agent
        .cookie_header(&url::Url::parse(&base)?)
        .context("session cookie")?;
    let r = bed
        .http()
        .get(
            PRODUCT_API,
            &[("cookie", &cookie), ("accept", "application/json")],
        )
        .await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        idp.grants("refresh_token"),
        1,
        "the request was held for a refresh"
    );
    let seen = echoed(&r)?;
    assert_eq!(seen["headers"]["x-ab-product"], "v2", "{seen}");
    assert!(bed.envoy.metric(&assigned_to_v2).await? > assigned);
    assert!(
        !bed.envoy.log().contains("panic"),
        "{}",
        bed.envoy.log_tail(40)
    );
    bed.envoy.stop();
    Ok(())
}

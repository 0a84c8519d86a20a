//! The fault filter in a real Envoy (2 workers) with real traffic.

use anyhow::Result;
use bytes::Bytes;
use meshwright_fault::config::HEADER_CONTROL_RULE;
use meshwright_fault::control;
use meshwright_fault::stats::{RuleMetricNames, active_faults, header_control_rejected};
use meshwright_testbed::client::{Http, grpc_unary, grpc_unary_with};
use meshwright_testbed::forms;
use meshwright_testbed::load::{Bounds, K_SD, fan_out};
use meshwright_testbed::render::{Cluster, Route};
use meshwright_testbed::wasmplugin::{WasmPlugin, shipped};
use meshwright_testbed::{Bed, BedBuilder};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KEY_ENV: &str = "MESHWRIGHT_FAULT_SIGNING_KEY";

/// The shipped fault WasmPlugin with another pluginConfig.
fn fault(config: Value) -> WasmPlugin {
    shipped("fault")
        .expect("wasmplugins/fault.yaml")
        .with_plugin_config(config)
}

fn bed(config: Value) -> BedBuilder {
    Bed::builder().plugin(fault(config))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Statuses of `n` GETs to `path`, 16 in flight.
async fn statuses(
    http: &Http,
    path: &'static str,
    n: usize,
    headers: &'static [(&'static str, &'static str)],
) -> Vec<u16> {
    let http = http.clone();
    fan_out(n, 16, move |_| {
        let http = http.clone();
        async move { http.get(path, headers).await.map(|r| r.status).unwrap_or(0) }
    })
    .await
}

meshwright_testbed::in_both_forms!(
    abort_ratio_over_4000_requests_is_within_the_stated_bounds_and_counted,
    a_200ms_delay_is_accurate_to_the_tick_and_spares_other_requests,
    grpc_abort_reaches_a_grpc_client_as_the_configured_status,
    signed_grpc_abort_header_aborts_a_grpc_request_with_that_status,
    cohorts_give_each_user_one_fate_and_the_configured_share,
    cohorts_can_key_on_the_jwt_sub_claim,
    header_control_is_off_by_default,
    header_control_acts_only_on_a_valid_signature,
    max_active_faults_holds_under_concurrent_load,
    expired_rules_do_nothing,
    response_faults_replace_the_upstream_status_at_the_configured_rate,
    clients_that_leave_during_a_delay_leave_envoy_healthy,
    bad_configs_are_refused_with_the_field_named,
    the_shipped_drills_fire_only_for_their_header,
    faults_can_target_one_route_of_several,
);

async fn abort_ratio_over_4000_requests_is_within_the_stated_bounds_and_counted() -> Result<()> {
    let bed = bed(json!({"rules": [{
        "name": "ten-percent",
        "match": {"path": {"prefix": "/api/"}},
        "abort": {"http_status": 503, "body": "injected", "percentage": 10}
    }]}))
    .start()
    .await?;
    let got = statuses(&bed.http(), "/api/products", 4000, &[]).await;
    let aborted = got.iter().filter(|s| **s == 503).count() as u64;
    let ok = got.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(aborted + ok, 4000, "only 200s and 503s expected");
    let bounds = Bounds::binomial(4000, 0.10, K_SD);
    println!("aborted {aborted}/4000; {bounds}");
    assert!(bounds.contains(aborted), "aborted {aborted}: {bounds}");
    assert_eq!(
        bed.upstream.hits(),
        ok,
        "aborted requests never reach the upstream"
    );
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new("ten-percent").aborts_injected)
            .await?,
        aborted
    );
    let prom = bed.envoy.prometheus().await?;
    let line = format!("meshwright_fault_rule_aborts_injected{{rule=\"ten-percent\"}} {aborted}");
    assert!(
        prom.lines().any(|l| l == line),
        "{line} not on /stats/prometheus"
    );
    assert_eq!(bed.envoy.metric(&active_faults()).await?, 0);
    Ok(())
}

async fn a_200ms_delay_is_accurate_to_the_tick_and_spares_other_requests() -> Result<()> {
    let resolution_ms = 10;
    let bed = bed(json!({"delay_resolution_ms": resolution_ms, "rules": [{
        "name": "slow",
        "match": {"path": {"exact": "/slow"}},
        "delay": {"fixed_ms": 200, "percentage": 100}
    }]}))
    .start()
    .await?;
    let http = bed.http();
    http.get("/fast", &[]).await?; // warm the connection pool
    // Pairs of (delayed, undelayed) requests on one connection: the undelayed one measures what
    // the machine adds (a busy 2-core CI machine adds tens of ms to every request), so the
    // delay's own overshoot is `delayed - undelayed - 200`.
    let mut slow = Vec::new();
    let mut fast = Vec::new();
    let mut overshoot = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(http.get("/slow", &[]).await?.status, 200);
        let s = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        assert_eq!(http.get("/fast", &[]).await?.status, 200);
        let f = t.elapsed().as_secs_f64() * 1000.0;
        slow.push(s);
        fast.push(f);
        overshoot.push(s - f - 200.0);
    }
    for v in [&mut slow, &mut fast, &mut overshoot] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "delayed: min {:.1} ms, median {:.1} ms, max {:.1} ms; undelayed: median {:.1} ms, max {:.1} ms; \
         overshoot beyond 200 ms net of the undelayed time: median {:.1} ms",
        slow[0], slow[10], slow[19], fast[10], fast[19], overshoot[10]
    );
    // Never early.
    assert!(
        slow[0] >= 200.0,
        "a delayed request came back early: {slow:?}"
    );
    // Late by about one tick: the median overshoot, net of what the machine adds to any request,
    // stays within the tick period plus scheduling slack.
    let tick = f64::from(resolution_ms);
    assert!(
        overshoot[10] <= tick + 40.0,
        "median overshoot {:.1} ms: {overshoot:?}",
        overshoot[10]
    );
    // An undelayed request never waits for a delay (it would take 200 ms or more).
    assert!(
        fast[19] < 200.0,
        "an undelayed request was slowed: {fast:?}"
    );
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new("slow").delays_injected)
            .await?,
        20
    );
    Ok(())
}

async fn grpc_abort_reaches_a_grpc_client_as_the_configured_status() -> Result<()> {
    let bed = bed(json!({"rules": [{
        "name": "grpc-unavailable",
        "match": {"path": {"prefix": "/meshwright.test.Orders/"}},
        "abort": {"grpc_status": 14, "body": "injected by meshwright", "percentage": 100}
    }]}))
    .cluster(Cluster::http2)
    .start()
    .await?;
    let aborted = grpc_unary(
        bed.addr(),
        "/meshwright.test.Orders/Place",
        Bytes::from_static(b"x"),
    )
    .await?;
    assert_eq!(aborted.code, 14, "UNAVAILABLE expected, got {aborted:?}");
    let passed = grpc_unary(
        bed.addr(),
        "/meshwright.test.Catalog/List",
        Bytes::from_static(b"x"),
    )
    .await?;
    assert_eq!(
        passed.code, 0,
        "other methods reach the upstream: {passed:?}"
    );
    assert_eq!(bed.upstream.hits(), 1);
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new("grpc-unavailable").aborts_injected)
            .await?,
        1
    );
    Ok(())
}

/// Signed header control aborts a gRPC request with the gRPC status it names, although no rule
/// has a gRPC status (the filter must still learn that the request is gRPC).
async fn signed_grpc_abort_header_aborts_a_grpc_request_with_that_status() -> Result<()> {
    let key = "a-test-signing-key-of-at-least-32-bytes";
    let bed = bed(json!({"header_control": {"signing_key_env": KEY_ENV}, "rules": []}))
        .env(KEY_ENV, key)
        .cluster(Cluster::http2)
        .start()
        .await?;
    let sig = control::sign(
        key.as_bytes(),
        unix_now() + 60,
        [None, Some("14"), None, None, None],
    );
    let aborted = grpc_unary_with(
        bed.addr(),
        "/meshwright.test.Orders/Place",
        Bytes::from_static(b"x"),
        &[(control::ABORT_GRPC, "14"), (control::SIGNATURE, &sig)],
    )
    .await?;
    assert_eq!(aborted.code, 14, "UNAVAILABLE expected, got {aborted:?}");
    assert_eq!(bed.upstream.hits(), 0);
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new(HEADER_CONTROL_RULE).aborts_injected)
            .await?,
        1
    );
    Ok(())
}

async fn cohorts_give_each_user_one_fate_and_the_configured_share() -> Result<()> {
    let bed = bed(json!({"rules": [{
        "name": "cohort",
        "cohort": {"key": {"header": "x-user-id"}, "percentage": 20},
        "abort": {"http_status": 503, "percentage": 100}
    }]}))
    .start()
    .await?;
    let http = bed.http();
    // 1,000 users × 5 requests, interleaved so each user's requests spread over connections
    // and workers.
    let fates = fan_out(5000, 16, move |i| {
        let http = http.clone();
        async move {
            let user = format!("user-{}", i % 1000);
            let s = http
                .get("/", &[("x-user-id", &user)])
                .await
                .map(|r| r.status)
                .unwrap_or(0);
            (i % 1000, s)
        }
    })
    .await;
    let mut per_user = vec![Vec::new(); 1000];
    for (u, s) in fates {
        per_user[u].push(s);
    }
    let mixed: Vec<usize> = (0..1000)
        .filter(|u| per_user[*u].iter().any(|s| *s != per_user[*u][0]))
        .collect();
    assert!(mixed.is_empty(), "users with mixed fates: {mixed:?}");
    let faulted = per_user.iter().filter(|v| v[0] == 503).count() as u64;
    let bounds = Bounds::binomial(1000, 0.20, K_SD);
    println!("faulted users {faulted}/1000; {bounds}");
    assert!(bounds.contains(faulted), "{faulted}: {bounds}");
    // Requests without a key are never in a cohort.
    assert!(
        statuses(&bed.http(), "/", 50, &[])
            .await
            .iter()
            .all(|s| *s == 200)
    );
    Ok(())
}

async fn cohorts_can_key_on_the_jwt_sub_claim() -> Result<()> {
    use base64::Engine as _;
    let bed = bed(json!({"rules": [{
        "name": "by-sub",
        "cohort": {"key": {"jwt_claim": "sub"}, "percentage": 50},
        "abort": {"http_status": 503, "percentage": 100}
    }]}))
    .start()
    .await?;
    let http = bed.http();
    let mut faulted = 0;
    for u in 0..200 {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"sub":"user-{u}"}}"#));
        let auth = format!("Bearer eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln");
        let a = http.get("/", &[("authorization", &auth)]).await?.status;
        let b = http.get("/", &[("authorization", &auth)]).await?.status;
        assert_eq!(a, b, "user-{u}");
        faulted += u64::from(a == 503);
    }
    let bounds = Bounds::binomial(200, 0.5, K_SD);
    assert!(bounds.contains(faulted), "{faulted}: {bounds}");
    Ok(())
}

async fn header_control_is_off_by_default() -> Result<()> {
    let bed = bed(json!({"rules": []})).start().await?;
    let r = bed
        .http()
        .get("/", &[(control::ABORT, "503"), (control::DELAY, "500")])
        .await?;
    assert_eq!(r.status, 200);
    Ok(())
}

async fn header_control_acts_only_on_a_valid_signature() -> Result<()> {
    let key = "a-test-signing-key-of-at-least-32-bytes";
    let bed = bed(json!({"header_control": {"signing_key_env": KEY_ENV}, "rules": []}))
        .env(KEY_ENV, key)
        .start()
        .await?;
    let http = bed.http();
    let fields = [Some("418"), None, None, None, None];
    let valid = control::sign(key.as_bytes(), unix_now() + 60, fields);
    let expired = control::sign(key.as_bytes(), unix_now() - 1, fields);
    let wrong_key = control::sign(
        b"another-key-of-at-least-32-bytes-long",
        unix_now() + 60,
        fields,
    );

    let status = |sig: Option<String>, abort: &'static str| {
        let http = http.clone();
        async move {
            let mut h = vec![(control::ABORT, abort)];
            let sig = sig.unwrap_or_default();
            if !sig.is_empty() {
                h.push((control::SIGNATURE, sig.as_str()));
            }
            http.get("/", &h).await.map(|r| r.status).unwrap_or(0)
        }
    };
    // Unsigned: ignored without being read (the signature gates the fault headers), so not
    // counted as rejected either.
    assert_eq!(status(None, "418").await, 200, "unsigned");
    assert_eq!(
        status(Some(wrong_key), "418").await,
        200,
        "signed with another key"
    );
    assert_eq!(status(Some(expired), "418").await, 200, "expired signature");
    assert_eq!(
        status(Some(valid.clone()), "503").await,
        200,
        "value changed after signing"
    );
    assert_eq!(status(Some(valid), "418").await, 418, "valid signature");
    assert_eq!(bed.envoy.metric(&header_control_rejected()).await?, 3);
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new(HEADER_CONTROL_RULE).aborts_injected)
            .await?,
        1
    );

    // A signed delay.
    let fields = [None, None, None, Some("150"), None];
    let sig = control::sign(key.as_bytes(), unix_now() + 60, fields);
    let t = Instant::now();
    let r = http
        .get("/", &[(control::DELAY, "150"), (control::SIGNATURE, &sig)])
        .await?;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    Ok(())
}

async fn max_active_faults_holds_under_concurrent_load() -> Result<()> {
    let bed = bed(json!({"max_active_faults": 5, "rules": [{
        "name": "hold",
        "delay": {"fixed_ms": 400, "percentage": 100}
    }]}))
    .start()
    .await?;
    let http = bed.http();
    let load = tokio::spawn(fan_out(40, 40, move |_| {
        let http = http.clone();
        async move {
            let t = Instant::now();
            let s = http.get("/", &[]).await.map(|r| r.status).unwrap_or(0);
            (s, t.elapsed())
        }
    }));
    let mut peak = 0;
    while !load.is_finished() {
        peak = peak.max(bed.envoy.metric(&active_faults()).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = load.await?;
    assert!(results.iter().all(|(s, _)| *s == 200));
    let delayed = results
        .iter()
        .filter(|(_, t)| *t >= Duration::from_millis(400))
        .count() as u64;
    let injected = bed
        .envoy
        .metric(&RuleMetricNames::new("hold").delays_injected)
        .await?;
    let overflow = bed
        .envoy
        .metric(&RuleMetricNames::new("hold").faults_overflow)
        .await?;
    println!("peak active {peak}, delayed {delayed}, injected {injected}, overflow {overflow}");
    assert!(peak <= 5, "active faults peaked at {peak}");
    assert!(
        delayed <= 5 && injected <= 5,
        "delayed {delayed}, injected {injected}"
    );
    assert!(injected >= 1);
    assert_eq!(injected + overflow, 40);
    assert_eq!(bed.envoy.metric(&active_faults()).await?, 0);
    Ok(())
}

async fn expired_rules_do_nothing() -> Result<()> {
    let bed = bed(json!({"rules": [
        {"name": "expired", "match": {"path": {"prefix": "/old"}}, "expires_at": "2020-01-01T00:00:00Z",
         "abort": {"http_status": 503, "percentage": 100}},
        {"name": "current", "match": {"path": {"prefix": "/new"}}, "expires_at": "2099-01-01T00:00:00Z",
         "abort": {"http_status": 503, "percentage": 100}}
    ]}))
    .start()
    .await?;
    assert!(
        statuses(&bed.http(), "/old", 50, &[])
            .await
            .iter()
            .all(|s| *s == 200)
    );
    assert!(
        statuses(&bed.http(), "/new", 50, &[])
            .await
            .iter()
            .all(|s| *s == 503)
    );
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new("expired").aborts_injected)
            .await?,
        0
    );
    Ok(())
}

async fn response_faults_replace_the_upstream_status_at_the_configured_rate() -> Result<()> {
    let bed = bed(json!({"rules": [{
        "name": "flaky-callee",
        "response": {"http_status": 500, "body": "replaced", "headers": {"x-fault": "response"}, "percentage": 30}
    }]}))
    .start()
    .await?;
    let http = bed.http();
    let got = fan_out(2000, 16, move |_| {
        let http = http.clone();
        async move { http.get("/api/orders", &[]).await.ok() }
    })
    .await;
    let replaced: Vec<_> = got.iter().flatten().filter(|r| r.status == 500).collect();
    assert!(
        replaced
            .iter()
            .all(|r| r.text() == "replaced" && r.header("x-fault") == Some("response"))
    );
    let ok = got.iter().flatten().filter(|r| r.status == 200).count();
    assert_eq!(replaced.len() + ok, 2000);
    let bounds = Bounds::binomial(2000, 0.30, K_SD);
    println!("replaced {}/2000; {bounds}", replaced.len());
    assert!(
        bounds.contains(replaced.len() as u64),
        "{}: {bounds}",
        replaced.len()
    );
    assert_eq!(
        bed.upstream.hits(),
        2000,
        "every request reached the upstream"
    );
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new("flaky-callee").response_faults_injected)
            .await?,
        replaced.len() as u64
    );
    Ok(())
}

async fn clients_that_leave_during_a_delay_leave_envoy_healthy() -> Result<()> {
    let mut bed = bed(json!({"rules": [{
        "name": "long",
        "match": {"path": {"prefix": "/long"}},
        "delay": {"fixed_ms": 1000, "percentage": 100},
        "abort": {"http_status": 503, "percentage": 50}
    }]}))
    .start()
    .await?;
    let addr = bed.addr();
    // 20 clients, each gives up after 100 ms (the connection is dropped mid-delay).
    fan_out(20, 20, move |_| async move {
        let http = Http::new(addr);
        let _ = tokio::time::timeout(Duration::from_millis(100), http.get("/long", &[])).await;
    })
    .await;
    // Let every delay run out (the tick would act on the departed streams now).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(bed.envoy.is_running());
    assert_eq!(bed.envoy.metric(&active_faults()).await?, 0);
    assert!(
        statuses(&bed.http(), "/after", 200, &[])
            .await
            .iter()
            .all(|s| *s == 200)
    );
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new("long").delays_injected)
            .await?,
        20
    );
    assert_eq!(
        bed.envoy
            .metric(&RuleMetricNames::new("long").aborts_injected)
            .await?,
        0,
        "nobody was left to abort"
    );
    let log = bed.envoy.log();
    assert!(
        !log.contains("panic") && !log.contains("Uncaught"),
        "{}",
        bed.envoy.log_tail(40)
    );
    bed.envoy.stop();
    Ok(())
}

async fn bad_configs_are_refused_with_the_field_named() -> Result<()> {
    let cases = [
        (json!({"rules": [], "enabeld": true}), "enabeld"),
        (
            json!({"rules": [{"name": "a", "abort": {"http_status": 503, "percentage": 150}}]}),
            "rules[0].abort.percentage",
        ),
        (
            json!({"rules": [{"name": "a", "match": {"path": {"regex": "(["}}, "abort": {"http_status": 503, "percentage": 1}}]}),
            "rules[0].match.path.regex",
        ),
        (
            json!({"rules": [{"name": "a", "abort": {"http_status": 99, "percentage": 1}}]}),
            "rules[0].abort.http_status",
        ),
        (
            json!({"header_control": {"signing_key_env": "MESHWRIGHT_UNSET_KEY"}}),
            "header_control.signing_key_env",
        ),
    ];
    for (config, field) in cases {
        let err = match bed(config.clone()).start().await {
            Ok(_) => panic!("Envoy accepted {config}"),
            Err(e) => format!("{e:#}"),
        };
        // In the bundle, the field inside the filter's section.
        let field = forms::current().config_field("fault", field);
        assert!(
            err.contains(&format!("invalid plugin config at `{field}`")),
            "{config}: the log does not name `{field}`:\n{err}"
        );
    }
    Ok(())
}

async fn the_shipped_drills_fire_only_for_their_header() -> Result<()> {
    let bed = Bed::builder().plugin(shipped("fault")?).start().await?;
    let http = bed.http();
    let undrilled = statuses(&http, "/api/invoices", 100, &[]).await;
    assert!(undrilled.iter().all(|s| *s == 200), "{undrilled:?}");
    let drilled = statuses(
        &http,
        "/api/invoices",
        400,
        &[("x-meshwright-drill", "invoice-outage")],
    )
    .await;
    let aborted = drilled.iter().filter(|s| **s == 503).count() as u64;
    let bounds = Bounds::binomial(400, 0.5, K_SD);
    assert!(bounds.contains(aborted), "{aborted}: {bounds}");
    Ok(())
}

async fn faults_can_target_one_route_of_several() -> Result<()> {
    let bed = bed(json!({"rules": [{
        "name": "writes",
        "match": {"methods": ["POST"], "headers": [{"name": "x-tenant", "prefix": "beta-"}]},
        "abort": {"http_status": 429, "percentage": 100}
    }]}))
    .routes(|l| l.route(Route::to_cluster("/", "backend")))
    .start()
    .await?;
    let http = bed.http();
    let post = |tenant: &'static str| {
        let http = http.clone();
        async move {
            http.send(
                hyper::Method::POST,
                "/api/orders",
                &[("x-tenant", tenant)],
                Bytes::from_static(b"{}"),
            )
            .await
            .map(|r| r.status)
            .unwrap_or(0)
        }
    };
    assert_eq!(post("beta-eu").await, 429);
    assert_eq!(post("prod-eu").await, 200);
    assert_eq!(
        http.get("/api/orders", &[("x-tenant", "beta-eu")])
            .await?
            .status,
        200
    );
    Ok(())
}

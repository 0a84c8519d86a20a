//! The shop on the local mesh (`cargo xtask up`'s mesh): every service, a sidecar Envoy per
//! instance and the ingress gateway, all configured from k8s/ and wasmplugins/ — driven by a real
//! browser and by HTTP clients, through the real gateway and sidecars.

use anyhow::{Context, Result, bail, ensure};
use meshwright_testbed::agent::{Agent, login_via_idp};
use meshwright_testbed::client::{Http, Response};
use meshwright_testbed::mesh::run::{Options, Running};
use meshwright_testbed::paths;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn start(
    edit: Option<meshwright_testbed::mesh::run::Edit>,
) -> Result<(tempfile::TempDir, Running)> {
    let dir = tempfile::Builder::new()
        .prefix("meshwright-mesh-")
        .tempdir()?;
    let mut opts = Options::new(dir.path());
    opts.edit = edit;
    let mesh = Running::start(opts).await?;
    Ok((dir, mesh))
}

fn base(mesh: &Running) -> String {
    format!("http://127.0.0.1:{}", mesh.gateway_addr().port())
}

/// The browser journey (tests/idp/shop-journey.mjs) as `user`.
async fn browser_journey(url: &str, user: &str, extra: &[&str]) -> Result<Value> {
    let dir = paths::root().join("tests/idp");
    let out = tokio::process::Command::new("node")
        .arg("shop-journey.mjs")
        .arg(url)
        .arg(user)
        .args(extra)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output()
        .await
        .context("node shop-journey.mjs")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).with_context(|| {
        format!(
            "the journey printed no JSON:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    ensure!(out.status.success(), "the browser journey failed: {v:#}");
    Ok(v)
}

/// An HTTP client signed in as `user` through the IdP's form.
async fn signed_in(mesh: &Running, user: &str) -> Result<Agent> {
    let agent = Agent::new();
    let (url, page) = login_via_idp(&agent, &format!("{}/", base(mesh)), user).await?;
    ensure!(
        page.status == 200 && url.starts_with(&base(mesh)),
        "{user} did not get back to the shop: {url} {}",
        page.status
    );
    Ok(agent)
}

fn variant_of(page: &Response) -> Option<String> {
    let re = regex_lite::Regex::new(r#"data-variant="([a-z0-9]+)""#).ok()?;
    re.captures(&page.text()).map(|c| c[1].to_owned())
}

/// A call made from inside the mesh: through `instance`'s outbound listener, so it leaves with
/// that workload's identity, to `host` (a Service's name and port).
async fn from_workload(
    mesh: &Running,
    instance: &str,
    method: hyper::Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response> {
    let http = Http::new(mesh.outbound(instance)?);
    let mut all = vec![("host", host), ("content-type", "application/json")];
    all.extend_from_slice(headers);
    http.send(method, path, &all, bytes::Bytes::from(body.to_owned()))
        .await
}

const INVOICE: &str = "invoice.ecommerce.svc.cluster.local:8082";
const PRODUCT: &str = "product.ecommerce.svc.cluster.local:8081";

async fn every_dashboard_query_returns_series(
    prometheus: &meshwright_testbed::prometheus::Prometheus,
    proxies: usize,
) -> Result<()> {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        paths::root().join("k8s/addons/dashboards/meshwright.json"),
    )?)?;
    let queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let up = eventually(Duration::from_secs(20), "every proxy scraped", || async {
        let n = prometheus.targets_up().await?;
        Ok((n == proxies).then_some(n))
    })
    .await?;
    let mut dead = Vec::new();
    for (title, expr) in &queries {
        let found = eventually(Duration::from_secs(15), expr, || async {
            let r = prometheus.query(expr).await?;
            Ok((!r.is_empty()).then_some(r.len()))
        })
        .await;
        if found.is_err() {
            dead.push(format!("{title}: {expr}"));
        }
    }
    eprintln!(
        "dashboard: {} queries over {up} scraped proxies, {} without series",
        queries.len(),
        dead.len()
    );
    assert!(dead.is_empty(), "dead panels:\n{}", dead.join("\n"));
    Ok(())
}

/// The first of `user-0`, `user-1`, … whose A/B assignment at the gateway satisfies `want`.
fn first_user(
    mesh: &Running,
    want: impl Fn(Option<&str>) -> bool,
) -> Result<(String, Option<String>)> {
    for i in 0..1000 {
        let user = format!("user-{i}");
        let v = mesh.mesh.ab_assignment("product", &user)?;
        if want(v.as_deref()) {
            return Ok((user, v));
        }
    }
    bail!("no such user among 1000")
}

/// Polls `f` until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn place_order(agent: &Agent, base: &str) -> Result<Value> {
    let r = agent
        .send(
            hyper::Method::POST,
            &format!("{base}/api/product-orders"),
            &[("accept", "application/json")],
            Some((
                json!({"items": [{"productId": 1, "quantity": 2}]}).to_string(),
                "application/json",
            )),
        )
        .await?;
    ensure!(r.status == 201, "order refused: {} {}", r.status, r.text());
    r.json()
}

async fn order(agent: &Agent, base: &str, id: &Value) -> Result<Value> {
    let r = agent
        .send(
            hyper::Method::GET,
            &format!("{base}/api/product-orders/{id}"),
            &[("accept", "application/json")],
            None,
        )
        .await?;
    ensure!(r.status == 200, "order {id}: {} {}", r.status, r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_on_the_local_mesh() -> Result<()> {
    let (_dir, mut mesh) = start(None).await?;
    let base = base(&mesh);

    // A shopper in a real browser: sign in at the IdP through the gateway's OAuth2 filter, the
    // catalogue of the assigned variant, cart, order, invoice and e-mail, sign out.
    let journey = browser_journey(&mesh.url(), "alice", &[]).await?;
    eprintln!("browser journey: {journey}");
    let variant = journey["variant"].as_str().unwrap_or_default();
    assert!(variant == "v1" || variant == "v2", "{journey}");
    assert!(
        journey["order"]
            .as_str()
            .is_some_and(|o| o.starts_with("ORD-")),
        "{journey}"
    );
    assert!(
        journey["invoice"]
            .as_str()
            .is_some_and(|i| i.starts_with("INV-")),
        "{journey}"
    );
    assert!(journey["notification"].is_string(), "{journey}");
    assert_eq!(journey["signedOut"], true, "{journey}");

    unauthenticated_api_calls_get_401(&base).await?;
    the_gateway_serves_istiod_the_jwks_on_its_in_cluster_name(&mesh).await?;
    calls_the_policies_forbid_get_403(&mesh).await?;
    claim_headers_come_only_from_a_verified_token(&mesh).await?;
    failed_and_slow_requests_are_logged_and_fast_successes_are_not(&mesh).await?;
    ab_assignment_is_sticky_and_a_signed_override_moves_a_user_to_v2(&mesh).await?;
    users_outside_the_experiment_get_the_weighted_canary(&mesh).await?;
    bad_input_gets_a_problem_not_a_crash(&mesh).await?;
    a_stopped_product_instance_is_ejected_and_the_shop_keeps_working(&mut mesh).await?;
    no_committed_order_is_lost_when_a_service_restarts(&mut mesh).await?;
    the_load_generators_shoppers_get_no_server_errors(&mesh).await?;
    Ok(())
}

async fn the_load_generators_shoppers_get_no_server_errors(mesh: &Running) -> Result<()> {
    let opts = meshwright_testbed::shoppers::Options {
        url: base(mesh),
        duration: Duration::from_secs(6),
        shoppers: 3,
        bad_actors: 1,
        think: Duration::from_millis(100),
        seed: 7,
    };
    let report = meshwright_testbed::shoppers::run(&opts, |_, _| {}).await?;
    eprintln!("cargo xtask load, 6 s:\n{}", report.table());
    assert_eq!(report.signed_in, 3);
    assert_eq!(report.server_errors(), 0, "{}", report.table());
    assert!(report.requests() > 30, "{}", report.table());
    // ~8 % of a shopper's ~40 clicks check out (most with a cart filled before): zero orders
    // in all would be a broken checkout, not bad luck.
    assert!(report.orders >= 1, "{}", report.table());
    let bad = |route: &str| {
        report
            .routes
            .get(route)
            .map(|r| r.statuses.clone())
            .unwrap_or_default()
    };
    assert!(bad("bad: API without a session").keys().all(|s| *s == 401));
    assert!(
        bad("bad: malformed order")
            .keys()
            .all(|s| (400..500).contains(s))
    );
    assert!(bad("bad: actuator path").keys().all(|s| *s == 404));
    Ok(())
}

async fn unauthenticated_api_calls_get_401(base: &str) -> Result<()> {
    let api = Agent::api();
    for path in [
        "/api/account",
        "/api/product-orders",
        "/services/invoice/api/invoices",
    ] {
        let r = api.get(&format!("{base}{path}")).await?;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(r.text().contains("login_url"), "{path}: {}", r.text());
    }
    // A browser is sent to sign in instead.
    let r = Agent::new().get(&format!("{base}/")).await?;
    assert_eq!(r.status, 302);
    Ok(())
}

async fn the_gateway_serves_istiod_the_jwks_on_its_in_cluster_name(mesh: &Running) -> Result<()> {
    // What istiod fetches for the RequestAuthentications' jwksUri, and inlines into every
    // proxy's jwt_authn: the same document the local mesh inlined.
    let http = Http::new(mesh.gateway_addr());
    let host = [(
        "host",
        "istio-ingressgateway.istio-system.svc.cluster.local",
    )];
    let r = http.get("/.well-known/meshwright/jwks.json", &host).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let served = r.json()?;
    let config: Value = serde_json::from_str(&std::fs::read_to_string(
        mesh.dir.join("store-0-sidecar/envoy.json"),
    )?)?;
    let inlined = config.to_string();
    for key in served["keys"].as_array().context("keys")? {
        let x = key["x"].as_str().context("x")?;
        assert!(
            inlined.contains(x),
            "store's jwt_authn trusts the served key {key}"
        );
    }
    // Nothing else is served on that host: without a session the OAuth2 filter answers 401,
    // with one the route answers 404.
    assert_eq!(http.get("/", &host).await?.status, 401);
    Ok(())
}

async fn calls_the_policies_forbid_get_403(mesh: &Running) -> Result<()> {
    use hyper::Method;
    // product may not call invoice at all (AuthorizationPolicy invoice): RBAC at invoice's
    // sidecar, on product's SPIFFE identity from mTLS.
    let r = from_workload(
        mesh,
        "product-v1-0",
        Method::POST,
        INVOICE,
        "/api/invoices",
        &[],
        "{}",
    )
    .await?;
    assert_eq!(r.status, 403, "product → invoice: {}", r.text());
    assert!(r.text().contains("RBAC"), "{}", r.text());
    // store may (its outbox): the same call passes RBAC and meets the app, which refuses the
    // empty body itself.
    let r = from_workload(
        mesh,
        "store-0",
        Method::POST,
        INVOICE,
        "/api/invoices",
        &[],
        "{}",
    )
    .await?;
    assert_eq!(r.status, 400, "store → invoice: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json")),
        "{:?}",
        r.headers
    );
    // Reads need a user's token.
    let r = from_workload(
        mesh,
        "store-0",
        Method::GET,
        INVOICE,
        "/api/invoices",
        &[],
        "",
    )
    .await?;
    assert_eq!(
        r.status,
        403,
        "store → invoice without a token: {}",
        r.text()
    );
    // A token not signed by the gateway is refused by jwt_authn (401).
    let r = from_workload(
        mesh,
        "store-0",
        Method::GET,
        PRODUCT,
        "/api/products",
        &[(
            "authorization",
            "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2ln",
        )],
        "",
    )
    .await?;
    assert_eq!(r.status, 401, "forged token: {}", r.text());
    Ok(())
}

async fn claim_headers_come_only_from_a_verified_token(mesh: &Running) -> Result<()> {
    use hyper::Method;
    let invoices_as = |token: String, claimed: &'static str| async move {
        let bearer = format!("Bearer {token}");
        let r = from_workload(
            mesh,
            "store-0",
            Method::GET,
            INVOICE,
            "/api/invoices",
            &[("authorization", &bearer), ("x-jwt-sub", claimed)],
            "",
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        Ok::<Vec<Value>, anyhow::Error>(r.json()?.as_array().cloned().unwrap_or_default())
    };
    // alice ordered in the journey: her own token sees her invoice.
    let alice = mesh
        .mesh
        .mint_token("alice", &json!({"email": "alice@example.com"}))?;
    let hers = invoices_as(alice, "alice").await?;
    assert!(!hers.is_empty(), "alice's invoice from the journey");
    // carol's token with a header claiming to be alice sees none of it: jwt_authn sets the
    // x-jwt-* headers from the verified token, over the caller's copy.
    let carol = mesh
        .mesh
        .mint_token("carol", &json!({"email": "carol@example.com"}))?;
    let seen = invoices_as(carol, "alice").await?;
    assert!(
        seen.iter().all(|i| i["customer"] == "carol"),
        "a claimed x-jwt-sub was believed: {seen:?}"
    );
    assert!(seen.is_empty());
    Ok(())
}

async fn failed_and_slow_requests_are_logged_and_fast_successes_are_not(
    mesh: &Running,
) -> Result<()> {
    use hyper::Method;
    // k8s/monitoring/telemetry.yaml: access logs for >= 400, no response, or over 2 s.
    let token = mesh.mesh.mint_token("alice", &json!({}))?;
    let bearer = format!("Bearer {token}");
    let call = |path: &'static str, extra: Vec<(&'static str, String)>| {
        let bearer = bearer.clone();
        async move {
            let mut headers: Vec<(&str, &str)> = vec![("authorization", bearer.as_str())];
            headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
            from_workload(mesh, "store-0", Method::GET, PRODUCT, path, &headers, "").await
        }
    };
    assert_eq!(call("/api/products?probe=fast", vec![]).await?.status, 200);
    assert_eq!(
        call("/api/products/99999?probe=missing", vec![])
            .await?
            .status,
        404
    );
    // 2.5 s, by a signed fault header (the fault filter's header control) at product's sidecar.
    let key = mesh
        .mesh
        .overlay
        .host_env
        .get("MESHWRIGHT_FAULT_SIGNING_KEY")
        .cloned()
        .unwrap_or_default();
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 60;
    let signature = meshwright_fault::control::sign(
        key.as_bytes(),
        expiry,
        [None, None, None, Some("2500"), None],
    );
    let started = Instant::now();
    let slow = call(
        "/api/products?probe=slow",
        vec![
            (meshwright_fault::control::DELAY, "2500".to_owned()),
            (meshwright_fault::control::SIGNATURE, signature),
        ],
    )
    .await?;
    assert_eq!(slow.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(2500), "delayed");
    let sidecar = mesh.sidecar("store-0")?;
    let log = eventually(Duration::from_secs(10), "store's access log", || async {
        let out = sidecar.stdout();
        Ok((out.contains("probe=slow") && out.contains("probe=missing")).then_some(out))
    })
    .await?;
    assert!(!log.contains("probe=fast"), "a fast 200 was logged:\n{log}");
    Ok(())
}

async fn ab_assignment_is_sticky_and_a_signed_override_moves_a_user_to_v2(
    mesh: &Running,
) -> Result<()> {
    let base = base(mesh);
    // A user in the experiment (outside its coverage the canary route decides per request).
    let (user, assigned) = first_user(mesh, |v| v.is_some())?;
    let agent = signed_in(mesh, &user).await?;
    let first = agent.get(&format!("{base}/")).await?;
    let natural = variant_of(&first).context("no data-variant on the catalogue")?;
    assert_eq!(
        Some(natural.as_str()),
        assigned.as_deref(),
        "{user}: the variant the A/B filter's own bucketing gives"
    );
    for _ in 0..5 {
        let again = agent.get(&format!("{base}/")).await?;
        assert_eq!(
            variant_of(&again).as_deref(),
            Some(natural.as_str()),
            "sticky"
        );
    }
    let forced = mesh.mesh.ab_override("product=v2", 600)?;
    let page = agent
        .send(
            hyper::Method::GET,
            &format!("{base}/"),
            &[("x-ab-override", &forced)],
            None,
        )
        .await?;
    assert_eq!(page.status, 200);
    assert_eq!(variant_of(&page).as_deref(), Some("v2"), "override to v2");
    assert!(
        page.text().contains("data-rating") || page.text().contains("★"),
        "v2 shows ratings"
    );
    // A client cannot pick its variant by sending the routing header itself.
    if natural == "v1" {
        let spoofed = agent
            .send(
                hyper::Method::GET,
                &format!("{base}/"),
                &[("x-ab-product", "v2")],
                None,
            )
            .await?;
        assert_eq!(
            variant_of(&spoofed).as_deref(),
            Some("v1"),
            "client header ignored"
        );
    }
    Ok(())
}

async fn users_outside_the_experiment_get_the_weighted_canary(mesh: &Running) -> Result<()> {
    use hyper::Method;
    // store's calls for users outside the experiment's coverage carry no x-ab-product (ab-mesh
    // recomputes the assignment from the token and finds none): the VirtualService's weighted
    // canary sends 5 % of those requests to v2. Users in the experiment always get theirs.
    let (mut outside, mut in_v2) = (Vec::new(), Vec::new());
    for i in 0..5000 {
        let user = format!("canary-{i}");
        match mesh.mesh.ab_assignment("product", &user)?.as_deref() {
            None if outside.len() < 400 => outside.push(user),
            Some("v2") if in_v2.len() < 20 => in_v2.push(user),
            _ => {}
        }
        if outside.len() == 400 && in_v2.len() == 20 {
            break;
        }
    }
    let variant_for = |user: String| async move {
        let token = mesh.mesh.mint_token(&user, &json!({}))?;
        let bearer = format!("Bearer {token}");
        let r = from_workload(
            mesh,
            "store-0",
            Method::GET,
            PRODUCT,
            "/api/products/1",
            &[("authorization", &bearer)],
            "",
        )
        .await?;
        ensure!(r.status == 200, "{}", r.text());
        Ok::<String, anyhow::Error>(r.header("x-shop-variant").unwrap_or_default().to_owned())
    };
    let mut v2 = 0;
    for user in outside {
        if variant_for(user).await? == "v2" {
            v2 += 1;
        }
    }
    let bounds =
        meshwright_testbed::load::Bounds::binomial(400, 0.05, meshwright_testbed::load::K_SD);
    eprintln!("canary: {v2} of 400 requests of users outside the experiment went to v2 ({bounds})");
    assert!(bounds.contains(v2), "{v2} of 400 to v2: {bounds}");
    for user in in_v2 {
        assert_eq!(
            variant_for(user).await?,
            "v2",
            "in the experiment: always v2"
        );
    }
    Ok(())
}

async fn bad_input_gets_a_problem_not_a_crash(mesh: &Running) -> Result<()> {
    let base = base(mesh);
    let agent = signed_in(mesh, "erin").await?;
    for body in [
        "not json",
        r#"{"items": []}"#,
        r#"{"items": [{"productId": 1, "quantity": 100000}]}"#,
        r#"{"items": [{"productId": 99999, "quantity": 1}]}"#,
        r#"{"items": [{"productId": 1, "quantity": 1}], "total": 0}"#,
    ] {
        let r = agent
            .send(
                hyper::Method::POST,
                &format!("{base}/api/product-orders"),
                &[("accept", "application/json")],
                Some((body.to_owned(), "application/json")),
            )
            .await?;
        assert!(
            (400..500).contains(&r.status),
            "{body}: {} {}",
            r.status,
            r.text()
        );
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.contains("problem+json")),
            "{body}: {:?}",
            r.headers
        );
    }
    let r = agent
        .get(&format!(
            "{base}/services/product/api/products/not-a-number"
        ))
        .await?;
    assert_eq!(r.status, 400, "{}", r.text());
    // Actuator endpoints are not public (the gateway answers 404).
    let r = agent
        .get(&format!("{base}/services/product/management/health"))
        .await?;
    assert_eq!(r.status, 404);
    // The mesh is still serving.
    assert_eq!(agent.get(&format!("{base}/")).await?.status, 200);
    Ok(())
}

async fn a_stopped_product_instance_is_ejected_and_the_shop_keeps_working(
    mesh: &mut Running,
) -> Result<()> {
    let base = base(mesh);
    // A user the catalogue serves from v1.
    let (user, _) = first_user(mesh, |v| v == Some("v1"))?;
    let agent = signed_in(mesh, &user).await?;
    mesh.kill_app("product-v1-0")?;
    for i in 0..20 {
        let page = agent.get(&format!("{base}/")).await?;
        assert_eq!(page.status, 200, "request {i}");
        assert_eq!(
            variant_of(&page).as_deref(),
            Some("v1"),
            "request {i}: catalogue shown"
        );
        assert!(
            !page.text().contains("catalogue is unavailable"),
            "request {i}"
        );
    }
    let cluster = "cluster.outbound|8081|v1|product.ecommerce.svc.cluster.local";
    let stats = mesh.sidecar("store-0")?.stats().await?;
    let ejected = stats
        .get(&format!(
            "{cluster}.outlier_detection.ejections_enforced_total"
        ))
        .copied()
        .unwrap_or(0);
    eprintln!("product-v1-0 stopped: 20 pages served, {ejected} ejection(s) by store's sidecar");
    assert!(
        ejected >= 1,
        "store's sidecar ejected the stopped instance: {ejected}"
    );
    mesh.restart_app("product-v1-0").await?;
    Ok(())
}

async fn no_committed_order_is_lost_when_a_service_restarts(mesh: &mut Running) -> Result<()> {
    let base = base(mesh);
    let agent = signed_in(mesh, "bob").await?;
    // invoice is down: the order is committed anyway, its invoice left to store's outbox.
    mesh.kill_app("invoice-0")?;
    let placed = place_order(&agent, &base).await?;
    let id = placed["id"].clone();
    assert_eq!(placed["invoiceStatus"], "PENDING", "{placed}");
    // store crashes right after committing (SIGKILL) and comes back: the order is there.
    mesh.kill_app("store-0")?;
    mesh.restart_app("store-0").await?;
    let o = order(&agent, &base, &id).await?;
    assert_eq!(o["code"], placed["code"]);
    // invoice comes back: the outbox delivers, exactly one invoice for the order.
    mesh.restart_app("invoice-0").await?;
    let invoiced = eventually(Duration::from_secs(60), "the order's invoice", || async {
        let o = order(&agent, &base, &id).await?;
        Ok((o["invoiceStatus"] == "CREATED").then_some(o))
    })
    .await?;
    let r = agent
        .get(&format!(
            "{base}/services/invoice/api/invoices?orderId={id}"
        ))
        .await?;
    let invoices = r.json()?;
    assert_eq!(invoices.as_array().map(Vec::len), Some(1), "{invoices}");
    assert_eq!(invoices[0]["id"], invoiced["invoiceId"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_drill_on_invoice_degrades_the_order_page_and_the_retry_budget_caps_retries()
-> Result<()> {
    // The invoice-outage drill of wasmplugins/fault.yaml, switched on for all traffic (as an
    // operator would patch the WasmPlugin) and at 100 % so every attempt fails.
    let edit: meshwright_testbed::mesh::run::Edit = Box::new(|mesh| {
        mesh.drill("invoice-outage")?;
        for p in &mut mesh.plugins {
            if p.metadata.name == "fault" {
                let mut cfg = p.plugin_config();
                for r in cfg["rules"].as_array_mut().into_iter().flatten() {
                    if r["name"] == "invoice-outage-drill" {
                        r["abort"]["percentage"] = json!(100);
                    }
                }
                p.spec.plugin_config = Some(cfg);
            }
        }
        Ok(())
    });
    let (_dir, mesh) = start(Some(edit)).await?;
    let base = base(&mesh);
    // A real Prometheus scraping every proxy of the mesh, as the addons' would in a cluster.
    let mut admins = vec![mesh.gateway.admin];
    admins.extend(mesh.sidecars.values().map(|e| e.admin));
    let prometheus = meshwright_testbed::prometheus::Prometheus::start(&admins).await?;
    let journey = browser_journey(
        &mesh.url(),
        "alice",
        &["--degraded", "--timeout-ms", "8000"],
    )
    .await?;
    assert_eq!(journey["degraded"], true, "{journey}");
    assert!(
        journey["order"]
            .as_str()
            .is_some_and(|o| o.starts_with("ORD-")),
        "the order is committed: {journey}"
    );

    // Page views that each read the failing invoice service: store's sidecar would retry each
    // twice; the budget allows 20 % of requests plus 10 retries a second. Two at a time: at
    // higher concurrency Envoy's own retry budget (DestinationRule retryBudget: concurrent
    // retries ≤ 20 % of active requests, at least 3) already stops most retries (measured: 271
    // of 304 requests at 16 in flight), and this one's tokens, refunded, never run out.
    let agent = std::sync::Arc::new(signed_in(&mesh, "bob").await?);
    let placed = place_order(&agent, &base).await?;
    let page = format!("{base}/orders/{}", placed["id"]);
    let started = Instant::now();
    let n = 300;
    let statuses = meshwright_testbed::load::fan_out(n, 2, {
        let agent = std::sync::Arc::clone(&agent);
        move |_| {
            let (agent, page) = (std::sync::Arc::clone(&agent), page.clone());
            async move {
                agent
                    .get(&page)
                    .await
                    .map(|r| (r.status, r.text().contains("data-degraded=\"invoice\"")))
            }
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    for s in &statuses {
        let (status, degraded) = s.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(*status, 200, "the order page is never an error page");
        assert!(degraded, "every order page shows the degraded state");
    }
    let names = meshwright_retry::stats::DestinationMetricNames::new(
        meshwright_retry::config::Side::Client,
        &meshwright_retry::destination::stat_name(
            "outbound|8082||invoice.ecommerce.svc.cluster.local",
        ),
    );
    let sidecar = mesh.sidecar("store-0")?;
    let stat = |name: String| async move { sidecar.metric(&name).await };
    let requests = stat(names.requests.clone()).await?;
    let granted = stat(names.retries_granted.clone()).await?;
    let denied = stat(names.retries_denied.clone()).await?;
    let retries = stat(names.retries.clone()).await?;
    eprintln!(
        "{n} order pages in {elapsed:.1} s under the drill: store → invoice requests {requests}, \
         retries granted {granted}, denied {denied}, made {retries}"
    );
    // The budget: 20 % of the requests of the last 10 s plus 10 per second (+ the start-up's
    // few), against 2 retries asked for per request.
    let cap = 0.2 * requests as f64 + 10.0 * (elapsed + 10.0) + 10.0;
    assert!(
        requests >= n as u64,
        "store → invoice requests counted: {requests}"
    );
    assert!(
        (retries as f64) <= cap,
        "{retries} retries > cap {cap:.0} ({requests} requests in {elapsed:.1} s)"
    );
    assert!(
        denied > 0,
        "retries over budget were denied: granted {granted}, denied {denied}"
    );

    // Every query of every panel of the Grafana dashboard (k8s/addons/dashboards/) returns
    // series from this mesh's proxies: no dead panel.
    every_dashboard_query_returns_series(&prometheus, mesh.plan.instances.len() + 1).await?;
    Ok(())
}

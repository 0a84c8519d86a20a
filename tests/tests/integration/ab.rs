//! The A/B filter in a real Envoy (2 workers) with real traffic: the shipped gateway plugin in
//! front of two real upstreams standing for product v1 and v2, routed by the rules of
//! k8s/mesh/gateway-routes.yaml (and mesh-routes.yaml for the sidecar plugin).

use anyhow::{Context, Result};
use base64::Engine as _;
use meshwright_ab::AbConfig;
use meshwright_ab::bucket::choose;
use meshwright_ab::overrides::sign;
use meshwright_ab::stats::{
    ExperimentMetricNames, VariantMetricNames, anonymous_ids_issued, overrides_rejected,
    sticky_cookies_rejected,
};
use meshwright_testbed::client::{Http, Response};
use meshwright_testbed::forms;
use meshwright_testbed::load::{Bounds, fan_out};
use meshwright_testbed::render::{Listener, gateway_labels, workload_labels};
use meshwright_testbed::wasmplugin::{Overlay, WasmPlugin, WorkloadMode, shipped};
use meshwright_testbed::{Bed, k8s};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const PRODUCT_API: &str = "/services/product/api/products";
const KEY_ENV: &str = "MESHWRIGHT_AB_SIGNING_KEY";

fn bearer(sub: &str) -> String {
    let p =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}"}}"#));
    format!("Bearer eyJhbGciOiJSUzI1NiJ9.{p}.c2ln")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The shipped gateway plugin with its `pluginConfig` edited.
fn gateway_plugin(edit: impl FnOnce(&mut Value)) -> WasmPlugin {
    shipped("ab")
        .expect("wasmplugins/ab.yaml")
        .edit_plugin_config(edit)
}

/// Sets the product experiment's weights (v1, v2), every user in the experiment (the shipped
/// coverage leaves 20 % to the mesh's canary route; the tests here are about the variants).
fn weights(v1: u32, v2: u32) -> impl FnOnce(&mut Value) {
    move |c: &mut Value| {
        c["experiments"][0]["variants"] =
            json!([{"name": "v1", "weight": v1}, {"name": "v2", "weight": v2}]);
        c["experiments"][0]["coverage"] = json!(10_000);
    }
}

/// The same config, compiled natively: what the filter should decide.
fn native(plugin: &WasmPlugin) -> AbConfig {
    AbConfig::from_json(plugin.plugin_config().to_string().as_bytes()).unwrap()
}

fn predicted<'a>(config: &'a AbConfig, id: &str) -> Option<&'a str> {
    let e = &config.experiments[0];
    choose(e, id).map(|v| e.variants[v].name.as_str())
}

/// Cluster names for VirtualService destinations: product subsets get their own upstream,
/// everything else the bed's `backend`.
fn cluster(host: &str, subset: Option<&str>) -> String {
    match subset {
        Some(s) if host.starts_with("product.") => format!("product-{s}"),
        _ => "backend".to_owned(),
    }
}

/// The local routes of a VirtualService in k8s/mesh/.
fn mesh_routes(file: &str, name: &str) -> impl FnOnce(Listener) -> Listener + Send + 'static {
    let vs = k8s::find(&k8s::dir().join("mesh").join(file), "VirtualService", name).unwrap();
    let routes = k8s::virtual_service_routes(&vs, cluster);
    assert!(!routes.is_empty());
    move |l| routes.into_iter().fold(l, Listener::route)
}

/// The ingress gateway with `plugin`, product v1 and v2 upstreams, the shop's routes.
async fn gateway(plugin: WasmPlugin) -> Result<Bed> {
    Bed::builder()
        .plugin(plugin)
        .workload(gateway_labels(), WorkloadMode::Client, 8080)
        .also_upstream("product-v1")
        .also_upstream("product-v2")
        .routes(mesh_routes("gateway-routes.yaml", "shop"))
        .start()
        .await
}

/// What an echo upstream saw: (upstream, x-ab-product, baggage).
fn seen(r: &Response) -> (String, Option<String>, Option<String>) {
    let v = r.json().unwrap_or_default();
    let h = |n: &str| v["headers"][n].as_str().map(str::to_owned);
    (
        v["upstream"].as_str().unwrap_or("").to_owned(),
        h("x-ab-product"),
        h("baggage"),
    )
}

/// One GET of the product API as user `sub` (JWT), returning (variant routed to, response).
async fn as_user(http: &Http, sub: &str, extra: &[(&str, &str)]) -> Result<(String, Response)> {
    let auth = bearer(sub);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let r = http.get(PRODUCT_API, &headers).await?;
    let (upstream, header, _) = seen(&r);
    let variant = upstream.strip_prefix("product-").unwrap_or("?").to_owned();
    assert_eq!(
        header.as_deref(),
        Some(variant.as_str()),
        "the upstream a request reached must be the one its header names ({sub})"
    );
    Ok((variant, r))
}

/// The variant each of `users` is routed to, over fresh connections (spread over both workers).
async fn route_all(bed: &Bed, users: usize) -> Vec<String> {
    let clients: Arc<Vec<Http>> = Arc::new((0..8).map(|_| Http::new(bed.addr())).collect());
    fan_out(users, 32, move |u| {
        let clients = Arc::clone(&clients);
        async move {
            let http = &clients[u % clients.len()];
            as_user(http, &format!("user-{u}"), &[]).await.unwrap().0
        }
    })
    .await
}

fn count(v: &[String], variant: &str) -> u64 {
    v.iter().filter(|x| *x == variant).count() as u64
}

async fn stat(bed: &Bed, metric: &str) -> u64 {
    bed.envoy.metric(metric).await.unwrap()
}

meshwright_testbed::in_both_forms!(
    the_header_written_by_the_filter_selects_the_route,
    growthbook_mode_reproduces_the_published_hash_vectors_in_envoy,
    ten_thousand_users_at_10_percent_split_within_3_sd_and_never_move,
    ramping_from_10_to_30_percent_keeps_every_v2_user_on_v2,
    other_baggage_members_keep_their_bytes,
    spoofed_output_headers_and_baggage_are_overwritten,
    overrides_work_only_when_enabled_and_allowed,
    identity_is_read_in_order_with_an_anonymous_cookie_last,
    a_sticky_cookie_holds_a_user_through_a_ramp_down,
    the_mesh_plugin_routes_store_calls_by_the_gateways_assignment_or_the_same_hash,
    bad_configs_are_refused_with_the_field_named,
);

async fn the_header_written_by_the_filter_selects_the_route() -> Result<()> {
    let plugin = gateway_plugin(|c| {
        weights(5000, 5000)(c);
        c["experiments"][0]["hash"] = json!("growthbook_v2");
    });
    let config = native(&plugin);
    let bed = gateway(plugin).await?;
    let http = bed.http();
    for u in 0..200 {
        let sub = format!("user-{u}");
        let (variant, r) = as_user(&http, &sub, &[("baggage", "tenant=acme")]).await?;
        assert_eq!(Some(variant.as_str()), predicted(&config, &sub), "{sub}");
        let (_, _, baggage) = seen(&r);
        assert_eq!(
            baggage.as_deref(),
            Some(format!("tenant=acme,ab.product={variant}").as_str()),
            "baggage keeps other members and carries the assignment"
        );
    }
    let (v1, v2) = (
        bed.upstream_named("product-v1").hits(),
        bed.upstream_named("product-v2").hits(),
    );
    println!("product-v1 {v1}, product-v2 {v2}");
    assert_eq!(v1 + v2, 200);
    assert!(v1 > 0 && v2 > 0, "both routes taken");
    assert_eq!(bed.upstream.hits(), 0);
    // Paths the experiment does not target (static assets) are not tagged.
    let r = bed
        .http()
        .get("/content/shop.css", &[("authorization", &bearer("user-1"))])
        .await?;
    assert_eq!(seen(&r).0, "backend");
    assert_eq!(seen(&r).1, None);
    Ok(())
}

async fn growthbook_mode_reproduces_the_published_hash_vectors_in_envoy() -> Result<()> {
    // GrowthBook's SDK conformance cases, "hash" section, version 2 rows [seed, id, expected]
    // (growthbook/growthbook packages/sdk-js/test/cases.json, spec 0.5.4). With salt = seed, the
    // first variant's position is GrowthBook's hash: a first variant of weight p + 1 basis points
    // takes the user, one of weight p does not — the position is read off to the basis point.
    let vectors = [
        ("seed", "a", 0.0505),
        ("seed", "b", 0.2696),
        ("foo", "ab", 0.2575),
        ("foo", "def", 0.2019),
        ("89123klj", "8952klfjas09ujkasdf", 0.124),
        ("90850943850283058242805", "123", 0.7516),
        ("()**(%$##$%#$#", "___)((*\":&", 0.0128),
    ];
    let mut experiments = Vec::new();
    for (k, (seed, _, expected)) in vectors.iter().enumerate() {
        let p = (expected * 10_000.0_f64).round() as u32;
        for (suffix, w) in [("above", p + 1), ("at", p)] {
            experiments.push(json!({
                "name": format!("gb{k}-{suffix}"), "header": format!("x-gb{k}-{suffix}"),
                "salt": seed, "hash": "growthbook_v2",
                "variants": [{"name": "in", "weight": w}, {"name": "out", "weight": 10_000 - w}]
            }));
        }
    }
    let plugin = gateway_plugin(|c| {
        *c = json!({"identity": [{"header": "x-user"}], "experiments": experiments});
    });
    let bed = gateway(plugin).await?;
    let http = bed.http();
    for (k, (seed, id, expected)) in vectors.iter().enumerate() {
        let r = http.get("/", &[("x-user", id)]).await?.json()?;
        let h = |suffix: &str| {
            r["headers"][format!("x-gb{k}-{suffix}")]
                .as_str()
                .map(str::to_owned)
        };
        assert_eq!(
            (h("above").as_deref(), h("at").as_deref()),
            (Some("in"), Some("out")),
            "hash({seed:?}, {id:?}, 2) must be {expected}"
        );
    }
    Ok(())
}

async fn ten_thousand_users_at_10_percent_split_within_3_sd_and_never_move() -> Result<()> {
    // The shipped experiment, every user in it (its coverage leaves 20 % to the mesh's canary
    // route, tested on the local mesh: shop_mesh.rs).
    let plugin = gateway_plugin(|c| c["experiments"][0]["coverage"] = json!(10_000));
    let config = native(&plugin);
    assert_eq!(
        config.experiments[0].variants[1].weight, 1000,
        "shipped at 10 %"
    );
    let bed = gateway(plugin).await?;
    let n = 10_000;
    let first = route_all(&bed, n).await;
    for round in 1..3 {
        let again = route_all(&bed, n).await;
        let moved: Vec<usize> = (0..n).filter(|u| again[*u] != first[*u]).collect();
        assert!(
            moved.is_empty(),
            "round {round}: users changed variant: {moved:?}"
        );
    }
    for (u, v) in first.iter().enumerate() {
        assert_eq!(Some(v.as_str()), predicted(&config, &format!("user-{u}")));
    }
    let on_v2 = count(&first, "v2");
    let bounds = Bounds::binomial(n as u64, 0.10, 3.0);
    println!("v2: {on_v2}/{n} users; {bounds}");
    assert!(bounds.contains(on_v2), "{on_v2}: {bounds}");

    // Both workers served connections. Each round opens new connections (8 clients, 32 requests
    // in flight) that the kernel hands to either worker, so most users (3 in 4 for an even
    // split) were answered by both workers over the 3 rounds — with the same variant, as checked
    // above.
    let stats = bed.envoy.stats().await?;
    let per_worker = |w: &str| -> u64 {
        stats
            .iter()
            .filter(|(k, _)| {
                k.starts_with("listener.127.0.0.1_")
                    && k.ends_with(&format!(".{w}.downstream_cx_total"))
            })
            .map(|(_, v)| *v)
            .sum()
    };
    let (w0, w1) = (per_worker("worker_0"), per_worker("worker_1"));
    println!("connections: worker_0 {w0}, worker_1 {w1}");
    assert!(
        w0 > 0 && w1 > 0,
        "both workers must have served: {w0} / {w1}"
    );

    // Metrics per experiment and variant, labelled on /stats/prometheus.
    assert_eq!(
        stat(&bed, &VariantMetricNames::new("product", "v2").assigned).await,
        3 * on_v2
    );
    assert_eq!(
        stat(&bed, &VariantMetricNames::new("product", "v1").assigned).await,
        3 * (n as u64 - on_v2)
    );
    let prom = bed.envoy.prometheus().await?;
    let labelled = |variant: &str, value: u64| {
        prom.lines().any(|l| {
            l.starts_with("meshwright_ab_experiment_variant_assigned{")
                && l.contains(r#"experiment="product""#)
                && l.contains(&format!(r#"variant="{variant}""#))
                && l.ends_with(&format!(" {value}"))
        })
    };
    assert!(
        labelled("v2", 3 * on_v2) && labelled("v1", 3 * (n as u64 - on_v2)),
        "labelled counters missing:\n{}",
        prom.lines()
            .filter(|l| l.contains("meshwright_ab"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

async fn ramping_from_10_to_30_percent_keeps_every_v2_user_on_v2() -> Result<()> {
    let n = 10_000;
    let before = gateway(gateway_plugin(weights(9000, 1000))).await?;
    let at_10 = route_all(&before, n).await;
    drop(before);
    let after = gateway(gateway_plugin(weights(7000, 3000))).await?;
    let at_30 = route_all(&after, n).await;
    let lost: Vec<usize> = (0..n)
        .filter(|u| at_10[*u] == "v2" && at_30[*u] != "v2")
        .collect();
    assert!(lost.is_empty(), "users who lost v2 in the ramp: {lost:?}");
    let (was, now) = (count(&at_10, "v2"), count(&at_30, "v2"));
    println!("v2 users: {was} at 10 %, {now} at 30 %");
    assert!(Bounds::binomial(n as u64, 0.10, 3.0).contains(was));
    assert!(Bounds::binomial(n as u64, 0.30, 3.0).contains(now));
    Ok(())
}

/// Other baggage members are kept byte for byte, also when they are not UTF-8 (`k=\x80` stayed
/// `k=\x80`, not `k=\u{FFFD}`).
async fn other_baggage_members_keep_their_bytes() -> Result<()> {
    let bed = gateway(gateway_plugin(weights(5000, 5000))).await?;
    let auth = bearer("user-1");
    let incoming: &[u8] = b"k=\x80,tenant=acme\xff";
    let r = bed
        .http()
        .send_bytes(
            hyper::Method::GET,
            PRODUCT_API,
            &[("authorization", auth.as_bytes()), ("baggage", incoming)],
            bytes::Bytes::new(),
        )
        .await?;
    assert_eq!(r.status, 200);
    let v = r.json()?;
    let hex = v["raw_hex"]["baggage"]
        .as_str()
        .context("baggage not passed as bytes")?;
    let variant = v["upstream"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("product-")
        .to_owned();
    let want: String = [incoming, format!(",ab.product={variant}").as_bytes()]
        .concat()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, want, "other members verbatim, ours appended");
    Ok(())
}

async fn spoofed_output_headers_and_baggage_are_overwritten() -> Result<()> {
    let bed = gateway(gateway_plugin(weights(10_000, 0))).await?;
    let http = bed.http();
    let (variant, r) = as_user(
        &http,
        "mallory",
        &[
            ("x-ab-product", "v2"),
            ("baggage", "ab.product=v2;p=1, other=1"),
        ],
    )
    .await?;
    assert_eq!(variant, "v1");
    assert_eq!(seen(&r).2.as_deref(), Some("other=1,ab.product=v1"));
    // A path the experiment does not target: the client's copies are removed, not passed on.
    let r = http
        .get(
            "/content/shop.css",
            &[("x-ab-product", "v2"), ("baggage", "ab.product=v2")],
        )
        .await?;
    assert_eq!(seen(&r), ("backend".to_owned(), None, None));
    assert_eq!(
        stat(
            &bed,
            &ExperimentMetricNames::new("product").client_header_removed
        )
        .await,
        2
    );
    // Several baggage headers (allowed by the W3C spec): every member of each is kept.
    let (_, r) = as_user(
        &http,
        "mallory",
        &[("baggage", "a=1"), ("baggage", "ab.product=v2, b=2")],
    )
    .await?;
    assert_eq!(seen(&r).2.as_deref(), Some("a=1,b=2,ab.product=v1"));
    Ok(())
}

async fn overrides_work_only_when_enabled_and_allowed() -> Result<()> {
    let key = Overlay::local()?.host_env[KEY_ENV].clone();
    let signed = |pairs: &str, expiry: u64| sign(key.as_bytes(), pairs, expiry);

    // Off: the override header does nothing.
    let off = gateway(gateway_plugin(|c| {
        weights(10_000, 0)(c);
        c.as_object_mut().unwrap().remove("overrides");
    }))
    .await?;
    let forced = signed("product=v2", unix_now() + 600);
    let (v, _) = as_user(&off.http(), "qa-alice", &[("x-ab-override", &forced)]).await?;
    assert_eq!(v, "v1", "overrides are off unless configured");
    drop(off);

    // Shipped: signed overrides only.
    let bed = gateway(gateway_plugin(weights(10_000, 0))).await?;
    let http = bed.http();
    let (v, r) = as_user(&http, "qa-alice", &[("x-ab-override", &forced)]).await?;
    assert_eq!(v, "v2", "a valid signature forces the variant");
    assert!(
        r.json()?["headers"].get("x-ab-override").is_none(),
        "the token is not passed upstream"
    );
    let path = format!("{PRODUCT_API}?ab_override={}", forced.replace('=', "%3D"));
    let r = http
        .get(&path, &[("authorization", &bearer("qa-bob"))])
        .await?;
    assert_eq!(seen(&r).0, "product-v2", "from the query parameter too");
    for (what, value) in [
        ("unsigned", "product=v2".to_owned()),
        (
            "tampered",
            signed("product=v1", unix_now() + 600).replacen("product=v1", "product=v2", 1),
        ),
        ("expired", signed("product=v2", unix_now() - 1)),
        ("too long-lived", signed("product=v2", unix_now() + 90_000)),
        (
            "other key",
            sign(
                b"some-other-key-of-at-least-32-bytes",
                "product=v2",
                unix_now() + 60,
            ),
        ),
    ] {
        let (v, _) = as_user(&http, "mallory", &[("x-ab-override", &value)]).await?;
        assert_eq!(v, "v1", "{what} override must be refused");
    }
    assert_eq!(stat(&bed, &overrides_rejected()).await, 5);
    assert_eq!(
        stat(&bed, &VariantMetricNames::new("product", "v2").overridden).await,
        2
    );
    drop(bed);

    // An allow-list of users (by verified JWT sub).
    let bed = gateway(gateway_plugin(|c| {
        weights(10_000, 0)(c);
        c["overrides"] = json!({"header": "x-ab-override",
            "allowed_users": {"key": {"jwt_claim": "sub"}, "values": ["qa-alice"]}});
    }))
    .await?;
    let http = bed.http();
    let (v, _) = as_user(&http, "qa-alice", &[("x-ab-override", "product=v2")]).await?;
    assert_eq!(v, "v2");
    let (v, _) = as_user(&http, "bob", &[("x-ab-override", "product=v2")]).await?;
    assert_eq!(v, "v1", "not on the list");
    Ok(())
}

async fn identity_is_read_in_order_with_an_anonymous_cookie_last() -> Result<()> {
    let plugin = gateway_plugin(|c| {
        weights(5000, 5000)(c);
        c["identity"] = json!([{"jwt_claim": "sub"}, {"cookie": "uid"}, {"header": "x-device-id"}]);
        c.as_object_mut().unwrap().remove("sticky");
        c["debug_header"] = json!("x-ab-debug");
    });
    let config = native(&plugin);
    // Ids whose variants alternate down the chain, so the variant shows which one was used.
    let on = |want: &str, prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|id| predicted(&config, id) == Some(want))
            .unwrap()
    };
    let (sub, uid, device) = (on("v2", "sub"), on("v1", "uid"), on("v2", "device"));
    let bed = gateway(plugin).await?;
    let http = bed.http();
    let get = |headers: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = http.get(PRODUCT_API, &h).await.unwrap();
            (seen(&r).0, r)
        }
    };
    let cookie = format!("uid={uid}");
    let all = vec![
        ("authorization", bearer(&sub)),
        ("cookie", cookie.clone()),
        ("x-device-id", device.clone()),
    ];
    assert_eq!(get(all).await.0, "product-v2", "JWT sub first");
    let (upstream, r) = get(vec![
        ("cookie", cookie.clone()),
        ("x-device-id", device.clone()),
    ])
    .await;
    assert_eq!(upstream, "product-v1", "then the cookie");
    assert_eq!(r.header("x-ab-debug"), Some("product=v1;hash"));
    assert_eq!(
        get(vec![("x-device-id", device)]).await.0,
        "product-v2",
        "then the header"
    );

    // Nothing: an anonymous id, set as a long-lived cookie with safe attributes.
    let (upstream, r) = get(vec![]).await;
    let set: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let [anon] = set.as_slice() else {
        panic!("one Set-Cookie expected: {set:?}")
    };
    let id = anon
        .strip_prefix("mw_ab_uid=")
        .and_then(|s| s.split(';').next())
        .context("mw_ab_uid")?
        .to_owned();
    assert!(meshwright_ab::identity::is_anonymous_id(&id), "{anon}");
    assert!(
        anon.ends_with("; Max-Age=31536000; Path=/; Secure; HttpOnly; SameSite=Lax"),
        "{anon}"
    );
    assert_eq!(Some(&upstream["product-".len()..]), predicted(&config, &id));
    // The next visit carries it: same variant, no new cookie.
    for _ in 0..5 {
        let (again, r) = get(vec![("cookie", format!("mw_ab_uid={id}"))]).await;
        assert_eq!(again, upstream);
        assert!(r.header("set-cookie").is_none());
    }
    assert_eq!(stat(&bed, &anonymous_ids_issued()).await, 1);
    Ok(())
}

async fn a_sticky_cookie_holds_a_user_through_a_ramp_down() -> Result<()> {
    let before = gateway_plugin(weights(5000, 5000));
    let after = gateway_plugin(weights(9900, 100));
    let (b, a) = (native(&before), native(&after));
    let user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| predicted(&b, u) == Some("v2") && predicted(&a, u) == Some("v1"))
        .unwrap();
    let bed = gateway(before).await?;
    let (v, r) = as_user(&bed.http(), &user, &[]).await?;
    assert_eq!(v, "v2");
    let sticky = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("mw_ab="))
        .and_then(|c| c.split(';').next())
        .context("no sticky cookie")?
        .to_owned();
    assert!(sticky.starts_with("product:1:v2."), "{sticky}");
    drop(bed);

    let bed = gateway(after).await?;
    let http = bed.http();
    let cookie = format!("mw_ab={sticky}");
    let (v, r) = as_user(&http, &user, &[("cookie", &cookie)]).await?;
    assert_eq!(v, "v2", "the cookie keeps the user on v2");
    assert!(r.header("set-cookie").is_none());
    let (v, _) = as_user(&http, &user, &[]).await?;
    assert_eq!(v, "v1", "without it the hash moves the user");
    let tampered = format!("mw_ab=product:1:v2.{}", "0".repeat(64));
    let target = (0..)
        .map(|i| format!("other-{i}"))
        .find(|u| predicted(&a, u) == Some("v1"))
        .unwrap();
    let (v, _) = as_user(&http, &target, &[("cookie", &tampered)]).await?;
    assert_eq!(v, "v1", "an unsigned sticky cookie is ignored");
    assert_eq!(
        stat(&bed, &VariantMetricNames::new("product", "v2").sticky).await,
        1
    );
    assert!(stat(&bed, &sticky_cookies_rejected()).await >= 1);
    Ok(())
}

async fn the_mesh_plugin_routes_store_calls_by_the_gateways_assignment_or_the_same_hash()
-> Result<()> {
    let plugin = shipped("ab-mesh")?;
    let config = native(&plugin);
    let bed = Bed::builder()
        .plugin(plugin)
        .workload(workload_labels("store", "v1"), WorkloadMode::Client, 80)
        .also_upstream("product-v1")
        .also_upstream("product-v2")
        .routes(mesh_routes("mesh-routes.yaml", "product"))
        .start()
        .await?;
    let http = bed.http();
    let host = ("host", "product.ecommerce.svc.cluster.local:8081");
    let call = |h: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let mut headers: Vec<(&str, &str)> = vec![host];
            headers.extend(h.iter().map(|(k, v)| (*k, v.as_str())));
            seen(&http.get("/api/products", &headers).await.unwrap()).0
        }
    };
    assert_eq!(
        call(vec![("baggage", "ab.product=v2".into())]).await,
        "product-v2",
        "the gateway's assignment, carried in baggage"
    );
    let v2_user = (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| predicted(&config, u) == Some("v2"))
        .unwrap();
    assert_eq!(
        call(vec![("authorization", bearer(&v2_user))]).await,
        "product-v2",
        "no baggage: the same hash as at the gateway"
    );
    assert_eq!(
        call(vec![("x-ab-product", "v2".into())]).await,
        "product-v2",
        "the gateway's assignment, forwarded as the header"
    );
    assert_eq!(
        call(vec![]).await,
        "product-v1",
        "nothing known: the default"
    );
    Ok(())
}

async fn bad_configs_are_refused_with_the_field_named() -> Result<()> {
    let v = |w1: u32, w2: u32| json!([{"name": "v1", "weight": w1}, {"name": "v2", "weight": w2}]);
    let exp = |name: &str, header: &str, variants: Value| json!({"name": name, "header": header, "variants": variants});
    let cases = [
        (
            json!({"experiments": [exp("product", "x-ab-product", v(9000, 2000))]}),
            "experiments[0].variants",
        ),
        (
            json!({"experiments": [exp("product", "x-ab-product", v(9000, 1000)),
                                   exp("product", "x-ab-other", v(5000, 5000))]}),
            "experiments[1].name",
        ),
        (
            json!({"experiments": [exp("product", "x-ab-product", json!([]))]}),
            "experiments[0].variants",
        ),
        (
            json!({"sticky": {"name": "s"}, "signing_key_env": "MESHWRIGHT_UNSET_KEY"}),
            "signing_key_env",
        ),
        (json!({"experimentz": []}), "experimentz"),
    ];
    for (config, field) in cases {
        let plugin = gateway_plugin(|c| *c = config.clone());
        let err = match gateway(plugin).await {
            Ok(_) => panic!("Envoy accepted {config}"),
            Err(e) => format!("{e:#}"),
        };
        // In the bundle, the field inside the filter's section.
        let field = forms::current().config_field("ab", field);
        assert!(
            err.contains(&format!("invalid plugin config at `{field}`")),
            "{config}: the log does not name `{field}`:\n{err}"
        );
    }
    Ok(())
}

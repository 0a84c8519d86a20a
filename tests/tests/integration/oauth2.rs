//! The OAuth2 filter at a real Envoy gateway (2 workers), against a real OpenID Provider
//! (oidc-provider from npm) — logins through the IdP's own form, refreshes, rotations, attacks and
//! IdP failures.

use anyhow::{Context, Result};
use meshwright_oauth2::idp::{Expect, parse_jwks};
use meshwright_oauth2::seal::KeyRing;
use meshwright_oauth2::session::{Session, seal_json};
use meshwright_oauth2::stats::{COUNTERS, counter, login_failed, token_error};
use meshwright_testbed::agent::{Agent, login_until, login_via_idp};
use meshwright_testbed::idp::{Idp, IdpOptions, free_port};
use meshwright_testbed::load::fan_out;
use meshwright_testbed::render::{Cluster, gateway_labels};
use meshwright_testbed::upstream::Upstream;
use meshwright_testbed::wasmplugin::{Overlay, WasmPlugin, WorkloadMode, shipped};
use meshwright_testbed::{Bed, BedBuilder};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEYS_A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEYS_B_A: &str =
    "b:HxwdHhscGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=,a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A gateway Envoy with the shipped oauth2 WasmPlugin pointed at a local IdP.
struct Gateway {
    bed: Bed,
    idp: Idp,
    base: String,
    port: u16,
    /// The faulty proxy in front of the IdP, if any.
    _idp_proxy: Option<Bed>,
}

struct Setup {
    idp_options: IdpOptions,
    config: Value,
    keys: &'static str,
    start_idp: bool,
    /// Send the filter's IdP calls through an Envoy whose fault filter has this rule.
    idp_fault: Option<Value>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            idp_options: IdpOptions::default(),
            config: json!({}),
            keys: KEYS_A,
            start_idp: true,
            idp_fault: None,
        }
    }
}

fn plugin(issuer: &str, patch: &Value) -> WasmPlugin {
    let mut config = json!({
        "issuer": issuer,
        "idp_cluster": "idp",
        "client_id": "shop",
        "client_secret_env": "MESHWRIGHT_OAUTH2_CLIENT_SECRET",
        "cookie_keys_env": "MESHWRIGHT_OAUTH2_COOKIE_KEYS",
        "cookie": {"name": "meshwright", "secure": false},
        "forward": {"token": "id_token", "claim_headers": {"x-user-email": "email", "x-user-id": "sub"}},
        "bypass": [{"path": {"prefix": "/healthz"}}],
        "discovery": {"wait_ms": 3000, "jwks_min_refetch_s": 0},
    });
    meshwright_testbed::wasmplugin::merge_patch(&mut config, patch);
    shipped("oauth2")
        .expect("wasmplugins/oauth2.yaml")
        .with_plugin_config(config)
}

fn overlay() -> Overlay {
    let mut o = Overlay::local().expect("wasmplugins/local/overlay.yaml");
    o.plugin_config.clear();
    o
}

impl Setup {
    async fn start(self) -> Result<Gateway> {
        let port = free_port()?;
        let idp_port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut options = self.idp_options;
        options.redirect_uris = vec![format!("{base}/oauth2/callback")];
        options.post_logout_uris = vec![format!("{base}/")];
        let mut idp = Idp::new(idp_port, options);
        if self.start_idp {
            idp.start().await?;
        }
        let proxy = match self.idp_fault {
            Some(rule) => Some(faulty_idp_proxy(idp_port, rule).await?),
            None => None,
        };
        let idp_addr = match &proxy {
            Some(p) => p.addr(),
            None => format!("127.0.0.1:{idp_port}").parse()?,
        };
        let builder: BedBuilder = Bed::builder()
            .plugin(plugin(&idp.issuer, &self.config))
            .overlay(overlay())
            .workload(gateway_labels(), WorkloadMode::Client, 8080)
            .listener_port(port)
            .extra_cluster(Cluster::new("idp", &[idp_addr]))
            .env("MESHWRIGHT_OAUTH2_COOKIE_KEYS", self.keys);
        let bed = builder.start().await?;
        Ok(Gateway {
            bed,
            idp,
            base,
            port,
            _idp_proxy: proxy,
        })
    }
}

/// A second gateway replica: the same plugin config and cookie keys, the same IdP.
async fn replica(gw: &Gateway, config: &Value) -> Result<Bed> {
    let idp_addr: std::net::SocketAddr = format!("127.0.0.1:{}", gw.idp.port).parse()?;
    Bed::builder()
        .plugin(plugin(&gw.idp.issuer, config))
        .overlay(overlay())
        .workload(gateway_labels(), WorkloadMode::Client, 8080)
        .extra_cluster(Cluster::new("idp", &[idp_addr]))
        .env("MESHWRIGHT_OAUTH2_COOKIE_KEYS", KEYS_A)
        .start()
        .await
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Logs `user` in at the IdP as `agent` from `path`, up to the IdP's redirect back: the
    /// callback URL, not yet followed.
    async fn callback_url(&self, agent: &Agent, path: &str, user: &str) -> Result<url::Url> {
        let callback = self.url("/oauth2/callback");
        let (_, redirect) = login_until(agent, &self.url(path), user, Some(&callback)).await?;
        let location = redirect
            .header("location")
            .context("redirect to the callback")?;
        Ok(url::Url::parse(&self.idp.issuer)?.join(location)?)
    }

    /// A filter-wide counter, by its name in `stats::COUNTERS`.
    async fn stat(&self, name: &str) -> Result<u64> {
        assert!(COUNTERS.contains(&name), "no oauth2 counter {name}");
        self.bed.envoy.metric(&counter(name)).await
    }

    /// The IdP's current JWKS.
    async fn idp_jwks(&self) -> Result<meshwright_oauth2::idp::Jwks> {
        let r = Agent::new()
            .get(&format!("{}/jwks", self.idp.issuer))
            .await?;
        Ok(parse_jwks(&r.body)?)
    }
}

fn echoed(page: &meshwright_testbed::client::Response) -> Result<Value> {
    page.json().context("the upstream's echo")
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

meshwright_testbed::in_both_forms!(
    a_full_login_reaches_the_upstream_with_a_verifiable_jwt_and_no_session_cookie,
    claims_in_the_id_token_need_no_userinfo_call,
    forged_callbacks_for_one_login_cost_one_token_call,
    a_burst_of_callbacks_is_held_to_the_calls_a_worker_may_have_in_flight,
    a_callback_without_the_advertised_iss_is_refused,
    a_refused_code_exchange_is_logged_and_counted_by_its_oauth_error,
    an_idp_cluster_that_does_not_exist_is_counted_as_failed_fetches,
    every_cookie_header_counts_and_none_leaks_the_session,
    api_calls_get_401_and_bypassed_paths_pass,
    attacks_are_refused,
    a_second_replica_keeps_a_valid_session_when_the_first_rotated_its_refresh_token,
    a_key_rotation_in_mid_session_is_picked_up_at_the_next_refresh,
    a_session_outlives_its_token_and_twenty_concurrent_requests_refresh_once,
    cookie_keys_rotate_without_logging_anybody_out,
    the_idp_rotating_its_signing_key_is_picked_up,
    logout_ends_the_session_at_the_proxy_and_at_the_idp,
    requests_wait_while_the_idp_is_down_then_recover,
    a_token_endpoint_answering_500_fails_the_login_cleanly,
    a_token_endpoint_answering_garbage_fails_the_login_cleanly,
    an_unreachable_jwks_keeps_logins_waiting_not_crashing,
    minted_tokens_verify_against_the_gateways_own_jwks,
    client_secret_post_works_too,
    a_real_browser_logs_in_through_the_idps_form,
    bad_configs_are_refused_with_the_field_named,
);

async fn a_full_login_reaches_the_upstream_with_a_verifiable_jwt_and_no_session_cookie()
-> Result<()> {
    let gw = Setup::default().start().await?;
    let agent = Agent::new();
    agent.set_cookie(&gw.url("/"), "theme", "dark");
    let (url, page) = login_via_idp(&agent, &gw.url("/account?tab=orders"), "alice").await?;
    assert_eq!(
        url,
        gw.url("/account?tab=orders"),
        "back at the original URL"
    );
    assert_eq!(page.status, 200);
    let seen = echoed(&page)?;
    assert_eq!(seen["path"], "/account?tab=orders");
    let auth = seen["headers"]["authorization"]
        .as_str()
        .context("no Authorization upstream")?;
    let token = auth.strip_prefix("Bearer ").context("not a Bearer")?;
    let v = gw.idp_jwks().await?.verify(
        token,
        &Expect {
            issuer: &gw.idp.issuer,
            audience: "shop",
            nonce: None,
            now_s: now_s(),
            leeway_s: 5,
        },
    )?;
    assert_eq!(v.sub, "alice");
    assert_eq!(seen["headers"]["x-user-email"], "alice@example.com");
    assert_eq!(
        seen["headers"]["cookie"], "theme=dark",
        "the upstream never sees the filter's cookies"
    );
    // The session works for API calls too, and the IdP saw exactly one code exchange.
    let api = agent
        .send(
            hyper::Method::GET,
            &gw.url("/api/account"),
            &[("sec-fetch-mode", "cors"), ("accept", "application/json")],
            None,
        )
        .await?;
    assert_eq!(api.status, 200);
    assert_eq!(gw.idp.grants("authorization_code"), 1);
    assert_eq!(gw.stat("logins_succeeded").await?, 1);
    // The test IdP follows OIDC Core §5.4: email is only at UserInfo, which the login called.
    let claims: Value = serde_json::from_slice(&base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        token.split('.').nth(1).unwrap_or_default(),
    )?)?;
    assert!(
        claims.get("email").is_none(),
        "the ID token has no email: {claims}"
    );
    assert_eq!(gw.stat("userinfo_fetches").await?, 1);
    assert_eq!(gw.stat("claims_missing").await?, 0);
    assert!(gw.stat("requests_authenticated").await? >= 2);
    let prom = gw.bed.envoy.prometheus().await?;
    assert!(
        prom.contains("meshwright_oauth2_logins_succeeded{} 1"),
        "{prom}"
    );
    Ok(())
}

/// An IdP that puts the claims in the ID token: no UserInfo call.
async fn claims_in_the_id_token_need_no_userinfo_call() -> Result<()> {
    let gw = Setup {
        idp_options: IdpOptions {
            lenient_claims: true,
            ..IdpOptions::default()
        },
        ..Setup::default()
    }
    .start()
    .await?;
    let (_, page) = login_via_idp(&Agent::new(), &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200);
    assert_eq!(
        echoed(&page)?["headers"]["x-user-email"],
        "alice@example.com"
    );
    assert_eq!(gw.stat("userinfo_fetches").await?, 0);
    Ok(())
}

/// Forged callbacks carrying one genuine login cookie and its state (random codes) cost one
/// token-endpoint call per worker at most, not one each.
async fn forged_callbacks_for_one_login_cost_one_token_call() -> Result<()> {
    let gw = Setup::default().start().await?;
    let agent = Agent::new();
    let genuine = gw.callback_url(&agent, "/", "mallory").await?;
    for i in 0..30 {
        let mut forged = genuine.clone();
        forged
            .query_pairs_mut()
            .clear()
            .extend_pairs(genuine.query_pairs().map(|(k, v)| {
                if k == "code" {
                    (k, format!("forged-{i}").into())
                } else {
                    (k, v)
                }
            }));
        let r = agent.get(forged.as_str()).await?;
        assert!(r.status >= 400, "forged callback {i}: {}", r.status);
    }
    let calls = gw
        .idp
        .output()
        .iter()
        .filter(|l| l.starts_with("token-error authorization_code"))
        .count();
    assert!(
        (1..=2).contains(&calls),
        "token-endpoint calls: {calls} (2 workers)"
    );
    assert!(gw.stat("callbacks_rejected").await? >= 28);
    Ok(())
}

/// A burst of callbacks, each with its own genuine login cookie and state (forged codes), while
/// the token endpoint is slow: each worker has at most `discovery.max_calls_in_flight` (here 1)
/// token calls in flight; the others are shed with 503 and `Retry-After` before they spend their
/// login state, and counted.
async fn a_burst_of_callbacks_is_held_to_the_calls_a_worker_may_have_in_flight() -> Result<()> {
    let gw = Setup {
        idp_fault: Some(json!({"name": "slow-token", "match": {"path": {"prefix": "/token"}}, "delay": {"fixed_ms": 1500, "percentage": 100}})),
        config: json!({"discovery": {"max_calls_in_flight": 1}}),
        ..Setup::default()
    }
    .start()
    .await?;
    let n = 12;
    let mut callbacks = Vec::new();
    for i in 0..n {
        let agent = Agent::new();
        let r = agent
            .send(
                hyper::Method::GET,
                &gw.url("/"),
                &[("accept", "text/html")],
                None,
            )
            .await?;
        let location = url::Url::parse(r.header("location").context("login redirect")?)?;
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .context("state")?;
        let mut cb = url::Url::parse(&gw.url("/oauth2/callback"))?;
        cb.query_pairs_mut()
            .append_pair("code", &format!("forged-{i}"))
            .append_pair("state", &state)
            .append_pair("iss", &gw.idp.issuer);
        callbacks.push((agent, cb.to_string()));
    }
    let mut burst = tokio::task::JoinSet::new();
    for (agent, cb) in callbacks {
        burst.spawn(async move {
            agent
                .get(&cb)
                .await
                .map(|r| (r.status, r.header("retry-after").map(str::to_owned)))
        });
    }
    let mut answers = Vec::new();
    while let Some(a) = burst.join_next().await {
        answers.push(a??);
    }
    let shed = answers
        .iter()
        .filter(|(s, retry)| *s == 503 && retry.as_deref() == Some("1"))
        .count() as u64;
    let calls = gw
        .idp
        .output()
        .iter()
        .filter(|l| l.starts_with("token-error authorization_code"))
        .count() as u64;
    assert!(
        (1..=2).contains(&calls),
        "token calls: {calls} (2 workers, 1 each): {answers:?}"
    );
    assert_eq!(
        shed + calls,
        n,
        "every callback was either called or shed: {answers:?}"
    );
    assert_eq!(gw.stat("idp_calls_shed").await?, shed);
    Ok(())
}

/// oidc-provider advertises RFC 9207 (`authorization_response_iss_parameter_supported`): a
/// callback stripped of its `iss` is refused before any token-endpoint call, the genuine one
/// works.
async fn a_callback_without_the_advertised_iss_is_refused() -> Result<()> {
    let gw = Setup::default().start().await?;
    let discovery = Agent::api()
        .get(&format!(
            "{}/.well-known/openid-configuration",
            gw.idp.issuer
        ))
        .await?
        .json()?;
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        true
    );
    let agent = Agent::new();
    let callback = gw.callback_url(&agent, "/orders", "dave").await?;
    assert!(
        callback
            .query_pairs()
            .any(|(k, v)| k == "iss" && v == gw.idp.issuer)
    );
    let mut stripped = callback.clone();
    stripped
        .query_pairs_mut()
        .clear()
        .extend_pairs(callback.query_pairs().filter(|(k, _)| k != "iss"));
    let r = agent.get(stripped.as_str()).await?;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("issuer_mismatch"), "{}", r.text());
    assert_eq!(gw.stat("callbacks_rejected").await?, 1);
    assert_eq!(gw.idp.grants("authorization_code"), 0, "no code exchange");
    Ok(())
}

/// A token endpoint refusing the client (a wrong secret) is logged with the provider's reason
/// and counted by its OAuth error, and the secret itself is never logged.
async fn a_refused_code_exchange_is_logged_and_counted_by_its_oauth_error() -> Result<()> {
    let gw = Setup {
        idp_options: IdpOptions {
            client_secret: "the-secret-the-idp-knows".into(),
            ..IdpOptions::default()
        },
        ..Setup::default()
    }
    .start()
    .await?;
    let (_, page) = login_via_idp(&Agent::new(), &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 502, "{}", page.text());
    let envoy = &gw.bed.envoy;
    assert_eq!(envoy.metric(&token_error("invalid_client")).await?, 1);
    assert_eq!(envoy.metric(&login_failed("token_endpoint")).await?, 1);
    let logged = gw
        .bed
        .envoy
        .log_contains(
            "authorization_code grant refused by the token endpoint: status 401, error invalid_client",
            Duration::from_secs(5),
        )
        .await;
    assert!(logged, "{}", gw.bed.envoy.log_tail(30));
    assert!(
        !gw.bed.envoy.log().contains("shop-secret"),
        "the client secret is never logged"
    );
    Ok(())
}

/// A misspelt `idp_cluster` (Envoy refuses every call to it) shows in the counters and the log,
/// not only as 503s after the wait.
async fn an_idp_cluster_that_does_not_exist_is_counted_as_failed_fetches() -> Result<()> {
    let gw = Setup {
        config: json!({"idp_cluster": "no-such-cluster", "discovery": {"wait_ms": 300}}),
        ..Setup::default()
    }
    .start()
    .await?;
    let r = Agent::new().get(&gw.url("/")).await?;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(gw.stat("discovery_failures").await? >= 1);
    assert_eq!(
        gw.stat("discovery_fetches").await?,
        0,
        "no call ever started"
    );
    let logged = gw
        .bed
        .envoy
        .log_contains("does the cluster exist", Duration::from_secs(5))
        .await;
    assert!(logged, "the log says why: {}", gw.bed.envoy.log_tail(30));
    Ok(())
}

/// An HTTP/1.1 client may split its cookies over several `Cookie` headers (Envoy keeps them
/// apart): the session is found in any of them, and the filter's cookies never reach the
/// upstream, on protected and bypassed paths alike.
async fn every_cookie_header_counts_and_none_leaks_the_session() -> Result<()> {
    let gw = Setup::default().start().await?;
    let agent = Agent::new();
    let (_, page) = login_via_idp(&agent, &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200);
    // The app's cookie in the first header, the session (from the jar) in a second one.
    for path in ["/account", "/healthz"] {
        let r = agent
            .send(
                hyper::Method::GET,
                &gw.url(path),
                &[("cookie", "theme=dark")],
                None,
            )
            .await?;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let seen = echoed(&r)?;
        assert_eq!(seen["headers"]["cookie"], "theme=dark", "{path}: {seen}");
        if path == "/account" {
            assert!(
                seen["headers"]["authorization"].is_string(),
                "{path}: signed in"
            );
        }
    }
    Ok(())
}

async fn api_calls_get_401_and_bypassed_paths_pass() -> Result<()> {
    let gw = Setup::default().start().await?;
    let api = Agent::api();
    let r = api.get(&gw.url("/api/orders")).await?;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()?["login_url"], "/oauth2/start?rd=%2Fapi%2Forders");
    let xhr = api
        .send(
            hyper::Method::GET,
            &gw.url("/account"),
            &[
                ("x-requested-with", "XMLHttpRequest"),
                ("accept", "text/html"),
            ],
            None,
        )
        .await?;
    assert_eq!(xhr.status, 401);
    let health = api
        .send(
            hyper::Method::GET,
            &gw.url("/healthz"),
            &[("x-user-email", "spoof@evil.com")],
            None,
        )
        .await?;
    assert_eq!(health.status, 200);
    assert!(
        echoed(&health)?["headers"].get("x-user-email").is_none(),
        "claim headers never come from clients"
    );
    assert_eq!(gw.stat("unauthenticated_401").await?, 2);
    assert_eq!(gw.stat("requests_bypassed").await?, 1);
    Ok(())
}

async fn attacks_are_refused() -> Result<()> {
    let gw = Setup::default().start().await?;
    let agent = Agent::new();
    let (_, page) = login_via_idp(&agent, &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200);
    let session = agent.cookies(&gw.url("/"))["meshwright"].value.clone();
    let api_status = |cookie: String| {
        let gw_url = gw.url("/api/me");
        async move {
            let a = Agent::api();
            a.set_cookie(&gw_url, "meshwright", &cookie);
            a.get(&gw_url).await.map(|r| r.status).unwrap_or(0)
        }
    };
    assert_eq!(
        api_status(session.clone()).await,
        200,
        "the genuine cookie works"
    );
    let flipped = format!(
        "{}{}",
        &session[..session.len() - 2],
        if session.ends_with("AA") { "BB" } else { "AA" }
    );
    assert_eq!(api_status(flipped).await, 401, "tampered");
    assert_eq!(
        api_status(session[..session.len() / 2].to_owned()).await,
        401,
        "truncated"
    );
    // An expired session, sealed with the gateway's own key (what an old stolen cookie is).
    let ring = KeyRing::parse(KEYS_A)?;
    let expired = Session {
        id: "x".into(),
        generation: 0,
        sub: "alice".into(),
        claims: Default::default(),
        token: Some("t".into()),
        token_exp: now_s() + 600,
        refresh_token: None,
        expires: now_s() - 1,
    };
    assert_eq!(
        api_status(seal_json(&ring, "meshwright", &expired, [9; 24]).unwrap()).await,
        401,
        "expired"
    );

    // Spoofed identity headers are replaced.
    let r = agent
        .send(
            hyper::Method::GET,
            &gw.url("/x"),
            &[
                ("x-user-email", "admin@evil.com"),
                ("authorization", "Bearer forged"),
            ],
            None,
        )
        .await?;
    let seen = echoed(&r)?;
    assert_eq!(seen["headers"]["x-user-email"], "alice@example.com");
    assert_ne!(seen["headers"]["authorization"], "Bearer forged");

    // A forged callback (no login cookie), and a replayed one.
    let forged = Agent::new()
        .get(&gw.url("/oauth2/callback?code=stolen&state=guessed"))
        .await?;
    assert_eq!(forged.status, 400);
    let replay = Agent::new();
    let callback = gw
        .callback_url(&replay, "/orders", "carol")
        .await?
        .to_string();
    assert!(
        callback.starts_with(&gw.url("/oauth2/callback?")),
        "{callback}"
    );
    let first = replay.get(&callback).await?;
    assert_eq!(
        (first.status, first.header("location")),
        (302, Some("/orders"))
    );
    let again = replay.get(&callback).await?;
    assert_eq!(again.status, 400, "a callback works once");

    // Open redirect via the login URL's return parameter.
    let evil = Agent::new();
    let (url, _) = login_via_idp(
        &evil,
        &gw.url("/oauth2/start?rd=https%3A%2F%2Fevil.example%2F"),
        "dave",
    )
    .await?;
    assert_eq!(url, gw.url("/"), "an absolute return URL is replaced by /");
    let (url, _) = login_via_idp(
        &Agent::new(),
        &gw.url("/oauth2/start?rd=%2F%2Fevil.example"),
        "erin",
    )
    .await?;
    assert_eq!(url, gw.url("/"));

    // An oversized Cookie header.
    let big = Agent::new();
    big.set_cookie(&gw.url("/"), "junk", &"x".repeat(20_000));
    assert_eq!(big.get(&gw.url("/")).await?.status, 431);
    assert!(statuses_ok(&gw.bed).await);
    assert!(gw.stat("callbacks_rejected").await? >= 2);
    assert!(gw.stat("sessions_invalid").await? >= 2);
    Ok(())
}

/// Two gateway replicas, one cookie, a provider that rotates refresh tokens: replica 1
/// refreshes; replica 2, seeing the old cookie while its token is still valid, gets
/// `invalid_grant` for the spent refresh token — and keeps the session instead of answering 401
/// and clearing the cookie, never sends that token again, and takes the newer cookie when the
/// browser brings it.
async fn a_second_replica_keeps_a_valid_session_when_the_first_rotated_its_refresh_token()
-> Result<()> {
    let config = json!({"refresh": {"before_expiry_s": 6}});
    let gw = Setup {
        idp_options: IdpOptions {
            token_ttl_s: 12,
            rotate_refresh_tokens: true,
            ..IdpOptions::default()
        },
        config: config.clone(),
        ..Setup::default()
    }
    .start()
    .await?;
    let second = replica(&gw, &config).await?;
    let agent = Agent::new();
    let login_at = Instant::now();
    let (_, page) = login_via_idp(&agent, &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200);
    let old_cookie = agent
        .cookie_header(&url::Url::parse(&gw.url("/"))?)
        .context("session cookie")?;
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(login_at.elapsed())).await;
    let api = |c: &str| {
        vec![
            ("cookie".to_owned(), c.to_owned()),
            ("accept".into(), "application/json".into()),
        ]
    };
    let get = |http: meshwright_testbed::client::Http, h: Vec<(String, String)>| async move {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http.get("/api/orders", &h).await
    };
    // Replica 1 refreshes: a new cookie.
    let r1 = get(gw.bed.http(), api(&old_cookie)).await?;
    assert_eq!(r1.status, 200, "{}", r1.text());
    let new_cookie: String = r1
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        !new_cookie.is_empty(),
        "replica 1 refreshed and sent the new cookie"
    );
    assert_eq!(gw.idp.grants("refresh_token"), 1);
    // Replica 2 with the old cookie: the IdP refuses the spent token; the session goes on.
    for i in 0..5 {
        let r2 = get(second.http(), api(&old_cookie)).await?;
        assert_eq!(r2.status, 200, "request {i} at replica 2: {}", r2.text());
        let cleared = r2
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("Max-Age=0"));
        assert!(!cleared, "replica 2 does not end the session");
    }
    let refused = gw
        .idp
        .output()
        .iter()
        .filter(|l| l.starts_with("token-error refresh_token"))
        .count();
    assert_eq!(
        refused, 1,
        "the spent refresh token was sent once, not once per request"
    );
    assert_eq!(second.envoy.metric(&counter("refresh_failures")).await?, 1);
    // The browser brings the newer cookie to replica 2: it is used as it is.
    let r = get(second.http(), api(&new_cookie)).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        gw.idp.grants("refresh_token"),
        1,
        "no refresh needed for the newer cookie"
    );
    Ok(())
}

/// The IdP rotates its signing key in mid-session (a restart that keeps its grants): the next
/// refresh succeeds at the token endpoint with a token signed by the new key; the filter fetches
/// the JWKS again and keeps the session, instead of failing and refreshing once more with the
/// refresh token it just spent. The refetch is allowed although the start-up fetch was less than
/// `jwks_min_refetch_s` ago (only on-demand fetches count against it).
async fn a_key_rotation_in_mid_session_is_picked_up_at_the_next_refresh() -> Result<()> {
    let mut gw = Setup {
        idp_options: IdpOptions {
            token_ttl_s: 12,
            durable: true,
            ..IdpOptions::default()
        },
        config: json!({"refresh": {"before_expiry_s": 6}, "discovery": {"jwks_min_refetch_s": 60}}),
        ..Setup::default()
    }
    .start()
    .await?;
    let agent = Agent::new();
    let login_at = Instant::now();
    let (_, page) = login_via_idp(&agent, &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200);
    let old_jwks = gw.idp_jwks().await?;
    gw.idp.start().await?; // a new signing key; grants and refresh tokens kept
    let new_jwks = gw.idp_jwks().await?;
    assert_ne!(
        format!("{old_jwks:?}"),
        format!("{new_jwks:?}"),
        "the IdP's key rotated"
    );
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(login_at.elapsed())).await;
    let r = agent.get(&gw.url("/orders")).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        gw.idp.grants("refresh_token"),
        1,
        "one refresh grant, not two"
    );
    assert_eq!(gw.stat("refresh_failures").await?, 0);
    assert!(
        gw.stat("jwks_fetches").await? >= 2,
        "fetched again on demand"
    );
    let token = echoed(&r)?["headers"]["authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .context("a token upstream")?
        .to_owned();
    let expect = Expect {
        issuer: &gw.idp.issuer,
        audience: "shop",
        nonce: None,
        now_s: now_s(),
        leeway_s: 5,
    };
    assert!(
        new_jwks.verify(&token, &expect).is_ok(),
        "signed with the new key"
    );
    // And the session goes on past the first token's expiry.
    tokio::time::sleep(Duration::from_secs(13).saturating_sub(login_at.elapsed())).await;
    assert_eq!(agent.get(&gw.url("/")).await?.status, 200);
    Ok(())
}

async fn a_session_outlives_its_token_and_twenty_concurrent_requests_refresh_once() -> Result<()> {
    let gw = Setup {
        idp_options: IdpOptions {
            token_ttl_s: 12,
            ..IdpOptions::default()
        },
        config: json!({"refresh": {"before_expiry_s": 6}}),
        ..Setup::default()
    }
    .start()
    .await?;
    let agent = Agent::new();
    let login_at = Instant::now();
    let (_, page) = login_via_idp(&agent, &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200);
    let token0 = echoed(&page)?["headers"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Into the refresh window (6 s before expiry), the token still valid.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(login_at.elapsed())).await;
    let cookie = agent
        .cookie_header(&url::Url::parse(&gw.url("/"))?)
        .context("session cookie")?;
    let http = gw.bed.http();
    let results = fan_out(20, 20, move |_| {
        let http = http.clone();
        let cookie = cookie.clone();
        async move {
            http.get(
                "/api/orders",
                &[("cookie", &cookie), ("accept", "application/json")],
            )
            .await
            .ok()
        }
    })
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.status == 200)),
        "every concurrent request passed"
    );
    assert_eq!(
        gw.idp.grants("refresh_token"),
        1,
        "exactly one refresh at the token endpoint"
    );
    let refreshed = results
        .iter()
        .flatten()
        .filter(|r| r.headers.get_all("set-cookie").iter().count() > 0)
        .count();
    assert!(refreshed >= 1, "the new session cookie reached the client");
    // Past the first token's expiry: the agent (which kept the new cookie if it got it) still
    // needs no login. Use a response that carried the new cookie.
    let new_cookie = results
        .iter()
        .flatten()
        .find_map(|r| {
            r.headers.get_all("set-cookie").iter().find_map(|v| {
                v.to_str()
                    .ok()
                    .filter(|c| c.starts_with("meshwright="))
                    .map(|c| c.split(';').next().unwrap_or("").to_owned())
            })
        })
        .context("no Set-Cookie with the refreshed session")?;
    tokio::time::sleep(Duration::from_secs(14).saturating_sub(login_at.elapsed())).await;
    let r = gw
        .bed
        .http()
        .get(
            "/api/orders",
            &[("cookie", &new_cookie), ("accept", "application/json")],
        )
        .await?;
    assert_eq!(
        r.status, 200,
        "the session lives past the first token without a new login"
    );
    let token1 = echoed(&r)?["headers"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(token0, token1, "a new token upstream");
    assert_eq!(gw.idp.grants("authorization_code"), 1, "no second login");
    // The refreshed ID token has no email either (OIDC Core §5.4): the refresh asked UserInfo
    // again, once, and the session still forwards the claim.
    assert_eq!(echoed(&r)?["headers"]["x-user-email"], "alice@example.com");
    assert_eq!(gw.stat("userinfo_fetches").await?, 2, "login and refresh");
    assert_eq!(gw.stat("userinfo_failures").await?, 0);
    Ok(())
}

async fn cookie_keys_rotate_without_logging_anybody_out() -> Result<()> {
    let gw = Setup::default().start().await?;
    let agent = Agent::new();
    login_via_idp(&agent, &gw.url("/"), "alice").await?;
    let old = agent.cookies(&gw.url("/"))["meshwright"].value.clone();
    assert!(old.starts_with("v1.a."));
    drop(gw.bed);
    // Same IdP, a new gateway whose ring seals with b and still opens a.
    let gw2 = Setup {
        keys: KEYS_B_A,
        ..Setup::default()
    }
    .start()
    .await?;
    let a = Agent::api();
    a.set_cookie(&gw2.url("/"), "meshwright", &old);
    assert_eq!(
        a.get(&gw2.url("/api/me")).await?.status,
        200,
        "sessions sealed with the old key still open"
    );
    let fresh = Agent::new();
    login_via_idp(&fresh, &gw2.url("/"), "bob").await?;
    assert!(
        fresh.cookies(&gw2.url("/"))["meshwright"]
            .value
            .starts_with("v1.b."),
        "the new key seals"
    );
    Ok(())
}

async fn the_idp_rotating_its_signing_key_is_picked_up() -> Result<()> {
    let mut gw = Setup {
        idp_options: IdpOptions {
            alg: "ES256".into(),
            ..IdpOptions::default()
        },
        ..Setup::default()
    }
    .start()
    .await?;
    let (_, page) = login_via_idp(&Agent::new(), &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200);
    let fetches = gw.stat("jwks_fetches").await?;
    gw.idp.start().await?; // restart: a fresh key with a fresh kid
    let (_, page) = login_via_idp(&Agent::new(), &gw.url("/"), "bob").await?;
    assert_eq!(
        page.status,
        200,
        "logged in with a token signed by the new key: {}",
        page.text()
    );
    assert!(
        gw.stat("jwks_fetches").await? > fetches,
        "the JWKS was fetched again for the unknown kid"
    );
    Ok(())
}

async fn logout_ends_the_session_at_the_proxy_and_at_the_idp() -> Result<()> {
    let gw = Setup::default().start().await?;
    let agent = Agent::new();
    login_via_idp(&agent, &gw.url("/"), "alice").await?;
    let (url, page) = agent.follow(&gw.url("/oauth2/logout")).await?;
    assert!(
        url.starts_with(&format!("{}/session/end", gw.idp.issuer)),
        "{url}"
    );
    assert!(url.contains("id_token_hint="));
    assert!(
        !agent.cookies(&gw.url("/")).contains_key("meshwright"),
        "the gateway cleared its cookies"
    );
    // Confirm at the IdP; it sends the browser back to the post-logout page, which is protected
    // again: the IdP asks for credentials (its session ended too) instead of logging in silently.
    let (url, page) = agent.submit_form(&url, &page, &[("logout", "yes")]).await?;
    assert!(url.starts_with(&gw.idp.issuer), "{url}");
    assert!(
        page.text().contains("name=\"login\""),
        "the IdP asks for a login again"
    );
    assert_eq!(gw.stat("logouts").await?, 1);
    Ok(())
}

async fn requests_wait_while_the_idp_is_down_then_recover() -> Result<()> {
    let mut gw = Setup {
        start_idp: false,
        ..Setup::default()
    }
    .start()
    .await?;
    let t = Instant::now();
    let r = Agent::new().get(&gw.url("/")).await?;
    assert_eq!(r.status, 503, "no IdP: a clean 503 after the wait");
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "the request waited for discovery"
    );
    assert!(gw.stat("idp_wait_timeouts").await? >= 1);
    gw.idp.start().await?;
    // Discovery is retried with backoff; the next logins work once it lands.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, page) = login_via_idp(&Agent::new(), &gw.url("/"), "alice").await?;
        if page.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {} {}",
            page.status,
            page.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gw.stat("discovery_failures").await? >= 1);
    Ok(())
}

/// A second Envoy in front of the IdP, with meshwright's fault filter breaking one path.
async fn faulty_idp_proxy(idp_port: u16, rule: Value) -> Result<Bed> {
    let fault = shipped("fault")?.with_plugin_config(json!({"rules": [rule]}));
    let idp_addr: std::net::SocketAddr = format!("127.0.0.1:{idp_port}").parse()?;
    Bed::builder()
        .plugin(fault)
        .routes(|l| {
            l.route(meshwright_testbed::render::Route::to_cluster(
                "/", "real-idp",
            ))
        })
        .extra_cluster(Cluster::new("real-idp", &[idp_addr]))
        .start()
        .await
}

async fn login_fails_with(rule: Value, reason: &str) -> Result<()> {
    let gw = Setup {
        idp_fault: Some(rule),
        ..Setup::default()
    }
    .start()
    .await?;
    let bed = &gw.bed;
    let (_, page) = login_via_idp(&Agent::new(), &gw.url("/"), "alice").await?;
    assert!(
        matches!(page.status, 401 | 502),
        "{} {}",
        page.status,
        page.text()
    );
    assert!(page.text().contains(reason), "{}", page.text());
    assert_eq!(bed.envoy.metric(&login_failed(reason)).await?, 1);
    assert!(statuses_ok(bed).await);
    Ok(())
}

async fn statuses_ok(bed: &Bed) -> bool {
    bed.http()
        .get("/healthz", &[])
        .await
        .is_ok_and(|r| r.status == 200)
}

async fn a_token_endpoint_answering_500_fails_the_login_cleanly() -> Result<()> {
    login_fails_with(json!({"name": "token-500", "match": {"path": {"prefix": "/token"}}, "abort": {"http_status": 500, "percentage": 100}}), "token_endpoint").await
}

async fn a_token_endpoint_answering_garbage_fails_the_login_cleanly() -> Result<()> {
    login_fails_with(json!({"name": "token-garbage", "match": {"path": {"prefix": "/token"}}, "response": {"http_status": 200, "body": "<html>surprise", "percentage": 100}}), "token_response").await
}

async fn an_unreachable_jwks_keeps_logins_waiting_not_crashing() -> Result<()> {
    let gw = Setup {
        idp_fault: Some(json!({"name": "jwks-down", "match": {"path": {"prefix": "/jwks"}}, "abort": {"http_status": 503, "percentage": 100}})),
        config: json!({"discovery": {"wait_ms": 1500}}),
        ..Setup::default()
    }
    .start()
    .await?;
    let bed = &gw.bed;
    let r = Agent::new().get(&gw.url("/")).await?;
    assert_eq!(r.status, 503);
    assert!(bed.envoy.metric(&counter("jwks_failures")).await? >= 1);
    assert!(statuses_ok(bed).await, "Envoy and the filter keep serving");
    Ok(())
}

async fn minted_tokens_verify_against_the_gateways_own_jwks() -> Result<()> {
    let gw = Setup {
        config: json!({"forward": {"token": "minted"}, "mint": {
            "alg": "ES256", "key_env": "MESHWRIGHT_OAUTH2_SIGNING_KEY",
            "issuer": "https://shop.example.com/meshwright", "audiences": ["ecommerce"], "claims": ["email"]}}),
        ..Setup::default()
    }
    .start()
    .await?;
    let agent = Agent::new();
    let (_, page) = login_via_idp(&agent, &gw.url("/"), "alice").await?;
    let auth = echoed(&page)?["headers"]["authorization"]
        .as_str()
        .context("bearer")?
        .to_owned();
    let jwks = Agent::new()
        .get(&gw.url("/.well-known/meshwright/jwks.json"))
        .await?;
    let v = parse_jwks(&jwks.body)?.verify(
        auth.strip_prefix("Bearer ").unwrap_or_default(),
        &Expect {
            issuer: "https://shop.example.com/meshwright",
            audience: "ecommerce",
            nonce: None,
            now_s: now_s(),
            leeway_s: 5,
        },
    )?;
    assert_eq!(v.sub, "alice");
    assert_eq!(v.claims["email"], "alice@example.com");
    // The path-scoped ID token cookie (for the logout hint) is not sent on normal requests.
    assert!(agent.cookies(&gw.url("/")).contains_key("meshwright_idt"));
    let again = agent.get(&gw.url("/x")).await?;
    assert_eq!(
        echoed(&again)?["headers"]["authorization"].as_str(),
        Some(auth.as_str()),
        "minted once per session, reused"
    );
    Ok(())
}

async fn client_secret_post_works_too() -> Result<()> {
    let gw = Setup {
        idp_options: IdpOptions {
            auth_method: "client_secret_post".into(),
            ..IdpOptions::default()
        },
        config: json!({"token_endpoint_auth": "client_secret_post"}),
        ..Setup::default()
    }
    .start()
    .await?;
    let (_, page) = login_via_idp(&Agent::new(), &gw.url("/"), "alice").await?;
    assert_eq!(page.status, 200, "{}", page.text());
    let _ = (gw.port, Upstream::echo);
    Ok(())
}

async fn a_real_browser_logs_in_through_the_idps_form() -> Result<()> {
    meshwright_testbed::install::ensure_apt(&["chromium"])?;
    let gw = Setup::default().start().await?;
    let start = gw.url("/products?page=2");
    let dir = meshwright_testbed::paths::root().join("tests/idp");
    meshwright_testbed::install::ensure_npm(&dir)?;
    let out = tokio::process::Command::new("node")
        .arg("browser-login.mjs")
        .arg(&start)
        .arg("browser-user")
        .current_dir(&dir)
        .output()
        .await?;
    assert!(
        out.status.success(),
        "browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
    assert_eq!(
        result["url"],
        start.as_str(),
        "the browser landed on the page it asked for"
    );
    assert_eq!(result["status"], 200);
    let page: Value = serde_json::from_str(result["body"].as_str().unwrap_or_default())?;
    assert_eq!(page["headers"]["x-user-id"], "browser-user");
    assert!(
        page["headers"]["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Bearer ey"))
    );
    // Browsers share cookies across ports of a host: the IdP's own cookies (also on 127.0.0.1)
    // may arrive, the filter's never.
    let cookie = page["headers"]["cookie"].as_str().unwrap_or_default();
    assert!(
        !cookie.contains("meshwright"),
        "a filter cookie reached the upstream: {cookie}"
    );
    Ok(())
}

#[test]
fn the_meshs_request_authentication_trusts_the_tokens_the_gateway_mints() -> Result<()> {
    use meshwright_testbed::k8s;
    let plugin = shipped("oauth2")?;
    let cfg = plugin.plugin_config();
    let mint = &cfg["mint"];
    let issuer = mint["issuer"].as_str().context("mint.issuer")?;
    let jwks_path = mint["jwks_path"].as_str().context("mint.jwks_path")?;
    let audiences = mint["audiences"].clone();
    // The gateway serves the JWKS at mint.jwks_path for every host it serves: istiod fetches it
    // from one of the Gateway's plain-HTTP hosts (the in-cluster one).
    let gateway = k8s::find(&k8s::dir().join("mesh/gateway.yaml"), "Gateway", "shop")?;
    let http_hosts: Vec<String> = gateway["spec"]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["port"]["protocol"] == "HTTP" && s["tls"]["httpsRedirect"] != true)
        .flat_map(|s| s["hosts"].as_array().cloned().unwrap_or_default())
        .filter_map(|h| {
            h.as_str()
                .map(|h| h.rsplit('/').next().unwrap_or(h).to_owned())
        })
        .collect();
    assert!(
        !http_hosts.is_empty(),
        "a plain-HTTP gateway host for istiod"
    );
    let file = k8s::dir().join("security/request-authentication.yaml");
    let docs = k8s::load(&file)?;
    let ras: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "RequestAuthentication")
        .collect();
    assert!(ras.len() >= 2, "gateway and workloads");
    for ra in ras {
        let rules = ra["spec"]["jwtRules"].as_array().context("jwtRules")?;
        let trusted = rules.iter().any(|r| {
            let uri = r["jwksUri"].as_str().and_then(|u| url::Url::parse(u).ok());
            r["issuer"] == issuer
                && r["audiences"] == audiences
                && uri.is_some_and(|u| {
                    u.scheme() == "http"
                        && u.path() == jwks_path
                        && u.host_str()
                            .is_some_and(|h| http_hosts.iter().any(|x| x == h))
                })
        });
        assert!(
            trusted,
            "{} does not trust issuer {issuer} (audiences {audiences}) with the JWKS the gateway serves at {jwks_path} on {http_hosts:?}",
            ra["metadata"]["name"]
        );
    }
    assert_eq!(cfg["forward"]["token"], "minted");
    assert_eq!(
        plugin.spec.phase,
        Some(meshwright_testbed::wasmplugin::Phase::Authn),
        "before Istio's own authentication"
    );
    Ok(())
}

async fn bad_configs_are_refused_with_the_field_named() -> Result<()> {
    let cases = [
        (json!({"issuer": "not a url"}), "issuer"),
        (json!({"cookie": {"name": "__Host-x"}}), "cookie.name"),
        (json!({"clientid": "shop"}), "clientid"),
        (
            json!({"forward": {"claim_headers": {"cookie": "sub"}}}),
            "forward.claim_headers.cookie",
        ),
    ];
    for (config, field) in cases {
        let setup = Setup {
            config: config.clone(),
            start_idp: false,
            ..Setup::default()
        };
        let err = match setup.start().await {
            Ok(_) => panic!("Envoy accepted {config}"),
            Err(e) => format!("{e:#}"),
        };
        // In the bundle, the field inside the filter's section.
        let field = meshwright_testbed::forms::current().config_field("oauth2", field);
        assert!(
            err.contains(&format!("invalid plugin config at `{field}`")),
            "{config}: the log does not name `{field}`:\n{err}"
        );
    }
    Ok(())
}

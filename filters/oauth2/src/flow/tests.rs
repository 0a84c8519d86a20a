use super::*;
use crate::idp::{Endpoint, parse_jwks};
use crate::mint::tests::ES256_PEM;
use jwt_simple::prelude::*;
use meshwright_shared::headers::HeaderList;
use std::collections::HashMap;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const ISSUER: &str = "http://idp.test";
const NOW_S: u64 = 1_800_000_000;
const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEYS_ROTATED: &str = "k2:HxwdHhscGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=,k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Deterministic "entropy": a counter.
struct Counter(u8);
impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

#[derive(Default)]
struct Slots {
    state: HashMap<String, Claim>,
    claims: usize,
    generations: HashMap<String, u32>,
}
impl RefreshSlots for Slots {
    fn claim(&mut self, sid: &str, _now_ms: u64) -> Claim {
        self.claims += 1;
        match self.state.get(sid) {
            None => {
                self.state.insert(sid.into(), Claim::Busy);
                Claim::Acquired
            }
            Some(c) => c.clone(),
        }
    }
    fn complete(&mut self, sid: &str, sealed: &str, _now_ms: u64) {
        self.state
            .insert(sid.into(), Claim::Refreshed(sealed.into()));
    }
    fn release(&mut self, sid: &str) {
        self.state.remove(sid);
    }
    fn supersede(&mut self, sid: &str, generation: u32, _until_s: u64, _now_ms: u64) {
        let g = self.generations.entry(sid.into()).or_insert(generation);
        *g = (*g).max(generation);
    }
    fn superseded(&mut self, sid: &str, generation: u32, _now_ms: u64) -> bool {
        self.generations.get(sid).is_some_and(|g| *g > generation)
    }
}

struct World {
    cfg: OAuth2Config,
    names: CookieNames,
    discovery: Discovery,
    jwks: Jwks,
    idp_key: ES256KeyPair,
    cache: SessionCache,
    rng: Counter,
    slots: Slots,
}

fn env(name: &str) -> Option<String> {
    match name {
        "SECRET" => Some("s3cret:&".into()),
        "KEYS" => Some(KEYS.into()),
        "KEYS_ROTATED" => Some(KEYS_ROTATED.into()),
        "MINT_KEY" => Some(ES256_PEM.into()),
        _ => None,
    }
}

fn base_config() -> Value {
    serde_json::json!({
        "issuer": ISSUER,
        "idp_cluster": "idp",
        "client_id": "shop",
        "client_secret_env": "SECRET",
        "cookie_keys_env": "KEYS",
        "cookie": {"name": "mw", "secure": false},
        "forward": {"claim_headers": {"x-user-email": "email", "x-user-id": "sub", "x-user-groups": "groups"}},
        "refresh": {"before_expiry_s": 30},
        "bypass": [{"path": {"prefix": "/health"}}],
    })
}

fn world_with(edit: impl FnOnce(&mut Value)) -> World {
    let mut cfg = base_config();
    edit(&mut cfg);
    let cfg = OAuth2Config::from_json(cfg.to_string().as_bytes(), &env).unwrap();
    let names = CookieNames::new(&cfg.cookie.name);
    let idp_key = ES256KeyPair::from_pem(ES256_PEM)
        .unwrap()
        .with_key_id("idp-1");
    let jwk = idp_key.public_key().with_key_id("idp-1").to_jwk();
    World {
        cfg,
        names,
        discovery: Discovery {
            issuer: ISSUER.into(),
            authorization_endpoint: format!("{ISSUER}/auth"),
            token_endpoint: Endpoint::parse(&format!("{ISSUER}/token")).unwrap(),
            jwks_uri: Endpoint::parse(&format!("{ISSUER}/jwks")).unwrap(),
            end_session_endpoint: Some(format!("{ISSUER}/session/end")),
            userinfo_endpoint: None,
            iss_in_callback: true,
        },
        jwks: parse_jwks(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes()).unwrap(),
        idp_key,
        cache: SessionCache::new(100),
        rng: Counter(0),
        slots: Slots::default(),
    }
}

fn world() -> World {
    world_with(|_| {})
}

fn browser(path: &str, cookie: &str) -> HeaderList {
    [
        (":path", path),
        (":method", "GET"),
        (":authority", "shop.test"),
        (":scheme", "http"),
        ("sec-fetch-mode", "navigate"),
        ("cookie", cookie),
    ]
    .into_iter()
    .collect()
}

fn api(path: &str, cookie: &str) -> HeaderList {
    [
        (":path", path),
        (":method", "GET"),
        (":authority", "shop.test"),
        ("accept", "application/json"),
        ("cookie", cookie),
    ]
    .into_iter()
    .collect()
}

impl World {
    fn gate(&self) -> Gate<'_> {
        Gate {
            cfg: &self.cfg,
            names: &self.names,
            discovery: Some(&self.discovery),
            jwks: Some(&self.jwks),
        }
    }

    fn decide_at(&mut self, req: &HeaderList, now_s: u64) -> Decision {
        let gate = Gate {
            cfg: &self.cfg,
            names: &self.names,
            discovery: Some(&self.discovery),
            jwks: Some(&self.jwks),
        };
        gate.decide(
            req,
            now_s * 1000,
            &mut self.cache,
            &mut self.rng,
            &mut self.slots,
        )
    }

    fn decide(&mut self, req: &HeaderList) -> Decision {
        self.decide_at(req, NOW_S)
    }

    fn id_token(&self, nonce: Option<&str>, sub: &str, exp: u64) -> String {
        let mut custom = Map::new();
        custom.insert("email".into(), format!("{sub}@example.com").into());
        custom.insert("groups".into(), serde_json::json!(["customers", "beta"]));
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(NOW_S)),
            expires_at: Some(UnixTimeStamp::from_secs(exp)),
            invalid_before: None,
            issuer: Some(ISSUER.into()),
            subject: Some(sub.into()),
            audiences: Some(Audiences::AsString("shop".into())),
            jwt_id: None,
            nonce: nonce.map(String::from),
            custom,
        };
        self.idp_key.sign(claims).unwrap()
    }

    /// Runs a whole login; returns the browser's cookie header afterwards.
    fn login(&mut self, return_to: &str) -> String {
        let Decision::Reply(r, Outcome::LoginStarted) = self.decide(&browser(return_to, "")) else {
            panic!("no login redirect")
        };
        let location = header(&r, "location").unwrap();
        let state = query_param(location, "state").unwrap();
        let login_cookie = cookies_of(&r).join("; ");
        let cb = format!(
            "/oauth2/callback?code=c0de&state={state}&iss={}",
            crate::urls::encode(ISSUER)
        );
        let Decision::Exchange {
            txn,
            call,
            login_cookie: name,
        } = self.decide(&browser(&cb, &login_cookie))
        else {
            panic!("no exchange")
        };
        assert!(
            call.body.contains("code=c0de") && call.body.contains("grant_type=authorization_code")
        );
        let tokens = TokenSet {
            access_token: "opaque-at".into(),
            id_token: Some(self.id_token(Some(&txn.nonce), "alice", NOW_S + 300)),
            refresh_token: Some("rt-1".into()),
            expires_in: Some(300),
        };
        let reply = self
            .gate()
            .finish_login(
                &txn,
                &name,
                &tokens,
                &login_cookie,
                NOW_S,
                &mut Counter(100),
            )
            .unwrap();
        assert_eq!(reply.status, 302);
        assert_eq!(header(&reply, "location"), Some(return_to));
        cookies_of(&reply).join("; ")
    }
}

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `name=value` parts of a reply's Set-Cookies that set a value (what a browser keeps).
fn cookies_of(r: &Reply) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .filter(|(_, v)| !v.contains("Max-Age=0"))
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .collect()
}

fn forwarded(d: Decision) -> Forward {
    match d {
        Decision::Forward(f, _) => f,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn set<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
    f.set
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn browsers_are_sent_to_the_idp_with_state_nonce_and_pkce() {
    let mut w = world();
    let Decision::Reply(r, Outcome::LoginStarted) = w.decide(&browser("/products?page=2", ""))
    else {
        panic!()
    };
    assert_eq!(r.status, 302);
    let location = header(&r, "location").unwrap();
    assert!(location.starts_with("http://idp.test/auth?response_type=code&client_id=shop"));
    assert_eq!(
        query_param(location, "redirect_uri").as_deref(),
        Some("http://shop.test/oauth2/callback")
    );
    assert_eq!(
        query_param(location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(location, "scope").as_deref(),
        Some("openid email profile")
    );
    let set_cookie = r
        .headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .unwrap()
        .1
        .as_str();
    assert!(set_cookie.starts_with("mw_login_"));
    assert!(
        set_cookie.contains("Max-Age=600; Path=/oauth2/callback")
            && set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Lax")
    );
    // The login cookie holds the verifier whose S256 hash is the challenge.
    let (name, value) = cookies_of(&r)[0]
        .split_once('=')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let txn: LoginTxn = open_json(&w.cfg.keys, &name, &value).unwrap();
    let challenge = URL_SAFE_NO_PAD.encode(hmac_sha256::Hash::hash(txn.verifier.as_bytes()));
    assert_eq!(query_param(location, "code_challenge"), Some(challenge));
    assert_eq!(query_param(location, "state"), Some(txn.state.clone()));
    assert_eq!(query_param(location, "nonce"), Some(txn.nonce));
    assert_eq!(txn.return_to, "/products?page=2");
}

#[test]
fn api_calls_get_401_naming_the_login_url() {
    let mut w = world();
    let Decision::Reply(r, Outcome::Unauthenticated401) = w.decide(&api("/api/orders", "")) else {
        panic!()
    };
    assert_eq!(r.status, 401);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["login_url"], "/oauth2/start?rd=%2Fapi%2Forders");
    // XHR with an HTML Accept is still an API call.
    let mut xhr = browser("/x", "");
    xhr.push("x-requested-with", "XMLHttpRequest");
    assert!(matches!(
        w.decide(&xhr),
        Decision::Reply(_, Outcome::Unauthenticated401)
    ));
    // fetch() from a page: Sec-Fetch-Mode cors.
    let fetch: HeaderList = [
        (":path", "/api/x"),
        (":authority", "shop.test"),
        ("sec-fetch-mode", "cors"),
        ("accept", "text/html"),
    ]
    .into_iter()
    .collect();
    assert!(matches!(
        w.decide(&fetch),
        Decision::Reply(_, Outcome::Unauthenticated401)
    ));
}

#[test]
fn a_full_login_forwards_the_id_token_and_strips_the_cookies() {
    let mut w = world();
    let cookies = w.login("/account");
    let with_other = format!("theme=dark; {cookies}");
    let mut req = api("/api/account", &with_other);
    req.push("x-user-email", "spoofed@evil.com");
    req.push("authorization", "Bearer spoofed");
    let f = forwarded(w.decide(&req));
    let bearer = set(&f, "authorization").unwrap();
    let token = bearer.strip_prefix("Bearer ").unwrap();
    assert!(
        w.jwks
            .verify(
                token,
                &Expect {
                    issuer: ISSUER,
                    audience: "shop",
                    nonce: None,
                    now_s: NOW_S,
                    leeway_s: 0
                }
            )
            .is_ok()
    );
    assert_eq!(
        set(&f, "x-user-email"),
        Some("alice@example.com"),
        "client value replaced"
    );
    assert_eq!(set(&f, "x-user-id"), Some("alice"));
    assert_eq!(set(&f, "x-user-groups"), Some("customers,beta"));
    assert_eq!(
        f.cookie,
        Some(Some("theme=dark".into())),
        "the upstream never sees the session cookie"
    );
    assert!(f.response_cookies.is_empty());
    // Second request: served from the per-worker cache.
    assert_eq!(w.cache.len(), 1);
    let f2 = forwarded(w.decide(&api("/api/account", &cookies)));
    assert_eq!(set(&f2, "authorization"), Some(bearer));
    assert_eq!(f2.cookie, Some(None));
}

#[test]
fn forged_replayed_or_expired_callbacks_are_refused() {
    let mut w = world();
    let Decision::Reply(r, _) = w.decide(&browser("/", "")) else {
        panic!()
    };
    let state = query_param(header(&r, "location").unwrap(), "state").unwrap();
    let login_cookie = cookies_of(&r).join("; ");
    let cb = |state: &str| format!("/oauth2/callback?code=c&state={state}");
    let rejected = |d: Decision, reason: &str| match d {
        Decision::Reply(r, Outcome::CallbackRejected) => {
            assert!(r.body.contains(reason), "{}", r.body)
        }
        other => panic!("{other:?}"),
    };
    // No login cookie (forged callback, or replay after the cookie was consumed).
    rejected(w.decide(&browser(&cb(&state), "")), "unknown_state");
    // Someone else's state with our cookie.
    rejected(
        w.decide(&browser(&cb("AAAAAAAAAAAAAAAAAAAA"), &login_cookie)),
        "unknown_state",
    );
    // A tampered login cookie.
    let (name, value) = login_cookie.split_once('=').unwrap();
    let tampered = format!("{name}={}x", &value[..value.len() - 1]);
    rejected(w.decide(&browser(&cb(&state), &tampered)), "unknown_state");
    // The right cookie, too late.
    rejected(
        w.decide_at(&browser(&cb(&state), &login_cookie), NOW_S + 601),
        "state_mismatch",
    );
    // The IdP names another issuer (mix-up).
    rejected(
        w.decide(&browser(
            &format!("{}&iss=https%3A%2F%2Fevil", cb(&state)),
            &login_cookie,
        )),
        "issuer_mismatch",
    );
    // The IdP reports an error.
    rejected(
        w.decide(&browser("/oauth2/callback?error=access_denied&state=x", "")),
        "idp_error",
    );
    // And the right one works.
    let good = format!("{}&iss={}", cb(&state), crate::urls::encode(ISSUER));
    assert!(matches!(
        w.decide(&browser(&good, &login_cookie)),
        Decision::Exchange { .. }
    ));
}

#[test]
fn id_tokens_that_fail_any_check_end_the_login() {
    let mut w = world();
    let txn = LoginTxn {
        state: "s".into(),
        nonce: "n".into(),
        verifier: "v".into(),
        return_to: "/".into(),
        created_s: NOW_S,
    };
    let tokens = |id: String| TokenSet {
        access_token: "a".into(),
        id_token: Some(id),
        refresh_token: None,
        expires_in: None,
    };
    let g = w.gate();
    let wrong_nonce = tokens(w.id_token(Some("other"), "alice", NOW_S + 300));
    assert_eq!(
        g.finish_login(&txn, "c", &wrong_nonce, "", NOW_S, &mut Counter(0))
            .unwrap_err(),
        Failure::IdToken
    );
    let expired = tokens(w.id_token(Some("n"), "alice", NOW_S - 100));
    assert_eq!(
        g.finish_login(&txn, "c", &expired, "", NOW_S, &mut Counter(0))
            .unwrap_err(),
        Failure::IdToken
    );
    let rotated_key = ES256KeyPair::generate().with_key_id("idp-2");
    let mut c = JWTClaims {
        nonce: Some("n".into()),
        ..Claims::with_custom_claims(Map::new(), Duration::from_secs(60))
    };
    c.issuer = Some(ISSUER.into());
    let unknown = tokens(rotated_key.sign(c).unwrap());
    assert_eq!(
        g.finish_login(&txn, "c", &unknown, "", NOW_S, &mut Counter(0))
            .unwrap_err(),
        Failure::UnknownKey
    );
    w.rng = Counter(0);
}

#[test]
fn open_redirects_are_refused() {
    for bad in [
        "https://evil.com/",
        "//evil.com",
        "/\\evil.com",
        "/ok\r\nset-cookie: x",
        "evil",
        "",
    ] {
        assert_eq!(safe_return_url(bad), None, "{bad:?}");
    }
    assert_eq!(safe_return_url("/orders?id=1#x"), Some("/orders?id=1#x"));
    let mut w = world();
    for rd in ["https%3A%2F%2Fevil.com", "%2F%2Fevil.com", "%2F%5Cevil.com"] {
        let Decision::Reply(r, _) = w.decide(&browser(&format!("/oauth2/start?rd={rd}"), ""))
        else {
            panic!()
        };
        let (name, value) = cookies_of(&r)[0]
            .split_once('=')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        let txn: LoginTxn = open_json(&w.cfg.keys, &name, &value).unwrap();
        assert_eq!(txn.return_to, "/", "{rd}");
    }
}

#[test]
fn bad_sessions_are_unauthenticated_and_cleared() {
    let mut w = world();
    let cookies = w.login("/");
    let (name, value) = cookies.split_once('=').unwrap();
    for bad in [
        format!(
            "{name}={}{}",
            &value[..value.len() - 1],
            if value.ends_with('A') { 'B' } else { 'A' }
        ),
        format!("{name}={}", &value[..value.len() / 2]),
        format!("{name}=v1.k9.AAAA"),
        format!("{name}=garbage"),
    ] {
        let Decision::Reply(r, outcome) = w.decide(&api("/api", &bad)) else {
            panic!()
        };
        assert_eq!((r.status, outcome), (401, Outcome::InvalidSession), "{bad}");
        assert!(
            r.headers.iter().any(|(k, v)| k == "set-cookie"
                && v.starts_with("mw=; ")
                && v.contains("Max-Age=0"))
        );
    }
    // The whole session has expired (max lifetime 24 h).
    let Decision::Reply(r, outcome) = w.decide_at(&api("/api", &cookies), NOW_S + 86_400) else {
        panic!()
    };
    assert_eq!((r.status, outcome), (401, Outcome::ExpiredSession));
}

#[test]
fn oversized_cookie_headers_get_431() {
    let mut w = world();
    let big = format!("junk={}", "x".repeat(20_000));
    let Decision::Reply(r, Outcome::CookieTooLarge) = w.decide(&browser("/", &big)) else {
        panic!()
    };
    assert_eq!(r.status, 431);
}

#[test]
fn bypassed_paths_pass_without_spoofable_headers() {
    let mut w = world();
    let mut req = api("/healthz", "mw=x; a=1");
    req.push("x-user-id", "admin");
    let f = forwarded(w.decide(&req));
    assert!(
        f.remove.contains(&"x-user-id".to_owned())
            && f.remove.contains(&"authorization".to_owned())
    );
    assert_eq!(f.cookie, Some(Some("a=1".into())));
}

#[test]
fn one_request_refreshes_the_others_keep_the_valid_token() {
    let mut w = world();
    let cookies = w.login("/");
    let due = NOW_S + 280; // token expires at NOW+300, refresh 30 s before
    let d = w.decide_at(&api("/a", &cookies), due);
    let Decision::Refresh {
        session,
        call,
        fallback,
    } = d
    else {
        panic!("{d:?}")
    };
    assert!(
        call.body.contains("grant_type=refresh_token") && call.body.contains("refresh_token=rt-1")
    );
    assert!(
        call.headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Basic "))
    );
    assert!(
        fallback.is_some(),
        "the token is still valid if the refresh fails"
    );
    // Concurrent requests of the same session while the refresh is in flight: no second refresh.
    for _ in 0..19 {
        let f = forwarded(w.decide_at(&api("/a", &cookies), due));
        assert!(set(&f, "authorization").is_some());
    }
    // The refresh completes.
    let tokens = TokenSet {
        access_token: "at-2".into(),
        id_token: Some(w.id_token(None, "alice", due + 300)),
        refresh_token: Some("rt-2".into()),
        expires_in: Some(300),
    };
    let new = w.gate().finish_refresh(&session, &tokens, due).unwrap();
    assert_eq!(
        new.refresh_token.as_deref(),
        Some("rt-2"),
        "rotated refresh token kept"
    );
    assert_eq!(new.id, session.id);
    let sealed = w.gate().seal_session(&new, &mut Counter(50)).unwrap();
    w.slots.complete(&session.id, &sealed, due * 1000);
    // A request still carrying the old cookie adopts the new session and gets its cookie.
    let f = forwarded(w.decide_at(&api("/a", &cookies), due + 1));
    assert!(f.response_cookies.iter().any(|c| c.starts_with("mw=v1.")));
    assert_eq!(
        w.slots.claims, 21,
        "every request asked; exactly one acquired"
    );
}

#[test]
fn an_expired_token_waits_for_a_refresh_in_flight() {
    let mut w = world();
    let cookies = w.login("/");
    let Decision::Refresh { .. } = w.decide_at(&api("/a", &cookies), NOW_S + 290) else {
        panic!()
    };
    // Within the leeway the ID-token check allows, the old token is still forwarded.
    let f = forwarded(w.decide_at(&api("/a", &cookies), NOW_S + 301));
    assert!(set(&f, "authorization").is_some());
    assert_eq!(
        w.decide_at(&api("/a", &cookies), NOW_S + 300 + LEEWAY_S),
        Decision::Wait
    );
}

#[test]
fn one_leeway_for_the_id_token_check_and_the_sessions_expiry() {
    // An IdP clock behind ours: the ID token expired 30 s ago by our clock and passed the
    // check at login (60 s leeway); the next request must not end the session.
    for (t, usable) in [(0, true), (LEEWAY_S - 1, true), (LEEWAY_S, false)] {
        assert_eq!(token_usable(NOW_S, NOW_S + t), usable, "{t} s after exp");
    }
    let mut w = world();
    let cookies = w.login("/");
    let d = w.decide_at(&api("/a", &cookies), NOW_S + 330);
    let Decision::Refresh { fallback, .. } = d else {
        panic!("{d:?}")
    };
    assert!(
        fallback.is_some(),
        "still valid: forwarded if the refresh fails"
    );
}

#[test]
fn a_refresh_for_another_user_is_refused() {
    let w = world();
    let old = Session {
        id: "i".into(),
        generation: 0,
        sub: "alice".into(),
        claims: Map::new(),
        token: None,
        token_exp: 0,
        refresh_token: Some("r".into()),
        expires: NOW_S + 100,
    };
    let tokens = TokenSet {
        access_token: "a".into(),
        id_token: Some(w.id_token(None, "mallory", NOW_S + 300)),
        refresh_token: None,
        expires_in: None,
    };
    assert_eq!(
        w.gate().finish_refresh(&old, &tokens, NOW_S).unwrap_err(),
        Failure::IdToken
    );
    let no_id = TokenSet {
        id_token: None,
        ..tokens
    };
    assert_eq!(
        w.gate().finish_refresh(&old, &no_id, NOW_S).unwrap_err(),
        Failure::TokenResponse,
        "forwarding the ID token needs a new one"
    );
}

#[test]
fn without_discovery_logins_wait_but_sessions_pass() {
    let mut w = world();
    let cookies = w.login("/");
    let gate = Gate {
        cfg: &w.cfg,
        names: &w.names,
        discovery: None,
        jwks: None,
    };
    assert_eq!(
        gate.decide(
            &browser("/", ""),
            NOW_S * 1000,
            &mut w.cache,
            &mut w.rng,
            &mut w.slots
        ),
        Decision::Wait
    );
    assert!(matches!(
        gate.decide(
            &api("/", &cookies),
            NOW_S * 1000,
            &mut w.cache,
            &mut w.rng,
            &mut w.slots
        ),
        Decision::Forward(..)
    ));
}

#[test]
fn logout_clears_cookies_and_ends_the_idp_session() {
    let mut w = world();
    let cookies = w.login("/");
    let Decision::Reply(r, Outcome::Logout) = w.decide(&browser("/oauth2/logout", &cookies)) else {
        panic!()
    };
    let location = header(&r, "location").unwrap();
    assert!(location.starts_with("http://idp.test/session/end?"));
    assert!(query_param(location, "id_token_hint").is_some());
    assert_eq!(
        query_param(location, "post_logout_redirect_uri").as_deref(),
        Some("http://shop.test/")
    );
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k == "set-cookie" && v.starts_with("mw=; "))
    );
}

#[test]
fn cookie_keys_rotate_without_logging_anybody_out() {
    let mut w = world();
    let cookies = w.login("/");
    let mut rotated = world_with(|c| c["cookie_keys_env"] = "KEYS_ROTATED".into());
    assert!(matches!(
        rotated.decide(&api("/", &cookies)),
        Decision::Forward(_, Outcome::Authenticated)
    ));
    let new_cookies = rotated.login("/");
    assert!(new_cookies.contains("=v1.k2."), "the first key seals");
}

#[test]
fn minted_tokens_carry_selected_claims_and_are_cached() {
    let mut w = world_with(|c| {
        c["forward"]["token"] = "minted".into();
        c["mint"] = serde_json::json!({"alg": "ES256", "key_env": "MINT_KEY", "issuer": "https://shop.test/meshwright", "audiences": ["ecommerce"], "claims": ["email"]});
    });
    let cookies = w.login("/");
    assert!(
        cookies.contains("mw_idt="),
        "the ID token is kept for logout in a path-scoped cookie"
    );
    let f = forwarded(w.decide(&api("/", &cookies)));
    let minted = set(&f, "authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let published = w.cfg.minter.as_ref().unwrap().jwks_json.clone().unwrap();
    let jwks = parse_jwks(published.as_bytes()).unwrap();
    let v = jwks
        .verify(
            &minted,
            &Expect {
                issuer: "https://shop.test/meshwright",
                audience: "ecommerce",
                nonce: None,
                now_s: NOW_S,
                leeway_s: 0,
            },
        )
        .unwrap();
    assert_eq!(v.sub, "alice");
    assert_eq!(v.claims["email"], "alice@example.com");
    assert!(!v.claims.contains_key("groups"));
    let f2 = forwarded(w.decide_at(&api("/", &cookies), NOW_S + 10));
    assert_eq!(
        set(&f2, "authorization").unwrap(),
        format!("Bearer {minted}"),
        "minted once, reused"
    );
    let Decision::Reply(r, Outcome::Jwks) = w.decide(&api("/.well-known/meshwright/jwks.json", ""))
    else {
        panic!()
    };
    assert_eq!(r.body, published);
}

#[test]
fn valid_bearer_tokens_may_pass_when_allowed() {
    let mut w = world_with(|c| c["allow_bearer"] = true.into());
    let token = w.id_token(None, "svc", NOW_S + 60);
    let mut req = api("/api", "");
    req.push("authorization", format!("Bearer {token}"));
    let f = forwarded(w.decide(&req));
    assert_eq!(set(&f, "x-user-id"), Some("svc"));
    let mut bad = api("/api", "");
    bad.push("authorization", "Bearer e30.e30.sig");
    assert!(
        matches!(w.decide(&bad), Decision::Reply(r, Outcome::BearerRejected) if r.status == 401)
    );
}

#[test]
fn token_responses_are_checked() {
    assert_eq!(
        parse_token_response(500, b"{}").unwrap_err(),
        Failure::TokenEndpoint
    );
    assert_eq!(
        parse_token_response(200, b"<html>").unwrap_err(),
        Failure::TokenResponse
    );
    assert_eq!(
        parse_token_response(200, br#"{"access_token":"a"}"#).unwrap_err(),
        Failure::TokenResponse
    );
    assert_eq!(
        parse_token_response(200, br#"{"access_token":"a\r\nx","token_type":"Bearer"}"#)
            .unwrap_err(),
        Failure::TokenResponse
    );
    let t = parse_token_response(
        200,
        br#"{"access_token":"a","token_type":"bearer","expires_in":60,"id_token":"i"}"#,
    )
    .unwrap();
    assert_eq!(t.expires_in, Some(60));
}

#[test]
fn bad_configs_name_the_field() {
    let bad = |edit: &dyn Fn(&mut Value)| {
        let mut c = base_config();
        edit(&mut c);
        OAuth2Config::from_json(c.to_string().as_bytes(), &env).unwrap_err()
    };
    assert_eq!(bad(&|c| c["issuer"] = "not a url".into()).field, "issuer");
    assert_eq!(
        bad(&|c| c["cookie_keys_env"] = "MISSING".into()).reason,
        meshwright_shared::config::Reason::MissingEnv("MISSING".into())
    );
    assert_eq!(
        bad(&|c| c["cookie"]["name"] = "__Host-x".into()).field,
        "cookie.name"
    );
    assert_eq!(
        bad(&|c| c["scopes"] = serde_json::json!(["email"])).field,
        "scopes"
    );
    assert_eq!(
        bad(&|c| c["forward"]["token"] = "minted".into()).field,
        "forward.token"
    );
    assert_eq!(
        bad(&|c| c["callback_path"] = "oauth".into()).field,
        "callback_path"
    );
    assert_eq!(
        bad(&|c| c["logout_path"] = "/oauth2/callback".into()).field,
        "logout_path"
    );
    assert_eq!(bad(&|c| c["clientid"] = "x".into()).field, "clientid");
    assert_eq!(
        bad(&|c| c["forward"]["claim_headers"]["cookie"] = "sub".into()).field,
        "forward.claim_headers.cookie"
    );
    assert_eq!(
        bad(&|c| c["discovery"]["max_calls_in_flight"] = 0.into()).field,
        "discovery.max_calls_in_flight"
    );
}

#[cfg(not(target_arch = "wasm32"))]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_requests_never_panic(path in "/[ -~]{0,60}", cookie in "[ -~]{0,300}", accept in "[ -~]{0,20}", auth in "[ -~]{0,80}") {
            let mut w = world_with(|c| c["allow_bearer"] = true.into());
            let req: HeaderList = [(":path", path.as_str()), (":authority", "h"), ("cookie", cookie.as_str()), ("accept", accept.as_str()), ("authorization", auth.as_str())].into_iter().collect();
            let _ = w.decide(&req);
        }

        #[test]
        fn callback_parameters_never_panic(q in "[ -~]{0,120}", cookie in "mw_login_[ -~]{0,200}") {
            let mut w = world();
            let _ = w.decide(&browser(&format!("/oauth2/callback?{q}"), &cookie));
        }
    }
}

#[test]
fn token_endpoint_errors_are_read_for_the_log_and_the_counter() {
    let e = token_error(
        401,
        br#"{"error":"invalid_client","error_description":"client authentication failed\r\nX: y"}"#,
    );
    assert_eq!(e.error, "invalid_client");
    assert_eq!(
        e.to_string(),
        "status 401, error invalid_client: client authentication failedX: y",
        "no line breaks from the provider reach the log"
    );
    let e = token_error(400, br#"{"error":"slow_down"}"#);
    assert_eq!((e.error, e.code.as_deref()), ("other", Some("slow_down")));
    let e = token_error(502, b"<html>bad gateway</html>");
    assert_eq!((e.error, &e.code, &e.description), ("other", &None, &None));
    assert_eq!(e.to_string(), "status 502");
    let long = format!(
        r#"{{"error":"invalid_grant","error_description":"{}"}}"#,
        "x".repeat(500)
    );
    assert_eq!(
        token_error(400, long.as_bytes())
            .description
            .map(|d| d.len()),
        Some(200)
    );
}

#[test]
fn every_failure_has_a_label_and_a_description() {
    let mut labels: Vec<&str> = Failure::ALL.iter().map(|f| f.label()).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), Failure::ALL.len());
    assert!(Failure::ALL.iter().all(|f| !f.describe().is_empty()));
}

#[test]
fn a_callback_without_iss_is_refused_when_the_idp_always_sends_it() {
    let mut w = world();
    let Decision::Reply(r, Outcome::LoginStarted) = w.decide(&browser("/", "")) else {
        panic!("no login redirect")
    };
    let state = query_param(header(&r, "location").unwrap(), "state").unwrap();
    let login_cookie = cookies_of(&r).join("; ");
    let cb = format!("/oauth2/callback?code=c0de&state={state}");
    let d = w.decide(&browser(&cb, &login_cookie));
    let Decision::Reply(r, Outcome::CallbackRejected) = d else {
        panic!("{d:?}")
    };
    assert_eq!(r.status, 400);
    assert!(r.body.contains("issuer_mismatch"), "{}", r.body);
    // An IdP that does not advertise RFC 9207 may leave it out.
    w.discovery.iss_in_callback = false;
    let Decision::Reply(r, _) = w.decide(&browser("/", "")) else {
        panic!()
    };
    let state = query_param(header(&r, "location").unwrap(), "state").unwrap();
    let login_cookie = cookies_of(&r).join("; ");
    let cb = format!("/oauth2/callback?code=c0de&state={state}");
    assert!(matches!(
        w.decide(&browser(&cb, &login_cookie)),
        Decision::Exchange { .. }
    ));
}

#[test]
fn a_refresh_without_an_id_token_keeps_the_sessions_claims() {
    // OIDC Core §12.2: a refresh response need not carry an ID token. Forwarding the access
    // token (or a minted one), the session keeps its subject and claims.
    let mut w = world_with(|c| c["forward"]["token"] = "access_token".into());
    let cookies = w.login("/");
    let Decision::Refresh { session, .. } = w.decide_at(&api("/a", &cookies), NOW_S + 290) else {
        panic!("no refresh")
    };
    let tokens = TokenSet {
        access_token: "at-2".into(),
        id_token: None,
        refresh_token: Some("rt-2".into()),
        expires_in: Some(300),
    };
    let new = w
        .gate()
        .finish_refresh(&session, &tokens, NOW_S + 290)
        .unwrap();
    assert_eq!(new.sub, session.sub);
    assert_eq!(new.claims, session.claims);
    assert_eq!(new.claims["email"], "alice@example.com");
    assert_eq!(new.token.as_deref(), Some("at-2"));
    assert_eq!(new.token_exp, NOW_S + 290 + 300, "from expires_in");
    // Forwarding the ID token itself, one is required.
    let mut w = world();
    let cookies = w.login("/");
    let Decision::Refresh { session, .. } = w.decide_at(&api("/a", &cookies), NOW_S + 290) else {
        panic!("no refresh")
    };
    assert_eq!(
        w.gate().finish_refresh(&session, &tokens, NOW_S + 290),
        Err(Failure::TokenResponse)
    );
}

/// A login whose ID token carries only `sub` (a provider following OIDC Core §5.4): up to the
/// exchange; returns (txn, login cookie name, tokens, login cookie header).
fn login_with_bare_id_token(w: &mut World) -> (crate::session::LoginTxn, String, TokenSet, String) {
    w.discovery.userinfo_endpoint = Some(Endpoint::parse(&format!("{ISSUER}/me")).unwrap());
    let Decision::Reply(r, Outcome::LoginStarted) = w.decide(&browser("/", "")) else {
        panic!("no login redirect")
    };
    let state = query_param(header(&r, "location").unwrap(), "state").unwrap();
    let login_cookie = cookies_of(&r).join("; ");
    let cb = format!(
        "/oauth2/callback?code=c0de&state={state}&iss={}",
        crate::urls::encode(ISSUER)
    );
    let Decision::Exchange {
        txn,
        login_cookie: name,
        ..
    } = w.decide(&browser(&cb, &login_cookie))
    else {
        panic!("no exchange")
    };
    let claims = JWTClaims {
        issued_at: Some(UnixTimeStamp::from_secs(NOW_S)),
        expires_at: Some(UnixTimeStamp::from_secs(NOW_S + 300)),
        invalid_before: None,
        issuer: Some(ISSUER.into()),
        subject: Some("alice".into()),
        audiences: Some(Audiences::AsString("shop".into())),
        jwt_id: None,
        nonce: Some(txn.nonce.clone()),
        custom: Map::new(),
    };
    let tokens = TokenSet {
        access_token: "opaque-at".into(),
        id_token: Some(w.idp_key.sign(claims).unwrap()),
        refresh_token: Some("rt-1".into()),
        expires_in: Some(300),
    };
    (txn, name, tokens, login_cookie)
}

#[test]
fn claims_the_id_token_leaves_out_come_from_userinfo() {
    let mut w = world();
    let (txn, name, tokens, cookie) = login_with_bare_id_token(&mut w);
    let g = w.gate();
    let step = g
        .finish_login_with(
            &txn,
            &name,
            &tokens,
            Userinfo::NotYet,
            &cookie,
            NOW_S,
            &mut Counter(1),
        )
        .unwrap();
    let LoginStep::Userinfo(call) = step else {
        panic!("{step:?}")
    };
    assert_eq!(call.path, "/me");
    assert!(
        call.headers
            .contains(&("authorization".into(), "Bearer opaque-at".into()))
    );
    let info = br#"{"sub":"alice","email":"alice@example.com","groups":["customers"]}"#;
    let step = g
        .finish_login_with(
            &txn,
            &name,
            &tokens,
            Userinfo::Answer {
                status: 200,
                body: info,
            },
            &cookie,
            NOW_S,
            &mut Counter(2),
        )
        .unwrap();
    let LoginStep::Done {
        reply,
        missing_claims,
    } = step
    else {
        panic!("{step:?}")
    };
    assert!(missing_claims.is_empty(), "{missing_claims:?}");
    // The session forwards the UserInfo claims.
    let cookies = cookies_of(&reply).join("; ");
    let f = forwarded(w.decide(&api("/a", &cookies)));
    assert_eq!(set(&f, "x-user-email"), Some("alice@example.com"));
    assert_eq!(set(&f, "x-user-groups"), Some("customers"));
}

#[test]
fn a_userinfo_answer_about_someone_else_ends_the_login() {
    let mut w = world();
    let (txn, name, tokens, cookie) = login_with_bare_id_token(&mut w);
    let r = w.gate().finish_login_with(
        &txn,
        &name,
        &tokens,
        Userinfo::Answer {
            status: 200,
            body: br#"{"sub":"mallory","email":"m@example.com"}"#,
        },
        &cookie,
        NOW_S,
        &mut Counter(2),
    );
    assert_eq!(r, Err(Failure::Userinfo));
    // An unusable answer: the login goes on, the missing claims named.
    let step = w
        .gate()
        .finish_login_with(
            &txn,
            &name,
            &tokens,
            Userinfo::Answer {
                status: 500,
                body: b"",
            },
            &cookie,
            NOW_S,
            &mut Counter(3),
        )
        .unwrap();
    let LoginStep::Done { missing_claims, .. } = step else {
        panic!()
    };
    assert!(
        missing_claims.contains(&"email".to_owned()),
        "{missing_claims:?}"
    );
}

#[test]
fn a_refresh_takes_current_claims_from_userinfo_when_the_id_token_lacks_them() {
    let mut w = world_with(|c| c["forward"]["token"] = "access_token".into());
    let (txn, name, tokens, cookie) = login_with_bare_id_token(&mut w);
    let info = br#"{"sub":"alice","email":"alice@example.com","groups":["customers"]}"#;
    let answer = Userinfo::Answer {
        status: 200,
        body: info,
    };
    let step = w
        .gate()
        .finish_login_with(
            &txn,
            &name,
            &tokens,
            answer,
            &cookie,
            NOW_S,
            &mut Counter(2),
        )
        .unwrap();
    let LoginStep::Done { reply, .. } = step else {
        panic!("{step:?}")
    };
    let cookies = cookies_of(&reply).join("; ");
    let at = NOW_S + 290;
    let Decision::Refresh { session, .. } = w.decide_at(&api("/a", &cookies), at) else {
        panic!("no refresh")
    };
    // A refresh response without an ID token: UserInfo is asked, with the new access token.
    let refreshed = TokenSet {
        access_token: "at-2".into(),
        id_token: None,
        refresh_token: Some("rt-2".into()),
        expires_in: Some(300),
    };
    let g = w.gate();
    let step = g
        .finish_refresh_with(&session, &refreshed, Userinfo::NotYet, at)
        .unwrap();
    let RefreshStep::Userinfo(call) = step else {
        panic!("{step:?}")
    };
    assert_eq!(call.path, "/me");
    assert!(
        call.headers
            .contains(&("authorization".into(), "Bearer at-2".into())),
        "{:?}",
        call.headers
    );
    // Its answer is current: a changed email replaces the session's; a claim it leaves out stays.
    let changed = Userinfo::Answer {
        status: 200,
        body: br#"{"sub":"alice","email":"alice@new.example"}"#,
    };
    let step = g
        .finish_refresh_with(&session, &refreshed, changed, at)
        .unwrap();
    let RefreshStep::Done(new) = step else {
        panic!("{step:?}")
    };
    assert_eq!(new.claims["email"], "alice@new.example");
    assert_eq!(new.claims["groups"], serde_json::json!(["customers"]));
    assert_eq!(new.generation, session.generation + 1);
    assert_eq!(new.token.as_deref(), Some("at-2"));
    // An answer about someone else ends the refresh; an unusable one keeps the claims.
    let other = Userinfo::Answer {
        status: 200,
        body: br#"{"sub":"mallory","email":"m@example.com"}"#,
    };
    assert_eq!(
        g.finish_refresh_with(&session, &refreshed, other, at),
        Err(Failure::Userinfo)
    );
    let unusable = Userinfo::Answer {
        status: 503,
        body: b"",
    };
    let step = g
        .finish_refresh_with(&session, &refreshed, unusable, at)
        .unwrap();
    let RefreshStep::Done(kept) = step else {
        panic!("{step:?}")
    };
    assert_eq!(kept.claims, session.claims);
    // A refresh whose ID token has every claim the config uses needs no UserInfo call.
    let full = TokenSet {
        id_token: Some(w.id_token(None, "alice", at + 300)),
        ..refreshed
    };
    let step = g
        .finish_refresh_with(&session, &full, Userinfo::NotYet, at)
        .unwrap();
    assert!(matches!(step, RefreshStep::Done(_)), "{step:?}");
}

#[test]
fn a_cookie_whose_refresh_token_is_spent_never_refreshes_again() {
    let mut w = world();
    let cookies = w.login("/");
    let Decision::Refresh { session, .. } = w.decide_at(&api("/a", &cookies), NOW_S + 280) else {
        panic!("no refresh")
    };
    // The refresh completes: generation 1 is the newest; its publication (the slot) then ends.
    w.slots
        .supersede(&session.id, session.generation + 1, session.expires, 0);
    w.slots.release(&session.id);
    // The old cookie, its token still valid: forwarded, no second refresh.
    let f = forwarded(w.decide_at(&api("/a", &cookies), NOW_S + 290));
    assert!(set(&f, "authorization").is_some());
    // Expired: a clean login, no refresh grant with the spent token.
    let d = w.decide_at(&api("/a", &cookies), NOW_S + 300 + LEEWAY_S);
    let Decision::Reply(r, Outcome::ExpiredSession) = d else {
        panic!("{d:?}")
    };
    assert_eq!(r.status, 401);
    // The refreshed session is generation 1, and refreshes as usual.
    let tokens = TokenSet {
        access_token: "at-2".into(),
        id_token: Some(w.id_token(None, "alice", NOW_S + 580)),
        refresh_token: Some("rt-2".into()),
        expires_in: Some(300),
    };
    let new = w
        .gate()
        .finish_refresh(&session, &tokens, NOW_S + 280)
        .unwrap();
    assert_eq!(new.generation, 1);
    assert!(!w.slots.superseded(&new.id, new.generation, 0));
}

#[test]
fn a_refresh_that_came_back_publishes_the_new_session_or_spends_the_refused_one() {
    let mut w = world();
    let cookies = w.login("/");
    let at = NOW_S + 290;
    let req = api("/a", &cookies);
    let Decision::Refresh {
        session, fallback, ..
    } = w.decide_at(&req, at)
    else {
        panic!("no refresh")
    };
    assert!(fallback.is_some(), "the token is still valid");
    let g = w.gate();
    let now_ms = at * 1000;

    // Refused (400: rotated by another replica) while the token is valid: the request goes
    // on, the slot is free, and the old generation is spent for good.
    let mut slots = Slots::default();
    let refused = Err(Failure::TokenEndpoint);
    let a = g.after_refresh(
        &session,
        refused,
        Some(400),
        fallback.clone(),
        &req,
        now_ms,
        &mut Counter(9),
        &mut slots,
    );
    assert!(
        matches!(a.decision, Decision::Forward(_, Outcome::Authenticated)),
        "{:?}",
        a.decision
    );
    assert_eq!(a.failure, Some(Failure::TokenEndpoint));
    assert!(a.cache.is_none());
    assert!(slots.superseded(&session.id, session.generation, now_ms));
    assert!(!slots.state.contains_key(&session.id), "released");

    // A transient failure (the IdP answered 503): the token is not spent.
    let mut slots = Slots::default();
    let transient = Err(Failure::TokenEndpoint);
    let a = g.after_refresh(
        &session,
        transient,
        Some(503),
        fallback,
        &req,
        now_ms,
        &mut Counter(9),
        &mut slots,
    );
    assert!(matches!(a.decision, Decision::Forward(..)));
    assert!(!slots.superseded(&session.id, session.generation, now_ms));

    // Refused once the token has expired: the session ends — an API call gets 401 and its
    // cookies cleared, a browser is sent to log in.
    let mut slots = Slots::default();
    let a = g.after_refresh(
        &session,
        Err(Failure::TokenEndpoint),
        Some(401),
        None,
        &req,
        now_ms,
        &mut Counter(9),
        &mut slots,
    );
    let Decision::Reply(r, Outcome::ExpiredSession) = &a.decision else {
        panic!("{:?}", a.decision)
    };
    assert_eq!(r.status, 401);
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k == "set-cookie" && v.contains("Max-Age=0"))
    );
    let nav = browser("/orders", &cookies);
    let a = g.after_refresh(
        &session,
        Err(Failure::IdToken),
        None,
        None,
        &nav,
        now_ms,
        &mut Counter(9),
        &mut slots,
    );
    assert!(
        matches!(&a.decision, Decision::Reply(r, Outcome::LoginStarted) if r.status == 302),
        "{:?}",
        a.decision
    );

    // Success: the new session in the response's cookies, published for the old cookie's
    // requests, its generation recorded, kept in the cache.
    let tokens = TokenSet {
        access_token: "at-2".into(),
        id_token: Some(w.id_token(None, "alice", at + 300)),
        refresh_token: Some("rt-2".into()),
        expires_in: Some(300),
    };
    let new = g.finish_refresh(&session, &tokens, at).unwrap();
    let mut slots = Slots::default();
    let a = g.after_refresh(
        &session,
        Ok(new.clone()),
        Some(200),
        None,
        &req,
        now_ms,
        &mut Counter(9),
        &mut slots,
    );
    let Decision::Forward(f, Outcome::Authenticated) = &a.decision else {
        panic!("{:?}", a.decision)
    };
    assert!(
        f.response_cookies
            .iter()
            .any(|c| c.starts_with(&format!("{}=", w.names.session)))
    );
    assert!(a.failure.is_none());
    let (sealed, entry) = a.cache.expect("kept in the cache");
    assert_eq!(entry.session, new);
    assert_eq!(
        slots.state.get(&session.id),
        Some(&Claim::Refreshed(sealed))
    );
    assert!(
        slots.superseded(&session.id, session.generation, now_ms),
        "the old cookie is superseded"
    );
    assert!(!slots.superseded(&session.id, new.generation, now_ms));
}

#[test]
fn a_failed_login_is_502_when_the_idp_failed_and_401_otherwise() {
    assert_eq!(Failure::TokenEndpoint.login_reply().status, 502);
    assert_eq!(Failure::JwksUnavailable.login_reply().status, 502);
    for f in Failure::ALL {
        let r = f.login_reply();
        assert!(
            r.body.contains(&format!(r#""reason":"{}""#, f.label())),
            "{}",
            r.body
        );
        if !matches!(f, Failure::TokenEndpoint | Failure::JwksUnavailable) {
            assert_eq!(r.status, 401, "{f:?}");
        }
    }
}

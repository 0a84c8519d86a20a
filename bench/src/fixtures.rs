//! What the benchmark's requests carry, made with the filters' own code: a sealed OAuth2 session
//! cookie (the filter's sealing code and the local key ring), the JWT the gateway would mint
//! (the filter's minter and the local signing key), the A/B sticky cookie (the filter's signing
//! code), and Envoy's own oauth2 cookies (computed the way Envoy computes them).

use crate::native;
use anyhow::{Context, Result};
use meshwright_ab::AbConfig;
use meshwright_ab::bucket::choose;
use meshwright_ab::sticky::{Entry, encode};
use meshwright_oauth2::mint::Minter;
use meshwright_oauth2::seal::KeyRing;
use meshwright_oauth2::session::{Session, seal_json};
use meshwright_shared::config::Path as ConfigPath;
use meshwright_testbed::wasmplugin::{Overlay, WasmPlugin, merge_patch};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The user every benchmark request belongs to.
pub const SUB: &str = "alice";
pub const EMAIL: &str = "alice@example.com";
/// The anonymous A/B id cookie the Lua reference (and the wasm filter configured like it) reads.
pub const AB_UID: &str = "u-1234567890";
/// The session cookie's name (plain HTTP on loopback: no `__Host-` prefix, no Secure).
pub const SESSION_COOKIE: &str = "meshwright";
/// Gateway request path: the A/B experiment's prefix, not in the OAuth2 bypass list.
pub const GATEWAY_PATH: &str = "/services/product/api/products";
/// Sidecar request path (inbound to product).
pub const SIDECAR_PATH: &str = "/api/products";

/// A request as the load generator sends it.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Bytes of the request headers h2load adds (a rough size, for the report).
    pub fn header_bytes(&self) -> usize {
        self.headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum()
    }
}

/// The kinds of request the variants receive. Each variant's cost is measured against a bare
/// Envoy receiving exactly the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// A logged-in browser at the gateway: the meshwright session cookie and the A/B sticky
    /// cookie.
    Session,
    /// A logged-in browser at the gateway with Envoy oauth2's cookies.
    EnvoyCookies,
    /// A request carrying the gateway's JWT, the A/B cookies and a baggage header.
    Bearer,
    /// A call between services, inbound at the callee's sidecar.
    Sidecar,
    /// The shop's own call: store → product for a logged-in user's page, inbound at product's
    /// sidecar, with the headers store propagates (`shop/src/client.rs`: the gateway's JWT,
    /// baggage with the A/B assignment, the trace context, the request id) and those the
    /// caller's sidecar adds.
    Shop,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::Session,
        Profile::EnvoyCookies,
        Profile::Bearer,
        Profile::Sidecar,
        Profile::Shop,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::EnvoyCookies => "envoy-cookies",
            Self::Bearer => "bearer",
            Self::Sidecar => "sidecar",
            Self::Shop => "shop",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Session => "gateway request with a meshwright session cookie",
            Self::EnvoyCookies => "gateway request with Envoy oauth2's cookies",
            Self::Bearer => "request with the gateway's JWT and A/B cookies",
            Self::Sidecar => "service-to-service request at a sidecar",
            Self::Shop => "the shop's store → product call at product's sidecar",
        }
    }
}

/// Everything derived once per run.
pub struct Fixtures {
    /// wasmplugins/local/overlay.yaml without its pluginConfig patches (the benchmark applies
    /// its own: see [`Fixtures::oauth2_patch`]).
    pub overlay: Overlay,
    pub host_env: BTreeMap<String, String>,
    pub idp_issuer: String,
    /// `meshwright=<sealed session>`.
    pub session_cookie: String,
    /// `mw_ab=<signed assignment of SUB>` (the shipped sticky cookie).
    pub ab_sticky_cookie: String,
    /// An ES256 JWT for SUB, minted with the shipped `mint` settings (1 h lifetime).
    pub jwt: String,
    /// The minter's public keys (what Istio's RequestAuthentication fetches).
    pub jwks: String,
    pub envoy_oauth2: native::EnvoyOauth2Cookies,
    /// The fault filter's signing key (header-control probes).
    pub fault_key: String,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn env_of(map: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| map.get(k).cloned()
}

impl Fixtures {
    pub fn new(
        idp_issuer: &str,
        shipped_oauth2: &WasmPlugin,
        shipped_ab: &WasmPlugin,
    ) -> Result<Self> {
        let mut overlay = Overlay::local()?;
        overlay.plugin_config.clear();
        let host_env = overlay.host_env.clone();
        let get = |k: &str| {
            host_env
                .get(k)
                .cloned()
                .with_context(|| format!("{k} is not in wasmplugins/local/overlay.yaml host_env"))
        };
        let now = now_s();

        // The session, sealed by the filter's own code with the local key ring.
        let ring = KeyRing::parse(&get("MESHWRIGHT_OAUTH2_COOKIE_KEYS")?)
            .map_err(|e| anyhow::anyhow!("MESHWRIGHT_OAUTH2_COOKIE_KEYS: {e}"))?;
        let mut claims = serde_json::Map::new();
        claims.insert("email".into(), json!(EMAIL));
        claims.insert("name".into(), json!("Alice Example"));
        claims.insert("groups".into(), json!(["customers"]));
        let session = Session {
            id: "bench-2f6c1e9a4d7b".into(),
            generation: 0,
            sub: SUB.into(),
            claims: claims.clone(),
            token: None,
            // Far away: the hot path never refreshes during a run.
            token_exp: now + 30 * 86_400,
            refresh_token: Some("rt-8Jq3vV0xYlq7mA2cN5pZ1sK9dF4gH6jL0wE3rT7uI".into()),
            expires: now + 8 * 3600,
        };
        let sealed = seal_json(&ring, SESSION_COOKIE, &session, [7; 24])
            .context("sealing the benchmark session")?;

        // The JWT the gateway forwards, minted with the shipped mint settings.
        let mint_spec = shipped_oauth2
            .plugin_config()
            .get("mint")
            .cloned()
            .context("wasmplugins/oauth2.yaml has no mint section")?;
        let mut mint_spec = mint_spec;
        if let Some(m) = mint_spec.as_object_mut() {
            m.insert("ttl_s".into(), json!(3600));
        }
        let spec: meshwright_oauth2::config::MintSpec =
            serde_json::from_value(mint_spec).context("the shipped mint section")?;
        let minter = Minter::from_spec(&ConfigPath::root(), &spec, &env_of(&host_env))
            .map_err(|e| anyhow::anyhow!("minter: {e}"))?;
        let jwt = minter.mint(SUB, &claims, now).context("minting the JWT")?;
        let jwks = minter.jwks_json.clone().context("the minter has no JWKS")?;

        // The A/B sticky cookie a returning user carries.
        let ab_key = get("MESHWRIGHT_AB_SIGNING_KEY")?;
        let cfg = ab_config(&shipped_ab.plugin_config())?;
        let sticky_name = shipped_ab
            .plugin_config()
            .pointer("/sticky/name")
            .and_then(Value::as_str)
            .unwrap_or("mw_ab")
            .to_owned();
        let entries: Vec<Entry> = cfg
            .experiments
            .iter()
            .filter_map(|e| {
                let i = choose(e, SUB)?;
                Some(Entry {
                    experiment: e.name.clone(),
                    version: e.version,
                    variant: e.variants.get(i)?.name.clone(),
                })
            })
            .collect();
        let ab_sticky_cookie = format!("{sticky_name}={}", encode(ab_key.as_bytes(), &entries));

        // Envoy's oauth2 cookies: its access token is the same JWT; an ID token of similar size.
        let mut id_claims = claims;
        id_claims.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
        let id_token = minter
            .mint(SUB, &id_claims, now)
            .context("minting the ID token")?;
        let envoy_oauth2 = native::EnvoyOauth2Cookies::new(
            &jwt,
            &id_token,
            "rt-8Jq3vV0xYlq7mA2cN5pZ1sK9dF4gH6jL0wE3rT7uI",
            now + 30 * 86_400,
        )?;

        Ok(Self {
            overlay,
            idp_issuer: idp_issuer.to_owned(),
            session_cookie: format!("{SESSION_COOKIE}={sealed}"),
            ab_sticky_cookie,
            jwt,
            jwks,
            envoy_oauth2,
            fault_key: get("MESHWRIGHT_FAULT_SIGNING_KEY")?,
            host_env,
        })
    }

    /// The request a variant of `profile` receives.
    pub fn request(&self, profile: Profile) -> Request {
        let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let accept = h("accept", "application/json");
        match profile {
            Profile::Session => Request {
                path: GATEWAY_PATH.into(),
                headers: vec![
                    accept,
                    h(
                        "cookie",
                        &format!(
                            "theme=dark; {}; {}",
                            self.ab_sticky_cookie, self.session_cookie
                        ),
                    ),
                ],
            },
            Profile::EnvoyCookies => Request {
                path: GATEWAY_PATH.into(),
                headers: vec![
                    accept,
                    h(
                        "cookie",
                        &format!("theme=dark; {}", self.envoy_oauth2.cookie_header),
                    ),
                ],
            },
            Profile::Bearer => Request {
                path: GATEWAY_PATH.into(),
                headers: vec![
                    accept,
                    h("authorization", &format!("Bearer {}", self.jwt)),
                    h(
                        "cookie",
                        &format!("theme=dark; ab_uid={AB_UID}; {}", self.ab_sticky_cookie),
                    ),
                    h("baggage", "tenant=acme"),
                ],
            },
            Profile::Sidecar => Request {
                path: SIDECAR_PATH.into(),
                headers: vec![accept, h("x-envoy-attempt-count", "1")],
            },
            Profile::Shop => Request {
                path: SIDECAR_PATH.into(),
                headers: vec![
                    accept,
                    h("user-agent", "meshwright-shop/0.1"),
                    h("authorization", &format!("Bearer {}", self.jwt)),
                    h("baggage", "ab.product=v2"),
                    h(
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                    h("x-request-id", "0b6e4d8e-5f3c-4b0e-9a3e-2d1c8f7a6b5d"),
                    h("x-forwarded-proto", "http"),
                    h("x-envoy-attempt-count", "1"),
                ],
            },
        }
    }

    /// The local-run settings of the OAuth2 filter for the benchmark: this run's IdP (only
    /// discovery at start; a valid session never calls it), plain-HTTP cookie, and the shipped
    /// bypass list (the local overlay's extra bypass of the product API would skip the very hot
    /// path measured here).
    pub fn oauth2_patch(&self) -> Value {
        json!({
            "issuer": self.idp_issuer,
            "idp_cluster": crate::variants::IDP_CLUSTER,
            "redirect_uri": null,
            "post_logout_redirect_uri": "/",
            "cookie": {"name": SESSION_COOKIE, "secure": false},
        })
    }

    /// `config` with [`Self::oauth2_patch`] applied.
    pub fn patched_oauth2(&self, config: &Value) -> Value {
        let mut c = config.clone();
        merge_patch(&mut c, &self.oauth2_patch());
        c
    }
}

/// The validated A/B config of a plugin config.
pub fn ab_config(config: &Value) -> Result<AbConfig> {
    AbConfig::from_json(config.to_string().as_bytes())
        .map_err(|e| anyhow::anyhow!("A/B config: {e}"))
}

/// What the A/B filter configured with `config` writes for a user identified as `id`:
/// (header, variant) per experiment the user is in.
pub fn ab_expected(config: &Value, id: &str) -> Result<Vec<(String, String)>> {
    let cfg = ab_config(config)?;
    Ok(cfg
        .experiments
        .iter()
        .filter_map(|e| {
            let i = choose(e, id)?;
            Some((e.header.clone(), e.variants.get(i)?.name.clone()))
        })
        .collect())
}

//! The OAuth2 filter's configuration: wire format (`pluginConfig`) and validation into the
//! runtime [`OAuth2Config`]. Secrets (client secret, cookie keys, minting key) are read from the
//! environment through an injected lookup, never logged. Every field: docs/oauth2.md.

use crate::mint::{MintAlg, Minter};
use crate::seal::KeyRing;
use crate::urls::HttpUrl;
use meshwright_shared::config::{ConfigError, Path, Reason, parse_json};
use meshwright_shared::matcher::{RequestMatchSpec, RequestMatcher};
use meshwright_shared::validate::env_name;
use serde::Deserialize;
use std::collections::BTreeMap;

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}
fn default_callback() -> String {
    "/oauth2/callback".into()
}
fn default_start() -> String {
    "/oauth2/start".into()
}
fn default_logout() -> String {
    "/oauth2/logout".into()
}
fn default_post_logout() -> String {
    "/".into()
}
fn default_header() -> String {
    "authorization".into()
}
const fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2ConfigSpec {
    /// The OpenID Provider's issuer URL; discovery is fetched from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Envoy cluster through which the proxy reaches the IdP (Istio:
    /// `outbound|443||idp.example.com`, with a ServiceEntry).
    pub idp_cluster: String,
    pub client_id: String,
    /// Discouraged: prefer `client_secret_env`.
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth: AuthMethod,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Absolute redirect URI registered at the IdP; default: the request's scheme and host
    /// with `callback_path`.
    pub redirect_uri: Option<String>,
    #[serde(default = "default_callback")]
    pub callback_path: String,
    #[serde(default = "default_start")]
    pub start_path: String,
    #[serde(default = "default_logout")]
    pub logout_path: String,
    #[serde(default = "default_post_logout")]
    pub post_logout_redirect_uri: String,
    /// Environment variable with the cookie key ring `kid:base64key,...` (first seals).
    pub cookie_keys_env: String,
    #[serde(default)]
    pub cookie: CookieSpec,
    #[serde(default)]
    pub forward: ForwardSpec,
    pub mint: Option<MintSpec>,
    #[serde(default)]
    pub refresh: RefreshSpec,
    #[serde(default)]
    pub session: SessionSpec,
    /// Requests that pass without a session (health checks, static assets).
    #[serde(default)]
    pub bypass: Vec<RequestMatchSpec>,
    /// Let requests that carry a valid Bearer token (signed by the IdP) pass without a session.
    #[serde(default)]
    pub allow_bearer: bool,
    #[serde(default)]
    pub discovery: DiscoverySpec,
    /// Larger `Cookie` headers are refused with 431.
    pub max_cookie_header_bytes: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

pub use meshwright_shared::cookie::SameSite;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSpec {
    pub name: String,
    #[serde(default = "yes")]
    pub secure: bool,
    #[serde(default = "yes")]
    pub http_only: bool,
    #[serde(default)]
    pub same_site: SameSite,
    #[serde(default = "slash")]
    pub path: String,
    pub domain: Option<String>,
}

fn slash() -> String {
    "/".into()
}

impl Default for CookieSpec {
    fn default() -> Self {
        Self {
            name: "__Host-meshwright".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForwardToken {
    #[default]
    IdToken,
    AccessToken,
    Minted,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    #[serde(default)]
    pub token: ForwardToken,
    /// Header that carries `Bearer <token>` upstream.
    #[serde(default = "default_header")]
    pub header: String,
    /// Upstream header → claim (`x-user-email: email`). Client-sent copies are removed.
    #[serde(default)]
    pub claim_headers: BTreeMap<String, String>,
}

impl Default for ForwardSpec {
    fn default() -> Self {
        Self {
            token: ForwardToken::IdToken,
            header: default_header(),
            claim_headers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintSpec {
    pub alg: MintAlg,
    /// Environment variable with the signing key: PEM (PKCS#8) for ES256, base64 for HS512.
    pub key_env: String,
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub ttl_s: Option<u64>,
    /// Claims copied from the ID token into the minted token (`sub` is always copied).
    #[serde(default = "default_mint_claims")]
    pub claims: Vec<String>,
    /// Where the public keys are served (ES256), for Istio's RequestAuthentication.
    pub jwks_path: Option<String>,
}

fn default_mint_claims() -> Vec<String> {
    ["email", "groups", "name"].map(String::from).to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub before_expiry_s: Option<u64>,
}

impl Default for RefreshSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            before_expiry_s: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// A session ends this long after login, whatever refreshes happen.
    pub max_lifetime_s: Option<u64>,
    /// Opened sessions remembered per worker (no AEAD or JSON work when one comes back).
    pub cache_entries: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySpec {
    /// How long a request that needs the IdP waits for discovery before a 503.
    pub wait_ms: Option<u64>,
    pub refresh_s: Option<u64>,
    /// Timeout of each call to the IdP.
    pub timeout_ms: Option<u32>,
    /// Fewest seconds between two JWKS fetches caused by an unknown `kid`.
    pub jwks_min_refetch_s: Option<u64>,
    /// Request-driven IdP calls (code exchanges, refreshes, UserInfo, on-demand JWKS) in flight
    /// per worker; more are shed.
    pub max_calls_in_flight: Option<usize>,
}

/// The validated configuration, built once per `on_configure`.
#[derive(Debug)]
pub struct OAuth2Config {
    pub issuer: String,
    pub idp_cluster: String,
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: AuthMethod,
    pub scopes: String,
    pub redirect_uri: Option<String>,
    pub callback_path: String,
    pub start_path: String,
    pub logout_path: String,
    pub post_logout_redirect_uri: String,
    pub keys: KeyRing,
    pub cookie: CookieSpec,
    pub forward_token: ForwardToken,
    pub forward_header: String,
    pub claim_headers: Vec<(String, String)>,
    pub minter: Option<Minter>,
    pub refresh_enabled: bool,
    pub refresh_before_s: u64,
    pub max_lifetime_s: u64,
    pub cache_entries: usize,
    pub bypass: Vec<RequestMatcher>,
    pub allow_bearer: bool,
    pub discovery_wait_ms: u64,
    pub discovery_refresh_s: u64,
    pub call_timeout_ms: u32,
    pub jwks_min_refetch_s: u64,
    pub max_calls_in_flight: usize,
    pub max_cookie_header_bytes: usize,
    /// Claims a session keeps (for claim headers and minting).
    pub kept_claims: Vec<String>,
}

impl OAuth2Config {
    /// Parses, validates, and reads the secrets through `env`.
    pub fn from_json(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        parse_json::<OAuth2ConfigSpec>(bytes)?.compile(env)
    }
}

fn absolute_url(field: &Path, s: &str) -> Result<HttpUrl, ConfigError> {
    HttpUrl::parse(s).ok_or_else(|| {
        ConfigError::invalid(
            field,
            format!("`{s}` is not an absolute http(s) URL with an ASCII host"),
        )
    })
}

fn local_path(field: &Path, s: &str) -> Result<String, ConfigError> {
    if !s.starts_with('/') || s.starts_with("//") || s.contains(['?', '#', '\r', '\n', ' ']) {
        return Err(ConfigError::invalid(
            field,
            format!("`{s}` must be a path starting with one '/', without query"),
        ));
    }
    Ok(s.to_owned())
}

fn secret(
    field: &Path,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    env_name(field, name)?;
    env(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError::new(field, Reason::MissingEnv(name.to_owned())))
}

fn header_name(field: &Path, s: &str) -> Result<String, ConfigError> {
    let lower = s.to_ascii_lowercase();
    if lower.is_empty()
        || lower.starts_with(':')
        || !lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::invalid(
            field,
            format!("`{s}` is not a header name"),
        ));
    }
    Ok(lower)
}

impl OAuth2ConfigSpec {
    pub fn compile(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OAuth2Config, ConfigError> {
        let root = Path::root();
        let issuer_url = absolute_url(&root.key("issuer"), &self.issuer)?;
        if issuer_url.path_and_query.contains('?') || self.issuer.contains('#') {
            return Err(ConfigError::invalid(
                root.key("issuer"),
                "an issuer has no query or fragment",
            ));
        }
        if self.idp_cluster.is_empty() {
            return Err(ConfigError::invalid(root.key("idp_cluster"), "required"));
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::invalid(root.key("client_id"), "required"));
        }
        let client_secret = match (&self.client_secret, &self.client_secret_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    root.key("client_secret"),
                    "set client_secret or client_secret_env, not both",
                ));
            }
            (Some(s), None) if !s.is_empty() => s.clone(),
            (None, Some(name)) => secret(&root.key("client_secret_env"), name, env)?,
            _ => {
                return Err(ConfigError::invalid(
                    root.key("client_secret_env"),
                    "required (or client_secret)",
                ));
            }
        };
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(ConfigError::invalid(
                root.key("scopes"),
                "must include `openid`",
            ));
        }
        if let Some((i, _)) = self
            .scopes
            .iter()
            .enumerate()
            .find(|(_, s)| s.is_empty() || s.contains([' ', '"', '\\']))
        {
            return Err(ConfigError::invalid(
                root.key("scopes").index(i),
                "not a scope token",
            ));
        }
        let redirect_uri = self
            .redirect_uri
            .as_deref()
            .map(|u| absolute_url(&root.key("redirect_uri"), u).map(|u| u.as_string()))
            .transpose()?;
        let callback_path = local_path(&root.key("callback_path"), &self.callback_path)?;
        let start_path = local_path(&root.key("start_path"), &self.start_path)?;
        let logout_path = local_path(&root.key("logout_path"), &self.logout_path)?;
        let post_logout_redirect_uri = if self.post_logout_redirect_uri.starts_with('/') {
            local_path(
                &root.key("post_logout_redirect_uri"),
                &self.post_logout_redirect_uri,
            )?
        } else {
            absolute_url(
                &root.key("post_logout_redirect_uri"),
                &self.post_logout_redirect_uri,
            )?
            .as_string()
        };
        let keys_field = root.key("cookie_keys_env");
        let keys =
            KeyRing::parse(&secret(&keys_field, &self.cookie_keys_env, env)?).map_err(|e| {
                ConfigError::invalid(
                    &keys_field,
                    format!("the key ring in `{}`: {e}", self.cookie_keys_env),
                )
            })?;

        let cf = root.key("cookie");
        let c = &self.cookie;
        local_path(&cf.key("path"), &c.path)?;
        meshwright_shared::cookie::CookieAttrs::validate(
            &cf,
            &c.name,
            c.secure,
            c.http_only,
            c.same_site,
            &c.path,
            c.domain.as_deref(),
        )?;

        let ff = root.key("forward");
        let forward_header = header_name(&ff.key("header"), &self.forward.header)?;
        let mut claim_headers = Vec::new();
        for (h, claim) in &self.forward.claim_headers {
            let name = header_name(&ff.key("claim_headers").key(h), h)?;
            if name == forward_header || name == "cookie" || name == "host" {
                return Err(ConfigError::invalid(
                    ff.key("claim_headers").key(h),
                    "cannot be a claim header",
                ));
            }
            claim_headers.push((name, claim.clone()));
        }
        let minter = self
            .mint
            .as_ref()
            .map(|m| Minter::from_spec(&root.key("mint"), m, env))
            .transpose()?;
        if self.forward.token == ForwardToken::Minted && minter.is_none() {
            return Err(ConfigError::invalid(
                ff.key("token"),
                "`minted` needs a `mint` section",
            ));
        }
        let mut kept_claims: Vec<String> = claim_headers.iter().map(|(_, c)| c.clone()).collect();
        if let Some(m) = &self.mint {
            kept_claims.extend(m.claims.iter().cloned());
        }
        kept_claims.sort();
        kept_claims.dedup();

        let max_lifetime_s = self.session.max_lifetime_s.unwrap_or(86_400);
        if !(60..=30 * 86_400).contains(&max_lifetime_s) {
            return Err(ConfigError::out_of_range(
                root.key("session").key("max_lifetime_s"),
                60,
                30 * 86_400,
                max_lifetime_s,
            ));
        }
        let cache_entries = self.session.cache_entries.unwrap_or(10_000);
        if !(1..=1_000_000).contains(&cache_entries) {
            return Err(ConfigError::out_of_range(
                root.key("session").key("cache_entries"),
                1,
                1_000_000,
                cache_entries,
            ));
        }
        let refresh_before_s = self.refresh.before_expiry_s.unwrap_or(60);
        if refresh_before_s > 3600 {
            return Err(ConfigError::out_of_range(
                root.key("refresh").key("before_expiry_s"),
                0,
                3600,
                refresh_before_s,
            ));
        }
        let bypass = self
            .bypass
            .iter()
            .enumerate()
            .map(|(i, b)| b.compile(&root.key("bypass").index(i)))
            .collect::<Result<_, _>>()?;
        let df = root.key("discovery");
        let discovery_wait_ms = self.discovery.wait_ms.unwrap_or(5_000);
        if discovery_wait_ms > 60_000 {
            return Err(ConfigError::out_of_range(
                df.key("wait_ms"),
                0,
                60_000,
                discovery_wait_ms,
            ));
        }
        let discovery_refresh_s = self.discovery.refresh_s.unwrap_or(3_600);
        if !(10..=86_400).contains(&discovery_refresh_s) {
            return Err(ConfigError::out_of_range(
                df.key("refresh_s"),
                10,
                86_400,
                discovery_refresh_s,
            ));
        }
        let call_timeout_ms = self.discovery.timeout_ms.unwrap_or(5_000);
        if !(100..=60_000).contains(&call_timeout_ms) {
            return Err(ConfigError::out_of_range(
                df.key("timeout_ms"),
                100,
                60_000,
                call_timeout_ms,
            ));
        }
        let jwks_min_refetch_s = self.discovery.jwks_min_refetch_s.unwrap_or(30);
        if jwks_min_refetch_s > 3600 {
            return Err(ConfigError::out_of_range(
                df.key("jwks_min_refetch_s"),
                0,
                3600,
                jwks_min_refetch_s,
            ));
        }
        let max_calls_in_flight = self.discovery.max_calls_in_flight.unwrap_or(64);
        if !(1..=10_000).contains(&max_calls_in_flight) {
            return Err(ConfigError::out_of_range(
                df.key("max_calls_in_flight"),
                1,
                10_000,
                max_calls_in_flight,
            ));
        }
        let max_cookie_header_bytes = self.max_cookie_header_bytes.unwrap_or(16 * 1024);
        if !(1024..=64 * 1024).contains(&max_cookie_header_bytes) {
            return Err(ConfigError::out_of_range(
                root.key("max_cookie_header_bytes"),
                1024,
                64 * 1024,
                max_cookie_header_bytes,
            ));
        }
        if start_path == callback_path {
            return Err(ConfigError::invalid(
                root.key("start_path"),
                "must differ from callback_path",
            ));
        }
        if logout_path == callback_path || logout_path == start_path {
            return Err(ConfigError::invalid(
                root.key("logout_path"),
                "must differ from callback_path and start_path",
            ));
        }
        Ok(OAuth2Config {
            issuer: self.issuer.clone(),
            idp_cluster: self.idp_cluster.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            auth_method: self.token_endpoint_auth,
            scopes: self.scopes.join(" "),
            redirect_uri,
            callback_path,
            start_path,
            logout_path,
            post_logout_redirect_uri,
            keys,
            cookie: self.cookie.clone(),
            forward_token: self.forward.token,
            forward_header,
            claim_headers,
            minter,
            refresh_enabled: self.refresh.enabled,
            refresh_before_s,
            max_lifetime_s,
            cache_entries,
            bypass,
            allow_bearer: self.allow_bearer,
            discovery_wait_ms,
            discovery_refresh_s,
            call_timeout_ms,
            jwks_min_refetch_s,
            max_calls_in_flight,
            max_cookie_header_bytes,
            kept_claims,
        })
    }
}

//! The filter's decisions, as plain Rust: what to do with a request, and how to finish a login
//! or a refresh once the IdP has answered.
//!
//! A request is one of:
//! - the callback (`callback_path`): check the login cookie and `state`, exchange the code;
//! - the start of a login (`start_path?rd=/return/url`), the logout (`logout_path`), the minted
//!   tokens' JWKS (`mint.jwks_path`);
//! - bypassed (`bypass` matchers): passes, with spoofable headers removed;
//! - protected: a valid session forwards `Bearer <token>` and claim headers, its cookies
//!   stripped; a session near expiry is refreshed by one request, the others go on with the
//!   still-valid token; no session: browsers are redirected to the IdP, API calls get 401.
//!
//! The glue (src/plugin.rs) fetches headers, runs [`Gate::decide`], and carries the decision
//! out: header changes, a local reply, a call to the token endpoint, or a wait for the IdP.
//!
//! By phase: this file routes a request ([`Gate::decide`]) and holds the types; `protected`
//! (sessions, Bearer tokens, starting or adopting refreshes), `login` (redirect, callback, code
//! exchange, UserInfo), `refresh` (the refresh grant and what follows it), `logout`, and `token`
//! (reading the token endpoint's answers).

use crate::cache::{Entry, SessionCache};
use crate::config::{AuthMethod, ForwardToken, OAuth2Config};
use crate::idp::{Discovery, Expect, Jwks, VerifyError};
use crate::session::{
    self, CookieNames, LoginTxn, Session, SessionError, cookie_pairs, expire, expire_all,
    id_token_cookie, login_cookie, login_cookie_name, open_json, read_session_value, seal_json,
    session_cookies, strip_owned,
};
use crate::urls::{self, HttpUrl};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use meshwright_shared::headers::{HeaderSource, path_only};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

/// Clock skew tolerated when checking IdP tokens.
pub const LEEWAY_S: u64 = 60;
/// Whether a session's token (expiring at `token_exp` by the IdP's clock) may still be
/// forwarded at `now_s`: with the same leeway the ID-token check allows, so a token that passed
/// that check at login is not refused by the next request (an IdP clock behind ours).
pub fn token_usable(token_exp: u64, now_s: u64) -> bool {
    now_s < token_exp.saturating_add(LEEWAY_S)
}

/// Longest return URL kept, in bytes.
pub const MAX_RETURN_URL: usize = 2048;
/// Headers the decision reads.
pub const HEADERS_READ: [&str; 9] = [
    ":path",
    ":method",
    ":authority",
    ":scheme",
    "x-forwarded-proto",
    "cookie",
    "accept",
    "sec-fetch-mode",
    "x-requested-with",
];

/// Randomness for secrets (state, nonce, PKCE verifier, session ids, AEAD nonces): the glue
/// reads it from the host's cryptographic source for every call.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);

    fn token(&mut self) -> String {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        URL_SAFE_NO_PAD.encode(b)
    }

    fn nonce24(&mut self) -> [u8; 24] {
        let mut b = [0u8; 24];
        self.fill(&mut b);
        b
    }
}

/// Cross-worker coordination of refreshes (shared data in the glue).
pub trait RefreshSlots {
    /// Try to become the one refresher of session `sid`.
    fn claim(&mut self, sid: &str, now_ms: u64) -> Claim;
    /// Publish a refreshed session (sealed) for requests still carrying the old cookie.
    fn complete(&mut self, sid: &str, sealed: &str, now_ms: u64);
    /// Give the slot up after a failed refresh.
    fn release(&mut self, sid: &str);
    /// Remember, until `until_s` (the session's end), that generation `generation` is the newest of
    /// session `sid`: cookies of older generations carry a spent refresh token.
    fn supersede(&mut self, sid: &str, generation: u32, until_s: u64, now_ms: u64);
    /// Whether a newer generation than `generation` of session `sid` is known.
    fn superseded(&mut self, sid: &str, generation: u32, now_ms: u64) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Acquired,
    /// Another request is refreshing this session right now.
    Busy,
    /// Already refreshed: the new sealed session.
    Refreshed(String),
}

/// Why a request was or was not let through, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Authenticated,
    /// Authenticated with a session another request had just refreshed (its cookie is set).
    RefreshAdopted,
    Bypassed,
    BearerAccepted,
    BearerRejected,
    LoginStarted,
    Unauthenticated401,
    InvalidSession,
    ExpiredSession,
    CookieTooLarge,
    Callback,
    CallbackRejected,
    Logout,
    Jwks,
    BadRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward {
    /// Request headers to set (replacing client values).
    pub set: Vec<(String, String)>,
    /// Request headers to remove (owned headers the client may have sent).
    pub remove: Vec<String>,
    /// New Cookie header for the upstream: `Some(None)` removes it.
    pub cookie: Option<Option<String>>,
    /// Set-Cookie headers for the response.
    pub response_cookies: Vec<String>,
}

pub use meshwright_shared::Reply;

/// A call to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCall {
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The UserInfo step of a login or a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Userinfo<'a> {
    /// Not called: ask for the call if the ID token lacks a claim the config uses.
    NotYet,
    /// Do without.
    Skip,
    /// The endpoint's answer.
    Answer { status: u16, body: &'a [u8] },
}

/// What completing a login needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum LoginStep {
    /// The login is done: send `reply`. `missing_claims`: claims the config uses that neither
    /// the ID token nor UserInfo had (logged and counted).
    Done {
        reply: Reply,
        missing_claims: Vec<String>,
    },
    /// Call the UserInfo endpoint (GET), then finish with its answer.
    Userinfo(TokenCall),
}

/// What completing a refresh needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshStep {
    /// The refreshed session.
    Done(Session),
    /// Call the UserInfo endpoint (GET), then finish with its answer.
    Userinfo(TokenCall),
}

/// A UserInfo answer as a JSON object (OIDC Core §5.3.2); None when it is not one (a signed or
/// encrypted UserInfo JWT is not read: the login goes on without its claims).
pub fn parse_userinfo(status: u16, body: &[u8]) -> Option<Map<String, Value>> {
    if status != 200 || body.len() > 64 * 1024 {
        return None;
    }
    serde_json::from_slice(body).ok()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Forward(Forward, Outcome),
    Reply(Reply, Outcome),
    /// The IdP's discovery document or keys are not loaded yet (or another request is
    /// refreshing an expired session): wait, then decide again.
    Wait,
    /// Callback: call the token endpoint, then [`Gate::finish_login`].
    Exchange {
        txn: LoginTxn,
        call: TokenCall,
        login_cookie: String,
    },
    /// Refresh: call the token endpoint, then [`Gate::finish_refresh`]. If the call fails and the
    /// token is still valid, `fallback` lets the request through anyway.
    Refresh {
        session: Session,
        call: TokenCall,
        fallback: Option<Forward>,
    },
}

/// Tokens from the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

/// Why a login or a refresh failed (metric label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The IdP answered the authorization request with an error.
    IdpError,
    /// No login cookie for this `state` (expired, replayed, or forged callback).
    UnknownState,
    StateMismatch,
    IssuerMismatch,
    TokenEndpoint,
    TokenResponse,
    /// The ID token's key is unknown: refetch the JWKS and try again.
    UnknownKey,
    IdToken,
    /// The ID token is signed with an algorithm other than RS256/ES256 (e.g. HS256).
    IdTokenAlg,
    /// The UserInfo response is about another subject than the ID token (OIDC Core §5.3.4).
    Userinfo,
    SessionTooLarge,
    JwksUnavailable,
}

impl Failure {
    /// Every failure, for the per-reason counters.
    pub const ALL: [Failure; 12] = [
        Self::IdpError,
        Self::UnknownState,
        Self::StateMismatch,
        Self::IssuerMismatch,
        Self::TokenEndpoint,
        Self::TokenResponse,
        Self::UnknownKey,
        Self::IdToken,
        Self::IdTokenAlg,
        Self::Userinfo,
        Self::SessionTooLarge,
        Self::JwksUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::IdpError => "idp_error",
            Self::UnknownState => "unknown_state",
            Self::StateMismatch => "state_mismatch",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::TokenEndpoint => "token_endpoint",
            Self::TokenResponse => "token_response",
            Self::UnknownKey => "unknown_key",
            Self::IdToken => "id_token",
            Self::IdTokenAlg => "id_token_alg",
            Self::Userinfo => "userinfo",
            Self::SessionTooLarge => "session_too_large",
            Self::JwksUnavailable => "jwks_unavailable",
        }
    }

    /// What went wrong, for the log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::IdpError => "the IdP answered the authorization request with an error",
            Self::UnknownState => {
                "no login in progress for this state (expired, replayed or forged callback)"
            }
            Self::StateMismatch => "the callback's state does not match the login cookie",
            Self::IssuerMismatch => {
                "the callback's iss is not the configured issuer, or is missing although the IdP advertises it (RFC 9207)"
            }
            Self::TokenEndpoint => "the token endpoint refused the grant",
            Self::TokenResponse => "the token endpoint's answer is not a usable token response",
            Self::UnknownKey => "the ID token's signing key is not in the IdP's JWKS",
            Self::IdToken => {
                "the ID token failed its signature, issuer, audience, nonce, subject or lifetime check"
            }
            Self::IdTokenAlg => {
                "the ID token is signed with an algorithm other than RS256 and ES256 (set the client's id_token_signed_response_alg at the IdP)"
            }
            Self::Userinfo => {
                "the UserInfo response names another subject than the ID token (OIDC Core 5.3.4)"
            }
            Self::SessionTooLarge => "the session does not fit in the cookie size limit",
            Self::JwksUnavailable => "the IdP's JWKS is not loaded",
        }
    }
}

/// The per-VM context of a decision.
pub struct Gate<'a> {
    pub cfg: &'a OAuth2Config,
    pub names: &'a CookieNames,
    pub discovery: Option<&'a Discovery>,
    pub jwks: Option<&'a Jwks>,
}

fn verify_failure(e: VerifyError) -> Failure {
    match e {
        VerifyError::UnknownKey => Failure::UnknownKey,
        VerifyError::UnsupportedAlg => Failure::IdTokenAlg,
        VerifyError::Malformed | VerifyError::Invalid => Failure::IdToken,
    }
}

use meshwright_shared::validate::is_header_value as header_value_ok;

fn reply(status: u16, headers: Vec<(String, String)>, body: String) -> Reply {
    Reply::new(status, headers, body)
}

/// 503 `{"error": why}`: the IdP cannot be reached (or this worker has all the calls to it in
/// flight it may).
pub fn unavailable(why: &str) -> Reply {
    let body = format!(r#"{{"error":"{why}"}}"#);
    reply(
        503,
        vec![("content-type".into(), "application/json".into())],
        body,
    )
}

/// A login or refresh shed because the worker's IdP calls are all in flight: retry shortly.
pub fn busy() -> Reply {
    let mut r = unavailable("identity_provider_busy");
    r.headers.push(("retry-after".into(), "1".into()));
    r.headers.push(("cache-control".into(), "no-store".into()));
    r
}

/// The answer to a second callback of a login whose code was already exchanged (a replay, or
/// forged codes with a genuine login cookie).
pub fn state_spent() -> Reply {
    let headers = vec![
        ("content-type".into(), "application/json".into()),
        ("cache-control".into(), "no-store".into()),
    ];
    reply(
        400,
        headers,
        r#"{"error":"login_failed","reason":"state_spent"}"#.into(),
    )
}

fn redirect(location: &str, cookies: Vec<String>) -> Reply {
    let mut headers = vec![
        ("location".to_owned(), location.to_owned()),
        ("cache-control".to_owned(), "no-store".to_owned()),
    ];
    headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_owned(), c)));
    reply(302, headers, String::new())
}

fn json_reply(status: u16, value: &Value, cookies: Vec<String>) -> Reply {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("cache-control".to_owned(), "no-store".to_owned()),
    ];
    headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_owned(), c)));
    reply(status, headers, value.to_string())
}

/// A return URL we will redirect to after login: a local path only (no scheme, no host, no
/// `//` or `/\` which browsers treat as a host), no control characters, bounded length.
pub fn safe_return_url(candidate: &str) -> Option<&str> {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.starts_with("/\\")
        && candidate.len() <= MAX_RETURN_URL
        && !candidate
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b == b'\\');
    ok.then_some(candidate)
}

pub use crate::urls::query_param;

/// Whether a request comes from a browser navigation (redirect it) rather than an API call
/// (answer 401): `Sec-Fetch-Mode: navigate`, or, from browsers that do not send it, an
/// `Accept` that prefers HTML and no `X-Requested-With`.
pub fn is_navigation(req: &impl HeaderSource) -> bool {
    if req.header("x-requested-with").is_some() {
        return false;
    }
    match req.header("sec-fetch-mode") {
        Some(mode) => mode.eq_ignore_ascii_case("navigate"),
        None => req
            .header("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("text/html")),
    }
}

fn render_claim(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => return None,
    };
    header_value_ok(&s).then_some(s)
}

impl Gate<'_> {
    /// Origin (`scheme://authority`) of the request, for the redirect URI and logout URLs.
    fn origin(&self, req: &impl HeaderSource) -> Option<String> {
        let authority = req.header(":authority")?;
        if authority.is_empty()
            || !authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return None;
        }
        let scheme = req
            .header("x-forwarded-proto")
            .or_else(|| req.header(":scheme"))
            .filter(|s| *s == "http" || *s == "https")
            .unwrap_or("https");
        Some(format!("{scheme}://{authority}"))
    }

    fn redirect_uri(&self, req: &impl HeaderSource) -> Option<String> {
        match &self.cfg.redirect_uri {
            Some(u) => Some(u.clone()),
            None => Some(format!("{}{}", self.origin(req)?, self.cfg.callback_path)),
        }
    }

    /// The decision for one request.
    pub fn decide(
        &self,
        req: &impl HeaderSource,
        now_ms: u64,
        cache: &mut SessionCache,
        rng: &mut impl Entropy,
        slots: &mut impl RefreshSlots,
    ) -> Decision {
        let now_s = now_ms / 1000;
        let full_path = req.header(":path").unwrap_or("/");
        let path = path_only(full_path);
        let cookie = req.header("cookie").unwrap_or("");
        if path == self.cfg.callback_path {
            return self.callback(req, full_path, cookie, now_s);
        }
        if path == self.cfg.logout_path {
            return self.logout(req, cookie, now_s);
        }
        if path == self.cfg.start_path {
            let rd = query_param(full_path, "rd");
            let return_to = rd.as_deref().and_then(safe_return_url).unwrap_or("/");
            return self.begin_login(req, return_to, Vec::new(), now_s, rng);
        }
        if let Some(m) = &self.cfg.minter
            && m.jwks_path.as_deref() == Some(path)
        {
            let jwks = m.jwks_json.clone().unwrap_or_default();
            let headers = vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("cache-control".to_owned(), "public, max-age=300".to_owned()),
            ];
            return Decision::Reply(reply(200, headers, jwks), Outcome::Jwks);
        }
        if self.cfg.bypass.iter().any(|m| m.matches(req)) {
            let mut f = self.strip_spoofable(cookie);
            f.remove.push(self.cfg.forward_header.clone());
            return Decision::Forward(f, Outcome::Bypassed);
        }
        if cookie.len() > self.cfg.max_cookie_header_bytes {
            let clear = self.clear_all(cookie);
            return Decision::Reply(
                json_reply(
                    431,
                    &serde_json::json!({"error": "cookie_too_large"}),
                    clear,
                ),
                Outcome::CookieTooLarge,
            );
        }
        self.protected(req, full_path, cookie, now_ms, cache, rng, slots)
    }

    /// Set-Cookie headers that clear every cookie of the filter's the request brings.
    fn clear_all(&self, cookie: &str) -> Vec<String> {
        expire_all(
            self.names,
            &self.cfg.cookie,
            cookie,
            &self.cfg.callback_path,
            &self.cfg.logout_path,
        )
    }

    /// Removes what clients must not set themselves: claim headers, and the filter's cookies.
    fn strip_spoofable(&self, cookie: &str) -> Forward {
        Forward {
            remove: self
                .cfg
                .claim_headers
                .iter()
                .map(|(h, _)| h.clone())
                .collect(),
            cookie: strip_owned(self.names, cookie),
            ..Forward::default()
        }
    }
}

mod login;
mod logout;
mod protected;
mod refresh;
mod token;

pub use token::{TOKEN_ERRORS, TokenError, parse_token_response, token_error};

#[cfg(test)]
mod tests;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

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

fn header_value_ok(v: &str) -> bool {
    !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

fn reply(status: u16, headers: Vec<(String, String)>, body: String) -> Reply {
    Reply {
        status,
        headers,
        body,
    }
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
            let clear = expire_all(
                self.names,
                &self.cfg.cookie,
                cookie,
                &self.cfg.callback_path,
                &self.cfg.logout_path,
            );
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

    #[allow(clippy::too_many_arguments)]
    fn protected(
        &self,
        req: &impl HeaderSource,
        full_path: &str,
        cookie: &str,
        now_ms: u64,
        cache: &mut SessionCache,
        rng: &mut impl Entropy,
        slots: &mut impl RefreshSlots,
    ) -> Decision {
        let now_s = now_ms / 1000;
        let mut clear = Vec::new();
        let mut outcome_if_anonymous = Outcome::Unauthenticated401;
        if let Some(sealed) = read_session_value(cookie, self.names) {
            let key = cache.key(&sealed);
            if cache.get_mut(key).is_none() {
                match open_json::<Session>(&self.cfg.keys, &self.names.session, &sealed) {
                    Ok(s) => {
                        let entry = self.entry(s, now_s);
                        cache.insert(key, entry);
                    }
                    Err(SessionError::Open(_) | SessionError::Payload) => {
                        outcome_if_anonymous = Outcome::InvalidSession;
                    }
                }
            }
            if let Some(entry) = cache.get_mut(key) {
                if now_s >= entry.session.expires {
                    outcome_if_anonymous = Outcome::ExpiredSession;
                    cache.remove(key);
                } else {
                    self.refresh_minted(entry, now_s);
                    let due =
                        now_s.saturating_add(self.cfg.refresh_before_s) >= entry.session.token_exp;
                    let valid = token_usable(entry.session.token_exp, now_s);
                    if !due {
                        return Decision::Forward(
                            self.forward(entry, cookie),
                            Outcome::Authenticated,
                        );
                    }
                    let can_refresh =
                        self.cfg.refresh_enabled && entry.session.refresh_token.is_some();
                    if can_refresh
                        && slots.superseded(&entry.session.id, entry.session.generation, now_ms)
                    {
                        // This cookie's refresh token is spent: a newer generation of the
                        // session exists (another tab, another replica) or the IdP refused it.
                        // It is never sent again: adopt the newer session while it is still
                        // published, else go on with the valid token, and once that has
                        // expired log in again — without a call to the IdP.
                        let fallback = valid.then(|| self.forward(entry, cookie));
                        match slots.claim(&entry.session.id, now_ms) {
                            Claim::Refreshed(new_sealed) => {
                                if let Some(d) =
                                    self.adopt_refreshed(&new_sealed, cookie, now_s, cache)
                                {
                                    return d;
                                }
                            }
                            Claim::Acquired => slots.release(&entry.session.id),
                            Claim::Busy => {}
                        }
                        if let Some(f) = fallback {
                            return Decision::Forward(f, Outcome::Authenticated);
                        }
                    } else if can_refresh {
                        let Some(discovery) = self.discovery else {
                            return if valid {
                                Decision::Forward(
                                    self.forward(entry, cookie),
                                    Outcome::Authenticated,
                                )
                            } else {
                                Decision::Wait
                            };
                        };
                        match slots.claim(&entry.session.id, now_ms) {
                            Claim::Acquired => {
                                let fallback = valid.then(|| self.forward(entry, cookie));
                                let call = self.refresh_call(
                                    discovery,
                                    entry.session.refresh_token.as_deref().unwrap_or(""),
                                );
                                return Decision::Refresh {
                                    session: entry.session.clone(),
                                    call,
                                    fallback,
                                };
                            }
                            Claim::Busy if valid => {
                                return Decision::Forward(
                                    self.forward(entry, cookie),
                                    Outcome::Authenticated,
                                );
                            }
                            Claim::Busy => return Decision::Wait,
                            Claim::Refreshed(new_sealed) => {
                                if let Some(d) =
                                    self.adopt_refreshed(&new_sealed, cookie, now_s, cache)
                                {
                                    return d;
                                }
                            }
                        }
                    } else if valid {
                        return Decision::Forward(
                            self.forward(entry, cookie),
                            Outcome::Authenticated,
                        );
                    }
                    outcome_if_anonymous = Outcome::ExpiredSession;
                    cache.remove(key);
                }
            }
            clear = expire_all(
                self.names,
                &self.cfg.cookie,
                cookie,
                &self.cfg.callback_path,
                &self.cfg.logout_path,
            )
            .into_iter()
            .filter(|c| !c.starts_with(&self.names.login_prefix))
            .collect();
        }
        if self.cfg.allow_bearer
            && let Some(d) = self.bearer(req, cookie, now_s)
        {
            return d;
        }
        self.unauthenticated(req, full_path, clear, outcome_if_anonymous, now_s, rng)
    }

    /// No usable session: browsers go to the IdP, API calls get 401 (with `clear` Set-Cookies).
    pub fn unauthenticated(
        &self,
        req: &impl HeaderSource,
        full_path: &str,
        clear: Vec<String>,
        outcome_if_anonymous: Outcome,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Decision {
        if is_navigation(req) {
            let return_to = safe_return_url(full_path).unwrap_or("/");
            return self.begin_login(req, return_to, clear, now_s, rng);
        }
        let login_url = format!(
            "{}?rd={}",
            self.cfg.start_path,
            urls::encode(safe_return_url(full_path).unwrap_or("/"))
        );
        let mut r = json_reply(
            401,
            &serde_json::json!({"error": "unauthenticated", "login_url": login_url}),
            clear,
        );
        r.headers
            .push(("www-authenticate".to_owned(), "Bearer".to_owned()));
        Decision::Reply(r, outcome_if_anonymous)
    }

    /// A session whose refresh another worker completed: use it, and hand the browser its cookie.
    fn adopt_refreshed(
        &self,
        sealed: &str,
        cookie: &str,
        now_s: u64,
        cache: &mut SessionCache,
    ) -> Option<Decision> {
        let key = cache.key(sealed);
        if cache.get_mut(key).is_none() {
            let s = open_json::<Session>(&self.cfg.keys, &self.names.session, sealed).ok()?;
            let entry = self.entry(s, now_s);
            cache.insert(key, entry);
        }
        let entry = cache.get_mut(key)?;
        if !token_usable(entry.session.token_exp, now_s) || now_s >= entry.session.expires {
            return None;
        }
        let mut f = self.forward(entry, cookie);
        f.response_cookies = session_cookies(
            self.names,
            sealed,
            &self.cfg.cookie,
            entry.session.expires.saturating_sub(now_s),
            Some(cookie),
        )?;
        Some(Decision::Forward(f, Outcome::RefreshAdopted))
    }

    /// The cache entry for an opened session: rendered claim headers and the bearer value.
    pub fn entry(&self, session: Session, now_s: u64) -> Entry {
        let claim_values = self
            .cfg
            .claim_headers
            .iter()
            .filter_map(|(h, claim)| {
                let v = if claim == "sub" {
                    Some(session.sub.clone())
                } else {
                    session.claims.get(claim).and_then(render_claim)
                };
                v.map(|v| (h.clone(), v))
            })
            .collect();
        let bearer = match self.cfg.forward_token {
            ForwardToken::Minted => None,
            _ => session
                .token
                .as_ref()
                .filter(|t| header_value_ok(t))
                .map(|t| (format!("Bearer {t}"), session.token_exp)),
        };
        let mut entry = Entry {
            session,
            bearer,
            claim_values,
        };
        self.refresh_minted(&mut entry, now_s);
        entry
    }

    /// Mints (again) when the cached minted token is missing or close to expiry.
    pub fn refresh_minted(&self, entry: &mut Entry, now_s: u64) {
        let Some(m) = &self.cfg.minter else { return };
        if self.cfg.forward_token != ForwardToken::Minted {
            return;
        }
        let fresh = entry
            .bearer
            .as_ref()
            .is_some_and(|(_, exp)| now_s.saturating_add(m.ttl_s / 5) < *exp);
        if !fresh {
            entry.bearer = m
                .mint(&entry.session.sub, &entry.session.claims, now_s)
                .map(|t| (format!("Bearer {t}"), now_s.saturating_add(m.ttl_s)));
        }
    }

    /// What to do to an upstream request authenticated by `entry`.
    pub fn forward(&self, entry: &Entry, cookie: &str) -> Forward {
        let mut f = Forward {
            cookie: strip_owned(self.names, cookie),
            ..Forward::default()
        };
        match &entry.bearer {
            Some((b, _)) => f.set.push((self.cfg.forward_header.clone(), b.clone())),
            None => f.remove.push(self.cfg.forward_header.clone()),
        }
        for (h, _) in &self.cfg.claim_headers {
            match entry.claim_values.iter().find(|(n, _)| n == h) {
                Some((n, v)) => f.set.push((n.clone(), v.clone())),
                None => f.remove.push(h.clone()),
            }
        }
        f
    }

    fn bearer(&self, req: &impl HeaderSource, cookie: &str, now_s: u64) -> Option<Decision> {
        let auth = req.header(&self.cfg.forward_header)?;
        let token = meshwright_shared::jwt::bearer_token(auth)?;
        let Some(jwks) = self.jwks else {
            return Some(Decision::Wait);
        };
        let expect = Expect {
            issuer: &self.cfg.issuer,
            audience: &self.cfg.client_id,
            nonce: None,
            now_s,
            leeway_s: LEEWAY_S,
        };
        match jwks.verify(token, &expect) {
            Ok(v) => {
                let mut f = self.strip_spoofable(cookie);
                f.remove.clear();
                for (h, claim) in &self.cfg.claim_headers {
                    let value = if claim == "sub" {
                        Some(v.sub.clone())
                    } else {
                        v.claims.get(claim).and_then(render_claim)
                    };
                    match value {
                        Some(val) => f.set.push((h.clone(), val)),
                        None => f.remove.push(h.clone()),
                    }
                }
                Some(Decision::Forward(f, Outcome::BearerAccepted))
            }
            Err(_) => {
                let mut r = json_reply(
                    401,
                    &serde_json::json!({"error": "invalid_token"}),
                    Vec::new(),
                );
                r.headers.push((
                    "www-authenticate".to_owned(),
                    "Bearer error=\"invalid_token\"".to_owned(),
                ));
                Some(Decision::Reply(r, Outcome::BearerRejected))
            }
        }
    }

    /// Redirects to the IdP's authorization endpoint with state, nonce and PKCE (S256), and sets
    /// the login cookie that the callback must present.
    fn begin_login(
        &self,
        req: &impl HeaderSource,
        return_to: &str,
        mut cookies: Vec<String>,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Decision {
        // Without the IdP's keys the login would fail at the callback, after the user typed their
        // password: wait for them here instead.
        let (Some(discovery), Some(_)) = (self.discovery, self.jwks) else {
            return Decision::Wait;
        };
        let Some(redirect_uri) = self.redirect_uri(req) else {
            return Decision::Reply(
                reply(400, Vec::new(), "bad Host".into()),
                Outcome::BadRequest,
            );
        };
        let txn = LoginTxn {
            state: rng.token(),
            nonce: rng.token(),
            verifier: rng.token(),
            return_to: return_to.to_owned(),
            created_s: now_s,
        };
        let challenge = URL_SAFE_NO_PAD.encode(hmac_sha256::Hash::hash(txn.verifier.as_bytes()));
        let Some(endpoint) = HttpUrl::parse(&discovery.authorization_endpoint) else {
            return Decision::Reply(
                reply(502, Vec::new(), "bad authorization endpoint".into()),
                Outcome::BadRequest,
            );
        };
        let url = endpoint.with_query(&[
            ("response_type", "code"),
            ("client_id", &self.cfg.client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", &self.cfg.scopes),
            ("state", &txn.state),
            ("nonce", &txn.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let name = login_cookie_name(self.names, &txn.state);
        let Some(sealed) = seal_json(&self.cfg.keys, &name, &txn, rng.nonce24()) else {
            return Decision::Reply(reply(500, Vec::new(), String::new()), Outcome::BadRequest);
        };
        cookies.push(login_cookie(
            self.names,
            &sealed,
            &txn.state,
            &self.cfg.cookie,
            &self.cfg.callback_path,
        ));
        Decision::Reply(redirect(&url, cookies), Outcome::LoginStarted)
    }

    fn callback_failure(&self, status: u16, failure: Failure, cookies: Vec<String>) -> Decision {
        Decision::Reply(
            json_reply(
                status,
                &serde_json::json!({"error": "login_failed", "reason": failure.label()}),
                cookies,
            ),
            Outcome::CallbackRejected,
        )
    }

    fn callback(
        &self,
        req: &impl HeaderSource,
        full_path: &str,
        cookie: &str,
        now_s: u64,
    ) -> Decision {
        if let Some(_err) = query_param(full_path, "error") {
            return self.callback_failure(401, Failure::IdpError, Vec::new());
        }
        let (Some(code), Some(state)) = (
            query_param(full_path, "code"),
            query_param(full_path, "state"),
        ) else {
            return self.callback_failure(400, Failure::UnknownState, Vec::new());
        };
        let name = login_cookie_name(self.names, &state);
        let Some(sealed) = cookie_pairs(cookie)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
        else {
            return self.callback_failure(400, Failure::UnknownState, Vec::new());
        };
        let clear = vec![expire(&name, &self.cfg.cookie, &self.cfg.callback_path)];
        let Ok(txn) = open_json::<LoginTxn>(&self.cfg.keys, &name, sealed) else {
            return self.callback_failure(400, Failure::UnknownState, clear);
        };
        let state_ok: bool = txn.state.as_bytes().ct_eq(state.as_bytes()).into();
        if !state_ok || now_s >= txn.created_s.saturating_add(session::LOGIN_TTL_S) {
            return self.callback_failure(400, Failure::StateMismatch, clear);
        }
        let Some(discovery) = self.discovery else {
            return Decision::Wait;
        };
        // RFC 9207 (mix-up defence): when the IdP names itself, it must be ours; when it says
        // it always does, a callback without `iss` is refused too.
        match query_param(full_path, "iss") {
            Some(iss) if iss != self.cfg.issuer => {
                return self.callback_failure(400, Failure::IssuerMismatch, clear);
            }
            None if discovery.iss_in_callback => {
                return self.callback_failure(400, Failure::IssuerMismatch, clear);
            }
            _ => {}
        }
        let Some(redirect_uri) = self.redirect_uri(req) else {
            return self.callback_failure(400, Failure::UnknownState, clear);
        };
        let call = self.token_call(
            discovery,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &txn.verifier),
            ],
        );
        Decision::Exchange {
            txn,
            call,
            login_cookie: name,
        }
    }

    fn token_call(&self, discovery: &Discovery, grant: &[(&str, &str)]) -> TokenCall {
        let mut form = grant.to_vec();
        let mut headers = vec![
            (
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept".to_owned(), "application/json".to_owned()),
        ];
        match self.cfg.auth_method {
            AuthMethod::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
                let creds = format!(
                    "{}:{}",
                    urls::encode(&self.cfg.client_id),
                    urls::encode(&self.cfg.client_secret)
                );
                headers.push((
                    "authorization".to_owned(),
                    format!("Basic {}", STANDARD.encode(creds)),
                ));
            }
            AuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.cfg.client_id));
                form.push(("client_secret", &self.cfg.client_secret));
            }
        }
        TokenCall {
            authority: discovery.token_endpoint.authority.clone(),
            path: discovery.token_endpoint.path.clone(),
            headers,
            body: urls::form(&form),
        }
    }

    fn refresh_call(&self, discovery: &Discovery, refresh_token: &str) -> TokenCall {
        self.token_call(
            discovery,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
    }

    /// Builds the session from the token endpoint's answer to the code exchange, and the
    /// response that completes the login (redirect to the return URL, cookies set).
    pub fn finish_login(
        &self,
        txn: &LoginTxn,
        login_cookie: &str,
        tokens: &TokenSet,
        cookie_header: &str,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Result<Reply, Failure> {
        match self.finish_login_with(
            txn,
            login_cookie,
            tokens,
            Userinfo::Skip,
            cookie_header,
            now_s,
            rng,
        )? {
            LoginStep::Done { reply, .. } => Ok(reply),
            LoginStep::Userinfo(_) => Err(Failure::TokenResponse),
        }
    }

    /// [`Gate::finish_login`], with the UserInfo step: when a claim the config uses (claim
    /// headers, minted claims) is not in the ID token and the IdP has a UserInfo endpoint, the
    /// first call (`Userinfo::NotYet`) asks for that call; the second brings its answer, whose
    /// `sub` must be the ID token's and whose claims fill the missing ones.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_login_with(
        &self,
        txn: &LoginTxn,
        login_cookie: &str,
        tokens: &TokenSet,
        userinfo: Userinfo<'_>,
        cookie_header: &str,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Result<LoginStep, Failure> {
        let jwks = self.jwks.ok_or(Failure::JwksUnavailable)?;
        let id_token = tokens.id_token.as_deref().ok_or(Failure::TokenResponse)?;
        let expect = Expect {
            issuer: &self.cfg.issuer,
            audience: &self.cfg.client_id,
            nonce: Some(&txn.nonce),
            now_s,
            leeway_s: LEEWAY_S,
        };
        let verified = jwks.verify(id_token, &expect).map_err(verify_failure)?;
        let mut claims = self.kept(&verified.claims);
        match userinfo {
            Userinfo::Skip => {}
            Userinfo::NotYet => {
                if let Some(call) = self.userinfo_call(&claims, tokens) {
                    return Ok(LoginStep::Userinfo(call));
                }
            }
            Userinfo::Answer { status, body } => {
                self.add_userinfo(&mut claims, &verified.sub, status, body)?;
            }
        }
        let missing_claims = self.missing(&claims);
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        let session = Session {
            id: URL_SAFE_NO_PAD.encode(id),
            generation: 0,
            sub: verified.sub,
            claims,
            token: self.forwarded(tokens),
            token_exp: self.token_exp(tokens, verified.exp_s, now_s),
            refresh_token: tokens.refresh_token.clone(),
            expires: now_s.saturating_add(self.cfg.max_lifetime_s),
        };
        let mut cookies = self
            .store(&session, Some(cookie_header), now_s, rng)
            .ok_or(Failure::SessionTooLarge)?;
        cookies.push(expire(
            login_cookie,
            &self.cfg.cookie,
            &self.cfg.callback_path,
        ));
        if self.cfg.forward_token != ForwardToken::IdToken
            && let Some(sealed) = seal_json(
                &self.cfg.keys,
                &self.names.id_token,
                &id_token,
                rng.nonce24(),
            )
        {
            cookies.push(id_token_cookie(
                self.names,
                &sealed,
                &self.cfg.cookie,
                &self.cfg.logout_path,
                self.cfg.max_lifetime_s,
            ));
        }
        Ok(LoginStep::Done {
            reply: redirect(&txn.return_to, cookies),
            missing_claims,
        })
    }

    /// The UserInfo call (GET, with the access token) when `claims` lacks a claim the config uses
    /// and the IdP has a UserInfo endpoint.
    fn userinfo_call(&self, claims: &Map<String, Value>, tokens: &TokenSet) -> Option<TokenCall> {
        let ep = self.discovery?.userinfo_endpoint.as_ref()?;
        if self.missing(claims).is_empty() {
            return None;
        }
        Some(TokenCall {
            authority: ep.authority.clone(),
            path: ep.path.clone(),
            headers: vec![
                (
                    "authorization".into(),
                    format!("Bearer {}", tokens.access_token),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: String::new(),
        })
    }

    /// Adds a UserInfo answer's claims to those `claims` lacks. An answer about another subject
    /// than `sub` is refused (OIDC Core §5.3.4); one that is not a JSON object adds nothing.
    fn add_userinfo(
        &self,
        claims: &mut Map<String, Value>,
        sub: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), Failure> {
        let Some(info) = parse_userinfo(status, body) else {
            return Ok(());
        };
        if info.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(Failure::Userinfo);
        }
        for (k, v) in self.kept(&info) {
            claims.entry(k).or_insert(v);
        }
        Ok(())
    }

    /// The claims the config uses that `claims` lacks (`sub` is the session's own).
    fn missing(&self, claims: &Map<String, Value>) -> Vec<String> {
        self.cfg
            .kept_claims
            .iter()
            .filter(|k| k.as_str() != "sub" && !claims.contains_key(k.as_str()))
            .cloned()
            .collect()
    }

    /// The refreshed session, from the token endpoint's answer to a refresh grant, without a
    /// UserInfo call (claims the new ID token lacks are the session's).
    pub fn finish_refresh(
        &self,
        old: &Session,
        tokens: &TokenSet,
        now_s: u64,
    ) -> Result<Session, Failure> {
        match self.finish_refresh_with(old, tokens, Userinfo::Skip, now_s)? {
            RefreshStep::Done(session) => Ok(session),
            RefreshStep::Userinfo(_) => Err(Failure::TokenResponse),
        }
    }

    /// [`Gate::finish_refresh`], with the UserInfo step as at login: when the refresh response's
    /// ID token (or its absence) leaves out a claim the config uses and the IdP has a UserInfo
    /// endpoint, the first call (`Userinfo::NotYet`) asks for that call with the new access
    /// token; the second brings its answer. Its claims are current: they replace the session's,
    /// which stay only for claims neither the new ID token nor UserInfo has (OIDC Core §12.2).
    /// An answer about another subject ends the refresh; an unusable one keeps the claims.
    pub fn finish_refresh_with(
        &self,
        old: &Session,
        tokens: &TokenSet,
        userinfo: Userinfo<'_>,
        now_s: u64,
    ) -> Result<RefreshStep, Failure> {
        let mut fresh = Map::new();
        let mut exp = now_s.saturating_add(tokens.expires_in.unwrap_or(0));
        if let Some(id_token) = &tokens.id_token {
            let jwks = self.jwks.ok_or(Failure::JwksUnavailable)?;
            let expect = Expect {
                issuer: &self.cfg.issuer,
                audience: &self.cfg.client_id,
                nonce: None,
                now_s,
                leeway_s: LEEWAY_S,
            };
            let v = jwks.verify(id_token, &expect).map_err(verify_failure)?;
            if v.sub != old.sub {
                return Err(Failure::IdToken);
            }
            fresh = self.kept(&v.claims);
            exp = v.exp_s;
        } else if self.cfg.forward_token == ForwardToken::IdToken {
            return Err(Failure::TokenResponse);
        }
        match userinfo {
            Userinfo::Skip => {}
            Userinfo::NotYet => {
                if let Some(call) = self.userinfo_call(&fresh, tokens) {
                    return Ok(RefreshStep::Userinfo(call));
                }
            }
            Userinfo::Answer { status, body } => {
                self.add_userinfo(&mut fresh, &old.sub, status, body)?;
            }
        }
        let mut claims = fresh;
        for (k, v) in &old.claims {
            claims.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok(RefreshStep::Done(Session {
            id: old.id.clone(),
            generation: old.generation.saturating_add(1),
            sub: old.sub.clone(),
            claims,
            token: self.forwarded(tokens),
            token_exp: self.token_exp(tokens, exp, now_s),
            refresh_token: tokens
                .refresh_token
                .clone()
                .or_else(|| old.refresh_token.clone()),
            expires: old.expires,
        }))
    }

    /// Seals a session into Set-Cookie headers.
    pub fn store(
        &self,
        session: &Session,
        cookie_header: Option<&str>,
        now_s: u64,
        rng: &mut impl Entropy,
    ) -> Option<Vec<String>> {
        let sealed = seal_json(&self.cfg.keys, &self.names.session, session, rng.nonce24())?;
        session_cookies(
            self.names,
            &sealed,
            &self.cfg.cookie,
            session.expires.saturating_sub(now_s),
            cookie_header,
        )
    }

    /// Seals a session (the value other workers adopt after a refresh).
    pub fn seal_session(&self, session: &Session, rng: &mut impl Entropy) -> Option<String> {
        seal_json(&self.cfg.keys, &self.names.session, session, rng.nonce24())
    }

    fn kept(&self, claims: &Map<String, Value>) -> Map<String, Value> {
        self.cfg
            .kept_claims
            .iter()
            .filter_map(|k| claims.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    fn forwarded(&self, tokens: &TokenSet) -> Option<String> {
        match self.cfg.forward_token {
            ForwardToken::IdToken => tokens.id_token.clone(),
            ForwardToken::AccessToken => Some(tokens.access_token.clone()),
            ForwardToken::Minted => None,
        }
    }

    fn token_exp(&self, tokens: &TokenSet, id_exp: u64, now_s: u64) -> u64 {
        match (self.cfg.forward_token, tokens.expires_in) {
            (ForwardToken::AccessToken, Some(e)) => now_s.saturating_add(e),
            _ => id_exp,
        }
    }

    /// Clears the filter's cookies and sends the browser to the IdP's end-session endpoint
    /// (RP-initiated logout, with `id_token_hint`), or straight to the post-logout page.
    fn logout(&self, req: &impl HeaderSource, cookie: &str, now_s: u64) -> Decision {
        let _ = now_s;
        let clear = expire_all(
            self.names,
            &self.cfg.cookie,
            cookie,
            &self.cfg.callback_path,
            &self.cfg.logout_path,
        );
        let post_logout = if self.cfg.post_logout_redirect_uri.starts_with('/') {
            match self.origin(req) {
                Some(o) => format!("{o}{}", self.cfg.post_logout_redirect_uri),
                None => self.cfg.post_logout_redirect_uri.clone(),
            }
        } else {
            self.cfg.post_logout_redirect_uri.clone()
        };
        let hint = self.id_token_hint(cookie);
        let location = match self
            .discovery
            .and_then(|d| d.end_session_endpoint.as_deref())
        {
            Some(end) => match HttpUrl::parse(end) {
                Some(u) => {
                    let mut q = Vec::with_capacity(3);
                    if let Some(h) = &hint {
                        q.push(("id_token_hint", h.as_str()));
                    }
                    q.push(("client_id", &self.cfg.client_id));
                    q.push(("post_logout_redirect_uri", &post_logout));
                    u.with_query(&q)
                }
                None => post_logout,
            },
            None => post_logout,
        };
        Decision::Reply(redirect(&location, clear), Outcome::Logout)
    }

    fn id_token_hint(&self, cookie: &str) -> Option<String> {
        if self.cfg.forward_token == ForwardToken::IdToken {
            let sealed = read_session_value(cookie, self.names)?;
            let s: Session = open_json(&self.cfg.keys, &self.names.session, &sealed).ok()?;
            return s.token;
        }
        let sealed = cookie_pairs(cookie)
            .find(|(k, _)| *k == self.names.id_token)?
            .1;
        open_json::<String>(&self.cfg.keys, &self.names.id_token, sealed).ok()
    }
}

/// The error codes of RFC 6749 §5.2 a token endpoint answers with; anything else is `other`.
pub const TOKEN_ERRORS: [&str; 7] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "other",
];

/// Why a token endpoint refused a grant, as far as its answer says (RFC 6749 §5.2): for the
/// log (status, `error`, `error_description`; never anything the filter sent) and the
/// per-error counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub status: u16,
    /// One of [`TOKEN_ERRORS`].
    pub error: &'static str,
    /// The provider's `error` as sent (printable ASCII, at most 64 characters).
    pub code: Option<String>,
    /// `error_description` (printable ASCII, at most 200 characters).
    pub description: Option<String>,
}

fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

/// Reads a token endpoint's error answer.
pub fn token_error(status: u16, body: &[u8]) -> TokenError {
    let v: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let text = |k: &str, max: usize| {
        v.as_ref()
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(|s| printable(s, max))
    };
    let code = text("error", 64);
    let error = code
        .as_deref()
        .and_then(|c| TOKEN_ERRORS.iter().find(|e| **e == c))
        .copied()
        .unwrap_or("other");
    TokenError {
        status,
        error,
        code,
        description: text("error_description", 200),
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {}", self.status)?;
        if let Some(c) = &self.code {
            write!(f, ", error {c}")?;
        }
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// Parses a token endpoint response (RFC 6749 §5.1).
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenSet, Failure> {
    if status != 200 {
        return Err(Failure::TokenEndpoint);
    }
    if body.len() > 64 * 1024 {
        return Err(Failure::TokenResponse);
    }
    let v: Map<String, Value> = serde_json::from_slice(body).map_err(|_| Failure::TokenResponse)?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let access_token = text("access_token")
        .filter(|t| !t.is_empty())
        .ok_or(Failure::TokenResponse)?;
    if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err(Failure::TokenResponse);
    }
    let tokens = TokenSet {
        access_token,
        id_token: text("id_token"),
        refresh_token: text("refresh_token"),
        expires_in: v.get("expires_in").and_then(Value::as_u64),
    };
    let clean = |t: &Option<String>| t.as_deref().is_none_or(header_value_ok);
    if !header_value_ok(&tokens.access_token)
        || !clean(&tokens.id_token)
        || !clean(&tokens.refresh_token)
    {
        return Err(Failure::TokenResponse);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests;

//! The session and the login transaction, and the cookies that carry them.
//!
//! Cookies, for a configured name `N`:
//! - `N` (and `N_1`, `N_2`, … when the sealed session is longer than one cookie can hold): the
//!   session, sealed. A chunked session's first cookie starts with `c<count>:`, so stale chunks
//!   from an older, longer session are never glued on; the filter expires them.
//! - `N_login_<state prefix>`, `Path=<callback path>`, 10 minutes: one login in progress (PKCE
//!   verifier, state, nonce, return URL), sealed; one per tab, sent only to the callback.
//! - `N_idt`, `Path=<logout path>`: the ID token for the logout's `id_token_hint` when the
//!   session does not forward the ID token itself; sent only to the logout path, so the hot path
//!   does not carry it.
//!
//! Path-scoped cookies cannot be `__Host-` cookies; `__Host-X` becomes `__Secure-X` for them.

use crate::config::CookieSpec;
use crate::seal::{KeyRing, OpenError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest cookie value written, in bytes (name + value must stay under 4096).
pub const CHUNK: usize = 3800;
/// Most chunks read or written.
pub const MAX_CHUNKS: usize = 8;
/// Lifetime of a login transaction.
pub const LOGIN_TTL_S: u64 = 600;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a session cookie holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Random session id (refresh coordination, revocation).
    #[serde(rename = "i")]
    pub id: String,
    /// How many refreshes made this session (each spends the previous refresh token): a cookie
    /// of an older generation than the newest known must not refresh again.
    #[serde(rename = "g", default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    #[serde(rename = "s")]
    pub sub: String,
    /// The claims kept for claim headers and minting.
    #[serde(rename = "c", default, skip_serializing_if = "Map::is_empty")]
    pub claims: Map<String, Value>,
    /// The token forwarded upstream (ID or access token); none when minting.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When the IdP's tokens expire (Unix seconds): refresh before, log in again after.
    #[serde(rename = "e")]
    pub token_exp: u64,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The session's absolute end (Unix seconds), whatever refreshes happen.
    #[serde(rename = "x")]
    pub expires: u64,
}

/// A login in progress, from the redirect to the IdP until the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginTxn {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub verifier: String,
    #[serde(rename = "r")]
    pub return_to: String,
    #[serde(rename = "t")]
    pub created_s: u64,
}

/// The filter's cookie names, derived once from the configured name.
#[derive(Debug, Clone)]
pub struct CookieNames {
    pub session: String,
    /// Prefix of login-transaction cookies (`…_login_`).
    pub login_prefix: String,
    pub id_token: String,
}

impl CookieNames {
    pub fn new(base: &str) -> Self {
        let scoped = match base.strip_prefix("__Host-") {
            Some(rest) => format!("__Secure-{rest}"),
            None => base.to_owned(),
        };
        Self {
            session: base.to_owned(),
            login_prefix: format!("{scoped}_login_"),
            id_token: format!("{scoped}_idt"),
        }
    }

    fn chunk(&self, i: usize) -> String {
        if i == 0 {
            self.session.clone()
        } else {
            format!("{}_{i}", self.session)
        }
    }

    /// Whether a cookie belongs to this filter (and is stripped before the upstream sees it).
    pub fn owns(&self, name: &str) -> bool {
        name == self.session
            || name == self.id_token
            || name.starts_with(&self.login_prefix)
            || name
                .strip_prefix(self.session.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// `name=value` pairs of a Cookie header (RFC 6265 §5.4), in order.
pub fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim();
        Some((
            k.trim(),
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v),
        ))
    })
}

fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    cookie_pairs(header)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The sealed session from the Cookie header, reassembled from its chunks.
pub fn read_session_value(header: &str, names: &CookieNames) -> Option<String> {
    let first = find(header, &names.session)?;
    let Some(rest) = first.strip_prefix('c') else {
        return Some(first.to_owned());
    };
    let (count, part0) = rest.split_once(':')?;
    let count: usize = count
        .parse()
        .ok()
        .filter(|c| (2..=MAX_CHUNKS).contains(c))?;
    let mut value = String::with_capacity(count * CHUNK);
    value.push_str(part0);
    for i in 1..count {
        value.push_str(find(header, &names.chunk(i))?);
    }
    Some(value)
}

/// Attributes of a Set-Cookie.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    pub spec: &'a CookieSpec,
    pub path: &'a str,
    pub max_age_s: u64,
}

fn set_cookie(name: &str, value: &str, a: &Attrs<'_>) -> String {
    let spec = a.spec;
    meshwright_shared::cookie::CookieAttrs {
        secure: spec.secure,
        http_only: spec.http_only,
        same_site: spec.same_site,
        path: String::new(),
        domain: spec.domain.clone(),
    }
    .set_cookie(name, value, a.max_age_s, Some(a.path))
}

/// Set-Cookie headers that store `sealed` as the session, and expire chunks left over in the
/// request's `cookie_header`. `None` when the session needs more than [`MAX_CHUNKS`] cookies.
pub fn session_cookies(
    names: &CookieNames,
    sealed: &str,
    spec: &CookieSpec,
    max_age_s: u64,
    cookie_header: Option<&str>,
) -> Option<Vec<String>> {
    let attrs = Attrs {
        spec,
        path: &spec.path,
        max_age_s,
    };
    let parts: Vec<&str> = if sealed.len() <= CHUNK {
        vec![sealed]
    } else {
        sealed
            .as_bytes()
            .chunks(CHUNK)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect()
    };
    if parts.len() > MAX_CHUNKS {
        return None;
    }
    let mut out = Vec::with_capacity(parts.len() + 1);
    for (i, part) in parts.iter().enumerate() {
        let value = if i == 0 && parts.len() > 1 {
            format!("c{}:{part}", parts.len())
        } else {
            (*part).to_owned()
        };
        out.push(set_cookie(&names.chunk(i), &value, &attrs));
    }
    if let Some(h) = cookie_header {
        out.extend(stale_chunks(names, h, parts.len()).map(|n| expire(&n, spec, &spec.path)));
    }
    Some(out)
}

fn stale_chunks<'a>(
    names: &'a CookieNames,
    header: &'a str,
    keep: usize,
) -> impl Iterator<Item = String> + 'a {
    cookie_pairs(header).filter_map(move |(k, _)| {
        let n: usize = k
            .strip_prefix(names.session.as_str())?
            .strip_prefix('_')?
            .parse()
            .ok()?;
        (n >= keep).then(|| k.to_owned())
    })
}

/// A Set-Cookie that deletes cookie `name` at `path`.
pub fn expire(name: &str, spec: &CookieSpec, path: &str) -> String {
    set_cookie(
        name,
        "",
        &Attrs {
            spec,
            path,
            max_age_s: 0,
        },
    )
}

/// Set-Cookies that delete every filter cookie present in the request (logout, bad session).
pub fn expire_all(
    names: &CookieNames,
    spec: &CookieSpec,
    cookie_header: &str,
    callback_path: &str,
    logout_path: &str,
) -> Vec<String> {
    cookie_pairs(cookie_header)
        .filter(|(k, _)| names.owns(k))
        .map(|(k, _)| {
            let path = if k.starts_with(&names.login_prefix) {
                callback_path
            } else if k == names.id_token {
                logout_path
            } else {
                &spec.path
            };
            expire(k, spec, path)
        })
        .collect()
}

/// A login transaction's cookie name (keyed by the state, so parallel logins in several tabs
/// do not overwrite each other).
pub fn login_cookie_name(names: &CookieNames, state: &str) -> String {
    let prefix: String = state.chars().take(12).collect();
    format!("{}{prefix}", names.login_prefix)
}

pub fn login_cookie(
    names: &CookieNames,
    txn_sealed: &str,
    state: &str,
    spec: &CookieSpec,
    callback_path: &str,
) -> String {
    set_cookie(
        &login_cookie_name(names, state),
        txn_sealed,
        &Attrs {
            spec,
            path: callback_path,
            max_age_s: LOGIN_TTL_S,
        },
    )
}

pub fn id_token_cookie(
    names: &CookieNames,
    sealed: &str,
    spec: &CookieSpec,
    logout_path: &str,
    max_age_s: u64,
) -> String {
    set_cookie(
        &names.id_token,
        sealed,
        &Attrs {
            spec,
            path: logout_path,
            max_age_s,
        },
    )
}

/// The Cookie header the upstream should see: the filter's cookies removed (`None`: remove the
/// header; unchanged when the request had none of them).
pub fn strip_owned(names: &CookieNames, header: &str) -> Option<Option<String>> {
    if !cookie_pairs(header).any(|(k, _)| names.owns(k)) {
        return None;
    }
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(k, _)| k).trim();
            !p.is_empty() && !names.owns(name)
        })
        .collect();
    Some((!kept.is_empty()).then(|| kept.join("; ")))
}

/// Seals and opens the session and login-transaction payloads (compact JSON inside the AEAD).
pub fn seal_json<T: Serialize>(
    keys: &KeyRing,
    cookie: &str,
    value: &T,
    nonce: [u8; 24],
) -> Option<String> {
    let json = serde_json::to_vec(value).ok()?;
    keys.seal(cookie, &json, nonce)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("sealed, but not a valid payload")]
    Payload,
}

pub fn open_json<T: serde::de::DeserializeOwned>(
    keys: &KeyRing,
    cookie: &str,
    sealed: &str,
) -> Result<T, SessionError> {
    let plain = keys.open(cookie, sealed)?;
    serde_json::from_slice(&plain).map_err(|_| SessionError::Payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn names() -> CookieNames {
        CookieNames::new("__Host-mw")
    }

    fn spec() -> CookieSpec {
        CookieSpec::default()
    }

    #[test]
    fn names_follow_the_prefix_rules() {
        let n = names();
        assert_eq!(n.session, "__Host-mw");
        assert_eq!(n.login_prefix, "__Secure-mw_login_");
        assert_eq!(n.id_token, "__Secure-mw_idt");
        assert!(
            n.owns("__Host-mw")
                && n.owns("__Host-mw_3")
                && n.owns("__Secure-mw_login_abc")
                && n.owns("__Secure-mw_idt")
        );
        assert!(
            !n.owns("__Host-mw_x")
                && !n.owns("__Host-mwx")
                && !n.owns("theme")
                && !n.owns("__Host-mw_")
        );
    }

    #[test]
    fn short_sessions_are_one_cookie() {
        let c = session_cookies(&names(), "v1.k.AAAA", &spec(), 3600, None).unwrap();
        assert_eq!(
            c,
            ["__Host-mw=v1.k.AAAA; Max-Age=3600; Path=/; Secure; HttpOnly; SameSite=Lax"]
        );
        let header = "a=1; __Host-mw=v1.k.AAAA; b=2";
        assert_eq!(
            read_session_value(header, &names()).as_deref(),
            Some("v1.k.AAAA")
        );
    }

    #[test]
    fn long_sessions_are_chunked_and_reassembled() {
        let sealed: String = "v1.k.".to_owned() + &"x".repeat(9000);
        let set = session_cookies(&names(), &sealed, &spec(), 3600, None).unwrap();
        assert_eq!(set.len(), 3);
        // What a browser would send back.
        let header = set
            .iter()
            .map(|c| c.split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ");
        assert!(header.starts_with("__Host-mw=c3:"));
        assert_eq!(
            read_session_value(&header, &names()).as_deref(),
            Some(sealed.as_str())
        );
        // A missing chunk means no session, not a truncated one.
        let without_last = header.rsplit_once("; ").unwrap().0;
        assert_eq!(read_session_value(without_last, &names()), None);
    }

    #[test]
    fn stale_chunks_are_expired() {
        let old = "__Host-mw=c3:aa; __Host-mw_1=bb; __Host-mw_2=cc; other=1";
        let set = session_cookies(&names(), "v1.k.short", &spec(), 60, Some(old)).unwrap();
        assert_eq!(set.len(), 3, "{set:?}");
        assert!(set[1].starts_with("__Host-mw_1=; Max-Age=0; Path=/"));
        assert!(set[2].starts_with("__Host-mw_2=; Max-Age=0; Path=/"));
    }

    #[test]
    fn owned_cookies_are_stripped_from_the_upstream_request() {
        let n = names();
        assert_eq!(strip_owned(&n, "a=1; b=2"), None, "untouched");
        assert_eq!(
            strip_owned(&n, "a=1; __Host-mw=s; b=2; __Host-mw_1=t"),
            Some(Some("a=1; b=2".into()))
        );
        assert_eq!(strip_owned(&n, "__Host-mw=s"), Some(None), "header removed");
    }

    #[test]
    fn expire_all_uses_each_cookies_path() {
        let set = expire_all(
            &names(),
            &spec(),
            "__Host-mw=a; __Secure-mw_login_abc=b; __Secure-mw_idt=c; x=1",
            "/cb",
            "/lo",
        );
        assert_eq!(set.len(), 3);
        assert!(set[1].contains("Path=/cb"));
        assert!(set[2].contains("Path=/lo"));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn cookie_parsing_never_panics(h in ".{0,400}") {
                let n = names();
                let _ = read_session_value(&h, &n);
                let _ = strip_owned(&n, &h);
                let _ = expire_all(&n, &spec(), &h, "/cb", "/lo");
                let _ = session_cookies(&n, "v1", &spec(), 1, Some(&h));
            }

            #[test]
            fn chunking_round_trips(len in 1usize..30000) {
                let sealed: String = std::iter::repeat_n('a', len).collect();
                match session_cookies(&names(), &sealed, &spec(), 1, None) {
                    Some(set) => {
                        let header = set.iter().map(|c| c.split(';').next().unwrap()).collect::<Vec<_>>().join("; ");
                        let back = read_session_value(&header, &names());
                        prop_assert_eq!(back.as_deref(), Some(sealed.as_str()));
                    }
                    None => prop_assert!(len.div_ceil(CHUNK) > MAX_CHUNKS),
                }
            }
        }
    }
}

//! What the filter learns from the OpenID Provider: the discovery document, the signing keys
//! (JWKS), and the verification of the JWTs it signs.

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

/// Largest discovery document or JWKS accepted, in bytes.
pub const MAX_DOCUMENT: usize = 256 * 1024;

/// An IdP endpoint the proxy calls itself (through the IdP cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// `:authority` of the call.
    pub authority: String,
    /// `:path` of the call (path and query).
    pub path: String,
}

impl Endpoint {
    pub fn parse(s: &str) -> Option<Self> {
        let u = crate::urls::HttpUrl::parse(s)?;
        Some(Self {
            url: u.as_string(),
            authority: u.authority,
            path: u.path_and_query,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: Endpoint,
    pub jwks_uri: Endpoint,
    pub end_session_endpoint: Option<String>,
    /// Where the claims the ID token leaves out are (OIDC Core §5.3), if the IdP has one.
    pub userinfo_endpoint: Option<Endpoint>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207): every callback then names
    /// the issuer in `iss`, and one without it is refused.
    pub iss_in_callback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("not a JSON document of at most 256 KiB")]
    NotJson,
    #[error("issuer `{got}` is not the configured `{want}`")]
    IssuerMismatch { got: String, want: String },
    #[error("`{0}` missing or not an http(s) URL")]
    BadField(&'static str),
    #[error("no usable signing key")]
    NoKeys,
}

/// The discovery URL of an issuer (RFC 8414 / OIDC Discovery §4).
pub fn discovery_endpoint(issuer: &str) -> Option<Endpoint> {
    Endpoint::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
}

pub fn parse_discovery(body: &[u8], issuer: &str) -> Result<Discovery, DocumentError> {
    if body.len() > MAX_DOCUMENT {
        return Err(DocumentError::NotJson);
    }
    let doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| DocumentError::NotJson)?;
    let text = |k: &'static str| doc.get(k).and_then(Value::as_str);
    let got = text("issuer").unwrap_or_default();
    if got != issuer {
        return Err(DocumentError::IssuerMismatch {
            got: got.to_owned(),
            want: issuer.to_owned(),
        });
    }
    let endpoint = |k: &'static str| {
        text(k)
            .and_then(Endpoint::parse)
            .ok_or(DocumentError::BadField(k))
    };
    Ok(Discovery {
        issuer: got.to_owned(),
        authorization_endpoint: endpoint("authorization_endpoint")?.url,
        token_endpoint: endpoint("token_endpoint")?,
        jwks_uri: endpoint("jwks_uri")?,
        end_session_endpoint: text("end_session_endpoint")
            .and_then(Endpoint::parse)
            .map(|e| e.url),
        userinfo_endpoint: text("userinfo_endpoint").and_then(Endpoint::parse),
        iss_in_callback: doc
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

enum PublicKey {
    Rs256(Box<RS256PublicKey>),
    Es256(Box<ES256PublicKey>),
}

struct VerifyKey {
    kid: Option<String>,
    key: PublicKey,
}

/// The IdP's signing keys (RS256 and ES256 signature keys; others are ignored).
pub struct Jwks {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self
            .keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect();
        f.debug_struct("Jwks").field("kids", &kids).finish()
    }
}

pub fn parse_jwks(body: &[u8]) -> Result<Jwks, DocumentError> {
    if body.len() > MAX_DOCUMENT {
        return Err(DocumentError::NotJson);
    }
    let doc: Value = serde_json::from_slice(body).map_err(|_| DocumentError::NotJson)?;
    let mut keys = Vec::new();
    for jwk in doc
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if jwk
            .get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        let text = jwk.to_string();
        let key = match (
            jwk.get("kty").and_then(Value::as_str),
            jwk.get("alg").and_then(Value::as_str),
        ) {
            (Some("RSA"), None | Some("RS256")) => RS256PublicKey::from_jwk(&text)
                .ok()
                .map(|k| PublicKey::Rs256(Box::new(k))),
            (Some("EC"), None | Some("ES256"))
                if jwk.get("crv").and_then(Value::as_str) == Some("P-256") =>
            {
                ES256PublicKey::from_jwk(&text)
                    .ok()
                    .map(|k| PublicKey::Es256(Box::new(k)))
            }
            _ => None,
        };
        if let Some(key) = key {
            keys.push(VerifyKey { kid, key });
        }
    }
    if keys.is_empty() {
        return Err(DocumentError::NoKeys);
    }
    Ok(Jwks { keys })
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub nonce: Option<&'a str>,
    pub now_s: u64,
    /// Clock skew tolerated on `exp`/`iat`/`nbf`.
    pub leeway_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    /// No key with this token's `kid`: refetch the JWKS (rate-limited) and try again.
    #[error("unknown signing key")]
    UnknownKey,
    #[error("signature, issuer, audience, nonce or lifetime check failed")]
    Invalid,
    /// Signed with an algorithm the filter does not accept (only RS256 and ES256: an HS256 ID
    /// token would be keyed with the client secret, `none` is no signature).
    #[error("signed with an algorithm other than RS256 and ES256")]
    UnsupportedAlg,
}

/// Verified claims of an IdP-signed token.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub sub: String,
    pub exp_s: u64,
    pub claims: Map<String, Value>,
}

impl Jwks {
    pub fn verify(&self, token: &str, expect: &Expect<'_>) -> Result<Verified, VerifyError> {
        let meta = Token::decode_metadata(token).map_err(|_| VerifyError::Malformed)?;
        let alg = meta.algorithm();
        let kid = meta.key_id();
        let candidates: Vec<&VerifyKey> = self
            .keys
            .iter()
            .filter(|k| {
                matches!(
                    (&k.key, alg),
                    (PublicKey::Rs256(_), "RS256") | (PublicKey::Es256(_), "ES256")
                )
            })
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .collect();
        if candidates.is_empty() {
            return Err(if matches!(alg, "RS256" | "ES256") {
                VerifyError::UnknownKey
            } else {
                VerifyError::UnsupportedAlg
            });
        }
        let options = || VerificationOptions {
            allowed_issuers: Some([expect.issuer.to_owned()].into()),
            allowed_audiences: Some([expect.audience.to_owned()].into()),
            required_nonce: expect.nonce.map(str::to_owned),
            time_tolerance: Some(Duration::from_secs(expect.leeway_s)),
            artificial_time: Some(UnixTimeStamp::from_secs(expect.now_s)),
            max_token_length: Some(16 * 1024),
            ..Default::default()
        };
        for k in candidates {
            let verified = match &k.key {
                PublicKey::Rs256(pk) => {
                    pk.verify_token::<Map<String, Value>>(token, Some(options()))
                }
                PublicKey::Es256(pk) => {
                    pk.verify_token::<Map<String, Value>>(token, Some(options()))
                }
            };
            if let Ok(c) = verified {
                let (Some(sub), Some(exp)) = (c.subject, c.expires_at) else {
                    return Err(VerifyError::Invalid);
                };
                return Ok(Verified {
                    sub,
                    exp_s: exp.as_secs(),
                    claims: c.custom,
                });
            }
        }
        Err(VerifyError::Invalid)
    }
}

/// Longest wait after failed fetches of the IdP's documents.
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// Which document to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Discovery,
    Jwks,
}

/// When the IdP's documents are fetched: discovery first, the JWKS right after it, both again
/// every `refresh_ms`; after a failure the next try waits 1 s, doubling to at most
/// [`MAX_BACKOFF_MS`], until a fetch succeeds. One fetch at a time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchSchedule {
    next_discovery_ms: u64,
    next_jwks_ms: u64,
    failures: u32,
}

impl FetchSchedule {
    /// The fetch due at `now_ms`, if any (none while one is in flight; the JWKS only once the
    /// discovery document names it).
    pub fn due(&self, now_ms: u64, have_discovery: bool, in_flight: bool) -> Option<Fetch> {
        if in_flight {
            None
        } else if now_ms >= self.next_discovery_ms {
            Some(Fetch::Discovery)
        } else if have_discovery && now_ms >= self.next_jwks_ms {
            Some(Fetch::Jwks)
        } else {
            None
        }
    }

    /// A fetch of `what` succeeded.
    pub fn loaded(&mut self, what: Fetch, now_ms: u64, refresh_ms: u64) {
        self.failures = 0;
        match what {
            Fetch::Discovery => {
                self.next_discovery_ms = now_ms.saturating_add(refresh_ms);
                self.next_jwks_ms = now_ms;
            }
            Fetch::Jwks => self.next_jwks_ms = now_ms.saturating_add(refresh_ms),
        }
    }

    /// A fetch of `what` failed (an answer that is not a usable document).
    pub fn failed(&mut self, what: Fetch, now_ms: u64) {
        let wait = self.backoff();
        match what {
            Fetch::Discovery => self.next_discovery_ms = now_ms.saturating_add(wait),
            Fetch::Jwks => self.next_jwks_ms = now_ms.saturating_add(wait),
        }
    }

    /// Envoy refused to make the call (no such cluster): both documents wait.
    pub fn refused(&mut self, now_ms: u64) {
        let wait = self.backoff();
        self.next_discovery_ms = now_ms.saturating_add(wait);
        self.next_jwks_ms = now_ms.saturating_add(wait);
    }

    fn backoff(&mut self) -> u64 {
        self.failures = self.failures.saturating_add(1);
        (500u64 << self.failures.min(6)).min(MAX_BACKOFF_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_fetched_in_order_refreshed_and_retried_with_backoff() {
        let mut s = FetchSchedule::default();
        assert_eq!(
            s.due(0, false, false),
            Some(Fetch::Discovery),
            "at start-up"
        );
        assert_eq!(s.due(0, false, true), None, "one fetch at a time");
        s.failed(Fetch::Discovery, 0);
        assert_eq!(
            s.due(999, false, false),
            None,
            "1 s after the first failure"
        );
        assert_eq!(s.due(1000, false, false), Some(Fetch::Discovery));
        s.failed(Fetch::Discovery, 1000);
        assert_eq!(s.due(2999, false, false), None, "then 2 s");
        s.loaded(Fetch::Discovery, 3000, 3_600_000);
        assert_eq!(
            s.due(3000, true, false),
            Some(Fetch::Jwks),
            "the keys right after"
        );
        s.loaded(Fetch::Jwks, 3001, 3_600_000);
        assert_eq!(s.due(3002, true, false), None);
        assert_eq!(
            s.due(3_603_000, true, false),
            Some(Fetch::Discovery),
            "refreshed"
        );
        for _ in 0..10 {
            s.refused(5000);
        }
        assert_eq!(s.due(5000 + MAX_BACKOFF_MS - 1, true, false), None);
        assert_eq!(
            s.due(5000 + MAX_BACKOFF_MS, true, false),
            Some(Fetch::Discovery),
            "the backoff is capped"
        );
    }
    use crate::mint::tests::ES256_PEM;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const ISSUER: &str = "http://127.0.0.1:18080";
    const NOW: u64 = 1_800_000_000;

    fn discovery_doc(issuer: &str) -> Vec<u8> {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "end_session_endpoint": format!("{ISSUER}/session/end"),
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn discovery_is_parsed_and_the_issuer_checked() {
        let d = parse_discovery(&discovery_doc(ISSUER), ISSUER).unwrap();
        assert_eq!(d.token_endpoint.authority, "127.0.0.1:18080");
        assert_eq!(d.token_endpoint.path, "/token");
        assert_eq!(
            d.end_session_endpoint.as_deref(),
            Some("http://127.0.0.1:18080/session/end")
        );
        assert!(matches!(
            parse_discovery(&discovery_doc("https://evil.example"), ISSUER),
            Err(DocumentError::IssuerMismatch { .. })
        ));
        assert_eq!(
            parse_discovery(b"<html>", ISSUER),
            Err(DocumentError::NotJson)
        );
        assert_eq!(
            parse_discovery(br#"{"issuer":"http://127.0.0.1:18080"}"#, ISSUER),
            Err(DocumentError::BadField("authorization_endpoint"))
        );
        assert_eq!(
            discovery_endpoint("https://idp.example.com/realms/shop/")
                .unwrap()
                .path,
            "/realms/shop/.well-known/openid-configuration"
        );
    }

    fn signer() -> ES256KeyPair {
        ES256KeyPair::from_pem(ES256_PEM).unwrap().with_key_id("k1")
    }

    fn jwks_of(kp: &ES256KeyPair, kid: &str) -> Jwks {
        let jwk = kp.public_key().with_key_id(kid).to_jwk();
        parse_jwks(format!(r#"{{"keys":[{jwk},{{"kty":"oct","k":"AA"}}]}}"#).as_bytes()).unwrap()
    }

    fn id_token(kp: &ES256KeyPair, nonce: &str, iss: &str, aud: &str, exp: u64) -> String {
        let mut custom = Map::new();
        custom.insert("email".into(), "alice@example.com".into());
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(NOW)),
            expires_at: Some(UnixTimeStamp::from_secs(exp)),
            invalid_before: None,
            issuer: Some(iss.into()),
            subject: Some("alice".into()),
            audiences: Some(Audiences::AsString(aud.into())),
            jwt_id: None,
            nonce: Some(nonce.into()),
            custom,
        };
        kp.sign(claims).unwrap()
    }

    fn expect(nonce: Option<&str>) -> Expect<'_> {
        Expect {
            issuer: ISSUER,
            audience: "shop",
            nonce,
            now_s: NOW,
            leeway_s: 60,
        }
    }

    #[test]
    fn a_valid_id_token_verifies() {
        let kp = signer();
        let t = id_token(&kp, "n1", ISSUER, "shop", NOW + 300);
        let v = jwks_of(&kp, "k1").verify(&t, &expect(Some("n1"))).unwrap();
        assert_eq!(v.sub, "alice");
        assert_eq!(v.exp_s, NOW + 300);
        assert_eq!(v.claims["email"], "alice@example.com");
    }

    #[test]
    fn every_check_can_fail() {
        let kp = signer();
        let jwks = jwks_of(&kp, "k1");
        let bad = |t: &str, e: Expect<'_>| jwks.verify(t, &e).unwrap_err();
        assert_eq!(
            bad(
                &id_token(&kp, "n1", ISSUER, "shop", NOW + 300),
                expect(Some("n2"))
            ),
            VerifyError::Invalid,
            "nonce"
        );
        assert_eq!(
            bad(
                &id_token(&kp, "n1", "https://evil", "shop", NOW + 300),
                expect(Some("n1"))
            ),
            VerifyError::Invalid,
            "issuer"
        );
        assert_eq!(
            bad(
                &id_token(&kp, "n1", ISSUER, "other", NOW + 300),
                expect(Some("n1"))
            ),
            VerifyError::Invalid,
            "audience"
        );
        assert_eq!(
            bad(
                &id_token(&kp, "n1", ISSUER, "shop", NOW - 120),
                expect(Some("n1"))
            ),
            VerifyError::Invalid,
            "expired"
        );
        let other = ES256KeyPair::generate().with_key_id("k1");
        assert_eq!(
            bad(
                &id_token(&other, "n1", ISSUER, "shop", NOW + 300),
                expect(Some("n1"))
            ),
            VerifyError::Invalid,
            "signature"
        );
        let rotated = ES256KeyPair::generate().with_key_id("k2");
        assert_eq!(
            bad(
                &id_token(&rotated, "n1", ISSUER, "shop", NOW + 300),
                expect(Some("n1"))
            ),
            VerifyError::UnknownKey,
            "new kid"
        );
        assert_eq!(bad("a.b.c", expect(None)), VerifyError::Malformed);
        // alg=none and HS256 tokens are never accepted.
        let none = format!("{}.{}.", "eyJhbGciOiJub25lIn0", "eyJzdWIiOiJhIn0");
        assert_ne!(jwks.verify(&none, &expect(None)).map(|_| ()), Ok(()));
        let hs = HS256Key::from_bytes(&[7u8; 32])
            .authenticate(Claims::create(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(bad(&hs, expect(None)), VerifyError::UnsupportedAlg);
    }

    #[test]
    fn jwks_without_usable_keys_is_refused() {
        assert_eq!(
            parse_jwks(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#).unwrap_err(),
            DocumentError::NoKeys
        );
        assert_eq!(parse_jwks(b"nope").unwrap_err(), DocumentError::NotJson);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_tokens_and_documents_never_panic(t in ".{0,400}", d in proptest::collection::vec(any::<u8>(), 0..200)) {
                let jwks = jwks_of(&signer(), "k1");
                let _ = jwks.verify(&t, &expect(None));
                let _ = parse_jwks(&d);
                let _ = parse_discovery(&d, ISSUER);
            }
        }
    }
}

//! Token minting ("exchange" mode): instead of the IdP's token, upstream services get a
//! short-lived mesh-internal JWT carrying selected claims, signed by the gateway.
//!
//! ES256 keys are published as a JWKS at `jwks_path`, so an Istio RequestAuthentication can
//! trust them; HS512 (what JHipster services validate with a shared base64 secret) has no public
//! JWKS. RS256 minting is not offered: RSA private-key arithmetic adds about 200 KB to the module,
//! and ES256 signatures are smaller and faster; RS256 *verification* of IdP tokens is supported.
//! Minting is cached per session by the caller: a signature is
//! made once per session per `ttl_s`, not per request.

use crate::config::MintSpec;
use base64::Engine as _;
use jwt_simple::prelude::*;
use meshwright_shared::config::{ConfigError, Path, Reason};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum MintAlg {
    ES256,
    HS512,
}

enum Key {
    Es256(Box<ES256KeyPair>),
    Hs512(HS512Key),
}

pub struct Minter {
    key: Key,
    pub kid: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub ttl_s: u64,
    pub claims: Vec<String>,
    pub jwks_path: Option<String>,
    /// The JWKS document served at `jwks_path` (public keys only).
    pub jwks_json: Option<String>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Minter {
    pub fn from_spec(
        field: &Path,
        spec: &MintSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let key_field = field.key("key_env");
        let material = env(&spec.key_env)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ConfigError::new(&key_field, Reason::MissingEnv(spec.key_env.clone()))
            })?;
        let bad_key = |what: &str| {
            ConfigError::invalid(
                &key_field,
                format!("`{}` does not hold {what}", spec.key_env),
            )
        };
        let (key, jwks_entry) = match spec.alg {
            MintAlg::ES256 => {
                let kp = ES256KeyPair::from_pem(&material)
                    .map_err(|_| bad_key("a P-256 private key in PEM"))?;
                let kid = kp.public_key().jwk_thumbprint();
                let kp = kp.with_key_id(&kid);
                let jwk = public_jwk(&kp.public_key().with_key_id(&kid).to_jwk(), "ES256");
                (Key::Es256(Box::new(kp)), Some((kid, jwk)))
            }
            MintAlg::HS512 => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(material.trim())
                    .map_err(|_| bad_key("a base64 secret"))?;
                if raw.len() < 64 {
                    return Err(bad_key("a secret of at least 64 bytes (512 bits)"));
                }
                (Key::Hs512(HS512Key::from_bytes(&raw)), None)
            }
        };
        let ttl_s = spec.ttl_s.unwrap_or(300);
        if !(30..=3600).contains(&ttl_s) {
            return Err(ConfigError::out_of_range(
                field.key("ttl_s"),
                30,
                3600,
                ttl_s,
            ));
        }
        if spec.issuer.is_empty() {
            return Err(ConfigError::invalid(field.key("issuer"), "required"));
        }
        let jwks_path = match (&spec.jwks_path, spec.alg) {
            (Some(_), MintAlg::HS512) => {
                return Err(ConfigError::invalid(
                    field.key("jwks_path"),
                    "HS512 keys are secret: there is no JWKS to publish",
                ));
            }
            (Some(p), _) if p.starts_with('/') && !p.starts_with("//") && !p.contains('?') => {
                Some(p.clone())
            }
            (Some(p), _) => {
                return Err(ConfigError::invalid(
                    field.key("jwks_path"),
                    format!("`{p}` is not a path"),
                ));
            }
            (None, MintAlg::HS512) => None,
            (None, _) => Some("/.well-known/meshwright/jwks.json".to_owned()),
        };
        let (kid, jwks_json) = match jwks_entry {
            Some((kid, jwk)) => (kid, Some(serde_json::json!({ "keys": [jwk] }).to_string())),
            None => ("hs512".to_owned(), None),
        };
        Ok(Self {
            key,
            kid,
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            ttl_s,
            claims: spec.claims.clone(),
            jwks_path,
            jwks_json,
        })
    }

    /// Mints a token for `sub` with the kept `claims`, valid from `now_s` for `ttl_s`.
    pub fn mint(&self, sub: &str, claims: &Map<String, Value>, now_s: u64) -> Option<String> {
        let mut custom = Map::new();
        for name in &self.claims {
            if let Some(v) = claims.get(name) {
                custom.insert(name.clone(), v.clone());
            }
        }
        let mut c = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(now_s)),
            expires_at: Some(UnixTimeStamp::from_secs(now_s.saturating_add(self.ttl_s))),
            invalid_before: Some(UnixTimeStamp::from_secs(now_s)),
            issuer: Some(self.issuer.clone()),
            subject: Some(sub.to_owned()),
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom,
        };
        if !self.audiences.is_empty() {
            c.audiences = Some(Audiences::AsSet(self.audiences.iter().cloned().collect()));
        }
        match &self.key {
            Key::Es256(k) => k.sign(c).ok(),
            Key::Hs512(k) => k.authenticate(c).ok(),
        }
    }
}

/// A JWK as jwt-simple renders it, with `alg` and `use` set for RequestAuthentication.
fn public_jwk(jwk_json: &str, alg: &str) -> Value {
    let mut v: Value = serde_json::from_str(jwk_json).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("alg".into(), Value::String(alg.into()));
        o.insert("use".into(), Value::String("sig".into()));
        o.remove("d");
    }
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A test-only P-256 key (generated with `openssl genpkey -algorithm EC`).
    pub const ES256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgDESRgLwuAgkPnLaZ
pgriDUUkS60J/TeNsRN+hdyAgOGhRANCAAQSYWgOtZqbbLgLntt8Z2c62HtcKosa
pg7uju2ZrUlw7o4Qg7WPiXvpQGDzhnayP3LWNZlOEYzmCdWC0rMidqAG
-----END PRIVATE KEY-----";

    fn spec(alg: MintAlg) -> MintSpec {
        MintSpec {
            alg,
            key_env: "K".into(),
            issuer: "https://shop.example.com/meshwright".into(),
            audiences: vec!["ecommerce".into()],
            ttl_s: Some(300),
            claims: vec!["email".into(), "groups".into()],
            jwks_path: None,
        }
    }

    #[test]
    fn es256_tokens_verify_against_the_published_jwks() {
        let m = Minter::from_spec(&Path::root(), &spec(MintAlg::ES256), &|_| {
            Some(ES256_PEM.into())
        })
        .unwrap();
        let mut claims = Map::new();
        claims.insert("email".into(), "a@example.com".into());
        claims.insert("secret".into(), "not copied".into());
        let now = 1_800_000_000;
        let token = m.mint("alice", &claims, now).unwrap();
        let jwks: Value = serde_json::from_str(m.jwks_json.as_deref().unwrap()).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kid"], m.kid.as_str());
        assert_eq!(jwk["alg"], "ES256");
        assert!(jwk.get("d").is_none(), "private part never published");
        let pk = ES256PublicKey::from_jwk(&jwk.to_string()).unwrap();
        let opts = VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(now + 10)),
            allowed_issuers: Some(["https://shop.example.com/meshwright".to_owned()].into()),
            ..Default::default()
        };
        let verified = pk
            .verify_token::<Map<String, Value>>(&token, Some(opts))
            .unwrap();
        assert_eq!(verified.subject.as_deref(), Some("alice"));
        assert_eq!(verified.custom["email"], "a@example.com");
        assert!(!verified.custom.contains_key("secret"));
        assert_eq!(
            m.jwks_path.as_deref(),
            Some("/.well-known/meshwright/jwks.json")
        );
    }

    #[test]
    fn hs512_needs_a_long_secret_and_has_no_jwks() {
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let e = Minter::from_spec(&Path::root().key("mint"), &spec(MintAlg::HS512), &|_| {
            Some(short.clone())
        })
        .unwrap_err();
        assert_eq!(e.field, "mint.key_env");
        let long = base64::engine::general_purpose::STANDARD.encode([1u8; 64]);
        let m = Minter::from_spec(&Path::root(), &spec(MintAlg::HS512), &|_| {
            Some(long.clone())
        })
        .unwrap();
        assert!(m.jwks_json.is_none() && m.jwks_path.is_none());
        let token = m.mint("bob", &Map::new(), 1_800_000_000).unwrap();
        let key = HS512Key::from_bytes(&[1u8; 64]);
        let opts = VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(1_800_000_001)),
            ..Default::default()
        };
        assert!(
            key.verify_token::<NoCustomClaims>(&token, Some(opts))
                .is_ok()
        );
    }

    #[test]
    fn bad_keys_name_the_field() {
        let e = Minter::from_spec(&Path::root().key("mint"), &spec(MintAlg::ES256), &|_| {
            Some("nope".into())
        })
        .unwrap_err();
        assert_eq!(e.field, "mint.key_env");
        let e = Minter::from_spec(&Path::root().key("mint"), &spec(MintAlg::ES256), &|_| None)
            .unwrap_err();
        assert_eq!(e.reason, Reason::MissingEnv("K".into()));
    }
}

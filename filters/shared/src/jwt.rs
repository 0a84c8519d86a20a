//! Reading a claim out of a JWT *without verifying it*.
//!
//! Used where the token has already been verified upstream of this filter (Istio's
//! RequestAuthentication, or meshwright's OAuth2 filter at the gateway) and only a stable user
//! key is needed, e.g. `sub` for sticky cohorts. Never use this for an authorization decision.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Largest JWT payload segment decoded, in base64 characters.
pub const MAX_PAYLOAD_B64: usize = 16 * 1024;

/// The bearer token of an `Authorization` header (`Bearer <token>`, scheme case-insensitive).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The claim `name` of an unverified JWT, as a string (numbers are rendered in decimal).
pub fn peek_claim(token: &str, name: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_PAYLOAD_B64 {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json).ok()?;
    match claims.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn token(payload: &str) -> String {
        format!(
            "eyJhbGciOiJub25lIn0.{}.sig",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_string_and_number_claims() {
        let t = token(r#"{"sub":"alice","n":42,"obj":{}}"#);
        assert_eq!(peek_claim(&t, "sub").as_deref(), Some("alice"));
        assert_eq!(peek_claim(&t, "n").as_deref(), Some("42"));
        assert_eq!(peek_claim(&t, "obj"), None);
        assert_eq!(peek_claim(&t, "missing"), None);
    }

    #[test]
    fn garbage_is_none() {
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &token("not json"),
            &token("[1]"),
        ] {
            assert_eq!(peek_claim(t, "sub"), None, "{t}");
        }
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(t in ".{0,300}") {
                let _ = peek_claim(&t, "sub");
                let _ = bearer_token(&t);
            }
        }
    }
}

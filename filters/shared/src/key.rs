//! Where a user's identity is read from, for sticky per-user decisions.
//!
//! Wire format: exactly one of `{"header": "x-user-id"}`, `{"cookie": "uid"}`,
//! `{"jwt_claim": "sub"}` (the claim is read from the `Authorization: Bearer` token without
//! verifying it — see [`crate::jwt`]).

use crate::config::{ConfigError, Path};
use crate::cookie::cookie_value;
use crate::headers::HeaderSource;
use crate::jwt::{bearer_token, peek_claim};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum KeySourceSpec {
    Header(String),
    Cookie(String),
    JwtClaim(String),
}

/// A compiled identity source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(String),
    Cookie(String),
    JwtClaim(String),
}

/// Longest identity value used; longer ones are treated as absent (no sticky decision).
pub const MAX_KEY_LEN: usize = 512;

impl KeySourceSpec {
    pub fn compile(&self, field: &Path) -> Result<KeySource, ConfigError> {
        let (name, make): (&str, fn(String) -> KeySource) = match self {
            Self::Header(n) => (n, KeySource::Header),
            Self::Cookie(n) => (n, KeySource::Cookie),
            Self::JwtClaim(n) => (n, KeySource::JwtClaim),
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b == b';') {
            return Err(ConfigError::invalid(
                field,
                format!("`{name}` is not a usable header, cookie or claim name"),
            ));
        }
        let name = match self {
            Self::Header(_) => name.to_ascii_lowercase(),
            _ => name.to_owned(),
        };
        Ok(make(name))
    }
}

impl KeySource {
    /// The user key of this request, if it has one.
    pub fn extract<'a>(&self, req: &'a impl HeaderSource) -> Option<Cow<'a, str>> {
        let key = match self {
            Self::Header(name) => Cow::Borrowed(req.header(name)?),
            Self::Cookie(name) => Cow::Borrowed(cookie_value(req.header("cookie")?, name)?),
            Self::JwtClaim(claim) => Cow::Owned(peek_claim(
                bearer_token(req.header("authorization")?)?,
                claim,
            )?),
        };
        (!key.is_empty() && key.len() <= MAX_KEY_LEN).then_some(key)
    }

    /// The request header this source reads.
    pub fn header_read(&self) -> &str {
        match self {
            Self::Header(name) => name,
            Self::Cookie(_) => "cookie",
            Self::JwtClaim(_) => "authorization",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_json;
    use crate::headers::HeaderList;
    use base64::Engine as _;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn source(json: &str) -> KeySource {
        parse_json::<KeySourceSpec>(json.as_bytes())
            .unwrap()
            .compile(&Path::root())
            .unwrap()
    }

    #[test]
    fn each_source_reads_its_place() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"bob"}"#);
        let req: HeaderList = [
            ("x-user-id", "u-1".to_owned()),
            ("cookie", "a=1; uid=u-2".to_owned()),
            ("authorization", format!("Bearer h.{payload}.s")),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            source(r#"{"header":"X-User-Id"}"#).extract(&req).as_deref(),
            Some("u-1")
        );
        assert_eq!(
            source(r#"{"cookie":"uid"}"#).extract(&req).as_deref(),
            Some("u-2")
        );
        assert_eq!(
            source(r#"{"jwt_claim":"sub"}"#).extract(&req).as_deref(),
            Some("bob")
        );
        assert_eq!(source(r#"{"cookie":"nope"}"#).extract(&req), None);
    }

    #[test]
    fn empty_and_oversized_keys_are_absent() {
        let req: HeaderList = [("x-u", ""), ("x-big", &"k".repeat(MAX_KEY_LEN + 1))]
            .into_iter()
            .collect();
        assert_eq!(source(r#"{"header":"x-u"}"#).extract(&req), None);
        assert_eq!(source(r#"{"header":"x-big"}"#).extract(&req), None);
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(parse_json::<KeySourceSpec>(br#"{"header":"a","cookie":"b"}"#).is_err());
        assert!(parse_json::<KeySourceSpec>(br#"{"ip":"x"}"#).is_err());
        let e = parse_json::<KeySourceSpec>(br#"{"cookie":"a b"}"#)
            .unwrap()
            .compile(&Path::root().key("key"))
            .unwrap_err();
        assert_eq!(e.field, "key");
    }
}

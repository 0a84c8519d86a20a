//! Whose request is it: the identity chain, and the anonymous id for users without one.
//!
//! The configured sources are tried in order (a JWT claim read without verification, a cookie,
//! a header — see `meshwright_shared::key`); the first that yields a value wins. Then, when
//! `anonymous_id` is configured, its cookie; and when that is absent or malformed, a new id
//! drawn from the injected random generator, which the filter sets as a cookie on the response.

use crate::config::{AbConfig, CookieAttrs};
use meshwright_shared::cookie::cookie_value;
use meshwright_shared::crypto::to_hex;
use meshwright_shared::headers::HeaderSource;
use meshwright_shared::rng::Random;
use std::borrow::Cow;

/// Length of an anonymous id: 128 random bits as lower-case hex.
pub const ANONYMOUS_ID_LEN: usize = 32;

/// Where an identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// `identity[i]` of the config.
    Configured(usize),
    /// The anonymous-id cookie the filter set earlier.
    AnonymousCookie,
    /// Generated for this request (to be set as a cookie).
    Generated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity<'a> {
    pub id: Cow<'a, str>,
    pub source: IdSource,
}

/// The request's identity, generating an anonymous one when configured and nothing else is
/// found; `None` when there is none.
pub fn resolve<'a>(
    config: &AbConfig,
    req: &'a impl HeaderSource,
    rng: &mut impl Random,
) -> Option<Identity<'a>> {
    for (i, source) in config.identity.iter().enumerate() {
        if let Some(id) = source.extract(req) {
            return Some(Identity {
                id,
                source: IdSource::Configured(i),
            });
        }
    }
    let anon = config.anonymous_id.as_ref()?;
    if let Some(id) = read_anonymous(anon, req) {
        return Some(Identity {
            id: Cow::Borrowed(id),
            source: IdSource::AnonymousCookie,
        });
    }
    Some(Identity {
        id: Cow::Owned(generate(rng)),
        source: IdSource::Generated,
    })
}

/// The anonymous id in the request's cookie, if it is one the filter could have issued.
pub fn read_anonymous<'a>(attrs: &CookieAttrs, req: &'a impl HeaderSource) -> Option<&'a str> {
    cookie_value(req.header("cookie")?, &attrs.name).filter(|v| is_anonymous_id(v))
}

/// 32 lower-case hex digits.
pub fn is_anonymous_id(v: &str) -> bool {
    v.len() == ANONYMOUS_ID_LEN && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new anonymous id: 128 bits from the generator.
pub fn generate(rng: &mut impl Random) -> String {
    let mut bytes = [0u8; 16];
    let (a, b) = bytes.split_at_mut(8);
    a.copy_from_slice(&rng.next_u64().to_le_bytes());
    b.copy_from_slice(&rng.next_u64().to_le_bytes());
    to_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use meshwright_shared::headers::HeaderList;
    use meshwright_shared::rng::{Sequence, WyRand};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn config(json: &str) -> AbConfig {
        AbConfig::from_json(json.as_bytes()).unwrap()
    }

    fn bearer(sub: &str) -> String {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"sub":"{sub}"}}"#));
        format!("Bearer eyJhbGciOiJSUzI1NiJ9.{p}.c2ln")
    }

    const CHAIN: &str = r#"{"identity":[{"jwt_claim":"sub"},{"cookie":"uid"},{"header":"x-device-id"}],
        "anonymous_id":{"name":"ab_uid"}}"#;

    #[test]
    fn the_chain_is_tried_in_order() {
        let c = config(CHAIN);
        let anon = "0123456789abcdef0123456789abcdef";
        let mut rng = WyRand::new(1);
        let all: HeaderList = [
            ("authorization", bearer("alice")),
            ("cookie", format!("uid=u-2; ab_uid={anon}")),
            ("x-device-id", "d-3".to_owned()),
        ]
        .into_iter()
        .collect();
        let id = resolve(&c, &all, &mut rng).unwrap();
        assert_eq!(
            (id.id.as_ref(), id.source),
            ("alice", IdSource::Configured(0))
        );
        let no_jwt: HeaderList = [
            ("cookie", format!("uid=u-2; ab_uid={anon}")),
            ("x-device-id", "d-3".to_owned()),
        ]
        .into_iter()
        .collect();
        let id = resolve(&c, &no_jwt, &mut rng).unwrap();
        assert_eq!(
            (id.id.as_ref(), id.source),
            ("u-2", IdSource::Configured(1))
        );
        let header_only: HeaderList = [
            ("cookie", format!("ab_uid={anon}")),
            ("x-device-id", "d-3".to_owned()),
        ]
        .into_iter()
        .collect();
        let id = resolve(&c, &header_only, &mut rng).unwrap();
        assert_eq!(
            (id.id.as_ref(), id.source),
            ("d-3", IdSource::Configured(2))
        );
        let anon_only: HeaderList = [("cookie", format!("ab_uid={anon}"))].into_iter().collect();
        let id = resolve(&c, &anon_only, &mut rng).unwrap();
        assert_eq!(
            (id.id.as_ref(), id.source),
            (anon, IdSource::AnonymousCookie)
        );
        let nothing = HeaderList::new();
        let id = resolve(&c, &nothing, &mut rng).unwrap();
        assert_eq!(id.source, IdSource::Generated);
        assert!(is_anonymous_id(&id.id));
    }

    #[test]
    fn a_malformed_anonymous_cookie_is_replaced() {
        let c = config(CHAIN);
        for bad in [
            "short",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
        ] {
            let req: HeaderList = [("cookie", format!("ab_uid={bad}"))].into_iter().collect();
            let id = resolve(&c, &req, &mut WyRand::new(2)).unwrap();
            assert_eq!(id.source, IdSource::Generated, "{bad}");
        }
    }

    #[test]
    fn without_anonymous_ids_users_without_identity_have_none() {
        let c = config(r#"{"identity":[{"header":"x-user"}]}"#);
        assert_eq!(resolve(&c, &HeaderList::new(), &mut WyRand::new(3)), None);
    }

    #[test]
    fn generated_ids_come_from_the_injected_generator() {
        let mut seq = Sequence::new(vec![1, 0xff]);
        assert_eq!(generate(&mut seq), "0100000000000000ff00000000000000");
        let mut rng = WyRand::new(9);
        let a = generate(&mut rng);
        let b = generate(&mut rng);
        assert_ne!(a, b);
        assert!(is_anonymous_id(&a) && is_anonymous_id(&b));
    }
}

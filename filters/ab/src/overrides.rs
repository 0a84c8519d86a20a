//! QA overrides: a request that forces variants, off unless `overrides` is configured.
//!
//! The value, read from the configured header or query parameter, is
//!
//! ```text
//! <experiment>=<variant>[,<experiment>=<variant>…]                      allow-listed users
//! <experiment>=<variant>[,…].<expiry, unix seconds>.<hex HMAC-SHA256>   signed
//! ```
//!
//! An override is honoured when the user is on `allowed_users` (identity read from the list's
//! own key, e.g. the JWT `sub` — a header or cookie the client controls would let anyone claim
//! to be on the list), or, with `signed: true`, when it carries a valid, unexpired signature
//! over `meshwright-ab-override-v1\n<pairs>\n<expiry>` under the key in `signing_key_env`.
//! Everything else is refused (counted, then ignored: the request is assigned as usual).

use crate::baggage::decode_value;
use crate::config::{AbConfig, Overrides};
use meshwright_shared::crypto::{hmac_sha256, to_hex, verify_hmac_sha256_hex};
use meshwright_shared::headers::HeaderSource;
use meshwright_shared::time::Now;

/// Longest override value read, in bytes.
pub const MAX_LEN: usize = 1024;

/// Why an override was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    /// Names an experiment or variant the config does not have.
    Unknown,
    /// Neither allow-listed nor (validly) signed.
    NotAllowed,
    BadSignature,
    Expired,
    /// The expiry lies further ahead than `max_signature_ttl_s`.
    TooLongLived,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Absent,
    Rejected(Rejection),
    /// (experiment index, variant index) pairs.
    Forced(Vec<(usize, usize)>),
}

/// The raw override value of a request: the header, else the query parameter.
pub fn raw<'a>(o: &Overrides, req: &'a impl HeaderSource) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(v) = o.header.as_deref().and_then(|h| req.header(h)) {
        return Some(std::borrow::Cow::Borrowed(v));
    }
    let name = o.query_param.as_deref()?;
    let path = req.header(":path")?;
    let query = path.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name)
            .then(|| decode_value(v))
            .flatten()
            .map(std::borrow::Cow::Owned)
    })
}

/// Reads and checks the override of a request.
pub fn read(
    config: &AbConfig,
    key: Option<&[u8]>,
    req: &impl HeaderSource,
    now: &impl Now,
) -> Outcome {
    let Some(o) = &config.overrides else {
        return Outcome::Absent;
    };
    let Some(value) = raw(o, req) else {
        return Outcome::Absent;
    };
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_LEN {
        return Outcome::Rejected(Rejection::Malformed);
    }
    let (pairs, signature) = match value.split_once('.') {
        None => (value, None),
        Some((pairs, rest)) => match rest.split_once('.') {
            Some((t, mac)) => (pairs, Some((t, mac))),
            None => return Outcome::Rejected(Rejection::Malformed),
        },
    };
    let forced = match parse_pairs(config, pairs) {
        Ok(f) => f,
        Err(r) => return Outcome::Rejected(r),
    };
    let allow_listed = o.allowed_users.as_ref().is_some_and(|a| {
        a.key
            .extract(req)
            .is_some_and(|id| a.values.iter().any(|v| v.as_str() == id.as_ref()))
    });
    if allow_listed {
        return Outcome::Forced(forced);
    }
    match (o.signed, signature, key) {
        (true, Some((t, mac)), Some(key)) => {
            match check_signature(o, key, pairs, t, mac, now.now_ms()) {
                Ok(()) => Outcome::Forced(forced),
                Err(r) => Outcome::Rejected(r),
            }
        }
        _ => Outcome::Rejected(Rejection::NotAllowed),
    }
}

fn parse_pairs(config: &AbConfig, pairs: &str) -> Result<Vec<(usize, usize)>, Rejection> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for pair in pairs.split(',') {
        let (e, v) = pair.trim().split_once('=').ok_or(Rejection::Malformed)?;
        let ei = config
            .experiment_index(e.trim())
            .ok_or(Rejection::Unknown)?;
        let vi = config
            .experiments
            .get(ei)
            .and_then(|x| x.variant_index(v.trim()))
            .ok_or(Rejection::Unknown)?;
        if out.iter().any(|(x, _)| *x == ei) {
            return Err(Rejection::Malformed);
        }
        out.push((ei, vi));
    }
    Ok(out)
}

fn message(pairs: &str, t: &str) -> String {
    format!("meshwright-ab-override-v1\n{pairs}\n{t}")
}

fn check_signature(
    o: &Overrides,
    key: &[u8],
    pairs: &str,
    t: &str,
    mac: &str,
    now_ms: u64,
) -> Result<(), Rejection> {
    let expiry_s: u64 = t.parse().map_err(|_| Rejection::BadSignature)?;
    if !verify_hmac_sha256_hex(key, message(pairs, t).as_bytes(), mac) {
        return Err(Rejection::BadSignature);
    }
    let now_s = now_ms / 1000;
    if expiry_s <= now_s {
        return Err(Rejection::Expired);
    }
    if expiry_s - now_s > o.max_signature_ttl_s {
        return Err(Rejection::TooLongLived);
    }
    Ok(())
}

/// A signed override value (`pairs` like `product=v2`) valid until `expiry_unix_s`: for tooling
/// (`cargo xtask ab-override`) and tests.
pub fn sign(key: &[u8], pairs: &str, expiry_unix_s: u64) -> String {
    let t = expiry_unix_s.to_string();
    let mac = hmac_sha256(key, message(pairs, &t).as_bytes());
    format!("{pairs}.{t}.{}", to_hex(&mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use meshwright_shared::headers::HeaderList;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW_MS: u64 = 1_800_000_000_000;

    fn config(overrides: &str) -> AbConfig {
        AbConfig::from_json(
            format!(
                r#"{{"signing_key_env":"K","overrides":{overrides},"experiments":[
                {{"name":"product","header":"x-ab-product","variants":[{{"name":"v1","weight":9000}},{{"name":"v2","weight":1000}}]}},
                {{"name":"checkout","header":"x-ab-checkout","variants":[{{"name":"a","weight":5000}},{{"name":"b","weight":5000}}]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    fn bearer(sub: &str) -> String {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"sub":"{sub}"}}"#));
        format!("Bearer e30.{p}.c2ln")
    }

    const ALLOW: &str = r#"{"header":"x-ab-override","query_param":"ab","allowed_users":{"key":{"jwt_claim":"sub"},"values":["qa-1"]}}"#;
    const SIGNED: &str = r#"{"header":"x-ab-override","query_param":"ab","signed":true}"#;

    #[test]
    fn signature_matches_an_independent_implementation() {
        // python3: hmac.new(KEY, b"meshwright-ab-override-v1\nproduct=v2\n1800000600", sha256).hexdigest()
        assert_eq!(
            sign(KEY, "product=v2", 1_800_000_600),
            "product=v2.1800000600.0e8905254a8c9b87896dbdcf12f9cc478e296c876949f2cb1853771409f3b1b4"
        );
    }

    #[test]
    fn allow_listed_users_may_force_variants() {
        let c = config(ALLOW);
        let auth = bearer("qa-1");
        let r = req(&[
            ("authorization", &auth),
            ("x-ab-override", "product=v2, checkout=a"),
        ]);
        assert_eq!(
            read(&c, None, &r, &NOW_MS),
            Outcome::Forced(vec![(0, 1), (1, 0)])
        );
        let other = bearer("mallory");
        let r = req(&[("authorization", &other), ("x-ab-override", "product=v2")]);
        assert_eq!(
            read(&c, None, &r, &NOW_MS),
            Outcome::Rejected(Rejection::NotAllowed)
        );
        let r = req(&[("x-ab-override", "product=v2")]);
        assert_eq!(
            read(&c, None, &r, &NOW_MS),
            Outcome::Rejected(Rejection::NotAllowed)
        );
        // From the query string, percent-encoded or not.
        for path in ["/p?x=1&ab=product%3Dv2", "/p?ab=product=v2#f"] {
            let r = req(&[("authorization", &auth), (":path", path)]);
            assert_eq!(
                read(&c, None, &r, &NOW_MS),
                Outcome::Forced(vec![(0, 1)]),
                "{path}"
            );
        }
        assert_eq!(
            read(&c, None, &req(&[(":path", "/p?abc=1")]), &NOW_MS),
            Outcome::Absent
        );
    }

    #[test]
    fn signed_overrides_need_a_valid_unexpired_signature() {
        let c = config(SIGNED);
        let ok = sign(KEY, "product=v2", NOW_MS / 1000 + 60);
        let r = req(&[("x-ab-override", &ok)]);
        assert_eq!(
            read(&c, Some(KEY), &r, &NOW_MS),
            Outcome::Forced(vec![(0, 1)])
        );
        let tampered = ok.replace("product=v2", "product=v1");
        let r = req(&[("x-ab-override", &tampered)]);
        assert_eq!(
            read(&c, Some(KEY), &r, &NOW_MS),
            Outcome::Rejected(Rejection::BadSignature)
        );
        let other = sign(
            b"another key of enough length!!!!",
            "product=v2",
            NOW_MS / 1000 + 60,
        );
        let r = req(&[("x-ab-override", &other)]);
        assert_eq!(
            read(&c, Some(KEY), &r, &NOW_MS),
            Outcome::Rejected(Rejection::BadSignature)
        );
        let old = sign(KEY, "product=v2", NOW_MS / 1000);
        let r = req(&[("x-ab-override", &old)]);
        assert_eq!(
            read(&c, Some(KEY), &r, &NOW_MS),
            Outcome::Rejected(Rejection::Expired)
        );
        let far = sign(KEY, "product=v2", NOW_MS / 1000 + 86_401);
        let r = req(&[("x-ab-override", &far)]);
        assert_eq!(
            read(&c, Some(KEY), &r, &NOW_MS),
            Outcome::Rejected(Rejection::TooLongLived)
        );
        let r = req(&[("x-ab-override", "product=v2")]);
        assert_eq!(
            read(&c, Some(KEY), &r, &NOW_MS),
            Outcome::Rejected(Rejection::NotAllowed)
        );
        // A signed value is not honoured where only the allow-list is configured.
        let c = config(ALLOW);
        let r = req(&[("x-ab-override", &ok)]);
        assert_eq!(
            read(&c, Some(KEY), &r, &NOW_MS),
            Outcome::Rejected(Rejection::NotAllowed)
        );
    }

    #[test]
    fn malformed_and_unknown_values_are_refused() {
        let c = config(ALLOW);
        let auth = bearer("qa-1");
        for (v, why) in [
            ("product", Rejection::Malformed),
            ("product=v3", Rejection::Unknown),
            ("nope=v1", Rejection::Unknown),
            ("product=v1,product=v2", Rejection::Malformed),
            ("product=v2.123", Rejection::Malformed),
            ("", Rejection::Malformed),
        ] {
            let r = req(&[("authorization", &auth), ("x-ab-override", v)]);
            assert_eq!(read(&c, None, &r, &NOW_MS), Outcome::Rejected(why), "{v:?}");
        }
    }

    #[test]
    fn off_unless_configured() {
        let c = AbConfig::from_json(b"{}").unwrap();
        let r = req(&[("x-ab-override", "product=v2")]);
        assert_eq!(read(&c, Some(KEY), &r, &NOW_MS), Outcome::Absent);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_values_never_panic(v in ".{0,200}", p in ".{0,100}") {
                let c = config(r#"{"header":"x-ab-override","query_param":"ab","signed":true,
                    "allowed_users":{"key":{"header":"x-user"},"values":["qa"]}}"#);
                let path = format!("/?ab={p}");
                let r = req(&[("x-ab-override", &v), ("x-user", "qa")]);
                let _ = read(&c, Some(KEY), &r, &NOW_MS);
                let r = req(&[(":path", &path)]);
                let _ = read(&c, Some(KEY), &r, &NOW_MS);
            }
        }
    }
}

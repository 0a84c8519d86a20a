//! The sticky-assignment cookie: a signed record of the variants a browser has been given, so a
//! later weight change does not move a user who has already seen a variant — until the
//! experiment's `version` changes (or the variant's weight drops to 0: a kill switch still works).
//!
//! ```text
//! <experiment>:<version>:<variant>[/<experiment>:<version>:<variant>…].<hex HMAC-SHA256>
//! ```
//! The MAC, over `meshwright-ab-sticky-v1\n<entries>` under the key in `signing_key_env`, keeps
//! clients from writing themselves into a variant. Names are `[a-z0-9_-]`, so the value needs no
//! escaping in a cookie.

use crate::config::CookieAttrs;
use meshwright_shared::cookie::cookie_value;
use meshwright_shared::crypto::{hmac_sha256, to_hex, verify_hmac_sha256_hex};
use meshwright_shared::headers::HeaderSource;

/// Longest sticky cookie value read, in bytes.
pub const MAX_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub experiment: String,
    pub version: u32,
    pub variant: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// No sticky cookie.
    Absent,
    /// A cookie that is not one the filter signed (tampered, other key, malformed).
    Invalid,
    Valid(Vec<Entry>),
}

fn message(entries: &str) -> String {
    format!("meshwright-ab-sticky-v1\n{entries}")
}

/// Reads the sticky cookie of a request.
pub fn read(attrs: &CookieAttrs, key: &[u8], req: &impl HeaderSource) -> Read {
    let Some(value) = req
        .header("cookie")
        .and_then(|c| cookie_value(c, &attrs.name))
    else {
        return Read::Absent;
    };
    if value.len() > MAX_LEN {
        return Read::Invalid;
    }
    let Some((entries, mac)) = value.rsplit_once('.') else {
        return Read::Invalid;
    };
    if !verify_hmac_sha256_hex(key, message(entries).as_bytes(), mac) {
        return Read::Invalid;
    }
    parse(entries).map_or(Read::Invalid, Read::Valid)
}

fn parse(entries: &str) -> Option<Vec<Entry>> {
    if entries.is_empty() {
        return Some(Vec::new());
    }
    entries
        .split('/')
        .map(|e| {
            let mut parts = e.split(':');
            let (exp, ver, var) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || exp.is_empty() || var.is_empty() {
                return None;
            }
            Some(Entry {
                experiment: exp.to_owned(),
                version: ver.parse().ok()?,
                variant: var.to_owned(),
            })
        })
        .collect()
}

/// The signed cookie value for `entries`.
pub fn encode(key: &[u8], entries: &[Entry]) -> String {
    let joined: Vec<String> = entries
        .iter()
        .map(|e| format!("{}:{}:{}", e.experiment, e.version, e.variant))
        .collect();
    let joined = joined.join("/");
    let mac = hmac_sha256(key, message(&joined).as_bytes());
    format!("{joined}.{}", to_hex(&mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;
    use meshwright_shared::headers::HeaderList;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn attrs() -> CookieAttrs {
        CookieAttrs {
            name: "ab_sticky".into(),
            max_age_s: 60,
            attrs: meshwright_shared::cookie::CookieAttrs {
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                path: "/".into(),
                domain: None,
            },
        }
    }

    fn with_cookie(v: &str) -> HeaderList {
        [("cookie", format!("a=1; ab_sticky={v}"))]
            .into_iter()
            .collect()
    }

    fn entry(e: &str, ver: u32, v: &str) -> Entry {
        Entry {
            experiment: e.into(),
            version: ver,
            variant: v.into(),
        }
    }

    #[test]
    fn round_trip() {
        let entries = vec![entry("product", 3, "v2"), entry("checkout", 1, "b")];
        let v = encode(KEY, &entries);
        assert!(v.starts_with("product:3:v2/checkout:1:b."));
        assert_eq!(read(&attrs(), KEY, &with_cookie(&v)), Read::Valid(entries));
        assert_eq!(read(&attrs(), KEY, &HeaderList::new()), Read::Absent);
    }

    #[test]
    fn forged_or_foreign_cookies_are_invalid() {
        let v = encode(KEY, &[entry("product", 1, "v1")]);
        let forged = v.replacen("v1", "v2", 1);
        assert_eq!(read(&attrs(), KEY, &with_cookie(&forged)), Read::Invalid);
        let other = encode(
            b"another key of enough length!!!!",
            &[entry("product", 1, "v2")],
        );
        assert_eq!(read(&attrs(), KEY, &with_cookie(&other)), Read::Invalid);
        for junk in ["", "product:1:v2", "x.y", &"a".repeat(MAX_LEN + 1)] {
            assert_eq!(
                read(&attrs(), KEY, &with_cookie(junk)),
                Read::Invalid,
                "{junk}"
            );
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_cookies_never_panic(v in ".{0,200}") {
                let _ = read(&attrs(), KEY, &with_cookie(&v));
            }

            #[test]
            fn whatever_is_encoded_reads_back(
                e in proptest::collection::vec(("[a-z0-9_-]{1,10}", any::<u32>(), "[a-z0-9_-]{1,10}"), 0..5)
            ) {
                let entries: Vec<Entry> = e.iter().map(|(x, v, y)| entry(x, *v, y)).collect();
                let value = encode(KEY, &entries);
                prop_assert_eq!(read(&attrs(), KEY, &with_cookie(&value)), Read::Valid(entries));
            }
        }
    }
}

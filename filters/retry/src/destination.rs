//! Which budget a request belongs to: its destination.
//!
//! Wire format: `"cluster"` (the upstream cluster Envoy routed the request to — in Istio
//! `outbound|8080|v1|product.ecommerce.svc.cluster.local` or `inbound|8080||`), `"authority"`
//! (the `:authority`/Host header), `{"header": "x-name"}`, or `{"fixed": "name"}` (one budget for
//! everything).
//!
//! A destination has two names: the budget's key in shared data (the value as read, normalised,
//! so two destinations never share a budget by accident) and a stat-name segment
//! ([`stat_name`]: `[a-z0-9_-]`, at most 64 characters).

use meshwright_shared::config::{ConfigError, Path, validate_stat_name};
use meshwright_shared::hash::fnv1a32;
use meshwright_shared::validate::header_name;
use serde::Deserialize;

/// Destination of requests whose key is missing (no cluster, no Host, header absent).
pub const UNKNOWN: &str = "unknown";

/// Destination that requests fall into once `max_destinations` distinct ones are tracked.
pub const OVERFLOW: &str = "overflow";

/// The caller of requests that arrive without a verified peer identity (plaintext, or mTLS
/// without a URI SAN): they share one budget per destination.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// Longest destination value kept as is; longer ones are shortened with a hash.
pub const MAX_KEY_LEN: usize = 256;

/// Longest stat-name segment.
pub const MAX_STAT_LEN: usize = 64;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DestinationSpec {
    Cluster,
    Authority,
    Header(String),
    Fixed(String),
}

/// Where the destination is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationSource {
    /// The `xds.cluster_name` property.
    Cluster,
    /// The `:authority` header.
    Authority,
    /// A request header (lower-case name).
    Header(String),
    Fixed(String),
}

impl DestinationSpec {
    pub fn compile(&self, field: &Path) -> Result<DestinationSource, ConfigError> {
        Ok(match self {
            Self::Cluster => DestinationSource::Cluster,
            Self::Authority => DestinationSource::Authority,
            Self::Header(name) => {
                DestinationSource::Header(header_name(&field.key("header"), name)?)
            }
            Self::Fixed(name) => {
                validate_stat_name(&field.key("fixed"), name)?;
                DestinationSource::Fixed(name.clone())
            }
        })
    }
}

impl DestinationSource {
    /// The request header this source reads, if any.
    pub fn header_read(&self) -> Option<&str> {
        match self {
            Self::Authority => Some(":authority"),
            Self::Header(h) => Some(h),
            Self::Cluster | Self::Fixed(_) => None,
        }
    }
}

/// The budget key of a destination value: trimmed, lower-cased (hosts and cluster names are
/// case-insensitive in practice), [`UNKNOWN`] when empty, shortened with a hash when longer than
/// [`MAX_KEY_LEN`].
pub fn normalize(raw: Option<&str>) -> String {
    let v = raw.map(str::trim).unwrap_or_default();
    if v.is_empty() {
        return UNKNOWN.to_owned();
    }
    let lower = v.to_ascii_lowercase();
    if lower.len() <= MAX_KEY_LEN {
        return lower;
    }
    shorten(&lower, MAX_KEY_LEN)
}

/// The budget key of one caller's share of a destination (server side, `per_caller`): the
/// destination's key and the caller's mTLS identity — the first URI SAN of its client
/// certificate, in Istio its SPIFFE ID `spiffe://<trust domain>/ns/<ns>/sa/<service account>`,
/// which the caller cannot choose — or [`UNAUTHENTICATED`]. SPIFFE IDs are compared as they are
/// (their path is case-sensitive); a longer one than [`MAX_KEY_LEN`] is shortened with a hash.
pub fn caller_key(destination_key: &str, peer_uri_san: Option<&str>) -> String {
    let caller = peer_uri_san
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or(UNAUTHENTICATED);
    if caller.len() <= MAX_KEY_LEN {
        format!("{destination_key} {caller}")
    } else {
        format!("{destination_key} {}", shorten(caller, MAX_KEY_LEN))
    }
}

/// A stat-name segment for a destination key: lower-case `a-z`, `0-9`, `_`, `-`, every other
/// character replaced by `_`; longer than [`MAX_STAT_LEN`] → a prefix plus a hash of the whole.
pub fn stat_name(key: &str) -> String {
    let cleaned: String = key
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        return UNKNOWN.to_owned();
    }
    if cleaned.len() <= MAX_STAT_LEN {
        return cleaned;
    }
    // The hash is of the original key, so two long keys that clean to the same prefix differ.
    let prefix: String = cleaned.chars().take(MAX_STAT_LEN - 9).collect();
    format!("{prefix}-{:08x}", fnv1a32(key.as_bytes()))
}

/// `s` cut to a char boundary within `max - 9` bytes, plus `-` and 8 hex digits of its hash.
fn shorten(s: &str, max: usize) -> String {
    let mut end = max.saturating_sub(9).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}-{:08x}",
        s.get(..end).unwrap_or_default(),
        fnv1a32(s.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn istio_cluster_names_become_readable_stat_names() {
        let key = normalize(Some("outbound|8080|v1|product.ecommerce.svc.cluster.local"));
        assert_eq!(key, "outbound|8080|v1|product.ecommerce.svc.cluster.local");
        assert_eq!(
            stat_name(&key),
            "outbound_8080_v1_product_ecommerce_svc_cluster_local"
        );
        assert_eq!(stat_name("inbound|8081||"), "inbound_8081__");
        assert_eq!(stat_name("Product:8080"), "product_8080");
    }

    #[test]
    fn missing_keys_are_unknown() {
        assert_eq!(normalize(None), UNKNOWN);
        assert_eq!(normalize(Some("  ")), UNKNOWN);
        assert_eq!(stat_name(""), UNKNOWN);
    }

    #[test]
    fn each_caller_identity_has_its_own_key_and_the_unauthenticated_share_one() {
        let d = "inbound|8080||";
        let store = caller_key(d, Some("spiffe://cluster.local/ns/ecommerce/sa/store"));
        let noisy = caller_key(d, Some("spiffe://cluster.local/ns/ecommerce/sa/noisy"));
        assert_ne!(store, noisy);
        assert_eq!(
            store,
            "inbound|8080|| spiffe://cluster.local/ns/ecommerce/sa/store"
        );
        assert_ne!(
            caller_key(d, Some("spiffe://cluster.local/ns/ecommerce/sa/Store")),
            store,
            "a SPIFFE path is case-sensitive"
        );
        assert_eq!(caller_key(d, None), caller_key(d, Some(" ")));
        assert_eq!(caller_key(d, None), format!("{d} {UNAUTHENTICATED}"));
        let long = format!("spiffe://cluster.local/ns/{}", "n".repeat(400));
        assert!(caller_key(d, Some(&long)).len() <= d.len() + 1 + MAX_KEY_LEN);
    }

    #[test]
    fn keys_are_case_insensitive() {
        assert_eq!(normalize(Some(" Product:8080 ")), "product:8080");
    }

    #[test]
    fn long_values_are_shortened_with_a_hash() {
        let long = format!("{}.example.com", "a".repeat(300));
        let key = normalize(Some(&long));
        assert_eq!(key.len(), MAX_KEY_LEN);
        let other = normalize(Some(&format!("{}.example.org", "a".repeat(300))));
        assert_ne!(key, other);
        let s = stat_name(&key);
        assert_eq!(s.len(), MAX_STAT_LEN);
        assert_ne!(s, stat_name(&other));
        assert!(validate_stat_name(&Path::root(), &s).is_ok());
    }

    #[test]
    fn specs_compile_and_bad_names_are_refused() {
        let p = Path::root().key("destination");
        assert_eq!(
            DestinationSpec::Header("X-Dest".into()).compile(&p),
            Ok(DestinationSource::Header("x-dest".into()))
        );
        assert_eq!(
            DestinationSpec::Header("x y".into())
                .compile(&p)
                .unwrap_err()
                .field,
            "destination.header"
        );
        assert_eq!(
            DestinationSpec::Fixed("Bad.Name".into())
                .compile(&p)
                .unwrap_err()
                .field,
            "destination.fixed"
        );
        assert_eq!(
            DestinationSource::Authority.header_read(),
            Some(":authority")
        );
        assert_eq!(DestinationSource::Cluster.header_read(), None);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn stat_names_are_always_valid(s in "\\PC{0,100}") {
                let name = stat_name(&normalize(Some(&s)));
                prop_assert!(name.len() <= MAX_STAT_LEN);
                let ok = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
                prop_assert!(ok, "{}", name);
            }

            #[test]
            fn normalized_keys_are_bounded(s in "\\PC{0,400}") {
                prop_assert!(normalize(Some(&s)).len() <= MAX_KEY_LEN);
            }
        }
    }
}

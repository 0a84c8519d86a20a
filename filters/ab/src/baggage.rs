//! The W3C `baggage` header (https://www.w3.org/TR/baggage/): assignments travel as list members
//! `<key>=<variant>` so later hops (and their sidecars) can keep routing on them.
//!
//! `baggage = list-member *( OWS "," OWS list-member )`, `list-member = key OWS "=" OWS value
//! *( OWS ";" OWS property )`; keys are RFC 7230 tokens; values are `baggage-octet`s
//! (printable ASCII except space, `"`, `,`, `;`, `\`) with anything else — and `%` itself —
//! percent-encoded as UTF-8. At most 64 list members and 8192 bytes.

use meshwright_shared::validate::is_token;

/// Most list members a baggage header carries.
pub const MAX_MEMBERS: usize = 64;
/// Largest baggage header, in bytes.
pub const MAX_BYTES: usize = 8192;

/// Whether `key` is a baggage key (an RFC 7230 token).
pub fn valid_key(key: &str) -> bool {
    is_token(key)
}

fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) && b != b'%'
}

/// Percent-encodes a value for a baggage list member.
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if is_baggage_octet(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
    }
    out
}

/// Upper-case hex digit of a nibble.
fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

/// Decodes a percent-encoded value; `None` when it is not valid UTF-8 after decoding.
pub fn decode_value(value: &str) -> Option<String> {
    let b = value.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|x| char::from(*x).to_digit(16)),
                b.get(i + 2).and_then(|x| char::from(*x).to_digit(16)),
            )
        {
            out.push(u8::try_from(h * 16 + l).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The key of a list member (`None` if it has none).
fn member_key(member: &str) -> Option<&str> {
    let (k, _) = member.split_once('=')?;
    let k = k.trim();
    valid_key(k).then_some(k)
}

/// The decoded value of member `key` in a baggage header, properties removed.
pub fn get(header: &str, key: &str) -> Option<String> {
    header.split(',').find_map(|m| {
        let m = m.trim();
        if member_key(m)? != key {
            return None;
        }
        let (_, v) = m.split_once('=')?;
        let v = v.split(';').next().unwrap_or("").trim();
        decode_value(v)
    })
}

/// Rewrites a baggage header: members whose key is in `owned` are removed (stale or
/// client-supplied copies), then `ours` (key, raw value) are appended, encoded. Other members are
/// kept verbatim and in order, as far as the limits allow (ours are always kept). Members without
/// a valid key are dropped. `None` when nothing is left.
pub fn merge(existing: Option<&str>, owned: &[&str], ours: &[(&str, &str)]) -> Option<String> {
    let ours: Vec<String> = ours
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_value(v)))
        .collect();
    let mut budget_members = MAX_MEMBERS.saturating_sub(ours.len());
    let mut budget_bytes =
        MAX_BYTES.saturating_sub(ours.iter().map(|m| m.len() + 1).sum::<usize>());
    let mut kept: Vec<&str> = Vec::new();
    for m in existing.into_iter().flat_map(|h| h.split(',')) {
        let m = m.trim();
        let Some(k) = member_key(m) else { continue };
        if owned.contains(&k) {
            continue;
        }
        if budget_members == 0 || m.len() + 1 > budget_bytes {
            continue;
        }
        budget_members -= 1;
        budget_bytes -= m.len() + 1;
        kept.push(m);
    }
    let all: Vec<&str> = kept
        .into_iter()
        .chain(ours.iter().map(String::as_str))
        .collect();
    (!all.is_empty()).then(|| all.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn members_are_appended_and_others_kept() {
        let h = "userId=alice, serverNode=DF%2028 ; p=1,isProduction=false";
        assert_eq!(
            merge(Some(h), &["ab.product"], &[("ab.product", "v2")]).as_deref(),
            Some("userId=alice,serverNode=DF%2028 ; p=1,isProduction=false,ab.product=v2")
        );
        assert_eq!(
            merge(None, &["ab.product"], &[("ab.product", "v1")]).as_deref(),
            Some("ab.product=v1")
        );
    }

    #[test]
    fn stale_and_spoofed_members_of_our_keys_are_replaced_or_removed() {
        let h = "ab.product=v2;x=y, other=1, ab.product = v9";
        assert_eq!(
            merge(Some(h), &["ab.product"], &[("ab.product", "v1")]).as_deref(),
            Some("other=1,ab.product=v1")
        );
        assert_eq!(
            merge(Some(h), &["ab.product"], &[]).as_deref(),
            Some("other=1"),
            "not assigned: the client's copy goes"
        );
        assert_eq!(merge(Some("ab.product=v2"), &["ab.product"], &[]), None);
    }

    #[test]
    fn values_are_percent_encoded_per_the_spec() {
        assert_eq!(encode_value("v2"), "v2");
        assert_eq!(encode_value("a b,c;d\"e\\f%g"), "a%20b%2Cc%3Bd%22e%5Cf%25g");
        assert_eq!(encode_value("é"), "%C3%A9");
        for v in ["v2", "a b,c;d\"e\\f%g", "é", ""] {
            assert_eq!(decode_value(&encode_value(v)).as_deref(), Some(v));
        }
        assert_eq!(
            get("a=1, ab.p=x%20y;prop, c=3", "ab.p").as_deref(),
            Some("x y")
        );
        assert_eq!(get("a=1", "ab.p"), None);
    }

    #[test]
    fn limits_keep_our_members() {
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        let out = merge(Some(&many.join(",")), &[], &[("ab.p", "v2")]).unwrap();
        let members: Vec<&str> = out.split(',').collect();
        assert_eq!(members.len(), MAX_MEMBERS);
        assert_eq!(members.last(), Some(&"ab.p=v2"));
        let big = format!("big={}", "x".repeat(9000));
        assert_eq!(
            merge(Some(&format!("{big},small=1")), &[], &[("ab.p", "v2")]).as_deref(),
            Some("small=1,ab.p=v2")
        );
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_and_always_carries_ours(h in ".{0,300}", v in ".{0,20}") {
                let out = merge(Some(&h), &["ab.p"], &[("ab.p", &v)]).unwrap();
                prop_assert_eq!(get(&out, "ab.p"), Some(v.clone()));
                prop_assert!(out.len() <= MAX_BYTES);
                let _ = decode_value(&h);
            }

            #[test]
            fn encoded_values_are_baggage_octets(v in ".{0,40}") {
                prop_assert!(encode_value(&v).bytes().all(|b| is_baggage_octet(b) || b == b'%'));
            }
        }
    }
}

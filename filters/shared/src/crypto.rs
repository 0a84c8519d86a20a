//! Message authentication for signed control values.

use subtle::ConstantTimeEq;

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    hmac_sha256::HMAC::mac(message, key)
}

/// Checks `hex_mac` (lower- or upper-case hex) against HMAC-SHA256(key, message) in constant
/// time with respect to the MAC's content.
pub fn verify_hmac_sha256_hex(key: &[u8], message: &[u8], hex_mac: &str) -> bool {
    let Some(given) = decode_hex32(hex_mac) else {
        return false;
    };
    hmac_sha256(key, message).ct_eq(&given).into()
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 });
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 0xf));
    }
    s
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *o = (nibble(*hi)? << 4) | nibble(*lo)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn rfc4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            to_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verification() {
        let mac = to_hex(&hmac_sha256(b"k", b"m"));
        assert!(verify_hmac_sha256_hex(b"k", b"m", &mac));
        assert!(verify_hmac_sha256_hex(b"k", b"m", &mac.to_uppercase()));
        assert!(!verify_hmac_sha256_hex(b"k", b"m2", &mac));
        assert!(!verify_hmac_sha256_hex(b"k2", b"m", &mac));
        assert!(!verify_hmac_sha256_hex(b"k", b"m", &mac[..62]));
        assert!(!verify_hmac_sha256_hex(
            b"k",
            b"m",
            &format!("{}zz", &mac[..62])
        ));
    }
}

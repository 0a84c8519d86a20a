//! Sealed cookies: authenticated encryption under a key ring.
//!
//! A sealed value is `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`, XChaCha20-Poly1305 with a
//! random 192-bit nonce, and the cookie's *name* and the key id as associated data — a value
//! sealed for one cookie does not open as another. The first key of the ring seals; every key
//! opens (found by `kid`), so keys rotate without logging anybody out: add the new key first,
//! keep the old one until the longest session has expired, then drop it.
//!
//! The key ring comes from an environment variable, `kid:base64key,kid:base64key` (32-byte keys,
//! standard or URL-safe base64), never from the plugin configuration, and is never logged.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Largest sealed value accepted for opening, in characters (a guard against work on junk).
pub const MAX_SEALED_LEN: usize = 32 * 1024;

/// Why a sealed value did not open. All of them mean "not a session": the caller treats the
/// request as unauthenticated and counts the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("malformed")]
    Malformed,
    #[error("unknown key id")]
    UnknownKey,
    #[error("failed authentication")]
    Forged,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    #[error("the key ring is empty")]
    Empty,
    #[error("entry {0}: expected `kid:base64key`")]
    Syntax(usize),
    #[error("entry {0}: key id must be 1-16 characters of a-z, A-Z, 0-9, '-' or '_'")]
    BadKid(usize),
    #[error("entry {0}: the key must be 32 bytes of base64")]
    BadKey(usize),
    #[error("key id `{0}` appears twice")]
    Duplicate(String),
}

struct Key {
    kid: String,
    cipher: XChaCha20Poly1305,
}

/// Keys that seal (the first) and open (all).
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: key material never reaches a log.
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeyRing").field("kids", &kids).finish()
    }
}

impl KeyRing {
    /// Parses `kid:base64key,kid:base64key`.
    pub fn parse(spec: &str) -> Result<Self, KeyRingError> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (kid, key) = entry.split_once(':').ok_or(KeyRingError::Syntax(i))?;
            let kid_ok = (1..=16).contains(&kid.len())
                && kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !kid_ok {
                return Err(KeyRingError::BadKid(i));
            }
            if keys.iter().any(|k| k.kid == kid) {
                return Err(KeyRingError::Duplicate(kid.to_owned()));
            }
            let bytes = STANDARD
                .decode(key.trim())
                .or_else(|_| URL_SAFE_NO_PAD.decode(key.trim().trim_end_matches('=')))
                .map_err(|_| KeyRingError::BadKey(i))?;
            if bytes.len() != 32 {
                return Err(KeyRingError::BadKey(i));
            }
            let cipher =
                XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| KeyRingError::BadKey(i))?;
            keys.push(Key {
                kid: kid.to_owned(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        Ok(Self { keys })
    }

    /// The id of the key that seals.
    pub fn sealing_kid(&self) -> &str {
        self.keys.first().map_or("", |k| k.kid.as_str())
    }

    /// Seals `plaintext` for cookie `name`. `nonce` must be 24 fresh random bytes.
    pub fn seal(&self, name: &str, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Option<String> {
        let key = self.keys.first()?;
        let aad = associated_data(name, &key.kid);
        let ct = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        Some(format!(
            "{VERSION}.{}.{}",
            key.kid,
            URL_SAFE_NO_PAD.encode(raw)
        ))
    }

    /// Opens a value sealed for cookie `name` by any key of the ring.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(OpenError::Malformed);
        }
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(OpenError::UnknownKey)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let aad = associated_data(name, kid);
        key.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| OpenError::Forged)
    }
}

fn associated_data(name: &str, kid: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(name.len() + kid.len() + 8);
    aad.extend_from_slice(b"mw1\0");
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(kid.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxwdHhscGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).unwrap()
    }

    #[test]
    fn seals_and_opens() {
        let r = ring(K1);
        let s = r.seal("sess", b"hello", [7; 24]).unwrap();
        assert!(s.starts_with("v1.k1."));
        assert_eq!(r.open("sess", &s).unwrap(), b"hello");
    }

    #[test]
    fn rotation_first_key_seals_all_keys_open() {
        let old = ring(K1);
        let sealed_by_old = old.seal("sess", b"x", [1; 24]).unwrap();
        let rotated = ring(&format!("{K2},{K1}"));
        assert_eq!(rotated.sealing_kid(), "k2");
        assert_eq!(rotated.open("sess", &sealed_by_old).unwrap(), b"x");
        let new = rotated.seal("sess", b"y", [2; 24]).unwrap();
        assert!(new.starts_with("v1.k2."));
        assert_eq!(ring(K2).open("sess", &new).unwrap(), b"y");
        assert_eq!(
            ring(K1).open("sess", &new),
            Err(OpenError::UnknownKey),
            "retired key"
        );
    }

    #[test]
    fn tampering_is_detected() {
        let r = ring(K1);
        let s = r.seal("sess", b"payload", [3; 24]).unwrap();
        // Flip one character of the body.
        let mut chars: Vec<char> = s.chars().collect();
        let last = chars.len() - 3;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert_eq!(r.open("sess", &tampered), Err(OpenError::Forged));
        assert_eq!(
            r.open("other-cookie", &s),
            Err(OpenError::Forged),
            "bound to the cookie name"
        );
        assert!(r.open("sess", &s[..s.len() - 10]).is_err(), "truncated");
        assert_eq!(r.open("sess", "v1.k1."), Err(OpenError::Malformed));
        assert_eq!(r.open("sess", "v2.k1.AAAA"), Err(OpenError::Malformed));
        assert_eq!(r.open("sess", "v1.k9.AAAA"), Err(OpenError::UnknownKey));
        assert_eq!(r.open("sess", "garbage"), Err(OpenError::Malformed));
    }

    #[test]
    fn bad_key_rings_are_refused() {
        assert_eq!(KeyRing::parse("").unwrap_err(), KeyRingError::Empty);
        assert_eq!(
            KeyRing::parse("nokid").unwrap_err(),
            KeyRingError::Syntax(0)
        );
        assert_eq!(
            KeyRing::parse("k1:AAAA").unwrap_err(),
            KeyRingError::BadKey(0)
        );
        assert_eq!(
            KeyRing::parse("bad kid:AAAA").unwrap_err(),
            KeyRingError::BadKid(0)
        );
        assert_eq!(
            KeyRing::parse(&format!("{K1},{K1}")).unwrap_err(),
            KeyRingError::Duplicate("k1".into())
        );
        assert!(
            !format!("{:?}", ring(K1)).contains("AAEC"),
            "Debug must not show key material"
        );
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn opening_arbitrary_input_never_panics(s in ".{0,300}") {
                let _ = ring(K1).open("sess", &s);
            }

            #[test]
            fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..512), nonce in any::<[u8; 24]>()) {
                let r = ring(K1);
                let s = r.seal("n", &data, nonce).unwrap();
                prop_assert_eq!(r.open("n", &s).unwrap(), data);
            }
        }
    }
}

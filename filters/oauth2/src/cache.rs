//! Per-worker cache of opened sessions.
//!
//! Opening a session costs an AEAD decryption and a JSON parse; minting costs a signature. A
//! browser sends the same cookie on every request, so each worker remembers what it opened,
//! keyed by a 128-bit keyed hash of the sealed value (two SipHash instances with random keys from
//! the VM — an attacker cannot aim for a collision), bounded to `capacity` entries with FIFO
//! eviction. A hit costs one hash of the cookie value and one lookup.

use crate::session::Session;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

/// What the hot path needs about a session, computed once.
#[derive(Debug, Clone)]
pub struct Entry {
    pub session: Session,
    /// `Bearer …` value for the upstream, and when it stops being usable (Unix seconds).
    pub bearer: Option<(String, u64)>,
    /// Claim header values (name, value), already rendered.
    pub claim_values: Vec<(String, String)>,
}

pub struct SessionCache<S: BuildHasher = std::hash::RandomState> {
    map: HashMap<u128, Entry>,
    order: VecDeque<u128>,
    capacity: usize,
    k1: S,
    k2: S,
}

impl<S: BuildHasher> std::fmt::Debug for SessionCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionCache({}/{})", self.map.len(), self.capacity)
    }
}

impl SessionCache {
    /// A cache with fresh random hash keys (std's RandomState: WASI random_get in the VM).
    pub fn new(capacity: usize) -> Self {
        Self::with_hashers(
            capacity,
            std::hash::RandomState::new(),
            std::hash::RandomState::new(),
        )
    }
}

impl<S: BuildHasher> SessionCache<S> {
    pub fn with_hashers(capacity: usize, k1: S, k2: S) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            k1,
            k2,
        }
    }

    pub fn key(&self, sealed: &str) -> u128 {
        let mut a = self.k1.build_hasher();
        a.write(sealed.as_bytes());
        let mut b = self.k2.build_hasher();
        b.write(sealed.as_bytes());
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    pub fn get_mut(&mut self, key: u128) -> Option<&mut Entry> {
        self.map.get_mut(&key)
    }

    pub fn insert(&mut self, key: u128, entry: Entry) {
        if self.map.insert(key, entry).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    pub fn remove(&mut self, key: u128) {
        if self.map.remove(&key).is_some() {
            self.order.retain(|k| *k != key);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn entry(sub: &str) -> Entry {
        Entry {
            session: Session {
                id: "i".into(),
                generation: 0,
                sub: sub.into(),
                claims: Default::default(),
                token: None,
                token_exp: 0,
                refresh_token: None,
                expires: 0,
            },
            bearer: None,
            claim_values: Vec::new(),
        }
    }

    #[test]
    fn bounded_fifo() {
        let mut c = SessionCache::new(2);
        let (a, b, d) = (c.key("a"), c.key("b"), c.key("d"));
        assert_ne!(a, b);
        c.insert(a, entry("a"));
        c.insert(b, entry("b"));
        c.insert(d, entry("d"));
        assert_eq!(c.len(), 2);
        assert!(c.get_mut(a).is_none(), "oldest evicted");
        assert_eq!(c.get_mut(d).unwrap().session.sub, "d");
        c.remove(b);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn keys_differ_between_caches() {
        let (c1, c2) = (SessionCache::new(1), SessionCache::new(1));
        assert_ne!(c1.key("same"), c2.key("same"), "keys are random per VM");
        assert_eq!(c1.key("same"), c1.key("same"));
    }
}

//! One code exchange per login: a callback whose login state already led to a token-endpoint
//! call (on this worker) is refused without calling the IdP again.
//!
//! A login cookie and its `state` are valid for [`crate::session::LOGIN_TTL_S`], and the cookie
//! is only replaced when a login succeeds; without this memory every forged callback carrying
//! one genuine login cookie and its state (random `code`s) cost a token-endpoint call. Kept per
//! worker (the exchange itself happens on the worker that took the callback), bounded in size,
//! entries dropped when their login can no longer be completed.

use std::collections::{HashSet, VecDeque};

/// How many spent states a worker remembers by default.
pub const DEFAULT_MAX: usize = 10_000;

/// The login states that already had their exchange, until their logins expire.
#[derive(Debug)]
pub struct SpentStates {
    order: VecDeque<(u64, u64)>,
    spent: HashSet<u64>,
    max: usize,
}

impl Default for SpentStates {
    fn default() -> Self {
        Self::new(DEFAULT_MAX)
    }
}

impl SpentStates {
    /// Remembers at most `max` states (the oldest is forgotten first).
    pub fn new(max: usize) -> Self {
        Self {
            order: VecDeque::new(),
            spent: HashSet::new(),
            max: max.max(1),
        }
    }

    /// Whether a code exchange for `state` may start at `now_s`; if so, `state` is spent until
    /// `until_s` (when its login expires).
    pub fn admit(&mut self, state: &str, now_s: u64, until_s: u64) -> bool {
        while let Some(&(h, until)) = self.order.front() {
            if until > now_s && self.order.len() < self.max {
                break;
            }
            self.order.pop_front();
            self.spent.remove(&h);
        }
        let h = meshwright_shared::hash::fnv1a64(state.as_bytes());
        if !self.spent.insert(h) {
            return false;
        }
        self.order.push_back((h, until_s));
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_state_admits_one_exchange_until_its_login_expires() {
        let mut s = SpentStates::new(100);
        assert!(s.admit("st-1", 1000, 1600));
        for _ in 0..30 {
            assert!(
                !s.admit("st-1", 1001, 1601),
                "forged callbacks: no second exchange"
            );
        }
        assert!(s.admit("st-2", 1002, 1602), "another login is not affected");
        // After its login expired the state is forgotten (its cookie is refused anyway).
        assert!(s.admit("st-1", 1600, 2200));
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = SpentStates::new(3);
        for i in 0..10 {
            assert!(s.admit(&format!("st-{i}"), 1000, 1600));
        }
        assert!(s.len() <= 3);
        assert!(!s.admit("st-9", 1000, 1600), "the newest are remembered");
    }
}

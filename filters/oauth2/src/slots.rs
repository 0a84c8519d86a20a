//! Refresh slots, as the proxy's shared data holds them: one refresh per session at a time
//! across all workers, and the refreshed session handed to the requests that come after it.
//!
//! Sessions are spread over [`SLOTS`] keys by a hash of their id. A slot's value is
//! `<sid>|L|<until_ms>` while a refresh is in flight (a lease, so a worker that died mid-refresh
//! does not block the session) or `<sid>|D|<done_ms>|<sealed>` once it is done (the new session,
//! adopted by requests that still carry the old cookie for [`DONE_MS`]). Pure text codec; the
//! glue reads and compare-and-swaps the values.

use crate::flow::Claim;

/// Keys in the proxy's shared data.
pub const SLOTS: u64 = 1024;
/// How long a refresh may hold its session's slot.
pub const LEASE_MS: u64 = 10_000;
/// How long a finished refresh is handed to requests with the pre-refresh cookie.
pub const DONE_MS: u64 = 60_000;

/// The shared-data key of `sid`'s slot.
pub fn key(sid: &str) -> String {
    let slot = meshwright_shared::hash::fnv1a64(sid.as_bytes()) % SLOTS;
    format!("meshwright.oauth2.refresh.{slot}")
}

/// What a request that wants to refresh `sid` at `now_ms` gets, given the slot's value
/// (`current`), and the value to write (None: leave it).
pub fn claim(current: &str, sid: &str, now_ms: u64) -> (Option<String>, Claim) {
    let mut parts = current.splitn(4, '|');
    let (owner, state, at, sealed) = (parts.next(), parts.next(), parts.next(), parts.next());
    let at: u64 = at.and_then(|a| a.parse().ok()).unwrap_or(0);
    match (owner == Some(sid), state) {
        (_, Some("L")) if at > now_ms => (None, Claim::Busy),
        (true, Some("D")) if now_ms < at.saturating_add(DONE_MS) => {
            (None, Claim::Refreshed(sealed.unwrap_or("").to_owned()))
        }
        _ => (Some(lease(sid, now_ms)), Claim::Acquired),
    }
}

fn lease(sid: &str, now_ms: u64) -> String {
    format!("{sid}|L|{}", now_ms.saturating_add(LEASE_MS))
}

/// The slot's value once `sid`'s refresh is done at `now_ms` with the session `sealed`.
pub fn done(sid: &str, sealed: &str, now_ms: u64) -> String {
    format!("{sid}|D|{now_ms}|{sealed}")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn one_refresh_at_a_time_and_its_result_handed_on() {
        let (v, c) = claim("", "s1", 1000);
        assert_eq!(c, Claim::Acquired);
        let v = v.unwrap();
        assert_eq!(claim(&v, "s1", 2000), (None, Claim::Busy), "in flight");
        assert_eq!(
            claim(&v, "s2", 2000),
            (None, Claim::Busy),
            "another session sharing the slot waits too"
        );
        assert_eq!(
            claim(&v, "s1", 1000 + LEASE_MS).1,
            Claim::Acquired,
            "a lease that ran out is taken over"
        );
        let d = done("s1", "SEALED|with|bars", 3000);
        assert_eq!(
            claim(&d, "s1", 3000 + DONE_MS - 1),
            (None, Claim::Refreshed("SEALED|with|bars".into()))
        );
        assert_eq!(
            claim(&d, "s1", 3000 + DONE_MS).1,
            Claim::Acquired,
            "handed on 60 s"
        );
        assert_eq!(
            claim(&d, "s2", 3001).1,
            Claim::Acquired,
            "not to another session"
        );
        assert_eq!(claim("garbage", "s1", 0).1, Claim::Acquired);
        assert!(key("s1").starts_with("meshwright.oauth2.refresh."));
    }
}

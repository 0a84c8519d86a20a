//! Server side (the callee's inbound sidecar): every caller's Envoy marks its retries with
//! `x-envoy-attempt-count` (Istio turns `include_request_attempt_count` on), so the callee can
//! hold the retries it receives, from all callers at once, to a budget over the same kind of
//! window: first attempts deposit, retries withdraw one token each, and a retry the budget
//! cannot pay is shed at once. First attempts are never shed.
//!
//! A shed reply carries `x-envoy-ratelimited`, which callers' Envoys never retry (measured on
//! 1.40: 1 upstream attempt where `x-envoy-overloaded` gets 4), and for gRPC
//! `grpc-retry-pushback-ms: -1`, which tells gRPC clients not to retry.

use crate::ahead::Ahead;
use crate::budget::{Budget, Window};
use crate::config::Shed;
use meshwright_shared::reply::Reply;

/// The request header that tells a retry from a first attempt.
pub const ATTEMPT_COUNT_HEADER: &str = "x-envoy-attempt-count";

/// Headers of a shed reply the filter sets itself (configuration cannot override them).
pub const OWN_HEADERS: &[&str] = &[
    "x-envoy-ratelimited",
    "grpc-retry-pushback-ms",
    "x-meshwright-retry-budget",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    First,
    /// The n-th attempt, n ≥ 2.
    Retry(u64),
}

/// Reads `x-envoy-attempt-count`. Absent, unreadable, 0 or 1: a first attempt — a request is
/// shed only when it says it is a retry.
pub fn attempt(header: Option<&str>) -> Attempt {
    match header.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) if n >= 2 => Attempt::Retry(n),
        _ => Attempt::First,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    First,
    RetryAdmitted,
    /// Shed it (or, in dry run, count it and let it pass).
    RetryOverBudget,
}

/// Decides an inbound request from what this worker holds: a first attempt its advance covers
/// needs no write. None: a write decides ([`admit_written`]: every retry, and a first attempt
/// the advance does not cover).
pub fn admit(ahead: &mut Ahead, attempt: Attempt) -> Option<Verdict> {
    match attempt {
        Attempt::First if ahead.cover() => Some(Verdict::First),
        _ => None,
    }
}

/// A request [`admit`] left to a write of the shared window (inside a
/// [`crate::budget::step`]): a first attempt's deposit (and a new advance), or a retry's token.
pub fn admit_written(
    window: &mut Window,
    budget: &Budget,
    ahead: &mut Ahead,
    attempt: Attempt,
) -> Verdict {
    match attempt {
        Attempt::First => {
            ahead.write_first(window, budget);
            Verdict::First
        }
        Attempt::Retry(_) if window.grant(budget, 1) == 1 => Verdict::RetryAdmitted,
        Attempt::Retry(_) => Verdict::RetryOverBudget,
    }
}

/// The reply to a shed retry.
pub fn shed_reply(shed: &Shed, grpc: bool) -> Reply {
    let mut headers = Vec::with_capacity(shed.headers.len() + 3);
    headers.push(("x-envoy-ratelimited".to_owned(), "true".to_owned()));
    headers.push(("x-meshwright-retry-budget".to_owned(), "shed".to_owned()));
    if grpc {
        headers.push(("grpc-retry-pushback-ms".to_owned(), "-1".to_owned()));
    }
    // A gRPC reply keeps Envoy's `content-type: application/grpc`.
    headers.extend(
        shed.headers
            .iter()
            .filter(|(k, _)| !(grpc && k == "content-type"))
            .cloned(),
    );
    Reply {
        status: if grpc { 200 } else { shed.http_status },
        headers,
        body: shed.body.clone(),
        grpc_status: grpc.then_some(shed.grpc_status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ahead;
    use crate::budget::linkerd;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn only_counts_of_two_or_more_are_retries() {
        assert_eq!(attempt(None), Attempt::First);
        assert_eq!(attempt(Some("1")), Attempt::First);
        assert_eq!(attempt(Some("0")), Attempt::First);
        assert_eq!(attempt(Some("banana")), Attempt::First);
        assert_eq!(attempt(Some("-3")), Attempt::First);
        assert_eq!(attempt(Some(" 2 ")), Attempt::Retry(2));
        assert_eq!(attempt(Some("4")), Attempt::Retry(4));
    }

    #[test]
    fn first_attempts_pay_for_retries_and_are_never_refused() {
        let b = Budget::try_new(0.5, 0.0, 10_000).unwrap();
        let mut w = Window::new(&b, 0);
        let mut l = Ahead::new(ahead::advance_size(&b));
        let mut run =
            |w: &mut Window, a| admit(&mut l, a).unwrap_or_else(|| admit_written(w, &b, &mut l, a));
        assert_eq!(run(&mut w, Attempt::Retry(2)), Verdict::RetryOverBudget);
        assert_eq!(run(&mut w, Attempt::First), Verdict::First);
        assert_eq!(run(&mut w, Attempt::Retry(2)), Verdict::RetryOverBudget);
        assert_eq!(run(&mut w, Attempt::First), Verdict::First);
        assert_eq!(run(&mut w, Attempt::Retry(2)), Verdict::RetryAdmitted);
        assert_eq!(run(&mut w, Attempt::Retry(3)), Verdict::RetryOverBudget);
        for _ in 0..100 {
            assert_eq!(run(&mut w, Attempt::First), Verdict::First);
        }
        // Below the lease floor every first attempt is written on its own, so the count is exact.
        assert_eq!(w.totals(), (102, 1));
    }

    #[test]
    fn a_callee_never_counts_fewer_first_attempts_than_it_received() {
        // Two workers of one callee, a full window: each first attempt is either in the window
        // or covered by an advance already deposited; retries are paid from both.
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        let mut workers = [Ahead::new(ahead::advance_size(&b)); 2];
        for received in 1..=40u64 {
            let a = &mut workers[usize::from(received % 2 == 0)];
            if admit(a, Attempt::First).is_none() {
                admit_written(&mut w, &b, a, Attempt::First);
            }
            assert!(w.totals().0 >= received);
        }
        let uncovered: u32 = workers.iter().map(Ahead::uncovered).sum();
        assert_eq!(w.totals().0, 40 + u64::from(uncovered));
        for a in &mut workers {
            a.flush(&mut w, &b);
        }
        assert_eq!(w.totals(), (40, 0), "the tick leaves the exact count");
        let mut a = workers[0];
        assert_eq!(
            admit(&mut a, Attempt::Retry(2)),
            None,
            "retries are written"
        );
        assert_eq!(
            admit_written(&mut w, &b, &mut a, Attempt::Retry(2)),
            Verdict::RetryAdmitted
        );
        assert_eq!(w.totals(), (40, 1));
    }

    #[test]
    fn shed_replies_stop_envoy_and_grpc_retries() {
        let shed = Shed::default();
        let http = shed_reply(&shed, false);
        assert_eq!((http.status, http.grpc_status), (429, None));
        assert!(
            http.headers
                .contains(&("x-envoy-ratelimited".into(), "true".into()))
        );
        assert!(
            !http
                .headers
                .iter()
                .any(|(k, _)| k == "grpc-retry-pushback-ms")
        );
        let custom = Shed {
            headers: vec![
                ("retry-after".into(), "1".into()),
                ("content-type".into(), "application/problem+json".into()),
            ],
            ..shed
        };
        assert!(
            shed_reply(&custom, false)
                .headers
                .contains(&("content-type".into(), "application/problem+json".into()))
        );
        let grpc = shed_reply(&custom, true);
        assert!(!grpc.headers.iter().any(|(k, _)| k == "content-type"));
        assert_eq!(grpc.grpc_status, Some(14));
        assert!(
            grpc.headers
                .contains(&("grpc-retry-pushback-ms".into(), "-1".into()))
        );
        assert!(grpc.headers.contains(&("retry-after".into(), "1".into())));
        assert_eq!(grpc.body, "retry budget exhausted");
    }
}

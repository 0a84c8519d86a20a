//! What one VM (one worker) keeps of a budget between two writes to shared data, so that the
//! request path needs no shared-data call and no clock.
//!
//! - **Deposits** (original requests) are counted in the VM and written with the next write:
//!   the shared window sees them up to one report interval late. That only ever makes the
//!   budget smaller for a while, never larger.
//! - **A lease**: a write withdraws up to [`MAX_LEASE`] tokens from the shared window at once
//!   (in its newest bucket) and the VM hands them to requests without asking again; a client
//!   grant's unused part goes back to the lease when the request settles. Every token a request
//!   gets was withdrawn from the shared window first, so workers together never grant more than
//!   the budget holds.
//! - Leases are taken only while the window holds at least [`LEASE_FLOOR`] tokens. Below that
//!   the worker is *tight*: every request is written on its own (its deposit and its grant),
//!   exactly as without leases, so the last tokens of a budget go one by one to whichever worker
//!   asks. A worker learns that the window is tight from its own writes and from every tick.
//!   What a lease costs the other workers is at most the tokens it holds ([`MAX_HELD`] per
//!   worker) until the holder's next write.
//! - This is the client side. The server side deposits ahead instead ([`crate::ahead`]): a
//!   callee whose workers counted first attempts locally, as here, lagged its callers' budgets
//!   and shed retries they had been granted.
//! - **Every write returns the lease**, and the root context's tick writes every budget the VM
//!   touched, so a lease lives at most one report interval. Leasing is switched off (every
//!   request written on its own) when the report interval is not shorter than half the window,
//!   so a lease never outlives the bucket it was withdrawn from.

use crate::budget::{Adjustments, Budget, Window};

/// Tokens one write withdraws for the VM to hand out (a request's own want when larger).
pub const MAX_LEASE: u32 = 16;

/// Tokens the shared window must hold for a write to take a lease rather than just a grant.
pub const LEASE_FLOOR: u32 = 4 * MAX_LEASE;

/// Most tokens a VM holds back; settlements beyond it go back to the window with the next write.
pub const MAX_HELD: u32 = 4 * MAX_LEASE;

/// Whether leases may be taken with this report interval: a lease is returned by the next tick,
/// which must come well before its bucket leaves the window.
pub fn leasing_allowed(budget: &Budget, report_interval_ms: u32) -> bool {
    u64::from(report_interval_ms) * 2 <= budget.ttl_ms()
}

/// One VM's part of one budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    leasing: bool,
    /// Original requests not yet deposited.
    deposits: u32,
    /// The lease: its bucket and the tokens not handed out. None between a flush and the next
    /// write, and always when leasing is off.
    lease: Option<(u64, u32)>,
    /// Settlements for the shared window (grants of earlier leases, extra charges).
    pending: Adjustments,
    /// The window held less than [`LEASE_FLOOR`] at this worker's last write (always, with
    /// leasing off): every request is written.
    tight: bool,
    /// The write under way creates the shared key (see [`Local::set_creating`]).
    creating: bool,
}

impl Local {
    pub fn new(leasing: bool) -> Self {
        Self {
            leasing,
            tight: !leasing,
            ..Self::default()
        }
    }

    /// Whether every request is to be written on its own.
    pub fn is_tight(&self) -> bool {
        self.tight
    }

    /// Whether the write under way creates the budget's shared-data key. Shared data has no
    /// create-if-absent: a key's first write is unconditional, and two workers writing it first
    /// at once keep only the last one's. So a creating write takes no lease: the loser of that
    /// race loses at most its own grant (≤ `max_retries`) and one deposit, never a lease.
    pub fn set_creating(&mut self, creating: bool) {
        self.creating = creating;
    }

    /// Counts an original request (deposited with the next write).
    pub fn count(&mut self) {
        self.deposits = self.deposits.saturating_add(1);
    }

    /// `want` tokens from the lease, and the bucket they were withdrawn in; None when the VM
    /// holds too few, or is tight (the caller then [`write`](Self::write)s).
    pub fn take(&mut self, want: u32) -> Option<u64> {
        if self.tight {
            return None;
        }
        let (bucket, held) = self.lease.as_mut()?;
        let left = held.checked_sub(want)?;
        *held = left;
        Some(*bucket)
    }

    /// Settles `delta` tokens of a grant withdrawn in `bucket` (positive: unused, given back;
    /// negative: charged extra). Unused tokens of the current lease go back to it.
    pub fn settle(&mut self, bucket: u64, delta: i64) {
        if let Some((b, held)) = self.lease.as_mut()
            && *b == bucket
            && delta > 0
        {
            let room = MAX_HELD.saturating_sub(*held);
            let back = u32::try_from(delta).unwrap_or(u32::MAX).min(room);
            *held += back;
            self.pending.add(bucket, delta - i64::from(back));
            return;
        }
        self.pending.add(bucket, delta);
    }

    /// Whether a write has anything to carry (deposits, settlements or a lease to return).
    pub fn has_writes(&self) -> bool {
        self.deposits > 0 || !self.pending.is_empty() || self.lease.is_some_and(|(_, h)| h > 0)
    }

    /// Writes deposits and settlements into `window` and returns the lease (the tick, and the
    /// start of every write), and notes whether the window is tight. `window` has been moved
    /// to now.
    pub fn flush(&mut self, window: &mut Window, budget: &Budget) {
        window.deposit_n(std::mem::take(&mut self.deposits));
        if let Some((bucket, held)) = self.lease.take() {
            self.pending.add(bucket, i64::from(held));
        }
        self.pending.apply(window);
        self.pending.clear();
        self.tight = !self.leasing || window.available(budget) < LEASE_FLOOR;
    }

    /// A write for a request that wants `want` tokens the lease cannot give: flushes, then
    /// withdraws the grant (and, while the window holds [`LEASE_FLOOR`], a new lease). Returns
    /// the tokens granted (≤ `want`) and their bucket.
    pub fn write(&mut self, window: &mut Window, budget: &Budget, want: u32) -> (u32, u64) {
        self.flush(window, budget);
        let lease = !self.tight && !self.creating;
        let took = window.grant(budget, if lease { want.max(MAX_LEASE) } else { want });
        let granted = took.min(want);
        if lease {
            self.lease = Some((window.newest(), took - granted));
        }
        (granted, window.newest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::linkerd;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_full_window_lends_a_lease_that_serves_requests_without_writes() {
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        let mut l = Local::new(true);
        l.count();
        assert_eq!(l.take(2), None, "no lease yet");
        assert_eq!(l.write(&mut w, &b, 2), (2, 0));
        assert_eq!(w.totals(), (1, 16), "the lease is withdrawn at once");
        // Seven more requests of 2 from the 14 held, then the lease is short.
        for _ in 0..7 {
            l.count();
            assert_eq!(l.take(2), Some(0));
        }
        assert_eq!(l.take(2), None);
        // Unused grants go back to the lease, not to shared data.
        l.settle(0, 2);
        assert_eq!(l.take(2), Some(0));
        assert_eq!(w.totals(), (1, 16));
        assert!(!l.is_tight());
        // The tick returns what is held and deposits the counted requests.
        l.settle(0, 2);
        l.flush(&mut w, &b);
        assert_eq!(w.totals(), (8, 14));
        assert!(!l.has_writes());
        assert_eq!(l.take(0), None, "no lease after a flush");
    }

    #[test]
    fn a_write_that_creates_the_key_takes_no_lease() {
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        let mut l = Local::new(true);
        l.set_creating(true);
        l.count();
        assert_eq!(l.write(&mut w, &b, 3).0, 3);
        assert_eq!(l.take(1), None, "no lease to serve from");
        assert_eq!(w.totals(), (1, 3), "only the grant was withdrawn");
        l.set_creating(false);
        l.count();
        assert_eq!(l.write(&mut w, &b, 3).0, 3);
        assert!(l.take(1).is_some(), "the next write leases");
        assert_eq!(
            w.totals(),
            (2, 3 + u64::from(MAX_LEASE)),
            "a grant, then a lease"
        );
    }

    #[test]
    fn below_the_lease_floor_every_grant_is_written_alone() {
        let b = Budget::try_new(0.2, 3.0, 10_000).unwrap(); // 30 tokens
        let mut w = Window::new(&b, 0);
        let mut l = Local::new(true);
        assert_eq!(l.write(&mut w, &b, 2), (2, 0));
        assert_eq!(w.totals(), (0, 2));
        assert!(l.is_tight(), "every request is written now");
        assert_eq!(l.take(0), None);
        // Leasing off: the same even with a full window.
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        let mut l = Local::new(false);
        assert!(l.is_tight());
        assert_eq!(l.write(&mut w, &b, 2), (2, 0));
        assert_eq!(w.totals(), (0, 2));
        l.settle(0, 2);
        assert!(l.has_writes(), "the refund waits for the next write");
        l.flush(&mut w, &b);
        assert_eq!(w.totals(), (0, 0));
    }

    #[test]
    fn settlements_of_an_old_lease_and_extra_charges_go_to_the_window() {
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        let mut l = Local::new(true);
        assert_eq!(l.write(&mut w, &b, 2), (2, 0));
        w.advance(1_000);
        l.flush(&mut w, &b);
        assert_eq!(l.write(&mut w, &b, 2), (2, 1));
        // The first grant settles after its lease was returned: straight to bucket 0.
        l.settle(0, 2);
        // The second used one retry more than granted: charged.
        l.settle(1, -1);
        l.flush(&mut w, &b);
        assert_eq!(w.totals(), (0, 2 + 1));
    }

    #[test]
    fn a_lease_holds_at_most_max_held() {
        let b = Budget::try_new(0.2, 100.0, 10_000).unwrap();
        let mut w = Window::new(&b, 0);
        let mut l = Local::new(true);
        let mut grants = Vec::new();
        for _ in 0..100 {
            match l.take(2) {
                Some(bucket) => grants.push(bucket),
                None => grants.push(l.write(&mut w, &b, 2).1),
            }
        }
        for bucket in grants {
            l.settle(bucket, 2);
        }
        assert_eq!(l.lease.map(|(_, h)| h), Some(MAX_HELD));
        l.flush(&mut w, &b);
        assert_eq!(w.totals(), (0, 0), "every token came back");
    }

    #[test]
    fn leases_need_a_report_interval_under_half_the_window() {
        let b = linkerd();
        assert!(leasing_allowed(&b, 1_000));
        assert!(leasing_allowed(&b, 5_000));
        assert!(!leasing_allowed(&b, 5_001));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Request { worker: usize, want: u32 },
            Settle { index: usize, retries: u32 },
            Flush { worker: usize },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..3usize, 0..4u32).prop_map(|(worker, want)| Op::Request { worker, want }),
                3 => (any::<usize>(), 0..5u32).prop_map(|(index, retries)| Op::Settle { index, retries }),
                1 => (0..3usize).prop_map(|worker| Op::Flush { worker }),
            ]
        }

        proptest! {
            /// Three workers sharing one window (no time passes): no request ever holds a token
            /// the window does not count as withdrawn, the window never grants past its balance,
            /// and once everything is settled and flushed the window holds exactly the requests
            /// made and the retries that happened.
            #[test]
            fn leases_never_hand_out_tokens_the_window_did_not_withdraw(
                floor in 0.0..20.0f64,
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let b = Budget::try_new(0.2, floor, 10_000).unwrap();
                let mut w = Window::new(&b, 0);
                let mut workers = vec![Local::new(true), Local::new(true), Local::new(true)];
                // Open grants: (worker, tokens, bucket).
                let mut open: Vec<(usize, u32, u64)> = Vec::new();
                let (mut requests, mut retries_made) = (0u64, 0u64);
                for op in ops {
                    match op {
                        Op::Request { worker, want } => {
                            let l = &mut workers[worker];
                            l.count();
                            requests += 1;
                            let (got, bucket) = match l.take(want) {
                                Some(bucket) => (want, bucket),
                                None => l.write(&mut w, &b, want),
                            };
                            prop_assert!(got <= want);
                            prop_assert!(w.balance_micro(&b) >= 0 || got == 0);
                            open.push((worker, got, bucket));
                        }
                        Op::Settle { index, retries } if !open.is_empty() => {
                            let (worker, granted, bucket) = open.remove(index % open.len());
                            let used = retries.min(granted);
                            retries_made += u64::from(used);
                            workers[worker].settle(bucket, i64::from(granted - used));
                        }
                        Op::Settle { .. } => {}
                        Op::Flush { worker } => workers[worker].flush(&mut w, &b),
                    }
                    let held: u64 = workers.iter().map(|l| u64::from(l.lease.map_or(0, |(_, h)| h))).sum();
                    let out: u64 = open.iter().map(|(_, t, _)| u64::from(*t)).sum();
                    let pending_back: i64 = workers.iter().flat_map(|l| l.pending.entries()).map(|(_, d)| d).sum();
                    let withdrawn = w.totals().1 as i64;
                    prop_assert_eq!(
                        withdrawn - pending_back,
                        (held + out + retries_made) as i64,
                        "withdrawn tokens = held + granted + used"
                    );
                }
                for (worker, granted, bucket) in open.drain(..) {
                    workers[worker].settle(bucket, i64::from(granted));
                }
                for l in &mut workers {
                    l.flush(&mut w, &b);
                }
                prop_assert_eq!(w.totals(), (requests, retries_made));
            }
        }
    }
}

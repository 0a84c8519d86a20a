//! The retry budget: a ratio of retries to original requests over a sliding window, with a floor
//! (Finagle's and Linkerd's model).
//!
//! - Every original request deposits `retry_ratio` tokens; every retry withdraws one.
//! - Deposits and withdrawals expire after `ttl`: the window is a ring of [`BUCKETS`] buckets of
//!   `ttl / BUCKETS` each, so expiry is exact to one bucket (the window covers between
//!   `ttl − bucket` and `ttl`).
//! - A reserve of `min_retries_per_second × ttl` tokens is always in the window, so a service
//!   with little traffic can still retry.
//!
//! The invariant every grant keeps: over the buckets in the window,
//! `withdrawn ≤ retry_ratio × requests + reserve`. It is checked against an independent model by
//! the property tests below, across encode/decode round trips (the state lives in the proxy's
//! shared data, where every worker reads and writes it with compare-and-swap).
//!
//! A grant withdraws at once, and is settled later: [`Window::adjust`] gives unused tokens back
//! to the bucket they were taken from (so a refund expires with the withdrawal it undoes), or
//! charges extra ones there. Buckets that already left the window ignore adjustments.
//!
//! Counts are integers; token amounts are micro-tokens (10⁻⁶), so no float is touched per request.

/// Buckets in the window.
pub const BUCKETS: usize = 10;

/// Shortest and longest accepted `ttl`.
pub const MIN_TTL_MS: u64 = 1_000;
pub const MAX_TTL_MS: u64 = 600_000;

/// Largest accepted `retry_ratio` (10 retries per original request).
pub const MAX_RATIO: f64 = 10.0;

/// Largest accepted `min_retries_per_second`.
pub const MAX_MIN_RETRIES_PER_SECOND: f64 = 100_000.0;

const MICRO: i128 = 1_000_000;
const VERSION: u8 = 1;

/// Size of [`Window::encode`]'s output: version, bucket count, bucket width, newest bucket
/// index, then per bucket the request and withdrawal counts.
pub const ENCODED_LEN: usize = 1 + 1 + 4 + 8 + BUCKETS * 8;

/// A refused budget parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetError {
    /// `retry_ratio` not in `0..=MAX_RATIO` (or NaN).
    Ratio(f64),
    /// `min_retries_per_second` not in `0..=MAX_MIN_RETRIES_PER_SECOND` (or NaN).
    MinRetriesPerSecond(f64),
    /// `ttl_ms` not in `MIN_TTL_MS..=MAX_TTL_MS`.
    Ttl(u64),
}

/// The budget's parameters, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Tokens deposited per original request, in micro-tokens.
    ratio_micro: u32,
    /// `min_retries_per_second × ttl`, in micro-tokens.
    reserve_micro: u64,
    bucket_ms: u32,
}

impl Budget {
    pub fn try_new(
        retry_ratio: f64,
        min_retries_per_second: f64,
        ttl_ms: u64,
    ) -> Result<Self, BudgetError> {
        if !(0.0..=MAX_RATIO).contains(&retry_ratio) {
            return Err(BudgetError::Ratio(retry_ratio));
        }
        if !(0.0..=MAX_MIN_RETRIES_PER_SECOND).contains(&min_retries_per_second) {
            return Err(BudgetError::MinRetriesPerSecond(min_retries_per_second));
        }
        if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
            return Err(BudgetError::Ttl(ttl_ms));
        }
        let bucket_ms = ttl_ms / BUCKETS as u64;
        let window_ms = bucket_ms * BUCKETS as u64;
        // In range: ratio ≤ 10 → ≤ 10⁷; reserve ≤ 10⁵ × 600 s × 10⁶ = 6·10¹³.
        Ok(Self {
            ratio_micro: (retry_ratio * 1e6).round() as u32,
            reserve_micro: (min_retries_per_second * window_ms as f64 * 1e3).round() as u64,
            bucket_ms: u32::try_from(bucket_ms).unwrap_or(u32::MAX),
        })
    }

    /// The window length actually used: `ttl_ms` rounded down to a multiple of [`BUCKETS`].
    pub fn ttl_ms(&self) -> u64 {
        u64::from(self.bucket_ms) * BUCKETS as u64
    }

    pub fn bucket_ms(&self) -> u32 {
        self.bucket_ms
    }

    /// Tokens always in the window (`min_retries_per_second × ttl`).
    pub fn reserve(&self) -> f64 {
        self.reserve_micro as f64 / 1e6
    }

    pub fn ratio(&self) -> f64 {
        f64::from(self.ratio_micro) / 1e6
    }

    /// Index of the bucket `now_ms` falls in.
    pub fn bucket_of(&self, now_ms: u64) -> u64 {
        now_ms / u64::from(self.bucket_ms.max(1))
    }
}

/// How a stored state was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Nothing stored yet: an empty window.
    Fresh,
    /// The stored window.
    Stored,
    /// Something unreadable, or a window of another width (the ttl changed): replaced by an
    /// empty one.
    Reset,
}

/// The sliding window: per bucket, original requests and net withdrawn retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    bucket_ms: u32,
    /// Index (`now_ms / bucket_ms`) of the newest bucket.
    newest: u64,
    requests: [u32; BUCKETS],
    withdrawn: [u32; BUCKETS],
}

fn slot(index: u64) -> usize {
    // < BUCKETS, so the cast is lossless.
    (index % BUCKETS as u64) as usize
}

impl Window {
    /// An empty window whose newest bucket holds `now_ms`.
    pub fn new(budget: &Budget, now_ms: u64) -> Self {
        Self {
            bucket_ms: budget.bucket_ms,
            newest: budget.bucket_of(now_ms),
            requests: [0; BUCKETS],
            withdrawn: [0; BUCKETS],
        }
    }

    /// Reads a stored window (shared data); anything that is not a window of this budget's
    /// width yields an empty one. Never panics.
    pub fn decode(bytes: Option<&[u8]>, budget: &Budget, now_ms: u64) -> (Self, Loaded) {
        let Some(bytes) = bytes else {
            return (Self::new(budget, now_ms), Loaded::Fresh);
        };
        match Self::parse(bytes) {
            Some(w) if w.bucket_ms == budget.bucket_ms => (w, Loaded::Stored),
            _ => (Self::new(budget, now_ms), Loaded::Reset),
        }
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let (&version, rest) = bytes.split_first()?;
        let (&n, rest) = rest.split_first()?;
        if version != VERSION || usize::from(n) != BUCKETS {
            return None;
        }
        let (width, rest) = rest.split_first_chunk::<4>()?;
        let (newest, mut rest) = rest.split_first_chunk::<8>()?;
        let mut w = Self {
            bucket_ms: u32::from_le_bytes(*width),
            newest: u64::from_le_bytes(*newest),
            requests: [0; BUCKETS],
            withdrawn: [0; BUCKETS],
        };
        if w.bucket_ms == 0 {
            return None;
        }
        for (r, d) in w.requests.iter_mut().zip(w.withdrawn.iter_mut()) {
            let (a, tail) = rest.split_first_chunk::<4>()?;
            let (b, tail) = tail.split_first_chunk::<4>()?;
            *r = u32::from_le_bytes(*a);
            *d = u32::from_le_bytes(*b);
            rest = tail;
        }
        Some(w)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.push(VERSION);
        out.push(BUCKETS as u8);
        out.extend_from_slice(&self.bucket_ms.to_le_bytes());
        out.extend_from_slice(&self.newest.to_le_bytes());
        for (r, d) in self.requests.iter().zip(&self.withdrawn) {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }

    /// Index of the newest bucket: where deposits and withdrawals go now.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Moves the window to `now_ms`, expiring buckets that fell out. A time before the newest
    /// bucket (another worker got there first, or the clock stepped back) counts as the newest.
    pub fn advance(&mut self, now_ms: u64) {
        let now = now_ms / u64::from(self.bucket_ms.max(1));
        if now <= self.newest {
            return;
        }
        let gap = now - self.newest;
        if gap >= BUCKETS as u64 {
            self.requests = [0; BUCKETS];
            self.withdrawn = [0; BUCKETS];
        } else {
            for k in 1..=gap {
                let s = slot(self.newest + k);
                if let (Some(r), Some(d)) = (self.requests.get_mut(s), self.withdrawn.get_mut(s)) {
                    *r = 0;
                    *d = 0;
                }
            }
        }
        self.newest = now;
    }

    /// Whether bucket `index` is still in the window.
    pub fn is_live(&self, index: u64) -> bool {
        index <= self.newest && self.newest - index < BUCKETS as u64
    }

    /// Counts one original request.
    pub fn deposit(&mut self) {
        self.deposit_n(1);
    }

    /// Counts `n` original requests (those a worker counted since its last write).
    pub fn deposit_n(&mut self, n: u32) {
        if let Some(r) = self.requests.get_mut(slot(self.newest)) {
            *r = r.saturating_add(n);
        }
    }

    /// Takes back `n` original requests deposited in bucket `index` ahead of their arrival
    /// ([`crate::ahead`]). Ignored (false) when that bucket has left the window.
    pub fn take_deposits(&mut self, index: u64, n: u32) -> bool {
        if !self.is_live(index) {
            return false;
        }
        if let Some(r) = self.requests.get_mut(slot(index)) {
            *r = r.saturating_sub(n);
        }
        true
    }

    /// The window's balance in micro-tokens (may be negative after extra charges).
    pub fn balance_micro(&self, budget: &Budget) -> i128 {
        let requests: i128 = self.requests.iter().map(|&r| i128::from(r)).sum();
        let withdrawn: i128 = self.withdrawn.iter().map(|&w| i128::from(w)).sum();
        i128::from(budget.ratio_micro) * requests + i128::from(budget.reserve_micro)
            - MICRO * withdrawn
    }

    /// Whole retries the budget can pay now.
    pub fn available(&self, budget: &Budget) -> u32 {
        let tokens = self.balance_micro(budget).max(0) / MICRO;
        u32::try_from(tokens).unwrap_or(u32::MAX)
    }

    /// Grants up to `want` retries, withdrawing them from the newest bucket.
    pub fn grant(&mut self, budget: &Budget, want: u32) -> u32 {
        let granted = want.min(self.available(budget));
        if let Some(d) = self.withdrawn.get_mut(slot(self.newest)) {
            *d = d.saturating_add(granted);
        }
        granted
    }

    /// Settles a grant made in bucket `index`: a positive `delta` gives tokens back, a negative
    /// one charges more. Ignored (false) when that bucket has left the window.
    pub fn adjust(&mut self, index: u64, delta: i64) -> bool {
        if !self.is_live(index) {
            return false;
        }
        if let Some(d) = self.withdrawn.get_mut(slot(index)) {
            let v = i64::from(*d).saturating_sub(delta);
            *d = u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        }
        true
    }

    /// Original requests and withdrawn retries in the window (for tests and logs).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.requests.iter().map(|&r| u64::from(r)).sum(),
            self.withdrawn.iter().map(|&w| u64::from(w)).sum(),
        )
    }
}

/// Settlements waiting to be written with the next update of a destination's window: a few
/// `(bucket index, delta)` entries, merged per bucket, older ones dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adjustments(Vec<(u64, i64)>);

impl Adjustments {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn add(&mut self, index: u64, delta: i64) {
        if delta == 0 {
            return;
        }
        match self.0.iter_mut().find(|(i, _)| *i == index) {
            Some((_, d)) => *d = d.saturating_add(delta),
            None => self.0.push((index, delta)),
        }
        // Anything BUCKETS older than the newest entry is outside every window that contains
        // the newest one: it would be ignored anyway.
        if let Some(newest) = self.0.iter().map(|(i, _)| *i).max() {
            self.0
                .retain(|(i, d)| *d != 0 && newest - *i < BUCKETS as u64);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.0.iter().copied()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Applies every entry to `window`.
    pub fn apply(&self, window: &mut Window) {
        for &(index, delta) in &self.0 {
            window.adjust(index, delta);
        }
    }
}

/// One read-modify-write of a stored window: decode, move to `now_ms`, run `f`, encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<T> {
    pub encoded: Vec<u8>,
    pub out: T,
    /// Whole retries available after `f`.
    pub level: u32,
    pub loaded: Loaded,
}

pub fn step<T>(
    budget: &Budget,
    stored: Option<&[u8]>,
    now_ms: u64,
    f: impl FnOnce(&mut Window, &Budget) -> T,
) -> Step<T> {
    let (mut window, loaded) = Window::decode(stored, budget, now_ms);
    window.advance(now_ms);
    let out = f(&mut window, budget);
    Step {
        encoded: window.encode(),
        level: window.available(budget),
        out,
        loaded,
    }
}

/// Linkerd's default budget (20 %, 10 retries/s, 10 s), for tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn linkerd() -> Budget {
    Budget::try_new(0.2, 10.0, 10_000).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parameters_out_of_range_are_refused() {
        assert_eq!(
            Budget::try_new(-0.1, 10.0, 10_000),
            Err(BudgetError::Ratio(-0.1))
        );
        assert!(matches!(
            Budget::try_new(f64::NAN, 10.0, 10_000),
            Err(BudgetError::Ratio(_))
        ));
        assert_eq!(
            Budget::try_new(10.5, 10.0, 10_000),
            Err(BudgetError::Ratio(10.5))
        );
        assert_eq!(
            Budget::try_new(0.2, -1.0, 10_000),
            Err(BudgetError::MinRetriesPerSecond(-1.0))
        );
        assert!(matches!(
            Budget::try_new(0.2, f64::INFINITY, 10_000),
            Err(BudgetError::MinRetriesPerSecond(_))
        ));
        assert_eq!(Budget::try_new(0.2, 10.0, 999), Err(BudgetError::Ttl(999)));
        assert_eq!(
            Budget::try_new(0.2, 10.0, 600_001),
            Err(BudgetError::Ttl(600_001))
        );
        assert!(Budget::try_new(0.0, 0.0, 1_000).is_ok());
    }

    #[test]
    fn the_floor_is_min_retries_per_second_times_ttl() {
        let b = linkerd();
        assert_eq!(b.ttl_ms(), 10_000);
        assert_eq!(b.bucket_ms(), 1_000);
        assert_eq!(b.reserve(), 100.0);
        let w = Window::new(&b, 5_000);
        assert_eq!(w.available(&b), 100);
        // ttl rounds down to whole buckets.
        assert_eq!(Budget::try_new(0.2, 1.0, 1_234).unwrap().ttl_ms(), 1_230);
    }

    #[test]
    fn deposits_pay_for_retries_at_the_ratio() {
        let b = Budget::try_new(0.2, 0.0, 10_000).unwrap();
        let mut w = Window::new(&b, 0);
        for _ in 0..4 {
            w.deposit();
        }
        assert_eq!(w.available(&b), 0, "0.8 tokens is not a retry");
        w.deposit();
        assert_eq!(w.available(&b), 1);
        assert_eq!(w.grant(&b, 3), 1);
        assert_eq!(w.grant(&b, 3), 0);
        assert_eq!(w.totals(), (5, 1));
    }

    #[test]
    fn grants_are_capped_by_want_and_by_the_balance() {
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        assert_eq!(w.grant(&b, 3), 3);
        assert_eq!(w.available(&b), 97);
        assert_eq!(w.grant(&b, 0), 0);
        assert_eq!(w.grant(&b, 1_000), 97);
        assert_eq!(w.grant(&b, 1), 0);
    }

    #[test]
    fn everything_expires_after_ttl() {
        let b = Budget::try_new(1.0, 0.0, 10_000).unwrap();
        let mut w = Window::new(&b, 0);
        for _ in 0..10 {
            w.deposit();
        }
        assert_eq!(w.grant(&b, 4), 4);
        w.advance(9_999);
        assert_eq!(w.available(&b), 6, "still inside the window");
        w.deposit();
        w.advance(10_000);
        assert_eq!(w.available(&b), 1, "bucket 0 expired, bucket 9 remains");
        w.advance(18_999);
        assert_eq!(w.available(&b), 1);
        w.advance(19_000);
        assert_eq!(w.available(&b), 0);
        assert_eq!(w.totals(), (0, 0));
        // A long jump clears everything at once.
        w.deposit();
        w.advance(1_000_000);
        assert_eq!(w.totals(), (0, 0));
    }

    #[test]
    fn an_exhausted_budget_recovers_after_ttl() {
        let b = Budget::try_new(0.2, 1.0, 2_000).unwrap();
        let mut w = Window::new(&b, 0);
        for _ in 0..100 {
            w.deposit();
            w.grant(&b, 3);
        }
        assert_eq!(w.available(&b), 0);
        w.advance(1_000);
        w.deposit();
        assert_eq!(w.grant(&b, 3), 0, "debts are still in the window");
        w.advance(3_100);
        assert_eq!(w.available(&b), 2, "only the floor: 1/s × 2 s");
    }

    #[test]
    fn time_going_backwards_counts_as_now() {
        let b = linkerd();
        let mut w = Window::new(&b, 50_000);
        w.advance(10_000);
        assert_eq!(w.newest(), 50);
        w.deposit();
        assert_eq!(w.totals(), (1, 0));
    }

    #[test]
    fn refunds_go_back_to_the_bucket_of_the_grant_and_expire_with_it() {
        let b = Budget::try_new(0.0, 1.0, 10_000).unwrap();
        let mut w = Window::new(&b, 0);
        assert_eq!(w.grant(&b, 3), 3);
        let at = w.newest();
        w.advance(5_000);
        assert!(w.adjust(at, 2));
        assert_eq!(w.totals(), (0, 1));
        w.advance(10_000);
        // The grant's bucket left the window: a late refund must not add tokens.
        assert!(!w.adjust(at, 1));
        assert_eq!(w.available(&b), 10);
        // Extra charges reduce the balance; the count never goes below zero.
        let now = w.newest();
        assert!(w.adjust(now, -4));
        assert_eq!(w.available(&b), 6);
        assert!(w.adjust(now, 100));
        assert_eq!(w.totals(), (0, 0));
    }

    #[test]
    fn encoding_round_trips_and_has_a_fixed_size() {
        let b = linkerd();
        let mut w = Window::new(&b, 123_456);
        w.deposit();
        w.grant(&b, 2);
        w.advance(125_000);
        w.deposit();
        let bytes = w.encode();
        assert_eq!(bytes.len(), ENCODED_LEN);
        assert_eq!(ENCODED_LEN, 94);
        let (back, how) = Window::decode(Some(&bytes), &b, 0);
        assert_eq!(how, Loaded::Stored);
        assert_eq!(back, w);
    }

    #[test]
    fn unreadable_or_foreign_state_is_replaced() {
        let b = linkerd();
        let (w, how) = Window::decode(None, &b, 7_000);
        assert_eq!((how, w.newest()), (Loaded::Fresh, 7));
        let (_, how) = Window::decode(Some(b"garbage"), &b, 0);
        assert_eq!(how, Loaded::Reset);
        // A window of another width: the ttl changed.
        let other = Budget::try_new(0.2, 10.0, 20_000).unwrap();
        let (_, how) = Window::decode(Some(&Window::new(&other, 0).encode()), &b, 0);
        assert_eq!(how, Loaded::Reset);
        let mut bytes = Window::new(&b, 0).encode();
        bytes[0] = 2;
        assert_eq!(Window::decode(Some(&bytes), &b, 0).1, Loaded::Reset);
    }

    #[test]
    fn pending_adjustments_merge_per_bucket_and_drop_stale_ones() {
        let mut p = Adjustments::new();
        p.add(5, 2);
        p.add(5, 1);
        p.add(6, 0);
        assert_eq!(p.len(), 1);
        p.add(5, -3);
        assert!(p.is_empty(), "entries that cancel out are dropped");
        p.add(1, 1);
        p.add(11, 1);
        assert_eq!(p, Adjustments(vec![(11, 1)]));
    }

    #[test]
    fn settlements_applied_in_a_step_pay_for_its_grant() {
        let b = Budget::try_new(0.0, 0.3, 10_000).unwrap();
        let first = step(&b, None, 0, |w, b| w.grant(b, 3));
        assert_eq!(
            (first.out, first.level, first.loaded),
            (3, 0, Loaded::Fresh)
        );
        let mut pending = Adjustments::new();
        pending.add(0, 3);
        let second = step(&b, Some(&first.encoded), 1_000, |w, b| {
            pending.apply(w);
            w.grant(b, 2)
        });
        assert_eq!((second.out, second.level), (2, 1));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Time moves on by this many ms.
            Wait(u64),
            /// An original request.
            Deposit,
            /// A request for up to `want` retries.
            Grant(u32),
            /// Settle part of an outstanding grant (index into the outstanding list, share).
            Refund(usize, u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0u64..1_500).prop_map(Op::Wait),
                1 => (0u64..30_000).prop_map(Op::Wait),
                6 => Just(Op::Deposit),
                5 => (0u32..5).prop_map(Op::Grant),
                2 => (any::<usize>(), 0u32..4).prop_map(|(i, n)| Op::Refund(i, n)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The budget never grants more than `ratio × requests + floor × ttl` within a
            /// window. Checked after every grant against an event log, bucketed independently
            /// of the ring, with the state round-tripping through its byte form at every step
            /// as it does through shared data.
            #[test]
            fn grants_never_exceed_ratio_times_requests_plus_floor(
                ratio in 0.0f64..2.0,
                floor in 0.0f64..5.0,
                ttl in 1_000u64..20_000,
                ops in proptest::collection::vec(op(), 1..400),
            ) {
                let b = Budget::try_new(ratio, floor, ttl).unwrap();
                let bucket = u64::from(b.bucket_ms());
                let mut now = 1_000_000u64;
                let mut stored: Option<Vec<u8>> = None;
                // (bucket index, requests, net withdrawn) per event.
                let mut log: Vec<(u64, i64, i64)> = Vec::new();
                // Outstanding grants: (bucket index, tokens not yet refunded).
                let mut outstanding: Vec<(u64, u32)> = Vec::new();
                for op in ops {
                    let idx = now / bucket;
                    match op {
                        Op::Wait(ms) => now += ms,
                        Op::Deposit => {
                            let s = step(&b, stored.as_deref(), now, |w, _| w.deposit());
                            stored = Some(s.encoded);
                            log.push((idx, 1, 0));
                        }
                        Op::Grant(want) => {
                            let s = step(&b, stored.as_deref(), now, |w, b| {
                                let before = w.available(b);
                                (before, w.grant(b, want))
                            });
                            let (before, got) = s.out;
                            stored = Some(s.encoded);
                            prop_assert_eq!(got, want.min(before));
                            log.push((idx, 0, i64::from(got)));
                            outstanding.push((idx, got));
                            // The invariant, from the log alone: a grant leaves the window's
                            // withdrawals within what its requests and the floor pay for. (Later,
                            // older deposits may expire before the withdrawals they paid for; the
                            // balance is then negative and nothing is granted until it recovers.)
                            let live = |i: u64| i <= idx && idx - i < BUCKETS as u64;
                            let requests: i64 = log.iter().filter(|e| live(e.0)).map(|e| e.1).sum();
                            let withdrawn: i64 = log.iter().filter(|e| live(e.0)).map(|e| e.2).sum();
                            let cap = ratio_micro(&b) as i128 * requests as i128 + b.reserve_micro as i128;
                            prop_assert!(
                                got == 0 || MICRO * withdrawn as i128 <= cap,
                                "withdrawn {} > ratio {} × requests {} + reserve {}",
                                withdrawn, ratio, requests, b.reserve()
                            );
                            // And the ring agrees with the log on what is left.
                            let expect = ((cap - MICRO * withdrawn as i128).max(0) / MICRO) as u32;
                            prop_assert_eq!(s.level, expect);
                        }
                        Op::Refund(i, n) => {
                            if outstanding.is_empty() {
                                continue;
                            }
                            let k = i % outstanding.len();
                            let (at, left) = outstanding[k];
                            let n = n.min(left);
                            outstanding[k].1 -= n;
                            let mut pending = Adjustments::new();
                            pending.add(at, i64::from(n));
                            let s = step(&b, stored.as_deref(), now, |w, _| pending.apply(w));
                            stored = Some(s.encoded);
                            // Only a refund to a bucket still in the window counts.
                            if at <= idx && idx - at < BUCKETS as u64 {
                                log.push((at, 0, -i64::from(n)));
                            }
                        }
                    }
                }
            }

            #[test]
            fn decoding_arbitrary_bytes_never_panics(
                bytes in proptest::collection::vec(any::<u8>(), 0..200),
                now in any::<u64>(),
            ) {
                let b = linkerd();
                let (mut w, _) = Window::decode(Some(&bytes), &b, now);
                w.advance(now);
                w.deposit();
                let _ = w.grant(&b, u32::MAX);
                let _ = w.adjust(w.newest(), i64::MIN);
                let _ = w.adjust(0, i64::MAX);
            }

            /// Well-formed headers with arbitrary counts and times: every operation stays in
            /// range, and the state round-trips.
            #[test]
            fn extreme_stored_states_are_handled(
                newest in any::<u64>(),
                counts in proptest::collection::vec(any::<u32>(), BUCKETS * 2),
                now in any::<u64>(),
                delta in any::<i64>(),
            ) {
                let b = linkerd();
                let mut bytes = vec![VERSION, BUCKETS as u8];
                bytes.extend_from_slice(&b.bucket_ms().to_le_bytes());
                bytes.extend_from_slice(&newest.to_le_bytes());
                for c in &counts {
                    bytes.extend_from_slice(&c.to_le_bytes());
                }
                let (mut w, how) = Window::decode(Some(&bytes), &b, now);
                prop_assert_eq!(how, Loaded::Stored);
                prop_assert_eq!(&w.encode(), &bytes);
                w.advance(now);
                w.deposit();
                let before = w.available(&b);
                prop_assert!(w.grant(&b, 7) <= before.min(7));
                let _ = w.adjust(w.newest(), delta);
                let (back, _) = Window::decode(Some(&w.encode()), &b, now);
                prop_assert_eq!(back, w);
            }
        }

        fn ratio_micro(b: &Budget) -> u32 {
            b.ratio_micro
        }
    }
}

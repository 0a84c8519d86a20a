//! What one worker keeps of a callee's budget between two writes: first attempts *deposited
//! ahead*, so that most inbound requests need no shared-data call and no clock.
//!
//! A callee must never judge its budget smaller than its callers judge theirs: a caller grants a
//! retry from its own window, and a callee that sheds it anyway fails a request the mesh's
//! policy would have saved. Counting first attempts locally and writing them later (as the
//! client side does, [`crate::lease`]) makes exactly that error: the window lacks the deposits
//! other workers have not written yet (measured: the shipped pair's callee shed 1–8 granted
//! retries per outage run at 2 workers). So the server side errs the other way:
//!
//! - **An advance.** A write for a first attempt deposits it *and* [`advance_size`] more first
//!   attempts that have not arrived yet. The worker's next first attempts are covered by the
//!   advance and need no write. The window therefore never holds fewer deposits than requests
//!   arrived (never stricter than an exact count); it holds at most one advance's uncovered part
//!   more per worker, which [`advance_size`] keeps to at most [`AHEAD_TOKENS`] tokens.
//! - **Settled at the next write, and on every tick.** The advance is taken out of its bucket
//!   and the first attempts it covered are deposited in the newest bucket, so a deposit never
//!   sits in a bucket older than its request (it never expires early). The tick settles every
//!   advance, so an uncovered advance lasts at most one report interval; advances are only
//!   made when that interval is under half the window ([`crate::lease::leasing_allowed`]).
//! - **Near the end of a budget, no advance.** While the window holds fewer than
//!   [`LEASE_FLOOR`] tokens every first attempt is written on its own, so the budget's last
//!   tokens are judged on exact counts (and an advance made before is used up or settled).
//! - Retries are always written: each withdraws its token from the shared window at once.

use crate::budget::{Budget, Window};
use crate::lease::LEASE_FLOOR;

/// Most first attempts one advance deposits.
pub const MAX_AHEAD: u32 = 16;

/// Most tokens one worker's advance adds to a budget.
pub const AHEAD_TOKENS: f64 = 4.0;

/// First attempts one advance deposits: [`MAX_AHEAD`], fewer when the ratio would make them
/// worth more than [`AHEAD_TOKENS`] (0 — no advance — above a ratio of 4).
pub fn advance_size(budget: &Budget) -> u32 {
    let ratio = budget.ratio();
    if ratio <= 0.0 {
        return MAX_AHEAD;
    }
    let fits = (AHEAD_TOKENS / ratio).floor();
    if fits >= f64::from(MAX_AHEAD) {
        MAX_AHEAD
    } else {
        // 0 ≤ fits < MAX_AHEAD: the conversion is exact.
        fits as u32
    }
}

/// The advance written last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Advance {
    bucket: u64,
    size: u32,
    /// First attempts it has not covered yet.
    left: u32,
}

/// One worker's part of one callee budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ahead {
    /// First attempts an advance deposits (0: every request written on its own).
    size: u32,
    advance: Option<Advance>,
    /// The window held fewer than [`LEASE_FLOOR`] tokens at this worker's last write: no
    /// advance.
    tight: bool,
    /// The write under way creates the shared key: no advance (see
    /// [`crate::lease::Local::set_creating`]).
    creating: bool,
}

impl Ahead {
    /// `size` from [`advance_size`], or 0 where advances are not allowed.
    pub fn new(size: u32) -> Self {
        Self {
            size,
            advance: None,
            tight: size == 0,
            creating: false,
        }
    }

    /// Whether the write under way creates the budget's shared-data key (an unconditional
    /// write another worker's first write may replace): then it deposits no advance.
    pub fn set_creating(&mut self, creating: bool) {
        self.creating = creating;
    }

    /// Whether the advance covers one more first attempt (then taken from it, no write).
    pub fn cover(&mut self) -> bool {
        match &mut self.advance {
            Some(a) if a.left > 0 => {
                a.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether an advance waits to be settled.
    pub fn has_writes(&self) -> bool {
        self.advance.is_some()
    }

    /// Settles the advance (the tick, and the start of a first attempt's write): its deposits
    /// leave their bucket, and the first attempts it covered go to the newest one. `window`
    /// has been moved to now.
    pub fn flush(&mut self, window: &mut Window, budget: &Budget) {
        if let Some(a) = self.advance.take() {
            window.take_deposits(a.bucket, a.size);
            window.deposit_n(a.size - a.left);
        }
        self.tight = self.size == 0 || window.available(budget) < LEASE_FLOOR;
    }

    /// A first attempt the advance did not cover: settles the advance, deposits the request
    /// and, while the window is not tight, a new advance.
    pub fn write_first(&mut self, window: &mut Window, budget: &Budget) {
        self.flush(window, budget);
        window.deposit();
        if !self.tight && !self.creating {
            window.deposit_n(self.size);
            self.advance = Some(Advance {
                bucket: window.newest(),
                size: self.size,
                left: self.size,
            });
        }
    }

    /// First attempts deposited that have not arrived (the most this worker adds to the
    /// window's count).
    pub fn uncovered(&self) -> u32 {
        self.advance.map_or(0, |a| a.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::linkerd;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn an_advance_is_worth_at_most_four_tokens() {
        let size = |ratio| advance_size(&Budget::try_new(ratio, 10.0, 10_000).unwrap());
        assert_eq!(size(0.0), MAX_AHEAD);
        assert_eq!(size(0.2), MAX_AHEAD);
        assert_eq!(size(0.5), 8);
        assert_eq!(size(3.0), 1);
        assert_eq!(size(5.0), 0);
    }

    #[test]
    fn first_attempts_covered_by_an_advance_need_no_write() {
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        let mut a = Ahead::new(advance_size(&b));
        assert!(!a.cover(), "no advance yet");
        a.write_first(&mut w, &b);
        assert_eq!(w.totals(), (17, 0), "the request and 16 ahead");
        for _ in 0..16 {
            assert!(a.cover());
        }
        assert!(!a.cover(), "used up: the next one is written");
        a.write_first(&mut w, &b);
        assert_eq!(w.totals(), (34, 0));
        assert_eq!(a.uncovered(), 16);
    }

    #[test]
    fn the_tick_takes_back_what_did_not_arrive_and_moves_what_did_to_now() {
        let b = linkerd();
        let mut w = Window::new(&b, 0);
        let mut a = Ahead::new(advance_size(&b));
        a.write_first(&mut w, &b);
        for _ in 0..5 {
            assert!(a.cover());
        }
        w.advance(3_000);
        a.flush(&mut w, &b);
        assert_eq!(w.totals(), (6, 0), "the request and the 5 that came");
        assert!(!a.has_writes());
        // Bucket 0 keeps the request written on its own; the covered five are in bucket 3, so
        // they stay in the window until 3 s after bucket 0 has left it.
        w.advance(10_500);
        assert_eq!(w.totals(), (5, 0));
    }

    #[test]
    fn near_the_end_of_a_budget_every_first_attempt_is_written() {
        let b = Budget::try_new(0.2, 3.0, 10_000).unwrap(); // 30 tokens
        let mut w = Window::new(&b, 0);
        let mut a = Ahead::new(advance_size(&b));
        a.write_first(&mut w, &b);
        assert!(!a.cover());
        assert_eq!(w.totals(), (1, 0));
        // Advances off (size 0): the same with a full window.
        let b = linkerd();
        let mut a = Ahead::new(0);
        a.write_first(&mut w, &b);
        assert!(!a.cover());
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use crate::budget::BUCKETS;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// A first attempt arrives at a worker.
            First(usize),
            /// A retry arrives (written: one token if the window has it).
            Retry,
            Tick,
            Wait(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                8 => (0..3usize).prop_map(Op::First),
                3 => Just(Op::Retry),
                1 => Just(Op::Tick),
                2 => (0u64..1_500).prop_map(Op::Wait),
            ]
        }

        proptest! {
            /// Three workers on one window, with time passing and ticks every ≤ 1.5 s: the
            /// window counts every first attempt still in its ttl — never fewer, so a retry is
            /// never shed that exact counting would pay — and at most the workers' uncovered
            /// advances more, each worth at most AHEAD_TOKENS.
            #[test]
            fn the_window_never_counts_fewer_first_attempts_than_arrived(
                ratio in 0.0f64..5.0,
                floor in 0.0f64..20.0,
                ops in proptest::collection::vec(op(), 1..300),
            ) {
                let b = Budget::try_new(ratio, floor, 10_000).unwrap();
                let bucket_ms = u64::from(b.bucket_ms());
                let mut now = 1_000_000u64;
                let mut w = Window::new(&b, now);
                let size = advance_size(&b);
                prop_assert!(f64::from(size) * ratio <= AHEAD_TOKENS + 1e-9);
                let mut workers = [Ahead::new(size); 3];
                // Arrival bucket of every first attempt.
                let mut arrived: Vec<u64> = Vec::new();
                let mut since_tick = 0u64;
                for op in ops {
                    w.advance(now);
                    match op {
                        Op::First(i) => {
                            arrived.push(now / bucket_ms);
                            if !workers[i].cover() {
                                workers[i].write_first(&mut w, &b);
                            }
                        }
                        Op::Retry => {
                            w.grant(&b, 1);
                        }
                        Op::Tick => {
                            for a in &mut workers {
                                a.flush(&mut w, &b);
                            }
                            since_tick = 0;
                        }
                        Op::Wait(ms) => {
                            // The report interval (1 s here, ≤ ttl / 2) bounds an advance's life.
                            if since_tick + ms > 1_000 {
                                for a in &mut workers {
                                    a.flush(&mut w, &b);
                                }
                                since_tick = 0;
                            }
                            now += ms;
                            since_tick += ms;
                            w.advance(now);
                        }
                    }
                    let newest = now / bucket_ms;
                    let within = |buckets: u64| {
                        arrived.iter().filter(|&&i| newest - i < buckets).count() as u64
                    };
                    let uncovered: u64 = workers.iter().map(|a| u64::from(a.uncovered())).sum();
                    let counted = w.totals().0;
                    let live = within(BUCKETS as u64);
                    prop_assert!(counted >= live, "{counted} counted < {live} arrived");
                    // A covered first attempt is deposited when its advance is settled, at most
                    // 1.5 s (two buckets, rounded up) after it arrived: it may stay that much
                    // longer than its ttl.
                    let late = within(BUCKETS as u64 + 3);
                    prop_assert!(
                        counted <= late + uncovered,
                        "{counted} counted > {late} arrived + {uncovered} ahead"
                    );
                }
            }
        }
    }
}

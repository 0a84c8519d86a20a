//! One timer for several owners: the tick of a proxy-wasm root context shared by the filters a
//! module runs together.
//!
//! proxy-wasm gives each root context one tick period (`proxy_set_tick_period_milliseconds`);
//! every filter sets it for its own needs (a fault delay's resolution, the OAuth2 filter's
//! second, the retry budget's report interval). When several filters share one root context,
//! each owner asks for its own period here; the host timer runs at the shortest period asked
//! for, and at each host tick [`TickPlan::due`] says which owners' own period has come round.
//!
//! An owner's tick comes at most half a host period early and at most one host period late
//! (the host timer only fires at its own period), and never more often than its own period
//! minus that half. A period of 0 stops an owner's ticks, as it stops the host's.

/// The owners of one timer and their periods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickPlan {
    /// (owner, period in ms (0: off), next due at in ms)
    owners: Vec<(usize, u32, u64)>,
    /// The period the host timer runs at (0: off).
    host_period_ms: u32,
}

impl TickPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// `owner` asks for ticks every `period_ms` from `now_ms` on (0: none), like setting the
    /// host's period again restarts it. Returns the host period to set when it changes.
    pub fn request(&mut self, owner: usize, period_ms: u32, now_ms: u64) -> Option<u32> {
        let next = now_ms.saturating_add(u64::from(period_ms));
        match self.owners.iter_mut().find(|(o, _, _)| *o == owner) {
            Some(entry) => *entry = (owner, period_ms, next),
            None => self.owners.push((owner, period_ms, next)),
        }
        let host = self
            .owners
            .iter()
            .map(|(_, p, _)| *p)
            .filter(|p| *p > 0)
            .min()
            .unwrap_or(0);
        (host != self.host_period_ms).then(|| {
            self.host_period_ms = host;
            host
        })
    }

    /// The period the host timer should run at (0: off).
    pub fn host_period_ms(&self) -> u32 {
        self.host_period_ms
    }

    /// The owners whose tick is due at a host tick at `now_ms`, in the order they first asked;
    /// each one's next tick is then one period from now.
    pub fn due(&mut self, now_ms: u64) -> Vec<usize> {
        let slack = u64::from(self.host_period_ms / 2);
        let mut due = Vec::new();
        for (owner, period, next) in &mut self.owners {
            if *period > 0 && now_ms.saturating_add(slack) >= *next {
                due.push(*owner);
                *next = now_ms.saturating_add(u64::from(*period));
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_host_runs_at_the_shortest_period_asked_for() {
        let mut plan = TickPlan::new();
        assert_eq!(plan.request(0, 1000, 0), Some(1000));
        assert_eq!(plan.request(1, 10, 0), Some(10));
        assert_eq!(plan.request(2, 500, 0), None, "still 10");
        assert_eq!(plan.request(1, 0, 5), Some(500), "the 10 ms owner stopped");
        assert_eq!(plan.request(2, 0, 5), Some(1000));
        assert_eq!(plan.request(0, 0, 5), Some(0), "nobody wants ticks");
        assert_eq!(plan.host_period_ms(), 0);
    }

    #[test]
    fn each_owner_ticks_at_its_own_period() {
        let mut plan = TickPlan::new();
        plan.request(0, 1000, 0);
        plan.request(1, 100, 0);
        let mut fired = [0u32; 2];
        for t in (100..=3000).step_by(100) {
            for o in plan.due(t) {
                fired[o] += 1;
            }
        }
        assert_eq!(fired, [3, 30]);
    }

    #[test]
    fn a_host_tick_a_little_early_still_counts() {
        // Timers fire a millisecond early now and then; the owner alone on the timer must not
        // lose every other tick for it.
        let mut plan = TickPlan::new();
        plan.request(0, 100, 0);
        assert_eq!(plan.due(99), vec![0]);
        assert_eq!(plan.due(198), vec![0]);
        assert_eq!(plan.due(240), Vec::<usize>::new());
    }

    #[test]
    fn asking_again_restarts_the_period() {
        let mut plan = TickPlan::new();
        plan.request(0, 100, 0);
        plan.request(0, 100, 90);
        assert!(plan.due(100).is_empty());
        assert_eq!(plan.due(190), vec![0]);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn owners_tick_within_the_stated_bounds(
                periods in proptest::collection::vec(prop_oneof![Just(0u32), 1u32..2000], 1..5),
                jitter in proptest::collection::vec(0u64..3, 64),
            ) {
                let mut plan = TickPlan::new();
                for (o, p) in periods.iter().enumerate() {
                    plan.request(o, *p, 0);
                }
                let host = plan.host_period_ms();
                let nonzero: Vec<u32> = periods.iter().copied().filter(|p| *p > 0).collect();
                prop_assert_eq!(host, nonzero.iter().copied().min().unwrap_or(0));
                if host == 0 {
                    prop_assert!(plan.due(1_000_000).is_empty());
                    return Ok(());
                }
                // Host ticks every `host` ms, each up to 2 ms early (less than a host period,
                // so that the ticks stay in order, as a timer's do).
                let mut last = vec![0u64; periods.len()];
                let mut now = 0u64;
                for j in &jitter {
                    now += u64::from(host);
                    let t = now.saturating_sub(*j % u64::from(host));
                    for o in plan.due(t) {
                        let p = u64::from(periods[o]);
                        let gap = t - last[o];
                        prop_assert!(p > 0, "owner {} is off", o);
                        prop_assert!(gap + u64::from(host / 2) >= p, "owner {} early: {} < {}", o, gap, p);
                        last[o] = t;
                    }
                    for (o, p) in periods.iter().enumerate() {
                        // Never more than a host period (plus jitter) late.
                        if *p > 0 {
                            prop_assert!(t - last[o] <= u64::from(*p) + u64::from(host) + 2,
                                "owner {} late at {}: last {}", o, t, last[o]);
                        }
                    }
                }
            }
        }
    }
}

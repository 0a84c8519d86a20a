//! The root context's tick period, shared by the filters of a parent module.
//!
//! Alone, a filter's [`set_period_ms`] is `proxy_set_tick_period_milliseconds`. Inside a
//! parent ([`crate::compose::Scope`]), each filter (owner) asks for its own period; the host
//! timer of the parent's root context runs at the shortest one
//! ([`meshwright_shared::ticks::TickPlan`]) and the parent's `on_tick` runs the root logic of
//! the owners whose own period came round ([`due`]).

use crate::{abi, clock, compose};
use meshwright_shared::ticks::TickPlan;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// By the parent's root context id.
    static PLANS: RefCell<HashMap<u32, TickPlan>> = RefCell::new(HashMap::new());
}

/// Sets the calling filter's tick period (0: no ticks). Alone: the root context's period.
pub fn set_period_ms(period_ms: u32) -> Result<(), abi::HostError> {
    let Some(scope) = compose::scope() else {
        return abi::set_tick_period_ms(period_ms);
    };
    let now = clock::now_ms();
    let change = PLANS.with(|p| {
        p.try_borrow_mut().ok().and_then(|mut plans| {
            plans
                .entry(scope.root)
                .or_default()
                .request(scope.owner, period_ms, now)
        })
    });
    match change {
        Some(host) => abi::set_tick_period_ms(host),
        None => Ok(()),
    }
}

/// The owners of `root`'s timer whose tick is due now (call from the parent's `on_tick`).
pub fn due(root: u32, now_ms: u64) -> Vec<usize> {
    PLANS.with(|p| {
        p.try_borrow_mut()
            .ok()
            .and_then(|mut plans| plans.get_mut(&root).map(|plan| plan.due(now_ms)))
            .unwrap_or_default()
    })
}

/// Forgets `root`'s owners (the parent is configured anew).
pub fn forget(root: u32) {
    PLANS.with(|p| {
        if let Ok(mut plans) = p.try_borrow_mut() {
            plans.remove(&root);
        }
    });
}

//! HTTP streams paused until a deadline, acted on from the root context's tick.
//!
//! proxy-wasm has no per-stream timer. A filter that wants to hold a request (a fault delay, a
//! request waiting for the IdP's discovery document) returns `Action::Pause`, parks the stream's
//! context id here with a deadline and a payload (what to do then), and the root context's
//! `on_tick` takes what is due ([`Parked::take_due`]) and acts on each stream: [`resume`] it
//! (`proxy_set_effective_context(id)` then `proxy_continue_stream`) or answer it. Only streams
//! of the same VM (= the same worker) can be reached, which is why this lives per VM.
//!
//! The tick runs at `resolution_ms` only while something is parked, and at `idle_ms` (0: off)
//! otherwise, so an idle filter costs nothing. A stream that ends while parked (client gone)
//! must be [`Parked::remove`]d when its HTTP context ends: the filters do it in `Drop`, which the
//! SDK runs at `proxy_on_delete` (a filter's own module exports no `proxy_on_done`; in the bundle
//! `on_done` does it too). If it is not, resuming it just fails with BadArgument, which is
//! ignored.

use crate::{compose, tick};
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Debug)]
struct Inner<T> {
    /// (context id, due at in ms since the epoch, payload)
    streams: Vec<(u32, u64, T)>,
    resolution_ms: u32,
    idle_ms: u32,
    ticking: bool,
}

/// Shared between a root context and the HTTP contexts it creates (same VM, same thread).
#[derive(Debug)]
pub struct Parked<T>(Rc<RefCell<Inner<T>>>);

impl<T> Parked<T> {
    pub fn new(resolution_ms: u32, idle_ms: u32) -> Self {
        Self(Rc::new(RefCell::new(Inner {
            streams: Vec::new(),
            resolution_ms: resolution_ms.max(1),
            idle_ms,
            ticking: false,
        })))
    }

    /// Parks `context_id` until `resume_at_ms`. Returns false when the stream could not be
    /// parked (the tick could not be started); the caller must then not pause it.
    pub fn park(&self, context_id: u32, due_at_ms: u64, payload: T) -> bool {
        let start_ticking = match self.0.try_borrow_mut() {
            Ok(mut inner) => {
                inner.streams.push((context_id, due_at_ms, payload));
                (!inner.ticking).then(|| {
                    inner.ticking = true;
                    inner.resolution_ms
                })
            }
            Err(_) => return false,
        };
        if let Some(period) = start_ticking
            && tick::set_period_ms(period).is_err()
        {
            self.remove(context_id);
            if let Ok(mut inner) = self.0.try_borrow_mut() {
                inner.ticking = false;
            }
            return false;
        }
        true
    }

    /// Forgets a stream (it ended, or was resumed by other means).
    pub fn remove(&self, context_id: u32) {
        if let Ok(mut inner) = self.0.try_borrow_mut() {
            inner.streams.retain(|(id, _, _)| *id != context_id);
        }
    }

    /// Takes the streams due at `now_ms` out of the list; call from the root context's
    /// `on_tick`, then act on each (e.g. [`resume`]). Stops the fast tick when nothing is left.
    ///
    /// The entries are taken out before any host call: acting on a stream re-enters the VM (the
    /// stream may finish at once, and its context's end calls [`Parked::remove`]).
    pub fn take_due(&self, now_ms: u64) -> Vec<(u32, T)> {
        let (due, idle) = {
            let Ok(mut inner) = self.0.try_borrow_mut() else {
                return Vec::new();
            };
            let mut due = Vec::new();
            let mut keep = Vec::with_capacity(inner.streams.len());
            for (id, at, payload) in inner.streams.drain(..) {
                if at <= now_ms {
                    due.push((id, payload));
                } else {
                    keep.push((id, at, payload));
                }
            }
            inner.streams = keep;
            let idle = inner.streams.is_empty() && inner.ticking;
            if idle {
                inner.ticking = false;
            }
            (due, idle.then_some(inner.idle_ms))
        };
        if let Some(idle_ms) = idle {
            let _ = tick::set_period_ms(idle_ms);
        }
        due
    }
}

impl<T> Clone for Parked<T> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

/// Resumes a paused stream's request from a root context. False when the stream is gone.
pub fn resume(context_id: u32) -> bool {
    compose::resume(context_id)
}

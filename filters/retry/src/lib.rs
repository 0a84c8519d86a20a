//! meshwright retry budget: retries capped to a fraction of traffic over a sliding window, the
//! way Linkerd and Finagle budget them, inside Envoy and on both sides of a call.
//!
//! - [`budget`]: the ratio-over-time budget and its compact byte form (kept in the proxy's shared
//!   data, updated with compare-and-swap by every worker);
//! - [`client`]: the caller's side — how many retries the router may make (`x-envoy-max-retries`),
//!   settled against the retries that really happened;
//! - [`server`]: the callee's side — retries (`x-envoy-attempt-count` ≥ 2) over budget are shed
//!   with a reply callers' Envoys do not retry;
//! - [`lease`]: what one worker keeps of a client budget between writes (counted requests, a
//!   lease of tokens), so the request path makes no shared-data call;
//! - [`ahead`]: what one worker keeps of a callee budget between writes (first attempts
//!   deposited ahead of their arrival, so most of them need no write);
//! - [`config`], [`destination`] (which budget a request belongs to), [`stats`].
//!
//! All of it is plain Rust; the proxy-wasm glue (`plugin`) exists only in the wasm32-wasip1 build.
//! User documentation: `docs/retry-budget.md`.

pub mod ahead;
pub mod budget;
pub mod client;
pub mod config;
pub mod destination;
pub mod lease;
pub mod server;
pub mod stats;

#[cfg(target_os = "wasi")]
pub mod plugin;

pub use budget::{Budget, Window};
pub use config::{RetryBudgetConfig, Side};

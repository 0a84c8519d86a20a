//! meshwright fault injection: aborts, delays and response faults with targeting, beyond
//! Envoy's native fault filter — sticky per-user cohorts, delay distributions, response-phase
//! faults, signed header control, per-rule expiry, and a global kill switch.
//!
//! The crate is the filter's decision logic in plain Rust ([`config`] → [`decide`]), plus, in
//! the wasm32-wasip1 build only, the proxy-wasm glue that acts on the decision (`plugin`).
//! User documentation: `docs/fault.md`.

pub mod config;
pub mod control;
pub mod decide;
pub mod delay;
pub mod stats;

#[cfg(target_os = "wasi")]
pub mod plugin;

pub use config::FaultConfig;
pub use decide::{Decision, Plan, Reply, Source, decide};

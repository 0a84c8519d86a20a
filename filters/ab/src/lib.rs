//! meshwright A/B tagging: assigns each user a variant of each running experiment — sticky,
//! salted, with no shared state — and writes it as a request header that Istio routes on
//! (product v1 / v2), and as a W3C baggage member for the hops behind.
//!
//! Beyond Higress `traffic-tag` and Istio weights: per-user stickiness across workers,
//! replicas and restarts; per-experiment salts; monotonic ramps ([`bucket`]); a
//! GrowthBook-compatible hash; coverage and targeting; an identity chain with anonymous ids;
//! a signed sticky cookie; QA overrides that need an allow-list or a signature; client copies of
//! the output headers overwritten.
//!
//! The crate is the filter's decision logic in plain Rust ([`config`] → [`decide`]), plus, in the
//! wasm32-wasip1 build only, the proxy-wasm glue that acts on the decision (`plugin`).
//! User documentation: `docs/ab.md`.

pub mod baggage;
pub mod bucket;
pub mod config;
pub mod cookies;
pub mod decide;
pub mod identity;
pub mod overrides;
pub mod stats;
pub mod sticky;

#[cfg(target_os = "wasi")]
pub mod plugin;

pub use config::AbConfig;
pub use decide::{By, Decision, Outcome, decide};

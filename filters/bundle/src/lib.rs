//! meshwright bundle: the four filters in one module. Envoy crosses into the VM once per
//! request phase for all of them instead of once per filter, and their request headers are read
//! once.
//!
//! - [`config`]: one section per filter, each exactly that filter's own configuration (parsed
//!   by the filter's own parser); an absent section is a filter that is off.
//! - [`chain`]: the order the filters run in (OAuth2, A/B, retry budget, fault) and what happens
//!   when one pauses a request and later lets it go on: the filters after it run first.
//! - `plugin` (wasm32-wasip1 only): the proxy-wasm glue that drives each filter's own root and
//!   HTTP contexts (meshwright-host's `compose`).
//!
//! User documentation: `docs/bundle.md`.

pub mod chain;
pub mod config;

#[cfg(target_os = "wasi")]
pub mod plugin;

pub use config::{BundleConfig, Section};

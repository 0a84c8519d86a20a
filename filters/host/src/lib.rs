//! The proxy-wasm side that every meshwright filter shares.
//!
//! The proxy-wasm SDK is used for what it does well — exporting the ABI entry points and
//! dispatching callbacks to root and HTTP contexts — but not for host calls on the data path:
//! its `hostcalls` and trait helpers `panic!` on any status they do not expect, and a panic kills
//! the VM (every later request then fails). [`abi`] declares the few host functions meshwright
//! uses and returns every status as a `Result`.
//!
//! On top of it: [`logging`] (a `log` backend and a panic hook that logs at critical level),
//! [`metrics`] (counters and gauges that degrade to no-ops instead of failing), [`clock`] and
//! [`random`] (the values injected into decision logic), and [`parked`] (HTTP streams paused
//! until a deadline and resumed from the root context's tick: there are no per-stream timers
//! in proxy-wasm).
//!
//! For several filters in one module (the bundle): [`compose`] (a parent drives each filter's
//! own contexts; resumes, HTTP call responses and log lines find the right filter), [`tick`]
//! (one root tick shared by the filters' own periods) and [`request`] (request headers read
//! once per pass, whatever the number of filters reading them). A filter in its own module
//! goes through the same functions and gets the direct host calls it always made.
#![cfg(target_os = "wasi")]

pub mod abi;
pub mod clock;
pub mod compose;
pub mod logging;
pub mod metrics;
pub mod parked;
pub mod random;
pub mod request;
pub mod shared_data;
pub mod tick;

pub use abi::HostError;

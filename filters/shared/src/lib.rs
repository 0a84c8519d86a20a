//! What every meshwright filter needs, as plain Rust with no proxy-wasm types.
//!
//! Filters are built as *config (parse + validate) → decide → act*. This crate holds the pieces of
//! the first two steps that more than one filter uses: typed config errors that name the field
//! ([`config`]), request matchers ([`matcher`]), sticky per-user hashing ([`hash`]), percentages
//! with per-million precision ([`percent`]), injected randomness ([`rng`]), timestamps
//! ([`time`]), the places a user's identity is read from ([`key`], [`cookie`], [`jwt`]), checks of
//! header names and values, environment variable names and signing keys ([`validate`]), and the
//! local reply a filter sends in place of the upstream's ([`Reply`]).
//! For modules that run several filters: one timer shared by several owners ([`ticks`]) and a
//! copy of a header map read once ([`wire::HeaderMapCopy`]).
//!
//! Nothing here may panic on input from the network: the crate denies `unwrap`, `expect`,
//! `panic!` and slice indexing outside tests.

pub mod config;
pub mod cookie;
pub mod crypto;
pub mod hash;
pub mod headers;
pub mod jwt;
pub mod key;
pub mod matcher;
pub mod percent;
pub mod reply;
pub mod rng;
pub mod stats;
pub mod ticks;
pub mod time;
pub mod validate;
pub mod wire;

pub use config::{ConfigError, Reason};
pub use headers::HeaderSource;
pub use reply::Reply;

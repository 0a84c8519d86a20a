//! The shop's services over real HTTP on loopback, with real SQLite files in temporary
//! directories: each service alone, the services wired together, the outbox through outages and
//! restarts, the pages, and the real binary (signals, SIGKILL durability, exit codes).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

mod binary;
mod flow;
mod invoice;
mod notification;
mod pages;
mod product;
mod store_api;

//! The integration tests: every filter in a real Envoy, alone and in the bundle, and the
//! shipped configuration rendered and validated.
//!
//! One test binary with a module per subject (`cargo test -p meshwright-testbed --test
//! integration fault::`): linked once instead of once per file, and its tests share one pool of
//! test threads, so a slow file no longer holds the run while the others wait.

// The workspace lints keep panics out of the filters' data path. Here a panic is how a test
// fails, in its helpers too (clippy allows it only inside `#[test]` functions themselves), and
// JSON is read with serde_json's `value["key"]`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod ab;
mod ab_mesh;
mod bundle;
mod compose;
mod fault;
mod idp_tls;
mod images;
mod manifests;
mod mesh_render;
mod metrics_docs;
mod oauth2;
mod processes;
mod render;
mod retry_budget;
mod shop_mesh;
mod version_matrix;

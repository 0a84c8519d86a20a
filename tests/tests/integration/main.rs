//! The integration tests: every filter in a real Envoy, alone and in the bundle, and the
//! shipped configuration rendered and validated.
//!
//! One test binary with a module per subject (`cargo test -p meshwright-testbed --test
//! integration fault::`): linked once instead of once per file, and its tests share one pool of
//! test threads, so a slow file no longer holds the run while the others wait.

mod ab;
mod ab_mesh;
mod bundle;
mod compose;
mod fault;
mod idp_tls;
mod images;
mod manifests;
mod mesh_render;
mod oauth2;
mod processes;
mod render;
mod retry_budget;
mod shop_mesh;
mod version_matrix;

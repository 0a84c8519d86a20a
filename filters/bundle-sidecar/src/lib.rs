//! The sidecar bundle: `meshwright-bundle` built without its `oauth2` feature, so the module
//! holds A/B, retry budget and fault injection only. Sidecars never run OAuth2 (it is the
//! gateway's), and its JOSE algorithms are most of the full bundle's size, which every worker's
//! V8 compiles at start-up. The configuration is the bundle's (`docs/bundle.md`); an `oauth2`
//! section is refused at `on_configure`, naming it.
//!
//! This crate has no code of its own: linking the bundle's library brings its proxy-wasm entry
//! point and callbacks into the cdylib.

pub use meshwright_bundle::*;

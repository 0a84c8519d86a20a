//! Where things live in the checkout.

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map_or(here.clone(), PathBuf::from)
}

/// Built modules: `dist/<filter>.wasm` (`cargo xtask build`).
pub fn dist() -> PathBuf {
    root().join("dist")
}

/// The Istio WasmPlugin resources users apply.
pub fn wasmplugins() -> PathBuf {
    root().join("wasmplugins")
}

/// The bundle's WasmPlugins: the alternative to the separate filters' set.
pub fn bundle_wasmplugins() -> PathBuf {
    wasmplugins().join("bundle")
}

/// Project-local tools: the Envoy venv, wasm-bindgen's test runner, npm packages.
pub fn tools() -> PathBuf {
    root().join(".tools")
}

/// A built module, by filter name.
pub fn module(filter: &str) -> PathBuf {
    dist().join(format!("{filter}.wasm"))
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`).
pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The shop's binary as `cargo build -p meshwright-shop` leaves it.
pub fn shop_binary() -> PathBuf {
    target().join("debug").join("meshwright-shop")
}

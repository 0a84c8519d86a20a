//! meshwright OAuth2/OIDC session: the OpenID Connect login done inside the proxy — a sealed
//! session cookie in, `Authorization: Bearer <JWT>` out, for Istio's RequestAuthentication and
//! AuthorizationPolicy to check. It replaces an oauth2-proxy + ext_authz deployment, and unlike
//! ext_authz it can set cookies on any response, so refreshed sessions reach the browser.
//!
//! Decision logic in plain Rust ([`config`] → [`flow`]); in the wasm32-wasip1 build, the
//! proxy-wasm glue that acts on it (`plugin`). User documentation: `docs/oauth2.md`.

pub mod cache;
pub mod config;
pub mod flow;
pub mod generations;
pub mod idp;
pub mod mint;
pub mod replay;
pub mod seal;
pub mod session;
pub mod slots;
pub mod stats;
pub mod urls;

#[cfg(target_os = "wasi")]
pub mod plugin;

pub use config::OAuth2Config;

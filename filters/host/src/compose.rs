//! Several filters in one module: what a parent module (the bundle) needs to drive each
//! filter's own root and HTTP contexts, and what the filters call so that they behave the same
//! alone and inside a parent.
//!
//! A filter's glue is a proxy-wasm `RootContext` + `HttpContext` pair. To be driven by a parent
//! its root also implements [`Composable`] (configure from given bytes, not only from the
//! host's plugin-configuration buffer). The parent calls each filter inside a [`Scope`]
//! ([`within`]); the few host interactions that are per root context or per stream in
//! proxy-wasm consult it:
//!
//! - **Resumes.** A filter that paused a request resumes it with [`resume`] (from a root
//!   callback) or [`continue_request`] (effective context already set). Alone, that is
//!   `proxy_continue_stream`. In a parent, the filters after it must still see the request
//!   first: the parent [`hold`]s a continuation for the stream while it is paused, and the
//!   resume runs it instead.
//! - **Ticks.** One root context has one tick period; the filters of a parent each ask for
//!   their own ([`crate::tick`]), keyed by their scope.
//! - **HTTP calls.** proxy-wasm delivers a call's response to the context that made it — the
//!   parent's; [`dispatch_http_call`] notes which filter made it, and the parent
//!   hands the response to that filter ([`take_call_owner`]).
//! - **Request headers** are read once per pass ([`crate::request`]).
//! - **Logs** carry the filter's name after the module's: `[bundle/fault] …`.
//!
//! Outside a scope (a filter in its own module) every function here does exactly what the
//! filter did before: the direct host call.

use crate::abi;
use meshwright_shared::config::ConfigError;
use proxy_wasm::traits::RootContext;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// A filter's root context that a parent module can drive.
pub trait Composable: RootContext {
    /// Configures the filter from its own configuration (the JSON its WasmPlugin's
    /// `pluginConfig` would hold): the same parsing and validation as its `on_configure`, and
    /// the same runtime built. A refusal names the field.
    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError>;
}

/// `on_configure` of a filter in its own module: its configuration from the host, a refusal
/// logged (the log line names the field) and returned as false, so Envoy rejects the plugin.
pub fn configure_from_host(root: &mut dyn Composable) -> bool {
    let result = abi::plugin_configuration()
        .map_err(|e| {
            ConfigError::invalid(".", format!("cannot read the plugin configuration: {e}"))
        })
        .and_then(|bytes| root.configure(&bytes));
    match result {
        Ok(()) => true,
        Err(e) => {
            log::error!("{e}");
            false
        }
    }
}

/// Which filter of a parent is running, on behalf of which root context and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// The parent's root context id.
    pub root: u32,
    /// The filter's index in the parent.
    pub owner: usize,
    /// The filter's name, for log lines.
    pub name: &'static str,
    /// The HTTP stream, when the filter runs for one (None: its root context runs).
    pub stream: Option<u32>,
}

thread_local! {
    static SCOPE: Cell<Option<Scope>> = const { Cell::new(None) };
    /// Continuations of paused streams, by context id.
    static HELD: RefCell<HashMap<u32, Rc<dyn Fn()>>> = RefCell::new(HashMap::new());
    /// HTTP calls made inside a scope: token → (owner, stream).
    static CALLS: RefCell<HashMap<u32, (usize, Option<u32>)>> = RefCell::new(HashMap::new());
}

/// Runs `f` as `scope`'s filter; the previous scope is restored afterwards (scopes nest: a
/// continuation runs later filters from inside the call of the one that resumed).
pub fn within<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    let previous = SCOPE.with(|s| s.replace(Some(scope)));
    let result = f();
    SCOPE.with(|s| s.set(previous));
    result
}

/// The running filter's scope; None for a filter in its own module.
pub fn scope() -> Option<Scope> {
    SCOPE.with(Cell::get)
}

/// Makes [`continue_request`] on `stream` run `continuation` instead of resuming the stream
/// (until [`release`]): the parent's way of running the filters after the one that paused.
pub fn hold(stream: u32, continuation: Rc<dyn Fn()>) {
    HELD.with(|h| {
        if let Ok(mut h) = h.try_borrow_mut() {
            h.insert(stream, continuation);
        }
    });
}

/// Forgets `stream`'s continuation and the calls made for it (the stream ended).
pub fn release(stream: u32) {
    HELD.with(|h| {
        if let Ok(mut h) = h.try_borrow_mut() {
            h.remove(&stream);
        }
    });
    CALLS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.retain(|_, (_, s)| *s != Some(stream));
        }
    });
}

/// Lets the paused request of `stream` — the effective context — go on: alone, resumes it; in
/// a parent, runs the parent's continuation (the filters after this one, then the resume).
/// False when the host refused (the stream is gone).
pub fn continue_request(stream: u32) -> bool {
    let held = HELD.with(|h| h.try_borrow().ok().and_then(|h| h.get(&stream).cloned()));
    match held {
        Some(continuation) => {
            continuation();
            true
        }
        None => abi::resume_request().is_ok(),
    }
}

/// [`continue_request`] from a root context: makes `stream` the effective context first.
pub fn resume(stream: u32) -> bool {
    abi::set_effective_context(stream).is_ok() && continue_request(stream)
}

/// Sends an HTTP request to an Envoy cluster; the answer arrives in `on_http_call_response`
/// of the context that is *active in the SDK's dispatcher* when this is called (the context
/// whose callback is running), under the returned token. `headers` must include `:method`,
/// `:path` and `:authority`. BadArgument: unknown cluster or missing pseudo-header.
///
/// This one goes through the SDK: its dispatcher must register the call to route the response
/// (a call made around it makes the SDK panic on the response). The SDK maps Ok, BadArgument
/// and InternalFailure, the statuses Envoy's `httpCall` returns. Inside a parent module the
/// call is noted as the running filter's ([`take_call_owner`]).
pub fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, abi::HostError> {
    let token = proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers.to_vec(),
        (!body.is_empty()).then_some(body),
        Vec::new(),
        std::time::Duration::from_millis(u64::from(timeout_ms)),
    )
    .map_err(|s| abi::HostError(s as u32))?;
    note_call(token);
    Ok(token)
}

/// Notes that the running filter made HTTP call `token` (called by [`dispatch_http_call`]).
fn note_call(token: u32) {
    if let Some(s) = scope() {
        CALLS.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.insert(token, (s.owner, s.stream));
            }
        });
    }
}

/// The filter (owner index) that made HTTP call `token`, forgotten once asked.
pub fn take_call_owner(token: u32) -> Option<usize> {
    CALLS.with(|c| {
        c.try_borrow_mut()
            .ok()
            .and_then(|mut c| c.remove(&token))
            .map(|(owner, _)| owner)
    })
}

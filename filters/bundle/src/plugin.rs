//! proxy-wasm glue: the bundle's root context drives the root context of each enabled filter,
//! and its HTTP context the filters' own HTTP contexts — one call from Envoy per phase for all
//! of them.
//!
//! - `on_configure`: the configuration is split into sections ([`BundleConfig`]); each filter's
//!   root is configured from its section by its own code (`Composable::configure`). A refusal
//!   names the field inside the section and refuses the whole bundle.
//! - Request headers: the filters' request phases run in order ([`Progress`]) inside one header
//!   pass (`meshwright_host::request::pass`): the map is fetched once, however many filters
//!   read it.
//! - Pause and resume: when a filter pauses a request, the bundle holds a continuation for the
//!   stream (`compose::hold`); the filter's resume then runs the request phase of the filters
//!   after it before the stream goes on.
//! - Ticks: each filter asks for its own period (`meshwright_host::tick`); the bundle's
//!   `on_tick` runs the root logic of the filters whose period came round.
//! - HTTP call responses reach the filter that made the call (`compose::take_call_owner`): its
//!   root context or its HTTP context, as the call was made from either.
//! - Every call into a filter runs in its [`Scope`]: its ticks, calls and log lines are its own.
//! - Stream end: no `proxy_on_done` (one VM entry less per request). The SDK drops the bundle's
//!   stream context at `proxy_on_delete`; that forgets the stream's continuation and drops the
//!   filters' contexts, whose own `Drop` forgets what their VM keeps for the stream (outside a
//!   scope: it makes no call, logs nothing and asks for no tick).

use crate::chain::{self, Flow, Progress, Resume};
use crate::config::{BundleConfig, Section};
use meshwright_host::compose::{self, Composable, Scope};
use meshwright_host::{abi, clock, logging, request, tick};
use meshwright_shared::config::ConfigError;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

#[cfg(feature = "entrypoint")]
proxy_wasm::main! {{
    logging::init("bundle");
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(BundleRoot::new(id)) });
}}

/// A filter's root context, as its own module would create it (None: not in this module,
/// which `BundleConfig::from_json` has refused already).
fn new_root(section: Section) -> Option<Box<dyn Composable>> {
    Some(match section {
        #[cfg(feature = "oauth2")]
        Section::OAuth2 => Box::new(meshwright_oauth2::plugin::OAuth2Root::default()),
        #[cfg(not(feature = "oauth2"))]
        Section::OAuth2 => return None,
        Section::Ab => Box::new(meshwright_ab::plugin::AbRoot::default()),
        Section::RetryBudget => Box::new(meshwright_retry::plugin::RetryRoot::default()),
        Section::Fault => Box::new(meshwright_fault::plugin::FaultRoot::default()),
    })
}

fn scope(root: u32, owner: usize, section: Section, stream: Option<u32>) -> Scope {
    Scope {
        root,
        owner,
        name: section.name(),
        stream,
    }
}

fn to_flow(action: Action) -> Flow {
    match action {
        Action::Continue => Flow::Continue,
        _ => Flow::Pause,
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

struct Filter {
    section: Section,
    root: Box<dyn Composable>,
}

pub struct BundleRoot {
    id: u32,
    /// The enabled filters, in running order; a filter's index is its owner id in scopes.
    filters: Vec<Filter>,
}

impl BundleRoot {
    pub fn new(id: u32) -> Self {
        Self {
            id,
            filters: Vec::new(),
        }
    }

    fn configure(&mut self) -> Result<(), ConfigError> {
        let bytes = abi::plugin_configuration().map_err(|e| {
            ConfigError::invalid(".", format!("cannot read the plugin configuration: {e}"))
        })?;
        let config = BundleConfig::from_json(&bytes)?;
        tick::forget(self.id);
        let mut filters = Vec::new();
        for (owner, (section, section_bytes)) in config.sections().enumerate() {
            let mut root = new_root(section)
                .ok_or_else(|| ConfigError::invalid(section.name(), "not in this module"))?;
            compose::within(scope(self.id, owner, section, None), || {
                root.configure(section_bytes)
            })
            .map_err(|e| section.error(e))?;
            filters.push(Filter { section, root });
        }
        log::info!(
            "configured: {} (in this order)",
            filters
                .iter()
                .map(|f| f.section.name())
                .collect::<Vec<_>>()
                .join(" → ")
        );
        self.filters = filters;
        Ok(())
    }
}

impl Context for BundleRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let Some(owner) = compose::take_call_owner(token) else {
            log::debug!("response to call {token}: no filter made it");
            return;
        };
        let root = self.id;
        if let Some(f) = self.filters.get_mut(owner) {
            compose::within(scope(root, owner, f.section, None), || {
                f.root
                    .on_http_call_response(token, num_headers, body_size, num_trailers);
            });
        }
    }
}

impl RootContext for BundleRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        logging::refresh_level();
        match self.configure() {
            Ok(()) => true,
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let root = self.id;
        for owner in tick::due(root, clock::now_ms()) {
            if let Some(f) = self.filters.get_mut(owner) {
                compose::within(scope(root, owner, f.section, None), || f.root.on_tick());
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let slots = self
            .filters
            .iter()
            .enumerate()
            .filter_map(|(owner, f)| {
                compose::within(scope(self.id, owner, f.section, Some(context_id)), || {
                    f.root.create_http_context(context_id)
                })
                .map(|ctx| Slot {
                    owner,
                    section: f.section,
                    ctx: RefCell::new(ctx),
                })
            })
            .collect();
        Some(Box::new(BundleHttp {
            stream: Rc::new(Stream {
                id: context_id,
                root: self.id,
                slots,
                progress: Progress::new(),
                request_headers: Cell::new((0, false)),
                held: Cell::new(false),
            }),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One filter's HTTP context for a stream.
struct Slot {
    owner: usize,
    section: Section,
    ctx: RefCell<Box<dyn HttpContext>>,
}

/// A stream through the bundle: shared by its HTTP context and, while a filter holds the
/// request, the continuation the bundle left with meshwright-host.
struct Stream {
    id: u32,
    root: u32,
    slots: Vec<Slot>,
    progress: Progress,
    /// (headers, end_of_stream) of `on_http_request_headers`, for filters run on a resume.
    request_headers: Cell<(usize, bool)>,
    /// A continuation is held for this stream.
    held: Cell<bool>,
}

impl Stream {
    fn scope(&self, slot: &Slot) -> Scope {
        scope(self.root, slot.owner, slot.section, Some(self.id))
    }

    /// Calls `f` on a slot's context, in its scope. None if the context is busy — it is the
    /// one calling (a filter resuming runs only the filters after it, so this does not happen).
    fn call<R>(&self, slot: &Slot, f: impl FnOnce(&mut dyn HttpContext) -> R) -> Option<R> {
        let Ok(mut ctx) = slot.ctx.try_borrow_mut() else {
            log::warn!("{} re-entered on stream {}", slot.section.name(), self.id);
            return None;
        };
        Some(compose::within(self.scope(slot), || f(ctx.as_mut())))
    }

    /// The request phase of the filters from `from` on, in one header pass.
    fn run_request(self: &Rc<Self>, from: usize) -> Flow {
        let (headers, end) = self.request_headers.get();
        let flow = request::pass(|| {
            self.progress.run(from, self.slots.len(), |i| {
                self.slots
                    .get(i)
                    .and_then(|slot| {
                        self.call(slot, |c| to_flow(c.on_http_request_headers(headers, end)))
                    })
                    .unwrap_or(Flow::Continue)
            })
        });
        if flow == Flow::Pause && !self.held.replace(true) {
            let stream = Rc::clone(self);
            compose::hold(self.id, Rc::new(move || stream.go_on()));
        }
        flow
    }

    /// The filter holding the request let it go on (its `compose::continue_request`, with this
    /// stream the effective context).
    fn go_on(self: &Rc<Self>) {
        match self.progress.resume() {
            Resume::InPass => {}
            Resume::RunFrom(from) => {
                if self.run_request(from) == Flow::Continue {
                    let _ = abi::resume_request();
                }
            }
            Resume::Stream => {
                let _ = abi::resume_request();
            }
        }
    }
}

struct BundleHttp {
    stream: Rc<Stream>,
}

impl Context for BundleHttp {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        let Some(owner) = compose::take_call_owner(token) else {
            log::debug!("response to call {token}: no filter made it");
            return;
        };
        let stream = &self.stream;
        if let Some(slot) = stream.slots.iter().find(|s| s.owner == owner) {
            stream.call(slot, |c| {
                c.on_http_call_response(token, num_headers, body_size, num_trailers);
            });
        }
    }
}

/// The SDK drops a stream's context in `proxy_on_delete`, after the stream is done, so the
/// module exports no `proxy_on_done` (one VM entry less per request): the stream's continuation
/// and calls are forgotten here, which drops the last reference to the stream, and with it the
/// filters' contexts, whose own `Drop` forgets what their VM keeps for them.
impl Drop for BundleHttp {
    fn drop(&mut self) {
        compose::release(self.stream.id);
    }
}

impl HttpContext for BundleHttp {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.stream
            .request_headers
            .set((num_headers, end_of_stream));
        action(self.stream.run_request(0))
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let stream = &self.stream;
        for i in chain::response_order(stream.slots.len()) {
            let paused = stream.slots.get(i).and_then(|slot| {
                stream.call(slot, |c| {
                    to_flow(c.on_http_response_headers(num_headers, end_of_stream))
                })
            }) == Some(Flow::Pause);
            if paused {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let stream = &self.stream;
        for slot in &stream.slots {
            stream.call(slot, |c| c.on_log());
        }
    }
}

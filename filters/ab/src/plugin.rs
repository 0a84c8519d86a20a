//! proxy-wasm glue: read the headers the config needs, [`decide`], apply the edits.
//!
//! - The config is parsed and validated once per `on_configure`; a bad one is refused (Envoy
//!   rejects the plugin) with a log line naming the field. The signing key is read from the
//!   environment then, and never logged.
//! - Request headers are read with one host call (`proxy_get_header_map_pairs`), keeping the
//!   ones the config needs; repeated headers are joined (`cookie` with `; `, others with `,`).
//! - The output headers are set in `on_http_request_headers`, before the router picks a route,
//!   so the route matches on them (proven in a real Envoy by tests/tests/integration/ab.rs).
//! - Cookies and the debug header go on the response in `on_http_response_headers`.
//! - [`AbRoot`] is also driven by the bundle (`Composable`), which then serves the request
//!   headers from one read shared by its filters (meshwright-host's `request`).

use crate::config::AbConfig;
use crate::decide::{By, Outcome, decide};
use crate::stats::{self, ExperimentMetricNames, VariantMetricNames};
use meshwright_host::compose::{self, Composable};
use meshwright_host::metrics::Counter;
use meshwright_host::{abi, clock, logging, random, request};
use meshwright_shared::config::{ConfigError, Path};
use meshwright_shared::headers::{HeaderList, bytes_of_text, text_of_bytes};
use meshwright_shared::rng::WyRand;
use meshwright_shared::time::Lazy;
use meshwright_shared::validate::signing_key;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};
use std::cell::RefCell;
use std::rc::Rc;

/// Shortest accepted signing key, in bytes.
const MIN_KEY_LEN: usize = 32;

#[cfg(feature = "entrypoint")]
proxy_wasm::main! {{
    logging::init("ab");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AbRoot::default()) });
}}

struct VariantStats {
    assigned: Counter,
    sticky: Counter,
    overridden: Counter,
}

struct ExperimentStats {
    not_in_coverage: Counter,
    no_identity: Counter,
    client_header_removed: Counter,
    variants: Vec<VariantStats>,
}

/// Everything built at `on_configure`, shared read-only by the VM's requests.
struct Runtime {
    config: AbConfig,
    signing_key: Option<Vec<u8>>,
    experiments: Vec<ExperimentStats>,
    anonymous_ids_issued: Counter,
    overrides_rejected: Counter,
    sticky_cookies_rejected: Counter,
}

impl Runtime {
    fn build(config: AbConfig) -> Result<Self, ConfigError> {
        let signing_key = config
            .signing_key_env
            .as_deref()
            .filter(|_| config.needs_signing_key())
            .map(|env| {
                let field = Path::root().key("signing_key_env");
                signing_key(&field, env, &|name| std::env::var(name).ok(), MIN_KEY_LEN)
            })
            .transpose()?;
        let experiments = config
            .experiments
            .iter()
            .map(|e| {
                let n = ExperimentMetricNames::new(&e.name);
                ExperimentStats {
                    not_in_coverage: Counter::define(&n.not_in_coverage),
                    no_identity: Counter::define(&n.no_identity),
                    client_header_removed: Counter::define(&n.client_header_removed),
                    variants: e
                        .variants
                        .iter()
                        .map(|v| {
                            let n = VariantMetricNames::new(&e.name, &v.name);
                            VariantStats {
                                assigned: Counter::define(&n.assigned),
                                sticky: Counter::define(&n.sticky),
                                overridden: Counter::define(&n.overridden),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Self {
            signing_key,
            experiments,
            anonymous_ids_issued: Counter::define(&stats::anonymous_ids_issued()),
            overrides_rejected: Counter::define(&stats::overrides_rejected()),
            sticky_cookies_rejected: Counter::define(&stats::sticky_cookies_rejected()),
            config,
        })
    }
}

/// The filter's root context: alone in its module, or driven by a parent (the bundle) through
/// [`Composable`].
#[derive(Default)]
pub struct AbRoot {
    runtime: Option<Rc<Runtime>>,
    rng: Option<Rc<RefCell<WyRand>>>,
}

impl Context for AbRoot {}

impl Composable for AbRoot {
    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError> {
        let runtime = AbConfig::from_json(config).and_then(Runtime::build)?;
        let c = &runtime.config;
        log::info!(
            "configured: enabled={}, {} experiment(s) [{}], anonymous ids {}, sticky {}, overrides {}",
            c.enabled,
            c.experiments.len(),
            c.experiments
                .iter()
                .map(|e| format!("{} → {}", e.name, e.header))
                .collect::<Vec<_>>()
                .join(", "),
            on_off(c.anonymous_id.is_some()),
            on_off(c.sticky.is_some()),
            on_off(c.overrides.is_some()),
        );
        self.rng
            .get_or_insert_with(|| Rc::new(RefCell::new(random::seeded())));
        self.runtime = Some(Rc::new(runtime));
        Ok(())
    }
}

impl RootContext for AbRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        logging::refresh_level();
        compose::configure_from_host(self)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AbHttp {
            runtime: self.runtime.clone(),
            rng: self.rng.clone(),
            cookies: Vec::new(),
            debug: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

struct AbHttp {
    runtime: Option<Rc<Runtime>>,
    rng: Option<Rc<RefCell<WyRand>>>,
    /// `Set-Cookie` values for the response.
    cookies: Vec<String>,
    /// The debug header's value for the response.
    debug: Option<String>,
}

impl Context for AbHttp {}

/// The request headers the config reads, repeated ones joined (`cookie` with `; `, others with
/// `,`): one host call, and only the wanted values are copied.
fn read_headers(wanted: &[String]) -> HeaderList {
    let mut list = HeaderList::with_capacity(wanted.len());
    if wanted.is_empty() {
        return list;
    }
    let mut values: Vec<Option<String>> = vec![None; wanted.len()];
    let visited = request::visit(|k, v| {
        let Some(slot) = wanted
            .iter()
            .position(|w| w.as_bytes().eq_ignore_ascii_case(k))
            .and_then(|i| values.get_mut(i))
        else {
            return;
        };
        // Losslessly: bytes that are not UTF-8 (in other baggage members, say) are written
        // back as they came.
        let v = text_of_bytes(v);
        match slot {
            None => *slot = Some(v),
            Some(existing) => {
                existing.push_str(if k.eq_ignore_ascii_case(b"cookie") {
                    "; "
                } else {
                    ","
                });
                existing.push_str(&v);
            }
        }
    });
    if visited.is_err() {
        return list;
    }
    for (name, value) in wanted.iter().zip(values) {
        if let Some(v) = value {
            list.push(name, v);
        }
    }
    list
}

impl AbHttp {
    fn request_headers(&mut self) -> Action {
        let Some(rt) = self.runtime.clone() else {
            return Action::Continue;
        };
        let config = &rt.config;
        let headers = read_headers(&config.headers_read);
        let decision = match self.rng.as_ref().map(|r| r.try_borrow_mut()) {
            Some(Ok(mut rng)) => decide(
                config,
                rt.signing_key.as_deref(),
                &headers,
                // Read only for a signed override token.
                Lazy::new(clock::now_ms),
                &mut *rng,
            ),
            _ => return Action::Continue,
        };
        // A header that is set next needs no removal first: setting replaces every value.
        for name in &decision.remove_headers {
            if !decision.set_headers.iter().any(|(n, _)| n == name) {
                let _ = request::remove_header(name);
            }
        }
        for (name, value) in &decision.set_headers {
            if let Err(e) = request::set_header_bytes(name, &bytes_of_text(value)) {
                log::warn!("cannot set {name}: {e}");
            }
        }
        for ((stats, outcome), sent) in rt
            .experiments
            .iter()
            .zip(&decision.outcomes)
            .zip(&decision.client_header)
        {
            if *sent {
                stats.client_header_removed.inc();
            }
            match outcome {
                Outcome::Skipped => {}
                Outcome::NoIdentity => stats.no_identity.inc(),
                Outcome::NotInCoverage => stats.not_in_coverage.inc(),
                Outcome::Assigned { variant, by } => {
                    if let Some(v) = stats.variants.get(*variant) {
                        v.assigned.inc();
                        match by {
                            By::Sticky => v.sticky.inc(),
                            By::Override => v.overridden.inc(),
                            By::Hash | By::Incoming => {}
                        }
                    }
                }
            }
        }
        if decision.anonymous_id_issued {
            rt.anonymous_ids_issued.inc();
        }
        if decision.override_rejected.is_some() {
            rt.overrides_rejected.inc();
        }
        if decision.sticky_rejected {
            rt.sticky_cookies_rejected.inc();
        }
        self.cookies = decision.response_cookies;
        self.debug = decision.debug;
        Action::Continue
    }
}

impl HttpContext for AbHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.request_headers()
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for c in self.cookies.drain(..) {
            let _ = abi::add_header(MapType::HttpResponseHeaders, "set-cookie", &c);
        }
        if let (Some(value), Some(rt)) = (self.debug.take(), &self.runtime)
            && let Some(name) = &rt.config.debug_header
        {
            let _ = abi::set_header(MapType::HttpResponseHeaders, name, &value);
        }
        Action::Continue
    }
}

//! proxy-wasm glue: read the headers the config needs, [`decide`], act on the plan.
//!
//! - A request is first checked for the config's gate headers (absent-header reads, the cheapest
//!   host call); only one that carries one gets its headers fetched and decided.
//! - The config is parsed and validated once per `on_configure`; a bad one is refused (Envoy
//!   rejects the plugin) with a log line naming the field.
//! - A delay pauses the request and parks the stream; the root context's tick resumes it (or
//!   sends the abort that follows the delay). A client that goes away while parked is forgotten
//!   when its stream context ends (`finish`: from `Drop`, which the SDK runs at
//!   `proxy_on_delete`, alone and in the bundle).
//! - `max_active_faults` is enforced on the process-wide `active_faults` gauge: increment, read
//!   back, and back off when over the limit, so admitted faults never exceed it.
//! - [`FaultRoot`] is also driven by the bundle (`Composable`): request headers, ticks and
//!   resumes go through meshwright-host, which does the direct host call when alone.

use crate::config::FaultConfig;
use crate::decide::{Reply, Source, decide, may_fire};
use crate::stats::{self, RuleMetricNames};
use meshwright_host::compose::{self, Composable};
use meshwright_host::metrics::{Counter, Gauge};
use meshwright_host::parked::{self, Parked};
use meshwright_host::{abi, clock, logging, random, request};
use meshwright_shared::config::{ConfigError, Path};
use meshwright_shared::headers::HeaderList;
use meshwright_shared::rng::WyRand;
use meshwright_shared::validate::signing_key;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

/// Shortest accepted header-control signing key, in bytes.
const MIN_KEY_LEN: usize = 32;

#[cfg(feature = "entrypoint")]
proxy_wasm::main! {{
    logging::init("fault");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FaultRoot::default()) });
}}

struct RuleStats {
    aborts_injected: Counter,
    delays_injected: Counter,
    response_faults_injected: Counter,
    faults_overflow: Counter,
    active_faults: Gauge,
}

impl RuleStats {
    fn define(rule: &str) -> Self {
        let n = RuleMetricNames::new(rule);
        Self {
            aborts_injected: Counter::define(&n.aborts_injected),
            delays_injected: Counter::define(&n.delays_injected),
            response_faults_injected: Counter::define(&n.response_faults_injected),
            faults_overflow: Counter::define(&n.faults_overflow),
            active_faults: Gauge::define(&n.active_faults),
        }
    }
}

/// Everything built at `on_configure`, shared read-only by the VM's requests.
struct Runtime {
    config: FaultConfig,
    signing_key: Option<Vec<u8>>,
    rules: Vec<RuleStats>,
    header_control: RuleStats,
    active_faults: Gauge,
    header_control_rejected: Counter,
}

impl Runtime {
    fn build(config: FaultConfig) -> Result<Self, ConfigError> {
        let signing_key = config
            .header_control
            .as_ref()
            .and_then(|h| h.signing_key_env.as_deref())
            .map(|env| {
                let field = Path::root().key("header_control").key("signing_key_env");
                signing_key(&field, env, &|name| std::env::var(name).ok(), MIN_KEY_LEN)
            })
            .transpose()?;
        Ok(Self {
            rules: config
                .rules
                .iter()
                .map(|r| RuleStats::define(&r.name))
                .collect(),
            header_control: RuleStats::define(crate::config::HEADER_CONTROL_RULE),
            active_faults: Gauge::define(&stats::active_faults()),
            header_control_rejected: Counter::define(&stats::header_control_rejected()),
            signing_key,
            config,
        })
    }

    fn stats(&self, source: Source) -> &RuleStats {
        match source {
            Source::Rule(i) => self.rules.get(i).unwrap_or(&self.header_control),
            Source::HeaderControl => &self.header_control,
        }
    }
}

/// What the tick does with a parked stream when its delay is over.
struct AfterDelay {
    runtime: Rc<Runtime>,
    source: Source,
    abort: Option<Reply>,
}

/// The filter's root context: alone in its module, or driven by a parent (the bundle) through
/// [`Composable`].
#[derive(Default)]
pub struct FaultRoot {
    runtime: Option<Rc<Runtime>>,
    parked: Option<Parked<AfterDelay>>,
    rng: Option<Rc<RefCell<WyRand>>>,
}

impl Context for FaultRoot {}

impl Composable for FaultRoot {
    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError> {
        let runtime = FaultConfig::from_json(config).and_then(Runtime::build)?;
        log::info!(
            "configured: enabled={}, {} rule(s), header control {}",
            runtime.config.enabled,
            runtime.config.rules.len(),
            if runtime.config.header_control.is_some() {
                "on"
            } else {
                "off"
            },
        );
        let resolution = runtime.config.delay_resolution_ms;
        self.parked
            .get_or_insert_with(|| Parked::new(resolution, 0));
        self.rng
            .get_or_insert_with(|| Rc::new(RefCell::new(random::seeded())));
        self.runtime = Some(Rc::new(runtime));
        Ok(())
    }
}

impl RootContext for FaultRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        logging::refresh_level();
        compose::configure_from_host(self)
    }

    fn on_tick(&mut self) {
        let Some(parked) = &self.parked else { return };
        for (id, after) in parked.take_due(clock::now_ms()) {
            match after.abort {
                None => {
                    parked::resume(id);
                }
                Some(reply) => {
                    if abi::set_effective_context(id).is_ok()
                        && send_reply(&reply, "meshwright_fault_abort").is_ok()
                    {
                        after.runtime.stats(after.source).aborts_injected.inc();
                    }
                }
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FaultHttp {
            context_id,
            runtime: self.runtime.clone(),
            parked: self.parked.clone(),
            rng: self.rng.clone(),
            active: None,
            response: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FaultHttp {
    context_id: u32,
    runtime: Option<Rc<Runtime>>,
    parked: Option<Parked<AfterDelay>>,
    rng: Option<Rc<RefCell<WyRand>>>,
    /// The fault this request holds a slot for (released by `finish` when the stream ends).
    active: Option<Source>,
    /// Reply that replaces the upstream's response.
    response: Option<Reply>,
}

impl FaultHttp {
    /// Takes a slot under `max_active_faults`; false (and counted) when none is free.
    fn admit(&mut self, rt: &Runtime, source: Source) -> bool {
        rt.active_faults.add(1);
        if let Some(max) = rt.config.max_active_faults
            && rt.active_faults.get() > max
        {
            rt.active_faults.add(-1);
            rt.stats(source).faults_overflow.inc();
            return false;
        }
        rt.stats(source).active_faults.add(1);
        self.active = Some(source);
        true
    }

    fn release(&mut self) {
        if let (Some(source), Some(rt)) = (self.active.take(), &self.runtime) {
            rt.active_faults.add(-1);
            rt.stats(source).active_faults.add(-1);
        }
    }
}

impl FaultHttp {
    /// Forgets a parked stream and gives its fault slot back. Idempotent.
    fn finish(&mut self) {
        if let Some(parked) = &self.parked {
            parked.remove(self.context_id);
        }
        self.release();
    }
}

/// No `on_done`: no module exports `proxy_on_done` (one VM entry less per request); `Drop`
/// cleans up, alone and in the bundle.
impl Context for FaultHttp {}

/// The SDK drops a stream's context in `proxy_on_delete`, after the stream is done.
impl Drop for FaultHttp {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpContext for FaultHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(rt) = self.runtime.clone() else {
            return Action::Continue;
        };
        let config = &rt.config;
        if !config.enabled || (config.rules.is_empty() && config.header_control.is_none()) {
            return Action::Continue;
        }
        // Cheapest first: a request with none of the gate headers (the common case: no drill, no
        // fault header) is ruled out with a few absent-header reads, before the header map, the
        // clock or the generator are touched.
        // Gate headers read here (the first 64, as bits: no allocation on the common path) are
        // not read again below.
        let mut known = HeaderList::new();
        let mut done = 0u64;
        let gates = config.gates.as_deref().unwrap_or_default();
        if config.gates.is_some() {
            let mut found = HeaderList::with_capacity(1);
            for (i, name) in gates.iter().enumerate() {
                let bit = 1u64
                    .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
                    .unwrap_or(0);
                match request::header(name) {
                    Ok(None) => done |= bit,
                    Ok(Some(value)) => {
                        done |= bit;
                        known.push(name, value.clone());
                        found.push(name, value);
                    }
                    // Unknown: decide on the full read.
                    Err(_) => found.push(name, String::new()),
                }
            }
            if !may_fire(config, &found) {
                return Action::Continue;
            }
        }
        let read_above = |name: &str| {
            gates
                .iter()
                .enumerate()
                .any(|(i, g)| g == name && i < 64 && done & (1u64 << i) != 0)
        };
        // One host call for the rest (alone, or the parent module's copy).
        let headers = request::joined_pass(|| {
            let mut headers = known;
            for name in &config.headers_read {
                if read_above(name) {
                    continue;
                }
                if let Ok(Some(value)) = request::header(name) {
                    headers.push(name, value);
                }
            }
            headers
        });
        let now_ms = clock::now_ms();
        let decision = match self.rng.as_ref().map(|r| r.try_borrow_mut()) {
            Some(Ok(mut rng)) => decide(
                config,
                rt.signing_key.as_deref(),
                &headers,
                now_ms,
                &mut *rng,
            ),
            _ => return Action::Continue,
        };
        if decision.control_rejected.is_some() {
            rt.header_control_rejected.inc();
        }
        let Some(plan) = decision.plan else {
            return Action::Continue;
        };
        if !self.admit(&rt, plan.source) {
            return Action::Continue;
        }
        let stats = rt.stats(plan.source);
        self.response = plan.response;
        if let (Some(delay_ms), Some(parked)) = (plan.delay_ms, &self.parked) {
            let after = AfterDelay {
                runtime: Rc::clone(&rt),
                source: plan.source,
                abort: plan.abort.clone(),
            };
            if parked.park(self.context_id, now_ms.saturating_add(delay_ms), after) {
                stats.delays_injected.inc();
                return Action::Pause;
            }
            log::warn!(
                "could not start the tick; request {} not delayed",
                self.context_id
            );
        }
        if let Some(reply) = &plan.abort
            && send_reply(reply, "meshwright_fault_abort").is_ok()
        {
            stats.aborts_injected.inc();
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(reply) = self.response.take() else {
            return Action::Continue;
        };
        if send_reply(&reply, "meshwright_fault_response").is_err() {
            return Action::Continue;
        }
        if let (Some(rt), Some(source)) = (&self.runtime, self.active) {
            rt.stats(source).response_faults_injected.inc();
        }
        Action::Pause
    }
}

fn send_reply(reply: &Reply, details: &str) -> Result<(), abi::HostError> {
    abi::send_local_response(
        u32::from(reply.status),
        &reply.header_pairs(),
        reply.body.as_bytes(),
        reply.grpc_status,
        details,
    )
}

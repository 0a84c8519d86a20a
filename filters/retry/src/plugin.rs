//! proxy-wasm glue: find the request's destination, update its budget in shared data, act.
//!
//! - The config is parsed and validated once per `on_configure`; a bad one is refused (Envoy
//!   rejects the plugin) with a log line naming the field.
//! - Each destination's window lives in the proxy's shared data under
//!   `meshwright.retry.<side>.<destination>`, read and written with compare-and-swap. The
//!   request path rarely touches it. Client side: each worker counts requests and hands out
//!   tokens from a lease it withdrew ([`crate::lease`]); a write (get + set) happens only when
//!   the lease is short, and on the tick. Server side: first attempts are deposited ahead of
//!   their arrival ([`crate::ahead`]), so only retries and one first attempt in 16 are written.
//! - Client side: the request is granted retries (`x-envoy-max-retries`), and when the stream
//!   ends the router's attempt count (`upstream.request_attempt_count`) settles the grant: unused
//!   tokens go back to the lease.
//! - Server side: retries over budget get the shed reply.
//! - The root context's tick writes every budget's counts, returns its lease or settles its
//!   advance, and refreshes the budget gauges.
//! - [`RetryRoot`] is also driven by the bundle (`Composable`): request headers and the tick go
//!   through meshwright-host, which does the direct host call when alone.

use crate::ahead::{self, Ahead};
use crate::budget::{self, Budget, Loaded, Window};
use crate::client::{self, Grant};
use crate::config::{RetryBudgetConfig, Side};
use crate::destination::{self, DestinationSource};
use crate::lease::{self, Local};
use crate::server::{self, Attempt, Verdict};
use crate::stats::{DestinationMetricNames, SideMetricNames, shared_key};
use meshwright_host::compose::{self, Composable};
use meshwright_host::metrics::{Counter, Gauge};
use meshwright_host::shared_data::{self, UpdateError};
use meshwright_host::{abi, clock, logging, request, tick};
use meshwright_shared::config::ConfigError;
use meshwright_shared::headers::is_grpc;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Read-modify-write attempts on one destination's budget before giving up.
const CAS_ATTEMPTS: u32 = 16;

#[cfg(feature = "entrypoint")]
proxy_wasm::main! {{
    logging::init("retry-budget");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RetryRoot::default()) });
}}

/// A destination's metrics (those of the other side are not defined).
struct DestStats {
    requests: Counter,
    retries: Counter,
    granted: Option<Counter>,
    denied: Option<Counter>,
    over_budget: Option<Counter>,
    shed: Option<Counter>,
    budget: Gauge,
}

impl DestStats {
    fn define(side: Side, stat_name: &str) -> Self {
        let n = DestinationMetricNames::new(side, stat_name);
        let client = side == Side::Client;
        let on = |yes: bool, name: &str| yes.then(|| Counter::define(name));
        Self {
            requests: Counter::define(&n.requests),
            retries: Counter::define(&n.retries),
            granted: on(client, &n.retries_granted),
            denied: on(client, &n.retries_denied),
            over_budget: on(!client, &n.retries_over_budget),
            shed: on(!client, &n.retries_shed),
            budget: Gauge::define(&n.budget),
        }
    }
}

fn add(counter: Option<Counter>, n: u32) {
    if let (Some(c), true) = (counter, n > 0) {
        c.add(u64::from(n));
    }
}

struct SideStats {
    cas_conflicts: Counter,
    state_errors: Counter,
    state_resets: Counter,
    destinations_overflow: Counter,
    attempts_unknown: Option<Counter>,
}

impl SideStats {
    fn define(side: Side) -> Self {
        let n = SideMetricNames::new(side);
        Self {
            cas_conflicts: Counter::define(&n.cas_conflicts),
            state_errors: Counter::define(&n.state_errors),
            state_resets: Counter::define(&n.state_resets),
            destinations_overflow: Counter::define(&n.destinations_overflow),
            attempts_unknown: (side == Side::Client).then(|| Counter::define(&n.attempts_unknown)),
        }
    }
}

/// What a worker keeps of one budget between writes: the client's counts and lease, the
/// server's advance.
trait Worker: Clone {
    /// Whether the tick has something to write.
    fn has_writes(&self) -> bool;
    /// The tick's write.
    fn flush(&mut self, window: &mut Window, budget: &Budget);
    /// Whether the write under way creates the shared key (nothing taken or deposited ahead).
    fn set_creating(&mut self, creating: bool);
}

impl Worker for Local {
    fn has_writes(&self) -> bool {
        Local::has_writes(self)
    }
    fn flush(&mut self, window: &mut Window, budget: &Budget) {
        Local::flush(self, window, budget);
    }
    fn set_creating(&mut self, creating: bool) {
        Local::set_creating(self, creating);
    }
}

impl Worker for Ahead {
    fn has_writes(&self) -> bool {
        Ahead::has_writes(self)
    }
    fn flush(&mut self, window: &mut Window, budget: &Budget) {
        Ahead::flush(self, window, budget);
    }
    fn set_creating(&mut self, creating: bool) {
        Ahead::set_creating(self, creating);
    }
}

/// One destination's budget (or, `per_caller`, one caller's share of it) as this VM knows it.
struct Dest<W> {
    /// Shared-data key.
    key: String,
    /// The destination's stat-name segment (a destination's callers share its metrics).
    stat_name: String,
    stats: DestStats,
    /// This worker's part, not yet written.
    local: RefCell<W>,
}

/// Everything built at `on_configure`, shared by the VM's requests.
struct Runtime<W> {
    config: RetryBudgetConfig,
    /// A new budget's worker part.
    fresh: W,
    stats: SideStats,
    dests: RefCell<HashMap<String, Rc<Dest<W>>>>,
    overflow: RefCell<Option<Rc<Dest<W>>>>,
}

/// The runtime of the configured side.
enum Sided {
    Client(Rc<Runtime<Local>>),
    Server(Rc<Runtime<Ahead>>),
}

impl Sided {
    fn build(config: RetryBudgetConfig) -> Self {
        // Leases and advances live at most one tick, which must come well before their bucket
        // leaves the window.
        let short_lived = lease::leasing_allowed(&config.budget, config.report_interval_ms);
        match config.side {
            Side::Client => Self::Client(Rc::new(Runtime::build(config, Local::new(short_lived)))),
            Side::Server => {
                let size = if short_lived {
                    ahead::advance_size(&config.budget)
                } else {
                    0
                };
                Self::Server(Rc::new(Runtime::build(config, Ahead::new(size))))
            }
        }
    }
}

impl<W: Worker> Runtime<W> {
    fn build(config: RetryBudgetConfig, fresh: W) -> Self {
        Self {
            fresh,
            stats: SideStats::define(config.side),
            dests: RefCell::new(HashMap::new()),
            overflow: RefCell::new(None),
            config,
        }
    }

    /// The budget under `key`, whose metrics are destination `destination_key`'s.
    fn new_dest(&self, key: &str, destination_key: &str) -> Rc<Dest<W>> {
        let stat_name = destination::stat_name(destination_key);
        Rc::new(Dest {
            key: shared_key(self.config.side, key),
            stats: DestStats::define(self.config.side, &stat_name),
            stat_name,
            local: RefCell::new(self.fresh.clone()),
        })
    }

    /// The request's destination value, as configured.
    fn read_destination(&self) -> Option<String> {
        let header = |name: &str| request::header(name).ok().flatten();
        match &self.config.destination {
            DestinationSource::Cluster => abi::property(&["xds", "cluster_name"])
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            DestinationSource::Authority => header(":authority"),
            DestinationSource::Header(name) => header(name),
            DestinationSource::Fixed(name) => Some(name.clone()),
        }
    }

    /// The caller's mTLS identity: the first URI SAN of the downstream peer's certificate.
    fn read_caller(&self) -> Option<String> {
        abi::property(&["connection", "uri_san_peer_certificate"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The budget a request belongs to: its destination's (`per_caller`: its caller's share of
    /// it), or `overflow` once `max_destinations` budgets are tracked.
    fn destination(&self) -> Option<Rc<Dest<W>>> {
        let destination_key = destination::normalize(self.read_destination().as_deref());
        let key = if self.config.per_caller {
            destination::caller_key(&destination_key, self.read_caller().as_deref())
        } else {
            destination_key.clone()
        };
        {
            let dests = self.dests.try_borrow().ok()?;
            if let Some(d) = dests.get(&key) {
                return Some(Rc::clone(d));
            }
            if dests.len() >= self.config.max_destinations {
                drop(dests);
                self.stats.destinations_overflow.inc();
                let mut overflow = self.overflow.try_borrow_mut().ok()?;
                return Some(Rc::clone(overflow.get_or_insert_with(|| {
                    self.new_dest(destination::OVERFLOW, destination::OVERFLOW)
                })));
            }
        }
        let dest = self.new_dest(&key, &destination_key);
        self.dests
            .try_borrow_mut()
            .ok()?
            .insert(key, Rc::clone(&dest));
        Some(dest)
    }

    /// One read-modify-write of `dest`'s window, running `f` on it and on this worker's part
    /// (a copy per attempt; kept when the write lands). None when shared data failed
    /// (counted): the counts wait for the next write and the caller takes its safe default.
    fn write<T>(
        &self,
        dest: &Dest<W>,
        now_ms: u64,
        mut f: impl FnMut(&mut Window, &Budget, &mut W) -> T,
    ) -> Option<(T, u32)> {
        let before = dest.local.try_borrow().ok()?.clone();
        let budget = self.config.budget;
        let mut loaded = Loaded::Stored;
        let mut after = None;
        let result = shared_data::update_counted(&dest.key, CAS_ATTEMPTS, |stored| {
            let mut local = before.clone();
            // No key yet: this write is unconditional (`shared_data::update_counted`).
            local.set_creating(stored.is_none());
            let s = budget::step(&budget, stored, now_ms, |w, b| f(w, b, &mut local));
            loaded = s.loaded;
            after = Some(local);
            (Some(s.encoded), (s.out, s.level))
        });
        match result {
            Ok(u) => {
                if let (Some(after), Ok(mut local)) = (after, dest.local.try_borrow_mut()) {
                    *local = after;
                }
                if u.conflicts > 0 {
                    self.stats.cas_conflicts.add(u64::from(u.conflicts));
                }
                if loaded == Loaded::Reset {
                    self.stats.state_resets.inc();
                }
                Some(u.value)
            }
            Err(e) => {
                self.stats.state_errors.inc();
                match e {
                    UpdateError::Contended => log::debug!("budget {} contended", dest.key),
                    UpdateError::Host(h) => log::debug!("budget {}: {h}", dest.key),
                }
                None
            }
        }
    }

    /// Writes every budget this worker counted in, holds a lease of or deposited ahead in, and
    /// refreshes every
    /// destination's budget gauge (`per_caller`:
    /// the budget left to the destination's most spent caller).
    fn report(&self, now_ms: u64) {
        let mut levels: HashMap<String, (Gauge, u32)> = HashMap::new();
        let mut all: Vec<Rc<Dest<W>>> = self
            .dests
            .try_borrow()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default();
        if let Ok(Some(o)) = self.overflow.try_borrow().map(|o| o.clone()) {
            all.push(o);
        }
        for dest in all {
            let has_writes = dest.local.try_borrow().is_ok_and(|l| l.has_writes());
            let level = if has_writes {
                self.write(&dest, now_ms, |w, b, l| l.flush(w, b))
                    .map(|(_, level)| level)
            } else {
                match abi::get_shared_data(&dest.key) {
                    Ok((stored, _)) => {
                        let budget = self.config.budget;
                        let (mut w, _) = Window::decode(stored.as_deref(), &budget, now_ms);
                        w.advance(now_ms);
                        Some(w.available(&budget))
                    }
                    Err(_) => None,
                }
            };
            if let Some(level) = level {
                let e = levels
                    .entry(dest.stat_name.clone())
                    .or_insert((dest.stats.budget, level));
                e.1 = e.1.min(level);
            }
        }
        for (gauge, level) in levels.into_values() {
            gauge.set(u64::from(level));
        }
    }
}

/// The filter's root context: alone in its module, or driven by a parent (the bundle) through
/// [`Composable`].
#[derive(Default)]
pub struct RetryRoot {
    runtime: Option<Sided>,
}

impl Context for RetryRoot {}

impl Composable for RetryRoot {
    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError> {
        let config = RetryBudgetConfig::from_json(config)?;
        log::info!(
            "configured: side={}, retry_ratio={}, min_retries_per_second floor {} per {} ms, \
             destination {:?}, {}{}",
            config.side.as_str(),
            config.budget.ratio(),
            config.budget.reserve(),
            config.budget.ttl_ms(),
            config.destination,
            if config.side == Side::Client {
                format!("max_retries={}", config.max_retries)
            } else {
                format!(
                    "shed with HTTP {}{}",
                    config.shed.http_status,
                    if config.per_caller {
                        ", a budget per caller"
                    } else {
                        ""
                    }
                )
            },
            if config.dry_run { ", DRY RUN" } else { "" },
        );
        if tick::set_period_ms(config.report_interval_ms).is_err() {
            log::warn!("no tick: settlements are written with the next request only");
        }
        self.runtime = Some(Sided::build(config));
        Ok(())
    }
}

impl RootContext for RetryRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        logging::refresh_level();
        compose::configure_from_host(self)
    }

    fn on_tick(&mut self) {
        match &self.runtime {
            Some(Sided::Client(rt)) => rt.report(clock::now_ms()),
            Some(Sided::Server(rt)) => rt.report(clock::now_ms()),
            None => {}
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.runtime {
            Some(Sided::Server(rt)) => Some(Box::new(ServerHttp {
                runtime: Rc::clone(rt),
            })),
            Some(Sided::Client(rt)) => Some(Box::new(ClientHttp {
                runtime: Some(Rc::clone(rt)),
                dest: None,
                grant: None,
            })),
            None => Some(Box::new(ClientHttp {
                runtime: None,
                dest: None,
                grant: None,
            })),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ClientHttp {
    runtime: Option<Rc<Runtime<Local>>>,
    dest: Option<Rc<Dest<Local>>>,
    grant: Option<Grant>,
}

impl Context for ClientHttp {}

impl HttpContext for ClientHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(rt) = self.runtime.clone() else {
            return Action::Continue;
        };
        let Some(dest) = rt.destination() else {
            return Action::Continue;
        };
        dest.stats.requests.inc();
        let asked = request::header(client::MAX_RETRIES_HEADER).ok().flatten();
        let wanted = client::wanted(rt.config.max_retries, asked.as_deref());
        let local = dest
            .local
            .try_borrow_mut()
            .ok()
            .and_then(|mut l| client::admit(&mut l, wanted));
        // The lease is short: a write (and the clock, for the window). No budget state (shared
        // data failed): no retries — the safe side for a callee that may be drowning in them.
        let grant = local.or_else(|| {
            rt.write(&dest, clock::now_ms(), |w, b, l| {
                client::admit_written(w, b, l, wanted)
            })
            .map(|(grant, _)| grant)
        });
        let granted = match grant {
            Some(grant) => {
                add(dest.stats.granted, grant.retries);
                add(dest.stats.denied, grant.denied());
                self.grant = Some(grant);
                grant.retries
            }
            None => 0,
        };
        if !rt.config.dry_run
            && request::set_header(client::MAX_RETRIES_HEADER, &granted.to_string()).is_err()
        {
            log::debug!("could not set {}", client::MAX_RETRIES_HEADER);
        }
        self.dest = Some(dest);
        Action::Continue
    }

    fn on_log(&mut self) {
        let (Some(rt), Some(dest)) = (&self.runtime, self.dest.take()) else {
            return;
        };
        // Enforcing a grant of 0, the router made at most one attempt: nothing to settle or
        // count, and no property to read (the common case in an outage).
        if !rt.config.dry_run && self.grant.is_some_and(|g| g.retries == 0) {
            return;
        }
        let attempts = abi::property(&["upstream", "request_attempt_count"])
            .ok()
            .flatten()
            .and_then(|b| client::attempts_from_property(&b))
            .or_else(|| {
                abi::header(MapType::HttpResponseHeaders, client::ATTEMPT_COUNT_HEADER)
                    .ok()
                    .flatten()
                    .and_then(|v| client::attempts_from_header(&v))
            });
        let Some(attempts) = attempts else {
            // The grant stays withdrawn: the safe side.
            add(rt.stats.attempts_unknown, 1);
            return;
        };
        let Some(grant) = self.grant.take() else {
            let retries = attempts.saturating_sub(1);
            add(
                Some(dest.stats.retries),
                u32::try_from(retries).unwrap_or(u32::MAX),
            );
            return;
        };
        let s = client::settle(&grant, attempts, !rt.config.dry_run);
        add(Some(dest.stats.retries), s.retries);
        if let Ok(mut l) = dest.local.try_borrow_mut() {
            l.settle(grant.bucket, s.delta);
        }
    }
}

struct ServerHttp {
    runtime: Rc<Runtime<Ahead>>,
}

impl Context for ServerHttp {}

impl HttpContext for ServerHttp {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let rt = Rc::clone(&self.runtime);
        let Some(dest) = rt.destination() else {
            return Action::Continue;
        };
        let attempt = server::attempt(
            request::header(server::ATTEMPT_COUNT_HEADER)
                .ok()
                .flatten()
                .as_deref(),
        );
        dest.stats.requests.inc();
        if matches!(attempt, Attempt::Retry(_)) {
            dest.stats.retries.inc();
        }
        let local = dest
            .local
            .try_borrow_mut()
            .ok()
            .and_then(|mut l| server::admit(&mut l, attempt));
        // A retry, or a first attempt the advance does not cover: a write. Shared data failed:
        // let the request through (a retry is only shed on the budget's word).
        let Some(verdict) = local.or_else(|| {
            rt.write(&dest, clock::now_ms(), |w, b, l| {
                server::admit_written(w, b, l, attempt)
            })
            .map(|(verdict, _)| verdict)
        }) else {
            return Action::Continue;
        };
        if verdict != Verdict::RetryOverBudget {
            return Action::Continue;
        }
        add(dest.stats.over_budget, 1);
        if rt.config.dry_run {
            return Action::Continue;
        }
        let grpc = is_grpc(request::header("content-type").ok().flatten().as_deref());
        let reply = server::shed_reply(&rt.config.shed, grpc);
        match abi::send_local_response(
            u32::from(reply.status),
            &reply.header_pairs(),
            reply.body.as_bytes(),
            reply.grpc_status,
            "meshwright_retry_budget_shed",
        ) {
            Ok(()) => {
                add(dest.stats.shed, 1);
                Action::Pause
            }
            Err(e) => {
                log::debug!("could not shed a retry: {e}");
                Action::Continue
            }
        }
    }
}

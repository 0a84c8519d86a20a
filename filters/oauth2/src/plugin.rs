//! proxy-wasm glue: IdP documents fetched by the root context, per-request decisions
//! ([`Gate::decide`]) carried out, token-endpoint calls made from the request's own context.
//!
//! Per VM (= per worker) state lives in one [`Vm`] shared by the root context and the HTTP
//! contexts. No RefCell borrow is held across a host call that can re-enter the VM.
//!
//! - Discovery and JWKS: fetched by the root context at start, retried with backoff while the
//!   IdP is unreachable, refreshed every `discovery.refresh_s`; the JWKS also on an unknown `kid`
//!   (at most every `jwks_min_refetch_s`).
//! - Requests that need the IdP before its documents are loaded (or an expired session whose
//!   refresh another request is doing) are parked; they are decided again when the documents
//!   arrive, and get 503 after `discovery.wait_ms`.
//! - One refresh per session across all workers: a slot in the proxy's shared data
//!   (`meshwright.oauth2.refresh.<n>`, 1,024 slots) is claimed with compare-and-swap; the winner
//!   calls the token endpoint and publishes the new sealed session there, so requests still
//!   carrying the old cookie adopt it (and hand the browser the new cookie).
//! - [`OAuth2Root`] is also driven by the bundle (`Composable`): request headers, the tick,
//!   resumes of paused requests (the bundle's later filters run first) and the routing of call
//!   responses go through meshwright-host, which does the direct host call when alone.

use crate::cache::SessionCache;
use crate::config::OAuth2Config;
use crate::flow::{
    self, Claim, Decision, Entropy, Failure, Forward, Gate, LoginStep, Outcome, RefreshSlots,
    RefreshStep, Reply, TokenCall, Userinfo,
};
use crate::idp::{self, Discovery, Fetch, Jwks};
use crate::session::{CookieNames, LoginTxn, Session};
use crate::stats::{self, Stat};
use crate::{generations, slots};
use meshwright_host::compose::{self, Composable};
use meshwright_host::metrics::Counter;
use meshwright_host::parked::Parked;
use meshwright_host::{abi, clock, logging, request, shared_data, tick};
use meshwright_shared::config::ConfigError;
use meshwright_shared::headers::{HeaderList, Selector};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[cfg(feature = "entrypoint")]
proxy_wasm::main! {{
    logging::init("oauth2");
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(OAuth2Root::default()) });
}}

/// Everything built at `on_configure`.
struct Runtime {
    cfg: OAuth2Config,
    names: CookieNames,
    /// The request headers a decision reads ([`flow::HEADERS_READ`] and the forward header).
    headers_read: Vec<String>,
    /// Indexed by [`Stat`] (`as usize`).
    counters: Vec<Counter>,
    /// Indexed like [`Failure::ALL`].
    login_failed: Vec<Counter>,
    /// Indexed like [`flow::TOKEN_ERRORS`].
    token_errors: Vec<Counter>,
}

impl Runtime {
    /// The decision context, over a snapshot of what is known of the IdP.
    fn gate<'a>(&'a self, idp: &'a IdpSnapshot) -> Gate<'a> {
        Gate {
            cfg: &self.cfg,
            names: &self.names,
            discovery: idp.0.as_deref(),
            jwks: idp.1.as_deref(),
        }
    }

    fn inc(&self, stat: Stat) {
        if let Some(c) = self.counters.get(stat as usize) {
            c.inc();
        }
    }

    fn failed(&self, f: Failure) {
        let i = Failure::ALL.iter().position(|x| *x == f);
        if let Some(c) = i.and_then(|i| self.login_failed.get(i)) {
            c.inc();
        }
    }

    /// A grant the token endpoint refused: logged with the provider's reason, counted by it.
    fn token_refused(&self, grant: &str, status: Option<u16>, body: &[u8]) {
        let e = flow::token_error(status.unwrap_or(0), body);
        log::warn!("{grant} grant refused by the token endpoint: {e}");
        let i = flow::TOKEN_ERRORS.iter().position(|x| *x == e.error);
        if let Some(c) = i.and_then(|i| self.token_errors.get(i)) {
            c.inc();
        }
    }

    fn count(&self, outcome: Outcome) {
        for s in stats::outcome_stats(outcome) {
            self.inc(*s);
        }
    }
}

#[derive(Default)]
struct IdpState {
    discovery: Option<Rc<Discovery>>,
    jwks: Option<Rc<Jwks>>,
    /// In-flight root calls.
    discovery_call: Option<u32>,
    jwks_call: Option<u32>,
    schedule: idp::FetchSchedule,
    /// When the last on-demand JWKS fetch (an unknown `kid`) started: those are rate-limited
    /// by `jwks_min_refetch_s`; the scheduled fetches are not counted.
    last_jwks_refetch_ms: u64,
}

/// The IdP's discovery document and keys as known now (shared, cheap to copy).
type IdpSnapshot = (Option<Rc<Discovery>>, Option<Rc<Jwks>>);

impl IdpState {
    fn snapshot(&self) -> IdpSnapshot {
        (self.discovery.clone(), self.jwks.clone())
    }
}

/// What a paused request is waiting for.
enum Pending {
    /// The callback waits for the code exchange.
    Exchange { token: u32, login: Login },
    /// The code exchange succeeded but its ID token's key is unknown: the JWKS is being fetched.
    ExchangeNeedsKeys {
        token: u32,
        login: Login,
        tokens: flow::TokenSet,
    },
    /// The login waits for the UserInfo endpoint.
    Userinfo {
        token: u32,
        login: Login,
        tokens: flow::TokenSet,
    },
    /// A refresh grant succeeded but its ID token's key is unknown: the JWKS is being fetched.
    RefreshNeedsKeys {
        token: u32,
        refreshed: Refreshed,
        tokens: flow::TokenSet,
    },
    Refresh {
        token: u32,
        session: Session,
        fallback: Option<Forward>,
        headers: HeaderList,
    },
    /// A refresh grant succeeded and its ID token lacks a claim the config uses: the refresh
    /// waits for the UserInfo endpoint.
    RefreshUserinfo {
        token: u32,
        refreshed: Refreshed,
        tokens: flow::TokenSet,
    },
}

#[derive(Default)]
struct Vm {
    runtime: RefCell<Option<Rc<Runtime>>>,
    idp: RefCell<IdpState>,
    cache: RefCell<Option<SessionCache>>,
    /// Paused requests; the payload is when their wait ends (then 503).
    parked: RefCell<Option<Parked<u64>>>,
    pending: RefCell<HashMap<u32, Pending>>,
    response_cookies: RefCell<HashMap<u32, Vec<String>>>,
    /// Login states whose code exchange already started on this worker.
    spent: RefCell<crate::replay::SpentStates>,
}

struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        if getrandom::fill(buf).is_err() {
            // Envoy implements WASI random_get; should a host not, fall back to the clock mixed
            // through SipHash rather than emit zeros, and say so.
            log::error!("no host randomness; session secrets are weak");
            use std::hash::{BuildHasher, Hasher};
            for (i, b) in buf.iter_mut().enumerate() {
                let mut h = std::hash::RandomState::new().build_hasher();
                h.write_u64(abi::now_nanos().unwrap_or(0) ^ i as u64);
                *b = h.finish() as u8;
            }
        }
    }
}

/// Refresh slots and session generations in the proxy's shared data ([`slots`],
/// [`generations`]).
struct SharedSlots;

impl RefreshSlots for SharedSlots {
    fn claim(&mut self, sid: &str, now_ms: u64) -> Claim {
        let result = shared_data::update(&slots::key(sid), 8, |current| {
            let text = current
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("");
            let (next, claim) = slots::claim(text, sid, now_ms);
            (next.map(String::into_bytes), claim)
        });
        // Shared data unavailable or contended: refreshing without coordination is better than
        // not refreshing.
        result.unwrap_or(Claim::Acquired)
    }

    fn complete(&mut self, sid: &str, sealed: &str, now_ms: u64) {
        let value = slots::done(sid, sealed, now_ms);
        let _ = abi::set_shared_data(&slots::key(sid), value.as_bytes(), 0);
    }

    fn release(&mut self, sid: &str) {
        let _ = abi::set_shared_data(&slots::key(sid), b"", 0);
    }

    fn supersede(&mut self, sid: &str, generation: u32, until_s: u64, now_ms: u64) {
        let _ = shared_data::update(&generations::bucket_key(sid), 8, |current| {
            let text = current
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("");
            let next = generations::record(text, sid, generation, until_s, now_ms / 1000);
            (Some(next.into_bytes()), ())
        });
    }

    fn superseded(&mut self, sid: &str, generation: u32, now_ms: u64) -> bool {
        abi::get_shared_data(&generations::bucket_key(sid))
            .ok()
            .and_then(|(b, _)| b)
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|t| generations::newer(&t, sid, generation, now_ms / 1000))
    }
}

/// The filter's root context: alone in its module, or driven by a parent (the bundle) through
/// [`Composable`].
#[derive(Default)]
pub struct OAuth2Root {
    vm: Rc<Vm>,
}

impl Context for OAuth2Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(rt) = self.vm.runtime.borrow().clone() else {
            return;
        };
        let now = clock::now_ms();
        let status = call_status();
        let body = abi::http_call_response_body(body_size).unwrap_or_default();
        let refresh_ms = rt.cfg.discovery_refresh_s * 1000;
        let ready = {
            let mut idp = self.vm.idp.borrow_mut();
            if idp.discovery_call == Some(token) {
                idp.discovery_call = None;
                rt.inc(Stat::DiscoveryFetches);
                match (status, idp::parse_discovery(&body, &rt.cfg.issuer)) {
                    (Some(200), Ok(d)) => {
                        log::info!("discovery loaded from {}", rt.cfg.issuer);
                        idp.discovery = Some(Rc::new(d));
                        idp.schedule.loaded(Fetch::Discovery, now, refresh_ms);
                    }
                    (s, r) => {
                        rt.inc(Stat::DiscoveryFailures);
                        log::warn!(
                            "discovery from {} failed: status {s:?}, {:?}",
                            rt.cfg.issuer,
                            r.err()
                        );
                        idp.schedule.failed(Fetch::Discovery, now);
                    }
                }
            } else if idp.jwks_call != Some(token) {
                drop(idp);
                // A token-endpoint or JWKS call made for a request while the root context was
                // deciding it (parked requests are decided from the tick).
                call_response(&self.vm, token, body_size);
                return;
            } else {
                idp.jwks_call = None;
                rt.inc(Stat::JwksFetches);
                match (status, idp::parse_jwks(&body)) {
                    (Some(200), Ok(j)) => {
                        log::info!("JWKS loaded: {j:?}");
                        idp.jwks = Some(Rc::new(j));
                        idp.schedule.loaded(Fetch::Jwks, now, refresh_ms);
                    }
                    (s, r) => {
                        rt.inc(Stat::JwksFailures);
                        log::warn!("JWKS fetch failed: status {s:?}, {:?}", r.err());
                        idp.schedule.failed(Fetch::Jwks, now);
                    }
                }
            }
            idp.discovery.is_some() && idp.jwks.is_some()
        };
        if ready {
            self.recheck_parked(now, true);
        }
        self.fetch_due(now);
    }
}

impl OAuth2Root {
    /// Starts the discovery or JWKS fetch that is due.
    fn fetch_due(&self, now: u64) {
        let Some(rt) = self.vm.runtime.borrow().clone() else {
            return;
        };
        let (due, endpoint) = {
            let idp = self.vm.idp.borrow();
            let in_flight = idp.discovery_call.is_some() || idp.jwks_call.is_some();
            match idp.schedule.due(now, idp.discovery.is_some(), in_flight) {
                Some(Fetch::Discovery) => {
                    (Fetch::Discovery, idp::discovery_endpoint(&rt.cfg.issuer))
                }
                Some(Fetch::Jwks) => (
                    Fetch::Jwks,
                    idp.discovery.as_ref().map(|d| d.jwks_uri.clone()),
                ),
                None => return,
            }
        };
        let Some(ep) = endpoint else { return };
        match get(&rt.cfg, &ep) {
            Ok(token) => {
                let mut idp = self.vm.idp.borrow_mut();
                match due {
                    Fetch::Discovery => idp.discovery_call = Some(token),
                    Fetch::Jwks => idp.jwks_call = Some(token),
                }
            }
            Err(e) => {
                // Envoy refuses the call at once when the cluster does not exist (a typo in
                // idp_cluster, a missing ServiceEntry): say so loudly, and count it as the
                // failed fetch it is.
                log::error!(
                    "cannot call the IdP: Envoy refused a call to cluster {:?} ({e}); does the cluster exist?",
                    rt.cfg.idp_cluster
                );
                rt.inc(match due {
                    Fetch::Discovery => Stat::DiscoveryFailures,
                    Fetch::Jwks => Stat::JwksFailures,
                });
                self.vm.idp.borrow_mut().schedule.refused(now);
            }
        }
    }

    /// Decides parked requests again: all of them (`all`: the IdP's documents just arrived), or
    /// those due for a look; a request whose wait is over gets 503.
    fn recheck_parked(&self, now: u64, all: bool) {
        let Some(parked) = self.vm.parked.borrow().clone() else {
            return;
        };
        let Some(rt) = self.vm.runtime.borrow().clone() else {
            return;
        };
        for (id, deadline) in parked.take_due(if all { u64::MAX } else { now }) {
            if abi::set_effective_context(id).is_err() {
                continue;
            }
            if now >= deadline {
                rt.inc(Stat::IdpWaitTimeouts);
                let _ = send(&flow::unavailable("identity_provider_unavailable"));
            } else if matches!(process(id, &self.vm, Some(deadline)), Action::Continue) {
                compose::continue_request(id);
            }
        }
    }
}

fn call_status() -> Option<u16> {
    abi::header(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
}

/// GET an IdP document through the IdP cluster.
fn get(cfg: &OAuth2Config, ep: &idp::Endpoint) -> Result<u32, abi::HostError> {
    compose::dispatch_http_call(
        &cfg.idp_cluster,
        &[
            (":method", "GET"),
            (":path", &ep.path),
            (":authority", &ep.authority),
            ("accept", "application/json"),
        ],
        b"",
        cfg.call_timeout_ms,
    )
}

fn post(cfg: &OAuth2Config, call: &TokenCall) -> Result<u32, abi::HostError> {
    request_idp(cfg, "POST", call)
}

/// A call to the IdP through its cluster.
fn request_idp(cfg: &OAuth2Config, method: &str, call: &TokenCall) -> Result<u32, abi::HostError> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", method),
        (":path", &call.path),
        (":authority", &call.authority),
    ];
    headers.extend(call.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    compose::dispatch_http_call(
        &cfg.idp_cluster,
        &headers,
        call.body.as_bytes(),
        cfg.call_timeout_ms,
    )
}

impl Composable for OAuth2Root {
    fn configure(&mut self, config: &[u8]) -> Result<(), ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let cfg = OAuth2Config::from_json(config, &env)?;
        let counters = Stat::ALL
            .iter()
            .map(|s| Counter::define(&stats::counter(s.name())))
            .collect();
        let login_failed = Failure::ALL
            .iter()
            .map(|f| Counter::define(&stats::login_failed(f.label())))
            .collect();
        let token_errors = flow::TOKEN_ERRORS
            .iter()
            .map(|e| Counter::define(&stats::token_error(e)))
            .collect();
        log::info!(
            "configured: issuer {}, client {}, forwarding {:?}, cookie keys {}",
            cfg.issuer,
            cfg.client_id,
            cfg.forward_token,
            cfg.keys.sealing_kid()
        );
        *self.vm.cache.borrow_mut() = Some(SessionCache::new(cfg.cache_entries));
        self.vm
            .parked
            .borrow_mut()
            .get_or_insert_with(|| Parked::new(50, 1000));
        let mut headers_read: Vec<String> =
            flow::HEADERS_READ.iter().map(|h| (*h).to_owned()).collect();
        headers_read.push(cfg.forward_header.clone());
        *self.vm.runtime.borrow_mut() = Some(Rc::new(Runtime {
            names: CookieNames::new(&cfg.cookie.name),
            headers_read,
            cfg,
            counters,
            login_failed,
            token_errors,
        }));
        let _ = tick::set_period_ms(1000);
        self.fetch_due(clock::now_ms());
        Ok(())
    }
}

impl RootContext for OAuth2Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        logging::refresh_level();
        compose::configure_from_host(self)
    }

    fn on_tick(&mut self) {
        let now = clock::now_ms();
        self.recheck_parked(now, false);
        self.fetch_due(now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(OAuth2Http {
            id: context_id,
            vm: Rc::clone(&self.vm),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Reads the headers a decision needs from the current (effective) HTTP context, with one visit
/// of the map, and whether the request came with a single `Cookie` header.
fn read_headers(rt: &Runtime) -> (HeaderList, CookieHeaders) {
    let mut selector = Selector::new(&rt.headers_read);
    if request::visit(|k, v| selector.offer(k, v)).is_err() {
        return (HeaderList::new(), CookieHeaders::Several);
    }
    let (list, cookie_headers) = selector.finish();
    let cookies = if cookie_headers == 1 {
        CookieHeaders::One
    } else {
        CookieHeaders::Several
    };
    (list, cookies)
}

/// How many `Cookie` headers the request has (as far as this request's read knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CookieHeaders {
    One,
    /// Several, or not known.
    Several,
}

fn send(r: &Reply) -> Result<(), abi::HostError> {
    abi::send_local_response(
        u32::from(r.status),
        &r.header_pairs(),
        r.body.as_bytes(),
        None,
        "meshwright_oauth2",
    )
}

fn apply(vm: &Vm, id: u32, f: Forward, cookies: CookieHeaders) {
    for h in &f.remove {
        let _ = request::remove_header(h);
    }
    for (k, v) in &f.set {
        let _ = request::set_header(k, v);
    }
    match &f.cookie {
        // One Cookie header: replaced with one host call.
        Some(Some(c)) if cookies == CookieHeaders::One => {
            let _ = request::set_header("cookie", c);
        }
        Some(Some(c)) => {
            // Remove, then add: where a client sent several Cookie headers, each must go (a
            // session cookie may be in any of them).
            let _ = request::remove_header("cookie");
            let _ = request::add_header("cookie", c);
        }
        Some(None) => {
            let _ = request::remove_header("cookie");
        }
        None => {}
    }
    if !f.response_cookies.is_empty() {
        vm.response_cookies
            .borrow_mut()
            .insert(id, f.response_cookies);
    }
}

/// Whether this worker has as many request-driven IdP calls in flight as it may.
fn calls_full(vm: &Vm, rt: &Runtime) -> bool {
    vm.pending.borrow().len() >= rt.cfg.max_calls_in_flight
}

/// How often a parked request is decided again (a refresh done by another request).
const RECHECK_MS: u64 = 100;

/// Decides request `id` (the current or effective HTTP context) and acts on the decision.
/// `deadline`: the end of the wait of a request that was parked before.
fn process(id: u32, vm: &Vm, deadline: Option<u64>) -> Action {
    let Some(rt) = vm.runtime.borrow().clone() else {
        return Action::Continue;
    };
    // One host call for all of them (alone; in a parent module, its copy).
    let (headers, cookies) = read_headers(&rt);
    let now = clock::now_ms();
    let idp = vm.idp.borrow().snapshot();
    let gate = rt.gate(&idp);
    let decision = {
        let mut cache = vm.cache.borrow_mut();
        let Some(cache) = cache.as_mut() else {
            return Action::Continue;
        };
        gate.decide(&headers, now, cache, &mut HostEntropy, &mut SharedSlots)
    };
    match decision {
        Decision::Forward(f, outcome) => {
            rt.count(outcome);
            apply(vm, id, f, cookies);
            Action::Continue
        }
        Decision::Reply(r, outcome) => {
            rt.count(outcome);
            let _ = send(&r);
            Action::Pause
        }
        Decision::Wait => {
            let parked = vm.parked.borrow().clone();
            let first = deadline.is_none();
            let deadline = deadline.unwrap_or_else(|| now.saturating_add(rt.cfg.discovery_wait_ms));
            let recheck = now.saturating_add(RECHECK_MS).min(deadline);
            match parked {
                Some(p) if now < deadline && p.park(id, recheck, deadline) => {
                    if first {
                        rt.inc(Stat::IdpWaits);
                    }
                    Action::Pause
                }
                _ => {
                    rt.inc(Stat::IdpWaitTimeouts);
                    let _ = send(&flow::unavailable("identity_provider_unavailable"));
                    Action::Pause
                }
            }
        }
        Decision::Exchange { .. } | Decision::Refresh { .. } if calls_full(vm, &rt) => {
            // More of this worker's requests wait for the IdP than it may have calls in flight
            // (a burst of callbacks, forged or not): shed this one before it spends its login
            // state or refresh slot. A refresh goes on with the still-valid token.
            rt.inc(Stat::IdpCallsShed);
            match decision {
                Decision::Refresh {
                    session,
                    fallback: Some(f),
                    ..
                } => {
                    SharedSlots.release(&session.id);
                    rt.count(Outcome::Authenticated);
                    apply(vm, id, f, cookies);
                    Action::Continue
                }
                Decision::Refresh { session, .. } => {
                    SharedSlots.release(&session.id);
                    let _ = send(&flow::busy());
                    Action::Pause
                }
                _ => {
                    let _ = send(&flow::busy());
                    Action::Pause
                }
            }
        }
        Decision::Exchange {
            txn,
            call,
            login_cookie,
        } if !vm.spent.borrow_mut().admit(
            &txn.state,
            now / 1000,
            txn.created_s.saturating_add(crate::session::LOGIN_TTL_S),
        ) =>
        {
            // A second callback for a login whose code was already exchanged (a replay, or
            // forged codes with a genuine login cookie): no second token-endpoint call.
            let _ = (call, login_cookie);
            rt.inc(Stat::CallbacksRejected);
            log::info!("callback refused: this login's code exchange already happened");
            let _ = send(&flow::state_spent());
            Action::Pause
        }
        Decision::Exchange {
            txn,
            call,
            login_cookie,
        } => match post(&rt.cfg, &call) {
            Ok(token) => {
                let login = Login {
                    txn,
                    login_cookie,
                    headers,
                };
                let p = Pending::Exchange { token, login };
                vm.pending.borrow_mut().insert(id, p);
                Action::Pause
            }
            Err(e) => {
                log::warn!("token endpoint call failed to start: {e}");
                rt.failed(Failure::TokenEndpoint);
                let _ = send(&flow::unavailable("identity_provider_unavailable"));
                Action::Pause
            }
        },
        Decision::Refresh {
            session,
            call,
            fallback,
        } => match post(&rt.cfg, &call) {
            Ok(token) => {
                rt.inc(Stat::Refreshes);
                vm.pending.borrow_mut().insert(
                    id,
                    Pending::Refresh {
                        token,
                        session,
                        fallback,
                        headers,
                    },
                );
                Action::Pause
            }
            Err(e) => {
                log::warn!("refresh call failed to start: {e}");
                SharedSlots.release(&session.id);
                rt.inc(Stat::RefreshFailures);
                match fallback {
                    Some(f) => {
                        apply(vm, id, f, cookies);
                        Action::Continue
                    }
                    None => {
                        let _ = send(&flow::unavailable("identity_provider_unavailable"));
                        Action::Pause
                    }
                }
            }
        },
    }
}

struct OAuth2Http {
    id: u32,
    vm: Rc<Vm>,
}

impl Context for OAuth2Http {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        call_response(&self.vm, token, body_size);
    }
}

impl OAuth2Http {
    /// Forgets what the VM keeps for this stream. Idempotent.
    fn finish(&self) {
        if let Ok(mut pending) = self.vm.pending.try_borrow_mut() {
            pending.remove(&self.id);
        }
        if let Ok(mut cookies) = self.vm.response_cookies.try_borrow_mut() {
            cookies.remove(&self.id);
        }
        if let Ok(parked) = self.vm.parked.try_borrow()
            && let Some(p) = parked.as_ref()
        {
            p.remove(self.id);
        }
    }
}

/// The SDK drops a stream's context in `proxy_on_delete`, after the stream is done.
impl Drop for OAuth2Http {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The answer to a call made for request `id` (token exchange, refresh, JWKS refetch): find
/// the request by the call's token, make it the effective context, and finish what it waits for.
fn call_response(vm: &Vm, token: u32, body_size: usize) {
    let Some(rt) = vm.runtime.borrow().clone() else {
        return;
    };
    let found = {
        let mut pending = vm.pending.borrow_mut();
        let id = pending
            .iter()
            .find(|(_, p)| p.token() == token)
            .map(|(id, _)| *id);
        id.and_then(|id| pending.remove(&id).map(|p| (id, p)))
    };
    let Some((id, pending)) = found else { return };
    let status = call_status();
    let body = abi::http_call_response_body(body_size).unwrap_or_default();
    if abi::set_effective_context(id).is_err() {
        return;
    }
    let now = clock::now_ms();
    match pending {
        Pending::Exchange { login, .. } => {
            match flow::parse_token_response(status.unwrap_or(0), &body) {
                Ok(tokens) => {
                    complete_login(vm, &rt, id, login, tokens, Userinfo::NotYet, now, true)
                }
                Err(f) => {
                    if f == Failure::TokenEndpoint {
                        rt.token_refused("authorization_code", status, &body);
                    }
                    login_failed(&rt, f)
                }
            }
        }
        Pending::ExchangeNeedsKeys { login, tokens, .. } => {
            take_jwks(vm, &rt, status, &body);
            complete_login(vm, &rt, id, login, tokens, Userinfo::NotYet, now, false);
        }
        Pending::Userinfo { login, tokens, .. } => {
            let status = userinfo_answered(&rt, status, &body);
            let answer = Userinfo::Answer {
                status,
                body: &body,
            };
            complete_login(vm, &rt, id, login, tokens, answer, now, false);
        }
        Pending::Refresh {
            session,
            fallback,
            headers,
            ..
        } => {
            let tokens = flow::parse_token_response(status.unwrap_or(0), &body);
            if tokens == Err(Failure::TokenEndpoint) {
                rt.token_refused("refresh_token", status, &body);
            }
            let r = Refreshed {
                old: session,
                fallback,
                headers,
                status,
            };
            complete_refresh(vm, &rt, id, r, tokens, Userinfo::NotYet, now, true);
        }
        Pending::RefreshNeedsKeys {
            refreshed, tokens, ..
        } => {
            take_jwks(vm, &rt, status, &body);
            let u = Userinfo::NotYet;
            complete_refresh(vm, &rt, id, refreshed, Ok(tokens), u, now, false);
        }
        Pending::RefreshUserinfo {
            refreshed, tokens, ..
        } => {
            let status = userinfo_answered(&rt, status, &body);
            let answer = Userinfo::Answer {
                status,
                body: &body,
            };
            complete_refresh(vm, &rt, id, refreshed, Ok(tokens), answer, now, false);
        }
    }
}

/// Counts a UserInfo answer (and an unusable one, logged); returns its status (0: none).
fn userinfo_answered(rt: &Runtime, status: Option<u16>, body: &[u8]) -> u16 {
    rt.inc(Stat::UserinfoFetches);
    let status = status.unwrap_or(0);
    if flow::parse_userinfo(status, body).is_none() {
        rt.inc(Stat::UserinfoFailures);
        log::warn!(
            "UserInfo answered status {status} without a JSON object: going on without its claims"
        );
    }
    status
}

impl Pending {
    fn token(&self) -> u32 {
        match self {
            Self::Exchange { token, .. }
            | Self::ExchangeNeedsKeys { token, .. }
            | Self::RefreshNeedsKeys { token, .. }
            | Self::Userinfo { token, .. }
            | Self::RefreshUserinfo { token, .. }
            | Self::Refresh { token, .. } => *token,
        }
    }
}

fn login_failed(rt: &Runtime, f: Failure) {
    rt.failed(f);
    log::warn!("login failed: {} ({})", f.label(), f.describe());
    let _ = send(&f.login_reply());
}

/// A login whose callback came: what finishing it needs besides the tokens.
struct Login {
    txn: LoginTxn,
    /// The login cookie's name.
    login_cookie: String,
    /// The callback request's headers.
    headers: HeaderList,
}

#[allow(clippy::too_many_arguments)]
fn complete_login(
    vm: &Vm,
    rt: &Runtime,
    id: u32,
    login: Login,
    tokens: flow::TokenSet,
    userinfo: Userinfo<'_>,
    now: u64,
    may_refetch: bool,
) {
    let idp = vm.idp.borrow().snapshot();
    let gate = rt.gate(&idp);
    let cookie = meshwright_shared::HeaderSource::header(&login.headers, "cookie").unwrap_or("");
    match gate.finish_login_with(
        &login.txn,
        &login.login_cookie,
        &tokens,
        userinfo,
        cookie,
        now / 1000,
        &mut HostEntropy,
    ) {
        Ok(LoginStep::Done {
            reply,
            missing_claims,
        }) => {
            if !missing_claims.is_empty() {
                rt.inc(Stat::ClaimsMissing);
                log::warn!(
                    "login of a session without the claims {missing_claims:?}: neither the ID token nor UserInfo has them (scopes? the IdP's claim mapping?)"
                );
            }
            rt.inc(Stat::LoginsSucceeded);
            let _ = send(&reply);
        }
        Ok(LoginStep::Userinfo(call)) => match request_idp(&rt.cfg, "GET", &call) {
            Ok(token) => {
                let p = Pending::Userinfo {
                    token,
                    login,
                    tokens,
                };
                vm.pending.borrow_mut().insert(id, p);
            }
            Err(e) => {
                log::warn!("UserInfo call failed to start: {e}");
                rt.inc(Stat::UserinfoFailures);
                complete_login(vm, rt, id, login, tokens, Userinfo::Skip, now, false);
            }
        },
        Err(Failure::UnknownKey) if may_refetch => {
            // The IdP rotated its keys: fetch the JWKS (rate-limited), then verify again.
            match refetch_jwks(vm, rt, &idp, now) {
                Some(token) => {
                    let p = Pending::ExchangeNeedsKeys {
                        token,
                        login,
                        tokens,
                    };
                    vm.pending.borrow_mut().insert(id, p);
                }
                None => login_failed(rt, Failure::UnknownKey),
            }
        }
        Err(f) => login_failed(rt, f),
    }
}

/// Starts an on-demand JWKS fetch (an ID token signed with a key not known yet: the IdP rotated
/// its keys), unless one started less than `jwks_min_refetch_s` ago. Returns the call's token.
fn refetch_jwks(vm: &Vm, rt: &Runtime, idp: &IdpSnapshot, now: u64) -> Option<u32> {
    let allowed = {
        let state = vm.idp.borrow();
        state.last_jwks_refetch_ms == 0
            || now
                >= state
                    .last_jwks_refetch_ms
                    .saturating_add(rt.cfg.jwks_min_refetch_s * 1000)
    };
    if !allowed {
        log::info!(
            "unknown ID token key, and the JWKS was fetched less than jwks_min_refetch_s ago"
        );
        return None;
    }
    let token = get(&rt.cfg, &idp.0.as_ref()?.jwks_uri).ok()?;
    vm.idp.borrow_mut().last_jwks_refetch_ms = now;
    Some(token)
}

/// Takes a JWKS answer (an on-demand fetch) as the IdP's current keys.
fn take_jwks(vm: &Vm, rt: &Runtime, status: Option<u16>, body: &[u8]) {
    let mut idp = vm.idp.borrow_mut();
    rt.inc(Stat::JwksFetches);
    match (status, idp::parse_jwks(body)) {
        (Some(200), Ok(j)) => idp.jwks = Some(Rc::new(j)),
        _ => rt.inc(Stat::JwksFailures),
    }
}

/// A refresh that came back: the session it refreshes and what the request goes on with.
struct Refreshed {
    old: Session,
    /// The request as it was, if the old token is still valid.
    fallback: Option<Forward>,
    headers: HeaderList,
    /// The token endpoint's status.
    status: Option<u16>,
}

#[allow(clippy::too_many_arguments)]
fn complete_refresh(
    vm: &Vm,
    rt: &Runtime,
    id: u32,
    r: Refreshed,
    tokens: Result<flow::TokenSet, Failure>,
    userinfo: Userinfo<'_>,
    now: u64,
    may_refetch: bool,
) {
    let idp = vm.idp.borrow().snapshot();
    let gate = rt.gate(&idp);
    let now_s = now / 1000;
    let step = match tokens {
        Ok(tokens) => match gate.finish_refresh_with(&r.old, &tokens, userinfo, now_s) {
            // A rotated signing key on a successful refresh: the grant is spent (the IdP may
            // have rotated the refresh token too), so fetch the keys and verify these tokens
            // again rather than fail and refresh once more with a consumed token.
            Err(Failure::UnknownKey) if may_refetch => match refetch_jwks(vm, rt, &idp, now) {
                Some(token) => {
                    let p = Pending::RefreshNeedsKeys {
                        token,
                        refreshed: r,
                        tokens,
                    };
                    vm.pending.borrow_mut().insert(id, p);
                    return;
                }
                None => Err(Failure::UnknownKey),
            },
            Ok(RefreshStep::Userinfo(call)) => match request_idp(&rt.cfg, "GET", &call) {
                Ok(token) => {
                    let p = Pending::RefreshUserinfo {
                        token,
                        refreshed: r,
                        tokens,
                    };
                    vm.pending.borrow_mut().insert(id, p);
                    return;
                }
                Err(e) => {
                    log::warn!("UserInfo call failed to start: {e}");
                    rt.inc(Stat::UserinfoFailures);
                    let (t, u) = (Ok(tokens), Userinfo::Skip);
                    return complete_refresh(vm, rt, id, r, t, u, now, may_refetch);
                }
            },
            Ok(RefreshStep::Done(session)) => Ok(session),
            Err(f) => Err(f),
        },
        Err(f) => Err(f),
    };
    let Refreshed {
        old,
        fallback,
        headers,
        status,
    } = r;
    let now_ms = now;
    let after = gate.after_refresh(
        &old,
        step,
        status,
        fallback,
        &headers,
        now_ms,
        &mut HostEntropy,
        &mut SharedSlots,
    );
    if let Some(f) = after.failure {
        rt.inc(Stat::RefreshFailures);
        log::info!("refresh failed: {} ({})", f.label(), f.describe());
    }
    if let (Some((sealed, entry)), Some(cache)) = (after.cache, vm.cache.borrow_mut().as_mut()) {
        let key = cache.key(&sealed);
        cache.insert(key, entry);
    }
    match after.decision {
        Decision::Forward(f, outcome) => {
            rt.count(outcome);
            apply(vm, id, f, CookieHeaders::Several);
            compose::continue_request(id);
        }
        Decision::Reply(r, outcome) => {
            rt.count(outcome);
            let _ = send(&r);
        }
        _ => {
            let _ = send(&flow::unavailable("identity_provider_unavailable"));
        }
    }
}

impl HttpContext for OAuth2Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        process(self.id, &self.vm, None)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let cookies = self.vm.response_cookies.borrow_mut().remove(&self.id);
        for c in cookies.into_iter().flatten() {
            let _ = abi::add_header(MapType::HttpResponseHeaders, "set-cookie", &c);
        }
        Action::Continue
    }
}

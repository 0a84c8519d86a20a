//! The variants, as data. Each is a filter chain, the request it receives ([`Profile`]), and
//! what must be true of every request it passes (checks). A bare Envoy is measured for every
//! profile in use, and a variant's cost is reported over the bare Envoy of its profile.
//!
//! Adding a variant is adding an entry in [`plan`]; the fused bundle's variants come from
//! `wasmplugins/bundle/*.yaml` (one per WasmPlugin there) when `dist/bundle.wasm` exists.

use crate::checks::{HeaderCheck, PROBE_503, Probe, StatCheck};
use crate::fixtures::{self, AB_UID, EMAIL, Fixtures, Profile, SUB};
use crate::native;
use anyhow::{Context, Result, bail};
use meshwright_ab::stats::VariantMetricNames;
use meshwright_fault::stats::{self as fault_stats, RuleMetricNames};
use meshwright_oauth2::stats as oauth2_stats;
use meshwright_retry::config::Side;
use meshwright_retry::stats::DestinationMetricNames;
use meshwright_testbed::envoy::wasmcustom;
use meshwright_testbed::mesh::routes::mesh_retry_policy;
use meshwright_testbed::paths;
use meshwright_testbed::render::{gateway_labels, workload_labels};
use meshwright_testbed::wasmplugin;
use meshwright_testbed::wasmplugin::{
    Overlay, WasmPlugin, WorkloadMode, chain as istio_chain, load_file, merge_patch,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The cluster of the OpenID Provider (the OAuth2 filters' discovery and token endpoint).
pub const IDP_CLUSTER: &str = "idp";

/// Route retries of every variant: Istio's mesh retry conditions, one attempt more than the
/// client-side retry budget's `max_retries` (2), so a probe can see the budget's limit bite.
pub fn route_retry_policy() -> Value {
    mesh_retry_policy(3)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Baseline,
    Floor,
    Filter,
    Set,
    Bundle,
    Reference,
}

impl Group {
    pub fn label(self) -> &'static str {
        match self {
            Self::Baseline => "bare Envoy",
            Self::Floor => "wasm floor",
            Self::Filter => "meshwright filter alone",
            Self::Set => "meshwright, separate WasmPlugins",
            Self::Bundle => "meshwright bundle",
            Self::Reference => "Envoy native reference",
        }
    }
}

/// A workload istiod attaches plugins to.
#[derive(Debug, Clone)]
pub struct Workload {
    pub what: &'static str,
    pub labels: BTreeMap<String, String>,
    pub mode: WorkloadMode,
    pub port: u32,
}

impl Workload {
    pub fn gateway() -> Self {
        Self {
            what: "ingress gateway",
            labels: gateway_labels(),
            mode: WorkloadMode::Client,
            port: 8080,
        }
    }

    pub fn product_inbound() -> Self {
        Self {
            what: "product sidecar, inbound",
            labels: workload_labels("product", "v1"),
            mode: WorkloadMode::Server,
            port: 8081,
        }
    }

    pub fn store_outbound() -> Self {
        Self {
            what: "store sidecar, outbound",
            labels: workload_labels("store", "v1"),
            mode: WorkloadMode::Client,
            port: 8081,
        }
    }
}

/// How a variant's HTTP filter chain is made.
#[derive(Debug, Clone)]
pub enum Chain {
    Bare,
    /// These WasmPlugins, in this order, each rendered as istiod renders it.
    Plugins(Vec<WasmPlugin>),
    /// What istiod attaches to `workload` from `plugins`, in its order.
    Istio {
        plugins: Vec<WasmPlugin>,
        workload: Workload,
    },
    /// Envoy's own filters, and the static secrets they refer to.
    Native {
        filters: Vec<Value>,
        secrets: Vec<Value>,
    },
}

#[derive(Debug, Clone)]
pub struct Variant {
    /// Short stable name (results, targets, `--only`).
    pub id: String,
    pub name: String,
    pub group: Group,
    pub profile: Profile,
    pub chain: Chain,
    pub header_checks: Vec<HeaderCheck>,
    pub stat_checks: Vec<StatCheck>,
    pub probes: Vec<Probe>,
    /// Made up by the benchmark (not shipped as such): if Envoy refuses it, it is skipped with
    /// the reason rather than failing the run.
    pub synthesized: bool,
}

/// A variant that was not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub id: String,
    pub name: String,
    pub reason: String,
}

impl Variant {
    fn new(id: &str, name: &str, group: Group, profile: Profile, chain: Chain) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            group,
            profile,
            chain,
            header_checks: Vec::new(),
            stat_checks: Vec::new(),
            probes: Vec::new(),
            synthesized: false,
        }
    }

    fn expect(mut self, e: Expect) -> Self {
        self.header_checks.extend(e.headers);
        self.stat_checks.extend(e.stats);
        self.probes.extend(e.probes);
        self
    }

    /// The bare Envoy that `profile`'s variants are compared with.
    pub fn bare(profile: Profile) -> Self {
        Self::new(
            &format!("bare-{}", profile.id()),
            &format!("bare Envoy ({})", profile.describe()),
            Group::Baseline,
            profile,
            Chain::Bare,
        )
    }

    /// The HTTP filters (before the router) and their names.
    pub fn http_filters(&self, overlay: &Overlay) -> Result<(Vec<Value>, Vec<String>)> {
        let render = |plugins: &[&WasmPlugin]| -> Result<(Vec<Value>, Vec<String>)> {
            let mut filters = Vec::new();
            let mut names = Vec::new();
            for p in plugins {
                filters.push(p.to_envoy_filter(overlay)?);
                names.push(format!("wasm:{}", p.metadata.name));
            }
            Ok((filters, names))
        };
        match &self.chain {
            Chain::Bare => Ok((Vec::new(), Vec::new())),
            Chain::Plugins(plugins) => render(&plugins.iter().collect::<Vec<_>>()),
            Chain::Istio { plugins, workload } => {
                let chosen = istio_chain(plugins, &workload.labels, workload.mode, workload.port);
                if chosen.is_empty() {
                    bail!("{}: no plugin attaches to the {}", self.id, workload.what);
                }
                render(&chosen)
            }
            Chain::Native { filters, .. } => Ok((
                filters.clone(),
                filters
                    .iter()
                    .map(|f| f["name"].as_str().unwrap_or("?").to_owned())
                    .collect(),
            )),
        }
    }

    pub fn secrets(&self) -> Vec<Value> {
        match &self.chain {
            Chain::Native { secrets, .. } => secrets.clone(),
            _ => Vec::new(),
        }
    }

    /// Every check, in words (for the report).
    pub fn check_descriptions(&self) -> Vec<String> {
        let mut out = vec!["every response 2xx from the upstream".to_owned()];
        out.extend(self.header_checks.iter().map(HeaderCheck::describe));
        out.extend(self.stat_checks.iter().map(StatCheck::describe));
        out.extend(self.probes.iter().map(|p| format!("probe: {}", p.what)));
        out
    }
}

/// Checks, probes and stat conditions for one filter's work.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub headers: Vec<HeaderCheck>,
    pub stats: Vec<StatCheck>,
    pub probes: Vec<Probe>,
}

impl Expect {
    pub fn and(mut self, other: Expect) -> Self {
        self.headers.extend(other.headers);
        self.stats.extend(other.stats);
        self.probes.extend(other.probes);
        self
    }
}

/// The OAuth2 filter authenticated the session: a Bearer token and the claim headers upstream,
/// its cookie stripped, `requests_authenticated` once per request.
pub fn expect_oauth2(config: &Value) -> Expect {
    let header = config
        .pointer("/forward/header")
        .and_then(Value::as_str)
        .unwrap_or("authorization");
    let mut headers = vec![
        HeaderCheck::prefix(header, "Bearer ey"),
        HeaderCheck::lacks("cookie", &format!("{}=", fixtures::SESSION_COOKIE)),
    ];
    if let Some(claims) = config
        .pointer("/forward/claim_headers")
        .and_then(Value::as_object)
    {
        for (h, claim) in claims {
            let value = match claim.as_str() {
                Some("email") => Some(EMAIL),
                Some("sub") => Some(SUB),
                _ => None,
            };
            if let Some(v) = value {
                headers.push(HeaderCheck::equals(h, v));
            }
        }
    }
    Expect {
        headers,
        stats: vec![StatCheck::per_request(
            &[wasmcustom(&oauth2_stats::counter("requests_authenticated"))],
            1,
        )],
        probes: Vec::new(),
    }
}

/// The A/B filter assigned the user identified as `id` to the variant its hash gives, wrote
/// the routing header and baggage member, and counted one assignment per experiment.
pub fn expect_ab(config: &Value, id: &str) -> Result<Expect> {
    let expected = fixtures::ab_expected(config, id)?;
    if expected.is_empty() {
        bail!("the A/B config assigns {id} to nothing");
    }
    let cfg = fixtures::ab_config(config)?;
    let mut headers = Vec::new();
    for (e, (header, variant)) in cfg.experiments.iter().zip(&expected) {
        headers.push(HeaderCheck::equals(header, variant));
        if cfg.baggage {
            headers.push(HeaderCheck::contains(
                "baggage",
                &format!("ab.{}={variant}", e.name),
            ));
        }
    }
    Ok(Expect {
        headers,
        stats: vec![StatCheck::per_request(
            &[wasmcustom(&VariantMetricNames::new("*", "*").assigned)],
            expected.len() as u64,
        )],
        probes: Vec::new(),
    })
}

/// The fault filter is in the chain (a signed header-control abort is answered 418) and none of
/// its faults fired on the measured requests.
pub fn expect_fault(fault_key: &str) -> Expect {
    use meshwright_fault::control;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        // Within the shipped max_signature_ttl_s (3600), and long enough for every variant's
        // start-up (probes run as each variant starts).
        + 1800;
    let sig = control::sign(
        fault_key.as_bytes(),
        expiry,
        [Some("418"), None, None, None, None],
    );
    let any_rule = RuleMetricNames::new("*");
    Expect {
        headers: Vec::new(),
        stats: vec![StatCheck::per_request(
            &[
                wasmcustom(&any_rule.aborts_injected),
                wasmcustom(&any_rule.delays_injected),
                wasmcustom(&any_rule.response_faults_injected),
            ],
            0,
        )],
        probes: vec![Probe {
            what: "a signed x-envoy-fault-abort-request: 418 is answered 418".into(),
            path: None,
            headers: vec![
                (control::ABORT.into(), "418".into()),
                (control::SIGNATURE.into(), sig),
            ],
            status: 418,
            upstream_503_hits: None,
        }],
    }
}

/// The retry budget saw every request on its side; on the client side a failing request is
/// retried only as often as the budget grants (2), not as the route allows (3).
pub fn expect_retry(side: Side) -> Expect {
    let mut e = Expect {
        headers: Vec::new(),
        stats: vec![StatCheck::per_request(
            &[wasmcustom(&DestinationMetricNames::new(side, "*").requests)],
            1,
        )],
        probes: Vec::new(),
    };
    if side == Side::Client {
        e.probes.push(Probe {
            what: "an always-503 upstream is tried 3 times (budget: 2 retries; route: 3)".into(),
            path: Some(format!("{PROBE_503}/retry")),
            headers: Vec::new(),
            status: 503,
            upstream_503_hits: Some(3),
        });
    }
    e
}

/// The checks of a bundle plugin: those of each filter whose section its config has.
fn expect_sections(fx: &Fixtures, config: &Value) -> Result<(Expect, Vec<String>)> {
    let mut e = Expect::default();
    let mut sections = Vec::new();
    let Some(obj) = config.as_object() else {
        return Ok((e, sections));
    };
    for (key, section) in obj {
        let k = key.to_ascii_lowercase();
        let part = if k.contains("oauth2") {
            expect_oauth2(section)
        } else if k == "ab" || k.starts_with("ab_") || k.starts_with("ab-") {
            expect_ab(section, SUB)?
        } else if k.contains("fault") {
            expect_fault(&fx.fault_key)
        } else if k.contains("retry") {
            expect_retry(Side::deserialize(&section["side"]).unwrap_or(Side::Server))
        } else {
            continue;
        };
        sections.push(key.clone());
        e = e.and(part);
    }
    Ok((e, sections))
}

/// Every WasmPlugin of wasmplugins/bundle/*.yaml (the bundle's own kustomization.yaml aside).
fn bundle_plugins() -> Result<Vec<(PathBuf, WasmPlugin)>> {
    let dir = paths::wasmplugins().join("bundle");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let files = wasmplugin::plugin_files(&dir)?;
    let mut out = Vec::new();
    for f in files {
        for p in load_file(&f)? {
            out.push((f.clone(), p));
        }
    }
    Ok(out)
}

/// The shipped WasmPlugins of wasmplugins/*.yaml (the bundle's are in a subdirectory), with the benchmark's OAuth2 settings.
fn separate_plugins(fx: &Fixtures) -> Result<Vec<WasmPlugin>> {
    let files = wasmplugin::plugin_files(&paths::wasmplugins())?;
    let mut out = Vec::new();
    for f in files {
        for p in load_file(&f)? {
            let p = if p.spec.plugin_name.as_deref() == Some("oauth2") {
                let c = fx.patched_oauth2(&p.plugin_config());
                p.with_plugin_config(c)
            } else {
                p
            };
            out.push(p);
        }
    }
    Ok(out)
}

fn find(plugins: &[WasmPlugin], name: &str) -> Result<WasmPlugin> {
    plugins
        .iter()
        .find(|p| p.metadata.name == name)
        .cloned()
        .with_context(|| format!("no WasmPlugin {name} in wasmplugins/"))
}

/// The variants to run, and those skipped with the reason.
pub fn plan(fx: &Fixtures) -> Result<(Vec<Variant>, Vec<Skipped>)> {
    let shipped = separate_plugins(fx)?;
    let oauth2 = find(&shipped, "oauth2")?;
    let ab = find(&shipped, "ab")?;
    let fault = find(&shipped, "fault")?;
    let retry_client = find(&shipped, "retry-budget-client")?;
    let retry_server = find(&shipped, "retry-budget-server")?;
    let oauth2_cfg = oauth2.plugin_config();
    let ab_cfg = ab.plugin_config();
    let lua_like = native::ab_like_lua_config();
    use Group::*;
    use Profile::*;

    let mut v = vec![
        Variant::new(
            "floor",
            "wasm filter with nothing to do (fault module, no rules)",
            Floor,
            Sidecar,
            Chain::Plugins(vec![fault.clone().with_plugin_config(json!({"rules": []}))]),
        )
        .expect(Expect {
            stats: vec![StatCheck::present(&wasmcustom(
                &fault_stats::active_faults(),
            ))],
            ..Expect::default()
        }),
        Variant::new(
            "oauth2",
            "oauth2: valid session cookie → minted JWT + claim header",
            Filter,
            Session,
            Chain::Plugins(vec![oauth2.clone()]),
        )
        .expect(expect_oauth2(&oauth2_cfg)),
        Variant::new(
            "ab",
            "ab: shipped gateway config (JWT sub, signed sticky cookie, baggage)",
            Filter,
            Bearer,
            Chain::Plugins(vec![ab.clone()]),
        )
        .expect(expect_ab(&ab_cfg, SUB)?),
        Variant::new(
            "ab-like-lua",
            "ab: configured as the Lua reference (cookie id, GrowthBook v2)",
            Filter,
            Bearer,
            Chain::Plugins(vec![ab.clone().with_plugin_config(lua_like.clone())]),
        )
        .expect(expect_ab(&lua_like, AB_UID)?),
        Variant::new(
            "fault",
            "fault: shipped rules, none firing",
            Filter,
            Sidecar,
            Chain::Plugins(vec![fault.clone()]),
        )
        .expect(expect_fault(&fx.fault_key)),
        Variant::new(
            "retry-client",
            "retry budget, client side, budget available",
            Filter,
            Sidecar,
            Chain::Plugins(vec![retry_client.clone()]),
        )
        .expect(expect_retry(Side::Client)),
        Variant::new(
            "retry-client-authority",
            "retry budget, client side, a budget per :authority",
            Filter,
            Sidecar,
            Chain::Plugins(vec![retry_client.clone().edit_plugin_config(|c| {
                c["destination"] = json!("authority");
            })]),
        )
        .expect(expect_retry(Side::Client)),
        Variant::new(
            "retry-server",
            "retry budget, server side, first attempts",
            Filter,
            Sidecar,
            Chain::Plugins(vec![retry_server.clone()]),
        )
        .expect(expect_retry(Side::Server)),
        Variant::new(
            "gateway-set",
            "gateway set, separate WasmPlugins (oauth2 + ab, as istiod attaches them)",
            Set,
            Session,
            Chain::Istio {
                plugins: shipped.clone(),
                workload: Workload::gateway(),
            },
        )
        .expect(expect_oauth2(&oauth2_cfg).and(expect_ab(&ab_cfg, SUB)?)),
        Variant::new(
            "sidecar-set",
            "sidecar set, separate WasmPlugins (retry budget + fault, product inbound)",
            Set,
            Sidecar,
            Chain::Istio {
                plugins: shipped.clone(),
                workload: Workload::product_inbound(),
            },
        )
        .expect(expect_retry(Side::Server).and(expect_fault(&fx.fault_key))),
        Variant::new(
            "sidecar-set-shop",
            "sidecar set, separate WasmPlugins, on the shop's store → product call",
            Set,
            Shop,
            Chain::Istio {
                plugins: shipped.clone(),
                workload: Workload::product_inbound(),
            },
        )
        .expect(expect_retry(Side::Server).and(expect_fault(&fx.fault_key))),
        Variant::new(
            "all-four",
            "all four, separate WasmPlugins in one chain (oauth2, ab, retry budget, fault)",
            Set,
            Session,
            Chain::Plugins(vec![
                oauth2.clone(),
                ab.clone(),
                retry_server.clone(),
                fault.clone(),
            ]),
        )
        .expect(
            expect_oauth2(&oauth2_cfg)
                .and(expect_ab(&ab_cfg, SUB)?)
                .and(expect_retry(Side::Server))
                .and(expect_fault(&fx.fault_key)),
        ),
        Variant::new(
            "envoy-oauth2",
            "Envoy oauth2: valid cookies (encrypted tokens), forward_bearer_token",
            Reference,
            EnvoyCookies,
            Chain::Native {
                filters: vec![native::envoy_oauth2_filter(&fx.idp_issuer, IDP_CLUSTER)],
                secrets: native::envoy_oauth2_secrets(),
            },
        )
        .expect(Expect {
            headers: vec![HeaderCheck::equals(
                "authorization",
                &format!("Bearer {}", fx.envoy_oauth2.access_token),
            )],
            stats: vec![StatCheck::per_request(&["http.main.oauth_success"], 1)],
            probes: Vec::new(),
        }),
        Variant::new(
            "envoy-jwt-authn",
            "Envoy jwt_authn: ES256 JWT verified on every request",
            Reference,
            Bearer,
            Chain::Native {
                filters: vec![native::jwt_authn_filter(&fx.jwks, false)],
                secrets: Vec::new(),
            },
        )
        .expect(expect_jwt_authn()),
        Variant::new(
            "envoy-jwt-authn-cache",
            "Envoy jwt_authn with jwt_cache_config (same token every time)",
            Reference,
            Bearer,
            Chain::Native {
                filters: vec![native::jwt_authn_filter(&fx.jwks, true)],
                secrets: Vec::new(),
            },
        )
        .expect(expect_jwt_authn()),
        Variant::new(
            "envoy-lua-ab",
            "Envoy Lua: the A/B hashing and header",
            Reference,
            Bearer,
            Chain::Native {
                filters: vec![native::lua_filter()],
                secrets: Vec::new(),
            },
        )
        .expect(Expect {
            headers: expect_ab(&lua_like, AB_UID)?.headers,
            ..Expect::default()
        }),
        Variant::new(
            "envoy-fault",
            "Envoy fault: abort and delay at 0 %",
            Reference,
            Sidecar,
            Chain::Native {
                filters: vec![native::fault_filter()],
                secrets: Vec::new(),
            },
        )
        .expect(Expect {
            stats: vec![
                StatCheck::present("http.main.fault.aborts_injected"),
                StatCheck::per_request(
                    &[
                        "http.main.fault.aborts_injected",
                        "http.main.fault.delays_injected",
                    ],
                    0,
                ),
            ],
            ..Expect::default()
        }),
    ];
    let mut skipped = Vec::new();
    bundle_variants(fx, &mut v, &mut skipped)?;
    Ok((v, skipped))
}

fn expect_jwt_authn() -> Expect {
    Expect {
        headers: vec![HeaderCheck::prefix("authorization", "Bearer ey")],
        stats: vec![StatCheck::per_request(&["http.main.jwt_authn.allowed"], 1)],
        probes: Vec::new(),
    }
}

/// The fused bundle's variants, measured like the separate sets: what istiod attaches from
/// wasmplugins/bundle/*.yaml to the ingress gateway (`bundle-gateway`) and to the product
/// sidecar, inbound (`bundle-sidecar`); plus all four filters in one plugin (the gateway plugin's
/// config merged with the sidecar plugin's, and their environment) when each set is one plugin.
/// Skipped, with the reason, while dist/bundle.wasm or the WasmPlugins are absent.
fn bundle_variants(
    fx: &Fixtures,
    out: &mut Vec<Variant>,
    skipped: &mut Vec<Skipped>,
) -> Result<()> {
    let sets = [
        (
            "bundle-gateway",
            "gateway set",
            Workload::gateway(),
            Profile::Session,
        ),
        (
            "bundle-sidecar",
            "sidecar set",
            Workload::product_inbound(),
            Profile::Sidecar,
        ),
    ];
    let skip_all = |skipped: &mut Vec<Skipped>, reason: &str| {
        for (id, set, ..) in &sets {
            skipped.push(Skipped {
                id: (*id).into(),
                name: format!("fused bundle, {set}"),
                reason: reason.into(),
            });
        }
        skipped.push(Skipped {
            id: "bundle-all-four".into(),
            name: "fused bundle, all four in one plugin".into(),
            reason: reason.into(),
        });
    };
    let plugins: Vec<WasmPlugin> = bundle_plugins()?
        .into_iter()
        .map(|(_, p)| {
            let c = patch_oauth2_sections(fx, &p.plugin_config());
            p.with_plugin_config(c)
        })
        .collect();
    if plugins.is_empty() {
        skip_all(skipped, "no WasmPlugins in wasmplugins/bundle/");
        return Ok(());
    }
    if !paths::module("bundle").exists() {
        skip_all(
            skipped,
            "dist/bundle.wasm absent (cargo xtask build builds it from filters/bundle)",
        );
        return Ok(());
    }
    let mut single: Vec<Option<WasmPlugin>> = Vec::new();
    for (id, set, workload, profile) in sets {
        let chosen: Vec<WasmPlugin> =
            istio_chain(&plugins, &workload.labels, workload.mode, workload.port)
                .into_iter()
                .cloned()
                .collect();
        if chosen.is_empty() {
            skipped.push(Skipped {
                id: id.into(),
                name: format!("fused bundle, {set}"),
                reason: format!(
                    "no plugin of wasmplugins/bundle/ attaches to the {}",
                    workload.what
                ),
            });
            single.push(None);
            continue;
        }
        let mut expect = Expect::default();
        let mut sections = Vec::new();
        for p in &chosen {
            let (e, s) = expect_sections(fx, &p.plugin_config())?;
            expect = expect.and(e);
            sections.extend(s);
        }
        let names: Vec<&str> = chosen.iter().map(|p| p.metadata.name.as_str()).collect();
        let name = format!(
            "bundle, {set} ({}: {})",
            names.join(", "),
            sections.join(" + ")
        );
        single.push(
            (chosen.len() == 1)
                .then(|| chosen.into_iter().next())
                .flatten(),
        );
        out.push(
            Variant::new(
                id,
                &name,
                Group::Bundle,
                profile,
                Chain::Istio {
                    plugins: plugins.clone(),
                    workload,
                },
            )
            .expect(expect),
        );
    }
    // The sidecar set again on the shop's own call (a bigger header map: the JWT, baggage,
    // trace context).
    if let Some(v) = out.iter().find(|v| v.id == "bundle-sidecar").cloned() {
        out.push(Variant {
            id: "bundle-sidecar-shop".into(),
            name: "bundle, sidecar set, on the shop's store → product call".into(),
            profile: Profile::Shop,
            ..v
        });
    }
    if let [Some(gateway), Some(sidecar)] = single.as_slice() {
        let mut merged = gateway.plugin_config();
        merge_patch(&mut merged, &sidecar.plugin_config());
        let (expect, sections) = expect_sections(fx, &merged)?;
        let mut p = gateway.clone().with_plugin_config(merged);
        // The sidecar plugin's environment too (e.g. the fault filter's signing key).
        let extra: Vec<_> = sidecar
            .spec
            .vm_config
            .iter()
            .flat_map(|c| c.env.iter().cloned())
            .collect();
        let vm = p.spec.vm_config.get_or_insert_with(Default::default);
        for e in extra {
            if !vm.env.iter().any(|x| x.name == e.name) {
                vm.env.push(e);
            }
        }
        let mut v = Variant::new(
            "bundle-all-four",
            &format!(
                "bundle, all four in one plugin ({} config + {} config: {})",
                gateway.metadata.name,
                sidecar.metadata.name,
                sections.join(" + ")
            ),
            Group::Bundle,
            Profile::Session,
            Chain::Plugins(vec![p]),
        )
        .expect(expect);
        v.synthesized = true;
        out.push(v);
    }
    Ok(())
}

/// The benchmark's OAuth2 settings applied to every OAuth2 section of a bundle config.
fn patch_oauth2_sections(fx: &Fixtures, config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(obj) = c.as_object_mut() {
        for (k, section) in obj.iter_mut() {
            if k.to_ascii_lowercase().contains("oauth2") {
                *section = fx.patched_oauth2(section);
            }
        }
    }
    c
}

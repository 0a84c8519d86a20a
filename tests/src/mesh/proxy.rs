//! One Envoy bootstrap per proxy of the mesh, assembled the way istiod assembles a proxy's xDS:
//!
//! - **sidecar inbound** (`inbound`): TLS as PeerAuthentication says, then the HTTP chain
//!   SERVER-mode WasmPlugins of phase AUTHN → `jwt_authn` (RequestAuthentication) → AUTHZ
//!   plugins → RBAC (AuthorizationPolicy) → STATS → unphased plugins → router, to cluster
//!   `inbound|<port>||` (the app);
//! - **sidecar outbound** (`outbound`): the app's calls, CLIENT-mode plugins, one virtual host
//!   per Service port (VirtualService routes bound to `mesh`, else Istio's default route), to
//!   `outbound|<port>|<subset>|<host>` clusters (DestinationRule policy, mTLS with the caller's
//!   identity) whose endpoints are the selected instances' inbound listeners;
//! - **ingress gateway** (`gateway`): the Gateway's servers with the VirtualServices bound to
//!   it, CLIENT-mode gateway plugins, the gateway's `jwt_authn` and RBAC, mTLS upstream with the
//!   gateway's identity.

use super::authn::{self, PeerMode};
use super::authz;
use super::clusters::{self, Endpoint, MutualTls};
use super::model::{self, Named, VirtualService, Workload};
use super::routes;
use super::{GATEWAY_NAMESPACE, Instance, Mesh, Plan};
use crate::forms::Form;
use crate::render::gateway_labels;
use crate::wasmplugin::{self, Phase, WorkloadMode};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn socket(e: &Endpoint) -> Value {
    json!({"socket_address": {"address": e.host, "port_value": e.port}})
}

/// The WasmPlugin filters for a proxy's traffic, grouped by phase in chain order.
fn wasm_by_phase(
    mesh: &Mesh,
    labels: &BTreeMap<String, String>,
    mode: WorkloadMode,
    port: u32,
) -> Result<BTreeMap<Phase, Vec<Value>>> {
    let mut out: BTreeMap<Phase, Vec<Value>> = BTreeMap::new();
    for p in wasmplugin::chain(&mesh.plugins, labels, mode, port) {
        if mode == WorkloadMode::Client && p.spec.matches.iter().any(|m| !m.ports.is_empty()) {
            bail!(
                "WasmPlugin {}: CLIENT-mode match.ports is not translated locally (one outbound listener serves every port)",
                p.metadata.name
            );
        }
        out.entry(p.spec.phase.unwrap_or(Phase::UnspecifiedPhase))
            .or_default()
            .push(p.to_envoy_filter_as(&mesh.overlay, Form::Separate)?);
    }
    Ok(out)
}

/// Istio's HTTP filter order around the wasm phases.
fn http_filters(
    mut wasm: BTreeMap<Phase, Vec<Value>>,
    jwt: Option<Value>,
    rbac: Vec<Value>,
) -> Vec<Value> {
    let mut f = Vec::new();
    f.extend(wasm.remove(&Phase::Authn).unwrap_or_default());
    f.extend(jwt);
    f.extend(wasm.remove(&Phase::Authz).unwrap_or_default());
    f.extend(rbac);
    f.extend(wasm.remove(&Phase::Stats).unwrap_or_default());
    f.extend(wasm.remove(&Phase::UnspecifiedPhase).unwrap_or_default());
    f.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    f
}

/// The mesh's path normalization (istiod values `meshConfig.pathNormalization`), as HCM fields.
fn path_normalization() -> Result<Value> {
    let values = model::helm_values("istiod-values.yaml")?;
    let mode = values["meshConfig"]["pathNormalization"]["normalization"]
        .as_str()
        .unwrap_or("BASE");
    Ok(match mode {
        "NONE" => json!({"normalize_path": false}),
        "BASE" | "DEFAULT" => json!({"normalize_path": true}),
        "MERGE_SLASHES" => json!({"normalize_path": true, "merge_slashes": true}),
        "DECODE_AND_MERGE_SLASHES" => json!({
            "normalize_path": true, "merge_slashes": true,
            "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
        }),
        other => bail!("meshConfig.pathNormalization {other} is not translated locally"),
    })
}

fn hcm(stat_prefix: &str, virtual_hosts: Vec<Value>, filters: Vec<Value>, extra: Value) -> Value {
    let mut c = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {"name": stat_prefix, "virtual_hosts": virtual_hosts, "validate_clusters": false},
        "http_filters": filters,
    });
    if let (Some(obj), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": c})
}

fn bootstrap(
    node_id: &str,
    node_cluster: &str,
    admin: &Endpoint,
    listeners: Vec<Value>,
    clusters: Vec<Value>,
) -> Value {
    let tags: Vec<Value> = meshwright_shared::stats::STATS_TAGS
        .iter()
        .map(|(name, regex)| json!({"tag_name": name, "regex": regex}))
        .collect();
    json!({
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": socket(admin)},
        "stats_config": {"stats_tags": tags},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

/// The VirtualService bound to `gateway` (`mesh` for sidecars) that covers `host`.
fn virtual_service_for<'a>(
    mesh: &'a Mesh,
    host: &str,
    gateway: &str,
) -> Option<&'a Named<VirtualService>> {
    mesh.objects.virtual_services.iter().find(|vs| {
        let bound = if gateway == "mesh" {
            vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh")
        } else {
            vs.spec.gateways.iter().any(|g| g == gateway)
        };
        bound
            && vs
                .spec
                .hosts
                .iter()
                .any(|h| h == host || fqdn_in(h, &vs.namespace) == host)
    })
}

/// A short Service name as Istio resolves it in `namespace`.
fn fqdn_in(host: &str, namespace: &str) -> String {
    if host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{}", model::TRUST_DOMAIN)
    }
}

/// The port a destination host without an explicit port means: its Service's only port.
fn port_of(mesh: &Mesh, host: &str) -> Result<u16> {
    let s = mesh
        .objects
        .service(host)
        .with_context(|| format!("no Service for host {host}"))?;
    match s.ports.as_slice() {
        [p] => Ok(p.port),
        _ => bail!("Service {host} has several ports: the destination must name one"),
    }
}

/// The host names a Service port answers to from a caller in `caller_ns` (Istio's
/// outbound virtual host domains).
fn domains(service: &model::Service, port: u16, caller_ns: &str) -> Vec<String> {
    let mut names = vec![
        service.fqdn(),
        format!("{}.{}.svc", service.name, service.namespace),
        format!("{}.{}", service.name, service.namespace),
    ];
    if service.namespace == caller_ns {
        names.push(service.name.clone());
    }
    let mut out = Vec::new();
    for n in names {
        out.push(format!("{n}:{port}"));
        if service.ports.len() == 1 {
            out.push(n);
        }
    }
    out
}

/// The outbound clusters `routes` send to, as seen by a caller with `client` identity.
fn outbound_clusters(
    mesh: &Mesh,
    plan: &Plan,
    names: &[String],
    client: &super::certs::Identity,
    caller_ns: &str,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for name in names {
        let mut parts = name.split('|');
        let (Some("outbound"), Some(port), Some(subset), Some(host)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("route to a cluster the local mesh does not know: {name}");
        };
        let port: u16 = port.parse().with_context(|| name.clone())?;
        let subset = (!subset.is_empty()).then_some(subset);
        let service = mesh
            .objects
            .service(host)
            .with_context(|| format!("{name}: no Service {host}"))?;
        let sport = service
            .ports
            .iter()
            .find(|p| p.port == port)
            .with_context(|| format!("{name}: Service {host} has no port {port}"))?;
        let rule = destination_rule(mesh, host, caller_ns);
        let policy = clusters::policy_for(rule, subset)?;
        let mut selector = service.selector.clone();
        if let (Some(s), Some(r)) = (subset, rule)
            && let Some(sub) = r.spec.subsets.iter().find(|x| x.name == s)
        {
            selector.extend(sub.labels.clone());
        }
        let mut endpoints = Vec::new();
        let mut server_ids = Vec::new();
        for (inst, w) in plan.selected(mesh, &service.namespace, &selector) {
            if service.target_port(sport, w) != Some(inst.app_port) {
                continue;
            }
            endpoints.push(inst.inbound.clone());
            server_ids.push(w.spiffe_id());
        }
        server_ids.sort();
        server_ids.dedup();
        let mtls = MutualTls {
            client,
            ca_pem: &mesh.ca_pem,
            server_ids,
            sni: format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or("")),
        };
        out.push(
            clusters::cluster(name, &endpoints, &policy, Some(&mtls))
                .with_context(|| format!("cluster {name}"))?,
        );
    }
    Ok(out)
}

/// The cluster istiod builds for a `ServiceEntry` host outside the mesh, as a proxy in
/// `caller_ns` sees it: `outbound|<port>||<host>`, endpoints by the entry's resolution (`DNS`:
/// the host name itself, resolved by Envoy), the policy of the DestinationRule visible there —
/// for `tls.mode: SIMPLE` TLS origination, no mesh mTLS (the host has no sidecar). Refuses an
/// entry the caller cannot see (`exportTo`) or a resolution it does not translate.
pub fn external_cluster(mesh: &Mesh, caller_ns: &str, host: &str, port: u16) -> Result<Value> {
    let visible = |e: &&Named<model::ServiceEntry>| {
        e.spec.export_to.is_empty()
            || e.spec.export_to.iter().any(|x| x == "*" || x == caller_ns)
            || (e.namespace == caller_ns && e.spec.export_to.iter().any(|x| x == "."))
    };
    let entry = mesh
        .objects
        .service_entries
        .iter()
        .filter(visible)
        .find(|e| e.spec.hosts.iter().any(|h| h == host))
        .with_context(|| format!("no ServiceEntry for {host} visible in namespace {caller_ns}"))?;
    if !entry.spec.ports.iter().any(|p| p.number == port) {
        bail!("ServiceEntry {} has no port {port}", entry.id());
    }
    let endpoints = match entry.spec.resolution.as_str() {
        "DNS" => vec![Endpoint::new(host, port)],
        other => bail!(
            "ServiceEntry {}: resolution {other} is not translated locally",
            entry.id()
        ),
    };
    let name = format!("outbound|{port}||{host}");
    let policy = clusters::policy_for(destination_rule(mesh, host, caller_ns), None)?;
    clusters::cluster(&name, &endpoints, &policy, None).with_context(|| format!("cluster {name}"))
}

/// The DestinationRule for `host` visible to a caller in `caller_ns`: the caller's namespace
/// first, then the host's, then the root namespace (Istio's lookup order).
fn destination_rule<'a>(
    mesh: &'a Mesh,
    host: &str,
    caller_ns: &str,
) -> Option<&'a Named<model::DestinationRule>> {
    let visible = |r: &&Named<model::DestinationRule>| {
        fqdn_in(&r.spec.host, &r.namespace) == host
            && (r.spec.export_to.is_empty()
                || r.spec.export_to.iter().any(|e| e == "*")
                || (r.namespace == caller_ns && r.spec.export_to.iter().any(|e| e == "."))
                || r.spec.export_to.iter().any(|e| e == caller_ns))
    };
    let rules: Vec<_> = mesh
        .objects
        .destination_rules
        .iter()
        .filter(visible)
        .collect();
    let host_ns = host.split('.').nth(1).unwrap_or_default();
    [caller_ns, host_ns, GATEWAY_NAMESPACE]
        .iter()
        .find_map(|ns| rules.iter().find(|r| r.namespace == *ns).copied())
        .or_else(|| rules.first().copied())
}

/// The JWKS istiod would inline for a jwt rule: its `jwks`, or — for the JWKS the ingress
/// gateway's OAuth2 filter serves (its minting key's public part at `mint.jwks_path`) — the
/// document that filter serves, computed by the filter's own code from the config and key the
/// gateway runs with.
fn jwks_for(mesh: &Mesh, rule: &model::JwtRule) -> Result<String> {
    if let Some(j) = &rule.jwks {
        return Ok(j.clone());
    }
    let uri = rule
        .jwks_uri
        .as_deref()
        .with_context(|| format!("jwt rule for {}: neither jwks nor jwksUri", rule.issuer))?;
    let path = url::Url::parse(uri)
        .with_context(|| format!("jwksUri {uri}"))?
        .path()
        .to_owned();
    let cfg = gateway_oauth2_config(mesh)?;
    let env = |k: &str| mesh.overlay.host_env.get(k).cloned();
    let oauth2 = meshwright_oauth2::OAuth2Config::from_json(cfg.to_string().as_bytes(), &env)
        .map_err(|e| anyhow::anyhow!("the gateway's OAuth2 config: {e}"))?;
    let minter = oauth2
        .minter
        .as_ref()
        .context("jwksUri names the gateway's JWKS, but its OAuth2 filter mints no tokens")?;
    if minter.issuer != rule.issuer || minter.jwks_path.as_deref() != Some(path.as_str()) {
        bail!(
            "jwksUri {uri} (issuer {}) is not the gateway's minted-token JWKS ({} at {:?}): the local mesh cannot fetch it",
            rule.issuer,
            minter.issuer,
            minter.jwks_path
        );
    }
    minter
        .jwks_json
        .clone()
        .context("the gateway's minting key has no public JWKS")
}

/// The OAuth2 filter's config at the gateway, as Envoy gets it (overlay applied): the `oauth2`
/// plugin's, or the `oauth2` section of the bundle's.
pub fn gateway_oauth2_config(mesh: &Mesh) -> Result<Value> {
    for p in wasmplugin::chain(&mesh.plugins, &gateway_labels(), WorkloadMode::Client, 0) {
        let f = p.to_envoy_filter_as(&mesh.overlay, Form::Separate)?;
        let config = &f["typed_config"]["config"];
        let Some(text) = config["configuration"]["value"].as_str() else {
            continue;
        };
        let v: Value = serde_json::from_str(text)?;
        match config["root_id"].as_str() {
            Some("oauth2") => return Ok(v),
            Some(crate::forms::BUNDLE_PLUGIN_NAME) if v.get("oauth2").is_some() => {
                return Ok(v["oauth2"].clone());
            }
            _ => {}
        }
    }
    bail!("no OAuth2 filter at the ingress gateway")
}

fn jwt_filter(
    mesh: &Mesh,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Option<Value>> {
    let rules: Vec<&model::JwtRule> = mesh
        .objects
        .request_authentications
        .iter()
        .filter(|r| {
            model::policy_applies(&r.namespace, r.spec.selector.as_ref(), namespace, labels)
        })
        .flat_map(|r| &r.spec.jwt_rules)
        .collect();
    authn::jwt_authn(&rules, &|r| jwks_for(mesh, r))
}

fn rbac(mesh: &Mesh, namespace: &str, labels: &BTreeMap<String, String>) -> Result<Vec<Value>> {
    let policies: Vec<_> = mesh
        .objects
        .authorization_policies
        .iter()
        .filter(|p| {
            model::policy_applies(&p.namespace, p.spec.selector.as_ref(), namespace, labels)
        })
        .collect();
    authz::rbac_filters(&policies)
}

/// Istio's default text format of the built-in `envoy` access log provider.
const ISTIO_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/// Telemetry `accessLogging` → the HTTP connection manager's access logs: the narrowest
/// Telemetry that applies (workload, else namespace, else root), the `envoy` provider as a file
/// log to /dev/stdout in Istio's format, its `filter.expression` as a CEL filter.
fn access_logs(
    mesh: &Mesh,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<Value>> {
    let root = crate::wasmplugin::ROOT_NAMESPACE;
    let best = mesh
        .objects
        .telemetries
        .iter()
        .filter(|t| {
            model::policy_applies(&t.namespace, t.spec.selector.as_ref(), namespace, labels)
        })
        .min_by_key(|t| {
            if t.spec.selector.is_some() {
                0
            } else if t.namespace == namespace {
                1
            } else if t.namespace == root {
                2
            } else {
                3
            }
        });
    let mut out = Vec::new();
    for logging in best.iter().flat_map(|t| &t.spec.access_logging) {
        for provider in &logging.providers {
            if provider.name != "envoy" {
                bail!(
                    "Telemetry access log provider {} is not translated locally",
                    provider.name
                );
            }
            let mut log = json!({
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": "/dev/stdout",
                    "log_format": {"text_format_source": {"inline_string": ISTIO_LOG_FORMAT}},
                },
            });
            if let Some(f) = &logging.filter {
                log["filter"] = json!({"extension_filter": {
                    "name": "envoy.access_loggers.extension_filters.cel",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                        "expression": f.expression,
                    },
                }});
            }
            out.push(log);
        }
    }
    Ok(out)
}

/// The sidecar of one instance.
pub fn sidecar(mesh: &Mesh, plan: &Plan, inst: &Instance) -> Result<Value> {
    let w: &Workload = mesh.workload(&inst.workload)?;
    let ns = w.namespace.as_str();
    let id = mesh.identity(&w.spiffe_id())?;
    let port = inst.app_port;

    // Inbound: the app behind mTLS, authentication and authorization.
    let inbound_cluster = format!("inbound|{port}||");
    let inbound_vhost = json!({
        "name": format!("inbound|http|{port}"),
        "domains": ["*"],
        "routes": [{
            "name": "default",
            "match": {"prefix": "/"},
            "route": {"cluster": inbound_cluster, "timeout": "0s"},
        }],
    });
    let filters = http_filters(
        wasm_by_phase(mesh, &w.labels, WorkloadMode::Server, u32::from(port))?,
        jwt_filter(mesh, ns, &w.labels)?,
        rbac(mesh, ns, &w.labels)?,
    );
    let logs = access_logs(mesh, ns, &w.labels)?;
    let mut extra = path_normalization()?;
    extra["access_log"] = json!(logs);
    extra["forward_client_cert_details"] = json!("APPEND_FORWARD");
    extra["set_current_client_cert_details"] = json!({"subject": true, "uri": true, "dns": true});
    let inbound_hcm = hcm(
        &format!("inbound_0.0.0.0_{port}"),
        vec![inbound_vhost],
        filters,
        extra,
    );
    let mode = authn::peer_mode(&mesh.objects.peer_authentications, ns, &w.labels)?;
    let tls = authn::downstream_mtls(id, &mesh.ca_pem);
    let (chains, listener_filters) = match mode {
        PeerMode::Strict => (
            vec![json!({"filters": [inbound_hcm], "transport_socket": tls})],
            json!([]),
        ),
        PeerMode::Disable => (vec![json!({"filters": [inbound_hcm]})], json!([])),
        PeerMode::Permissive => (
            vec![
                json!({"filter_chain_match": {"transport_protocol": "tls"}, "filters": [inbound_hcm.clone()], "transport_socket": tls}),
                json!({"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": [inbound_hcm]}),
            ],
            json!([{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]),
        ),
    };
    let inbound = json!({
        "name": "inbound",
        "address": socket(&inst.inbound_bind),
        "listener_filters": listener_filters,
        "filter_chains": chains,
    });

    // Outbound: the app's calls to every Service of the mesh.
    let mut vhosts = Vec::new();
    let mut used = Vec::new();
    for s in &mesh.objects.services {
        for p in &s.ports {
            let host = s.fqdn();
            let routes = match virtual_service_for(mesh, &host, "mesh") {
                Some(vs) => routes::translate(vs, &|h| port_of(mesh, h))?,
                None => vec![routes::default_route(&host, p.port)],
            };
            used.extend(routes::clusters_of(&routes));
            vhosts.push(json!({
                "name": format!("{host}:{}", p.port),
                "domains": domains(s, p.port, ns),
                "routes": routes,
                "include_request_attempt_count": true,
            }));
        }
    }
    used.sort();
    used.dedup();
    let outbound_filters = http_filters(
        wasm_by_phase(mesh, &w.labels, WorkloadMode::Client, 0)?,
        None,
        Vec::new(),
    );
    let outbound = json!({
        "name": "outbound",
        "address": socket(&inst.outbound_bind),
        "filter_chains": [{"filters": [hcm("outbound", vhosts, outbound_filters, json!({"access_log": logs}))]}],
    });

    let mut all_clusters = vec![clusters::cluster(
        &inbound_cluster,
        std::slice::from_ref(&inst.app),
        &model::TrafficPolicy::default(),
        None,
    )?];
    all_clusters.extend(outbound_clusters(mesh, plan, &used, id, ns)?);
    Ok(bootstrap(
        &format!(
            "sidecar~{}~{}.{ns}~{ns}.svc.{}",
            inst.app.host,
            inst.name,
            model::TRUST_DOMAIN
        ),
        &format!(
            "{}.{ns}",
            w.labels.get("app").map_or(w.name.as_str(), String::as_str)
        ),
        &inst.admin_bind,
        vec![inbound, outbound],
        all_clusters,
    ))
}

/// The ingress gateway.
pub fn gateway(mesh: &Mesh, plan: &Plan) -> Result<Value> {
    let labels = gateway_labels();
    let ns = GATEWAY_NAMESPACE;
    let mut vhosts = Vec::new();
    let mut used = Vec::new();
    for gw in mesh.objects.gateways.iter().filter(|g| {
        g.spec
            .selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }) {
        let bound_name = format!("{}/{}", gw.namespace, gw.name);
        for server in &gw.spec.servers {
            let redirect_only = server.tls.as_ref().is_some_and(|t| t.https_redirect);
            match server.port.protocol.as_str() {
                "HTTP" if redirect_only => continue,
                "HTTP" | "HTTPS" => {}
                other => bail!(
                    "Gateway {}: protocol {other} is not translated locally",
                    gw.id()
                ),
            }
            for h in &server.hosts {
                let (vs_ns, host) = h.split_once('/').unwrap_or(("*", h.as_str()));
                for vs in mesh.objects.virtual_services.iter().filter(|vs| {
                    vs.spec.gateways.iter().any(|g| {
                        *g == bound_name || (vs.namespace == gw.namespace && *g == gw.name)
                    }) && (vs_ns == "*"
                        || vs_ns == vs.namespace
                        || (vs_ns == "." && vs.namespace == gw.namespace))
                        && vs.spec.hosts.iter().any(|vh| vh == host)
                }) {
                    if vhosts.iter().any(|v: &Value| v["name"] == json!(host)) {
                        continue;
                    }
                    let routes = routes::translate(vs, &|h| port_of(mesh, h))?;
                    used.extend(routes::clusters_of(&routes));
                    // Istio's domains for a gateway host, or what the local settings serve it as
                    // (the public host: any Host, e.g. localhost:8080).
                    let domains = match mesh.local.gateway.hosts.get(host) {
                        Some(d) => json!(d),
                        None => json!([host, format!("{host}:*")]),
                    };
                    vhosts.push(json!({
                        "name": host,
                        "domains": domains,
                        "routes": routes,
                        "include_request_attempt_count": true,
                    }));
                }
            }
        }
    }
    if vhosts.is_empty() {
        bail!("no VirtualService is bound to a Gateway of the ingress gateway");
    }
    let wildcards = mesh
        .local
        .gateway
        .hosts
        .values()
        .filter(|d| d.iter().any(|h| h == "*"))
        .count();
    if wildcards > 1 {
        bail!(
            "several gateway hosts cannot all be served for any Host locally (k8s/local/mesh.yaml gateway.hosts)"
        );
    }
    used.sort();
    used.dedup();
    let filters = http_filters(
        wasm_by_phase(mesh, &labels, WorkloadMode::Client, 0)?,
        jwt_filter(mesh, ns, &labels)?,
        rbac(mesh, ns, &labels)?,
    );
    let mut extra = path_normalization()?;
    extra["use_remote_address"] = json!(true);
    extra["access_log"] = json!(access_logs(mesh, ns, &labels)?);
    let listener = json!({
        "name": "gateway",
        "address": socket(&plan.gateway_bind),
        "filter_chains": [{"filters": [hcm("gateway", vhosts, filters, extra)]}],
    });
    let id = mesh.identity(&mesh.gateway_spiffe_id())?;
    let mut all_clusters = outbound_clusters(mesh, plan, &used, id, ns)?;
    all_clusters.push(clusters::cluster(
        &mesh.local.idp_cluster,
        std::slice::from_ref(&plan.idp),
        &model::TrafficPolicy::default(),
        None,
    )?);
    Ok(bootstrap(
        &format!(
            "router~{}~istio-ingressgateway.{ns}~{ns}.svc.{}",
            plan.gateway_bind.host,
            model::TRUST_DOMAIN
        ),
        &format!("istio-ingressgateway.{ns}"),
        &plan.gateway_admin,
        vec![listener],
        all_clusters,
    ))
}

/// The environment a proxy's Envoy needs: the development values (wasm overlay `host_env`) of
/// exactly the `valueFrom: HOST` variables its WasmPlugins read — as the injection templates give
/// the gateway its secrets and the sidecars only theirs.
pub fn host_env(mesh: &Mesh, config: &Value) -> BTreeMap<String, String> {
    fn keys(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "host_env_keys" {
                        out.extend(
                            x.as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|n| n.as_str().map(str::to_owned)),
                        );
                    } else {
                        keys(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    keys(config, &mut names);
    names
        .into_iter()
        .filter_map(|n| Some((n.clone(), mesh.overlay.host_env.get(&n)?.clone())))
        .collect()
}

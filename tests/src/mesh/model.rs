//! The mesh as `k8s/` declares it, as data: the objects of the kustomization (its `resources`,
//! walked the way kustomize does), with the Istio kinds the local mesh translates parsed into
//! typed specs that **refuse any field the translation does not handle** (`deny_unknown_fields`),
//! so a manifest change the local mesh would silently ignore fails loudly instead.
//!
//! Kubernetes objects are read for what the mesh needs (Deployments/StatefulSets: pod labels,
//! service account, container image/args/env/ports; Services: selectors and ports); their other
//! fields (security contexts, probes, resources) do not change how traffic flows.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every object of a kustomization directory, in kustomize's order (resources depth first).
/// Only `resources` is followed; `labels` and `patches` do not affect traffic.
pub fn load_kustomization(dir: &Path) -> Result<Vec<Value>> {
    let file = dir.join("kustomization.yaml");
    let k: Value = yaml_serde::from_str(
        &std::fs::read_to_string(&file).with_context(|| file.display().to_string())?,
    )
    .with_context(|| file.display().to_string())?;
    let mut out = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let r = r
            .as_str()
            .with_context(|| format!("{}: resources", file.display()))?;
        let path = dir.join(r);
        if path.is_dir() {
            out.extend(load_kustomization(&path)?);
        } else {
            out.extend(crate::k8s::load(&path)?);
        }
    }
    Ok(out)
}

/// Objects of the mesh, by kind.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub virtual_services: Vec<Named<VirtualService>>,
    pub destination_rules: Vec<Named<DestinationRule>>,
    pub gateways: Vec<Named<Gateway>>,
    pub service_entries: Vec<Named<ServiceEntry>>,
    pub request_authentications: Vec<Named<RequestAuthentication>>,
    pub peer_authentications: Vec<Named<PeerAuthentication>>,
    pub authorization_policies: Vec<Named<AuthorizationPolicy>>,
    pub telemetries: Vec<Named<Telemetry>>,
}

/// An object's name and namespace with its spec.
#[derive(Debug, Clone)]
pub struct Named<T> {
    pub name: String,
    pub namespace: String,
    pub spec: T,
}

fn named<T: serde::de::DeserializeOwned>(
    name: &str,
    namespace: &str,
    spec: &Value,
    id: &str,
) -> Result<Named<T>> {
    Ok(Named {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        spec: serde_json::from_value(spec.clone())
            .with_context(|| format!("{id}: a field the local mesh does not translate"))?,
    })
}

impl<T> Named<T> {
    /// `namespace/name`, as errors and policy names say it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Kinds that are part of the deployment but not of how the local mesh routes traffic.
const NOT_TRAFFIC: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Certificate",
    "ClusterIssuer",
    "Issuer",
];

impl Objects {
    /// `k8s/` of the checkout.
    pub fn load() -> Result<Self> {
        Self::from_docs(&load_kustomization(&crate::k8s::dir())?)
    }

    pub fn from_docs(docs: &[Value]) -> Result<Self> {
        let mut o = Self::default();
        for d in docs {
            let kind = d["kind"].as_str().unwrap_or_default();
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let namespace = d["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            let id = format!("{kind} {namespace}/{name}");
            let spec = &d["spec"];
            match kind {
                "Deployment" | "StatefulSet" => o.workloads.push(Workload::from_doc(d)?),
                "Service" => o.services.push(Service::from_doc(d)?),
                "VirtualService" => o
                    .virtual_services
                    .push(named(&name, &namespace, spec, &id)?),
                "DestinationRule" => o
                    .destination_rules
                    .push(named(&name, &namespace, spec, &id)?),
                "Gateway" => o.gateways.push(named(&name, &namespace, spec, &id)?),
                "ServiceEntry" => o.service_entries.push(named(&name, &namespace, spec, &id)?),
                "RequestAuthentication" => o
                    .request_authentications
                    .push(named(&name, &namespace, spec, &id)?),
                "PeerAuthentication" => o
                    .peer_authentications
                    .push(named(&name, &namespace, spec, &id)?),
                "Telemetry" => o.telemetries.push(named(&name, &namespace, spec, &id)?),
                "AuthorizationPolicy" => o
                    .authorization_policies
                    .push(named(&name, &namespace, spec, &id)?),
                k if NOT_TRAFFIC.contains(&k) => {}
                other => bail!("{id}: kind {other} is not translated by the local mesh"),
            }
        }
        Ok(o)
    }

    /// The Service whose FQDN (or short name in `namespace`) is `host`.
    pub fn service(&self, host: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.fqdn() == host)
    }
}

/// A Deployment or StatefulSet: the pods it runs.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub replicas: u32,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub image: String,
    pub args: Vec<String>,
    /// Container environment (literal values only).
    pub env: BTreeMap<String, String>,
    /// Container ports by name.
    pub ports: BTreeMap<String, u16>,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

impl Workload {
    fn from_doc(d: &Value) -> Result<Self> {
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let pod = &d["spec"]["template"];
        let containers = pod["spec"]["containers"]
            .as_array()
            .with_context(|| format!("{name}: no containers"))?;
        let app = containers
            .first()
            .with_context(|| format!("{name}: no containers"))?;
        let mut env = BTreeMap::new();
        for e in app["env"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        let mut ports = BTreeMap::new();
        for p in app["ports"].as_array().into_iter().flatten() {
            let port = p["containerPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .with_context(|| format!("{name}: containerPort"))?;
            ports.insert(p["name"].as_str().unwrap_or("").to_owned(), port);
        }
        Ok(Self {
            kind: d["kind"].as_str().unwrap_or_default().to_owned(),
            namespace: d["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            replicas: d["spec"]["replicas"]
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(1),
            labels: string_map(&pod["metadata"]["labels"]),
            service_account: pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            image: app["image"].as_str().unwrap_or_default().to_owned(),
            args: app["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            env,
            ports,
            name,
        })
    }

    /// The pods' SPIFFE identity, as Istio issues it.
    pub fn spiffe_id(&self) -> String {
        spiffe_id(&self.namespace, &self.service_account)
    }

    /// Whether a label selector picks this workload's pods.
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// `spiffe://cluster.local/ns/<ns>/sa/<sa>`: Istio's workload identity in the default trust
/// domain.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

/// Istio's default trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// A Service's port.
#[derive(Debug, Clone)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// A container port's name or number.
    pub target: Value,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    fn from_doc(d: &Value) -> Result<Self> {
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut ports = Vec::new();
        for p in d["spec"]["ports"].as_array().into_iter().flatten() {
            let protocol = p["appProtocol"].as_str().unwrap_or("http");
            if protocol != "http" {
                bail!("Service {name}: appProtocol {protocol} is not translated locally");
            }
            ports.push(ServicePort {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                port: p["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .with_context(|| format!("Service {name}: port"))?,
                target: p["targetPort"].clone(),
            });
        }
        Ok(Self {
            namespace: d["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            selector: string_map(&d["spec"]["selector"]),
            ports,
            name,
        })
    }

    /// `<name>.<namespace>.svc.cluster.local`
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.{TRUST_DOMAIN}", self.name, self.namespace)
    }

    /// The container port a service port sends to, for a workload.
    pub fn target_port(&self, port: &ServicePort, w: &Workload) -> Option<u16> {
        match &port.target {
            Value::String(name) => w.ports.get(name).copied(),
            Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            _ => Some(port.port),
        }
    }
}

// ---- Istio specs: only the fields the local mesh translates ----------------------------------

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatch>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retries: Option<Retries>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default)]
    pub uri: Option<StringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default)]
    pub method: Option<StringMatch>,
}

/// Istio's `StringMatch`: exactly one of the three.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    pub host: String,
    #[serde(default)]
    pub subset: Option<String>,
    #[serde(default)]
    pub port: Option<PortSelector>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    pub number: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    pub attempts: u32,
    #[serde(default)]
    pub retry_on: Option<String>,
    #[serde(default)]
    pub per_try_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<DirectBody>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectBody {
    pub string: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    pub host: String,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default)]
    pub tls: Option<ClientTls>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    pub mode: String,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// A PEM file of the roots to trust (`SIMPLE`); unset, the system's bundle.
    #[serde(default)]
    pub ca_certificates: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    #[serde(default)]
    pub tcp: Option<TcpPool>,
    #[serde(default)]
    pub http: Option<HttpPool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpPool {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPool {
    #[serde(default)]
    pub http1_max_pending_requests: Option<u32>,
    #[serde(default)]
    pub http2_max_requests: Option<u32>,
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    #[serde(default)]
    pub min_health_percent: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    pub percent: f64,
    #[serde(default)]
    pub min_retry_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    pub simple: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<GatewayServer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayServer {
    pub hosts: Vec<String>,
    pub port: GatewayPort,
    #[serde(default)]
    pub tls: Option<ServerTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    pub number: u16,
    pub name: String,
    pub protocol: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTls {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub credential_name: Option<String>,
    #[serde(default)]
    pub min_protocol_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub export_to: Vec<String>,
    pub location: String,
    pub resolution: String,
    pub ports: Vec<GatewayPort>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    #[serde(default)]
    pub selector: Option<Selector>,
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    #[serde(default)]
    pub selector: Option<Selector>,
    pub mtls: Mtls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    pub mode: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<To>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    pub source: Source,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    pub operation: Operation,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
}

/// Whether a namespace-scoped Istio policy applies to a workload: in the workload's namespace
/// or in the root namespace (`istio-system`), selected by labels when it has a selector.
pub fn policy_applies(
    policy_namespace: &str,
    selector: Option<&Selector>,
    workload_namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let ns = policy_namespace == workload_namespace
        || policy_namespace == crate::wasmplugin::ROOT_NAMESPACE;
    ns && selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Helm values of Istio's charts in `k8s/istio/` (not rendered by kustomize).
pub fn helm_values(file: &str) -> Result<Value> {
    let path: PathBuf = crate::k8s::dir().join("istio").join(file);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    yaml_serde::from_str(&text).with_context(|| path.display().to_string())
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default)]
    pub selector: Option<Selector>,
    /// Istio's standard metrics: Envoy's own stats locally (admin `/stats/prometheus`).
    #[serde(default)]
    pub metrics: Vec<MetricsSpec>,
    #[serde(default)]
    pub access_logging: Vec<AccessLogging>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    pub providers: Vec<ProviderRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    pub providers: Vec<ProviderRef>,
    #[serde(default)]
    pub filter: Option<LogFilter>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFilter {
    pub expression: String,
}

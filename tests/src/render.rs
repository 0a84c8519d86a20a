//! Envoy bootstrap configs for the local proxies: listeners whose HTTP filter chain is made from
//! WasmPlugins (via [`crate::wasmplugin`]), routes, and clusters pointing at local upstreams.
//!
//! Everything binds to 127.0.0.1; listener and admin ports are 0 (ephemeral) unless given, and
//! the running [`crate::envoy::Envoy`] reports what was bound.

use crate::forms::Form;
use crate::wasmplugin::{Overlay, WasmPlugin, WorkloadMode, chain};
use anyhow::Result;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Labels of Istio's ingress gateway pods (what gateway WasmPlugins select).
pub fn gateway_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("istio".to_owned(), "ingressgateway".to_owned()),
        ("app".to_owned(), "istio-ingressgateway".to_owned()),
    ])
}

/// Labels of an ecommerce workload's pods.
pub fn workload_labels(app: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), app.to_owned()),
        ("version".to_owned(), version.to_owned()),
    ])
}

/// The proxies of the ecommerce mesh (k8s/), as (what, pod labels, traffic mode, port): the
/// ingress gateway, and every app version's inbound and outbound side.
pub fn mesh_proxies() -> Vec<(String, BTreeMap<String, String>, WorkloadMode, u32)> {
    let mut w = vec![(
        "ingress gateway".to_owned(),
        gateway_labels(),
        WorkloadMode::Client,
        8080,
    )];
    for (app, port) in [
        ("store", 8080),
        ("product", 8081),
        ("invoice", 8082),
        ("notification", 8083),
    ] {
        for version in ["v1", "v2"] {
            w.push((
                format!("{app} {version} inbound"),
                workload_labels(app, version),
                WorkloadMode::Server,
                port,
            ));
            w.push((
                format!("{app} {version} outbound"),
                workload_labels(app, version),
                WorkloadMode::Client,
                80,
            ));
        }
    }
    w
}

#[derive(Debug, Clone)]
pub enum Action {
    Cluster(String),
    Direct { status: u16, body: String },
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    /// Header conditions (Envoy `HeaderMatcher` JSON).
    pub headers: Vec<Value>,
    pub action: Action,
    /// Envoy `RetryPolicy` JSON.
    pub retry_policy: Option<Value>,
    pub timeout_ms: Option<u64>,
}

impl Route {
    pub fn to_cluster(prefix: &str, cluster: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            headers: Vec::new(),
            action: Action::Cluster(cluster.to_owned()),
            retry_policy: None,
            timeout_ms: None,
        }
    }

    pub fn direct(prefix: &str, status: u16, body: &str) -> Self {
        Self {
            action: Action::Direct {
                status,
                body: body.to_owned(),
            },
            ..Self::to_cluster(prefix, "")
        }
    }

    /// Only when `header` equals `value` exactly.
    pub fn when_header(mut self, header: &str, value: &str) -> Self {
        self.headers
            .push(json!({"name": header, "string_match": {"exact": value}}));
        self
    }

    pub fn retries(mut self, policy: Value) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    fn to_json(&self) -> Value {
        let mut m = json!({"prefix": self.prefix});
        if !self.headers.is_empty() {
            m["headers"] = json!(self.headers);
        }
        let mut r = json!({"match": m});
        match &self.action {
            Action::Cluster(c) => {
                let mut a = json!({"cluster": c});
                if let Some(p) = &self.retry_policy {
                    a["retry_policy"] = p.clone();
                }
                if let Some(t) = self.timeout_ms {
                    a["timeout"] = json!(format!("{}s", t as f64 / 1000.0));
                }
                r["route"] = a;
            }
            Action::Direct { status, body } => {
                r["direct_response"] = json!({"status": status, "body": {"inline_string": body}});
            }
        }
        r
    }
}

/// One HTTP listener.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    /// Filters before the router, in order.
    pub http_filters: Vec<Value>,
    pub routes: Vec<Route>,
    /// Istio turns this on: upstream requests carry `x-envoy-attempt-count`.
    pub include_request_attempt_count: bool,
    /// The filter chain's downstream transport socket (e.g. the mesh's mTLS), if any.
    pub transport_socket: Option<Value>,
}

impl Listener {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            port: 0,
            http_filters: Vec::new(),
            routes: Vec::new(),
            include_request_attempt_count: true,
            transport_socket: None,
        }
    }

    /// Serves through `socket` (a `DownstreamTlsContext` transport socket).
    pub fn transport_socket(mut self, socket: Value) -> Self {
        self.transport_socket = Some(socket);
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    pub fn filter(mut self, filter: Value) -> Self {
        self.http_filters.push(filter);
        self
    }

    /// Adds the WasmPlugins that istiod would attach for a workload with `labels`, traffic
    /// `mode`, on `port`, in istiod's order.
    pub fn wasm_plugins(
        self,
        plugins: &[WasmPlugin],
        overlay: &Overlay,
        labels: &BTreeMap<String, String>,
        mode: WorkloadMode,
        port: u32,
    ) -> Result<Self> {
        self.wasm_plugins_as(Form::Separate, plugins, overlay, labels, mode, port)
    }

    /// [`Self::wasm_plugins`], the filters in `form` (each in its own module, or each inside the
    /// bundle's).
    pub fn wasm_plugins_as(
        mut self,
        form: Form,
        plugins: &[WasmPlugin],
        overlay: &Overlay,
        labels: &BTreeMap<String, String>,
        mode: WorkloadMode,
        port: u32,
    ) -> Result<Self> {
        for p in chain(plugins, labels, mode, port) {
            self.http_filters.push(p.to_envoy_filter_as(overlay, form)?);
        }
        Ok(self)
    }

    fn to_json(&self) -> Value {
        let mut filters = self.http_filters.clone();
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let mut l = json!({
            "name": self.name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": self.name,
                    "codec_type": "AUTO",
                    "route_config": {
                        "name": self.name,
                        "virtual_hosts": [{
                            "name": self.name,
                            "domains": ["*"],
                            "include_request_attempt_count": self.include_request_attempt_count,
                            "routes": self.routes.iter().map(Route::to_json).collect::<Vec<_>>(),
                        }],
                    },
                    "http_filters": filters,
                }
            }]}],
        });
        if let Some(ts) = &self.transport_socket {
            l["filter_chains"][0]["transport_socket"] = ts.clone();
        }
        l
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    pub http2: bool,
    /// Extra top-level cluster fields (e.g. `circuit_breakers`), merged in.
    pub extra: Value,
}

impl Cluster {
    pub fn new(name: &str, endpoints: &[SocketAddr]) -> Self {
        Self {
            name: name.to_owned(),
            endpoints: endpoints.to_vec(),
            http2: false,
            extra: json!({}),
        }
    }

    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    fn to_json(&self) -> Value {
        let mut c = json!({
            "name": self.name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": self.name,
                "endpoints": [{"lb_endpoints": self.endpoints.iter().map(|a| json!({
                    "endpoint": {"address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}}
                })).collect::<Vec<_>>()}],
            },
        });
        if self.http2 {
            c["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            });
        }
        if let (Some(obj), Some(extra)) = (c.as_object_mut(), self.extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        c
    }
}

/// A whole Envoy bootstrap.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    pub admin_port: u16,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

impl Bootstrap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn listener(mut self, l: Listener) -> Self {
        self.listeners.push(l);
        self
    }

    pub fn cluster(mut self, c: Cluster) -> Self {
        self.clusters.push(c);
        self
    }

    pub fn to_json(&self) -> Value {
        let tags: Vec<Value> = meshwright_shared::stats::STATS_TAGS
            .iter()
            .map(|(name, regex)| json!({"tag_name": name, "regex": regex}))
            .collect();
        json!({
            "node": {"id": "meshwright-local", "cluster": "meshwright"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "stats_config": {"stats_tags": tags},
            "static_resources": {
                "listeners": self.listeners.iter().map(Listener::to_json).collect::<Vec<_>>(),
                "clusters": self.clusters.iter().map(Cluster::to_json).collect::<Vec<_>>(),
            },
        })
    }
}

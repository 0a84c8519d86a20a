//! The local mesh: the ecommerce deployment of `k8s/` with the WasmPlugins of `wasmplugins/`,
//! rendered into one Envoy config per proxy the way istiod would configure them, and run on one
//! machine — as processes on loopback ([`run`], `cargo xtask up`, the tests) or as containers
//! (`cargo xtask compose`).
//!
//! Nothing about the mesh is written here by hand: listeners, routes, clusters, `jwt_authn`,
//! RBAC and the wasm filters come from the manifests through istiod's mapping —
//! [`routes`] (VirtualService), [`clusters`] (DestinationRule), [`authn`]
//! (RequestAuthentication, PeerAuthentication), [`authz`] (AuthorizationPolicy),
//! [`crate::wasmplugin`] (WasmPlugin) — and [`certs`] issues the SPIFFE identities istiod's CA
//! would. The differences a developer machine needs are data: `k8s/local/mesh.yaml`
//! ([`LocalSettings`]) and `wasmplugins/local/overlay.yaml` ([`crate::wasmplugin::Overlay`]).
//!
//! Topology ([`Plan`]): every Deployment/StatefulSet runs `replicas` instances (local
//! settings); each instance is its app process plus a sidecar Envoy with an inbound listener
//! (mTLS, as PeerAuthentication says) in front of the app and an outbound listener the app sends
//! its calls to; the ingress gateway is one more Envoy.

pub mod authn;
pub mod authz;
pub mod certs;
pub mod clusters;
pub mod compose;
pub mod model;
pub mod proxy;
pub mod routes;
pub mod run;

use crate::wasmplugin::{self, Overlay, WasmPlugin};
use anyhow::{Context, Result, bail};
use clusters::Endpoint;
use model::{Objects, Workload};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `k8s/local/mesh.yaml`: what differs on a developer machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Image repository → the local program that runs it.
    pub images: BTreeMap<String, String>,
    /// Instances per workload (`default` for the rest).
    pub replicas: BTreeMap<String, u32>,
    /// Environment for every workload process (`${VAR}` filled in per instance).
    pub workload_env: BTreeMap<String, String>,
    pub gateway: LocalGateway,
    pub idp_cluster: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalGateway {
    /// Gateway host → the Host values it is served for locally (others keep Istio's).
    pub hosts: BTreeMap<String, Vec<String>>,
}

impl LocalSettings {
    pub fn load() -> Result<Self> {
        let path = crate::k8s::dir().join("local").join("mesh.yaml");
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        yaml_serde::from_str(&text).with_context(|| path.display().to_string())
    }

    pub fn replicas_of(&self, workload: &str) -> u32 {
        self.replicas
            .get(workload)
            .or_else(|| self.replicas.get("default"))
            .copied()
            .unwrap_or(1)
    }

    /// The local program for an image (`repo:tag` or `repo@sha256:…`).
    pub fn program_for(&self, image: &str) -> Result<&str> {
        let untagged = image.split_once('@').map_or(image, |(r, _)| r);
        let repo = untagged
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or(untagged, |(r, _)| r);
        self.images.get(repo).map(String::as_str).with_context(|| {
            format!("no local program for image {image} (k8s/local/mesh.yaml images)")
        })
    }
}

/// Replaces `${NAME}` in `s` with `vars[NAME]`; an unknown name is an error.
pub fn fill(s: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let (before, after) = rest.split_at(start);
        out.push_str(before);
        let end = after
            .find('}')
            .with_context(|| format!("unclosed ${{ in {s:?}"))?;
        let name = after.get(2..end).unwrap_or_default();
        out.push_str(
            vars.get(name)
                .with_context(|| format!("unknown variable ${{{name}}} in {s:?}"))?,
        );
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// Which WasmPlugin set the mesh runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PluginSet {
    /// `wasmplugins/`: a plugin per filter.
    #[default]
    Separate,
    /// `wasmplugins/bundle/`: the bundled sets.
    Bundle,
}

/// Everything the proxies' configs are rendered from.
pub struct Mesh {
    pub objects: Objects,
    pub plugins: Vec<WasmPlugin>,
    /// The wasm overlay, its `${…}` variables filled in.
    pub overlay: Overlay,
    pub local: LocalSettings,
    /// The ingress gateway's service account (k8s/istio/gateway-values.yaml).
    pub gateway_service_account: String,
    pub ca: certs::Ca,
    pub ca_pem: String,
    identities: BTreeMap<String, certs::Identity>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mesh({} workloads)", self.objects.workloads.len())
    }
}

/// The namespace the gateway runs in.
pub const GATEWAY_NAMESPACE: &str = wasmplugin::ROOT_NAMESPACE;

impl Mesh {
    /// The shipped mesh: k8s/, the plugin set, the local overlays; `vars` fill the overlays'
    /// `${…}` (e.g. `IDP_ISSUER`).
    pub fn load(set: PluginSet, vars: &BTreeMap<String, String>) -> Result<Self> {
        let objects = Objects::load()?;
        let plugins = wasmplugin::load_dir(&match set {
            PluginSet::Separate => crate::paths::wasmplugins(),
            PluginSet::Bundle => crate::paths::bundle_wasmplugins(),
        })?;
        Self::new(objects, plugins, Overlay::local_with(vars)?)
    }

    pub fn new(objects: Objects, plugins: Vec<WasmPlugin>, overlay: Overlay) -> Result<Self> {
        let local = LocalSettings::load()?;
        let values = model::helm_values("gateway-values.yaml")?;
        let gateway_service_account = values["serviceAccount"]["name"]
            .as_str()
            .context("k8s/istio/gateway-values.yaml: serviceAccount.name")?
            .to_owned();
        let ca = certs::Ca::new()?;
        let ca_pem = ca.pem();
        let mut mesh = Self {
            objects,
            plugins,
            overlay,
            local,
            gateway_service_account,
            ca,
            ca_pem,
            identities: BTreeMap::new(),
        };
        let mut ids = vec![mesh.gateway_spiffe_id()];
        ids.extend(mesh.objects.workloads.iter().map(Workload::spiffe_id));
        for id in ids {
            let issued = mesh.ca.issue(&id)?;
            mesh.identities.insert(id, issued);
        }
        Ok(mesh)
    }

    pub fn gateway_spiffe_id(&self) -> String {
        model::spiffe_id(GATEWAY_NAMESPACE, &self.gateway_service_account)
    }

    /// The certificate of a SPIFFE id (every workload's and the gateway's are issued).
    pub fn identity(&self, spiffe_id: &str) -> Result<&certs::Identity> {
        self.identities
            .get(spiffe_id)
            .with_context(|| format!("no certificate issued for {spiffe_id}"))
    }

    /// Issues a certificate for an identity no workload has (tests: a caller outside the
    /// policies).
    pub fn issue(&self, spiffe_id: &str) -> Result<certs::Identity> {
        self.ca.issue(spiffe_id)
    }

    /// The fault rule of a shipped drill, with its `x-meshwright-drill` condition dropped: the drill
    /// then hits all the traffic its rule matches, as if an operator had patched the WasmPlugin.
    pub fn drill(&mut self, drill: &str) -> Result<()> {
        let mut known = Vec::new();
        let mut done = false;
        for p in &mut self.plugins {
            let section = match p.spec.plugin_name.as_deref() {
                Some("fault") => None,
                Some("bundle") if p.plugin_config().get("fault").is_some() => Some("fault"),
                _ => continue,
            };
            let mut cfg = p.plugin_config();
            let fault = match section {
                Some(s) => &mut cfg[s],
                None => &mut cfg,
            };
            for rule in fault["rules"].as_array_mut().into_iter().flatten() {
                let headers = &mut rule["match"]["headers"];
                let Some(list) = headers.as_array_mut() else {
                    continue;
                };
                let Some(value) = list
                    .iter()
                    .find(|h| h["name"] == "x-meshwright-drill")
                    .and_then(|h| h["exact"].as_str())
                    .map(str::to_owned)
                else {
                    continue;
                };
                known.push(value.clone());
                if value == drill {
                    list.retain(|h| h["name"] != "x-meshwright-drill");
                    if list.is_empty()
                        && let Some(m) = rule["match"].as_object_mut()
                    {
                        m.remove("headers");
                    }
                    done = true;
                }
            }
            p.spec.plugin_config = Some(cfg);
        }
        if !done {
            known.sort();
            known.dedup();
            bail!(
                "no drill {drill} in the fault plugin (wasmplugins/fault.yaml); drills: {}",
                known.join(", ")
            );
        }
        Ok(())
    }

    /// A token as the gateway's OAuth2 filter mints it for a signed-in user (same key, issuer,
    /// audience, lifetime): what the services behind the gateway receive as `Bearer`.
    pub fn mint_token(&self, sub: &str, claims: &serde_json::Value) -> Result<String> {
        let cfg = proxy::gateway_oauth2_config(self)?;
        let env = |k: &str| self.overlay.host_env.get(k).cloned();
        let oauth2 = meshwright_oauth2::OAuth2Config::from_json(cfg.to_string().as_bytes(), &env)
            .map_err(|e| anyhow::anyhow!("the gateway's OAuth2 config: {e}"))?;
        let minter = oauth2
            .minter
            .context("the gateway's OAuth2 filter mints no tokens")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = claims.as_object().cloned().unwrap_or_default();
        minter.mint(sub, &claims, now).context("minting a token")
    }

    /// A signed A/B QA override (`x-ab-override` / `?ab_override=`) for `pairs` (e.g.
    /// `product=v2`), valid for `ttl_s`, made with the gateway's development key.
    pub fn ab_override(&self, pairs: &str, ttl_s: u64) -> Result<String> {
        let key = self
            .overlay
            .host_env
            .get("MESHWRIGHT_AB_SIGNING_KEY")
            .context("no MESHWRIGHT_AB_SIGNING_KEY in the wasm overlay")?;
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + ttl_s;
        Ok(meshwright_ab::overrides::sign(
            key.as_bytes(),
            pairs,
            expiry,
        ))
    }

    /// The variant the gateway's A/B filter assigns user `sub` in `experiment` (its own
    /// bucketing code on the config it runs with), `None` outside the experiment's coverage.
    pub fn ab_assignment(&self, experiment: &str, sub: &str) -> Result<Option<String>> {
        for p in crate::wasmplugin::chain(
            &self.plugins,
            &crate::render::gateway_labels(),
            crate::wasmplugin::WorkloadMode::Client,
            0,
        ) {
            let cfg = p.plugin_config();
            let ab = match p.spec.plugin_name.as_deref() {
                Some("ab") => cfg,
                Some(crate::forms::BUNDLE_PLUGIN_NAME) if cfg.get("ab").is_some() => {
                    cfg["ab"].clone()
                }
                _ => continue,
            };
            let config = meshwright_ab::config::AbConfig::from_json(ab.to_string().as_bytes())
                .map_err(|e| anyhow::anyhow!("the gateway's A/B config: {e}"))?;
            let e = config
                .experiments
                .iter()
                .find(|e| e.name == experiment)
                .with_context(|| format!("no experiment {experiment} at the gateway"))?;
            return Ok(meshwright_ab::bucket::choose(e, sub)
                .and_then(|i| e.variants.get(i))
                .map(|v| v.name.clone()));
        }
        bail!("no A/B filter at the gateway")
    }

    pub fn workload(&self, name: &str) -> Result<&Workload> {
        self.objects
            .workloads
            .iter()
            .find(|w| w.name == name)
            .with_context(|| format!("no workload {name} in k8s/"))
    }
}

/// Where the processes of the mesh listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Processes on 127.0.0.1, every port picked free.
    Loopback,
    /// Containers on a compose network: a sidecar container per instance whose network the
    /// app shares (like a pod), fixed ports, reached by container name.
    Compose,
}

/// One running copy of a workload: its app and its sidecar.
#[derive(Debug, Clone)]
pub struct Instance {
    /// e.g. `product-v1-0`
    pub name: String,
    pub workload: String,
    pub index: u32,
    /// The container port the app serves on (the Service's target).
    pub app_port: u16,
    /// Where the app listens (`SHOP_LISTEN`), and where its sidecar reaches it.
    pub app: Endpoint,
    pub app_listen: String,
    /// The sidecar's inbound listener: as bound, and as other proxies reach it.
    pub inbound_bind: Endpoint,
    pub inbound: Endpoint,
    /// The sidecar's outbound listener (the app's `SHOP_MESH_OUTBOUND`).
    pub outbound_bind: Endpoint,
    pub admin_bind: Endpoint,
    pub data_dir: PathBuf,
}

/// The addresses of a whole mesh.
#[derive(Debug, Clone)]
pub struct Plan {
    pub placement: Placement,
    pub instances: Vec<Instance>,
    pub gateway_bind: Endpoint,
    pub gateway_admin: Endpoint,
    /// How the gateway reaches the IdP.
    pub idp: Endpoint,
}

/// Ports inside a compose "pod", as in an Istio pod: outbound 15001, inbound 15006, admin 15000.
pub const COMPOSE_OUTBOUND: u16 = 15001;
pub const COMPOSE_INBOUND: u16 = 15006;
pub const COMPOSE_ADMIN: u16 = 15000;

fn free_port() -> Result<u16> {
    crate::idp::free_port()
}

impl Plan {
    /// Addresses for every instance of `mesh`: loopback with free ports (the gateway on
    /// `gateway_port`, 0 = any), or compose's container names and fixed ports. Data lives under
    /// `data` (compose: the volume path inside the container).
    pub fn new(
        mesh: &Mesh,
        placement: Placement,
        gateway_port: u16,
        idp: Endpoint,
        data: &Path,
    ) -> Result<Self> {
        let mut instances = Vec::new();
        for w in &mesh.objects.workloads {
            let service = mesh
                .objects
                .services
                .iter()
                .find(|s| s.namespace == w.namespace && w.selected_by(&s.selector))
                .with_context(|| format!("no Service selects workload {}", w.name))?;
            let port = service
                .ports
                .first()
                .with_context(|| format!("Service {} has no port", service.name))?;
            let app_port = service.target_port(port, w).with_context(|| {
                format!("workload {}: no container port {:?}", w.name, port.target)
            })?;
            for index in 0..mesh.local.replicas_of(&w.name) {
                let name = format!("{}-{index}", w.name);
                let inst = match placement {
                    Placement::Loopback => {
                        let app = Endpoint::new("127.0.0.1", free_port()?);
                        let inbound = Endpoint::new("127.0.0.1", free_port()?);
                        Instance {
                            app_listen: format!("{}:{}", app.host, app.port),
                            app,
                            inbound_bind: inbound.clone(),
                            inbound,
                            outbound_bind: Endpoint::new("127.0.0.1", free_port()?),
                            admin_bind: Endpoint::new("127.0.0.1", free_port()?),
                            data_dir: data.join(&name),
                            name,
                            workload: w.name.clone(),
                            index,
                            app_port,
                        }
                    }
                    Placement::Compose => Instance {
                        app: Endpoint::new("127.0.0.1", app_port),
                        app_listen: format!("127.0.0.1:{app_port}"),
                        inbound_bind: Endpoint::new("0.0.0.0", COMPOSE_INBOUND),
                        inbound: Endpoint::new(&format!("{name}-sidecar"), COMPOSE_INBOUND),
                        outbound_bind: Endpoint::new("127.0.0.1", COMPOSE_OUTBOUND),
                        admin_bind: Endpoint::new("0.0.0.0", COMPOSE_ADMIN),
                        data_dir: data.to_owned(),
                        name,
                        workload: w.name.clone(),
                        index,
                        app_port,
                    },
                };
                instances.push(inst);
            }
        }
        let (gateway_bind, gateway_admin) = match placement {
            Placement::Loopback => (
                Endpoint::new(
                    "127.0.0.1",
                    if gateway_port == 0 {
                        free_port()?
                    } else {
                        gateway_port
                    },
                ),
                Endpoint::new("127.0.0.1", free_port()?),
            ),
            Placement::Compose => (
                Endpoint::new("0.0.0.0", gateway_port),
                Endpoint::new("0.0.0.0", COMPOSE_ADMIN),
            ),
        };
        if instances.is_empty() {
            bail!("k8s/ declares no workloads");
        }
        Ok(Self {
            placement,
            instances,
            gateway_bind,
            gateway_admin,
            idp,
        })
    }

    pub fn instance(&self, name: &str) -> Result<&Instance> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .with_context(|| format!("no instance {name}"))
    }

    /// The instances of workloads whose pod labels match `selector`.
    pub fn selected<'a>(
        &'a self,
        mesh: &'a Mesh,
        namespace: &'a str,
        selector: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a Instance, &'a Workload)> + 'a {
        self.instances.iter().filter_map(move |i| {
            let w = mesh.workload(&i.workload).ok()?;
            (w.namespace == namespace && w.selected_by(selector)).then_some((i, w))
        })
    }

    /// The environment of an instance's app process: its container's, then the local
    /// settings' `workload_env`.
    pub fn app_env(&self, mesh: &Mesh, inst: &Instance) -> Result<BTreeMap<String, String>> {
        let w = mesh.workload(&inst.workload)?;
        let mut env = w.env.clone();
        let vars = BTreeMap::from([
            ("APP_LISTEN".to_owned(), inst.app_listen.clone()),
            (
                "DATA_DIR".to_owned(),
                inst.data_dir.to_string_lossy().into_owned(),
            ),
            ("INSTANCE".to_owned(), inst.name.clone()),
            (
                "OUTBOUND".to_owned(),
                format!("{}:{}", inst.outbound_bind.host, inst.outbound_bind.port),
            ),
        ]);
        for (k, v) in &mesh.local.workload_env {
            env.insert(k.clone(), fill(v, &vars)?);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_filled_and_unknown_ones_refused() {
        let vars = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        assert_eq!(fill("x${A}y${A}", &vars).unwrap(), "x1y1");
        assert_eq!(fill("plain", &vars).unwrap(), "plain");
        assert!(fill("${B}", &vars).is_err());
        assert!(fill("${A", &vars).is_err());
    }

    #[test]
    fn a_drill_loses_its_header_condition_and_unknown_drills_are_refused() {
        for set in [PluginSet::Separate, PluginSet::Bundle] {
            let mut mesh = Mesh::load(set, &BTreeMap::new()).unwrap();
            mesh.drill("invoice-outage").unwrap();
            let p = mesh
                .plugins
                .iter()
                .find(|p| p.metadata.name == "fault" || p.metadata.name == "bundle-sidecar-inbound")
                .unwrap();
            let cfg = p.plugin_config();
            let fault = if set == PluginSet::Bundle {
                &cfg["fault"]
            } else {
                &cfg
            };
            let rule = fault["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "invoice-outage-drill")
                .unwrap();
            assert!(rule["match"].get("headers").is_none(), "{rule}");
            assert_eq!(rule["match"]["path"]["prefix"], "/api/invoices");
            assert!(mesh.drill("no-such-drill").is_err());
        }
    }

    #[test]
    fn images_map_to_local_programs_whatever_their_tag() {
        let s = LocalSettings {
            images: BTreeMap::from([("ghcr.io/meshwright/shop".into(), "shop".into())]),
            replicas: BTreeMap::new(),
            workload_env: BTreeMap::new(),
            gateway: LocalGateway {
                hosts: BTreeMap::new(),
            },
            idp_cluster: String::new(),
        };
        assert_eq!(
            s.program_for("ghcr.io/meshwright/shop:0.1.0").unwrap(),
            "shop"
        );
        assert_eq!(
            s.program_for("ghcr.io/meshwright/shop@sha256:abc").unwrap(),
            "shop"
        );
        assert!(s.program_for("docker.io/nginx:1").is_err());
    }
}

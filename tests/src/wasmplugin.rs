//! Istio `WasmPlugin` resources, and the translation istiod applies to turn one into an Envoy
//! `envoy.filters.http.wasm` filter.
//!
//! The mapping follows istiod (istio/istio `pilot/pkg/model/extensions.go`, ≥1.30):
//! - `name` = `<namespace>.<metadata.name>`, `root_id` = `spec.pluginName`;
//! - `configuration` = `google.protobuf.StringValue` holding the JSON of `spec.pluginConfig`
//!   (absent when pluginConfig is empty);
//! - `vm_config.runtime` = `envoy.wasm.runtime.v8`, no `vm_id`; code from `spec.url`
//!   (`file://` → local filename; `oci://`/`http(s)://` are fetched by istio-agent and rewritten
//!   to a local file — locally the [`Overlay`] supplies that file);
//! - `vm_config.environment_variables`: `vmConfig.env` entries with `valueFrom: INLINE` (the
//!   default) → `key_values`, `HOST` → `host_env_keys` (istio-agent strips its own
//!   `ISTIO_META_WASM_*` entries before Envoy sees them, so they are not rendered);
//! - `failure_policy` from `failStrategy`: FAIL_CLOSE (default) → FAIL_CLOSED, FAIL_OPEN →
//!   FAIL_OPEN, FAIL_RELOAD → FAIL_RELOAD;
//! - order in the chain: phase AUTHN, AUTHZ, STATS, then UNSPECIFIED_PHASE (just before the
//!   router); within a phase higher `priority` first, ties by namespace then name.
//! - `selector.matchLabels` picks workloads; `match[].mode` picks traffic: CLIENT = outbound and
//!   gateways, SERVER = inbound, CLIENT_AND_SERVER/unset = both; `match[].ports` by number.

use crate::forms::{BUNDLE_PLUGIN_NAME, BUNDLE_URL, Form, section_of};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPlugin {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: WasmPluginSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Authn,
    Authz,
    Stats,
    UnspecifiedPhase,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    FailClose,
    FailOpen,
    FailReload,
}

/// Which side of a proxy traffic is on.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    Undefined,
    Client,
    Server,
    ClientAndServer,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<FailStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TrafficSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSelector>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    pub number: u32,
}

/// Istio's root namespace: plugins there apply to every namespace.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The namespace of a workload of the ecommerce mesh: the ingress gateway runs in
/// `istio-system`, the application in `ecommerce`.
pub fn namespace_of(labels: &BTreeMap<String, String>) -> &'static str {
    if labels.get("istio").is_some_and(|v| v == "ingressgateway") {
        ROOT_NAMESPACE
    } else {
        "ecommerce"
    }
}

/// Local-only settings applied when rendering for a developer machine, the tests or the
/// benchmark (`wasmplugins/local/overlay.yaml`); never part of what a cluster gets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Module URL (as in `spec.url`) → local file, relative to the workspace root.
    #[serde(default)]
    pub modules: BTreeMap<String, PathBuf>,
    /// Values for `vmConfig.env` entries with `valueFrom: HOST`: the environment the local
    /// Envoy process is started with.
    #[serde(default)]
    pub host_env: BTreeMap<String, String>,
    /// JSON merge patches (RFC 7396) to `pluginConfig`, by `<namespace>.<name>`: what differs on
    /// a developer machine (a local IdP instead of the real one, cookies without `Secure` over
    /// plain HTTP).
    #[serde(default)]
    pub plugin_config: BTreeMap<String, Value>,
    /// Defaults of the `${NAME}` variables in `plugin_config` strings, for renders outside a
    /// running local mesh (which fills in its own values: [`Overlay::local_with`]).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Overlay {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        yaml_serde::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The shipped local overlay, its variables at their defaults.
    pub fn local() -> Result<Self> {
        Self::local_with(&BTreeMap::new())
    }

    /// The shipped local overlay, `vars` (then the file's defaults) filled into `${NAME}` in
    /// its `plugin_config` strings.
    pub fn local_with(vars: &BTreeMap<String, String>) -> Result<Self> {
        let mut o = Self::load(
            &crate::paths::wasmplugins()
                .join("local")
                .join("overlay.yaml"),
        )?;
        let mut all = o.vars.clone();
        all.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        for patch in o.plugin_config.values_mut() {
            fill_strings(patch, &all)?;
        }
        Ok(o)
    }
}

fn fill_strings(v: &mut Value, vars: &BTreeMap<String, String>) -> Result<()> {
    match v {
        Value::String(s) => *s = crate::mesh::fill(s, vars)?,
        Value::Array(a) => a.iter_mut().try_for_each(|x| fill_strings(x, vars))?,
        Value::Object(o) => o.values_mut().try_for_each(|x| fill_strings(x, vars))?,
        _ => {}
    }
    Ok(())
}

impl WasmPlugin {
    pub fn from_yaml(text: &str) -> Result<Self> {
        let p: Self = yaml_serde::from_str(text)?;
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<()> {
        if self.api_version != "extensions.istio.io/v1alpha1" || self.kind != "WasmPlugin" {
            bail!(
                "{}: not an extensions.istio.io/v1alpha1 WasmPlugin ({} {})",
                self.metadata.name,
                self.api_version,
                self.kind
            );
        }
        Ok(())
    }

    /// `pluginConfig` as an object (an empty object when unset).
    pub fn plugin_config(&self) -> Value {
        self.spec.plugin_config.clone().unwrap_or_else(|| json!({}))
    }

    /// Replaces `pluginConfig`.
    pub fn with_plugin_config(mut self, config: Value) -> Self {
        self.spec.plugin_config = Some(config);
        self
    }

    /// Edits `pluginConfig` in place.
    pub fn edit_plugin_config(mut self, f: impl FnOnce(&mut Value)) -> Self {
        let mut cfg = self.plugin_config();
        f(&mut cfg);
        self.spec.plugin_config = Some(cfg);
        self
    }

    /// Whether istiod would attach this plugin to a workload with `labels`, for traffic in
    /// `mode` (Client or Server) on `port`, with the workload's namespace as in the ecommerce
    /// mesh ([`namespace_of`]).
    pub fn applies_to(
        &self,
        labels: &BTreeMap<String, String>,
        mode: WorkloadMode,
        port: u32,
    ) -> bool {
        self.applies_in(namespace_of(labels), labels, mode, port)
    }

    /// Whether istiod would attach this plugin to a workload in `namespace` with `labels`, for
    /// traffic in `mode` on `port`: a plugin applies in its own namespace, or everywhere from the
    /// root namespace (`istio-system`); then its selector and `match` decide.
    pub fn applies_in(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        mode: WorkloadMode,
        port: u32,
    ) -> bool {
        let ns = self.metadata.namespace == namespace || self.metadata.namespace == ROOT_NAMESPACE;
        let selected = self
            .spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
        let traffic = self.spec.matches.is_empty()
            || self.spec.matches.iter().any(|m| {
                let mode_ok = match m.mode.unwrap_or(WorkloadMode::Undefined) {
                    WorkloadMode::Undefined | WorkloadMode::ClientAndServer => true,
                    want => want == mode,
                };
                let port_ok = m.ports.is_empty() || m.ports.iter().any(|p| p.number == port);
                mode_ok && port_ok
            });
        ns && selected && traffic
    }

    /// The Envoy HTTP filter istiod would generate for this plugin (see the module doc).
    pub fn to_envoy_filter(&self, overlay: &Overlay) -> Result<Value> {
        self.to_envoy_filter_as(overlay, Form::Separate)
    }

    /// [`Self::to_envoy_filter`] in a [`Form`]: in [`Form::Bundle`], a plugin of one of the
    /// bundle's filters runs the bundle's module instead, its (overlay-patched) `pluginConfig`
    /// as the filter's section — everything else (name, phase, environment, failure policy)
    /// as it is. Other plugins are rendered as they are.
    pub fn to_envoy_filter_as(&self, overlay: &Overlay, form: Form) -> Result<Value> {
        let spec = &self.spec;
        let name = format!("{}.{}", self.metadata.namespace, self.metadata.name);
        let section = spec.plugin_name.as_deref().and_then(section_of);
        let (url, root_id) = match (form, section) {
            (Form::Bundle, Some(_)) => (BUNDLE_URL, BUNDLE_PLUGIN_NAME),
            _ => (
                spec.url.as_str(),
                spec.plugin_name.as_deref().unwrap_or_default(),
            ),
        };
        let filename = if let Some(path) = url.strip_prefix("file://") {
            PathBuf::from(path)
        } else if let Some(local) = overlay.modules.get(url) {
            if local.is_absolute() {
                local.clone()
            } else {
                crate::paths::root().join(local)
            }
        } else {
            bail!("{name}: no local file for {url} (add it to the overlay's modules)");
        };
        let mut key_values = serde_json::Map::new();
        let mut host_env_keys = Vec::new();
        for e in spec.vm_config.iter().flat_map(|v| &v.env) {
            match e.value_from.as_deref().unwrap_or("INLINE") {
                "INLINE" => {
                    key_values.insert(e.name.clone(), json!(e.value.clone().unwrap_or_default()));
                }
                "HOST" => host_env_keys.push(json!(e.name)),
                other => bail!("{name}: vmConfig.env {}: unknown valueFrom {other}", e.name),
            }
        }
        let mut env = serde_json::Map::new();
        if !key_values.is_empty() {
            env.insert("key_values".into(), Value::Object(key_values));
        }
        if !host_env_keys.is_empty() {
            env.insert("host_env_keys".into(), Value::Array(host_env_keys));
        }
        let mut vm_config = json!({
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": filename.to_string_lossy()}},
        });
        if !env.is_empty() {
            vm_config["environment_variables"] = Value::Object(env);
        }
        let mut config = json!({
            "name": name,
            "root_id": root_id,
            "vm_config": vm_config,
            "failure_policy": match spec.fail_strategy.unwrap_or(FailStrategy::FailClose) {
                FailStrategy::FailClose => "FAIL_CLOSED",
                FailStrategy::FailOpen => "FAIL_OPEN",
                FailStrategy::FailReload => "FAIL_RELOAD",
            },
        });
        let mut plugin_config = self.plugin_config();
        if let Some(patch) = overlay.plugin_config.get(&name) {
            merge_patch(&mut plugin_config, patch);
        }
        if let (Form::Bundle, Some(section)) = (form, section) {
            plugin_config = json!({ section: plugin_config });
        }
        if plugin_config.as_object().is_some_and(|o| !o.is_empty()) {
            config["configuration"] = json!({
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": serde_json::to_string(&plugin_config)?,
            });
        }
        Ok(json!({
            "name": name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": config,
            }
        }))
    }
}

/// Loads every WasmPlugin in `dir` (`*.yaml`, several documents per file allowed; files named
/// `kustomization.yaml` and subdirectories are skipped).
pub fn load_dir(dir: &Path) -> Result<Vec<WasmPlugin>> {
    let mut plugins = Vec::new();
    for f in plugin_files(dir)? {
        plugins.extend(load_file(&f)?);
    }
    Ok(plugins)
}

/// The WasmPlugin files of a directory: its `*.yaml` but `kustomization.yaml`, sorted.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads the WasmPlugins of one YAML file (several documents allowed).
pub fn load_file(path: &Path) -> Result<Vec<WasmPlugin>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    text.split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|doc| WasmPlugin::from_yaml(doc).with_context(|| path.display().to_string()))
        .collect()
}

/// Loads one shipped plugin by `metadata.name`: the separate filters' (`wasmplugins/`) or the
/// bundle's (`wasmplugins/bundle/`).
pub fn shipped(name: &str) -> Result<WasmPlugin> {
    let mut all = load_dir(&crate::paths::wasmplugins())?;
    all.extend(load_dir(&crate::paths::bundle_wasmplugins())?);
    all.into_iter()
        .find(|p| p.metadata.name == name)
        .with_context(|| {
            format!("no WasmPlugin named {name} in wasmplugins/ or wasmplugins/bundle/")
        })
}

/// The plugins that apply to a workload's traffic, in filter-chain order.
pub fn chain<'a>(
    plugins: &'a [WasmPlugin],
    labels: &BTreeMap<String, String>,
    mode: WorkloadMode,
    port: u32,
) -> Vec<&'a WasmPlugin> {
    let mut selected: Vec<&WasmPlugin> = plugins
        .iter()
        .filter(|p| p.applies_to(labels, mode, port))
        .collect();
    selected.sort_by(|a, b| {
        let phase = |p: &WasmPlugin| p.spec.phase.unwrap_or(Phase::UnspecifiedPhase);
        phase(a)
            .cmp(&phase(b))
            .then(
                b.spec
                    .priority
                    .unwrap_or(0)
                    .cmp(&a.spec.priority.unwrap_or(0)),
            )
            .then(a.metadata.namespace.cmp(&b.metadata.namespace))
            .then(a.metadata.name.cmp(&b.metadata.name))
    });
    selected
}

//! The mesh configuration in `k8s/` as data: multi-document YAML loaded as JSON values, and Istio
//! `VirtualService` HTTP rules turned into the local Envoy's routes, so the local proxy routes the
//! way the mesh does (e.g. on the A/B filter's header).

use crate::render::Route;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `k8s/` in the checkout.
pub fn dir() -> PathBuf {
    crate::paths::root().join("k8s")
}

/// Every YAML document of a file, as JSON values (comments and empty documents skipped).
pub fn load(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut docs = Vec::new();
    for doc in text.split("\n---") {
        if !doc
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            continue;
        }
        docs.push(yaml_serde::from_str(doc).with_context(|| path.display().to_string())?);
    }
    Ok(docs)
}

/// The objects of `kind` named `name` in a file.
pub fn find(path: &Path, kind: &str, name: &str) -> Result<Value> {
    load(path)?
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in {}", path.display()))
}

/// The routes of a VirtualService's `http` rules, in order: each `match` entry with a
/// `uri.prefix` (or no `uri`) and `exact` header conditions becomes a prefix route; rules with
/// other URI matchers are skipped. `route` rules go to `cluster(host, subset)` of their first
/// destination, `directResponse` rules answer directly.
pub fn virtual_service_routes(
    vs: &Value,
    cluster: impl Fn(&str, Option<&str>) -> String,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for rule in vs["spec"]["http"].as_array().into_iter().flatten() {
        let all = [Value::Null];
        let matches: &[Value] = match rule["match"].as_array() {
            Some(m) => m,
            None => &all,
        };
        for m in matches {
            let prefix = match &m["uri"] {
                Value::Null => "/",
                uri => match uri["prefix"].as_str() {
                    Some(p) => p,
                    None => continue,
                },
            };
            let mut route = if let Some(status) = rule["directResponse"]["status"].as_u64() {
                Route::direct(prefix, u16::try_from(status).unwrap_or(500), "")
            } else {
                let d = &rule["route"][0]["destination"];
                Route::to_cluster(
                    prefix,
                    &cluster(d["host"].as_str().unwrap_or(""), d["subset"].as_str()),
                )
            };
            for (name, cond) in m["headers"].as_object().into_iter().flatten() {
                if let Some(v) = cond["exact"].as_str() {
                    route = route.when_header(name, v);
                }
            }
            routes.push(route);
        }
    }
    routes
}

//! The A/B experiment is defined in three places that must agree: the WasmPlugins'
//! `pluginConfig` (wasmplugins/ab.yaml), the VirtualServices that route on the output header and
//! the DestinationRule subsets and Deployments they route to (k8s/). A renamed header, a variant
//! without a route, a route on a value the filter never writes, or a header route left behind
//! after an experiment ended would all fail silently in a cluster; here they fail the build.

use anyhow::Result;
use meshwright_ab::AbConfig;
use meshwright_testbed::k8s;
use meshwright_testbed::wasmplugin::{WasmPlugin, load_dir};
use serde_json::Value;
use std::collections::BTreeSet;

/// Every shipped WasmPlugin running the A/B module, with its compiled config.
fn ab_plugins() -> Vec<(WasmPlugin, AbConfig)> {
    let plugins: Vec<(WasmPlugin, AbConfig)> = load_dir(&meshwright_testbed::paths::wasmplugins())
        .unwrap()
        .into_iter()
        .filter(|p| p.spec.url.contains("/meshwright/ab:"))
        .map(|p| {
            let c = AbConfig::from_json(p.plugin_config().to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", p.metadata.name));
            (p, c)
        })
        .collect();
    assert!(plugins.len() >= 2, "the gateway and the mesh plugin");
    plugins
}

fn virtual_services() -> Vec<Value> {
    let mut out = Vec::new();
    for f in ["gateway-routes.yaml", "mesh-routes.yaml"] {
        out.extend(
            k8s::load(&k8s::dir().join("mesh").join(f))
                .unwrap()
                .into_iter()
                .filter(|d| d["kind"] == "VirtualService"),
        );
    }
    out
}

/// (VirtualService, header, exact value, destination host, subset) of every header-matched rule.
fn header_routes(vss: &[Value]) -> Vec<(String, String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for vs in vss {
        let name = vs["metadata"]["name"].as_str().unwrap_or("").to_owned();
        for rule in vs["spec"]["http"].as_array().into_iter().flatten() {
            let d = &rule["route"][0]["destination"];
            for m in rule["match"].as_array().into_iter().flatten() {
                for (h, cond) in m["headers"].as_object().into_iter().flatten() {
                    out.push((
                        name.clone(),
                        h.clone(),
                        cond["exact"].as_str().unwrap_or("<not exact>").to_owned(),
                        d["host"].as_str().unwrap_or("").to_owned(),
                        d["subset"].as_str().map(str::to_owned),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn every_copy_of_an_experiment_is_the_same() {
    let plugins = ab_plugins();
    let (first, base) = &plugins[0];
    for (p, c) in &plugins[1..] {
        for e in &base.experiments {
            let Some(other) = c.experiments.iter().find(|x| x.name == e.name) else {
                continue;
            };
            let what = format!(
                "experiment {} in {} and {}",
                e.name, first.metadata.name, p.metadata.name
            );
            assert_eq!(other.header, e.header, "{what}: header");
            assert_eq!(
                other.salt, e.salt,
                "{what}: salt (assignments would differ)"
            );
            assert_eq!(other.version, e.version, "{what}: version");
            assert_eq!(other.hash, e.hash, "{what}: hash");
            assert_eq!(other.coverage, e.coverage, "{what}: coverage");
            assert_eq!(other.variants, e.variants, "{what}: variants and weights");
            assert_eq!(other.baggage_key, e.baggage_key, "{what}: baggage key");
        }
    }
}

#[test]
fn routes_and_subsets_match_the_filters_headers_and_variants() -> Result<()> {
    let plugins = ab_plugins();
    let vss = virtual_services();
    let routes = header_routes(&vss);
    let rules = k8s::load(&k8s::dir().join("mesh").join("destination-rules.yaml"))?;
    let deployments: Vec<Value> = std::fs::read_dir(k8s::dir().join("app"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .flat_map(|p| k8s::load(&p).unwrap())
        .filter(|d| d["kind"] == "Deployment")
        .collect();

    let headers: BTreeSet<&str> = plugins
        .iter()
        .flat_map(|(_, c)| c.experiments.iter().map(|e| e.header.as_str()))
        .collect();

    // Every header route in k8s/ on an A/B header is for a configured experiment (no stale
    // routes), on a value the filter writes, to the subset of the same name.
    for (vs, header, value, host, subset) in &routes {
        if !header.starts_with("x-ab-") && !headers.contains(header.as_str()) {
            continue;
        }
        let e = plugins
            .iter()
            .flat_map(|(_, c)| &c.experiments)
            .find(|e| &e.header == header)
            .unwrap_or_else(|| {
                panic!("VirtualService {vs} routes on {header}, which no experiment writes")
            });
        assert!(
            e.variant_index(value).is_some(),
            "VirtualService {vs}: {header}: {value} is not a variant of experiment {}",
            e.name
        );
        assert_eq!(
            subset.as_deref(),
            Some(value.as_str()),
            "VirtualService {vs}: {header}: {value} must route to subset {value}"
        );
        // The subset exists, selects pods of that version, and a Deployment runs them.
        let dr = rules
            .iter()
            .find(|d| d["spec"]["host"] == host.as_str())
            .unwrap_or_else(|| panic!("no DestinationRule for {host}"));
        let s = dr["spec"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == value.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "DestinationRule {} has no subset {value}",
                    dr["metadata"]["name"]
                )
            });
        let app = host.split('.').next().unwrap_or("");
        let labels = &s["labels"];
        assert!(
            deployments.iter().any(|d| {
                let pod = &d["spec"]["template"]["metadata"]["labels"];
                pod["app"] == app
                    && labels
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| &pod[k] == v)
            }),
            "no Deployment runs pods of {app} with the labels of subset {value}: {labels}"
        );
    }

    // Every experiment's non-default variants have a route in every VirtualService that routes
    // on its header, and every variant has a subset (the default one is where unassigned
    // users go: the VirtualService's rule without the header match).
    for (p, c) in &plugins {
        for e in &c.experiments {
            let on_header: BTreeSet<&str> = routes
                .iter()
                .filter(|r| r.1 == e.header)
                .map(|r| r.0.as_str())
                .collect();
            assert!(
                !on_header.is_empty(),
                "{}: nothing in k8s/ routes on {}",
                p.metadata.name,
                e.header
            );
            for vs in &on_header {
                let routed: BTreeSet<&str> = routes
                    .iter()
                    .filter(|r| r.0 == *vs && r.1 == e.header)
                    .map(|r| r.2.as_str())
                    .collect();
                let unrouted: Vec<&str> = e
                    .variants
                    .iter()
                    .map(|v| v.name.as_str())
                    .filter(|v| !routed.contains(v))
                    .collect();
                assert!(
                    unrouted.len() <= 1,
                    "VirtualService {vs} routes {routed:?} of experiment {}; only the default \
                     variant may go without a header rule, unrouted: {unrouted:?}",
                    e.name
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_gateway_plugin_runs_after_oauth2_and_before_routing() {
    let plugins = ab_plugins();
    let (gw, _) = plugins
        .iter()
        .find(|(p, _)| p.metadata.name == "ab")
        .unwrap();
    let spec = &gw.spec;
    assert_eq!(
        spec.selector
            .as_ref()
            .unwrap()
            .match_labels
            .get("istio")
            .map(String::as_str),
        Some("ingressgateway")
    );
    assert_eq!(
        serde_json::to_value(spec.phase).unwrap(),
        "AUTHN",
        "route headers must be set before Istio's authn and the router"
    );
    assert!(
        spec.priority.unwrap_or(0) < 1000,
        "after the OAuth2 filter (AUTHN, priority 1000), which supplies the JWT"
    );
}

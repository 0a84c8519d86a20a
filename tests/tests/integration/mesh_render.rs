//! The local mesh's configs, rendered from k8s/ and wasmplugins/ by istiod's mapping: Envoy
//! accepts every proxy's config, and what the manifests say is what the configs say.

use anyhow::{Context, Result};
use meshwright_testbed::envoy::validate;
use meshwright_testbed::mesh::clusters::Endpoint;
use meshwright_testbed::mesh::{Mesh, Placement, Plan, PluginSet, proxy};
use serde_json::Value;
use std::collections::BTreeMap;

fn plan(mesh: &Mesh) -> Result<Plan> {
    Plan::new(
        mesh,
        Placement::Loopback,
        0,
        Endpoint::new("127.0.0.1", 9),
        std::path::Path::new("/tmp/meshwright-render-test"),
    )
}

fn all_configs(set: PluginSet) -> Result<(Mesh, Plan, BTreeMap<String, Value>)> {
    let mesh = Mesh::load(set, &BTreeMap::new())?;
    let plan = plan(&mesh)?;
    let mut out = BTreeMap::new();
    for inst in &plan.instances {
        out.insert(inst.name.clone(), proxy::sidecar(&mesh, &plan, inst)?);
    }
    out.insert("gateway".into(), proxy::gateway(&mesh, &plan)?);
    Ok((mesh, plan, out))
}

#[test]
fn envoy_accepts_every_proxy_of_the_local_mesh() -> Result<()> {
    for set in [PluginSet::Separate, PluginSet::Bundle] {
        let (mesh, _, configs) = all_configs(set)?;
        for (name, config) in &configs {
            validate(config, &mesh.overlay.host_env)
                .with_context(|| format!("{set:?}: the proxy of {name}"))?;
        }
    }
    Ok(())
}

/// The HTTP filter names of a listener's chain.
fn filter_names(config: &Value, listener: &str) -> Vec<String> {
    let l = config["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == listener)
        .unwrap();
    l["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn filters_run_in_istios_order_on_every_proxy() -> Result<()> {
    let (_, _, configs) = all_configs(PluginSet::Separate)?;
    assert_eq!(
        filter_names(&configs["gateway"], "gateway"),
        [
            "istio-system.oauth2",
            "istio-system.ab",
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.router"
        ]
    );
    assert_eq!(
        filter_names(&configs["product-v1-0"], "inbound"),
        [
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.rbac",
            "ecommerce.retry-budget-server",
            "ecommerce.fault",
            "envoy.filters.http.router"
        ]
    );
    assert_eq!(
        filter_names(&configs["store-0"], "outbound"),
        [
            "ecommerce.ab-mesh",
            "ecommerce.retry-budget-client",
            "envoy.filters.http.router"
        ]
    );
    Ok(())
}

#[test]
fn product_v1_runs_two_instances_behind_one_subset_cluster() -> Result<()> {
    let (_, plan, configs) = all_configs(PluginSet::Separate)?;
    let v1: Vec<_> = plan
        .instances
        .iter()
        .filter(|i| i.workload == "product-v1")
        .collect();
    assert_eq!(v1.len(), 2);
    let cluster = configs["store-0"]["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outbound|8081|v1|product.ecommerce.svc.cluster.local")
        .context("store's cluster for product v1")?
        .clone();
    let ports: Vec<u64> = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["endpoint"]["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut want: Vec<u64> = v1.iter().map(|i| u64::from(i.inbound.port)).collect();
    want.sort();
    let mut got = ports.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(
        cluster["outlier_detection"]["consecutive_gateway_failure"],
        3
    );
    assert_eq!(
        cluster["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
            [0]["matcher"]["exact"],
        "spiffe://cluster.local/ns/ecommerce/sa/product"
    );
    Ok(())
}

#[test]
fn the_idp_cluster_originates_tls_and_only_the_gateways_namespace_sees_it() -> Result<()> {
    let mesh = Mesh::load(PluginSet::Separate, &BTreeMap::new())?;
    let c = proxy::external_cluster(&mesh, "istio-system", "idp.example.com", 443)?;
    assert_eq!(c["name"], "outbound|443||idp.example.com");
    assert_eq!(
        c["connect_timeout"], "3s",
        "the DestinationRule's connectTimeout"
    );
    let tls = &c["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "idp.example.com");
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]
            ["exact"],
        "idp.example.com"
    );
    // The name the OAuth2 filter dispatches to (alone and bundled) is this cluster.
    let shipped =
        |name: &str| meshwright_testbed::wasmplugin::shipped(name).map(|p| p.spec.plugin_config);
    assert_eq!(
        shipped("oauth2")?.context("pluginConfig")?["idp_cluster"],
        c["name"]
    );
    assert_eq!(
        shipped("bundle-gateway")?.context("pluginConfig")?["oauth2"]["idp_cluster"],
        c["name"]
    );
    // exportTo ".": an app's sidecar has no route to the IdP.
    let err = proxy::external_cluster(&mesh, "ecommerce", "idp.example.com", 443)
        .expect_err("not exported to ecommerce");
    assert!(err.to_string().contains("visible"), "{err}");
    assert!(proxy::external_cluster(&mesh, "istio-system", "idp.example.com", 80).is_err());
    // Validated by Envoy as part of a gateway's config.
    let mut config = meshwright_testbed::render::Bootstrap::new().to_json();
    config["static_resources"]["clusters"] = serde_json::json!([c]);
    validate(&config, &mesh.overlay.host_env)?;
    Ok(())
}

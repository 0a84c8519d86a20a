//! WasmPlugin → Envoy: the translation istiod applies, pinned; and every shipped plugin, for every
//! workload it attaches to, rendered into a config that `envoy --mode validate` accepts.

use anyhow::Result;
use meshwright_testbed::envoy::validate;
use meshwright_testbed::paths;
use meshwright_testbed::render::{
    Bootstrap, Cluster, Listener, Route, gateway_labels, mesh_proxies, workload_labels,
};
use meshwright_testbed::wasmplugin::{Overlay, WasmPlugin, WorkloadMode, chain, load_dir};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

const FULL: &str = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: demo
  namespace: ecommerce
spec:
  selector:
    matchLabels: {app: product}
  url: oci://registry.example/demo:1.0
  sha256: 0123
  pluginName: demo_root
  phase: AUTHZ
  priority: 7
  failStrategy: FAIL_RELOAD
  match:
  - mode: SERVER
    ports: [{number: 8081}]
  vmConfig:
    env:
    - {name: INLINE_VAR, value: inline-value}
    - {name: IMPLICIT_INLINE, value: v2}
    - {name: FROM_HOST, valueFrom: HOST}
  pluginConfig:
    b: 2
    a: {nested: [1, "x"]}
"#;

fn overlay() -> Overlay {
    Overlay {
        modules: BTreeMap::from([(
            "oci://registry.example/demo:1.0".to_owned(),
            PathBuf::from("/opt/demo.wasm"),
        )]),
        ..Overlay::default()
    }
}

#[test]
fn istiod_translation_is_pinned() -> Result<()> {
    let plugin = WasmPlugin::from_yaml(FULL)?;
    let filter = plugin.to_envoy_filter(&overlay())?;
    let expected = json!({
        "name": "ecommerce.demo",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "ecommerce.demo",
                "root_id": "demo_root",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": "{\"a\":{\"nested\":[1,\"x\"]},\"b\":2}"
                },
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": "/opt/demo.wasm"}},
                    "environment_variables": {
                        "key_values": {"INLINE_VAR": "inline-value", "IMPLICIT_INLINE": "v2"},
                        "host_env_keys": ["FROM_HOST"]
                    }
                },
                "failure_policy": "FAIL_RELOAD"
            }
        }
    });
    assert_eq!(filter, expected);
    Ok(())
}

#[test]
fn defaults_fail_closed_and_empty_plugin_config_has_no_configuration() -> Result<()> {
    let plugin = WasmPlugin::from_yaml(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: bare}\nspec:\n  url: file:///x/bare.wasm\n",
    )?;
    let f = plugin.to_envoy_filter(&Overlay::default())?;
    let c = &f["typed_config"]["config"];
    assert_eq!(c["name"], "default.bare");
    assert_eq!(c["failure_policy"], "FAIL_CLOSED");
    assert_eq!(c["root_id"], "");
    assert!(c.get("configuration").is_none());
    assert_eq!(c["vm_config"]["code"]["local"]["filename"], "/x/bare.wasm");
    assert!(c["vm_config"].get("environment_variables").is_none());
    Ok(())
}

#[test]
fn order_is_phase_then_priority_then_name() -> Result<()> {
    let p = |name: &str, phase: Option<&str>, priority: Option<i32>| {
        let mut y = format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}, namespace: ecommerce}}\nspec:\n  url: file:///{name}.wasm\n"
        );
        if let Some(ph) = phase {
            y += &format!("  phase: {ph}\n");
        }
        if let Some(pr) = priority {
            y += &format!("  priority: {pr}\n");
        }
        WasmPlugin::from_yaml(&y).unwrap()
    };
    let plugins = vec![
        p("unspecified", None, Some(100)),
        p("stats", Some("STATS"), None),
        p("authz", Some("AUTHZ"), None),
        p("authn-low", Some("AUTHN"), Some(1)),
        p("authn-high", Some("AUTHN"), Some(10)),
        p("authn-b", Some("AUTHN"), None),
        p("authn-a", Some("AUTHN"), None),
    ];
    let order: Vec<&str> = chain(&plugins, &BTreeMap::new(), WorkloadMode::Server, 80)
        .iter()
        .map(|p| p.metadata.name.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "authn-high",
            "authn-low",
            "authn-a",
            "authn-b",
            "authz",
            "stats",
            "unspecified"
        ]
    );
    Ok(())
}

#[test]
fn selector_mode_and_ports_pick_the_traffic() -> Result<()> {
    let plugin = WasmPlugin::from_yaml(FULL)?;
    let product = workload_labels("product", "v1");
    assert!(plugin.applies_to(&product, WorkloadMode::Server, 8081));
    assert!(
        !plugin.applies_to(&product, WorkloadMode::Server, 9000),
        "other port"
    );
    assert!(
        !plugin.applies_to(&product, WorkloadMode::Client, 8081),
        "outbound"
    );
    assert!(!plugin.applies_to(
        &workload_labels("invoice", "v1"),
        WorkloadMode::Server,
        8081
    ));
    assert!(!plugin.applies_to(&gateway_labels(), WorkloadMode::Client, 8081));
    assert!(
        !plugin.applies_in("other", &product, WorkloadMode::Server, 8081),
        "another namespace"
    );
    let mut root = plugin.clone();
    root.metadata.namespace = "istio-system".into();
    assert!(
        root.applies_in("other", &product, WorkloadMode::Server, 8081),
        "the root namespace reaches all"
    );
    Ok(())
}

#[test]
fn overlays_patch_plugin_config_locally() -> Result<()> {
    let plugin = WasmPlugin::from_yaml(FULL)?;
    let mut o = overlay();
    o.plugin_config.insert(
        "ecommerce.demo".into(),
        json!({"b": null, "a": {"local": true}}),
    );
    let f = plugin.to_envoy_filter(&o)?;
    assert_eq!(
        f["typed_config"]["config"]["configuration"]["value"],
        "{\"a\":{\"local\":true,\"nested\":[1,\"x\"]}}"
    );
    Ok(())
}

#[test]
fn unknown_wasmplugin_fields_are_refused() {
    let typo = FULL.replace("failStrategy", "failStrategyy");
    assert!(WasmPlugin::from_yaml(&typo).is_err());
}

#[test]
fn every_shipped_plugin_renders_a_config_envoy_validates() -> Result<()> {
    // The separate plugins and the bundled sets: each a complete alternative for the mesh.
    for dir in [paths::wasmplugins(), paths::bundle_wasmplugins()] {
        every_plugin_in_renders_a_config_envoy_validates(&dir)?;
    }
    Ok(())
}

fn every_plugin_in_renders_a_config_envoy_validates(dir: &std::path::Path) -> Result<()> {
    let plugins = load_dir(dir)?;
    assert!(!plugins.is_empty(), "{}", dir.display());
    let overlay = Overlay::local()?;
    let upstream = "127.0.0.1:9".parse()?;
    let mut covered = std::collections::BTreeSet::new();
    for (what, labels, mode, port) in mesh_proxies() {
        let attached = chain(&plugins, &labels, mode, port);
        covered.extend(attached.iter().map(|p| p.metadata.name.clone()));
        let listener = Listener::new("main")
            .wasm_plugins(&plugins, &overlay, &labels, mode, port)?
            .route(Route::to_cluster("/", "backend"));
        let config = Bootstrap::new()
            .listener(listener)
            .cluster(Cluster::new("backend", &[upstream]))
            .to_json();
        validate(&config, &overlay.host_env).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    }
    let names: std::collections::BTreeSet<_> =
        plugins.iter().map(|p| p.metadata.name.clone()).collect();
    assert_eq!(
        covered,
        names,
        "every plugin in {} attaches to some workload",
        dir.display()
    );
    Ok(())
}

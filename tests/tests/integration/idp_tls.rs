//! The OAuth2 filter's calls to an IdP that only speaks TLS, through the cluster istiod builds
//! from k8s/mesh/idp.yaml: the `ServiceEntry` (`idp.example.com:443`, `protocol: TLS`) and the
//! `DestinationRule` that originates TLS (`tls.mode: SIMPLE`, SNI and SAN `idp.example.com`).
//!
//! The gateway runs the shipped `oauth2` WasmPlugin with its pluginConfig as written (issuer
//! `https://idp.example.com`, `idp_cluster: outbound|443||idp.example.com`, redirect URI on
//! `https://shop.example.com`); only the cluster's endpoint (the host name → the loopback IdP)
//! and its trust roots (the system bundle → a file with this test's CA, which issued the IdP's
//! certificate, as a public CA would) differ from the cluster's rendering. The browser side
//! reaches `https://idp.example.com` through a small Envoy that originates TLS the same way.

use anyhow::{Context, Result};
use meshwright_oauth2::stats::{COUNTERS, counter};
use meshwright_testbed::Bed;
use meshwright_testbed::agent::{Agent, login_via_idp};
use meshwright_testbed::envoy::{Envoy, Options};
use meshwright_testbed::forms::Form;
use meshwright_testbed::idp::{Idp, IdpOptions, free_port};
use meshwright_testbed::mesh::certs::{Ca, Identity};
use meshwright_testbed::mesh::clusters::SYSTEM_CA_BUNDLE;
use meshwright_testbed::mesh::{Mesh, PluginSet, proxy};
use meshwright_testbed::render::{Bootstrap, Cluster, Listener, Route, gateway_labels};
use meshwright_testbed::wasmplugin::{Overlay, WorkloadMode, shipped};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

const IDP: &str = "idp.example.com";
const ISSUER: &str = "https://idp.example.com";
const SHOP: &str = "https://shop.example.com";
const CLUSTER: &str = "outbound|443||idp.example.com";

/// An oidc-provider serving HTTPS only, as `https://idp.example.com`, with a certificate for
/// `cert_name` from `ca`.
async fn tls_idp(ca: &Ca, cert_name: &str, dir: &Path) -> Result<Idp> {
    let id: Identity = ca.issue_server(cert_name)?;
    let (cert, key) = (dir.join("idp.crt"), dir.join("idp.key"));
    std::fs::write(&cert, &id.cert_pem)?;
    std::fs::write(&key, &id.key_pem)?;
    let mut idp = Idp::new(
        free_port()?,
        IdpOptions {
            issuer: Some(ISSUER.into()),
            tls: Some((cert, key)),
            redirect_uris: vec![format!("{SHOP}/oauth2/callback")],
            post_logout_uris: vec![format!("{SHOP}/")],
            log: Some(dir.join("idp.log")),
            ..IdpOptions::default()
        },
    );
    idp.start().await?;
    Ok(idp)
}

/// The IdP's cluster as istiod renders it for the gateway (namespace istio-system), pointed at
/// `idp` and trusting `roots` (a PEM file) instead of the system bundle. `edit` changes the
/// rendering first (the negative cases).
fn idp_cluster(idp: SocketAddr, roots: &Path, edit: impl FnOnce(&mut Value)) -> Result<Cluster> {
    let mesh = Mesh::load(PluginSet::Separate, &BTreeMap::new())?;
    let mut rendered = proxy::external_cluster(&mesh, "istio-system", IDP, 443)?;
    assert_eq!(rendered["name"], CLUSTER);
    assert_eq!(rendered["type"], "STRICT_DNS", "resolution: DNS");
    let endpoint = &rendered["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
    assert_eq!(endpoint["address"]["socket_address"]["address"], IDP);
    let trusted = &mut rendered["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
        ["trusted_ca"]["filename"];
    assert_eq!(
        *trusted, SYSTEM_CA_BUNDLE,
        "no caCertificates: the system roots"
    );
    *trusted = json!(roots.display().to_string());
    edit(&mut rendered);
    let mut extra = rendered;
    if let Some(o) = extra.as_object_mut() {
        for k in ["name", "type", "load_assignment"] {
            o.remove(k);
        }
    }
    let mut c = Cluster::new(CLUSTER, &[idp]);
    c.extra = extra;
    Ok(c)
}

/// The browser's way to `https://idp.example.com`: plain HTTP in, TLS to the IdP out, checking
/// its certificate against `roots` (what a browser does with the OS's roots).
async fn browser_tls_front(idp: SocketAddr, roots: &Path) -> Result<Envoy> {
    let mut c = Cluster::new("idp", &[idp]);
    c.extra = json!({"transport_socket": {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": IDP,
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": roots.display().to_string()},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": IDP}}],
            }},
        },
    }});
    let config = Bootstrap::new()
        .listener(Listener::new("front").route(Route::to_cluster("/", "idp")))
        .cluster(c)
        .to_json();
    Envoy::start(&config, &Options::default()).await
}

/// A gateway with the shipped oauth2 WasmPlugin, its pluginConfig untouched, `idp` its IdP
/// cluster.
async fn gateway(idp: Cluster) -> Result<Bed> {
    let mut overlay = Overlay::local()?;
    overlay.plugin_config.clear();
    Bed::builder()
        .plugin(shipped("oauth2")?)
        .overlay(overlay)
        .workload(gateway_labels(), WorkloadMode::Client, 8080)
        .extra_cluster(idp)
        .start()
        .await
}

/// A filter-wide OAuth2 counter, by its name in `stats::COUNTERS`.
async fn oauth2_stat(bed: &Bed, name: &str) -> Result<u64> {
    assert!(COUNTERS.contains(&name), "no oauth2 counter {name}");
    bed.envoy.metric(&counter(name)).await
}

async fn a_login_goes_through_the_tls_originating_cluster() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new()?;
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, ca.pem())?;
    let idp = tls_idp(&ca, IDP, dir.path()).await?;
    let idp_addr: SocketAddr = format!("127.0.0.1:{}", idp.port).parse()?;
    let gw = gateway(idp_cluster(idp_addr, &roots, |_| {})?).await?;
    let front = browser_tls_front(idp_addr, &roots).await?;
    let agent = Agent::new()
        .alias(SHOP, gw.addr())
        .alias(ISSUER, front.listener("front"));
    let (url, page) = login_via_idp(&agent, &format!("{SHOP}/account"), "alice").await?;
    assert_eq!(
        url,
        format!("{SHOP}/account"),
        "back where the login started"
    );
    assert_eq!(page.status, 200, "{}", page.text());
    let seen = page.json().context("the upstream's echo")?;
    assert!(
        seen["headers"]["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Bearer ")),
        "{seen}"
    );
    assert_eq!(seen["headers"]["x-user-email"], "alice@example.com");
    // Discovery, JWKS and the code exchange all went through the cluster, over TLS: the IdP
    // speaks nothing else.
    assert!(oauth2_stat(&gw, "discovery_fetches").await? >= 1);
    assert!(oauth2_stat(&gw, "jwks_fetches").await? >= 1);
    assert_eq!(oauth2_stat(&gw, "discovery_failures").await?, 0);
    assert_eq!(oauth2_stat(&gw, "jwks_failures").await?, 0);
    assert_eq!(oauth2_stat(&gw, "logins_succeeded").await?, 1);
    assert_eq!(idp.grants("authorization_code"), 1);
    let handshakes = gw
        .envoy
        .stat(&format!("cluster.{CLUSTER}.ssl.handshake"))
        .await?;
    assert!(handshakes >= 1, "TLS handshakes to the IdP: {handshakes}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_through_the_istio_rendered_idp_cluster_reaches_a_tls_only_idp() -> Result<()> {
    Form::Separate
        .scope(a_login_goes_through_the_tls_originating_cluster())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bundle_reaches_a_tls_only_idp_through_the_same_cluster() -> Result<()> {
    Form::Bundle
        .scope(a_login_goes_through_the_tls_originating_cluster())
        .await
}

/// Without TLS origination (a ServiceEntry without its DestinationRule) and with a certificate
/// for another name, the IdP is unreachable: no login, and the failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_http_or_a_certificate_for_another_name_reaches_no_idp() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new()?;
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, ca.pem())?;
    let idp = tls_idp(&ca, "other.example.com", dir.path()).await?;
    let idp_addr: SocketAddr = format!("127.0.0.1:{}", idp.port).parse()?;
    let wrong_name = gateway(idp_cluster(idp_addr, &roots, |_| {})?).await?;
    let plain = gateway(idp_cluster(idp_addr, &roots, |c| {
        if let Some(o) = c.as_object_mut() {
            o.remove("transport_socket");
        }
    })?)
    .await?;
    for (what, gw) in [("wrong SAN", &wrong_name), ("plain HTTP", &plain)] {
        let agent = Agent::new().alias(SHOP, gw.addr());
        let r = agent.get(&format!("{SHOP}/account")).await?;
        assert!(
            r.status >= 500,
            "{what}: no IdP documents, no login redirect: {}",
            r.status
        );
        let failures = oauth2_stat(gw, "discovery_failures").await?;
        assert!(failures >= 1, "{what}: failures counted");
        assert_eq!(
            oauth2_stat(gw, "discovery_fetches").await?,
            failures,
            "{what}: every fetch failed"
        );
        assert_eq!(oauth2_stat(gw, "logins_started").await?, 0, "{what}");
    }
    let failed = wrong_name
        .envoy
        .stat(&format!("cluster.{CLUSTER}.ssl.fail_verify_san"))
        .await?;
    assert!(
        failed >= 1,
        "the SAN check refused the certificate: {failed}"
    );
    assert_eq!(idp.grants("authorization_code"), 0);
    Ok(())
}

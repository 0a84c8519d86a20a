//! DestinationRules → Envoy clusters, as istiod builds outbound clusters
//! (istio/istio `pilot/pkg/networking/core/cluster_traffic_policy.go`): `connectionPool` →
//! `connect_timeout`, circuit-breaker thresholds (Istio's defaults are "unlimited", 2³²−1) and
//! HTTP idle timeout; `retryBudget` → the thresholds' `retry_budget`; `outlierDetection` →
//! `outlier_detection` (a consecutive-errors limit is enforced at 100 %, `minHealthPercent` is
//! the panic threshold, default 0); `loadBalancer.simple` (default LEAST_REQUEST); `tls.mode:
//! ISTIO_MUTUAL` → mTLS with the caller's SPIFFE certificate, checking the server's SAN;
//! `tls.mode: SIMPLE` → TLS origination ([`upstream_simple_tls`]);
//! subsets → a cluster each, their `trafficPolicy` replacing the top-level one field by field.

use super::certs::Identity;
use super::model::{ClientTls, DestinationRule, Named, TrafficPolicy};
use super::routes::duration;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Where an endpoint listens: an IP (loopback, locally) or a host name (compose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
        }
    }

    fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// How a caller reaches the upstream's sidecars: with its own identity, expecting theirs.
#[derive(Debug, Clone)]
pub struct MutualTls<'a> {
    pub client: &'a Identity,
    pub ca_pem: &'a str,
    /// SPIFFE ids the server's certificate may carry (the destination's service accounts).
    pub server_ids: Vec<String>,
    pub sni: String,
}

/// The effective policy of a subset: its own fields where it sets them, else the rule's.
fn merged(rule: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>) -> TrafficPolicy {
    let base = rule.cloned().unwrap_or_default();
    let Some(s) = subset else { return base };
    TrafficPolicy {
        tls: s.tls.clone().or(base.tls),
        connection_pool: s.connection_pool.clone().or(base.connection_pool),
        outlier_detection: s.outlier_detection.clone().or(base.outlier_detection),
        retry_budget: s.retry_budget.clone().or(base.retry_budget),
        load_balancer: s.load_balancer.clone().or(base.load_balancer),
    }
}

/// The traffic policy for `subset` of the rule (the rule's own when `subset` is `None`).
pub fn policy_for(
    rule: Option<&Named<DestinationRule>>,
    subset: Option<&str>,
) -> Result<TrafficPolicy> {
    let Some(rule) = rule else {
        if let Some(s) = subset {
            bail!("subset {s} needs a DestinationRule");
        }
        return Ok(TrafficPolicy::default());
    };
    let sub = match subset {
        None => None,
        Some(name) => Some(
            rule.spec
                .subsets
                .iter()
                .find(|s| s.name == name)
                .with_context(|| format!("DestinationRule {} has no subset {name}", rule.id()))?,
        ),
    };
    Ok(merged(
        rule.spec.traffic_policy.as_ref(),
        sub.and_then(|s| s.traffic_policy.as_ref()),
    ))
}

const UNLIMITED: u64 = u32::MAX as u64;

/// An Envoy `UpstreamTlsContext` transport socket for Istio mutual TLS.
pub fn upstream_mtls(m: &MutualTls<'_>) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": m.sni,
            "common_tls_context": {
                "tls_certificates": [m.client.tls_certificate()],
                "validation_context": {
                    "trusted_ca": {"inline_string": m.ca_pem},
                    "match_typed_subject_alt_names": m.server_ids.iter().map(|id| json!({
                        "san_type": "URI", "matcher": {"exact": id},
                    })).collect::<Vec<_>>(),
                },
            },
        },
    })
}

/// Where Istio's proxies find the system's trust roots when a `SIMPLE` rule names no
/// `caCertificates` (istiod's `VERIFY_CERTIFICATE_AT_CLIENT`, on by default since 1.20, makes the
/// server certificate checked against them rather than not at all). The Debian/Ubuntu path, as in
/// the istio-proxy image.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An Envoy `UpstreamTlsContext` for a `SIMPLE` client TLS policy (TLS origination to a host
/// outside the mesh): SNI as `tls.sni` says, the server's certificate checked against
/// `caCertificates` (else the system roots) and, when `subjectAltNames` are listed, its DNS SANs.
/// Without `sni` Envoy takes it from the request's host (`auto_sni`, istiod's
/// `ENABLE_AUTO_SNI`) and, with no SANs listed either, checks the certificate against that name
/// (`auto_san_validation`): those two live in the cluster's protocol options ([`cluster`]).
pub fn upstream_simple_tls(tls: &ClientTls) -> Value {
    let roots = tls.ca_certificates.as_deref().unwrap_or(SYSTEM_CA_BUNDLE);
    let mut validation = json!({"trusted_ca": {"filename": roots}});
    if !tls.subject_alt_names.is_empty() {
        validation["match_typed_subject_alt_names"] = json!(
            tls.subject_alt_names
                .iter()
                .map(|n| json!({"san_type": "DNS", "matcher": {"exact": n}}))
                .collect::<Vec<_>>()
        );
    }
    let mut ctx = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {"validation_context": validation},
    });
    if let Some(sni) = &tls.sni {
        ctx["sni"] = json!(sni);
    }
    json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx})
}

/// One outbound cluster: `name`, its endpoints, the effective policy, and the mTLS settings the
/// policy's `tls.mode` asks for.
pub fn cluster(
    name: &str,
    endpoints: &[Endpoint],
    policy: &TrafficPolicy,
    mtls: Option<&MutualTls<'_>>,
) -> Result<Value> {
    let all_ips = endpoints.iter().all(Endpoint::is_ip);
    let mut c = json!({
        "name": name,
        "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
        // Istio's mesh default connectTimeout.
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": endpoints.iter().map(|e| json!({
                "endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}},
            })).collect::<Vec<_>>()}],
        },
    });
    let mut thresholds = json!({
        "max_connections": UNLIMITED,
        "max_pending_requests": UNLIMITED,
        "max_requests": UNLIMITED,
        "max_retries": UNLIMITED,
        "track_remaining": true,
    });
    let mut http_options = json!({});
    if let Some(pool) = &policy.connection_pool {
        if let Some(tcp) = &pool.tcp {
            if let Some(n) = tcp.max_connections {
                thresholds["max_connections"] = json!(n);
            }
            if let Some(t) = &tcp.connect_timeout {
                c["connect_timeout"] = json!(duration(t).context("connectTimeout")?);
            }
        }
        if let Some(h) = &pool.http {
            if let Some(n) = h.http1_max_pending_requests {
                thresholds["max_pending_requests"] = json!(n);
            }
            if let Some(n) = h.http2_max_requests {
                thresholds["max_requests"] = json!(n);
            }
            if let Some(n) = h.max_retries {
                thresholds["max_retries"] = json!(n);
            }
            if let Some(t) = &h.idle_timeout {
                http_options["idle_timeout"] = json!(duration(t).context("idleTimeout")?);
            }
            if let Some(n) = h.max_requests_per_connection {
                http_options["max_requests_per_connection"] = json!(n);
            }
        }
    }
    if let Some(b) = &policy.retry_budget {
        let mut budget = json!({"budget_percent": {"value": b.percent}});
        if let Some(m) = b.min_retry_concurrency {
            budget["min_retry_concurrency"] = json!(m);
        }
        thresholds["retry_budget"] = budget;
    }
    c["circuit_breakers"] = json!({"thresholds": [thresholds]});
    c["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": http_options,
            "explicit_http_config": {"http_protocol_options": {}},
        }
    });
    if let Some(o) = &policy.outlier_detection {
        let mut od = json!({"enforcing_success_rate": 0});
        let limit = |n: u32| if n > 0 { 100 } else { 0 };
        match o.consecutive_5xx_errors {
            Some(n) => {
                od["consecutive_5xx"] = json!(n);
                od["enforcing_consecutive_5xx"] = json!(limit(n));
            }
            None => od["enforcing_consecutive_5xx"] = json!(0),
        }
        match o.consecutive_gateway_errors {
            Some(n) => {
                od["consecutive_gateway_failure"] = json!(n);
                od["enforcing_consecutive_gateway_failure"] = json!(limit(n));
            }
            None => od["enforcing_consecutive_gateway_failure"] = json!(0),
        }
        if let Some(t) = &o.interval {
            od["interval"] = json!(duration(t).context("outlierDetection.interval")?);
        }
        if let Some(t) = &o.base_ejection_time {
            od["base_ejection_time"] =
                json!(duration(t).context("outlierDetection.baseEjectionTime")?);
        }
        if let Some(p) = o.max_ejection_percent {
            od["max_ejection_percent"] = json!(p);
        }
        c["outlier_detection"] = od;
        c["common_lb_config"] = json!({"healthy_panic_threshold": {
            "value": o.min_health_percent.unwrap_or(0),
        }});
    }
    if let Some(lb) = &policy.load_balancer {
        c["lb_policy"] = json!(match lb.simple.as_str() {
            "ROUND_ROBIN" => "ROUND_ROBIN",
            "LEAST_REQUEST" | "LEAST_CONN" => "LEAST_REQUEST",
            "RANDOM" => "RANDOM",
            other => bail!("loadBalancer.simple {other} is not translated locally"),
        });
    }
    match policy.tls.as_ref().map(|t: &ClientTls| t.mode.as_str()) {
        // Istio's auto mTLS: a sidecar-to-sidecar call is mutual TLS unless a rule disables it.
        None | Some("ISTIO_MUTUAL") => {
            if let Some(m) = mtls {
                c["transport_socket"] = upstream_mtls(m);
            }
        }
        Some("DISABLE") => {}
        Some("SIMPLE") => {
            let Some(tls) = policy.tls.as_ref() else {
                bail!("tls.mode SIMPLE without tls")
            };
            c["transport_socket"] = upstream_simple_tls(tls);
            if tls.sni.is_none() {
                let p = &mut c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
                p["upstream_http_protocol_options"] = json!({
                    "auto_sni": true,
                    "auto_san_validation": tls.subject_alt_names.is_empty(),
                });
            }
        }
        Some(other) => bail!("tls.mode {other} is not translated locally"),
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::model::Subset;

    fn rule(yaml: &str) -> Named<DestinationRule> {
        Named {
            name: "product".into(),
            namespace: "ecommerce".into(),
            spec: yaml_serde::from_str(yaml).unwrap(),
        }
    }

    const PRODUCT: &str = r#"
host: product.ecommerce.svc.cluster.local
trafficPolicy:
  tls: {mode: ISTIO_MUTUAL}
  connectionPool:
    tcp: {maxConnections: 200, connectTimeout: 2s}
    http: {http1MaxPendingRequests: 100, http2MaxRequests: 400, idleTimeout: 300s}
  outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 3, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  retryBudget: {percent: 20, minRetryConcurrency: 3}
subsets:
- {name: v1, labels: {version: v1}}
- name: v2
  labels: {version: v2}
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
"#;

    #[test]
    fn connection_pool_outlier_detection_and_retry_budget_are_translated() {
        let r = rule(PRODUCT);
        let p = policy_for(Some(&r), Some("v1")).unwrap();
        let c = cluster("x", &[Endpoint::new("127.0.0.1", 1)], &p, None).unwrap();
        assert_eq!(c["type"], "STATIC");
        assert_eq!(c["connect_timeout"], "2s");
        let t = &c["circuit_breakers"]["thresholds"][0];
        assert_eq!(t["max_connections"], 200);
        assert_eq!(t["max_pending_requests"], 100);
        assert_eq!(t["max_requests"], 400);
        assert_eq!(t["max_retries"], UNLIMITED);
        assert_eq!(t["retry_budget"]["budget_percent"]["value"], 20.0);
        assert_eq!(t["retry_budget"]["min_retry_concurrency"], 3);
        let od = &c["outlier_detection"];
        assert_eq!(od["consecutive_5xx"], 5);
        assert_eq!(od["enforcing_consecutive_5xx"], 100);
        assert_eq!(od["consecutive_gateway_failure"], 3);
        assert_eq!(od["enforcing_consecutive_gateway_failure"], 100);
        assert_eq!(od["base_ejection_time"], "30s");
        assert_eq!(od["max_ejection_percent"], 50);
        assert_eq!(c["common_lb_config"]["healthy_panic_threshold"]["value"], 0);
        assert_eq!(c["lb_policy"], "LEAST_REQUEST");
        assert_eq!(
            c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["common_http_protocol_options"]["idle_timeout"],
            "300s"
        );
    }

    #[test]
    fn a_subsets_policy_replaces_the_rules_field_by_field() {
        let r = rule(PRODUCT);
        let p = policy_for(Some(&r), Some("v2")).unwrap();
        assert_eq!(p.load_balancer.unwrap().simple, "ROUND_ROBIN");
        assert!(p.outlier_detection.is_some(), "kept from the rule");
        assert!(policy_for(Some(&r), Some("v3")).is_err());
        assert!(policy_for(None, Some("v1")).is_err());
        let _ = Subset {
            name: String::new(),
            labels: Default::default(),
            traffic_policy: None,
        };
    }

    #[test]
    fn simple_tls_originates_tls_checking_the_servers_dns_name_against_the_system_roots() {
        let r = rule(
            "host: idp.example.com\ntrafficPolicy:\n  tls: {mode: SIMPLE, sni: idp.example.com, subjectAltNames: [idp.example.com]}\n",
        );
        let p = policy_for(Some(&r), None).unwrap();
        let c = cluster("x", &[Endpoint::new("idp.example.com", 443)], &p, None).unwrap();
        let ctx = &c["transport_socket"]["typed_config"];
        assert_eq!(ctx["sni"], "idp.example.com");
        let v = &ctx["common_tls_context"]["validation_context"];
        assert_eq!(v["trusted_ca"]["filename"], SYSTEM_CA_BUNDLE);
        assert_eq!(v["match_typed_subject_alt_names"][0]["san_type"], "DNS");
        assert_eq!(
            v["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "idp.example.com"
        );
        assert!(ctx["common_tls_context"].get("tls_certificates").is_none());
        let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(opts.get("upstream_http_protocol_options").is_none());
    }

    #[test]
    fn simple_tls_without_sni_takes_it_and_the_checked_name_from_the_request() {
        let r = rule(
            "host: idp.example.com\ntrafficPolicy:\n  tls: {mode: SIMPLE, caCertificates: /etc/idp-ca.pem}\n",
        );
        let p = policy_for(Some(&r), None).unwrap();
        let c = cluster("x", &[Endpoint::new("idp.example.com", 443)], &p, None).unwrap();
        let ctx = &c["transport_socket"]["typed_config"];
        assert!(ctx.get("sni").is_none());
        assert_eq!(
            ctx["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
            "/etc/idp-ca.pem"
        );
        let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            ["upstream_http_protocol_options"];
        assert_eq!(opts["auto_sni"], true);
        assert_eq!(opts["auto_san_validation"], true);
    }

    #[test]
    fn host_names_make_a_dns_cluster() {
        let c = cluster(
            "x",
            &[Endpoint::new("product-v1-0", 15006)],
            &TrafficPolicy::default(),
            None,
        )
        .unwrap();
        assert_eq!(c["type"], "STRICT_DNS");
        assert!(c.get("outlier_detection").is_none());
    }
}

//! RequestAuthentication → Envoy `jwt_authn`, PeerAuthentication → the inbound listener's TLS,
//! as istiod translates them (istio/istio `pilot/pkg/security/authn/policy_applier.go`).
//!
//! `jwt_authn`: one provider per jwt rule (sorted by issuer, named `origins-<i>`) with `issuer`,
//! `audiences`, `forward` = `forwardOriginalToken`, `forward_payload_header` =
//! `outputPayloadToHeader`, `claim_to_headers` = `outputClaimToHeaders`, the payload in the
//! filter's metadata under `payload` (what AuthorizationPolicy `requestPrincipals` match on) and
//! the keys inline (istiod fetches `jwksUri` itself and inlines the JWKS); every path requires
//! "a valid token from one of them, or no token" — a bad token is refused (401), a missing one is
//! left to AuthorizationPolicy.

use super::certs::Identity;
use super::model::{JwtRule, Named, PeerAuthentication, policy_applies};
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The `jwt_authn` filter for these rules, the JWKS of each from `jwks`; `None` without rules.
pub fn jwt_authn(
    rules: &[&JwtRule],
    jwks: &dyn Fn(&JwtRule) -> Result<String>,
) -> Result<Option<Value>> {
    if rules.is_empty() {
        return Ok(None);
    }
    let mut sorted = rules.to_vec();
    sorted.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    let mut providers = serde_json::Map::new();
    let mut names = Vec::new();
    for (i, r) in sorted.iter().enumerate() {
        let mut p = json!({
            "issuer": r.issuer,
            "forward": r.forward_original_token,
            "payload_in_metadata": "payload",
            "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
            "local_jwks": {"inline_string": jwks(r)?},
        });
        if !r.audiences.is_empty() {
            p["audiences"] = json!(r.audiences);
        }
        if let Some(h) = &r.output_payload_to_header {
            p["forward_payload_header"] = json!(h);
        }
        if !r.output_claim_to_headers.is_empty() {
            p["claim_to_headers"] = json!(
                r.output_claim_to_headers
                    .iter()
                    .map(|c| json!({"header_name": c.header, "claim_name": c.claim}))
                    .collect::<Vec<_>>()
            );
        }
        if !r.from_headers.is_empty() {
            p["from_headers"] = json!(
                r.from_headers
                    .iter()
                    .map(|h| {
                        let mut v = json!({"name": h.name});
                        if let Some(prefix) = &h.prefix {
                            v["value_prefix"] = json!(prefix);
                        }
                        v
                    })
                    .collect::<Vec<_>>()
            );
        }
        let name = format!("origins-{i}");
        providers.insert(name.clone(), p);
        names.push(name);
    }
    let provider_or_missing = |n: &String| json!({"requires_any": {"requirements": [{"provider_name": n}, {"allow_missing": {}}]}});
    let requires = match names.as_slice() {
        [one] => provider_or_missing(one),
        many => {
            let mut any: Vec<Value> = many.iter().map(|n| json!({"provider_name": n})).collect();
            any.push(json!({"requires_all": {"requirements":
                many.iter().map(provider_or_missing).collect::<Vec<_>>()}}));
            json!({"requires_any": {"requirements": any}})
        }
    };
    Ok(Some(json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
            "bypass_cors_preflight": true,
        }
    })))
}

/// Inbound mTLS mode of a workload, as PeerAuthentication resolves it: the workload's own
/// policy, else its namespace's, else the mesh's (root namespace), else PERMISSIVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMode {
    Strict,
    Permissive,
    Disable,
}

pub fn peer_mode(
    policies: &[Named<PeerAuthentication>],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<PeerMode> {
    let root = crate::wasmplugin::ROOT_NAMESPACE;
    let applies = |p: &&Named<PeerAuthentication>| {
        policy_applies(&p.namespace, p.spec.selector.as_ref(), namespace, labels)
    };
    let rank = |p: &Named<PeerAuthentication>| {
        if p.spec.selector.is_some() {
            0
        } else if p.namespace == namespace {
            1
        } else if p.namespace == root {
            2
        } else {
            3
        }
    };
    let best = policies.iter().filter(applies).min_by_key(|p| rank(p));
    Ok(match best.map(|p| p.spec.mtls.mode.as_str()) {
        None | Some("PERMISSIVE") | Some("UNSET") => PeerMode::Permissive,
        Some("STRICT") => PeerMode::Strict,
        Some("DISABLE") => PeerMode::Disable,
        Some(other) => bail!("PeerAuthentication mode {other} is not translated locally"),
    })
}

/// The inbound listener's `DownstreamTlsContext`: the workload's certificate, client
/// certificates required and checked against the mesh's CA and trust domain.
pub fn downstream_mtls(id: &Identity, ca_pem: &str) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "tls_certificates": [id.tls_certificate()],
                "validation_context": {
                    "trusted_ca": {"inline_string": ca_pem},
                    "match_typed_subject_alt_names": [{
                        "san_type": "URI",
                        "matcher": {"prefix": format!("spiffe://{}/", super::model::TRUST_DOMAIN)},
                    }],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> JwtRule {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn one_rule_requires_its_provider_or_no_token() {
        let r = rule(
            "issuer: https://shop.example.com/meshwright\naudiences: [ecommerce]\nforwardOriginalToken: true\noutputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]",
        );
        let f = jwt_authn(&[&r], &|_| Ok("{\"keys\":[]}".into()))
            .unwrap()
            .unwrap();
        let c = &f["typed_config"];
        let p = &c["providers"]["origins-0"];
        assert_eq!(p["issuer"], "https://shop.example.com/meshwright");
        assert_eq!(p["forward"], true);
        assert_eq!(p["payload_in_metadata"], "payload");
        assert_eq!(p["audiences"], json!(["ecommerce"]));
        assert_eq!(
            p["claim_to_headers"],
            json!([{"header_name": "x-jwt-sub", "claim_name": "sub"}])
        );
        assert_eq!(
            c["rules"][0]["requires"]["requires_any"]["requirements"][1],
            json!({"allow_missing": {}})
        );
    }

    #[test]
    fn no_rules_no_filter() {
        assert!(jwt_authn(&[], &|_| Ok(String::new())).unwrap().is_none());
    }

    #[test]
    fn the_narrowest_peer_authentication_wins() {
        let pa = |ns: &str, selector: Option<&str>, mode: &str| Named {
            name: "p".into(),
            namespace: ns.into(),
            spec: PeerAuthentication {
                selector: selector.map(|app| super::super::model::Selector {
                    match_labels: BTreeMap::from([("app".into(), app.into())]),
                }),
                mtls: super::super::model::Mtls { mode: mode.into() },
            },
        };
        let labels = BTreeMap::from([("app".to_owned(), "store".to_owned())]);
        let all = vec![
            pa("istio-system", None, "PERMISSIVE"),
            pa("ecommerce", None, "STRICT"),
        ];
        assert_eq!(
            peer_mode(&all, "ecommerce", &labels).unwrap(),
            PeerMode::Strict
        );
        let mut with_workload = all.clone();
        with_workload.push(pa("ecommerce", Some("store"), "DISABLE"));
        assert_eq!(
            peer_mode(&with_workload, "ecommerce", &labels).unwrap(),
            PeerMode::Disable
        );
        assert_eq!(
            peer_mode(&[], "ecommerce", &labels).unwrap(),
            PeerMode::Permissive
        );
    }
}

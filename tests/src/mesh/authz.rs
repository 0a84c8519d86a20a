//! AuthorizationPolicy → Envoy RBAC, as istiod translates it (istio/istio
//! `pilot/pkg/security/authz/builder` and `model`): the DENY policies of a workload become one RBAC
//! filter with action DENY, its ALLOW policies one with action ALLOW placed after it (so a
//! request matching no ALLOW rule gets 403, and an ALLOW policy without rules — `spec: {}` —
//! allows nothing). Each rule is a policy `ns[<ns>]-policy[<name>]-rule[<i>]`:
//! - `from[].source` (OR of sources; within one, AND of fields): `principals` → the peer
//!   certificate's SPIFFE id, `namespaces` → its `/ns/<ns>/` part, `requestPrincipals` →
//!   `<iss>/<sub>` of the JWT `jwt_authn` verified (its payload metadata), and their `not…`;
//! - `to[].operation` (OR; within one AND): `paths` (exact, `prefix*`, `*suffix`, `*`),
//!   `methods`, and their `not…`.
//!
//! Fields the translation does not handle are refused when the manifests are read
//! ([`super::model`]).

use super::model::{AuthorizationPolicy, Named, Operation, Source};
use anyhow::{Result, bail};
use serde_json::{Value, json};

/// Istio's string match of a policy value: `*` any (non-empty), `x*` prefix, `*x` suffix,
/// else exact; `prefix` is prepended to the literal part (e.g. `spiffe://`).
fn string_match(value: &str, prefix: &str) -> Value {
    if value == "*" {
        json!({"safe_regex": {"regex": ".+"}})
    } else if let Some(p) = value.strip_suffix('*') {
        json!({"prefix": format!("{prefix}{p}")})
    } else if let Some(s) = value.strip_prefix('*') {
        json!({"suffix": s})
    } else {
        json!({"exact": format!("{prefix}{value}")})
    }
}

fn any_of(kind: &str, items: Vec<Value>) -> Value {
    if kind == "or_rules" {
        json!({"or_rules": {"rules": items}})
    } else {
        json!({"or_ids": {"ids": items}})
    }
}

fn jwt_claim(claim: &str, m: Value) -> Value {
    json!({"sourced_metadata": {"metadata_matcher": {
        "filter": "envoy.filters.http.jwt_authn",
        "path": [{"key": "payload"}, {"key": claim}],
        "value": {"string_match": m},
    }}})
}

/// `<iss>/<sub>` (split at the last `/`, issuers being URLs) with Istio's wildcards.
fn request_principal(value: &str) -> Value {
    let any = json!({"safe_regex": {"regex": ".+"}});
    let (iss, sub) = match value.rsplit_once('/') {
        Some((iss, sub)) => (iss, Some(sub)),
        None => (value, None),
    };
    let (iss_m, sub_m) = if value == "*" {
        (any.clone(), any)
    } else if let Some(rest) = value.strip_prefix('*') {
        match sub {
            Some(s) if iss == "*" => (any, json!({"exact": s})),
            Some(s) => (
                json!({"suffix": iss.trim_start_matches('*')}),
                json!({"exact": s}),
            ),
            None => (any, json!({"suffix": rest})),
        }
    } else if value.ends_with('*') {
        match sub {
            Some("*") => (json!({"exact": iss}), any),
            Some(s) => (
                json!({"exact": iss}),
                json!({"prefix": s.trim_end_matches('*')}),
            ),
            None => (json!({"prefix": value.trim_end_matches('*')}), any),
        }
    } else {
        (json!({"exact": iss}), json!({"exact": sub.unwrap_or("")}))
    };
    json!({"and_ids": {"ids": [jwt_claim("iss", iss_m), jwt_claim("sub", sub_m)]}})
}

fn principal(s: &Source) -> Value {
    let mut ids = Vec::new();
    let peer =
        |v: &String| json!({"authenticated": {"principal_name": string_match(v, "spiffe://")}});
    let ns = |v: &String| {
        json!({"authenticated": {"principal_name": {"safe_regex": {
            "regex": format!(".*/ns/{}/.*", v.replace('*', ".*")),
        }}}})
    };
    let field =
        |ids: &mut Vec<Value>, values: &[String], f: &dyn Fn(&String) -> Value, not: bool| {
            if values.is_empty() {
                return;
            }
            let m = any_of("or_ids", values.iter().map(f).collect());
            ids.push(if not { json!({"not_id": m}) } else { m });
        };
    field(&mut ids, &s.principals, &peer, false);
    field(&mut ids, &s.not_principals, &peer, true);
    field(
        &mut ids,
        &s.request_principals,
        &|v| request_principal(v),
        false,
    );
    field(
        &mut ids,
        &s.not_request_principals,
        &|v| request_principal(v),
        true,
    );
    field(&mut ids, &s.namespaces, &ns, false);
    field(&mut ids, &s.not_namespaces, &ns, true);
    if ids.is_empty() {
        json!({"any": true})
    } else {
        json!({"and_ids": {"ids": ids}})
    }
}

fn permission(o: &Operation) -> Value {
    let mut rules = Vec::new();
    let path = |v: &String| {
        let m = if v == "*" {
            json!({"prefix": "/"})
        } else {
            string_match(v, "")
        };
        json!({"url_path": {"path": m}})
    };
    let method = |v: &String| json!({"header": {"name": ":method", "string_match": {"exact": v}}});
    let field =
        |rules: &mut Vec<Value>, values: &[String], f: &dyn Fn(&String) -> Value, not: bool| {
            if values.is_empty() {
                return;
            }
            let m = any_of("or_rules", values.iter().map(f).collect());
            rules.push(if not { json!({"not_rule": m}) } else { m });
        };
    field(&mut rules, &o.paths, &path, false);
    field(&mut rules, &o.not_paths, &path, true);
    field(&mut rules, &o.methods, &method, false);
    field(&mut rules, &o.not_methods, &method, true);
    if rules.is_empty() {
        json!({"any": true})
    } else {
        json!({"and_rules": {"rules": rules}})
    }
}

/// The RBAC filters for the policies that apply to one workload: DENY first, then ALLOW;
/// none when no policy applies.
pub fn rbac_filters(policies: &[&Named<AuthorizationPolicy>]) -> Result<Vec<Value>> {
    let mut deny = serde_json::Map::new();
    let mut allow = serde_json::Map::new();
    let mut any_allow = false;
    for p in policies {
        let target = match p.spec.action.as_deref().unwrap_or("ALLOW") {
            "ALLOW" => {
                any_allow = true;
                &mut allow
            }
            "DENY" => &mut deny,
            other => bail!(
                "AuthorizationPolicy {}: action {other} is not translated locally",
                p.id()
            ),
        };
        for (i, rule) in p.spec.rules.iter().enumerate() {
            let permissions: Vec<Value> = if rule.to.is_empty() {
                vec![json!({"any": true})]
            } else {
                rule.to.iter().map(|t| permission(&t.operation)).collect()
            };
            let principals: Vec<Value> = if rule.from.is_empty() {
                vec![json!({"any": true})]
            } else {
                rule.from.iter().map(|f| principal(&f.source)).collect()
            };
            target.insert(
                format!("ns[{}]-policy[{}]-rule[{i}]", p.namespace, p.name),
                json!({"permissions": permissions, "principals": principals}),
            );
        }
    }
    let filter = |action: &str, policies: serde_json::Map<String, Value>| {
        json!({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": action, "policies": policies},
            }
        })
    };
    let mut out = Vec::new();
    if !deny.is_empty() {
        out.push(filter("DENY", deny));
    }
    if any_allow {
        out.push(filter("ALLOW", allow));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, yaml: &str) -> Named<AuthorizationPolicy> {
        Named {
            name: name.into(),
            namespace: "ecommerce".into(),
            spec: yaml_serde::from_str(yaml).unwrap(),
        }
    }

    #[test]
    fn deny_all_alone_allows_nothing() {
        let p = policy("deny-all", "{}");
        let f = rbac_filters(&[&p]).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0]["typed_config"]["rules"]["action"], "ALLOW");
        assert_eq!(f[0]["typed_config"]["rules"]["policies"], json!({}));
    }

    #[test]
    fn principals_paths_and_request_principals_are_translated() {
        let p = policy(
            "invoice",
            r#"
action: ALLOW
rules:
- from:
  - source:
      principals: [cluster.local/ns/ecommerce/sa/store]
      requestPrincipals: ["https://shop.example.com/meshwright/*"]
  to:
  - operation: {paths: ["/api/*"], methods: [GET]}
  - operation: {notPaths: [/management, "/management/*"]}
"#,
        );
        let f = rbac_filters(&[&p]).unwrap();
        let rule =
            &f[0]["typed_config"]["rules"]["policies"]["ns[ecommerce]-policy[invoice]-rule[0]"];
        let ids = &rule["principals"][0]["and_ids"]["ids"];
        assert_eq!(
            ids[0]["or_ids"]["ids"][0]["authenticated"]["principal_name"],
            json!({"exact": "spiffe://cluster.local/ns/ecommerce/sa/store"})
        );
        let rp = &ids[1]["or_ids"]["ids"][0]["and_ids"]["ids"];
        assert_eq!(
            rp[0]["sourced_metadata"]["metadata_matcher"]["value"]["string_match"],
            json!({"exact": "https://shop.example.com/meshwright"})
        );
        assert_eq!(
            rp[0]["sourced_metadata"]["metadata_matcher"]["path"][1]["key"],
            "iss"
        );
        assert_eq!(
            rp[1]["sourced_metadata"]["metadata_matcher"]["value"]["string_match"],
            json!({"safe_regex": {"regex": ".+"}})
        );
        let perm = &rule["permissions"];
        assert_eq!(
            perm[0]["and_rules"]["rules"][0]["or_rules"]["rules"][0]["url_path"]["path"],
            json!({"prefix": "/api/"})
        );
        assert_eq!(
            perm[0]["and_rules"]["rules"][1]["or_rules"]["rules"][0]["header"]["string_match"],
            json!({"exact": "GET"})
        );
        assert!(perm[1]["and_rules"]["rules"][0]["not_rule"].is_object());
    }

    #[test]
    fn deny_policies_come_first() {
        let d = policy(
            "no-admin",
            "action: DENY\nrules: [{to: [{operation: {paths: [/admin]}}]}]",
        );
        let a = policy("all", "rules: [{}]");
        let f = rbac_filters(&[&a, &d]).unwrap();
        assert_eq!(f[0]["typed_config"]["rules"]["action"], "DENY");
        assert_eq!(f[1]["typed_config"]["rules"]["action"], "ALLOW");
        let r = &f[1]["typed_config"]["rules"]["policies"]["ns[ecommerce]-policy[all]-rule[0]"];
        assert_eq!(r["principals"][0], json!({"any": true}));
    }

    #[test]
    fn request_principal_wildcards_follow_istio() {
        let exact = request_principal("https://a/b/alice");
        assert_eq!(
            exact["and_ids"]["ids"][1]["sourced_metadata"]["metadata_matcher"]["value"]["string_match"],
            json!({"exact": "alice"})
        );
        let any = request_principal("*");
        assert_eq!(
            any["and_ids"]["ids"][0]["sourced_metadata"]["metadata_matcher"]["value"]["string_match"],
            json!({"safe_regex": {"regex": ".+"}})
        );
    }

    #[test]
    fn custom_actions_are_refused() {
        let p = policy("ext", "action: CUSTOM\nrules: [{}]");
        assert!(rbac_filters(&[&p]).is_err());
    }
}

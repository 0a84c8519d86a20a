//! VirtualService `http` rules → Envoy routes, as istiod translates them
//! (istio/istio `pilot/pkg/networking/core/route`, `route/retry`): one Envoy route per `match`
//! entry (a rule without one matches every path), `uri` prefix/exact/regex, header and method
//! conditions, one destination or weighted clusters named `outbound|<port>|<subset>|<host>`,
//! `rewrite`, `timeout` (none: 0s, disabled), `retries` (none: Istio's default policy; attempts
//! 0: none), header operations, `directResponse`.

use super::model::{
    HeaderOperations, HttpMatch, HttpRoute, Named, Retries, StringMatch, VirtualService,
};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Istio's name for an outbound cluster.
pub fn outbound_cluster(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// A duration as Istio writes it (`15s`, `0.5s`, `300ms`) in Envoy's JSON form (`15s`).
pub fn duration(d: &str) -> Result<String> {
    let secs = if let Some(ms) = d.strip_suffix("ms") {
        ms.parse::<f64>().map(|v| v / 1000.0)
    } else if let Some(s) = d.strip_suffix('s') {
        s.parse::<f64>()
    } else if let Some(m) = d.strip_suffix('m') {
        m.parse::<f64>().map(|v| v * 60.0)
    } else {
        bail!("duration {d:?}: expected e.g. 15s or 300ms")
    }
    .with_context(|| format!("duration {d:?}"))?;
    if !secs.is_finite() || secs < 0.0 {
        bail!("duration {d:?} is negative");
    }
    Ok(format!("{}s", (secs * 1000.0).round() / 1000.0))
}

/// An Istio `StringMatch` as an Envoy `StringMatcher`.
fn string_matcher(m: &StringMatch, what: &str) -> Result<Value> {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), None, None) => Ok(json!({"exact": e})),
        (None, Some(p), None) => Ok(json!({"prefix": p})),
        (None, None, Some(r)) => Ok(json!({"safe_regex": {"regex": r}})),
        _ => bail!("{what}: exactly one of exact, prefix, regex"),
    }
}

fn route_match(m: &HttpMatch) -> Result<Value> {
    let mut out = match &m.uri {
        None => json!({"prefix": "/"}),
        Some(u) => match (&u.exact, &u.prefix, &u.regex) {
            (Some(e), None, None) => json!({"path": e}),
            (None, Some(p), None) => json!({"prefix": p}),
            (None, None, Some(r)) => json!({"safe_regex": {"regex": r}}),
            _ => bail!("match.uri: exactly one of exact, prefix, regex"),
        },
    };
    let mut headers = Vec::new();
    for (name, cond) in &m.headers {
        headers.push(json!({
            "name": name,
            "string_match": string_matcher(cond, &format!("match.headers.{name}"))?,
        }));
    }
    if let Some(method) = &m.method {
        headers.push(
            json!({"name": ":method", "string_match": string_matcher(method, "match.method")?}),
        );
    }
    if !headers.is_empty() {
        out["headers"] = json!(headers);
    }
    Ok(out)
}

/// Istio's default `retryOn` (`connect-failure,refused-stream,unavailable,cancelled,503`) as
/// Envoy's `retry_on`; 503 is in `retriable_status_codes`.
const MESH_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// The mesh's retry conditions (Istio's default `retryOn`) with `num_retries`, as an Envoy
/// `RetryPolicy` for a test bed route: without the host predicate of [`default_retry_policy`]
/// (a test bed cluster has one host).
pub fn mesh_retry_policy(num_retries: u32) -> Value {
    json!({
        "retry_on": MESH_RETRY_ON,
        "retriable_status_codes": [503],
        "num_retries": num_retries,
    })
}

/// Istio's default retry policy: the one a route gets when its rule says nothing.
pub fn default_retry_policy() -> Value {
    retry_policy_with(2, MESH_RETRY_ON, &[503], None)
}

fn retry_policy_with(
    attempts: u32,
    retry_on: &str,
    codes: &[u16],
    per_try: Option<String>,
) -> Value {
    let mut p = json!({
        "retry_on": retry_on,
        "num_retries": attempts,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        "host_selection_retry_max_attempts": 5,
    });
    if !codes.is_empty() {
        p["retriable_status_codes"] = json!(codes);
    }
    if let Some(t) = per_try {
        p["per_try_timeout"] = json!(t);
    }
    p
}

/// `retries` → Envoy `RetryPolicy`; `None` when the rule retries nothing. Numbers in `retryOn`
/// become `retriable_status_codes` (and `retriable-status-codes` is added to `retry_on`).
pub fn retry_policy(r: Option<&Retries>) -> Result<Option<Value>> {
    let Some(r) = r else {
        return Ok(Some(default_retry_policy()));
    };
    if r.attempts == 0 {
        return Ok(None);
    }
    let per_try = r.per_try_timeout.as_deref().map(duration).transpose()?;
    let Some(on) = &r.retry_on else {
        let mut p = default_retry_policy();
        p["num_retries"] = json!(r.attempts);
        if let Some(t) = per_try {
            p["per_try_timeout"] = json!(t);
        }
        return Ok(Some(p));
    };
    let mut policies = Vec::new();
    let mut codes = Vec::new();
    for token in on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token.parse::<u16>() {
            Ok(code) => codes.push(code),
            Err(_) => policies.push(token.to_owned()),
        }
    }
    if !codes.is_empty() && !policies.iter().any(|p| p == "retriable-status-codes") {
        policies.push("retriable-status-codes".to_owned());
    }
    Ok(Some(retry_policy_with(
        r.attempts,
        &policies.join(","),
        &codes,
        per_try,
    )))
}

fn header_ops(route: &mut Value, ops: Option<&HeaderOperations>, side: &str) {
    let Some(ops) = ops else { return };
    let mut add = Vec::new();
    for (k, v) in &ops.set {
        add.push(json!({"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}));
    }
    for (k, v) in &ops.add {
        add.push(
            json!({"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}),
        );
    }
    if !add.is_empty() {
        route[format!("{side}_headers_to_add")] = json!(add);
    }
    if !ops.remove.is_empty() {
        route[format!("{side}_headers_to_remove")] = json!(ops.remove);
    }
}

/// What a destination's port is when a rule does not say: the Service's only port.
pub type PortOf<'a> = dyn Fn(&str) -> Result<u16> + 'a;

/// The Envoy routes of one VirtualService rule.
pub fn translate_rule(rule: &HttpRoute, port_of: &PortOf<'_>) -> Result<Vec<Value>> {
    let what = rule.name.as_deref().unwrap_or("(unnamed)");
    let mut action: Option<(&str, Value)> = None;
    if let Some(d) = &rule.direct_response {
        let mut r = json!({"status": d.status});
        if let Some(b) = &d.body {
            r["body"] = json!({"inline_string": b.string});
        }
        action = Some(("direct_response", r));
    }
    if !rule.route.is_empty() {
        if action.is_some() {
            bail!("rule {what}: both route and directResponse");
        }
        let mut clusters = Vec::new();
        for d in &rule.route {
            let dest = &d.destination;
            let port = match &dest.port {
                Some(p) => p.number,
                None => port_of(&dest.host).with_context(|| format!("rule {what}"))?,
            };
            clusters.push((
                outbound_cluster(port, dest.subset.as_deref(), &dest.host),
                d.weight,
            ));
        }
        let mut r = if let [(name, _)] = clusters.as_slice() {
            json!({"cluster": name})
        } else {
            let total: u32 = clusters.iter().map(|(_, w)| w.unwrap_or(0)).sum();
            if total == 0 {
                bail!("rule {what}: several destinations need weights");
            }
            json!({"weighted_clusters": {"clusters": clusters.iter().map(|(name, w)| json!({
                "name": name, "weight": w.unwrap_or(0),
            })).collect::<Vec<_>>()}})
        };
        r["timeout"] = json!(match &rule.timeout {
            Some(t) => duration(t).with_context(|| format!("rule {what}: timeout"))?,
            None => "0s".to_owned(),
        });
        if let Some(p) = retry_policy(rule.retries.as_ref())? {
            r["retry_policy"] = p;
        }
        if let Some(rw) = &rule.rewrite {
            if let Some(uri) = &rw.uri {
                r["prefix_rewrite"] = json!(uri);
            }
            if let Some(a) = &rw.authority {
                r["host_rewrite_literal"] = json!(a);
            }
        }
        action = Some(("route", r));
    } else if rule.rewrite.is_some() || rule.retries.is_some() || rule.timeout.is_some() {
        bail!("rule {what}: rewrite, retries and timeout need a route");
    }
    let (key, action) =
        action.with_context(|| format!("rule {what}: no route or directResponse"))?;
    let all = [HttpMatch::default()];
    let matches: &[HttpMatch] = if rule.matches.is_empty() {
        &all
    } else {
        &rule.matches
    };
    let mut out = Vec::new();
    for m in matches {
        let mut r = json!({"match": route_match(m).with_context(|| format!("rule {what}"))?});
        if let Some(n) = &rule.name {
            r["name"] = json!(n);
        }
        r[key] = action.clone();
        if let Some(h) = &rule.headers {
            header_ops(&mut r, h.request.as_ref(), "request");
            header_ops(&mut r, h.response.as_ref(), "response");
        }
        out.push(r);
    }
    Ok(out)
}

/// All routes of a VirtualService, in order.
pub fn translate(vs: &Named<VirtualService>, port_of: &PortOf<'_>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for rule in &vs.spec.http {
        out.extend(
            translate_rule(rule, port_of).with_context(|| format!("VirtualService {}", vs.id()))?,
        );
    }
    Ok(out)
}

/// The route of a host no VirtualService covers: all of it to the Service, with Istio's
/// default retry policy and no timeout.
pub fn default_route(host: &str, port: u16) -> Value {
    json!({
        "name": "default",
        "match": {"prefix": "/"},
        "route": {
            "cluster": outbound_cluster(port, None, host),
            "timeout": "0s",
            "retry_policy": default_retry_policy(),
        },
    })
}

/// Every cluster name a set of routes sends to.
pub fn clusters_of(routes: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for r in routes {
        let a = &r["route"];
        if let Some(c) = a["cluster"].as_str() {
            out.push(c.to_owned());
        }
        for c in a["weighted_clusters"]["clusters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = c["name"].as_str() {
                out.push(n.to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::model::{Destination, RouteDestination};

    fn rule(yaml: &str) -> HttpRoute {
        yaml_serde::from_str(yaml).unwrap()
    }

    fn no_port(h: &str) -> Result<u16> {
        bail!("no port for {h}")
    }

    #[test]
    fn durations_become_envoy_seconds() {
        assert_eq!(duration("15s").unwrap(), "15s");
        assert_eq!(duration("300ms").unwrap(), "0.3s");
        assert_eq!(duration("2m").unwrap(), "120s");
        assert!(duration("15").is_err());
        assert!(duration("-1s").is_err());
    }

    #[test]
    fn numbers_in_retry_on_become_retriable_status_codes() {
        let p = retry_policy(Some(&Retries {
            attempts: 2,
            retry_on: Some("connect-failure,503,refused-stream".into()),
            per_try_timeout: None,
        }))
        .unwrap()
        .unwrap();
        assert_eq!(
            p["retry_on"],
            "connect-failure,refused-stream,retriable-status-codes"
        );
        assert_eq!(p["retriable_status_codes"], json!([503]));
        assert_eq!(p["num_retries"], 2);
        assert_eq!(
            p["retry_host_predicate"][0]["name"],
            "envoy.retry_host_predicates.previous_hosts"
        );
    }

    #[test]
    fn zero_attempts_means_no_retries_and_absent_means_istios_default() {
        let zero = Retries {
            attempts: 0,
            retry_on: None,
            per_try_timeout: None,
        };
        assert!(retry_policy(Some(&zero)).unwrap().is_none());
        assert_eq!(retry_policy(None).unwrap().unwrap()["num_retries"], 2);
    }

    #[test]
    fn a_rule_with_two_matches_becomes_two_routes_with_the_same_action() {
        let r = rule(
            r#"
name: block
match:
- uri: {prefix: /management}
- uri: {regex: "^/services/[^/]+/management(/.*)?$"}
directResponse: {status: 404}
headers: {request: {remove: [x-meshwright-drill]}}
"#,
        );
        let routes = translate_rule(&r, &no_port).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0]["match"], json!({"prefix": "/management"}));
        assert_eq!(
            routes[1]["match"]["safe_regex"]["regex"],
            "^/services/[^/]+/management(/.*)?$"
        );
        assert_eq!(routes[1]["direct_response"]["status"], 404);
        assert_eq!(
            routes[1]["request_headers_to_remove"],
            json!(["x-meshwright-drill"])
        );
    }

    #[test]
    fn header_match_rewrite_subset_and_timeout_are_translated() {
        let r = rule(
            r#"
name: product-v2
match:
- uri: {prefix: /services/product/api/}
  headers: {x-ab-product: {exact: v2}}
rewrite: {uri: /api/}
route:
- destination: {host: product.ecommerce.svc.cluster.local, subset: v2, port: {number: 8081}}
timeout: 15s
"#,
        );
        let routes = translate_rule(&r, &no_port).unwrap();
        let route = &routes[0];
        assert_eq!(
            route["match"]["headers"][0],
            json!({"name": "x-ab-product", "string_match": {"exact": "v2"}})
        );
        assert_eq!(
            route["route"]["cluster"],
            "outbound|8081|v2|product.ecommerce.svc.cluster.local"
        );
        assert_eq!(route["route"]["prefix_rewrite"], "/api/");
        assert_eq!(route["route"]["timeout"], "15s");
        assert_eq!(route["route"]["retry_policy"]["num_retries"], 2);
    }

    #[test]
    fn several_weighted_destinations_become_weighted_clusters() {
        let dest = |subset: &str, weight| RouteDestination {
            destination: Destination {
                host: "product.ecommerce.svc.cluster.local".into(),
                subset: Some(subset.into()),
                port: None,
            },
            weight: Some(weight),
        };
        let r = HttpRoute {
            name: Some("canary".into()),
            matches: vec![],
            route: vec![dest("v1", 90), dest("v2", 10)],
            rewrite: None,
            timeout: None,
            retries: None,
            headers: None,
            direct_response: None,
        };
        let routes = translate_rule(&r, &|_| Ok(8081)).unwrap();
        let wc = &routes[0]["route"]["weighted_clusters"]["clusters"];
        assert_eq!(
            wc[1],
            json!({"name": "outbound|8081|v2|product.ecommerce.svc.cluster.local", "weight": 10})
        );
        assert_eq!(routes[0]["match"], json!({"prefix": "/"}));
        assert_eq!(routes[0]["route"]["timeout"], "0s");
        assert_eq!(
            clusters_of(&routes),
            vec![
                "outbound|8081|v1|product.ecommerce.svc.cluster.local",
                "outbound|8081|v2|product.ecommerce.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn fields_the_translation_does_not_know_are_refused() {
        let r: Result<HttpRoute, _> = yaml_serde::from_str(
            "route: [{destination: {host: a}}]\nfault: {abort: {httpStatus: 500}}",
        );
        assert!(r.is_err());
    }
}

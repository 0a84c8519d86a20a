//! The per-request decision: which fault, if any, a request gets.
//!
//! 1. When `enabled` is false: nothing.
//! 2. Header control (when configured): accepted `x-envoy-fault-*` headers decide, and rules are
//!    not consulted. Rejected headers are reported and then ignored.
//! 3. Rules, in order: the first rule that is enabled, not expired, whose `match` holds and
//!    whose cohort (if any) contains the user is *the* rule for the request — later rules are not
//!    consulted, as with routes. Its delay, abort and response parts then each fire
//!    independently with their own percentage.
//!
//! The decision needs only the headers listed in [`FaultConfig::headers_read`], the time and a
//! random source: it is plain Rust, tested without a proxy.

use crate::config::{Abort, FaultConfig, HEADER_CONTROL_RULE, Rule};
use crate::control::{self, Control, Rejection};
use meshwright_shared::hash::sticky_ppm;
use meshwright_shared::headers::{HeaderSource, is_grpc};
use meshwright_shared::rng::Random;

/// A reply sent in place of the upstream's: an abort, or a response fault.
pub use meshwright_shared::reply::Reply;

/// Which rule a fault comes from: an index into `FaultConfig::rules`, or header control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rule(usize),
    HeaderControl,
}

impl Source {
    pub fn name(self, config: &FaultConfig) -> &str {
        match self {
            Self::Rule(i) => config.rules.get(i).map_or("", |r| r.name.as_str()),
            Self::HeaderControl => HEADER_CONTROL_RULE,
        }
    }
}

/// What to do to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub source: Source,
    /// Hold the request this long first.
    pub delay_ms: Option<u64>,
    /// Then answer it with this instead of forwarding it.
    pub abort: Option<Reply>,
    /// Or forward it and replace the upstream's response with this.
    pub response: Option<Reply>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub plan: Option<Plan>,
    /// Fault headers were present but refused (counted, then ignored).
    pub control_rejected: Option<Rejection>,
}

/// Decides the fate of one request.
///
/// `signing_key` is the header-control key when signatures are required (read from the
/// environment at configure time).
pub fn decide(
    config: &FaultConfig,
    signing_key: Option<&[u8]>,
    req: &impl HeaderSource,
    now_ms: u64,
    rng: &mut impl Random,
) -> Decision {
    if !config.enabled {
        return Decision::default();
    }
    let grpc = is_grpc(req.header("content-type"));
    let mut decision = Decision::default();
    if let Some(hc) = &config.header_control {
        match control::read(hc, signing_key, req, now_ms) {
            Control::Absent => {}
            Control::Rejected(r) => decision.control_rejected = Some(r),
            Control::Fault(f) => {
                let delay_ms = f
                    .delay_ms
                    .filter(|_| f.delay_percentage.contains(rng.roll_ppm()));
                let abort = (f.http_status.is_some() || f.grpc_status.is_some())
                    .then(|| rng.roll_ppm())
                    .filter(|roll| f.abort_percentage.contains(*roll))
                    .and_then(|_| reply_for(f.http_status, f.grpc_status, "", &[], grpc));
                decision.plan = plan(Source::HeaderControl, delay_ms, abort, None);
                return decision;
            }
        }
    }
    let Some((index, rule)) = config
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| FaultConfig::rule_active(r, now_ms) && rule_applies(r, req))
    else {
        return decision;
    };
    let delay_ms = rule.delay.as_ref().and_then(|d| {
        d.percentage
            .contains(rng.roll_ppm())
            .then(|| d.distribution.sample(rng))
    });
    let mut fire = |a: &Option<Abort>| {
        a.as_ref().and_then(|a| {
            a.percentage
                .contains(rng.roll_ppm())
                .then(|| reply_for(a.http_status, a.grpc_status, &a.body, &a.headers, grpc))
                .flatten()
        })
    };
    let abort = fire(&rule.abort);
    let response = if abort.is_some() {
        None
    } else {
        fire(&rule.response)
    };
    decision.plan = plan(Source::Rule(index), delay_ms, abort, response);
    decision
}

/// Whether anything could fire for `req`: false when the config has [`FaultConfig::gates`] and
/// the request carries none of them, so the glue need not fetch the rest of the headers, read
/// the clock or roll. `decide` on such a request has no plan and rejects nothing.
pub fn may_fire(config: &FaultConfig, req: &impl HeaderSource) -> bool {
    config.enabled
        && config
            .gates
            .as_ref()
            .is_none_or(|gates| gates.iter().any(|g| req.header(g).is_some()))
}

fn rule_applies(rule: &Rule, req: &impl HeaderSource) -> bool {
    rule.matcher.matches(req)
        && rule.cohort.as_ref().is_none_or(|c| {
            c.key
                .extract(req)
                .is_some_and(|k| c.percentage.contains(sticky_ppm(&c.salt, &k)))
        })
}

fn plan(
    source: Source,
    delay_ms: Option<u64>,
    abort: Option<Reply>,
    response: Option<Reply>,
) -> Option<Plan> {
    (delay_ms.is_some() || abort.is_some() || response.is_some()).then_some(Plan {
        source,
        delay_ms,
        abort,
        response,
    })
}

/// The reply for a request: gRPC requests get the gRPC status when one is configured (else the
/// HTTP status, which Envoy maps to a gRPC status); other requests need an HTTP status.
fn reply_for(
    http_status: Option<u16>,
    grpc_status: Option<u32>,
    body: &str,
    headers: &[(String, String)],
    grpc: bool,
) -> Option<Reply> {
    let (status, grpc_status) = match (grpc, grpc_status, http_status) {
        (true, Some(g), _) => (200, Some(g)),
        (_, _, Some(h)) => (h, None),
        (false, Some(_), None) | (_, None, None) => return None,
    };
    Some(Reply {
        status,
        headers: headers.to_vec(),
        body: body.to_owned(),
        grpc_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ABORT, DELAY, SIGNATURE, sign};
    use meshwright_shared::headers::HeaderList;
    use meshwright_shared::rng::{Sequence, WyRand};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_800_000_000_000;

    fn config(json: &str) -> FaultConfig {
        FaultConfig::from_json(json.as_bytes()).unwrap()
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    fn get(path: &str) -> HeaderList {
        req(&[(":path", path), (":method", "GET")])
    }

    /// A generator whose every roll is `ppm`.
    fn rolls(ppm: u32) -> Sequence {
        Sequence::rolling_ppm(ppm)
    }

    #[test]
    fn no_rules_no_fault() {
        let d = decide(&config("{}"), None, &get("/"), NOW, &mut rolls(0));
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn abort_fires_below_its_percentage_only() {
        let c = config(
            r#"{"rules":[{"name":"a","abort":{"http_status":503,"body":"x","percentage":10}}]}"#,
        );
        let hit = decide(&c, None, &get("/"), NOW, &mut rolls(99_999))
            .plan
            .unwrap();
        assert_eq!(hit.source, Source::Rule(0));
        assert_eq!(hit.abort.unwrap().status, 503);
        assert!(
            decide(&c, None, &get("/"), NOW, &mut rolls(100_000))
                .plan
                .is_none()
        );
    }

    #[test]
    fn disabled_filter_and_disabled_rule_do_nothing() {
        let c = config(
            r#"{"enabled":false,"rules":[{"name":"a","abort":{"http_status":503,"percentage":100}}]}"#,
        );
        assert!(
            decide(&c, None, &get("/"), NOW, &mut rolls(0))
                .plan
                .is_none()
        );
        let c = config(
            r#"{"rules":[{"name":"a","enabled":false,"abort":{"http_status":503,"percentage":100}}]}"#,
        );
        assert!(
            decide(&c, None, &get("/"), NOW, &mut rolls(0))
                .plan
                .is_none()
        );
    }

    #[test]
    fn first_matching_rule_wins_and_expired_rules_are_skipped() {
        let c = config(
            r#"{"rules":[
                {"name":"old","abort":{"http_status":500,"percentage":100},"expires_at":"2020-01-01T00:00:00Z"},
                {"name":"api","match":{"path":{"prefix":"/api/"}},"abort":{"http_status":503,"percentage":100}},
                {"name":"all","abort":{"http_status":502,"percentage":100}}]}"#,
        );
        let p = decide(&c, None, &get("/api/x"), NOW, &mut rolls(0))
            .plan
            .unwrap();
        assert_eq!((p.source, p.abort.unwrap().status), (Source::Rule(1), 503));
        let p = decide(&c, None, &get("/web"), NOW, &mut rolls(0))
            .plan
            .unwrap();
        assert_eq!((p.source, p.abort.unwrap().status), (Source::Rule(2), 502));
        // A matched rule whose dice do not fire does not fall through to the next rule.
        let c = config(
            r#"{"rules":[
                {"name":"a","abort":{"http_status":503,"percentage":1}},
                {"name":"b","abort":{"http_status":502,"percentage":100}}]}"#,
        );
        assert!(
            decide(&c, None, &get("/"), NOW, &mut rolls(500_000))
                .plan
                .is_none()
        );
    }

    #[test]
    fn delay_then_abort_and_response_only_without_abort() {
        let c = config(
            r#"{"rules":[{"name":"a","delay":{"fixed_ms":200,"percentage":100},
                "abort":{"http_status":503,"percentage":50},
                "response":{"http_status":500,"body":"r","percentage":100}}]}"#,
        );
        let p = decide(&c, None, &get("/"), NOW, &mut rolls(0))
            .plan
            .unwrap();
        assert_eq!(p.delay_ms, Some(200));
        assert!(p.abort.is_some());
        assert!(
            p.response.is_none(),
            "an aborted request has no upstream response"
        );
        let p = decide(&c, None, &get("/"), NOW, &mut rolls(600_000))
            .plan
            .unwrap();
        assert_eq!(p.delay_ms, Some(200));
        assert!(p.abort.is_none());
        assert_eq!(p.response.unwrap().status, 500);
    }

    #[test]
    fn grpc_requests_get_grpc_replies() {
        let c = config(
            r#"{"rules":[{"name":"a","abort":{"http_status":503,"grpc_status":14,"percentage":100}}]}"#,
        );
        let grpc = req(&[
            (":path", "/pkg.Svc/M"),
            ("content-type", "application/grpc"),
        ]);
        let r = decide(&c, None, &grpc, NOW, &mut rolls(0))
            .plan
            .unwrap()
            .abort
            .unwrap();
        assert_eq!((r.status, r.grpc_status), (200, Some(14)));
        let r = decide(&c, None, &get("/"), NOW, &mut rolls(0))
            .plan
            .unwrap()
            .abort
            .unwrap();
        assert_eq!((r.status, r.grpc_status), (503, None));
        // grpc_status only: plain HTTP requests are left alone.
        let c = config(r#"{"rules":[{"name":"a","abort":{"grpc_status":14,"percentage":100}}]}"#);
        assert!(
            decide(&c, None, &get("/"), NOW, &mut rolls(0))
                .plan
                .is_none()
        );
        assert!(decide(&c, None, &grpc, NOW, &mut rolls(0)).plan.is_some());
    }

    #[test]
    fn cohorts_are_sticky_per_user_and_need_a_key() {
        let c = config(
            r#"{"rules":[{"name":"a","cohort":{"key":{"header":"x-user"},"percentage":30},
                "abort":{"http_status":503,"percentage":100}}]}"#,
        );
        let mut rng = WyRand::new(7);
        let mut in_cohort = 0;
        for u in 0..2000 {
            let user = format!("user-{u}");
            let r = req(&[(":path", "/"), ("x-user", &user)]);
            let first = decide(&c, None, &r, NOW, &mut rng).plan.is_some();
            for _ in 0..4 {
                assert_eq!(
                    decide(&c, None, &r, NOW, &mut rng).plan.is_some(),
                    first,
                    "{user}"
                );
            }
            in_cohort += usize::from(first);
        }
        // 2,000 users at 30 %: 600 ± 3 sd (sd = sqrt(2000 · 0.3 · 0.7) ≈ 20.5).
        assert!((539..=661).contains(&in_cohort), "{in_cohort}");
        assert!(
            decide(&c, None, &get("/"), NOW, &mut rng).plan.is_none(),
            "anonymous"
        );
    }

    #[test]
    fn header_control_is_off_unless_configured() {
        let c = config("{}");
        let r = req(&[(ABORT, "503"), (DELAY, "10")]);
        assert_eq!(
            decide(&c, None, &r, NOW, &mut rolls(0)),
            Decision::default()
        );
    }

    #[test]
    fn signed_header_control_overrides_rules() {
        let key = b"0123456789abcdef0123456789abcdef";
        let c = config(
            r#"{"header_control":{"signing_key_env":"K"},
                "rules":[{"name":"a","abort":{"http_status":500,"percentage":100}}]}"#,
        );
        let sig = sign(key, NOW / 1000 + 60, [Some("418"), None, None, None, None]);
        let r = req(&[(":path", "/"), (ABORT, "418"), (SIGNATURE, &sig)]);
        let p = decide(&c, Some(key), &r, NOW, &mut rolls(0)).plan.unwrap();
        assert_eq!(
            (p.source, p.abort.unwrap().status),
            (Source::HeaderControl, 418)
        );
        // Unsigned: ignored (not even read, so not counted), and the rules apply as if the
        // headers were not there.
        let r = req(&[(":path", "/"), (ABORT, "418")]);
        let d = decide(&c, Some(key), &r, NOW, &mut rolls(0));
        assert_eq!(d.control_rejected, None);
        assert_eq!(d.plan.unwrap().abort.unwrap().status, 500);
        // Signed with another key: refused, counted, and the rules apply.
        let bad = sign(
            b"another-key-of-at-least-32-bytes-long",
            NOW / 1000 + 60,
            [Some("418"), None, None, None, None],
        );
        let r = req(&[(":path", "/"), (ABORT, "418"), (SIGNATURE, &bad)]);
        let d = decide(&c, Some(key), &r, NOW, &mut rolls(0));
        assert_eq!(d.control_rejected, Some(Rejection::BadSignature));
        assert_eq!(d.plan.unwrap().abort.unwrap().status, 500);
    }

    /// The shipped drills' shape: every rule keyed on a header, and header control.
    const DRILLS: &str = r#"{"header_control":{"require_signature":false},"rules":[
        {"name":"a","match":{"path":{"prefix":"/api/a"},"headers":[{"name":"x-drill","exact":"a"}]},
         "abort":{"http_status":503,"percentage":100}},
        {"name":"b","match":{"headers":[{"name":"x-off","present":false},
            {"name":"x-env","prefix":"prod","invert":true}]},
         "abort":{"http_status":500,"percentage":100}}]}"#;

    #[test]
    fn a_request_without_any_gate_header_is_ruled_out_before_the_rest_is_read() {
        let c = config(DRILLS);
        assert_eq!(
            c.gates.as_deref(),
            Some(
                &[
                    "x-drill",
                    "x-env",
                    ABORT,
                    crate::control::ABORT_GRPC,
                    crate::control::ABORT_PERCENTAGE,
                    DELAY,
                    crate::control::DELAY_PERCENTAGE
                ]
                .map(str::to_owned)[..]
            )
        );
        assert!(!may_fire(&c, &get("/api/a")));
        assert!(may_fire(&c, &req(&[("x-drill", "b")])));
        assert!(may_fire(&c, &req(&[(DELAY, "10")])));
        // With signatures required, the signature alone gates header control: unsigned fault
        // headers are not read at all.
        let signed =
            config(&DRILLS.replace(r#""require_signature":false"#, r#""signing_key_env":"K""#));
        assert_eq!(
            signed.gates.as_deref(),
            Some(&["x-drill", "x-env", SIGNATURE].map(str::to_owned)[..])
        );
        assert!(!may_fire(&signed, &req(&[(DELAY, "10")])));
        assert!(may_fire(&signed, &req(&[(SIGNATURE, "t=1,v1=00")])));
        // A rule that needs no header (path only) leaves nothing to gate on.
        let c = config(
            r#"{"rules":[{"name":"p","match":{"path":{"prefix":"/x"}},
            "abort":{"http_status":503,"percentage":100}}]}"#,
        );
        assert_eq!(c.gates, None);
        assert!(may_fire(&c, &get("/y")));
        // A disabled rule does not count; no rules and no header control: nothing can fire.
        let c = config(
            r#"{"rules":[{"name":"p","enabled":false,"match":{"path":{"prefix":"/x"}},
            "abort":{"http_status":503,"percentage":100}}]}"#,
        );
        assert_eq!(c.gates.as_deref(), Some(&[][..]));
        assert!(!may_fire(&c, &get("/x")));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The gate never hides a fault or a rejection `decide` would have made.
            #[test]
            fn a_request_the_gate_rules_out_gets_no_fault(
                present in proptest::collection::vec(any::<bool>(), 9),
                values in proptest::collection::vec("(a|b|prod|staging|418|50|)", 9),
                path in "/api/[ab]?", seed in any::<u64>(), signed in any::<bool>(),
            ) {
                // Signatures off (every fault header gates) or required (the signature does).
                let (c, key) = if signed {
                    let signed = DRILLS.replace(
                        r#""require_signature":false"#,
                        r#""signing_key_env":"K""#,
                    );
                    (config(&signed), Some(&b"a-test-signing-key-of-at-least-32-bytes"[..]))
                } else {
                    (config(DRILLS), None)
                };
                let names = ["x-drill", "x-off", "x-env", ABORT, crate::control::ABORT_GRPC,
                    crate::control::ABORT_PERCENTAGE, DELAY, crate::control::DELAY_PERCENTAGE,
                    SIGNATURE];
                let mut r = get(&path);
                for ((name, on), v) in names.iter().zip(&present).zip(&values) {
                    if *on {
                        r.push(name, v.clone());
                    }
                }
                if !may_fire(&c, &r) {
                    let d = decide(&c, key, &r, NOW, &mut WyRand::new(seed));
                    prop_assert_eq!(d, Decision::default());
                }
            }
        }

        proptest! {
            #[test]
            fn arbitrary_requests_never_panic(
                path in ".{0,40}", method in "[A-Z]{0,7}", cookie in ".{0,60}",
                auth in ".{0,80}", ct in ".{0,30}", seed in any::<u64>(),
            ) {
                let c = config(
                    r#"{"rules":[{"name":"a","match":{"path":{"regex":"/api/.*"}},
                        "cohort":{"key":{"jwt_claim":"sub"},"percentage":50},
                        "abort":{"http_status":503,"grpc_status":14,"percentage":50},
                        "delay":{"lognormal":{"median_ms":5,"p99_ms":50},"percentage":50},
                        "response":{"http_status":500,"percentage":50}},
                        {"name":"b","cohort":{"key":{"cookie":"uid"},"percentage":50},
                        "abort":{"http_status":503,"percentage":50}}]}"#,
                );
                let r = req(&[(":path", &path), (":method", &method), ("cookie", &cookie),
                              ("authorization", &auth), ("content-type", &ct)]);
                let _ = decide(&c, None, &r, NOW, &mut WyRand::new(seed));
            }
        }
    }
}

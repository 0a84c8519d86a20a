//! The per-request decision: each experiment's variant, and the header and cookie edits that
//! carry it.
//!
//! For every experiment, in order:
//! 1. the client's copy of the output header is always removed or overwritten (no
//!    self-selection), and so are client-supplied baggage members under the experiment's key;
//! 2. a disabled experiment, or one whose `match` does not hold, assigns nothing;
//! 3. otherwise the first of these wins: an accepted QA override; with `trust_incoming`, the
//!    assignment an earlier hop made (its baggage member, else its output header); a valid sticky-cookie entry of the current `version` naming a
//!    variant whose weight is not 0; the hash of the user's identity (`bucket::choose`), which
//!    may leave the user outside the coverage. Without an identity nothing is assigned.
//!
//! The decision reads only the headers in [`AbConfig::headers_read`]; time and randomness (for
//! anonymous ids) are injected, so it is plain Rust, tested without a proxy.

use crate::baggage;
use crate::bucket::choose;
use crate::config::{AbConfig, Experiment};
use crate::cookies::set_cookie;
use crate::identity::{self, IdSource, Identity};
use crate::overrides::{self, Rejection};
use crate::sticky::{self, Entry};
use meshwright_shared::headers::HeaderSource;
use meshwright_shared::rng::Random;
use meshwright_shared::time::Now;

/// How a variant was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Hash,
    Sticky,
    Override,
    /// Taken from an earlier hop (`trust_incoming`).
    Incoming,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Sticky => "sticky",
            Self::Override => "override",
            Self::Incoming => "incoming",
        }
    }
}

/// One experiment's result for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Disabled (globally or per experiment) or not targeted by `match`.
    Skipped,
    /// No identity found and no anonymous id configured.
    NoIdentity,
    /// The user's coverage position is outside `coverage`.
    NotInCoverage,
    Assigned {
        variant: usize,
        by: By,
    },
}

/// What to do to one request (and its response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Per experiment, in config order.
    pub outcomes: Vec<Outcome>,
    /// Per experiment: the client sent the output header itself.
    pub client_header: Vec<bool>,
    /// Request headers to set (replacing every existing value).
    pub set_headers: Vec<(String, String)>,
    /// Request headers to remove.
    pub remove_headers: Vec<String>,
    /// `Set-Cookie` values for the response.
    pub response_cookies: Vec<String>,
    /// Value of the debug response header, when configured.
    pub debug: Option<String>,
    pub anonymous_id_issued: bool,
    pub override_rejected: Option<Rejection>,
    /// A sticky cookie was present but not one the filter signed.
    pub sticky_rejected: bool,
}

/// Decides one request. `key` is the signing key (sticky cookie, signed overrides), read from
/// the environment at configure time.
pub fn decide(
    config: &AbConfig,
    key: Option<&[u8]>,
    req: &impl HeaderSource,
    now: impl Now,
    rng: &mut impl Random,
) -> Decision {
    let n = config.experiments.len();
    let mut d = Decision {
        outcomes: vec![Outcome::Skipped; n],
        client_header: config
            .experiments
            .iter()
            .map(|e| req.header(&e.header).is_some())
            .collect(),
        ..Decision::default()
    };
    if let Some(h) = config.overrides.as_ref().and_then(|o| o.header.as_deref())
        && req.header(h).is_some()
    {
        // An override token is for this proxy, not for the services behind it.
        d.remove_headers.push(h.to_owned());
    }

    if config.enabled {
        let forced = match overrides::read(config, key, req, &now) {
            overrides::Outcome::Absent => Vec::new(),
            overrides::Outcome::Rejected(r) => {
                d.override_rejected = Some(r);
                Vec::new()
            }
            overrides::Outcome::Forced(f) => f,
        };
        let sticky_in = match (&config.sticky, key) {
            (Some(attrs), Some(key)) => sticky::read(attrs, key, req),
            _ => sticky::Read::Absent,
        };
        d.sticky_rejected = sticky_in == sticky::Read::Invalid;
        let sticky_entries: &[Entry] = match &sticky_in {
            sticky::Read::Valid(e) => e,
            _ => &[],
        };
        let incoming_baggage = req.header("baggage");
        let mut identity: Option<Option<Identity<'_>>> = None;

        for (i, e) in config.experiments.iter().enumerate() {
            if !e.enabled || !e.matcher.matches(req) {
                continue;
            }
            let outcome = if let Some((_, v)) = forced.iter().find(|(x, _)| *x == i) {
                Outcome::Assigned {
                    variant: *v,
                    by: By::Override,
                }
            } else if let Some(v) = e
                .trust_incoming
                .then(|| inherited(e, incoming_baggage, req))
                .flatten()
            {
                Outcome::Assigned {
                    variant: v,
                    by: By::Incoming,
                }
            } else if let Some(v) = remembered(e, sticky_entries) {
                Outcome::Assigned {
                    variant: v,
                    by: By::Sticky,
                }
            } else {
                let id = identity.get_or_insert_with(|| identity::resolve(config, req, rng));
                match id {
                    None => Outcome::NoIdentity,
                    Some(id) => match choose(e, &id.id) {
                        None => Outcome::NotInCoverage,
                        Some(v) => Outcome::Assigned {
                            variant: v,
                            by: By::Hash,
                        },
                    },
                }
            };
            if let Some(o) = d.outcomes.get_mut(i) {
                *o = outcome;
            }
        }

        if let (Some(attrs), Some(Some(id))) = (&config.anonymous_id, &identity)
            && id.source == IdSource::Generated
        {
            d.anonymous_id_issued = true;
            d.response_cookies.push(set_cookie(attrs, &id.id));
        }
        if let (Some(attrs), Some(key)) = (&config.sticky, key) {
            let entries = sticky_record(config, &d.outcomes, sticky_entries);
            let unchanged = matches!(&sticky_in, sticky::Read::Valid(old) if *old == entries);
            if !unchanged && !entries.is_empty() {
                d.response_cookies
                    .push(set_cookie(attrs, &sticky::encode(key, &entries)));
            }
        }
    }

    // Output headers: set when assigned, else remove the client's copy.
    for ((e, outcome), sent) in config
        .experiments
        .iter()
        .zip(&d.outcomes)
        .zip(&d.client_header)
    {
        match assigned_name(e, *outcome) {
            Some(v) => d.set_headers.push((e.header.clone(), v.to_owned())),
            None if *sent => d.remove_headers.push(e.header.clone()),
            None => {}
        }
    }

    if config.baggage {
        let existing = req.header("baggage");
        let owned: Vec<&str> = config
            .experiments
            .iter()
            .map(|e| e.baggage_key.as_str())
            .collect();
        let ours: Vec<(&str, &str)> = config
            .experiments
            .iter()
            .zip(&d.outcomes)
            .filter_map(|(e, o)| Some((e.baggage_key.as_str(), assigned_name(e, *o)?)))
            .collect();
        let merged = baggage::merge(existing, &owned, &ours);
        match (existing, merged) {
            (Some(old), Some(new)) if old == new => {}
            (_, Some(new)) => d.set_headers.push(("baggage".to_owned(), new)),
            (Some(_), None) => d.remove_headers.push("baggage".to_owned()),
            (None, None) => {}
        }
    }

    if config.debug_header.is_some() {
        d.debug = Some(debug_value(config, &d.outcomes));
    }
    d
}

fn assigned_name(e: &Experiment, outcome: Outcome) -> Option<&str> {
    match outcome {
        Outcome::Assigned { variant, .. } => e.variants.get(variant).map(|v| v.name.as_str()),
        _ => None,
    }
}

/// The variant an earlier hop assigned: its baggage member, else its copy of the output header
/// (for `trust_incoming`: hops behind a proxy that removes client copies of both).
fn inherited(
    e: &Experiment,
    baggage_header: Option<&str>,
    req: &impl HeaderSource,
) -> Option<usize> {
    baggage_header
        .and_then(|b| baggage::get(b, &e.baggage_key))
        .and_then(|v| e.variant_index(&v))
        .or_else(|| e.variant_index(req.header(&e.header)?))
}

/// The variant recorded in the sticky cookie, if still valid: same version, and the variant
/// still exists with a weight above 0.
fn remembered(e: &Experiment, entries: &[Entry]) -> Option<usize> {
    let entry = entries
        .iter()
        .find(|x| x.experiment == e.name && x.version == e.version)?;
    let i = e.variant_index(&entry.variant)?;
    e.variants.get(i).filter(|v| v.weight > 0).map(|_| i)
}

/// The sticky record after this request: hash and sticky assignments, plus still-valid entries
/// of experiments this request did not assign (other paths), in config order.
fn sticky_record(config: &AbConfig, outcomes: &[Outcome], old: &[Entry]) -> Vec<Entry> {
    config
        .experiments
        .iter()
        .zip(outcomes)
        .filter_map(|(e, o)| {
            let variant = match o {
                Outcome::Assigned {
                    variant,
                    by: By::Hash | By::Sticky,
                } => e.variants.get(*variant)?.name.clone(),
                _ => old
                    .iter()
                    .find(|x| x.experiment == e.name && x.version == e.version)
                    .filter(|x| remembered(e, std::slice::from_ref(x)).is_some())?
                    .variant
                    .clone(),
            };
            Some(Entry {
                experiment: e.name.clone(),
                version: e.version,
                variant,
            })
        })
        .collect()
}

/// `product=v2;hash, checkout=;not-in-coverage` (experiments the request is not targeted by are
/// left out). Never contains the user's identity.
fn debug_value(config: &AbConfig, outcomes: &[Outcome]) -> String {
    let parts: Vec<String> = config
        .experiments
        .iter()
        .zip(outcomes)
        .filter_map(|(e, o)| match o {
            Outcome::Skipped => None,
            Outcome::NoIdentity => Some(format!("{}=;no-identity", e.name)),
            Outcome::NotInCoverage => Some(format!("{}=;not-in-coverage", e.name)),
            Outcome::Assigned { by, .. } => Some(format!(
                "{}={};{}",
                e.name,
                assigned_name(e, *o).unwrap_or(""),
                by.as_str()
            )),
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sticky::encode;
    use base64::Engine as _;
    use meshwright_shared::headers::HeaderList;
    use meshwright_shared::rng::WyRand;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000_000;

    fn config(json: &str) -> AbConfig {
        AbConfig::from_json(json.as_bytes()).unwrap()
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    fn bearer(sub: &str) -> String {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"sub":"{sub}"}}"#));
        format!("Bearer e30.{p}.c2ln")
    }

    fn product(weights: (u32, u32), extra: &str) -> AbConfig {
        config(&format!(
            r#"{{"identity":[{{"jwt_claim":"sub"}},{{"header":"x-user"}}]{extra},
                "experiments":[{{"name":"product","header":"x-ab-product",
                  "match":{{"path":{{"prefix":"/services/product/"}}}},
                  "variants":[{{"name":"v1","weight":{}}},{{"name":"v2","weight":{}}}]}}]}}"#,
            weights.0, weights.1
        ))
    }

    fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
        d.set_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A user id (x-user) whose hash assignment under `c` is `want`.
    fn user_on(c: &AbConfig, want: &str) -> String {
        (0..)
            .map(|u| format!("user-{u}"))
            .find(|id| {
                let r = req(&[(":path", "/services/product/x"), ("x-user", id)]);
                header(
                    &decide(c, None, &r, NOW, &mut WyRand::new(0)),
                    "x-ab-product",
                ) == Some(want)
            })
            .unwrap()
    }

    #[test]
    fn assigns_and_writes_header_and_baggage() {
        let c = product((5000, 5000), "");
        let r = req(&[
            (":path", "/services/product/api/products"),
            ("x-user", "alice"),
            ("baggage", "tenant=acme"),
        ]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        let Outcome::Assigned {
            variant,
            by: By::Hash,
        } = d.outcomes[0]
        else {
            panic!("{d:?}")
        };
        let name = ["v1", "v2"][variant];
        assert_eq!(header(&d, "x-ab-product"), Some(name));
        assert_eq!(
            header(&d, "baggage"),
            Some(format!("tenant=acme,ab.product={name}").as_str())
        );
        assert!(d.response_cookies.is_empty());
        assert_eq!(d.debug, None);
    }

    #[test]
    fn spoofed_headers_and_baggage_are_overwritten_or_removed() {
        let c = product((10_000, 0), "");
        let r = req(&[
            (":path", "/services/product/x"),
            ("x-user", "alice"),
            ("x-ab-product", "v2"),
            ("baggage", "ab.product=v2"),
        ]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert!(d.client_header[0]);
        assert_eq!(header(&d, "x-ab-product"), Some("v1"));
        assert_eq!(header(&d, "baggage"), Some("ab.product=v1"));
        // Not targeted: nothing assigned, the client's copies still go.
        let r = req(&[
            (":path", "/other"),
            ("x-ab-product", "v2"),
            ("baggage", "ab.product=v2, k=1"),
        ]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(d.outcomes, [Outcome::Skipped]);
        assert_eq!(d.remove_headers, ["x-ab-product"]);
        assert_eq!(header(&d, "baggage"), Some("k=1"));
        // Globally disabled: the same.
        let c = product((0, 10_000), r#","enabled":false"#);
        let r = req(&[(":path", "/services/product/x"), ("x-ab-product", "v2")]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(d.outcomes, [Outcome::Skipped]);
        assert_eq!(d.remove_headers, ["x-ab-product"]);
    }

    #[test]
    fn without_identity_nothing_is_assigned_unless_anonymous_ids_are_on() {
        let c = product((5000, 5000), "");
        let r = req(&[(":path", "/services/product/x")]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(d.outcomes, [Outcome::NoIdentity]);
        assert!(d.set_headers.is_empty() && d.response_cookies.is_empty());

        let c = product((5000, 5000), r#","anonymous_id":{"name":"ab_uid"}"#);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert!(matches!(
            d.outcomes[0],
            Outcome::Assigned { by: By::Hash, .. }
        ));
        assert!(d.anonymous_id_issued);
        let [cookie] = d.response_cookies.as_slice() else {
            panic!("{d:?}")
        };
        assert!(cookie.starts_with("ab_uid="), "{cookie}");
        assert!(cookie.ends_with("; Max-Age=31536000; Path=/; Secure; HttpOnly; SameSite=Lax"));
        // The next request carries the cookie: same id, same variant, no new cookie.
        let id = &cookie["ab_uid=".len().."ab_uid=".len() + 32];
        let again = req(&[
            (":path", "/services/product/x"),
            ("cookie", &format!("ab_uid={id}")),
        ]);
        let d2 = decide(&c, None, &again, NOW, &mut WyRand::new(99));
        assert_eq!(d2.outcomes, d.outcomes);
        assert!(d2.response_cookies.is_empty() && !d2.anonymous_id_issued);
        // A request no experiment targets gets no cookie.
        let d3 = decide(&c, None, &req(&[(":path", "/")]), NOW, &mut WyRand::new(1));
        assert!(d3.response_cookies.is_empty());
    }

    #[test]
    fn coverage_leaves_users_out() {
        let c = config(
            r#"{"identity":[{"header":"x-user"}],"experiments":[{"name":"p","header":"x-ab-p",
                "coverage":0,"variants":[{"name":"a","weight":10000}]}]}"#,
        );
        let d = decide(&c, None, &req(&[("x-user", "u")]), NOW, &mut WyRand::new(1));
        assert_eq!(d.outcomes, [Outcome::NotInCoverage]);
        assert!(d.set_headers.is_empty());
    }

    #[test]
    fn overrides_win_only_when_accepted() {
        let extra = r#","overrides":{"header":"x-ab-override",
            "allowed_users":{"key":{"jwt_claim":"sub"},"values":["qa-1"]}}"#;
        let c = product((10_000, 0), extra);
        let qa = bearer("qa-1");
        let r = req(&[
            (":path", "/services/product/x"),
            ("authorization", &qa),
            ("x-ab-override", "product=v2"),
        ]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(
            d.outcomes,
            [Outcome::Assigned {
                variant: 1,
                by: By::Override
            }]
        );
        assert_eq!(header(&d, "x-ab-product"), Some("v2"));
        assert_eq!(
            d.remove_headers,
            ["x-ab-override"],
            "the token is not forwarded"
        );
        let other = bearer("bob");
        let r = req(&[
            (":path", "/services/product/x"),
            ("authorization", &other),
            ("x-ab-override", "product=v2"),
        ]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(d.override_rejected, Some(Rejection::NotAllowed));
        assert_eq!(header(&d, "x-ab-product"), Some("v1"));
    }

    #[test]
    fn trusted_baggage_carries_the_assignment_inside_the_mesh() {
        let c = config(
            r#"{"identity":[],"experiments":[{"name":"product","header":"x-ab-product",
                "trust_incoming":true,"variants":[{"name":"v1","weight":10000},{"name":"v2","weight":0}]}]}"#,
        );
        let r = req(&[("baggage", "a=1,ab.product=v2")]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(
            d.outcomes,
            [Outcome::Assigned {
                variant: 1,
                by: By::Incoming
            }]
        );
        assert_eq!(header(&d, "x-ab-product"), Some("v2"));
        assert_eq!(header(&d, "baggage"), None, "unchanged, not rewritten");
        // An app that forwards the header but not baggage: the header carries it.
        let r = req(&[("x-ab-product", "v2")]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(
            d.outcomes,
            [Outcome::Assigned {
                variant: 1,
                by: By::Incoming
            }]
        );
        assert_eq!(header(&d, "baggage"), Some("ab.product=v2"));
        let r = req(&[("baggage", "ab.product=v9")]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(
            d.outcomes,
            [Outcome::NoIdentity],
            "unknown variants are ignored"
        );
        // Without trust_incoming the same member is a spoof.
        let c = product((10_000, 0), "");
        let r = req(&[
            (":path", "/services/product/x"),
            ("x-user", "u"),
            ("baggage", "ab.product=v2"),
        ]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(header(&d, "x-ab-product"), Some("v1"));
    }

    #[test]
    fn sticky_cookies_hold_users_through_a_weight_change_until_the_version_changes() {
        let sticky = r#","sticky":{"name":"ab_sticky"},"signing_key_env":"K""#;
        let before = product((5000, 5000), sticky);
        let id = user_on(&before, "v2");
        let r = req(&[(":path", "/services/product/x"), ("x-user", &id)]);
        let d = decide(&before, Some(KEY), &r, NOW, &mut WyRand::new(1));
        let [cookie] = d.response_cookies.as_slice() else {
            panic!("{d:?}")
        };
        let value = cookie
            .strip_prefix("ab_sticky=")
            .and_then(|c| c.split(';').next())
            .unwrap();
        assert!(value.starts_with("product:1:v2."), "{value}");

        // v2 ramps down to 1 %: the hash now says v1, the cookie keeps v2.
        let after = product((9900, 100), sticky);
        let with_cookie = req(&[
            (":path", "/services/product/x"),
            ("x-user", &id),
            ("cookie", &format!("ab_sticky={value}")),
        ]);
        let d = decide(&after, Some(KEY), &with_cookie, NOW, &mut WyRand::new(1));
        assert_eq!(
            d.outcomes,
            [Outcome::Assigned {
                variant: 1,
                by: By::Sticky
            }]
        );
        assert!(d.response_cookies.is_empty(), "cookie unchanged");
        // Killed (weight 0): the cookie no longer holds.
        let killed = product((10_000, 0), sticky);
        let d = decide(&killed, Some(KEY), &with_cookie, NOW, &mut WyRand::new(1));
        assert_eq!(header(&d, "x-ab-product"), Some("v1"));
        assert_eq!(d.response_cookies.len(), 1, "rewritten to v1");
        // A new version: reassigned by hash.
        let bumped = config(&format!(
            r#"{{"identity":[{{"header":"x-user"}}]{sticky},"experiments":[{{"name":"product",
                "header":"x-ab-product","version":2,
                "variants":[{{"name":"v1","weight":10000}},{{"name":"v2","weight":0}}]}}]}}"#
        ));
        let d = decide(&bumped, Some(KEY), &with_cookie, NOW, &mut WyRand::new(1));
        assert_eq!(
            d.outcomes,
            [Outcome::Assigned {
                variant: 0,
                by: By::Hash
            }]
        );
        // A forged cookie is ignored and counted.
        let forged = encode(
            b"not the key, but 32 bytes long!!",
            &[Entry {
                experiment: "product".into(),
                version: 1,
                variant: "v2".into(),
            }],
        );
        let r = req(&[
            (":path", "/services/product/x"),
            ("x-user", "someone"),
            ("cookie", &format!("ab_sticky={forged}")),
        ]);
        let d = decide(&killed, Some(KEY), &r, NOW, &mut WyRand::new(1));
        assert!(d.sticky_rejected);
        assert_eq!(header(&d, "x-ab-product"), Some("v1"));
    }

    #[test]
    fn debug_header_reports_without_identity() {
        let c = product((10_000, 0), r#","debug_header":"x-ab-debug""#);
        let r = req(&[(":path", "/services/product/x"), ("x-user", "alice")]);
        let d = decide(&c, None, &r, NOW, &mut WyRand::new(1));
        assert_eq!(d.debug.as_deref(), Some("product=v1;hash"));
        let d = decide(
            &c,
            None,
            &req(&[(":path", "/services/product/x")]),
            NOW,
            &mut WyRand::new(1),
        );
        assert_eq!(d.debug.as_deref(), Some("product=;no-identity"));
        let d = decide(&c, None, &req(&[(":path", "/")]), NOW, &mut WyRand::new(1));
        assert_eq!(d.debug.as_deref(), Some("none"));
    }

    #[test]
    fn the_same_user_gets_the_same_variant_every_time() {
        let c = product((9000, 1000), "");
        let mut rng = WyRand::new(5);
        let mut on_v2 = 0u32;
        for u in 0..2000 {
            let id = format!("user-{u}");
            let r = req(&[(":path", "/services/product/x"), ("x-user", &id)]);
            let first = decide(&c, None, &r, NOW, &mut rng).outcomes;
            for _ in 0..3 {
                assert_eq!(decide(&c, None, &r, NOW, &mut rng).outcomes, first, "{id}");
            }
            on_v2 += u32::from(
                first
                    == [Outcome::Assigned {
                        variant: 1,
                        by: By::Hash,
                    }],
            );
        }
        // 2,000 users at 10 %: 200 ± 3 sd (sd ≈ 13.4).
        assert!((160..=240).contains(&on_v2), "{on_v2}");
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_requests_never_panic(
                path in ".{0,40}", cookie in ".{0,80}", auth in ".{0,80}",
                baggage in ".{0,80}", over in ".{0,40}", spoof in ".{0,10}", seed in any::<u64>(),
            ) {
                let c = config(
                    r#"{"identity":[{"jwt_claim":"sub"},{"cookie":"uid"}],
                        "anonymous_id":{"name":"ab_uid"},"sticky":{"name":"ab_s"},
                        "signing_key_env":"K","debug_header":"x-d",
                        "overrides":{"header":"x-o","query_param":"ab","signed":true,
                          "allowed_users":{"key":{"jwt_claim":"sub"},"values":["qa"]}},
                        "experiments":[
                          {"name":"a","header":"x-ab-a","coverage":5000,"hash":"growthbook_v2",
                           "match":{"path":{"regex":"/api/.*"}},
                           "variants":[{"name":"v1","weight":5000},{"name":"v2","weight":5000}]},
                          {"name":"b","header":"x-ab-b","trust_incoming":true,
                           "variants":[{"name":"x","weight":3000},{"name":"y","weight":3000},{"name":"z","weight":4000}]}]}"#,
                );
                let r = req(&[(":path", &path), ("cookie", &cookie), ("authorization", &auth),
                              ("baggage", &baggage), ("x-o", &over), ("x-ab-a", &spoof)]);
                let d = decide(&c, Some(KEY), &r, NOW, &mut WyRand::new(seed));
                prop_assert_eq!(d.outcomes.len(), 2);
                // Whatever the client sent, x-ab-a is either ours or gone.
                let ours = header(&d, "x-ab-a");
                prop_assert!(ours.is_some() || d.remove_headers.iter().any(|h| h == "x-ab-a"));
            }
        }
    }
}

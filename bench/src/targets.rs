//! The targets of issue 6, judged from a run: each as measured, met or not, and whether the
//! round-to-round spread straddles the limit.

use crate::machine::ModuleSize;
use crate::report::{TargetResult, VariantResult};
use crate::stats::Spread;

/// KB in the size targets: 1,000 bytes (the stricter reading).
pub const KB: u64 = 1000;

fn added<'a>(variants: &'a [VariantResult], id: &str) -> Option<(&'a VariantResult, Spread)> {
    let v = variants.iter().find(|v| v.id == id && v.ok())?;
    Some((v, v.added_us?))
}

fn straddles(s: &Spread, limit: f64) -> bool {
    s.min <= limit && limit <= s.max
}

fn at_most(what: &str, variants: &[VariantResult], id: &str, limit_us: f64) -> TargetResult {
    match added(variants, id) {
        Some((v, s)) => TargetResult {
            target: format!("{what} adds ≤ {limit_us} µs"),
            measured: format!(
                "{}: {:+.1} µs [{:+.1}–{:+.1}]",
                v.id, s.median, s.min, s.max
            ),
            met: Some(s.median <= limit_us),
            note: if straddles(&s, limit_us) {
                "the limit is within the spread of the rounds".into()
            } else {
                String::new()
            },
        },
        None => not_measured(&format!("{what} adds ≤ {limit_us} µs"), id),
    }
}

fn not_measured(target: &str, id: &str) -> TargetResult {
    TargetResult {
        target: target.to_owned(),
        measured: format!("{id}: not measured"),
        met: None,
        note: String::new(),
    }
}

/// `left` costs at most `factor` × `right` (added µs, medians).
fn ratio(
    target: &str,
    variants: &[VariantResult],
    left: &str,
    right: &[&str],
    factor: f64,
) -> TargetResult {
    let l = added(variants, left);
    let r = right
        .iter()
        .filter_map(|id| added(variants, id))
        .min_by(|a, b| a.1.median.total_cmp(&b.1.median));
    match (l, r) {
        (Some((lv, ls)), Some((rv, rs))) => {
            let limit = factor * rs.median;
            TargetResult {
                target: target.to_owned(),
                measured: format!(
                    "{}: {:+.1} µs; {}{}: {:+.1} µs → limit {:+.1} µs",
                    lv.id,
                    ls.median,
                    if (factor - 1.0).abs() > f64::EPSILON {
                        format!("{factor} × ")
                    } else {
                        String::new()
                    },
                    rv.id,
                    rs.median,
                    limit
                ),
                met: Some(ls.median <= limit),
                note: if straddles(&ls, limit) || straddles(&rs, ls.median / factor) {
                    "the two are within the spread of the rounds".into()
                } else {
                    String::new()
                },
            }
        }
        _ => not_measured(target, &format!("{left} or {}", right.join("/"))),
    }
}

fn size(modules: &[ModuleSize], name: &str, limit_kb: u64) -> TargetResult {
    let target = format!("dist/{name}.wasm ≤ {limit_kb} KB");
    match modules.iter().find(|m| m.name == name) {
        Some(m) => TargetResult {
            target,
            measured: format!(
                "{} bytes ({:.0} KB; gzip {:.0} KB)",
                m.bytes,
                m.bytes as f64 / 1000.0,
                m.gzip_bytes as f64 / 1000.0
            ),
            met: Some(m.bytes <= limit_kb * KB),
            note: String::new(),
        },
        None => not_measured(&target, name),
    }
}

/// Every target of issue 6 that a run can judge.
pub fn evaluate(variants: &[VariantResult], modules: &[ModuleSize]) -> Vec<TargetResult> {
    let singles = ["oauth2", "ab", "fault", "retry-client", "retry-server"];
    let mut t = vec![
        at_most(
            "bundle, gateway set (authenticated request + A/B)",
            variants,
            "bundle-gateway",
            5.0,
        ),
        at_most(
            "separate gateway set (for comparison)",
            variants,
            "gateway-set",
            5.0,
        ),
        at_most(
            "bundle, sidecar set (fault not firing + retry budget)",
            variants,
            "bundle-sidecar",
            4.0,
        ),
        at_most(
            "separate sidecar set (for comparison)",
            variants,
            "sidecar-set",
            4.0,
        ),
        ratio(
            "bundle with all four ≤ 1.5 × the cheapest single separate filter",
            variants,
            "bundle-all-four",
            &singles,
            1.5,
        ),
        ratio(
            "OAuth2 authenticated hot path ≤ Envoy's native oauth2",
            variants,
            "oauth2",
            &["envoy-oauth2"],
            1.0,
        ),
        ratio(
            "A/B tagging ≤ the Lua filter doing the same work",
            variants,
            "ab-like-lua",
            &["envoy-lua-ab"],
            1.0,
        ),
        ratio(
            "fault, no rule firing ≤ 1.2 × the empty-filter floor",
            variants,
            "fault",
            &["floor"],
            1.2,
        ),
    ];
    for m in modules {
        let limit = if m.name == "oauth2" || m.name.starts_with("bundle") {
            600
        } else {
            300
        };
        t.push(size(modules, &m.name, limit));
    }
    if !modules.iter().any(|m| m.name == "bundle") {
        t.push(size(modules, "bundle", 600));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Profile;
    use crate::report::Status;
    use crate::variants::Group;

    fn v(id: &str, median: f64, min: f64, max: f64) -> VariantResult {
        let s = Spread {
            median,
            min,
            max,
            n: 3,
            ci95: None,
        };
        VariantResult {
            id: id.into(),
            name: id.into(),
            group: Group::Filter,
            profile: Profile::Sidecar,
            baseline: "bare-sidecar".into(),
            filters: vec![],
            checks: vec![],
            status: Status::Ok,
            error: None,
            start_to_ready_ms: 0.0,
            rounds: vec![],
            cpu_us: Some(s),
            added_us: Some(s),
            p50_us: None,
            p99_us: None,
            requests_per_s: None,
            envoy_busy: None,
        }
    }

    #[test]
    fn judges_limits_and_ratios() {
        let vs = vec![
            v("fault", 2.5, 2.3, 2.7),
            v("floor", 2.2, 2.0, 2.4),
            v("gateway-set", 6.0, 4.5, 7.0),
        ];
        let t = evaluate(&vs, &[]);
        let find = |s: &str| t.iter().find(|t| t.target.starts_with(s)).unwrap();
        let f = find("fault, no rule firing");
        assert_eq!(f.met, Some(true), "{f:?}");
        let g = find("separate gateway set");
        assert_eq!(g.met, Some(false));
        assert!(g.note.contains("spread"));
        assert_eq!(find("bundle, gateway set").met, None);
        assert_eq!(find("dist/bundle.wasm").met, None);
    }

    #[test]
    fn judges_sizes() {
        let m = vec![
            ModuleSize {
                name: "ab".into(),
                bytes: 299_000,
                gzip_bytes: 100_000,
            },
            ModuleSize {
                name: "oauth2".into(),
                bytes: 601_000,
                gzip_bytes: 300_000,
            },
        ];
        let t = evaluate(&[], &m);
        let find = |s: &str| t.iter().find(|t| t.target.starts_with(s)).unwrap();
        assert_eq!(find("dist/ab.wasm ≤ 300").met, Some(true));
        assert_eq!(find("dist/oauth2.wasm ≤ 600").met, Some(false));
    }
}

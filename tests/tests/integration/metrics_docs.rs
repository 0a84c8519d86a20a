//! Each filter's Metrics section in docs/ lists exactly the metrics its `stats` module names, as
//! `/stats/prometheus` exports them with the tag extractors: the builders' names with `{label}`
//! for each tagged value (`meshwright.fault.rule.{rule}.aborts_injected`) become
//! `meshwright_fault_rule_aborts_injected{rule}`.

use meshwright_retry::config::Side;
use std::collections::BTreeSet;

/// The metrics the tables of `doc`'s Metrics section name in their first column: one per
/// `meshwright_…` code span, and `` `_x` `` after one of them is `meshwright_<filter>_x`
/// (`` `meshwright_oauth2_refreshes` / `_refresh_failures` ``).
fn documented(doc: &str, filter: &str) -> BTreeSet<String> {
    let metrics = doc
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|m| m.split("\n## ").next())
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for row in metrics.lines().filter(|l| l.starts_with("| `meshwright_")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        for span in first_cell.split('`').skip(1).step_by(2) {
            let name = match span.strip_prefix('_') {
                Some(rest) => format!("meshwright_{filter}_{rest}"),
                None => span.to_owned(),
            };
            names.insert(name);
        }
    }
    names
}

/// `name` (dots between segments, `{label}` segments for tagged values) as exported.
fn exported(name: &str) -> String {
    let (labels, segments): (Vec<&str>, Vec<&str>) = name
        .split('.')
        .partition(|s| s.starts_with('{') && s.ends_with('}'));
    let labels: Vec<&str> = labels.iter().map(|l| l.trim_matches(['{', '}'])).collect();
    let base = segments.join("_");
    if labels.is_empty() {
        base
    } else {
        format!("{base}{{{}}}", labels.join(","))
    }
}

/// The documented metrics of docs/`doc` are `names`, exported.
fn assert_documented(doc: &str, filter: &str, names: &[String]) {
    let path = meshwright_testbed::paths::root().join("docs").join(doc);
    let text = std::fs::read_to_string(&path).expect("the doc");
    let documented = documented(&text, filter);
    let built: BTreeSet<String> = names.iter().map(|n| exported(n)).collect();
    let undocumented: Vec<&String> = built.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&built).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/{doc}, Metrics: not listed {undocumented:?}; listed but not in the stats module \
         {unknown:?}"
    );
}

#[test]
fn names_are_read_from_the_builders_and_exported_with_tags_as_labels() {
    assert_eq!(
        exported("meshwright.ab.experiment.{experiment}.variant.{variant}.assigned"),
        "meshwright_ab_experiment_variant_assigned{experiment,variant}"
    );
    assert_eq!(
        exported("meshwright.fault.active_faults"),
        "meshwright_fault_active_faults"
    );
    let rule = fields(&meshwright_fault::stats::RuleMetricNames::new("r"));
    assert_eq!(rule.len(), 5, "{rule:?}");
    assert_eq!(rule[0], "meshwright.fault.rule.r.aborts_injected");
}

/// Every name a `stats` module's names struct holds, read from its `Debug` form (so a new field
/// is checked without a change here).
fn fields(names: &impl std::fmt::Debug) -> Vec<String> {
    format!("{names:?}")
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_fault_doc_lists_every_metric() {
    use meshwright_fault::stats::{self, RuleMetricNames};
    let mut names = fields(&RuleMetricNames::new("{rule}"));
    names.extend([stats::active_faults(), stats::header_control_rejected()]);
    assert_documented("fault.md", stats::FILTER, &names);
}

#[test]
fn the_ab_doc_lists_every_metric() {
    use meshwright_ab::stats::{self, ExperimentMetricNames, VariantMetricNames};
    let mut names = fields(&VariantMetricNames::new("{experiment}", "{variant}"));
    names.extend(fields(&ExperimentMetricNames::new("{experiment}")));
    names.extend([
        stats::anonymous_ids_issued(),
        stats::overrides_rejected(),
        stats::sticky_cookies_rejected(),
    ]);
    assert_documented("ab.md", stats::FILTER, &names);
}

#[test]
fn the_retry_budget_doc_lists_every_metric() {
    use meshwright_retry::stats::{DestinationMetricNames, FILTER, SideMetricNames};
    for side in [Side::Client, Side::Server] {
        let mut names = fields(&DestinationMetricNames::new(side, "{destination}"));
        names.extend(fields(&SideMetricNames::new(side)));
        // The side is a tagged value too (tag `side`).
        let names: Vec<String> = names
            .iter()
            .map(|n| n.replacen(&format!(".{}.", side.as_str()), ".{side}.", 1))
            .collect();
        assert_documented("retry-budget.md", FILTER, &names);
    }
}

#[test]
fn the_oauth2_doc_lists_every_metric() {
    use meshwright_oauth2::stats::{self, COUNTERS};
    let mut names: Vec<String> = COUNTERS.iter().map(|c| stats::counter(c)).collect();
    names.push(stats::login_failed("{reason}"));
    names.push(stats::token_error("{reason}"));
    assert_documented("oauth2.md", stats::FILTER, &names);
}

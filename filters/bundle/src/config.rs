//! The bundle's configuration: one section per filter, each exactly that filter's own
//! configuration.
//!
//! ```json
//! {"oauth2": {...}, "ab": {...}, "retry_budget": {...}, "fault": {...}}
//! ```
//!
//! A section is handed, byte for byte, to its filter's own parser (there is no second schema);
//! an absent (or `null`) section is a filter that is off. A filter's refusal is reported with
//! the section in front of the field, e.g. `fault.rules[0].abort.percentage`. Unknown sections
//! are refused, and so is a configuration that enables nothing.

use meshwright_shared::config::{ConfigError, parse_json};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The filters a bundle runs, in the order it runs them on a request (see [`crate::chain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    OAuth2,
    Ab,
    RetryBudget,
    Fault,
}

impl Section {
    /// Every section, in running order.
    pub const ALL: [Self; 4] = [Self::OAuth2, Self::Ab, Self::RetryBudget, Self::Fault];

    /// The section's key in the configuration (the filter's `pluginName` as a WasmPlugin of
    /// its own).
    pub fn name(self) -> &'static str {
        match self {
            Self::OAuth2 => "oauth2",
            Self::Ab => "ab",
            Self::RetryBudget => "retry_budget",
            Self::Fault => "fault",
        }
    }

    /// Whether this module was built with the section's filter (the sidecar module has no
    /// OAuth2).
    pub fn available(self) -> bool {
        match self {
            Self::OAuth2 => cfg!(feature = "oauth2"),
            Self::Ab | Self::RetryBudget | Self::Fault => true,
        }
    }

    /// A filter's config error as the bundle reports it: the field inside this section.
    pub fn error(self, e: ConfigError) -> ConfigError {
        let name = self.name();
        let field = match e.field.as_str() {
            "." | "" => name.to_owned(),
            f if f.starts_with('[') => format!("{name}{f}"),
            f => format!("{name}.{f}"),
        };
        ConfigError {
            field,
            reason: e.reason,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    oauth2: Option<Box<RawValue>>,
    #[serde(default)]
    ab: Option<Box<RawValue>>,
    #[serde(default)]
    retry_budget: Option<Box<RawValue>>,
    #[serde(default)]
    fault: Option<Box<RawValue>>,
}

/// The sections present, in running order, each still the text its filter will parse.
#[derive(Debug)]
pub struct BundleConfig {
    sections: Vec<(Section, Box<RawValue>)>,
}

impl BundleConfig {
    /// Splits the bundle's configuration into its sections (their content is checked by each
    /// filter's own parser, [`BundleConfig::check`] or the filter's `configure`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let w: Wire = parse_json(bytes)?;
        let sections: Vec<(Section, Box<RawValue>)> = [
            (Section::OAuth2, w.oauth2),
            (Section::Ab, w.ab),
            (Section::RetryBudget, w.retry_budget),
            (Section::Fault, w.fault),
        ]
        .into_iter()
        .filter_map(|(s, raw)| raw.map(|r| (s, r)))
        .collect();
        if let Some((s, _)) = sections.iter().find(|(s, _)| !s.available()) {
            return Err(ConfigError::invalid(
                s.name(),
                "this module (the sidecar bundle, bundle-sidecar.wasm) has no such filter: \
                 attach bundle.wasm where it is needed",
            ));
        }
        if sections.is_empty() {
            return Err(ConfigError::invalid(
                ".",
                "no filter enabled: give at least one of the sections `oauth2`, `ab`, \
                 `retry_budget`, `fault`",
            ));
        }
        Ok(Self { sections })
    }

    /// The enabled filters and their configurations, in running order.
    pub fn sections(&self) -> impl Iterator<Item = (Section, &[u8])> {
        self.sections
            .iter()
            .map(|(s, raw)| (*s, raw.get().as_bytes()))
    }

    /// Runs every section through its filter's own parser and validation (the part that needs
    /// no proxy: what `configure` does before it builds the runtime), with `env` for the
    /// secrets the OAuth2 filter reads. The first refusal is returned, named in its section.
    pub fn check(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (section, bytes) in self.sections() {
            let checked = match section {
                #[cfg(feature = "oauth2")]
                Section::OAuth2 => meshwright_oauth2::OAuth2Config::from_json(bytes, env).map(drop),
                // Refused by `from_json`.
                #[cfg(not(feature = "oauth2"))]
                Section::OAuth2 => {
                    let _ = env;
                    Ok(())
                }
                Section::Ab => meshwright_ab::AbConfig::from_json(bytes).map(drop),
                Section::RetryBudget => {
                    meshwright_retry::RetryBudgetConfig::from_json(bytes).map(drop)
                }
                Section::Fault => meshwright_fault::FaultConfig::from_json(bytes).map(drop),
            };
            checked.map_err(|e| section.error(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwright_shared::config::Reason;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn names(c: &BundleConfig) -> Vec<&'static str> {
        c.sections().map(|(s, _)| s.name()).collect()
    }

    #[test]
    fn sections_run_in_the_bundles_order_whatever_the_json_order() {
        let c = BundleConfig::from_json(
            br#"{"fault": {"rules": []}, "retry_budget": {"side": "server"}, "ab": {"experiments": []}}"#,
        )
        .unwrap();
        assert_eq!(names(&c), ["ab", "retry_budget", "fault"]);
        c.check(&no_env).unwrap();
    }

    #[test]
    fn a_section_is_handed_over_byte_for_byte() {
        let c = BundleConfig::from_json(br#"{"fault": {"rules" : [ ], "enabled":true}}"#).unwrap();
        let (_, bytes) = c.sections().next().unwrap();
        assert_eq!(bytes, br#"{"rules" : [ ], "enabled":true}"#);
    }

    #[test]
    fn absent_or_null_sections_are_off() {
        let c = BundleConfig::from_json(br#"{"fault": {}, "oauth2": null}"#).unwrap();
        assert_eq!(names(&c), ["fault"]);
    }

    #[test]
    fn a_bundle_that_enables_nothing_is_refused() {
        for empty in [&b""[..], b"{}", br#"{"ab": null}"#] {
            let e = BundleConfig::from_json(empty).unwrap_err();
            assert_eq!(e.field, ".");
        }
    }

    #[test]
    fn an_unknown_section_is_refused_by_name() {
        let e = BundleConfig::from_json(br#"{"faults": {}}"#).unwrap_err();
        assert_eq!(e.field, "faults");
        assert!(matches!(e.reason, Reason::Syntax(ref m) if m.contains("unknown field")));
    }

    #[test]
    fn a_filters_refusal_names_the_field_inside_its_section() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"fault": {"rules": [{"name": "a", "abort": {"http_status": 503, "percentage": 150}}]}}"#,
                "fault.rules[0].abort.percentage",
            ),
            (br#"{"fault": {"enabeld": true}}"#, "fault.enabeld"),
            (
                br#"{"retry_budget": {"side": "client", "retry_ratio": 11}}"#,
                "retry_budget.retry_ratio",
            ),
            (br#"{"ab": {"experiments": 3}}"#, "ab.experiments"),
            (br#"{"oauth2": {}}"#, "oauth2"),
        ];
        for (json, field) in cases {
            let c = BundleConfig::from_json(json).unwrap();
            let e = c.check(&no_env).unwrap_err();
            assert_eq!(e.field, field, "{}", String::from_utf8_lossy(json));
        }
    }

    #[test]
    fn error_fields_are_prefixed_with_the_section() {
        let e = |f: &str| Section::Fault.error(ConfigError::invalid(f, "x")).field;
        assert_eq!(e("."), "fault");
        assert_eq!(e("rules[2].abort"), "fault.rules[2].abort");
        assert_eq!(e("[0]"), "fault[0]");
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                if let Ok(c) = BundleConfig::from_json(&bytes) {
                    let _ = c.check(&no_env);
                }
            }

            #[test]
            fn any_subset_of_sections_comes_out_in_running_order(mask in 1u8..16) {
                let mut parts = Vec::new();
                for (i, s) in Section::ALL.iter().enumerate().rev() {
                    if mask & (1 << i) != 0 {
                        parts.push(format!(r#""{}": {{}}"#, s.name()));
                    }
                }
                let json = format!("{{{}}}", parts.join(","));
                let c = BundleConfig::from_json(json.as_bytes()).unwrap();
                let got: Vec<Section> = c.sections().map(|(s, _)| s).collect();
                let want: Vec<Section> = Section::ALL
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, s)| *s)
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}

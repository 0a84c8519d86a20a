//! The fault filter's configuration: the wire format (what `pluginConfig` holds) and its
//! validation into the runtime [`FaultConfig`], built once per `on_configure`.
//!
//! Every field is documented in `docs/fault.md`; keep the two in step.

use crate::delay::{DelayDistribution, DelaySpec};
use meshwright_shared::config::{ConfigError, Path, Reason, parse_json, validate_stat_name};
use meshwright_shared::key::{KeySource, KeySourceSpec};
use meshwright_shared::matcher::{RequestMatchSpec, RequestMatcher};
use meshwright_shared::percent::{PercentSpec, Percentage};
use meshwright_shared::time::parse_rfc3339_ms;
use meshwright_shared::validate::{env_name, header_map};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Name under which faults requested through `x-envoy-fault-*` headers are counted.
pub const HEADER_CONTROL_RULE: &str = "header-control";

/// Largest delay any rule or control header may ask for: 10 minutes.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Largest abort or response body, in bytes.
pub const MAX_BODY_LEN: usize = 64 * 1024;

const fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfigSpec {
    /// Global switch: `false` makes the filter pass every request untouched.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most faults in progress at once across all workers of the proxy; unset: unlimited.
    pub max_active_faults: Option<u64>,
    /// Tick period while delays are pending: the accuracy of delays.
    pub delay_resolution_ms: Option<u32>,
    /// Envoy-compatible `x-envoy-fault-*` request headers; absent: ignored.
    pub header_control: Option<HeaderControlSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderControlSpec {
    /// Require `x-meshwright-fault-signature` (HMAC-SHA256 under the key in `signing_key_env`).
    #[serde(default = "yes")]
    pub require_signature: bool,
    /// Environment variable holding the signing key (WasmPlugin `vmConfig.env`).
    pub signing_key_env: Option<String>,
    /// Upper bound on `x-envoy-fault-delay-request`.
    pub max_delay_ms: Option<u64>,
    /// Longest accepted signature lifetime (`t` minus now).
    pub max_signature_ttl_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, rename = "match")]
    pub matches: RequestMatchSpec,
    pub cohort: Option<CohortSpec>,
    pub abort: Option<AbortSpec>,
    pub delay: Option<DelaySpec>,
    pub response: Option<AbortSpec>,
    /// RFC 3339; from this instant on the rule is inert.
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortSpec {
    pub key: KeySourceSpec,
    pub percentage: PercentSpec,
    /// Defaults to the rule name: each rule draws its own cohort unless two share a salt.
    pub salt: Option<String>,
}

/// A rule's `abort` or `response`: the same fields (docs/fault.md, "`abort` and `response`").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortSpec {
    pub http_status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub percentage: PercentSpec,
}

/// The validated configuration, shared read-only by every request of the VM.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub enabled: bool,
    pub max_active_faults: Option<u64>,
    pub delay_resolution_ms: u32,
    pub header_control: Option<HeaderControl>,
    pub rules: Vec<Rule>,
    /// Request headers the decision reads; the glue fetches exactly these.
    pub headers_read: Vec<String>,
    /// Headers of which a request must carry at least one for anything to fire (every rule's
    /// [`RequestMatcher::required_header`] and header control's signature, or its fault headers
    /// when signatures are not required), so the glue
    /// can rule a request out with a few absent-header reads before fetching the rest. `None`
    /// when some enabled rule can match without any header (e.g. a path-only rule).
    pub gates: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct HeaderControl {
    /// Environment variable of the signing key; `None`: signatures not required.
    pub signing_key_env: Option<String>,
    pub max_delay_ms: u64,
    pub max_signature_ttl_s: u64,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub enabled: bool,
    pub matcher: RequestMatcher,
    pub cohort: Option<Cohort>,
    pub abort: Option<Abort>,
    pub delay: Option<Delay>,
    pub response: Option<Abort>,
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Cohort {
    pub key: KeySource,
    pub percentage: Percentage,
    pub salt: String,
}

/// A reply the filter sends instead of the upstream's (abort) or over it (response fault).
#[derive(Debug, Clone, PartialEq)]
pub struct Abort {
    pub http_status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub percentage: Percentage,
}

#[derive(Debug, Clone)]
pub struct Delay {
    pub distribution: DelayDistribution,
    pub percentage: Percentage,
}

impl FaultConfig {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        parse_json::<FaultConfigSpec>(bytes)?.compile()
    }

    /// Whether this rule is live at `now_ms`.
    pub fn rule_active(rule: &Rule, now_ms: u64) -> bool {
        rule.enabled && rule.expires_at_ms.is_none_or(|t| now_ms < t)
    }
}

/// See [`FaultConfig::gates`].
fn gates(rules: &[Rule], header_control: Option<&HeaderControl>) -> Option<Vec<String>> {
    let mut gates: Vec<String> = Vec::new();
    let mut need = |h: &str| {
        if !gates.iter().any(|x| x == h) {
            gates.push(h.to_owned());
        }
    };
    for rule in rules.iter().filter(|r| r.enabled) {
        need(rule.matcher.required_header()?);
    }
    match header_control {
        // Unsigned fault headers are ignored: the signature alone is the gate.
        Some(hc) if hc.signing_key_env.is_some() => need(crate::control::SIGNATURE),
        Some(_) => crate::control::FIELDS.iter().for_each(|h| need(h)),
        None => {}
    }
    Some(gates)
}

impl FaultConfigSpec {
    pub fn compile(&self) -> Result<FaultConfig, ConfigError> {
        let root = Path::root();
        if let Some(n) = self.max_active_faults
            && n == 0
        {
            return Err(ConfigError::out_of_range(
                root.key("max_active_faults"),
                1,
                u64::MAX,
                n,
            ));
        }
        let delay_resolution_ms = self.delay_resolution_ms.unwrap_or(10);
        if !(1..=1000).contains(&delay_resolution_ms) {
            return Err(ConfigError::out_of_range(
                root.key("delay_resolution_ms"),
                1,
                1000,
                delay_resolution_ms,
            ));
        }
        let header_control = self
            .header_control
            .as_ref()
            .map(|h| h.compile(&root.key("header_control")))
            .transpose()?;

        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, spec) in self.rules.iter().enumerate() {
            let field = root.key("rules").index(i);
            let rule = spec.compile(&field)?;
            if rules.iter().any(|r: &Rule| r.name == rule.name) {
                return Err(ConfigError::new(
                    field.key("name"),
                    Reason::Duplicate(rule.name),
                ));
            }
            rules.push(rule);
        }

        let mut headers_read: Vec<String> = Vec::new();
        let mut need = |h: &str| {
            if !headers_read.iter().any(|x| x == h) {
                headers_read.push(h.to_owned());
            }
        };
        for rule in &rules {
            rule.matcher.headers_read().for_each(&mut need);
            if let Some(c) = &rule.cohort {
                need(c.key.header_read());
            }
            let grpc = |a: &Option<Abort>| a.as_ref().is_some_and(|a| a.grpc_status.is_some());
            if grpc(&rule.abort) || grpc(&rule.response) {
                need("content-type");
            }
        }
        if header_control.is_some() {
            for h in crate::control::HEADERS_READ {
                need(h);
            }
            // A signed gRPC abort answers a gRPC request in gRPC's terms: the decision needs to
            // know the request is one, whatever the rules say.
            need("content-type");
        }

        let gates = gates(&rules, header_control.as_ref());
        Ok(FaultConfig {
            gates,
            enabled: self.enabled,
            max_active_faults: self.max_active_faults,
            delay_resolution_ms,
            header_control,
            rules,
            headers_read,
        })
    }
}

impl HeaderControlSpec {
    fn compile(&self, field: &Path) -> Result<HeaderControl, ConfigError> {
        let signing_key_env = match (&self.signing_key_env, self.require_signature) {
            (Some(env), true) => {
                env_name(&field.key("signing_key_env"), env)?;
                Some(env.clone())
            }
            (None, true) => {
                return Err(ConfigError::invalid(
                    field.key("signing_key_env"),
                    "required while require_signature is true (the default): name the \
                     environment variable that holds the HMAC key",
                ));
            }
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    field.key("signing_key_env"),
                    "set only when require_signature is true",
                ));
            }
            (None, false) => None,
        };
        let max_delay_ms = self.max_delay_ms.unwrap_or(10_000);
        if !(1..=MAX_DELAY_MS).contains(&max_delay_ms) {
            return Err(ConfigError::out_of_range(
                field.key("max_delay_ms"),
                1,
                MAX_DELAY_MS,
                max_delay_ms,
            ));
        }
        let max_signature_ttl_s = self.max_signature_ttl_s.unwrap_or(3600);
        if !(1..=7 * 86_400).contains(&max_signature_ttl_s) {
            return Err(ConfigError::out_of_range(
                field.key("max_signature_ttl_s"),
                1,
                7 * 86_400,
                max_signature_ttl_s,
            ));
        }
        Ok(HeaderControl {
            signing_key_env,
            max_delay_ms,
            max_signature_ttl_s,
        })
    }
}

impl RuleSpec {
    fn compile(&self, field: &Path) -> Result<Rule, ConfigError> {
        validate_stat_name(&field.key("name"), &self.name)?;
        if self.name == HEADER_CONTROL_RULE {
            return Err(ConfigError::invalid(
                field.key("name"),
                format!("`{HEADER_CONTROL_RULE}` is reserved for header-controlled faults"),
            ));
        }
        if self.abort.is_none() && self.delay.is_none() && self.response.is_none() {
            return Err(ConfigError::invalid(
                field,
                "a rule needs at least one of abort, delay, response",
            ));
        }
        let expires_at_ms = self
            .expires_at
            .as_deref()
            .map(|s| {
                parse_rfc3339_ms(s).ok_or_else(|| {
                    ConfigError::invalid(
                        field.key("expires_at"),
                        format!("`{s}` is not an RFC 3339 timestamp like 2026-12-01T00:00:00Z"),
                    )
                })
            })
            .transpose()?;
        Ok(Rule {
            name: self.name.clone(),
            enabled: self.enabled,
            matcher: self.matches.compile(&field.key("match"))?,
            cohort: self
                .cohort
                .as_ref()
                .map(|c| c.compile(&field.key("cohort"), &self.name))
                .transpose()?,
            abort: self
                .abort
                .as_ref()
                .map(|a| a.compile(&field.key("abort")))
                .transpose()?,
            delay: self
                .delay
                .as_ref()
                .map(|d| d.compile(&field.key("delay")))
                .transpose()?,
            response: self
                .response
                .as_ref()
                .map(|r| r.compile(&field.key("response")))
                .transpose()?,
            expires_at_ms,
        })
    }
}

impl CohortSpec {
    fn compile(&self, field: &Path, rule_name: &str) -> Result<Cohort, ConfigError> {
        Ok(Cohort {
            key: self.key.compile(&field.key("key"))?,
            percentage: self.percentage.compile(&field.key("percentage"))?,
            salt: self.salt.clone().unwrap_or_else(|| rule_name.to_owned()),
        })
    }
}

impl AbortSpec {
    fn compile(&self, field: &Path) -> Result<Abort, ConfigError> {
        let (http_status, grpc_status) = (self.http_status, self.grpc_status);
        if http_status.is_none() && grpc_status.is_none() {
            return Err(ConfigError::invalid(
                field,
                "set http_status, grpc_status, or both",
            ));
        }
        if let Some(s) = http_status
            && !(200..=599).contains(&s)
        {
            return Err(ConfigError::out_of_range(
                field.key("http_status"),
                200,
                599,
                s,
            ));
        }
        if let Some(s) = grpc_status
            && !(1..=16).contains(&s)
        {
            return Err(ConfigError::out_of_range(
                field.key("grpc_status"),
                1,
                16,
                s,
            ));
        }
        let body = self.body.clone().unwrap_or_default();
        if body.len() > MAX_BODY_LEN {
            return Err(ConfigError::out_of_range(
                field.key("body"),
                0,
                MAX_BODY_LEN,
                body.len(),
            ));
        }
        Ok(Abort {
            http_status,
            grpc_status,
            body,
            headers: header_map(&field.key("headers"), &self.headers)?,
            percentage: self.percentage.compile(&field.key("percentage"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn err(json: &str) -> ConfigError {
        FaultConfig::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn empty_config_is_an_enabled_filter_without_rules() {
        let c = FaultConfig::from_json(b"").unwrap();
        assert!(c.enabled);
        assert!(c.rules.is_empty());
        assert!(c.headers_read.is_empty());
        assert_eq!(c.delay_resolution_ms, 10);
    }

    #[test]
    fn a_full_rule_compiles_and_lists_its_headers() {
        let c = FaultConfig::from_json(
            br#"{"max_active_faults": 50, "rules": [{
                "name": "checkout",
                "match": {"path": {"prefix": "/api/checkout"}, "methods": ["POST"],
                          "headers": [{"name": "x-canary", "exact": "1"}]},
                "cohort": {"key": {"cookie": "uid"}, "percentage": 5},
                "abort": {"http_status": 503, "grpc_status": 14, "body": "oops",
                          "headers": {"Retry-After": "1"}, "percentage": 12.5},
                "delay": {"fixed_ms": 200, "percentage": 100},
                "response": {"http_status": 500, "percentage": 0.0001},
                "expires_at": "2030-01-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        let r = &c.rules[0];
        assert_eq!(r.abort.as_ref().unwrap().percentage.ppm(), 125_000);
        assert_eq!(
            r.abort.as_ref().unwrap().headers,
            [("retry-after".into(), "1".into())]
        );
        assert_eq!(r.response.as_ref().unwrap().percentage.ppm(), 1);
        assert_eq!(r.cohort.as_ref().unwrap().salt, "checkout");
        assert_eq!(r.expires_at_ms, Some(1_893_456_000_000));
        assert_eq!(
            c.headers_read,
            [":path", ":method", "x-canary", "cookie", "content-type"]
        );
    }

    #[test]
    fn header_control_reads_content_type_so_a_signed_grpc_abort_can_fire() {
        let c = FaultConfig::from_json(
            br#"{"header_control": {"require_signature": false}, "rules": []}"#,
        )
        .unwrap();
        assert!(
            c.headers_read.iter().any(|h| h == "content-type"),
            "{:?}",
            c.headers_read
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let e =
            err(r#"{"rules":[{"name":"a","abort":{"http_status":503,"percentage":1,"pct":2}}]}"#);
        assert_eq!(e.field, "rules[0].abort.pct");
        let e = err(
            r#"{"rules":[{"name":"a","response":{"http_status":500,"percentage":1,"pct":2}}]}"#,
        );
        assert_eq!(e.field, "rules[0].response.pct");
        let e = err(r#"{"enabeld": true}"#);
        assert_eq!(e.field, "enabeld");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases = [
            (
                r#"{"rules":[{"name":"a","abort":{"http_status":503,"percentage":100.5}}]}"#,
                "rules[0].abort.percentage",
            ),
            (
                r#"{"rules":[{"name":"a","abort":{"http_status":99,"percentage":1}}]}"#,
                "rules[0].abort.http_status",
            ),
            (
                r#"{"rules":[{"name":"a","abort":{"http_status":600,"percentage":1}}]}"#,
                "rules[0].abort.http_status",
            ),
            (
                r#"{"rules":[{"name":"a","abort":{"grpc_status":0,"percentage":1}}]}"#,
                "rules[0].abort.grpc_status",
            ),
            (
                r#"{"rules":[{"name":"a","response":{"http_status":500,"percentage":-1}}]}"#,
                "rules[0].response.percentage",
            ),
            (r#"{"max_active_faults":0}"#, "max_active_faults"),
            (r#"{"delay_resolution_ms":0}"#, "delay_resolution_ms"),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(e.field, field, "{json}");
            assert!(matches!(e.reason, Reason::OutOfRange { .. }), "{json}: {e}");
        }
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (
                r#"{"rules":[{"name":"a","match":{"path":{"regex":"(["}},"abort":{"http_status":503,"percentage":1}}]}"#,
                "rules[0].match.path.regex",
            ),
            (r#"{"rules":[{"name":"a"}]}"#, "rules[0]"),
            (
                r#"{"rules":[{"name":"a","abort":{"percentage":1}}]}"#,
                "rules[0].abort",
            ),
            (
                r#"{"rules":[{"name":"Bad.Name","abort":{"http_status":503,"percentage":1}}]}"#,
                "rules[0].name",
            ),
            (
                r#"{"rules":[{"name":"header-control","abort":{"http_status":503,"percentage":1}}]}"#,
                "rules[0].name",
            ),
            (
                r#"{"rules":[{"name":"a","abort":{"http_status":503,"percentage":1},"expires_at":"tomorrow"}]}"#,
                "rules[0].expires_at",
            ),
            (
                r#"{"rules":[{"name":"a","abort":{"http_status":503,"percentage":1,"headers":{"x":"a\r\nb"}}}]}"#,
                "rules[0].abort.headers.x",
            ),
            (
                r#"{"rules":[{"name":"a","response":{"http_status":500,"percentage":1,"headers":{"bad name":"1"}}}]}"#,
                "rules[0].response.headers.bad name",
            ),
            (r#"{"header_control":{}}"#, "header_control.signing_key_env"),
            (
                r#"{"header_control":{"require_signature":false,"signing_key_env":"K"}}"#,
                "header_control.signing_key_env",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(err(json).field, field, "{json}");
        }
    }

    #[test]
    fn duplicate_rule_names_are_refused() {
        let e = err(
            r#"{"rules":[{"name":"a","abort":{"http_status":503,"percentage":1}},
                         {"name":"a","abort":{"http_status":500,"percentage":1}}]}"#,
        );
        assert_eq!(e.field, "rules[1].name");
        assert_eq!(e.reason, Reason::Duplicate("a".into()));
    }

    #[test]
    fn expiry_makes_a_rule_inert() {
        let c = FaultConfig::from_json(
            br#"{"rules":[{"name":"a","abort":{"http_status":503,"percentage":1},
                "expires_at":"2026-01-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        let t = c.rules[0].expires_at_ms.unwrap();
        assert!(FaultConfig::rule_active(&c.rules[0], t - 1));
        assert!(!FaultConfig::rule_active(&c.rules[0], t));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = FaultConfig::from_json(&bytes);
            }

            #[test]
            fn arbitrary_percentages_are_accepted_iff_in_range(p in -10.0f64..110.0) {
                let json = format!(
                    r#"{{"rules":[{{"name":"a","abort":{{"http_status":503,"percentage":{p}}}}}]}}"#
                );
                prop_assert_eq!(FaultConfig::from_json(json.as_bytes()).is_ok(), (0.0..=100.0).contains(&p));
            }
        }
    }
}

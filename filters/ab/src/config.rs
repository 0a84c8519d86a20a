//! The A/B filter's configuration: the wire format (what `pluginConfig` holds) and its validation
//! into the runtime [`AbConfig`], built once per `on_configure`.
//!
//! Every field is documented in `docs/ab.md`; keep the two in step.

use crate::bucket::{HashMode, SPACE};
use meshwright_shared::config::{ConfigError, Path, Reason, parse_json, validate_stat_name};
use meshwright_shared::key::{KeySource, KeySourceSpec};
use meshwright_shared::matcher::{RequestMatchSpec, RequestMatcher};
use meshwright_shared::validate::{env_name, header_name};
use serde::Deserialize;

/// Default lifetime of the anonymous-id cookie: one year.
pub const DEFAULT_ANONYMOUS_MAX_AGE_S: u64 = 365 * 86_400;
/// Default lifetime of the sticky-assignment cookie: 90 days.
pub const DEFAULT_STICKY_MAX_AGE_S: u64 = 90 * 86_400;
/// Longest cookie lifetime accepted (browsers cap at 400 days anyway).
pub const MAX_COOKIE_AGE_S: u64 = 400 * 86_400;
/// Default and largest accepted lifetime of a signed override.
pub const DEFAULT_OVERRIDE_TTL_S: u64 = 86_400;
pub const MAX_OVERRIDE_TTL_S: u64 = 30 * 86_400;
/// Most experiments one filter runs.
pub const MAX_EXPERIMENTS: usize = 64;
/// Most variants per experiment.
pub const MAX_VARIANTS: usize = 16;

/// Request headers an experiment may not write: they carry identity, routing or framing that
/// other parts of the proxy rely on.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "baggage",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authorization",
    "te",
    "traceparent",
    "tracestate",
    "transfer-encoding",
    "upgrade",
];

const fn yes() -> bool {
    true
}

const fn one() -> u32 {
    1
}

fn default_identity() -> Vec<KeySourceSpec> {
    vec![KeySourceSpec::JwtClaim("sub".to_owned())]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbConfigSpec {
    /// Global switch: `false` assigns nothing (client copies of the output headers are still
    /// removed).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where the user's identity is read, first found wins.
    #[serde(default = "default_identity")]
    pub identity: Vec<KeySourceSpec>,
    /// A generated id in a long-lived cookie for users without one; absent: such users are not
    /// assigned.
    pub anonymous_id: Option<CookieSpec>,
    /// A signed cookie recording each user's assignments; absent: off.
    pub sticky: Option<CookieSpec>,
    /// Environment variable with the HMAC key for the sticky cookie and signed overrides.
    pub signing_key_env: Option<String>,
    /// QA overrides; absent: off.
    pub overrides: Option<OverridesSpec>,
    /// Append assignments to the W3C `baggage` request header.
    #[serde(default = "yes")]
    pub baggage: bool,
    /// Response header that reports the assignments; absent: off.
    pub debug_header: Option<String>,
    #[serde(default)]
    pub experiments: Vec<ExperimentSpec>,
}

pub use meshwright_shared::cookie::SameSite;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSpec {
    pub name: String,
    pub max_age_s: Option<u64>,
    #[serde(default = "yes")]
    pub secure: bool,
    #[serde(default = "yes")]
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    pub path: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesSpec {
    /// Request header carrying `experiment=variant[,experiment=variant]`.
    pub header: Option<String>,
    /// Query parameter carrying the same.
    pub query_param: Option<String>,
    /// Users whose overrides are honoured unsigned.
    pub allowed_users: Option<AllowListSpec>,
    /// Honour overrides signed with the key in `signing_key_env`.
    #[serde(default)]
    pub signed: bool,
    pub max_signature_ttl_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowListSpec {
    pub key: KeySourceSpec,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The request header the assignment is written to (the mesh routes on it).
    pub header: String,
    /// Defaults to the name.
    pub salt: Option<String>,
    /// Bumping it invalidates sticky-cookie entries of this experiment.
    #[serde(default = "one")]
    pub version: u32,
    #[serde(default)]
    pub hash: HashMode,
    /// Share of users in the experiment at all, in basis points; default 10000.
    pub coverage: Option<u32>,
    #[serde(default, rename = "match")]
    pub matches: RequestMatchSpec,
    /// Key of the W3C baggage member; default `ab.<name>`.
    pub baggage_key: Option<String>,
    /// Take the assignment an earlier hop made, from its baggage member or output header (hops
    /// inside the mesh, behind a proxy that removes client copies).
    #[serde(default)]
    pub trust_incoming: bool,
    pub variants: Vec<VariantSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub name: String,
    /// Basis points; the variants' weights sum to 10000.
    pub weight: u32,
}

/// The validated configuration, shared read-only by every request of the VM.
#[derive(Debug, Clone)]
pub struct AbConfig {
    pub enabled: bool,
    pub identity: Vec<KeySource>,
    pub anonymous_id: Option<CookieAttrs>,
    pub sticky: Option<CookieAttrs>,
    pub signing_key_env: Option<String>,
    pub overrides: Option<Overrides>,
    pub baggage: bool,
    pub debug_header: Option<String>,
    pub experiments: Vec<Experiment>,
    /// Request headers the decision reads; the glue fetches exactly these.
    pub headers_read: Vec<String>,
}

/// A cookie the filter sets: its name, lifetime and the shared, validated attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttrs {
    pub name: String,
    pub max_age_s: u64,
    pub attrs: meshwright_shared::cookie::CookieAttrs,
}

#[derive(Debug, Clone)]
pub struct Overrides {
    pub header: Option<String>,
    pub query_param: Option<String>,
    pub allowed_users: Option<AllowList>,
    pub signed: bool,
    pub max_signature_ttl_s: u64,
}

#[derive(Debug, Clone)]
pub struct AllowList {
    pub key: KeySource,
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub enabled: bool,
    pub header: String,
    pub salt: String,
    pub version: u32,
    pub hash: HashMode,
    /// Basis points.
    pub coverage: u32,
    pub matcher: RequestMatcher,
    pub baggage_key: String,
    pub trust_incoming: bool,
    pub variants: Vec<Variant>,
    /// Seed of the coverage position: `<salt>|coverage`.
    pub coverage_seed: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    /// Basis points.
    pub weight: u32,
    /// Basis points left for this variant and those after it: `10000 − Σ earlier weights`.
    pub remaining: u32,
    /// Seed of this variant's position: the salt for the first variant, `<salt>:<name>` after.
    pub seed: String,
}

impl Experiment {
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.name == name)
    }
}

impl AbConfig {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        parse_json::<AbConfigSpec>(bytes)?.compile()
    }

    pub fn experiment_index(&self, name: &str) -> Option<usize> {
        self.experiments.iter().position(|e| e.name == name)
    }

    /// Whether the signing key is needed (sticky cookie or signed overrides).
    pub fn needs_signing_key(&self) -> bool {
        self.sticky.is_some() || self.overrides.as_ref().is_some_and(|o| o.signed)
    }
}

impl AbConfigSpec {
    pub fn compile(&self) -> Result<AbConfig, ConfigError> {
        let root = Path::root();
        let mut identity = Vec::with_capacity(self.identity.len());
        for (i, k) in self.identity.iter().enumerate() {
            identity.push(k.compile(&root.key("identity").index(i))?);
        }
        let anonymous_id = self
            .anonymous_id
            .as_ref()
            .map(|c| c.compile(&root.key("anonymous_id"), DEFAULT_ANONYMOUS_MAX_AGE_S))
            .transpose()?;
        let sticky = self
            .sticky
            .as_ref()
            .map(|c| c.compile(&root.key("sticky"), DEFAULT_STICKY_MAX_AGE_S))
            .transpose()?;
        if let (Some(a), Some(s)) = (&anonymous_id, &sticky)
            && a.name == s.name
        {
            return Err(ConfigError::new(
                root.key("sticky").key("name"),
                Reason::Duplicate(s.name.clone()),
            ));
        }
        let overrides = self
            .overrides
            .as_ref()
            .map(|o| o.compile(&root.key("overrides")))
            .transpose()?;
        let needs_key = sticky.is_some() || overrides.as_ref().is_some_and(|o| o.signed);
        let signing_key_env = match (&self.signing_key_env, needs_key) {
            (Some(env), _) => {
                env_name(&root.key("signing_key_env"), env)?;
                Some(env.clone())
            }
            (None, true) => {
                return Err(ConfigError::invalid(
                    root.key("signing_key_env"),
                    "required by `sticky` and by `overrides.signed`: name the environment \
                     variable that holds the HMAC key",
                ));
            }
            (None, false) => None,
        };
        let debug_header = self
            .debug_header
            .as_deref()
            .map(|h| header_name(&root.key("debug_header"), h))
            .transpose()?;

        if self.experiments.len() > MAX_EXPERIMENTS {
            return Err(ConfigError::out_of_range(
                root.key("experiments"),
                0,
                MAX_EXPERIMENTS,
                self.experiments.len(),
            ));
        }
        // Request headers that carry input: an experiment must not overwrite them.
        let mut inputs: Vec<String> = identity
            .iter()
            .map(|k| k.header_read().to_owned())
            .collect();
        if let Some(o) = &overrides {
            inputs.extend(o.header.iter().cloned());
            inputs.extend(
                o.allowed_users
                    .iter()
                    .map(|a| a.key.header_read().to_owned()),
            );
        }
        let mut experiments: Vec<Experiment> = Vec::with_capacity(self.experiments.len());
        for (i, spec) in self.experiments.iter().enumerate() {
            let field = root.key("experiments").index(i);
            let e = spec.compile(&field)?;
            if experiments.iter().any(|x| x.name == e.name) {
                return Err(ConfigError::new(
                    field.key("name"),
                    Reason::Duplicate(e.name),
                ));
            }
            if experiments.iter().any(|x| x.header == e.header) {
                return Err(ConfigError::new(
                    field.key("header"),
                    Reason::Duplicate(e.header),
                ));
            }
            if inputs.contains(&e.header) {
                return Err(ConfigError::invalid(
                    field.key("header"),
                    format!("`{}` is read as input (identity or overrides)", e.header),
                ));
            }
            if experiments.iter().any(|x| x.baggage_key == e.baggage_key) {
                return Err(ConfigError::new(
                    field.key("baggage_key"),
                    Reason::Duplicate(e.baggage_key),
                ));
            }
            experiments.push(e);
        }

        let mut headers_read: Vec<String> = Vec::new();
        let mut need = |h: &str| {
            if !headers_read.iter().any(|x| x == h) {
                headers_read.push(h.to_owned());
            }
        };
        for e in &experiments {
            need(&e.header);
            e.matcher.headers_read().for_each(&mut need);
        }
        for k in &identity {
            need(k.header_read());
        }
        if anonymous_id.is_some() || sticky.is_some() {
            need("cookie");
        }
        if let Some(o) = &overrides {
            if let Some(h) = &o.header {
                need(h);
            }
            if o.query_param.is_some() {
                need(":path");
            }
            if let Some(a) = &o.allowed_users {
                need(a.key.header_read());
            }
        }
        if self.baggage || experiments.iter().any(|e| e.trust_incoming) {
            need("baggage");
        }

        Ok(AbConfig {
            enabled: self.enabled,
            identity,
            anonymous_id,
            sticky,
            signing_key_env,
            overrides,
            baggage: self.baggage,
            debug_header,
            experiments,
            headers_read,
        })
    }
}

impl CookieSpec {
    fn compile(&self, field: &Path, default_max_age_s: u64) -> Result<CookieAttrs, ConfigError> {
        let attrs = meshwright_shared::cookie::CookieAttrs::validate(
            field,
            &self.name,
            self.secure,
            self.http_only,
            self.same_site.unwrap_or_default(),
            self.path.as_deref().unwrap_or("/"),
            self.domain.as_deref(),
        )?;
        let max_age_s = self.max_age_s.unwrap_or(default_max_age_s);
        if !(1..=MAX_COOKIE_AGE_S).contains(&max_age_s) {
            return Err(ConfigError::out_of_range(
                field.key("max_age_s"),
                1,
                MAX_COOKIE_AGE_S,
                max_age_s,
            ));
        }
        Ok(CookieAttrs {
            name: self.name.clone(),
            max_age_s,
            attrs,
        })
    }
}

impl OverridesSpec {
    fn compile(&self, field: &Path) -> Result<Overrides, ConfigError> {
        if self.header.is_none() && self.query_param.is_none() {
            return Err(ConfigError::invalid(
                field,
                "set `header`, `query_param` or both: where overrides are read",
            ));
        }
        if self.allowed_users.is_none() && !self.signed {
            return Err(ConfigError::invalid(
                field,
                "set `allowed_users`, `signed: true` or both: who may override",
            ));
        }
        let header = self
            .header
            .as_deref()
            .map(|h| header_name(&field.key("header"), h))
            .transpose()?;
        if let Some(q) = &self.query_param
            && (q.is_empty()
                || !q
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)))
        {
            return Err(ConfigError::invalid(
                field.key("query_param"),
                format!("`{q}` is not a plain query parameter name"),
            ));
        }
        let allowed_users = self
            .allowed_users
            .as_ref()
            .map(|a| -> Result<AllowList, ConfigError> {
                let f = field.key("allowed_users");
                if a.values.is_empty() || a.values.iter().any(String::is_empty) {
                    return Err(ConfigError::invalid(
                        f.key("values"),
                        "list at least one user, none empty",
                    ));
                }
                Ok(AllowList {
                    key: a.key.compile(&f.key("key"))?,
                    values: a.values.clone(),
                })
            })
            .transpose()?;
        let max_signature_ttl_s = self.max_signature_ttl_s.unwrap_or(DEFAULT_OVERRIDE_TTL_S);
        if !(1..=MAX_OVERRIDE_TTL_S).contains(&max_signature_ttl_s) {
            return Err(ConfigError::out_of_range(
                field.key("max_signature_ttl_s"),
                1,
                MAX_OVERRIDE_TTL_S,
                max_signature_ttl_s,
            ));
        }
        Ok(Overrides {
            header,
            query_param: self.query_param.clone(),
            allowed_users,
            signed: self.signed,
            max_signature_ttl_s,
        })
    }
}

impl ExperimentSpec {
    fn compile(&self, field: &Path) -> Result<Experiment, ConfigError> {
        validate_stat_name(&field.key("name"), &self.name)?;
        let header = header_name(&field.key("header"), &self.header)?;
        if RESERVED_HEADERS.contains(&header.as_str()) || header.starts_with("x-envoy-") {
            return Err(ConfigError::invalid(
                field.key("header"),
                format!("`{header}` is reserved: pick a header of your own, e.g. x-ab-<name>"),
            ));
        }
        let salt = self.salt.clone().unwrap_or_else(|| self.name.clone());
        if salt.is_empty() {
            return Err(ConfigError::invalid(field.key("salt"), "must not be empty"));
        }
        let coverage = self.coverage.unwrap_or(SPACE);
        if coverage > SPACE {
            return Err(ConfigError::out_of_range(
                field.key("coverage"),
                0,
                SPACE,
                coverage,
            ));
        }
        let baggage_key = self
            .baggage_key
            .clone()
            .unwrap_or_else(|| format!("ab.{}", self.name));
        if !crate::baggage::valid_key(&baggage_key) {
            return Err(ConfigError::invalid(
                field.key("baggage_key"),
                format!("`{baggage_key}` is not a baggage key (an RFC 7230 token)"),
            ));
        }
        let vfield = field.key("variants");
        if self.variants.is_empty() {
            return Err(ConfigError::invalid(
                &vfield,
                "list at least one variant (usually two: control and treatment)",
            ));
        }
        if self.variants.len() > MAX_VARIANTS {
            return Err(ConfigError::out_of_range(
                &vfield,
                1,
                MAX_VARIANTS,
                self.variants.len(),
            ));
        }
        let mut variants: Vec<Variant> = Vec::with_capacity(self.variants.len());
        let mut used = 0u32;
        for (i, v) in self.variants.iter().enumerate() {
            let f = vfield.index(i);
            validate_stat_name(&f.key("name"), &v.name)?;
            if variants.iter().any(|x| x.name == v.name) {
                return Err(ConfigError::new(
                    f.key("name"),
                    Reason::Duplicate(v.name.clone()),
                ));
            }
            if v.weight > SPACE {
                return Err(ConfigError::out_of_range(
                    f.key("weight"),
                    0,
                    SPACE,
                    v.weight,
                ));
            }
            variants.push(Variant {
                name: v.name.clone(),
                weight: v.weight,
                remaining: SPACE.saturating_sub(used),
                seed: if i == 0 {
                    salt.clone()
                } else {
                    format!("{salt}:{}", v.name)
                },
            });
            used = used.saturating_add(v.weight);
        }
        if used != SPACE {
            return Err(ConfigError::invalid(
                &vfield,
                format!("the weights sum to {used} basis points; they must sum to {SPACE}"),
            ));
        }
        Ok(Experiment {
            name: self.name.clone(),
            enabled: self.enabled,
            header,
            coverage_seed: format!("{salt}|coverage"),
            salt,
            version: self.version,
            hash: self.hash,
            coverage,
            matcher: self.matches.compile(&field.key("match"))?,
            baggage_key,
            trust_incoming: self.trust_incoming,
            variants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn err(json: &str) -> ConfigError {
        AbConfig::from_json(json.as_bytes()).unwrap_err()
    }

    fn exp(variants: &str) -> String {
        format!(r#"{{"experiments":[{{"name":"p","header":"x-ab-p","variants":{variants}}}]}}"#)
    }

    #[test]
    fn empty_config_is_a_filter_without_experiments() {
        let c = AbConfig::from_json(b"").unwrap();
        assert!(c.enabled && c.baggage);
        assert!(c.experiments.is_empty());
        assert!(c.anonymous_id.is_none() && c.sticky.is_none() && c.overrides.is_none());
        assert_eq!(c.identity, [KeySource::JwtClaim("sub".into())]);
        assert_eq!(c.headers_read, ["authorization", "baggage"]);
    }

    #[test]
    fn a_full_config_compiles() {
        let c = AbConfig::from_json(
            br#"{
              "identity": [{"jwt_claim":"sub"},{"cookie":"uid"},{"header":"X-Device-Id"}],
              "anonymous_id": {"name":"__Host-ab_uid"},
              "sticky": {"name":"ab_sticky","max_age_s":3600,"same_site":"Strict"},
              "signing_key_env": "AB_KEY",
              "overrides": {"header":"x-ab-override","query_param":"ab","signed":true,
                            "allowed_users":{"key":{"jwt_claim":"sub"},"values":["qa-1"]}},
              "debug_header": "X-AB-Debug",
              "experiments": [{
                "name":"product","header":"X-AB-Product","version":3,"coverage":5000,
                "hash":"growthbook_v2","match":{"path":{"prefix":"/services/product/"}},
                "variants":[{"name":"v1","weight":9000},{"name":"v2","weight":1000}]}]}"#,
        )
        .unwrap();
        let e = &c.experiments[0];
        assert_eq!(e.header, "x-ab-product");
        assert_eq!(e.salt, "product");
        assert_eq!(e.baggage_key, "ab.product");
        assert_eq!(e.coverage_seed, "product|coverage");
        assert_eq!(e.variants[0].seed, "product");
        assert_eq!(e.hash, HashMode::GrowthbookV2);
        assert_eq!(
            e.variants[1],
            Variant {
                name: "v2".into(),
                weight: 1000,
                remaining: 1000,
                seed: "product:v2".into()
            }
        );
        assert_eq!(e.variants[0].remaining, 10_000);
        let a = c.anonymous_id.as_ref().unwrap();
        assert_eq!(
            (
                a.max_age_s,
                a.attrs.secure,
                a.attrs.http_only,
                a.attrs.same_site,
                a.attrs.path.as_str()
            ),
            (DEFAULT_ANONYMOUS_MAX_AGE_S, true, true, SameSite::Lax, "/")
        );
        assert_eq!(c.sticky.as_ref().unwrap().attrs.same_site, SameSite::Strict);
        assert_eq!(c.debug_header.as_deref(), Some("x-ab-debug"));
        assert!(c.needs_signing_key());
        assert_eq!(
            c.headers_read,
            [
                "x-ab-product",
                ":path",
                "authorization",
                "cookie",
                "x-device-id",
                "x-ab-override",
                "baggage"
            ]
        );
    }

    #[test]
    fn weights_must_sum_to_10000() {
        for v in [
            r#"[{"name":"a","weight":9000}]"#,
            r#"[{"name":"a","weight":5000},{"name":"b","weight":5001}]"#,
            r#"[{"name":"a","weight":0},{"name":"b","weight":0}]"#,
        ] {
            let e = err(&exp(v));
            assert_eq!(e.field, "experiments[0].variants", "{v}");
            assert!(
                matches!(e.reason, Reason::Invalid(ref m) if m.contains("10000")),
                "{e}"
            );
        }
        let e = err(&exp(r#"[{"name":"a","weight":10001}]"#));
        assert_eq!(e.field, "experiments[0].variants[0].weight");
        assert!(AbConfig::from_json(exp(r#"[{"name":"a","weight":10000}]"#).as_bytes()).is_ok());
    }

    #[test]
    fn empty_variant_lists_are_refused() {
        let e = err(&exp("[]"));
        assert_eq!(e.field, "experiments[0].variants");
        let e = err(r#"{"experiments":[{"name":"p","header":"x-ab-p"}]}"#);
        assert_eq!(e.field, "experiments[0]", "missing field: {e}");
    }

    #[test]
    fn duplicates_are_refused_with_the_field_named() {
        let v = r#"[{"name":"a","weight":10000}]"#;
        let e = err(&format!(
            r#"{{"experiments":[{{"name":"p","header":"x-a","variants":{v}}},
                               {{"name":"p","header":"x-b","variants":{v}}}]}}"#
        ));
        assert_eq!(e.field, "experiments[1].name");
        assert_eq!(e.reason, Reason::Duplicate("p".into()));
        let e = err(&format!(
            r#"{{"experiments":[{{"name":"p","header":"x-a","variants":{v}}},
                               {{"name":"q","header":"X-A","variants":{v}}}]}}"#
        ));
        assert_eq!(e.field, "experiments[1].header");
        let e = err(&format!(
            r#"{{"experiments":[{{"name":"p","header":"x-a","variants":{v}}},
                               {{"name":"q","header":"x-b","baggage_key":"ab.p","variants":{v}}}]}}"#
        ));
        assert_eq!(e.field, "experiments[1].baggage_key");
        let e = err(&exp(
            r#"[{"name":"a","weight":5000},{"name":"a","weight":5000}]"#,
        ));
        assert_eq!(e.field, "experiments[0].variants[1].name");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let v = r#""variants":[{"name":"a","weight":10000}]"#;
        let cases = [
            (
                format!(r#"{{"experiments":[{{"name":"P","header":"x-a",{v}}}]}}"#),
                "experiments[0].name",
            ),
            (
                format!(r#"{{"experiments":[{{"name":"p","header":"cookie",{v}}}]}}"#),
                "experiments[0].header",
            ),
            (
                format!(r#"{{"experiments":[{{"name":"p","header":"x-envoy-max-retries",{v}}}]}}"#),
                "experiments[0].header",
            ),
            (
                format!(r#"{{"experiments":[{{"name":"p","header":"bad header",{v}}}]}}"#),
                "experiments[0].header",
            ),
            (
                format!(
                    r#"{{"identity":[{{"header":"x-a"}}],"experiments":[{{"name":"p","header":"x-a",{v}}}]}}"#
                ),
                "experiments[0].header",
            ),
            (
                format!(r#"{{"experiments":[{{"name":"p","header":"x-a","coverage":10001,{v}}}]}}"#),
                "experiments[0].coverage",
            ),
            (
                format!(r#"{{"experiments":[{{"name":"p","header":"x-a","hash":"md5",{v}}}]}}"#),
                "experiments[0].hash",
            ),
            (
                format!(
                    r#"{{"experiments":[{{"name":"p","header":"x-a","baggage_key":"a b",{v}}}]}}"#
                ),
                "experiments[0].baggage_key",
            ),
            (
                format!(
                    r#"{{"experiments":[{{"name":"p","header":"x-a","match":{{"path":{{"regex":"(["}}}},{v}}}]}}"#
                ),
                "experiments[0].match.path.regex",
            ),
            (
                r#"{"sticky":{"name":"s"}}"#.to_owned(),
                "signing_key_env",
            ),
            (
                r#"{"overrides":{"header":"x-o","signed":true}}"#.to_owned(),
                "signing_key_env",
            ),
            (r#"{"overrides":{"signed":true}}"#.to_owned(), "overrides"),
            (r#"{"overrides":{"header":"x-o"}}"#.to_owned(), "overrides"),
            (
                r#"{"overrides":{"header":"x-o","allowed_users":{"key":{"jwt_claim":"sub"},"values":[]}}}"#
                    .to_owned(),
                "overrides.allowed_users.values",
            ),
            (
                r#"{"overrides":{"query_param":"a&b","signed":true},"signing_key_env":"K"}"#
                    .to_owned(),
                "overrides.query_param",
            ),
            (
                r#"{"anonymous_id":{"name":"a;b"}}"#.to_owned(),
                "anonymous_id.name",
            ),
            (
                r#"{"anonymous_id":{"name":"a","same_site":"None","secure":false}}"#.to_owned(),
                "anonymous_id.same_site",
            ),
            (
                r#"{"anonymous_id":{"name":"__Host-a","path":"/x"}}"#.to_owned(),
                "anonymous_id.name",
            ),
            (
                r#"{"anonymous_id":{"name":"a","max_age_s":0}}"#.to_owned(),
                "anonymous_id.max_age_s",
            ),
            (
                r#"{"anonymous_id":{"name":"a"},"sticky":{"name":"a"},"signing_key_env":"K"}"#
                    .to_owned(),
                "sticky.name",
            ),
            (r#"{"signing_key_env":"1X"}"#.to_owned(), "signing_key_env"),
            (r#"{"experimentz":[]}"#.to_owned(), "experimentz"),
        ];
        for (json, field) in cases {
            assert_eq!(err(&json).field, field, "{json}");
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = AbConfig::from_json(&bytes);
            }

            #[test]
            fn weights_are_accepted_iff_they_sum_to_10000(
                w in proptest::collection::vec(0u32..6000, 1..5)
            ) {
                let variants: Vec<String> = w.iter().enumerate()
                    .map(|(i, w)| format!(r#"{{"name":"v{i}","weight":{w}}}"#)).collect();
                let json = exp(&format!("[{}]", variants.join(",")));
                let sum: u32 = w.iter().sum();
                prop_assert_eq!(AbConfig::from_json(json.as_bytes()).is_ok(), sum == 10_000);
            }
        }
    }
}

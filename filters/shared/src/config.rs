//! Config parsing with errors that name the field.
//!
//! A filter's plugin configuration (the JSON Istio puts in `PluginConfig.configuration`) is
//! parsed once at `on_configure` into wire structs (`serde`, `deny_unknown_fields`), then
//! validated into the runtime config. Either step fails with a [`ConfigError`] whose `field` is
//! a path such as `rules[2].abort.percentage`, so the log line tells the operator what to fix.

use serde::de::DeserializeOwned;
use std::fmt;

/// Why a config was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin config at `{field}`: {reason}")]
pub struct ConfigError {
    /// Path of the offending field, e.g. `rules[0].match.path.regex`; `.` for the whole document.
    pub field: String,
    pub reason: Reason,
}

/// The kinds of config error. Tests match on these, not on message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// Not JSON, wrong type, unknown or missing field (the message is serde's).
    #[error("{0}")]
    Syntax(String),
    #[error("must be between {min} and {max}, got {got}")]
    OutOfRange {
        min: String,
        max: String,
        got: String,
    },
    #[error("invalid regex: {0}")]
    BadRegex(String),
    #[error("duplicate name `{0}`")]
    Duplicate(String),
    #[error("environment variable `{0}` is not set (WasmPlugin vmConfig.env)")]
    MissingEnv(String),
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    pub fn new(field: impl fmt::Display, reason: Reason) -> Self {
        Self {
            field: field.to_string(),
            reason,
        }
    }

    pub fn invalid(field: impl fmt::Display, why: impl Into<String>) -> Self {
        Self::new(field, Reason::Invalid(why.into()))
    }

    pub fn out_of_range(
        field: impl fmt::Display,
        min: impl fmt::Display,
        max: impl fmt::Display,
        got: impl fmt::Display,
    ) -> Self {
        Self::new(
            field,
            Reason::OutOfRange {
                min: min.to_string(),
                max: max.to_string(),
                got: got.to_string(),
            },
        )
    }
}

/// Parses a JSON document into `T`, naming the field on error.
///
/// An empty document (Istio sends an empty configuration when `pluginConfig` is empty) parses
/// as `{}`, so a config type whose fields all have defaults accepts it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::new(field, Reason::Syntax(e.into_inner().to_string()))
    })?;
    de.end()
        .map_err(|e| ConfigError::new(".", Reason::Syntax(e.to_string())))?;
    Ok(value)
}

/// A field path under construction: `Path::root().key("rules").index(2).key("abort")`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path(String);

impl Path {
    pub fn root() -> Self {
        Self(String::new())
    }

    pub fn key(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_owned())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Checks that a name can be embedded in an Envoy stat name and a Prometheus label value:
/// 1–64 characters of `[a-z0-9_-]`, starting with a letter or digit.
pub fn validate_stat_name(field: &Path, name: &str) -> Result<(), ConfigError> {
    let ok_len = (1..=64).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let ok_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok_len && ok_chars && ok_start {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!(
                "`{name}` must be 1-64 characters of a-z, 0-9, '_' or '-' (it becomes part of a metric name)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        n: u32,
    }

    #[test]
    fn unknown_field_is_refused_with_its_path() {
        let err = parse_json::<Outer>(br#"{"items":[{"n":1},{"n":2,"nn":3}]}"#).unwrap_err();
        assert_eq!(err.field, "items[1].nn");
        assert!(matches!(err.reason, Reason::Syntax(ref m) if m.contains("unknown field")));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_json::<Outer>(br#"{"items":[{"n":"x"}]}"#).unwrap_err();
        assert_eq!(err.field, "items[0].n");
    }

    #[test]
    fn empty_configuration_is_an_empty_object() {
        let cfg = parse_json::<Outer>(b"").unwrap();
        assert!(cfg.items.is_empty());
        let cfg = parse_json::<Outer>(b"  \n").unwrap();
        assert!(cfg.items.is_empty());
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse_json::<Outer>(br#"{} x"#).is_err());
    }

    #[test]
    fn path_builder_formats_like_serde_path_to_error() {
        let p = Path::root().key("rules").index(2).key("abort");
        assert_eq!(p.to_string(), "rules[2].abort");
        assert_eq!(Path::root().to_string(), ".");
    }

    #[test]
    fn stat_names_are_restricted() {
        let p = Path::root().key("name");
        assert!(validate_stat_name(&p, "checkout-abort_1").is_ok());
        for bad in ["", "Has.Dot", "a.b", "-lead", "sp ace", &"x".repeat(65)] {
            assert!(validate_stat_name(&p, bad).is_err(), "{bad:?}");
        }
    }
}

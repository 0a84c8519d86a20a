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
///
/// The field is found from the position serde_json reports ([`field_at`]) rather than by
/// wrapping the deserializer: a path-tracking wrapper is instantiated for every config type and
/// cost each module ~55 KB of code (measured on fault.wasm), for a path that only an error needs.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        let offset = byte_offset(bytes, e.line(), e.column());
        let field = field_at(bytes, offset, message.starts_with("missing field"));
        ConfigError::new(field, Reason::Syntax(message))
    })
}

/// The byte offset of serde_json's (1-based line, column = bytes into that line).
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match bytes
            .get(start..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            Some(nl) => start += nl + 1,
            None => break,
        }
    }
    start.saturating_add(column).min(bytes.len())
}

/// One open container while scanning: an object and the key being read, or an array and the
/// index of the element being read.
enum Frame {
    Object { key: Option<String>, want_key: bool },
    Array { index: usize },
}

/// The path (`rules[0].abort.percentage`, `.` for the document) of the value being read at
/// `offset` of a JSON document: the keys and indexes of the containers open there. `missing`
/// (serde's "missing field" error, reported at the object's closing brace) names the object
/// itself rather than its last key.
pub fn field_at(bytes: &[u8], offset: usize, missing: bool) -> String {
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let end = offset.min(bytes.len());
    while i < end {
        let Some(&b) = bytes.get(i) else { break };
        i += 1;
        match b {
            b'{' => stack.push(Frame::Object {
                key: None,
                want_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { want_key, .. }) => *want_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b'"' => {
                let start = i;
                while i < end {
                    match bytes.get(i) {
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        _ => i += 1,
                    }
                }
                let text = bytes.get(start..i.min(end)).unwrap_or_default();
                i += 1;
                if let Some(Frame::Object { key, want_key }) = stack.last_mut()
                    && *want_key
                {
                    *key = Some(String::from_utf8_lossy(text).into_owned());
                    *want_key = false;
                }
            }
            _ => {}
        }
    }
    if missing && let Some(Frame::Object { key, .. }) = stack.last_mut() {
        *key = None;
    }
    let mut path = Path::root();
    for frame in &stack {
        path = match frame {
            Frame::Object { key: Some(k), .. } => path.key(k),
            Frame::Object { key: None, .. } => break,
            Frame::Array { index } => path.index(*index),
        };
    }
    path.to_string()
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
    fn missing_field_names_the_object() {
        let err = parse_json::<Outer>(br#"{"items":[{"n":1},{}]}"#).unwrap_err();
        assert_eq!(err.field, "items[1]");
        assert!(matches!(err.reason, Reason::Syntax(ref m) if m.contains("missing field `n`")));
    }

    #[test]
    fn field_is_found_across_lines_and_escapes() {
        let doc =
            b"{\n  \"a\\\"b\": 1,\n  \"items\": [\n    {\"n\": 1},\n    {\"n\": \"x\"}\n  ]\n}";
        let err = parse_json::<Outer>(doc).unwrap_err();
        // `a"b` is an unknown field: reported first, at its key.
        assert_eq!(err.field, "a\\\"b");
        let doc = b"{\n  \"items\": [\n    {\"n\": 1},\n    {\"n\": \"x\"}\n  ]\n}";
        assert_eq!(parse_json::<Outer>(doc).unwrap_err().field, "items[1].n");
    }

    #[test]
    fn scanning_stops_at_the_offset() {
        let doc = br#"{"a":{"b":[1,2,{"c":3}]},"d":4}"#;
        assert_eq!(field_at(doc, 0, false), ".");
        assert_eq!(field_at(doc, 5, false), "a");
        assert_eq!(field_at(doc, 13, false), "a.b[1]");
        assert_eq!(field_at(doc, 20, false), "a.b[2].c");
        assert_eq!(field_at(doc, doc.len(), false), ".");
        assert_eq!(field_at(doc, 30, false), "d");
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

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn locating_a_field_never_panics(doc in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..80, missing: bool) {
                let _ = field_at(&doc, at, missing);
            }

            #[test]
            fn a_wrong_value_is_named_by_its_index(good in 0usize..5) {
                let mut items: Vec<String> = (0..good).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
                items.push(r#"{"n":"bad"}"#.to_owned());
                let doc = format!(r#"{{"items":[{}]}}"#, items.join(", "));
                let err = parse_json::<Outer>(doc.as_bytes()).unwrap_err();
                prop_assert_eq!(err.field, format!("items[{good}].n"));
            }
        }
    }
}

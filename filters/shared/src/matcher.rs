//! Request matchers: path, method and headers, Envoy-style.
//!
//! Wire format (JSON), every condition optional and all of them ANDed:
//! ```json
//! { "path": {"prefix": "/api/"},
//!   "methods": ["GET", "POST"],
//!   "headers": [{"name": "x-canary", "exact": "1"}, {"name": "x-debug", "present": false}] }
//! ```
//! A string matcher sets exactly one of `exact`, `prefix`, `suffix`, `contains`, `regex`.
//! Regexes use RE2-like syntax (the `regex-lite` engine: no Unicode classes) and must match the
//! whole value, as Envoy's `safe_regex` does. Paths are matched without their query string,
//! as Envoy's route `path` and `safe_regex` matchers do.

use crate::config::{ConfigError, Path, Reason};
use crate::headers::{HeaderSource, path_only};
use serde::Deserialize;

/// Longest regex pattern accepted, in bytes; keeps compiled programs small in the VM.
pub const MAX_REGEX_LEN: usize = 1024;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StringMatchSpec {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchSpec {
    pub name: String,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub regex: Option<String>,
    /// `true`: the header must be present (any value); `false`: it must be absent.
    pub present: Option<bool>,
    /// Inverts the result of the value match (not of `present`).
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestMatchSpec {
    pub path: Option<StringMatchSpec>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchSpec>,
}

/// A compiled string matcher.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex_lite::Regex),
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Contains(s) => value.contains(s.as_str()),
            Self::Regex(re) => re.is_match(value),
        }
    }

    fn compile(
        field: &Path,
        exact: &Option<String>,
        prefix: &Option<String>,
        suffix: &Option<String>,
        contains: &Option<String>,
        regex: &Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let set = [exact, prefix, suffix, contains, regex]
            .iter()
            .filter(|o| o.is_some())
            .count();
        if set > 1 {
            return Err(ConfigError::invalid(
                field,
                "set only one of exact, prefix, suffix, contains, regex",
            ));
        }
        Ok(if let Some(s) = exact {
            Some(Self::Exact(s.clone()))
        } else if let Some(s) = prefix {
            Some(Self::Prefix(s.clone()))
        } else if let Some(s) = suffix {
            Some(Self::Suffix(s.clone()))
        } else if let Some(s) = contains {
            Some(Self::Contains(s.clone()))
        } else if let Some(pattern) = regex {
            Some(Self::Regex(compile_regex(&field.key("regex"), pattern)?))
        } else {
            None
        })
    }
}

/// Compiles a regex that must match a whole value.
pub fn compile_regex(field: &Path, pattern: &str) -> Result<regex_lite::Regex, ConfigError> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(ConfigError::new(
            field,
            Reason::BadRegex(format!("longer than {MAX_REGEX_LEN} bytes")),
        ));
    }
    regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .nest_limit(32)
        .build()
        .map_err(|e| ConfigError::new(field, Reason::BadRegex(e.to_string())))
}

impl StringMatchSpec {
    pub fn compile(&self, field: &Path) -> Result<StringMatcher, ConfigError> {
        StringMatcher::compile(
            field,
            &self.exact,
            &self.prefix,
            &self.suffix,
            &self.contains,
            &self.regex,
        )?
        .ok_or_else(|| {
            ConfigError::invalid(field, "set one of exact, prefix, suffix, contains, regex")
        })
    }
}

/// A compiled header condition.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: String,
    kind: HeaderCondition,
}

#[derive(Debug, Clone)]
enum HeaderCondition {
    Present(bool),
    Value {
        matcher: StringMatcher,
        invert: bool,
    },
}

impl HeaderMatcher {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this condition fails on a request that lacks the header (a value condition,
    /// inverted or not, or `present: true`).
    pub fn needs_presence(&self) -> bool {
        match &self.kind {
            HeaderCondition::Present(want) => *want,
            HeaderCondition::Value { .. } => true,
        }
    }

    pub fn matches(&self, headers: &impl HeaderSource) -> bool {
        let value = headers.header(&self.name);
        match &self.kind {
            HeaderCondition::Present(want) => value.is_some() == *want,
            // An absent header never matches a value condition, inverted or not (Envoy's rule).
            HeaderCondition::Value { matcher, invert } => {
                value.is_some_and(|v| matcher.matches(v) != *invert)
            }
        }
    }
}

impl HeaderMatchSpec {
    pub fn compile(&self, field: &Path) -> Result<HeaderMatcher, ConfigError> {
        let name = self.name.to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
        {
            return Err(ConfigError::invalid(
                field.key("name"),
                format!("`{}` is not a valid header name", self.name),
            ));
        }
        let value = StringMatcher::compile(
            field,
            &self.exact,
            &self.prefix,
            &self.suffix,
            &self.contains,
            &self.regex,
        )?;
        let kind = match (value, self.present) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    field,
                    "set either a value matcher or `present`, not both",
                ));
            }
            (Some(matcher), None) => HeaderCondition::Value {
                matcher,
                invert: self.invert,
            },
            (None, Some(want)) => HeaderCondition::Present(want != self.invert),
            (None, None) => HeaderCondition::Present(!self.invert),
        };
        Ok(HeaderMatcher { name, kind })
    }
}

/// A compiled request match: all conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatcher {
    path: Option<StringMatcher>,
    methods: Vec<String>,
    headers: Vec<HeaderMatcher>,
}

impl RequestMatchSpec {
    pub fn compile(&self, field: &Path) -> Result<RequestMatcher, ConfigError> {
        let path = self
            .path
            .as_ref()
            .map(|p| p.compile(&field.key("path")))
            .transpose()?;
        let mut methods = Vec::with_capacity(self.methods.len());
        for (i, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::invalid(
                    field.key("methods").index(i),
                    format!("`{m}` is not an upper-case HTTP method"),
                ));
            }
            methods.push(m.clone());
        }
        let headers = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| h.compile(&field.key("headers").index(i)))
            .collect::<Result<_, _>>()?;
        Ok(RequestMatcher {
            path,
            methods,
            headers,
        })
    }
}

impl RequestMatcher {
    /// Matches everything.
    pub fn any() -> Self {
        Self::default()
    }

    pub fn matches(&self, req: &impl HeaderSource) -> bool {
        if let Some(p) = &self.path {
            let Some(path) = req.header(":path") else {
                return false;
            };
            if !p.matches(path_only(path)) {
                return false;
            }
        }
        if !self.methods.is_empty() {
            let Some(method) = req.header(":method") else {
                return false;
            };
            if !self.methods.iter().any(|m| m == method) {
                return false;
            }
        }
        self.headers.iter().all(|h| h.matches(req))
    }

    /// A header this matcher cannot match without (the first such condition), so a filter can
    /// rule the match out with one cheap read before it fetches anything else.
    pub fn required_header(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.needs_presence())
            .map(HeaderMatcher::name)
    }

    /// The request headers this matcher reads, so the glue fetches only those.
    pub fn headers_read(&self) -> impl Iterator<Item = &str> {
        let path = self.path.as_ref().map(|_| ":path");
        let method = (!self.methods.is_empty()).then_some(":method");
        path.into_iter()
            .chain(method)
            .chain(self.headers.iter().map(HeaderMatcher::name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_json;
    use crate::headers::HeaderList;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn matcher(json: &str) -> RequestMatcher {
        parse_json::<RequestMatchSpec>(json.as_bytes())
            .unwrap()
            .compile(&Path::root().key("match"))
            .unwrap()
    }

    fn req(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    #[test]
    fn empty_match_matches_everything() {
        assert!(matcher("{}").matches(&req(&[])));
    }

    #[test]
    fn path_matchers_ignore_the_query() {
        let m = matcher(r#"{"path":{"exact":"/api/products"}}"#);
        assert!(m.matches(&req(&[(":path", "/api/products?page=2")])));
        assert!(!m.matches(&req(&[(":path", "/api/products/1")])));
        let m = matcher(r#"{"path":{"regex":"/api/products/[0-9]+"}}"#);
        assert!(m.matches(&req(&[(":path", "/api/products/42?x")])));
        assert!(
            !m.matches(&req(&[(":path", "/api/products/42/x")])),
            "regex is anchored"
        );
        let m = matcher(r#"{"path":{"prefix":"/api/"}}"#);
        assert!(m.matches(&req(&[(":path", "/api/x")])));
        assert!(!m.matches(&req(&[(":path", "/apix")])));
        assert!(!m.matches(&req(&[])), "no :path, no match");
    }

    #[test]
    fn methods_are_an_allow_list() {
        let m = matcher(r#"{"methods":["POST","PUT"]}"#);
        assert!(m.matches(&req(&[(":method", "POST")])));
        assert!(!m.matches(&req(&[(":method", "GET")])));
    }

    #[test]
    fn header_conditions() {
        let m = matcher(
            r#"{"headers":[{"name":"X-Canary","exact":"1"},{"name":"x-debug","present":false},
                {"name":"x-env","prefix":"prod","invert":true}]}"#,
        );
        assert!(m.matches(&req(&[("x-canary", "1"), ("x-env", "staging")])));
        assert!(!m.matches(&req(&[("x-canary", "1"), ("x-env", "prod-eu")])));
        assert!(!m.matches(&req(&[("x-canary", "1"), ("x-debug", "")])));
        assert!(!m.matches(&req(&[("x-canary", "2"), ("x-env", "dev")])));
        assert!(
            !m.matches(&req(&[("x-canary", "1")])),
            "absent header fails a value condition even when inverted"
        );
    }

    #[test]
    fn the_required_header_is_one_no_match_can_do_without() {
        let m = |json: &str| matcher(json).required_header().map(str::to_owned);
        assert_eq!(
            m(r#"{"headers":[{"name":"x-debug","present":false},{"name":"X-Drill","exact":"a"}]}"#)
                .as_deref(),
            Some("x-drill")
        );
        assert_eq!(
            m(r#"{"headers":[{"name":"x-env","prefix":"prod","invert":true}]}"#).as_deref(),
            Some("x-env"),
            "an inverted value condition still needs the header"
        );
        assert_eq!(
            m(r#"{"headers":[{"name":"x-canary","present":true,"invert":true}]}"#),
            None
        );
        assert_eq!(m(r#"{"path":{"prefix":"/api/"}}"#), None);
        // The claim, checked on the conditions themselves: without the header, no match.
        for json in [
            r#"{"headers":[{"name":"x-a","exact":"1"},{"name":"x-b","present":false}]}"#,
            r#"{"headers":[{"name":"x-b","present":false},{"name":"x-a","suffix":"z","invert":true}]}"#,
            r#"{"headers":[{"name":"x-a","present":true}]}"#,
        ] {
            let matcher = matcher(json);
            let name = matcher.required_header().unwrap().to_owned();
            for others in [&[][..], &[("x-b", "1")][..], &[("x-c", "")][..]] {
                assert!(!matcher.matches(&req(others)), "{json} without {name}");
            }
        }
    }

    #[test]
    fn bad_specs_name_the_field() {
        let bad = |json: &str| {
            parse_json::<RequestMatchSpec>(json.as_bytes())
                .unwrap()
                .compile(&Path::root().key("match"))
                .unwrap_err()
        };
        let e = bad(r#"{"path":{"regex":"(unclosed"}}"#);
        assert_eq!(e.field, "match.path.regex");
        assert!(matches!(e.reason, Reason::BadRegex(_)));
        let e = bad(r#"{"path":{"exact":"/a","prefix":"/"}}"#);
        assert_eq!(e.field, "match.path");
        let e = bad(r#"{"path":{}}"#);
        assert_eq!(e.field, "match.path");
        let e = bad(r#"{"methods":["get"]}"#);
        assert_eq!(e.field, "match.methods[0]");
        let e = bad(r#"{"headers":[{"name":"bad name","exact":"x"}]}"#);
        assert_eq!(e.field, "match.headers[0].name");
        let e = bad(r#"{"headers":[{"name":"x","exact":"x","present":true}]}"#);
        assert_eq!(e.field, "match.headers[0]");
    }

    #[test]
    fn headers_read_lists_what_the_glue_must_fetch() {
        let m = matcher(r#"{"path":{"prefix":"/"},"methods":["GET"],"headers":[{"name":"x-a"}]}"#);
        let read: Vec<_> = m.headers_read().collect();
        assert_eq!(read, [":path", ":method", "x-a"]);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn compiling_any_regex_never_panics(pattern in ".{0,64}") {
                let _ = compile_regex(&Path::root(), &pattern);
            }

            #[test]
            fn prefix_matcher_agrees_with_starts_with(prefix in "/[a-z/]{0,8}", path in "/[a-z/?]{0,16}") {
                let m = StringMatcher::Prefix(prefix.clone());
                prop_assert_eq!(m.matches(&path), path.starts_with(&prefix));
            }
        }
    }
}

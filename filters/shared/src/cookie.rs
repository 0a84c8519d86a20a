//! Cookies: reading one out of a `Cookie` request header (RFC 6265 §5.4 form: `a=1; b=2`), and
//! the attributes of the cookies filters set — validated once at configure time, rendered into
//! `Set-Cookie` values on the data path.

use crate::config::{ConfigError, Path};
use crate::validate::is_token;
use serde::Deserialize;

/// The value of cookie `name`, first occurrence, surrounding double quotes removed.
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k.trim() != name {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v),
        )
    })
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

/// Validated attributes of a cookie a filter sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttrs {
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    pub path: String,
    pub domain: Option<String>,
}

fn attr_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b';' && b != b',')
}

impl CookieAttrs {
    /// Checks a cookie's name and attributes as browsers will: an RFC 7230 token name, a path
    /// starting with `/`, `SameSite=None` only with `Secure`, and the `__Host-` / `__Secure-`
    /// prefix rules. `field` is the config section (errors name `<field>.name`, `.path`, …).
    pub fn validate(
        field: &Path,
        name: &str,
        secure: bool,
        http_only: bool,
        same_site: SameSite,
        path: &str,
        domain: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if !is_token(name) || name.len() > 64 {
            return Err(ConfigError::invalid(
                field.key("name"),
                format!(
                    "`{name}` is not a cookie name (an RFC 7230 token of at most 64 characters)"
                ),
            ));
        }
        if !attr_value(path) || !path.starts_with('/') {
            return Err(ConfigError::invalid(
                field.key("path"),
                format!("`{path}` is not a cookie path"),
            ));
        }
        if let Some(d) = domain
            && !(attr_value(d)
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        {
            return Err(ConfigError::invalid(
                field.key("domain"),
                format!("`{d}` is not a cookie domain"),
            ));
        }
        if same_site == SameSite::None && !secure {
            return Err(ConfigError::invalid(
                field.key("same_site"),
                "SameSite=None requires secure: true (browsers drop the cookie otherwise)",
            ));
        }
        if name.starts_with("__Host-") && (!secure || path != "/" || domain.is_some()) {
            return Err(ConfigError::invalid(
                field.key("name"),
                "a __Host- cookie needs secure: true, path \"/\" and no domain",
            ));
        }
        if name.starts_with("__Secure-") && !secure {
            return Err(ConfigError::invalid(
                field.key("name"),
                "a __Secure- cookie needs secure: true",
            ));
        }
        Ok(Self {
            secure,
            http_only,
            same_site,
            path: path.to_owned(),
            domain: domain.map(str::to_owned),
        })
    }

    /// `name=value; Max-Age=…; Path=…[; Domain=…][; Secure][; HttpOnly]; SameSite=…`, with
    /// `path` overriding the configured one (cookies scoped to one endpoint). `value` must already
    /// be a valid cookie value.
    pub fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age_s: u64,
        path: Option<&str>,
    ) -> String {
        let mut s = format!(
            "{name}={value}; Max-Age={max_age_s}; Path={}",
            path.unwrap_or(&self.path)
        );
        if let Some(d) = &self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if self.secure {
            s.push_str("; Secure");
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        s.push_str(match self.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn finds_cookies() {
        let h = "theme=dark; uid=u-42;  quoted=\"v\"; empty=; ab_uid=x=y";
        assert_eq!(cookie_value(h, "uid"), Some("u-42"));
        assert_eq!(cookie_value(h, "theme"), Some("dark"));
        assert_eq!(cookie_value(h, "quoted"), Some("v"));
        assert_eq!(cookie_value(h, "empty"), Some(""));
        assert_eq!(cookie_value(h, "ab_uid"), Some("x=y"));
        assert_eq!(cookie_value(h, "id"), None, "no suffix matches");
        assert_eq!(cookie_value("", "uid"), None);
        assert_eq!(cookie_value("garbage", "garbage"), None);
    }

    #[test]
    fn attributes_follow_browser_rules() {
        let f = Path::root().key("cookie");
        let ok =
            CookieAttrs::validate(&f, "__Host-s", true, true, SameSite::Lax, "/", None).unwrap();
        assert_eq!(
            ok.set_cookie("__Host-s", "v", 60, None),
            "__Host-s=v; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            ok.set_cookie("n", "", 0, Some("/cb")),
            "n=; Max-Age=0; Path=/cb; Secure; HttpOnly; SameSite=Lax"
        );
        let bad = |name: &str, secure: bool, ss: SameSite, path: &str, domain: Option<&str>| {
            CookieAttrs::validate(&f, name, secure, true, ss, path, domain)
                .unwrap_err()
                .field
        };
        assert_eq!(
            bad("__Host-s", false, SameSite::Lax, "/", None),
            "cookie.name"
        );
        assert_eq!(
            bad("__Host-s", true, SameSite::Lax, "/x", None),
            "cookie.name"
        );
        assert_eq!(
            bad("__Host-s", true, SameSite::Lax, "/", Some("a.com")),
            "cookie.name"
        );
        assert_eq!(
            bad("__Secure-s", false, SameSite::Lax, "/", None),
            "cookie.name"
        );
        assert_eq!(
            bad("s", false, SameSite::None, "/", None),
            "cookie.same_site"
        );
        assert_eq!(bad("a b", true, SameSite::Lax, "/", None), "cookie.name");
        assert_eq!(bad("s", true, SameSite::Lax, "x", None), "cookie.path");
        assert_eq!(
            bad("s", true, SameSite::Lax, "/", Some("a;b")),
            "cookie.domain"
        );
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(h in ".{0,200}", n in "[a-z_]{1,8}") {
                let _ = cookie_value(&h, &n);
            }

            #[test]
            fn finds_what_was_set(name in "[a-z_]{1,8}", value in "[A-Za-z0-9._-]{0,20}") {
                let h = format!("pre=1; {name}={value}; post=2");
                let want = if name == "pre" { "1" } else { value.as_str() };
                prop_assert_eq!(cookie_value(&h, &name), Some(want));
            }
        }
    }
}

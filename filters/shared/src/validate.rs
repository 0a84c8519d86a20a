//! Checks of config values that several filters take: header names and values, environment
//! variable names, and a signing key read from the environment.
//!
//! Each check names the field it was given in its error, so every filter refuses the same
//! mistake with the same words. The environment is read through an injected `lookup` (the glue
//! passes `|name| std::env::var(name).ok()`), so the checks run in native tests.

use crate::config::{ConfigError, Path, Reason};
use std::collections::BTreeMap;

/// Reads an environment variable: `None` when it is not set.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Whether `s` is an RFC 7230 token (`1*tchar`): the syntax of header names, cookie names and
/// baggage keys.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name a filter writes or reads, lower-cased: an RFC 7230 token (so never a
/// pseudo-header).
pub fn header_name(field: &Path, name: &str) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if is_token(&lower) {
        Ok(lower)
    } else {
        Err(ConfigError::invalid(
            field,
            format!("`{name}` is not a valid header name"),
        ))
    }
}

/// Whether `value` can be written as a header value: no CR, LF or NUL (they would split or end
/// the header).
pub fn is_header_value(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// A header value a filter writes ([`is_header_value`]).
pub fn header_value(field: &Path, value: &str) -> Result<(), ConfigError> {
    if is_header_value(value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            "header values cannot hold CR, LF or NUL",
        ))
    }
}

/// A map of extra reply headers (`name → value`), checked and with lower-cased names, in the
/// map's order. Errors name `<field>.<name>`.
pub fn header_map(
    field: &Path,
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    headers
        .iter()
        .map(|(name, value)| {
            let f = field.key(name);
            let lower = header_name(&f, name)?;
            header_value(&f, value)?;
            Ok((lower, value.clone()))
        })
        .collect()
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
pub fn env_name(field: &Path, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes().first().is_some_and(u8::is_ascii_digit);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("`{name}` is not an environment variable name"),
        ))
    }
}

/// The HMAC key held in the environment variable `env`: at least `min_len` bytes. Not set:
/// [`Reason::MissingEnv`]. The key itself never appears in an error.
pub fn signing_key(
    field: &Path,
    env: &str,
    lookup: EnvLookup<'_>,
    min_len: usize,
) -> Result<Vec<u8>, ConfigError> {
    env_name(field, env)?;
    let key = lookup(env).ok_or_else(|| ConfigError::new(field, Reason::MissingEnv(env.into())))?;
    if key.len() < min_len {
        return Err(ConfigError::invalid(
            field,
            format!("the key in `{env}` is shorter than {min_len} bytes"),
        ));
    }
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn field() -> Path {
        Path::root().key("shed").key("headers").key("x")
    }

    #[test]
    fn header_names_are_tokens_and_come_back_lower_cased() {
        assert_eq!(
            header_name(&field(), "X-Retry_After.1!~"),
            Ok("x-retry_after.1!~".into())
        );
        for bad in ["", "bad name", ":path", "x:y", "é", "a\r\nb", "a/b"] {
            let e = header_name(&field(), bad).unwrap_err();
            assert_eq!(e.field, "shed.headers.x", "{bad:?}");
            assert_eq!(
                e.reason,
                Reason::Invalid(format!("`{bad}` is not a valid header name"))
            );
        }
    }

    #[test]
    fn header_values_cannot_break_the_header() {
        assert!(header_value(&field(), "").is_ok());
        assert!(header_value(&field(), "a b\t\"c\"").is_ok());
        for bad in ["a\rb", "a\nb", "a\0b"] {
            let e = header_value(&field(), bad).unwrap_err();
            assert_eq!(e.field, "shed.headers.x");
            assert_eq!(
                e.reason,
                Reason::Invalid("header values cannot hold CR, LF or NUL".into())
            );
        }
    }

    #[test]
    fn header_maps_name_the_offending_header() {
        let f = Path::root().key("abort").key("headers");
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            header_map(&f, &map(&[("Retry-After", "1"), ("a", "")])),
            Ok(vec![
                ("retry-after".into(), "1".into()),
                ("a".into(), String::new())
            ])
        );
        assert_eq!(header_map(&f, &map(&[])), Ok(Vec::new()));
        let e = header_map(&f, &map(&[("a", "1"), ("Bad Name", "1")])).unwrap_err();
        assert_eq!(e.field, "abort.headers.Bad Name");
        let e = header_map(&f, &map(&[("X-A", "1\r\n2")])).unwrap_err();
        assert_eq!(e.field, "abort.headers.X-A");
    }

    #[test]
    fn env_names_are_shell_names() {
        let f = Path::root().key("signing_key_env");
        for good in ["K", "_K", "MESHWRIGHT_AB_KEY_2"] {
            assert!(env_name(&f, good).is_ok(), "{good}");
        }
        for bad in ["", "1X", "A-B", "A B", "A=B", "É"] {
            let e = env_name(&f, bad).unwrap_err();
            assert_eq!(e.field, "signing_key_env");
            assert_eq!(
                e.reason,
                Reason::Invalid(format!("`{bad}` is not an environment variable name"))
            );
        }
    }

    #[test]
    fn signing_keys_are_read_through_the_lookup() {
        let f = Path::root().key("header_control").key("signing_key_env");
        let env = |name: &str| match name {
            "LONG" => Some("k".repeat(32)),
            "SHORT" => Some("k".repeat(31)),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(signing_key(&f, "LONG", &env, 32), Ok(vec![b'k'; 32]));
        let e = signing_key(&f, "UNSET", &env, 32).unwrap_err();
        assert_eq!(e.field, "header_control.signing_key_env");
        assert_eq!(e.reason, Reason::MissingEnv("UNSET".into()));
        for short in ["SHORT", "EMPTY"] {
            let e = signing_key(&f, short, &env, 32).unwrap_err();
            assert_eq!(e.field, "header_control.signing_key_env");
            assert_eq!(
                e.reason,
                Reason::Invalid(format!("the key in `{short}` is shorter than 32 bytes"))
            );
            assert!(!e.to_string().contains("kkk"), "{e}");
        }
        let e = signing_key(&f, "1X", &env, 32).unwrap_err();
        assert!(
            matches!(e.reason, Reason::Invalid(ref m) if m.contains("environment variable name"))
        );
    }

    #[test]
    fn tokens() {
        assert!(is_token("__Host-a.b"));
        assert!(!is_token(""));
        assert!(!is_token("a;b"));
        assert!(!is_token("a=b"));
    }
}

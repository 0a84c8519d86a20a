//! Reading one cookie out of a `Cookie` request header (RFC 6265 §5.4 form: `a=1; b=2`).

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

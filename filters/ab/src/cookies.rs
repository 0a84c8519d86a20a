//! `Set-Cookie` values for the cookies the filter issues (anonymous id, sticky assignments).

use crate::config::{CookieAttrs, SameSite};

/// `name=value; Max-Age=…; Path=…[; Domain=…][; Secure][; HttpOnly]; SameSite=…`.
/// `value` must already be a valid cookie value (the filter only writes hex and its own
/// `[a-z0-9_:/.-]` encodings).
pub fn set_cookie(attrs: &CookieAttrs, value: &str) -> String {
    let mut s = format!(
        "{}={value}; Max-Age={}; Path={}",
        attrs.name, attrs.max_age_s, attrs.path
    );
    if let Some(d) = &attrs.domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    if attrs.secure {
        s.push_str("; Secure");
    }
    if attrs.http_only {
        s.push_str("; HttpOnly");
    }
    s.push_str(match attrs.same_site {
        SameSite::Strict => "; SameSite=Strict",
        SameSite::Lax => "; SameSite=Lax",
        SameSite::None => "; SameSite=None",
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn safe_attributes_by_default_and_all_of_them_when_set() {
        let mut a = CookieAttrs {
            name: "ab_uid".into(),
            max_age_s: 31_536_000,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
        };
        assert_eq!(
            set_cookie(&a, "0123"),
            "ab_uid=0123; Max-Age=31536000; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        a.domain = Some("shop.example.com".into());
        a.secure = false;
        a.http_only = false;
        a.same_site = SameSite::Strict;
        a.path = "/shop".into();
        assert_eq!(
            set_cookie(&a, "x"),
            "ab_uid=x; Max-Age=31536000; Path=/shop; Domain=shop.example.com; SameSite=Strict"
        );
    }
}

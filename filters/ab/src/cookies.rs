//! `Set-Cookie` values for the cookies the filter issues (anonymous id, sticky assignments).

use crate::config::CookieAttrs;
#[cfg(test)]
use crate::config::SameSite;

/// `name=value; Max-Age=…; Path=…[; Domain=…][; Secure][; HttpOnly]; SameSite=…`.
/// `value` must already be a valid cookie value (the filter only writes hex and its own
/// `[a-z0-9_:/.-]` encodings).
pub fn set_cookie(attrs: &CookieAttrs, value: &str) -> String {
    attrs
        .attrs
        .set_cookie(&attrs.name, value, attrs.max_age_s, None)
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
            attrs: meshwright_shared::cookie::CookieAttrs {
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                path: "/".into(),
                domain: None,
            },
        };
        assert_eq!(
            set_cookie(&a, "0123"),
            "ab_uid=0123; Max-Age=31536000; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        a.attrs.domain = Some("shop.example.com".into());
        a.attrs.secure = false;
        a.attrs.http_only = false;
        a.attrs.same_site = SameSite::Strict;
        a.attrs.path = "/shop".into();
        assert_eq!(
            set_cookie(&a, "x"),
            "ab_uid=x; Max-Age=31536000; Path=/shop; Domain=shop.example.com; SameSite=Strict"
        );
    }
}

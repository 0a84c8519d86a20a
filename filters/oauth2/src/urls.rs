//! The few URL operations the filter needs, without a general URL parser.
//!
//! The `url` crate brings IDNA tables and a WHATWG parser (~65 KB of the module); the filter only
//! ever handles http(s) URLs from its own configuration and the IdP's discovery document, so a
//! strict parser of `scheme://host[:port][/path][?query]` suffices. Hosts must be ASCII
//! (internationalised domain names in their punycode form). Query strings are
//! `application/x-www-form-urlencoded` (the `form_urlencoded` crate, from the same project).

/// An absolute http(s) URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub scheme: String,
    /// `host` or `host:port` (IPv6 in brackets), as written.
    pub authority: String,
    /// Path and query (`/` when empty).
    pub path_and_query: String,
}

impl HttpUrl {
    pub fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !valid_authority(authority) {
            return None;
        }
        if tail.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
            return None;
        }
        let path_and_query = match tail.strip_prefix('?') {
            Some(q) => format!("/?{q}"),
            None if tail.is_empty() => "/".to_owned(),
            None => tail.to_owned(),
        };
        Some(Self {
            scheme,
            authority: authority.to_ascii_lowercase(),
            path_and_query,
        })
    }

    pub fn as_string(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme, self.authority, self.path_and_query
        )
    }

    /// The URL with `pairs` appended to its query, form-encoded.
    pub fn with_query(&self, pairs: &[(&str, &str)]) -> String {
        let mut s = self.as_string();
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        s.push(if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        });
        s.push_str(&q.finish());
        s
    }
}

/// `host[:port]`: an ASCII DNS name or IPv4 address, or a bracketed IPv6 address; no userinfo.
fn valid_authority(a: &str) -> bool {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok();
    if let Some(rest) = a.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let v6_ok = !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        let port = match after {
            "" => true,
            p => p.strip_prefix(':').is_some_and(port_ok),
        };
        return v6_ok && port;
    }
    let (host, port) = match a.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (a, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with(['-', '.']);
    host_ok && port.is_none_or(port_ok)
}

/// Query parameter `name` of a `:path`, percent-decoded.
pub fn query_param(path: &str, name: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    let query = query.split('#').next().unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A form body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        f.append_pair(k, v);
    }
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_what_idps_publish() {
        let u = HttpUrl::parse("https://idp.example.com/realms/shop/protocol/openid-connect/token")
            .unwrap();
        assert_eq!(u.authority, "idp.example.com");
        assert_eq!(
            u.path_and_query,
            "/realms/shop/protocol/openid-connect/token"
        );
        let u = HttpUrl::parse("http://127.0.0.1:18080").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path_and_query.as_str()),
            ("127.0.0.1:18080", "/")
        );
        let u = HttpUrl::parse("https://[::1]:8443/x?a=1#frag").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path_and_query.as_str()),
            ("[::1]:8443", "/x?a=1")
        );
        assert_eq!(
            HttpUrl::parse("HTTPS://IdP.Example.com/a")
                .unwrap()
                .as_string(),
            "https://idp.example.com/a"
        );
    }

    #[test]
    fn refuses_what_is_not_a_plain_http_url() {
        for bad in [
            "ftp://x/",
            "//x/",
            "https://",
            "https://user:pw@x/",
            "https://x:99999/",
            "https://x:/",
            "https://ex ample.com/",
            "https://bücher.example/",
            "https://x/a b",
            "https://x/\\evil",
            "javascript:alert(1)",
            "https://[zz]/",
            "https://x:80:80/",
        ] {
            assert_eq!(HttpUrl::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_building_and_reading() {
        let u = HttpUrl::parse("https://idp/auth").unwrap();
        let s = u.with_query(&[
            ("redirect_uri", "https://shop/cb?x=1"),
            ("scope", "openid email"),
        ]);
        assert_eq!(
            s,
            "https://idp/auth?redirect_uri=https%3A%2F%2Fshop%2Fcb%3Fx%3D1&scope=openid+email"
        );
        assert_eq!(query_param(&s, "scope").as_deref(), Some("openid email"));
        let u = HttpUrl::parse("https://idp/auth?tenant=a").unwrap();
        assert!(u.with_query(&[("b", "c")]).ends_with("?tenant=a&b=c"));
        assert_eq!(query_param("/p?a=1&b=%2F#x", "b").as_deref(), Some("/"));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(s in ".{0,120}") {
                let _ = HttpUrl::parse(&s);
                let _ = query_param(&s, "a");
            }
        }
    }
}

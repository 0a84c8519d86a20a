//! How decision logic reads a request: a header lookup, nothing more.
//!
//! The proxy-wasm glue fetches only the headers a filter's config needs (each fetch is a call
//! across the VM boundary) and hands them to the logic through [`HeaderSource`]. Pseudo-headers
//! (`:path`, `:method`, `:authority`) are looked up like any other header.

/// Read access to request (or response) headers. Names are lower-case.
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<&str>;
}

/// Headers as a small list of pairs: what the glue collects, and what tests build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(Vec<(String, String)>);

impl HeaderList {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Adds a header; the name is stored lower-cased.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut list = Self::new();
        for (k, v) in iter {
            list.push(k.as_ref(), v);
        }
        list
    }
}

impl HeaderSource for HeaderList {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Collects the headers a decision reads in one visit of a header map (instead of one lookup
/// per name): the first value of each wanted name, except `cookie`, whose values are all joined
/// with `; ` (RFC 6265 §5.4: HTTP/1.1 clients may send several, and Envoy keeps them apart).
#[derive(Debug)]
pub struct Selector<'a, S> {
    wanted: &'a [S],
    values: Vec<Option<String>>,
    cookie_headers: usize,
}

impl<'a, S: AsRef<str>> Selector<'a, S> {
    /// `wanted`: lower-case names.
    pub fn new(wanted: &'a [S]) -> Self {
        Self {
            wanted,
            values: vec![None; wanted.len()],
            cookie_headers: 0,
        }
    }

    /// One entry of the map, in order.
    pub fn offer(&mut self, name: &[u8], value: &[u8]) {
        let Some(i) = self
            .wanted
            .iter()
            .position(|w| w.as_ref().as_bytes().eq_ignore_ascii_case(name))
        else {
            return;
        };
        let cookie = name.eq_ignore_ascii_case(b"cookie");
        if cookie {
            self.cookie_headers += 1;
        }
        match self.values.get_mut(i) {
            Some(slot @ None) => *slot = Some(String::from_utf8_lossy(value).into_owned()),
            Some(Some(joined)) if cookie => {
                joined.push_str("; ");
                joined.push_str(&String::from_utf8_lossy(value));
            }
            _ => {}
        }
    }

    /// The headers found, and how many `Cookie` headers there were.
    pub fn finish(self) -> (HeaderList, usize) {
        let mut list = HeaderList::with_capacity(self.wanted.len());
        for (name, value) in self.wanted.iter().zip(self.values) {
            if let Some(v) = value {
                list.push(name.as_ref(), v);
            }
        }
        (list, self.cookie_headers)
    }
}

/// The path of a `:path` value without its query string and fragment.
pub fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// True when the request is gRPC (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct.trim_start();
        ct.len() >= 16
            && ct
                .get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
            && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_selection_keeps_first_values_and_joins_every_cookie_header() {
        let wanted = [":path", "cookie", "accept", "x-absent"];
        let mut s = Selector::new(&wanted);
        for (k, v) in [
            (&b":path"[..], &b"/a"[..]),
            (b"Cookie", b"a=1"),
            (b"accept", b"text/html"),
            (b"x-other", b"1"),
            (b"accept", b"*/*"),
            (b"cookie", b"b=2"),
        ] {
            s.offer(k, v);
        }
        let (list, cookies) = s.finish();
        assert_eq!(cookies, 2);
        assert_eq!(list.header("cookie"), Some("a=1; b=2"));
        assert_eq!(list.header("accept"), Some("text/html"), "the first value");
        assert_eq!(list.header(":path"), Some("/a"));
        assert_eq!(list.header("x-absent"), None);
        assert_eq!(list.iter().count(), 3);
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let h: HeaderList = [("X-User", "u1"), (":path", "/a")].into_iter().collect();
        assert_eq!(h.header("x-user"), Some("u1"));
        assert_eq!(h.header(":path"), Some("/a"));
        assert_eq!(h.header("missing"), None);
    }

    #[test]
    fn path_only_drops_query_and_fragment() {
        assert_eq!(path_only("/a/b?x=1"), "/a/b");
        assert_eq!(path_only("/a#f"), "/a");
        assert_eq!(path_only("/plain"), "/plain");
        assert_eq!(path_only(""), "");
    }

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc(Some("application/grpc")));
        assert!(is_grpc(Some("application/grpc+proto")));
        assert!(is_grpc(Some("Application/GRPC;charset=utf-8")));
        assert!(!is_grpc(Some("application/grpc-web")));
        assert!(!is_grpc(Some("application/json")));
        assert!(!is_grpc(None));
    }
}

/// Where a header byte that is not part of valid UTF-8 goes in [`text_of_bytes`]: U+10FF00 plus
/// the byte (the end of Supplementary Private Use Area-B, which no header legitimately carries).
const RAW_BYTE_BASE: u32 = 0x10_FF00;

/// A header value as text, losslessly: valid UTF-8 as it is, every other byte as one private-use
/// character, so that [`bytes_of_text`] gives back exactly the bytes Envoy had (other baggage
/// members, for instance, are kept verbatim even when they are not UTF-8).
pub fn text_of_bytes(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len()).max(1);
                for b in rest.iter().take(bad) {
                    out.push(char::from_u32(RAW_BYTE_BASE + u32::from(*b)).unwrap_or('\u{FFFD}'));
                }
                bytes = rest.get(bad..).unwrap_or_default();
            }
        }
    }
}

/// The bytes of a value made by [`text_of_bytes`] (and possibly edited).
pub fn bytes_of_text(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c).checked_sub(RAW_BYTE_BASE) {
            Some(b) if b <= 0xFF => out.push(b as u8),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod raw_bytes_tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn header_bytes_round_trip_through_text() {
        for bytes in [
            &b"k=v,ab.product=v2"[..],
            b"k=\x80,other=\xff\xfe",
            "caf\u{e9}=ol\u{e9}".as_bytes(),
            b"\xe2\x82",
            b"",
        ] {
            assert_eq!(bytes_of_text(&text_of_bytes(bytes)), bytes, "{bytes:?}");
        }
        assert_eq!(text_of_bytes(b"a=1"), "a=1", "UTF-8 as it is");
    }
}

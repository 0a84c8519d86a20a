//! The proxy-wasm ABI's wire format for header maps, as pure functions (tested natively; used by
//! the host layer).

/// Serialises header pairs in the ABI's map format:
/// `n: u32`, then `n × (key_len: u32, value_len: u32)`, then each key and value NUL-terminated.
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len32(pairs.len()));
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.len()));
        out.extend_from_slice(&len32(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses the ABI's map format (see [`serialize_pairs`]); malformed input yields what could be
/// read, never a panic.
pub fn deserialize_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    visit_pairs(bytes, |k, v| {
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    });
    out
}

/// Calls `f(key, value)` for each pair of a buffer in the ABI's map format, in order, without
/// allocating (a filter that needs a few headers of many copies only those). Malformed input
/// stops the walk, never panics.
pub fn visit_pairs(bytes: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
    for (k, v) in pairs(bytes) {
        f(k, v);
    }
}

/// The pairs of a buffer in the ABI's map format, in order, borrowed from it (see
/// [`visit_pairs`]); malformed input ends the iteration.
pub fn pairs(bytes: &[u8]) -> Pairs<'_> {
    let n = u32_at(bytes, 0).unwrap_or(0);
    Pairs {
        bytes,
        left: n,
        sizes: 4,
        data: n.checked_mul(8).and_then(|x| x.checked_add(4)),
    }
}

/// Iterator returned by [`pairs`].
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    bytes: &'a [u8],
    left: usize,
    /// Offset of the next (key_len, value_len) entry.
    sizes: usize,
    /// Offset of the next key; None once the buffer turned out malformed.
    data: Option<usize>,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    let arr: [u8; 4] = b.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(arr)).ok()
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let data = self.data?;
        let bytes = self.bytes;
        let parsed = (|| {
            let klen = u32_at(bytes, self.sizes)?;
            let vlen = u32_at(bytes, self.sizes.checked_add(4)?)?;
            let key = bytes.get(data..data.checked_add(klen)?)?;
            let vstart = data.checked_add(klen)?.checked_add(1)?;
            let value = bytes.get(vstart..vstart.checked_add(vlen)?)?;
            Some((key, value, vstart.checked_add(vlen)?.checked_add(1)?))
        })();
        match parsed {
            Some((k, v, next)) => {
                self.left -= 1;
                self.sizes = self.sizes.saturating_add(8);
                self.data = Some(next);
                Some((k, v))
            }
            None => {
                self.data = None;
                None
            }
        }
    }
}

/// A copy of a header map taken with one host call (the ABI's serialized form), kept in step
/// with the writes made through it: what a module running several filters reads instead of
/// asking the host for `:path`, `cookie`… once per filter.
///
/// Writes follow Envoy's header map: `set` replaces every value of the name (the new one goes
/// last), `add` appends one, `remove` drops them all; names compare case-insensitively. The
/// fetched buffer is kept as it is (one allocation) and the edits are kept beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMapCopy {
    base: Vec<u8>,
    /// Names whose entries in `base` are gone (set or removed since).
    hidden: Vec<String>,
    /// Entries written since, in order.
    added: Vec<(String, Vec<u8>)>,
}

impl HeaderMapCopy {
    /// A copy of a map in the ABI's serialized form.
    pub fn new(serialized: Vec<u8>) -> Self {
        Self {
            base: serialized,
            hidden: Vec::new(),
            added: Vec::new(),
        }
    }

    fn is_hidden(&self, name: &[u8]) -> bool {
        self.hidden
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
    }

    /// All entries, in the map's order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        pairs(&self.base)
            .filter(|(k, _)| !self.is_hidden(k))
            .chain(self.added.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
    }

    /// The first value of `name` (what the host returns for one header).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every value of `name`, in order, joined with `sep`, and how many there were; None when
    /// absent. (HTTP/1.1 lets a client send several `Cookie` headers; Envoy keeps them apart.)
    pub fn joined(&self, name: &str, sep: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut out: Option<(Vec<u8>, usize)> = None;
        for (_, v) in self
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        {
            match &mut out {
                None => out = Some((v.to_vec(), 1)),
                Some((joined, n)) => {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v);
                    *n += 1;
                }
            }
        }
        out
    }

    /// Calls `f` for each entry, in order.
    pub fn visit(&self, mut f: impl FnMut(&[u8], &[u8])) {
        for (k, v) in self.iter() {
            f(k, v);
        }
    }

    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.add(name, value);
    }

    /// Appends a value of `name`.
    pub fn add(&mut self, name: &str, value: &str) {
        self.add_bytes(name, value.as_bytes());
    }

    /// Appends a value of `name` that need not be UTF-8.
    pub fn add_bytes(&mut self, name: &str, value: &[u8]) {
        self.added.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Drops every value of `name`.
    pub fn remove(&mut self, name: &str) {
        if !self.is_hidden(name.as_bytes()) {
            self.hidden.push(name.to_ascii_lowercase());
        }
        self.added.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn known_layout() {
        let bytes = serialize_pairs(&[("a", "bc")]);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'b', b'c', 0]
        );
    }

    #[test]
    fn visiting_borrows_what_deserializing_copies() {
        let bytes = serialize_pairs(&[(":path", "/a"), ("cookie", "a=1"), ("cookie", "b=2")]);
        let mut seen = Vec::new();
        visit_pairs(&bytes, |k, v| seen.push((k.to_vec(), v.to_vec())));
        let copied: Vec<(Vec<u8>, Vec<u8>)> = deserialize_pairs(&bytes)
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
            .collect();
        assert_eq!(seen, copied);
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_copy_serves_reads_and_follows_writes() {
        let bytes = serialize_pairs(&[
            (":path", "/a"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-ab", "client"),
        ]);
        let mut copy = HeaderMapCopy::new(bytes);
        assert_eq!(copy.get(":path"), Some(&b"/a"[..]));
        assert_eq!(copy.get("Cookie"), Some(&b"a=1"[..]), "the first value");
        copy.set("x-ab", "v2");
        copy.add("authorization", "Bearer t");
        copy.remove("cookie");
        assert_eq!(copy.get("x-ab"), Some(&b"v2"[..]));
        assert_eq!(copy.get("cookie"), None);
        let mut names = Vec::new();
        copy.visit(|k, _| names.push(String::from_utf8_lossy(k).into_owned()));
        assert_eq!(names, [":path", "x-ab", "authorization"]);
        copy.add("cookie", "c=3");
        assert_eq!(copy.get("cookie"), Some(&b"c=3"[..]));
    }

    #[test]
    fn every_value_of_a_repeated_header_is_joined_in_order() {
        let bytes = serialize_pairs(&[("cookie", "a=1"), (":path", "/"), ("Cookie", "b=2")]);
        let mut copy = HeaderMapCopy::new(bytes);
        assert_eq!(
            copy.joined("cookie", b"; "),
            Some((b"a=1; b=2".to_vec(), 2))
        );
        assert_eq!(copy.joined("x-none", b"; "), None);
        copy.remove("cookie");
        copy.add("cookie", "c=3");
        assert_eq!(copy.joined("cookie", b"; "), Some((b"c=3".to_vec(), 1)));
    }

    #[test]
    fn truncated_input_yields_what_was_read() {
        let bytes = serialize_pairs(&[("k1", "v1"), ("k2", "v2")]);
        for cut in 0..bytes.len() {
            let got = deserialize_pairs(&bytes[..cut]);
            assert!(got.len() <= 2);
        }
        assert_eq!(deserialize_pairs(&[0xff, 0xff, 0xff, 0xff]), vec![]);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn round_trip(pairs in proptest::collection::vec(("[a-z:-]{0,12}", "[ -~]{0,40}"), 0..8)) {
                let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let back = deserialize_pairs(&serialize_pairs(&borrowed));
                prop_assert_eq!(back, pairs);
            }

            #[test]
            fn the_copy_reads_like_the_map_after_any_writes(
                start in proptest::collection::vec(("[a-c]", "[ -~]{0,6}"), 0..6),
                ops in proptest::collection::vec((0u8..3, "[a-cA-C]", "[ -~]{0,6}"), 0..12),
            ) {
                // The model: Envoy's header map as a list (set = remove + append).
                let mut model: Vec<(String, String)> = start.clone();
                let borrowed: Vec<(&str, &str)> = start.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut copy = HeaderMapCopy::new(serialize_pairs(&borrowed));
                for (op, name, value) in &ops {
                    let lower = name.to_ascii_lowercase();
                    match op {
                        0 => {
                            copy.set(name, value);
                            model.retain(|(k, _)| *k != lower);
                            model.push((lower, value.clone()));
                        }
                        1 => {
                            copy.add(name, value);
                            model.push((lower, value.clone()));
                        }
                        _ => {
                            copy.remove(name);
                            model.retain(|(k, _)| *k != lower);
                        }
                    }
                }
                let mut seen = Vec::new();
                copy.visit(|k, v| seen.push((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())));
                prop_assert_eq!(&seen, &model);
                for name in ["a", "B", "c", "d"] {
                    let want = model.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_bytes());
                    prop_assert_eq!(copy.get(name), want);
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
                let _ = deserialize_pairs(&bytes);
            }
        }
    }
}

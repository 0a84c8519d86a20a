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
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        let arr: [u8; 4] = b.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(arr)).ok()
    };
    let Some(n) = u32_at(0) else {
        return;
    };
    let mut sizes = 4usize;
    let Some(mut data) = n.checked_mul(8).and_then(|x| x.checked_add(4)) else {
        return;
    };
    for _ in 0..n {
        let (Some(klen), Some(vlen)) = (u32_at(sizes), u32_at(sizes + 4)) else {
            break;
        };
        sizes += 8;
        let key = data.checked_add(klen).and_then(|end| bytes.get(data..end));
        let vstart = data.saturating_add(klen).saturating_add(1);
        let value = vstart
            .checked_add(vlen)
            .and_then(|end| bytes.get(vstart..end));
        let (Some(k), Some(v)) = (key, value) else {
            break;
        };
        f(k, v);
        data = vstart.saturating_add(vlen).saturating_add(1);
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
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
                let _ = deserialize_pairs(&bytes);
            }
        }
    }
}

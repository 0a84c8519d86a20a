//! Reads and edits a WebAssembly module's export section (binary format: a magic number and a
//! version, then sections `id, size (LEB128), body`; the export section, id 7, is a vector of
//! `name, kind, index`). Removing an export leaves the function in place; `wasm-opt` then drops
//! what nothing reaches any more.

use anyhow::{Result, bail};

const EXPORT_SECTION: u8 = 7;

fn read_leb(bytes: &[u8], at: &mut usize) -> Result<u32> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let Some(&b) = bytes.get(*at) else {
            bail!("truncated LEB128 at byte {at}")
        };
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(u32::try_from(value)?);
        }
    }
    bail!("LEB128 longer than 5 bytes at byte {at}")
}

fn write_leb(mut value: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn slice(bytes: &[u8], from: usize, len: usize) -> Result<&[u8]> {
    match bytes.get(from..from.saturating_add(len)) {
        Some(s) => Ok(s),
        None => bail!("section or name runs past the end of the module"),
    }
}

/// The module with every export whose name satisfies `remove` taken out of the export section,
/// and the names removed (in module order).
pub fn remove(wasm: &[u8], remove: impl Fn(&str) -> bool) -> Result<(Vec<u8>, Vec<String>)> {
    if wasm.get(..4) != Some(b"\0asm".as_slice()) {
        bail!("not a WebAssembly module");
    }
    let mut out = slice(wasm, 0, 8)?.to_vec();
    let mut removed = Vec::new();
    let mut at = 8;
    while at < wasm.len() {
        let Some(&id) = wasm.get(at) else { break };
        at += 1;
        let size = read_leb(wasm, &mut at)? as usize;
        let body = slice(wasm, at, size)?;
        at += size;
        if id != EXPORT_SECTION {
            out.push(id);
            write_leb(u32::try_from(size)?, &mut out);
            out.extend_from_slice(body);
            continue;
        }
        let mut p = 0;
        let count = read_leb(body, &mut p)?;
        let mut kept: Vec<&[u8]> = Vec::new();
        for _ in 0..count {
            let start = p;
            let len = read_leb(body, &mut p)? as usize;
            let name = std::str::from_utf8(slice(body, p, len)?)?;
            p += len + 1; // the name, then the kind byte
            read_leb(body, &mut p)?; // the index
            if remove(name) {
                removed.push(name.to_owned());
            } else {
                kept.push(slice(body, start, p - start)?);
            }
        }
        let mut section = Vec::new();
        write_leb(u32::try_from(kept.len())?, &mut section);
        kept.iter().for_each(|e| section.extend_from_slice(e));
        out.push(id);
        write_leb(u32::try_from(section.len())?, &mut out);
        out.extend_from_slice(&section);
    }
    Ok((out, removed))
}

/// The names a module exports.
#[cfg(test)]
pub fn names(wasm: &[u8]) -> Result<Vec<String>> {
    let (_, all) = remove(wasm, |_| true)?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module exporting a function `f` (index 0) and `g` (index 1), built by hand.
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([1, 4, 1, 0x60, 0, 0]); // type section: () -> ()
        m.extend([3, 3, 2, 0, 0]); // function section: two functions of type 0
        m.extend([7, 9, 2, 1, b'f', 0, 0, 1, b'g', 0, 1]); // exports f, g
        m.extend([10, 7, 2, 2, 0, 0x0b, 2, 0, 0x0b]); // code: two empty bodies
        m
    }

    #[test]
    fn removes_only_the_chosen_exports() {
        let (pruned, removed) = remove(&module(), |n| n == "g").unwrap();
        assert_eq!(removed, ["g"]);
        assert_eq!(names(&pruned).unwrap(), ["f"]);
        // The other sections are untouched.
        assert_eq!(pruned.len(), module().len() - 4);
        assert!(pruned.ends_with(&[10, 7, 2, 2, 0, 0x0b, 2, 0, 0x0b]));
    }

    #[test]
    fn keeping_everything_reproduces_the_module() {
        let (same, removed) = remove(&module(), |_| false).unwrap();
        assert!(removed.is_empty());
        assert_eq!(same, module());
    }

    #[test]
    fn refuses_what_is_not_a_module() {
        assert!(remove(b"hello", |_| true).is_err());
        let mut cut = module();
        cut.truncate(20);
        assert!(remove(&cut, |_| true).is_err());
    }
}

//! The current stream's request headers, as the filters read and write them.
//!
//! Alone, every function is the host call it names (`proxy_get_header_map_value`,
//! `proxy_get_header_map_pairs`, `proxy_replace_header_map_value`…), exactly what the filters
//! made before. Inside a [`pass`] — a parent module running several filters' request phase on
//! one stream — the first read fetches the whole map with one host call
//! ([`meshwright_shared::wire::HeaderMapCopy`]) and later reads, by any filter, are served from
//! that copy; writes go to the host and are applied to the copy too (a write the host refuses
//! drops the copy, so the next read fetches again). Removing a header the copy shows absent
//! makes no host call. So `:path`, `cookie`, `authorization`… cross
//! the VM boundary once per pass instead of once per filter.

use crate::abi::{self, HostError};
use meshwright_shared::wire::{HeaderMapCopy, visit_pairs};
use proxy_wasm::types::MapType;
use std::cell::RefCell;

const MAP: MapType = MapType::HttpRequestHeaders;

/// A pass: the copy once fetched (None: not yet, or dropped).
struct Pass {
    copy: Option<HeaderMapCopy>,
}

thread_local! {
    /// Open passes, innermost last (a continuation may run another stream's pass).
    static PASSES: RefCell<Vec<Pass>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` as one pass over one stream, the effective context throughout: its request headers
/// are read from the host at most once, however many filters read them.
pub fn pass<R>(f: impl FnOnce() -> R) -> R {
    PASSES.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.push(Pass { copy: None });
        }
    });
    let result = f();
    PASSES.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.pop();
        }
    });
    result
}

/// Runs `f` in the open pass, or in a pass of its own when none is open: a filter's request
/// phase reads its headers with one host call whether it runs alone or inside a parent module.
/// (Alone, a filter that reads several headers would otherwise make a host call per header,
/// plus one into the VM to allocate each value found.)
pub fn joined_pass<R>(f: impl FnOnce() -> R) -> R {
    if in_pass() { f() } else { pass(f) }
}

fn in_pass() -> bool {
    PASSES.with(|p| p.try_borrow().is_ok_and(|p| !p.is_empty()))
}

/// Runs `f` on the innermost pass's copy, fetching it first if needed. None outside a pass, or
/// when the host would not give the map (the caller then asks the host directly).
fn with_copy<R>(f: impl FnOnce(&HeaderMapCopy) -> R) -> Option<R> {
    if !in_pass() {
        return None;
    }
    let fetched = PASSES.with(|p| {
        p.try_borrow()
            .is_ok_and(|p| p.last().is_some_and(|top| top.copy.is_some()))
    });
    if !fetched {
        // No borrow is held across the host call.
        let bytes = abi::header_map_bytes(MAP).ok()?;
        PASSES.with(|p| {
            if let Ok(mut p) = p.try_borrow_mut()
                && let Some(top) = p.last_mut()
            {
                top.copy = Some(HeaderMapCopy::new(bytes));
            }
        });
    }
    fetched_copy(f)
}

/// What the innermost pass's copy, if one was fetched already, says (never fetches it: a write
/// alone is no reason to read the map).
fn fetched_copy<R>(f: impl FnOnce(&HeaderMapCopy) -> R) -> Option<R> {
    PASSES.with(|p| {
        p.try_borrow()
            .ok()
            .and_then(|p| p.last().and_then(|top| top.copy.as_ref().map(f)))
    })
}

/// Applies a write the host accepted (or, refused, drops the copy).
fn after_write(ok: bool, edit: impl FnOnce(&mut HeaderMapCopy)) {
    PASSES.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut()
            && let Some(top) = p.last_mut()
        {
            match (&mut top.copy, ok) {
                (Some(copy), true) => edit(copy),
                (copy, _) => *copy = None,
            }
        }
    });
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One request header's (first) value; `Ok(None)` when absent.
pub fn header(name: &str) -> Result<Option<String>, HostError> {
    match with_copy(|c| c.get(name).map(lossy)) {
        Some(value) => Ok(value),
        None => abi::header(MAP, name),
    }
}

/// Every value of a request header joined with `sep` (e.g. several HTTP/1.1 `Cookie` headers,
/// which Envoy keeps apart, as one `; `-separated list: RFC 6265 §5.4), and how many there were;
/// `Ok(None)` when absent. One map read outside a pass, none inside one.
pub fn header_joined(name: &str, sep: &str) -> Result<Option<(String, usize)>, HostError> {
    let joined = |c: &HeaderMapCopy| c.joined(name, sep.as_bytes()).map(|(v, n)| (lossy(&v), n));
    if let Some(v) = with_copy(joined) {
        return Ok(v);
    }
    Ok(joined(&HeaderMapCopy::new(abi::header_map_bytes(MAP)?)))
}

/// Calls `f(name, value)` for every request header, in order, repeated ones included. `f` may
/// read headers but not write them.
pub fn visit(mut f: impl FnMut(&[u8], &[u8])) -> Result<(), HostError> {
    if with_copy(|c| c.visit(&mut f)).is_some() {
        return Ok(());
    }
    let bytes = abi::header_map_bytes(MAP)?;
    visit_pairs(&bytes, f);
    Ok(())
}

/// Sets (replacing every existing value) a request header.
pub fn set_header(name: &str, value: &str) -> Result<(), HostError> {
    let r = abi::set_header(MAP, name, value);
    after_write(r.is_ok(), |c| c.set(name, value));
    r
}

/// Sets (replacing every existing value) a request header to bytes that need not be UTF-8.
pub fn set_header_bytes(name: &str, value: &[u8]) -> Result<(), HostError> {
    let r = abi::set_header_bytes(MAP, name, value);
    after_write(r.is_ok(), |c| {
        c.remove(name);
        c.add_bytes(name, value);
    });
    r
}

/// Appends a request header value.
pub fn add_header(name: &str, value: &str) -> Result<(), HostError> {
    let r = abi::add_header(MAP, name, value);
    after_write(r.is_ok(), |c| c.add(name, value));
    r
}

/// Removes every value of a request header. Inside a pass whose copy shows the header absent,
/// no host call is made (a filter clearing the headers it owns pays only for those a client
/// really sent). Sets are always made: they almost always change the value, and checking first
/// would scan the copy on every write.
pub fn remove_header(name: &str) -> Result<(), HostError> {
    if fetched_copy(|c| c.get(name).is_none()) == Some(true) {
        return Ok(());
    }
    let r = abi::remove_header(MAP, name);
    after_write(r.is_ok(), |c| c.remove(name));
    r
}

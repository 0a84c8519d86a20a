//! proxy-wasm ABI 0.2.1 host functions, declared here so that every status comes back as a
//! `Result` instead of a panic.
//!
//! Signatures follow the ABI spec (github.com/proxy-wasm/spec, abi-versions/v0.2.1). Buffers the
//! host returns were allocated through the SDK's exported `proxy_on_memory_allocate`
//! (a boxed slice of exactly the requested length), and are taken back as such.

use meshwright_shared::wire::serialize_pairs;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};
use std::fmt;
use std::ptr::{null, null_mut};

/// A status other than `Ok` returned by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    pub const NOT_FOUND: Self = Self(1);
    pub const BAD_ARGUMENT: Self = Self(2);
    pub const EMPTY: Self = Self(7);
    pub const CAS_MISMATCH: Self = Self(8);
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            _ => "Unknown",
        };
        write!(f, "{name} ({})", self.0)
    }
}

type Result<T> = std::result::Result<T, HostError>;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

fn check(status: u32) -> Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

/// Takes ownership of a host-returned buffer.
///
/// # Safety
/// `data` must be null or a pointer the host obtained from `proxy_on_memory_allocate(size)`.
unsafe fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: proxy_on_memory_allocate hands out a Box<[u8]> of exactly `size` bytes.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: LogLevel, message: &str) -> Result<()> {
    // SAFETY: pointer and length describe a live &str.
    check(unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) })
}

pub fn log_level() -> Result<u32> {
    let mut level = 0u32;
    // SAFETY: the host writes one u32.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(level)
}

/// Host wall-clock time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> Result<u64> {
    let mut t = 0u64;
    // SAFETY: the host writes one u64.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

/// Sets the calling root context's tick period; 0 stops the ticks.
pub fn set_tick_period_ms(period_ms: u32) -> Result<()> {
    // SAFETY: plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}

pub fn buffer(buffer_type: BufferType, start: usize, max_size: usize) -> Result<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer and a size.
    let status = unsafe {
        proxy_get_buffer_bytes(buffer_type as u32, start, max_size, &mut data, &mut size)
    };
    // SAFETY: data/size come from the host allocation protocol.
    let bytes = unsafe { take_buffer(data, size) };
    match status {
        0 => Ok(bytes),
        1 | 7 => Ok(Vec::new()), // NotFound / Empty: no buffer
        s => Err(HostError(s)),
    }
}

/// One header value; `Ok(None)` when absent. Non-UTF-8 values are replaced lossily.
pub fn header(map: MapType, name: &str) -> Result<Option<String>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: key pointer/length describe a live &str; the host writes a pointer and a size.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    // SAFETY: data/size come from the host allocation protocol.
    let bytes = unsafe { take_buffer(data, size) };
    match status {
        0 => Ok(Some(String::from_utf8(bytes).unwrap_or_else(|e| {
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }))),
        1 => Ok(None),
        s => Err(HostError(s)),
    }
}

/// Sets (replacing every existing value) a header.
pub fn set_header(map: MapType, name: &str, value: &str) -> Result<()> {
    set_header_bytes(map, name, value.as_bytes())
}

/// [`set_header`] with a value that need not be UTF-8 (a header is bytes).
pub fn set_header_bytes(map: MapType, name: &str, value: &[u8]) -> Result<()> {
    // SAFETY: pointers and lengths describe a live &str and a live slice.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Appends a header value (keeps existing values).
pub fn add_header(map: MapType, name: &str, value: &str) -> Result<()> {
    // SAFETY: pointers and lengths describe live &strs.
    check(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: MapType, name: &str) -> Result<()> {
    // SAFETY: pointer and length describe a live &str.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// Resumes the current HTTP stream's request (after `Action::Pause`).
pub fn resume_request() -> Result<()> {
    // SAFETY: plain value. StreamType::HttpRequest = 0.
    check(unsafe { proxy_continue_stream(0) })
}

/// Makes `context_id` the context later host calls act on (from a root context's callback).
/// Fails with BadArgument when that stream is gone (measured on Envoy 1.40).
pub fn set_effective_context(context_id: u32) -> Result<()> {
    // SAFETY: plain value.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Sends a local reply instead of the upstream's. For a gRPC request pass `grpc_status`:
/// Envoy then answers with a trailers-only gRPC response carrying it.
pub fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
    grpc_status: Option<u32>,
    details: &str,
) -> Result<()> {
    let headers = serialize_pairs(headers);
    let grpc = grpc_status
        .and_then(|s| i32::try_from(s).ok())
        .unwrap_or(-1);
    // SAFETY: pointers and lengths describe live buffers.
    check(unsafe {
        proxy_send_local_response(
            status,
            if details.is_empty() {
                null()
            } else {
                details.as_ptr()
            },
            details.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc,
        )
    })
}

pub fn define_metric(kind: MetricType, name: &str) -> Result<u32> {
    let mut id = 0u32;
    // SAFETY: pointer and length describe a live &str; the host writes one u32.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<()> {
    // SAFETY: plain values.
    check(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Result<()> {
    // SAFETY: plain values.
    check(unsafe { proxy_record_metric(id, value) })
}

pub fn get_metric(id: u32) -> Result<u64> {
    let mut v = 0u64;
    // SAFETY: the host writes one u64.
    check(unsafe { proxy_get_metric(id, &mut v) })?;
    Ok(v)
}

/// The plugin configuration (`PluginConfig.configuration`: for Istio, the JSON of
/// `spec.pluginConfig`).
pub fn plugin_configuration() -> Result<Vec<u8>> {
    buffer(BufferType::PluginConfiguration, 0, usize::MAX)
}

/// All headers of a map in the ABI's serialized form, for
/// `meshwright_shared::wire::visit_pairs`: one host call, and every value — repeated headers
/// too, which [`header`] cannot return (Envoy gives only the first) — without allocating the
/// ones a filter does not need.
pub fn header_map_bytes(map: MapType) -> Result<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer and a size.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    // SAFETY: data/size come from the host allocation protocol.
    let bytes = unsafe { take_buffer(data, size) };
    check(status)?;
    Ok(bytes)
}

/// A value of the proxy-wide shared data (one map for the whole process, shared by all VMs
/// with the same vm_id — Istio sets none, so prefix keys with the filter's name) and its CAS
/// token. `(None, 0)` when the key was never set.
pub fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, u32)> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: key pointer/length describe a live &str; the host writes a pointer, a size and a u32.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    // SAFETY: data/size come from the host allocation protocol.
    let bytes = unsafe { take_buffer(data, size) };
    match status {
        0 => Ok((Some(bytes), cas)),
        1 => Ok((None, 0)),
        s => Err(HostError(s)),
    }
}

/// Sets shared data. `cas` is the token from [`get_shared_data`] (the write fails with
/// [`HostError::CAS_MISMATCH`] if someone wrote in between), or 0 to write unconditionally.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<()> {
    // SAFETY: pointers and lengths describe live buffers.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// The body of the HTTP call response being delivered (in `on_http_call_response`).
pub fn http_call_response_body(max_size: usize) -> Result<Vec<u8>> {
    buffer(BufferType::HttpCallResponseBody, 0, max_size)
}

/// A property of the stream or the proxy (e.g. `["source", "address"]`); `Ok(None)` if absent.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>> {
    let mut serialized = Vec::new();
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            serialized.push(0);
        }
        serialized.extend_from_slice(seg.as_bytes());
    }
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: pointer and length describe a live buffer; the host writes a pointer and a size.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    // SAFETY: data/size come from the host allocation protocol.
    let bytes = unsafe { take_buffer(data, size) };
    match status {
        0 => Ok(Some(bytes)),
        1 => Ok(None),
        s => Err(HostError(s)),
    }
}

//! The host's clock, read once per callback and passed to decision logic as `now_ms`.

use crate::abi;

/// Milliseconds since the Unix epoch by the proxy's clock (0 if the host refuses, which no
/// Envoy does; time-based decisions then behave as at the epoch instead of panicking).
pub fn now_ms() -> u64 {
    abi::now_nanos().map_or(0, |ns| ns / 1_000_000)
}

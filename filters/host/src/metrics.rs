//! Counters and gauges on Envoy's stats.
//!
//! Envoy stores a plugin's metrics in the `wasmcustom` stat namespace: a metric defined as
//! `meshwright.fault.aborts_injected` is `wasmcustom.meshwright.fault.aborts_injected` on
//! `/stats` and `meshwright_fault_aborts_injected` on `/stats/prometheus` (the namespace is
//! dropped there; measured on Envoy 1.40). Every VM (one per worker) defines the same names and
//! gets the same process-wide stat, so increments from all workers add up and a gauge can be
//! read back as a process-wide count.
//!
//! A metric whose definition failed is a no-op: metrics never take a request down.

use crate::abi;
use proxy_wasm::types::MetricType;

#[derive(Debug, Clone, Copy)]
pub struct Counter(Option<u32>);

#[derive(Debug, Clone, Copy)]
pub struct Gauge(Option<u32>);

impl Counter {
    pub fn define(name: &str) -> Self {
        Self(define(MetricType::Counter, name))
    }

    pub fn inc(self) {
        self.add(1);
    }

    pub fn add(self, n: u64) {
        if let Some(id) = self.0 {
            let _ = abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn get(self) -> u64 {
        self.0.and_then(|id| abi::get_metric(id).ok()).unwrap_or(0)
    }
}

impl Gauge {
    pub fn define(name: &str) -> Self {
        Self(define(MetricType::Gauge, name))
    }

    pub fn add(self, delta: i64) {
        if let Some(id) = self.0 {
            let _ = abi::increment_metric(id, delta);
        }
    }

    pub fn set(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = abi::record_metric(id, value);
        }
    }

    /// The process-wide value (all workers), or 0 when unavailable.
    pub fn get(self) -> u64 {
        self.0.and_then(|id| abi::get_metric(id).ok()).unwrap_or(0)
    }
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    match abi::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(e) => {
            log::warn!("metric {name} unavailable: {e}");
            None
        }
    }
}

//! The retry-budget filter's configuration: the wire format (what `pluginConfig` holds) and its
//! validation into the runtime [`RetryBudgetConfig`], built once per `on_configure`.
//!
//! Every field is documented in `docs/retry-budget.md`; keep the two in step.

use crate::budget::{
    Budget, BudgetError, MAX_MIN_RETRIES_PER_SECOND, MAX_RATIO, MAX_TTL_MS, MIN_TTL_MS,
};
use crate::destination::{DestinationSource, DestinationSpec};
use meshwright_shared::config::{ConfigError, Path, parse_json};
use meshwright_shared::validate::header_map;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Most retries per request the client side grants (Envoy's router takes any number).
pub const MAX_RETRIES_LIMIT: u32 = 25;

/// Largest shed-reply body, in bytes.
pub const MAX_BODY_LEN: usize = 4096;

/// Which side of a call the plugin sits on.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The caller's outbound sidecar (or a gateway): limits the retries Envoy's router makes.
    Client,
    /// The callee's inbound sidecar: sheds retries over budget.
    Server,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetSpec {
    pub side: Side,
    /// Count and report, never change a request.
    #[serde(default)]
    pub dry_run: bool,
    pub retry_ratio: Option<f64>,
    pub min_retries_per_second: Option<f64>,
    pub ttl_ms: Option<u64>,
    pub destination: Option<DestinationSpec>,
    pub max_destinations: Option<u32>,
    /// Client side: the most retries granted to one request.
    pub max_retries: Option<u32>,
    /// Server side: the reply to a shed retry.
    pub shed: Option<ShedSpec>,
    /// Server side: one budget per calling identity (the peer's mTLS certificate) within each
    /// destination, so one caller's retries cannot spend another's share.
    pub per_caller: Option<bool>,
    /// How often settlements are flushed and budget gauges refreshed when idle.
    pub report_interval_ms: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShedSpec {
    pub http_status: Option<u16>,
    pub grpc_status: Option<u32>,
    pub body: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The validated configuration, shared read-only by every request of the VM.
#[derive(Debug, Clone)]
pub struct RetryBudgetConfig {
    pub side: Side,
    pub dry_run: bool,
    pub budget: Budget,
    pub destination: DestinationSource,
    pub max_destinations: usize,
    /// Client side: retries asked of the budget per request.
    pub max_retries: u32,
    /// Server side.
    pub shed: Shed,
    /// Server side: a budget per caller identity within each destination.
    pub per_caller: bool,
    pub report_interval_ms: u32,
}

/// The reply to a shed retry. `x-envoy-ratelimited: true` (so callers' Envoys do not retry it)
/// and, for gRPC, `grpc-retry-pushback-ms: -1` (so gRPC clients do not either) are always added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    pub http_status: u16,
    pub grpc_status: u32,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Default for Shed {
    fn default() -> Self {
        Self {
            http_status: 429,
            grpc_status: 14,
            body: "retry budget exhausted".to_owned(),
            headers: Vec::new(),
        }
    }
}

impl RetryBudgetConfig {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        parse_json::<RetryBudgetSpec>(bytes)?.compile()
    }

    /// Request headers the filter reads on every request.
    pub fn headers_read(&self) -> Vec<&str> {
        let mut h: Vec<&str> = self.destination.header_read().into_iter().collect();
        match self.side {
            Side::Client => h.push("x-envoy-max-retries"),
            Side::Server => h.push("x-envoy-attempt-count"),
        }
        h
    }
}

impl RetryBudgetSpec {
    pub fn compile(&self) -> Result<RetryBudgetConfig, ConfigError> {
        let root = Path::root();
        let retry_ratio = self.retry_ratio.unwrap_or(0.2);
        let min_rps = self.min_retries_per_second.unwrap_or(10.0);
        let ttl_ms = self.ttl_ms.unwrap_or(10_000);
        let budget = Budget::try_new(retry_ratio, min_rps, ttl_ms).map_err(|e| match e {
            BudgetError::Ratio(v) => {
                ConfigError::out_of_range(root.key("retry_ratio"), 0, MAX_RATIO, v)
            }
            BudgetError::MinRetriesPerSecond(v) => ConfigError::out_of_range(
                root.key("min_retries_per_second"),
                0,
                MAX_MIN_RETRIES_PER_SECOND,
                v,
            ),
            BudgetError::Ttl(v) => {
                ConfigError::out_of_range(root.key("ttl_ms"), MIN_TTL_MS, MAX_TTL_MS, v)
            }
        })?;
        let destination = self
            .destination
            .as_ref()
            .unwrap_or(&DestinationSpec::Cluster)
            .compile(&root.key("destination"))?;
        let max_destinations = self.max_destinations.unwrap_or(64);
        if !(1..=1024).contains(&max_destinations) {
            return Err(ConfigError::out_of_range(
                root.key("max_destinations"),
                1,
                1024,
                max_destinations,
            ));
        }
        let report_interval_ms = self.report_interval_ms.unwrap_or(1000);
        if !(100..=60_000).contains(&report_interval_ms) {
            return Err(ConfigError::out_of_range(
                root.key("report_interval_ms"),
                100,
                60_000,
                report_interval_ms,
            ));
        }
        let max_retries = match (self.side, self.max_retries) {
            (Side::Client, None) => 2,
            (Side::Client, Some(n)) if n <= MAX_RETRIES_LIMIT => n,
            (Side::Client, Some(n)) => {
                return Err(ConfigError::out_of_range(
                    root.key("max_retries"),
                    0,
                    MAX_RETRIES_LIMIT,
                    n,
                ));
            }
            (Side::Server, Some(_)) => {
                return Err(ConfigError::invalid(
                    root.key("max_retries"),
                    "client side only (the server side sees retries, it does not grant them)",
                ));
            }
            (Side::Server, None) => 0,
        };
        let shed = match (self.side, &self.shed) {
            (Side::Client, Some(_)) => {
                return Err(ConfigError::invalid(
                    root.key("shed"),
                    "server side only (the client side never answers a request itself)",
                ));
            }
            (_, Some(s)) => s.compile(&root.key("shed"))?,
            (_, None) => Shed::default(),
        };
        let per_caller = match (self.side, self.per_caller) {
            (Side::Client, Some(_)) => {
                return Err(ConfigError::invalid(
                    root.key("per_caller"),
                    "server side only (a client-side budget already belongs to one caller)",
                ));
            }
            (Side::Client, None) => false,
            (Side::Server, p) => p.unwrap_or(true),
        };
        Ok(RetryBudgetConfig {
            side: self.side,
            dry_run: self.dry_run,
            budget,
            destination,
            max_destinations: max_destinations as usize,
            max_retries,
            shed,
            per_caller,
            report_interval_ms,
        })
    }
}

impl ShedSpec {
    fn compile(&self, field: &Path) -> Result<Shed, ConfigError> {
        let d = Shed::default();
        let http_status = self.http_status.unwrap_or(d.http_status);
        if !(400..=599).contains(&http_status) {
            return Err(ConfigError::out_of_range(
                field.key("http_status"),
                400,
                599,
                http_status,
            ));
        }
        let grpc_status = self.grpc_status.unwrap_or(d.grpc_status);
        if !(1..=16).contains(&grpc_status) {
            return Err(ConfigError::out_of_range(
                field.key("grpc_status"),
                1,
                16,
                grpc_status,
            ));
        }
        let body = self.body.clone().unwrap_or(d.body);
        if body.len() > MAX_BODY_LEN {
            return Err(ConfigError::out_of_range(
                field.key("body"),
                0,
                MAX_BODY_LEN,
                body.len(),
            ));
        }
        let headers = header_map(&field.key("headers"), &self.headers)?;
        let own = |name: &&String| {
            crate::server::OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str())
        };
        if let Some(name) = self.headers.keys().find(own) {
            return Err(ConfigError::invalid(
                field.key("headers").key(name),
                "set by the filter itself (it is what stops callers from retrying)",
            ));
        }
        Ok(Shed {
            http_status,
            grpc_status,
            body,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwright_shared::config::Reason;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn err(json: &str) -> ConfigError {
        RetryBudgetConfig::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn defaults_are_linkerds() {
        let c = RetryBudgetConfig::from_json(br#"{"side": "client"}"#).unwrap();
        assert_eq!(c.side, Side::Client);
        assert!(!c.dry_run);
        assert_eq!(c.budget, Budget::try_new(0.2, 10.0, 10_000).unwrap());
        assert_eq!(c.destination, DestinationSource::Cluster);
        assert_eq!(c.max_destinations, 64);
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.report_interval_ms, 1000);
        assert_eq!(c.headers_read(), ["x-envoy-max-retries"]);
        let s = RetryBudgetConfig::from_json(br#"{"side": "server"}"#).unwrap();
        assert_eq!(s.shed, Shed::default());
        assert_eq!(s.shed.http_status, 429);
        assert_eq!(s.headers_read(), ["x-envoy-attempt-count"]);
        assert!(
            s.per_caller,
            "the server side budgets each caller apart by default"
        );
        assert!(!c.per_caller);
        let shared = RetryBudgetConfig::from_json(br#"{"side": "server", "per_caller": false}"#);
        assert!(!shared.unwrap().per_caller);
    }

    #[test]
    fn a_full_server_config_compiles() {
        let c = RetryBudgetConfig::from_json(
            br#"{"side": "server", "dry_run": true, "retry_ratio": 0.1,
                 "min_retries_per_second": 2.5, "ttl_ms": 30000,
                 "destination": {"header": "X-Service"}, "max_destinations": 8,
                 "report_interval_ms": 250,
                 "shed": {"http_status": 503, "grpc_status": 8, "body": "busy",
                          "headers": {"Retry-After": "2"}}}"#,
        )
        .unwrap();
        assert!(c.dry_run);
        assert_eq!(c.budget.reserve(), 75.0);
        assert_eq!(c.destination, DestinationSource::Header("x-service".into()));
        assert_eq!(
            c.shed,
            Shed {
                http_status: 503,
                grpc_status: 8,
                body: "busy".into(),
                headers: vec![("retry-after".into(), "2".into())],
            }
        );
        assert_eq!(c.headers_read(), ["x-service", "x-envoy-attempt-count"]);
    }

    #[test]
    fn the_side_is_required() {
        let e = err("{}");
        assert!(
            matches!(e.reason, Reason::Syntax(ref m) if m.contains("side")),
            "{e}"
        );
        assert_eq!(err(r#"{"side": "both"}"#).field, "side");
        assert_eq!(RetryBudgetConfig::from_json(b"").unwrap_err().field, ".");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        assert_eq!(err(r#"{"side": "client", "ratio": 0.2}"#).field, "ratio");
        assert_eq!(
            err(r#"{"side": "server", "shed": {"status": 503}}"#).field,
            "shed.status"
        );
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases = [
            (r#"{"side":"client","retry_ratio":-0.1}"#, "retry_ratio"),
            (r#"{"side":"client","retry_ratio":11}"#, "retry_ratio"),
            (
                r#"{"side":"client","min_retries_per_second":-1}"#,
                "min_retries_per_second",
            ),
            (r#"{"side":"client","ttl_ms":999}"#, "ttl_ms"),
            (r#"{"side":"client","ttl_ms":600001}"#, "ttl_ms"),
            (
                r#"{"side":"client","max_destinations":0}"#,
                "max_destinations",
            ),
            (r#"{"side":"client","max_retries":26}"#, "max_retries"),
            (
                r#"{"side":"client","report_interval_ms":50}"#,
                "report_interval_ms",
            ),
            (
                r#"{"side":"server","shed":{"http_status":200}}"#,
                "shed.http_status",
            ),
            (
                r#"{"side":"server","shed":{"grpc_status":0}}"#,
                "shed.grpc_status",
            ),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(e.field, field, "{json}");
            assert!(matches!(e.reason, Reason::OutOfRange { .. }), "{json}: {e}");
        }
    }

    #[test]
    fn side_specific_fields_are_refused_on_the_other_side() {
        assert_eq!(
            err(r#"{"side":"server","max_retries":2}"#).field,
            "max_retries"
        );
        assert_eq!(err(r#"{"side":"client","shed":{}}"#).field, "shed");
        assert_eq!(
            err(r#"{"side":"client","per_caller":true}"#).field,
            "per_caller"
        );
    }

    #[test]
    fn shed_headers_are_checked() {
        let cases = [
            (
                r#"{"side":"server","shed":{"headers":{"x-a":"1\r\n2"}}}"#,
                "shed.headers.x-a",
            ),
            (
                r#"{"side":"server","shed":{"headers":{"bad name":"1"}}}"#,
                "shed.headers.bad name",
            ),
            (
                r#"{"side":"server","shed":{"headers":{"X-Envoy-RateLimited":"no"}}}"#,
                "shed.headers.X-Envoy-RateLimited",
            ),
            (
                r#"{"side":"server","destination":{"fixed":"Not.Valid"}}"#,
                "destination.fixed",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(err(json).field, field, "{json}");
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = RetryBudgetConfig::from_json(&bytes);
            }

            #[test]
            fn ratios_are_accepted_iff_in_range(r in -1.0f64..12.0) {
                let json = format!(r#"{{"side":"client","retry_ratio":{r}}}"#);
                prop_assert_eq!(
                    RetryBudgetConfig::from_json(json.as_bytes()).is_ok(),
                    (0.0..=MAX_RATIO).contains(&r)
                );
            }
        }
    }
}

//! Prometheus metrics in the text exposition format, kept in process memory: request counts and
//! latency histograms per route template, plus counters a service bumps (outbox deliveries) and
//! gauges it reads from its database when scraped (pending outbox rows, orders).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    durations: BTreeMap<(String, String), Histogram>,
    counters: BTreeMap<&'static str, (&'static str, BTreeMap<String, u64>)>,
}

/// The metrics of one service process.
pub struct Metrics {
    service: &'static str,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("service", &self.service)
            .finish()
    }
}

/// Kind of an extra sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// A value read at scrape time (from the database).
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    pub fn counter(name: &'static str, help: &'static str, value: f64) -> Sample {
        Sample {
            kind: Kind::Counter,
            ..Sample::gauge(name, help, value)
        }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Sample {
        self.labels.push((key, value.into()));
        self
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Bounds the label's cardinality: unusual methods share one label value.
fn method_label(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
        _ => "OTHER",
    }
}

impl Metrics {
    pub fn new(service: &'static str) -> Metrics {
        Metrics {
            service,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        match self.inner.lock() {
            Ok(mut inner) => f(&mut inner),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Records one served request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let method = method_label(method).to_owned();
        self.with(|inner| {
            *inner
                .requests
                .entry((route.to_owned(), method.clone(), status))
                .or_default() += 1;
            let h = inner
                .durations
                .entry((route.to_owned(), method))
                .or_default();
            for (bound, slot) in BUCKETS.iter().zip(h.buckets.iter_mut()) {
                if seconds <= *bound {
                    *slot += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        });
    }

    /// Adds one to a counter.
    pub fn count(&self, name: &'static str, help: &'static str, pairs: &[(&str, &str)]) {
        let mut all: Vec<(&str, &str)> = vec![("service", self.service)];
        all.extend_from_slice(pairs);
        let key = labels(&all);
        self.with(|inner| {
            let (_, series) = inner
                .counters
                .entry(name)
                .or_insert_with(|| (help, BTreeMap::new()));
            *series.entry(key).or_default() += 1;
        });
    }

    /// The exposition text: the in-memory series and then `extra`.
    pub fn render(&self, extra: &[Sample]) -> String {
        let service = self.service;
        let mut out = String::new();
        self.with(|inner| {
            out.push_str("# HELP shop_http_requests_total HTTP requests served, by route template, method and status.\n");
            out.push_str("# TYPE shop_http_requests_total counter\n");
            for ((route, method, status), n) in &inner.requests {
                let status = status.to_string();
                let l = labels(&[
                    ("service", service),
                    ("route", route),
                    ("method", method),
                    ("status", &status),
                ]);
                let _ = writeln!(out, "shop_http_requests_total{l} {n}");
            }
            out.push_str("# HELP shop_http_request_duration_seconds Time to answer HTTP requests, by route template and method.\n");
            out.push_str("# TYPE shop_http_request_duration_seconds histogram\n");
            for ((route, method), h) in &inner.durations {
                for (bound, n) in BUCKETS.iter().zip(h.buckets.iter()) {
                    let le = bound.to_string();
                    let l = labels(&[
                        ("service", service),
                        ("route", route),
                        ("method", method),
                        ("le", &le),
                    ]);
                    let _ = writeln!(out, "shop_http_request_duration_seconds_bucket{l} {n}");
                }
                let l = labels(&[
                    ("service", service),
                    ("route", route),
                    ("method", method),
                    ("le", "+Inf"),
                ]);
                let _ = writeln!(
                    out,
                    "shop_http_request_duration_seconds_bucket{l} {}",
                    h.count
                );
                let l = labels(&[("service", service), ("route", route), ("method", method)]);
                let _ = writeln!(out, "shop_http_request_duration_seconds_sum{l} {}", h.sum);
                let _ = writeln!(
                    out,
                    "shop_http_request_duration_seconds_count{l} {}",
                    h.count
                );
            }
            for (name, (help, series)) in &inner.counters {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (l, n) in series {
                    let _ = writeln!(out, "{name}{l} {n}");
                }
            }
        });
        let mut seen: Vec<&str> = Vec::new();
        for sample in extra {
            if !seen.contains(&sample.name) {
                seen.push(sample.name);
                let kind = match sample.kind {
                    Kind::Gauge => "gauge",
                    Kind::Counter => "counter",
                };
                let _ = writeln!(
                    out,
                    "# HELP {} {}\n# TYPE {} {kind}",
                    sample.name, sample.help, sample.name
                );
                for same in extra.iter().filter(|s| s.name == sample.name) {
                    let mut pairs: Vec<(&str, &str)> = vec![("service", service)];
                    pairs.extend(same.labels.iter().map(|(k, v)| (*k, v.as_str())));
                    let _ = writeln!(out, "{}{} {}", same.name, labels(&pairs), same.value);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_histogram_counters_and_samples() {
        let m = Metrics::new("store");
        m.observe_request("/api/products/{id}", "GET", 200, 0.003);
        m.observe_request("/api/products/{id}", "GET", 200, 0.2);
        m.observe_request("/api/products/{id}", "BREW", 404, 0.2);
        m.count(
            "shop_outbox_deliveries_total",
            "Outbox delivery attempts.",
            &[("result", "retry")],
        );
        let text = m.render(&[
            Sample::gauge("shop_outbox_pending", "Rows waiting.", 2.0),
            Sample::counter("shop_orders_total", "Orders.", 5.0).label("x", "a\"b"),
        ]);
        assert!(text.contains(r#"shop_http_requests_total{service="store",route="/api/products/{id}",method="GET",status="200"} 2"#), "{text}");
        assert!(text.contains(r#"method="OTHER",status="404"} 1"#));
        assert!(text.contains(r#"shop_http_request_duration_seconds_bucket{service="store",route="/api/products/{id}",method="GET",le="0.005"} 1"#));
        assert!(text.contains(r#"shop_http_request_duration_seconds_bucket{service="store",route="/api/products/{id}",method="GET",le="+Inf"} 2"#));
        assert!(text.contains(r#"shop_http_request_duration_seconds_count{service="store",route="/api/products/{id}",method="GET"} 2"#));
        assert!(text.contains(r#"shop_outbox_deliveries_total{service="store",result="retry"} 1"#));
        assert!(text.contains(
            "# TYPE shop_outbox_pending gauge\nshop_outbox_pending{service=\"store\"} 2\n"
        ));
        assert!(text.contains(r#"shop_orders_total{service="store",x="a\"b"} 5"#));
    }
}

//! Structured logs: one JSON object per line on stdout (what the cluster's log collector reads),
//! with the service and instance on every line. Tests capture lines in memory instead, to keep
//! the test output clean and to assert on what was logged.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::time;

/// Where log lines go.
#[derive(Clone, Default)]
pub enum LogSink {
    /// Standard output, one line per event (the default).
    #[default]
    Stdout,
    /// An in-memory buffer (tests).
    Memory(LogBuffer),
    /// Nowhere.
    Discard,
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("Stdout"),
            Self::Memory(_) => f.write_str("Memory"),
            Self::Discard => f.write_str("Discard"),
        }
    }
}

/// Log lines kept in memory, shared between the logger and whoever reads them.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<String>>>);

impl LogBuffer {
    /// A copy of the lines logged so far.
    pub fn lines(&self) -> Vec<String> {
        match self.0.lock() {
            Ok(lines) => lines.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The lines logged so far, parsed (lines that are not JSON are skipped).
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    fn push(&self, line: String) {
        match self.0.lock() {
            Ok(mut lines) => lines.push(line),
            Err(poisoned) => poisoned.into_inner().push(line),
        }
    }
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// A cheap-to-clone logger bound to one service instance.
#[derive(Clone, Debug)]
pub struct Logger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: String,
    instance: String,
    sink: LogSink,
}

impl Logger {
    pub fn new(service: &str, instance: &str, sink: LogSink) -> Self {
        Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                instance: instance.to_owned(),
                sink,
            }),
        }
    }

    pub fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Info, msg, fields);
    }

    pub fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Warn, msg, fields);
    }

    pub fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Error, msg, fields);
    }

    /// Writes one event. A failing stdout (closed pipe) loses the line rather than the process.
    pub fn log(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        let line = format_line(
            time::now_ms(),
            level,
            &self.inner.service,
            &self.inner.instance,
            msg,
            fields,
        );
        match &self.inner.sink {
            LogSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            LogSink::Memory(buffer) => buffer.push(line),
            LogSink::Discard => {}
        }
    }
}

/// Renders one log line: the fixed keys first, in a fixed order (easy to read in a terminal),
/// then the fields in the order given. A field cannot overwrite a fixed key or an earlier field.
pub fn format_line(
    ts_ms: i64,
    level: Level,
    service: &str,
    instance: &str,
    msg: &str,
    fields: &[(&str, Value)],
) -> String {
    let fixed = [
        ("ts", Value::String(time::rfc3339_ms(ts_ms))),
        ("level", Value::String(level.as_str().into())),
        ("service", Value::String(service.into())),
        ("instance", Value::String(instance.into())),
        ("msg", Value::String(msg.into())),
    ];
    let mut seen: Vec<&str> = Vec::with_capacity(fixed.len() + fields.len());
    let mut out = String::with_capacity(256);
    out.push('{');
    for (key, value) in fixed
        .iter()
        .map(|(k, v)| (*k, v))
        .chain(fields.iter().map(|(k, v)| (*k, v)))
    {
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&Value::String(key.to_owned()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn line_is_one_json_object_with_fixed_keys_first() {
        let line = format_line(
            1_796_230_800_123,
            Level::Info,
            "store",
            "store-1",
            "request",
            &[
                ("status", json!(200)),
                ("msg", json!("cannot override")),
                ("path", json!("/a\nb")),
            ],
        );
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"ts":"2026-12-02T17:00:00.123Z","level":"info","service":"store","instance":"store-1","msg":"request""#), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["msg"], "request");
    }

    #[test]
    fn memory_sink_collects() {
        let buffer = LogBuffer::default();
        let logger = Logger::new("product", "product-v2", LogSink::Memory(buffer.clone()));
        logger.warn("x", &[("k", json!("v"))]);
        let events = buffer.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["level"], "warn");
        assert_eq!(events[0]["instance"], "product-v2");
    }
}

//! `log` records to the proxy's log, and a panic hook that reports the plugin by name.
//!
//! Log lines carry the plugin name (in a module running several filters, the module's and the
//! running filter's: `[bundle/fault]`); Envoy adds the plugin's configured `name`
//! (Istio: `<namespace>.<WasmPlugin name>`) itself.

use crate::abi;
use proxy_wasm::types::LogLevel;
use std::sync::OnceLock;

struct ProxyLogger;

static LOGGER: ProxyLogger = ProxyLogger;
static PLUGIN: OnceLock<&'static str> = OnceLock::new();

impl log::Log for ProxyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        let plugin = PLUGIN.get().copied().unwrap_or("meshwright");
        let _ = match crate::compose::scope() {
            Some(s) => abi::log(level, &format!("[{plugin}/{}] {}", s.name, record.args())),
            None => abi::log(level, &format!("[{plugin}] {}", record.args())),
        };
    }

    fn flush(&self) {}
}

/// Installs the logger and the panic hook; call first thing in the plugin's `main!`.
/// Idempotent. Makes no host call (Envoy forbids them during `_initialize`).
pub fn init(plugin: &'static str) {
    if PLUGIN.set(plugin).is_err() {
        return;
    }
    let _ = log::set_logger(&LOGGER);
    // No host calls here: Envoy refuses them during `_initialize` ("restricted_callback").
    // The proxy's level is read at on_configure (`refresh_level`).
    log::set_max_level(log::LevelFilter::Info);
    std::panic::set_hook(Box::new(|info| {
        let plugin = PLUGIN.get().copied().unwrap_or("meshwright");
        let _ = abi::log(
            LogLevel::Critical,
            &format!("[{plugin}] panic, the VM is lost until reloaded: {info}"),
        );
    }));
}

/// Follows the proxy's current log level (so `--component-log-level wasm:debug` works).
pub fn refresh_level() {
    let filter = match abi::log_level() {
        Ok(0) => log::LevelFilter::Trace,
        Ok(1) => log::LevelFilter::Debug,
        Ok(2) => log::LevelFilter::Info,
        Ok(3) => log::LevelFilter::Warn,
        Ok(4) => log::LevelFilter::Error,
        Ok(_) => log::LevelFilter::Off,
        Err(_) => log::LevelFilter::Info,
    };
    log::set_max_level(filter);
}

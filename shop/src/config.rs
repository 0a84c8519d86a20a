//! Configuration from `SHOP_*` environment variables (see README.md). Every value is checked at
//! start-up so that a bad deployment fails at once, with a message naming the variable, instead
//! of misbehaving later.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hyper::Uri;

use crate::log::LogSink;

/// The four services of the one binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Store,
    Product,
    Invoice,
    Notification,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Store,
        Service::Product,
        Service::Invoice,
        Service::Notification,
    ];

    /// The subcommand and `service` log field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Product => "product",
            Self::Invoice => "invoice",
            Self::Notification => "notification",
        }
    }

    pub fn parse(name: &str) -> Option<Service> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The port each service listens on by default (the Kubernetes Service ports).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Store => 8080,
            Self::Product => 8081,
            Self::Invoice => 8082,
            Self::Notification => 8083,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The product catalogue's version (the A/B experiment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    V1,
    V2,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// An `http://host[:port][/prefix]` base URL of another service, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// Checks the form: plain HTTP (the sidecars add TLS), an authority, no query or fragment.
    pub fn parse(text: &str) -> Result<BaseUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}): {text:?}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "expected an http:// URL (the mesh adds TLS), got {text:?}"
            ));
        }
        let has_host = uri.authority().is_some_and(|a| !a.host().is_empty());
        if !has_host {
            return Err(format!("URL has no host: {text:?}"));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(format!("URL must not have a query or fragment: {text:?}"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!("URL must not carry credentials: {text:?}"));
        }
        Ok(BaseUrl(text.trim_end_matches('/').to_owned()))
    }

    /// The base followed by `path_and_query` (which starts with `/`).
    pub fn join(&self, path_and_query: &str) -> String {
        format!("{}{}", self.0, path_and_query)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The checked configuration of one service process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SHOP_LISTEN`.
    pub listen: SocketAddr,
    /// `SHOP_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `SHOP_VARIANT` (product only).
    pub variant: Variant,
    /// `SHOP_INSTANCE`.
    pub instance: String,
    /// `SHOP_MESH_OUTBOUND`: `host:port` every outbound call connects to, if set.
    pub mesh_outbound: Option<String>,
    /// `SHOP_PRODUCT_URL`.
    pub product_url: BaseUrl,
    /// `SHOP_INVOICE_URL`.
    pub invoice_url: BaseUrl,
    /// `SHOP_NOTIFICATION_URL`.
    pub notification_url: BaseUrl,
    /// `SHOP_OUTBOX_INTERVAL_MS`.
    pub outbox_interval: Duration,
    /// `SHOP_OUTBOX_MAX_BACKOFF_MS`.
    pub outbox_max_backoff: Duration,
    /// `SHOP_LOGOUT_URL`.
    pub logout_url: String,
    /// How long in-flight requests may take to finish after a shutdown signal (not configurable
    /// from the environment: 10 s fits Kubernetes' default 30 s termination grace).
    pub shutdown_grace: Duration,
    /// Where logs go (standard output outside tests).
    pub log: LogSink,
}

/// A configuration value that was rejected, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

const DEFAULT_PRODUCT_URL: &str = "http://product.ecommerce.svc.cluster.local:8081";
const DEFAULT_INVOICE_URL: &str = "http://invoice.ecommerce.svc.cluster.local:8082";
const DEFAULT_NOTIFICATION_URL: &str = "http://notification.ecommerce.svc.cluster.local:8083";

impl Config {
    /// Reads the process environment.
    pub fn from_env(service: Service) -> Result<Config, ConfigError> {
        Self::from_lookup(service, |name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; an empty value counts as unset.
    pub fn from_lookup(
        service: Service,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let err = |variable: &'static str, message: String| ConfigError { variable, message };

        let listen = match get("SHOP_LISTEN") {
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), service.default_port()),
            Some(v) => v.trim().parse().map_err(|_| {
                err(
                    "SHOP_LISTEN",
                    format!("expected ip:port such as 0.0.0.0:8080, got {v:?}"),
                )
            })?,
        };
        let data_dir = PathBuf::from(get("SHOP_DATA_DIR").unwrap_or_else(|| "/data".into()));
        let variant = match get("SHOP_VARIANT").as_deref().map(str::trim) {
            None | Some("v1") => Variant::V1,
            Some("v2") => Variant::V2,
            Some(other) => {
                return Err(err(
                    "SHOP_VARIANT",
                    format!("expected v1 or v2, got {other:?}"),
                ));
            }
        };
        let instance = match get("SHOP_INSTANCE") {
            Some(v) => {
                let v = v.trim().to_owned();
                check_instance(&v).map_err(|m| err("SHOP_INSTANCE", m))?;
                v
            }
            None => match service {
                Service::Product => format!("product-{}", variant.as_str()),
                other => other.name().to_owned(),
            },
        };
        let mesh_outbound = match get("SHOP_MESH_OUTBOUND") {
            None => None,
            Some(v) => {
                let v = v.trim().to_owned();
                check_host_port(&v).map_err(|m| err("SHOP_MESH_OUTBOUND", m))?;
                Some(v)
            }
        };
        let url = |variable: &'static str, default: &str| -> Result<BaseUrl, ConfigError> {
            let value = get(variable).unwrap_or_else(|| default.to_owned());
            BaseUrl::parse(value.trim()).map_err(|m| err(variable, m))
        };
        let product_url = url("SHOP_PRODUCT_URL", DEFAULT_PRODUCT_URL)?;
        let invoice_url = url("SHOP_INVOICE_URL", DEFAULT_INVOICE_URL)?;
        let notification_url = url("SHOP_NOTIFICATION_URL", DEFAULT_NOTIFICATION_URL)?;
        let millis = |variable: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match get(variable) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (1..=86_400_000).contains(&n) => Ok(Duration::from_millis(n)),
                    _ => Err(err(
                        variable,
                        format!("expected milliseconds between 1 and 86400000, got {v:?}"),
                    )),
                },
            }
        };
        let outbox_interval = millis("SHOP_OUTBOX_INTERVAL_MS", 1000)?;
        let outbox_max_backoff = millis("SHOP_OUTBOX_MAX_BACKOFF_MS", 30_000)?;
        let logout_url = match get("SHOP_LOGOUT_URL") {
            None => "/oauth2/logout".to_owned(),
            Some(v) => {
                let v = v.trim().to_owned();
                check_link(&v).map_err(|m| err("SHOP_LOGOUT_URL", m))?;
                v
            }
        };
        Ok(Config {
            listen,
            data_dir,
            variant,
            instance,
            mesh_outbound,
            product_url,
            invoice_url,
            notification_url,
            outbox_interval,
            outbox_max_backoff,
            logout_url,
            shutdown_grace: Duration::from_secs(10),
            log: LogSink::Stdout,
        })
    }

    /// The defaults with an ephemeral loopback port and the given data directory: the starting
    /// point of in-process tests and local runs.
    pub fn local(service: Service, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            data_dir: data_dir.into(),
            variant: Variant::V1,
            instance: match service {
                Service::Product => "product-v1".to_owned(),
                other => other.name().to_owned(),
            },
            mesh_outbound: None,
            product_url: BaseUrl(DEFAULT_PRODUCT_URL.into()),
            invoice_url: BaseUrl(DEFAULT_INVOICE_URL.into()),
            notification_url: BaseUrl(DEFAULT_NOTIFICATION_URL.into()),
            outbox_interval: Duration::from_millis(1000),
            outbox_max_backoff: Duration::from_millis(30_000),
            logout_url: "/oauth2/logout".into(),
            shutdown_grace: Duration::from_secs(10),
            log: LogSink::Stdout,
        }
    }

    /// The product variant, reflected in the default instance name when that was not set.
    pub fn with_variant(mut self, variant: Variant) -> Config {
        if self.instance == format!("product-{}", self.variant.as_str()) {
            self.instance = format!("product-{}", variant.as_str());
        }
        self.variant = variant;
        self
    }
}

/// Instance names go into a response header and log lines: keep them to a safe alphabet.
fn check_instance(v: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to 64 letters, digits, '-', '_' or '.', got {v:?}"
        ))
    }
}

fn check_host_port(v: &str) -> Result<(), String> {
    let bad = || format!("expected host:port such as 127.0.0.1:15001, got {v:?}");
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(())
}

fn check_link(v: &str) -> Result<(), String> {
    let shape = v.starts_with('/') || v.starts_with("https://") || v.starts_with("http://");
    if !shape || v.starts_with("//") || v.len() > 2048 || v.chars().any(char::is_control) {
        return Err(format!(
            "expected a path such as /oauth2/logout or an http(s) URL, got {v:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)], service: Service) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(service, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = with(&[], Service::Product).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8081");
        assert_eq!(c.instance, "product-v1");
        assert_eq!(c.data_dir, PathBuf::from("/data"));
        assert_eq!(c.mesh_outbound, None);
        assert_eq!(
            c.invoice_url.as_str(),
            "http://invoice.ecommerce.svc.cluster.local:8082"
        );
        assert_eq!(c.outbox_interval, Duration::from_millis(1000));
        assert_eq!(c.outbox_max_backoff, Duration::from_millis(30_000));
        assert_eq!(c.logout_url, "/oauth2/logout");
        let s = with(&[], Service::Store).unwrap();
        assert_eq!(s.listen.port(), 8080);
        assert_eq!(s.instance, "store");
        assert_eq!(
            with(&[], Service::Notification).unwrap().listen.port(),
            8083
        );
    }

    #[test]
    fn overrides() {
        let c = with(
            &[
                ("SHOP_LISTEN", "127.0.0.1:9000"),
                ("SHOP_VARIANT", "v2"),
                ("SHOP_MESH_OUTBOUND", "127.0.0.1:15001"),
                ("SHOP_PRODUCT_URL", "http://localhost:7000/"),
                ("SHOP_OUTBOX_INTERVAL_MS", "25"),
                ("SHOP_INSTANCE", "product-v2-b"),
                ("SHOP_DATA_DIR", "/tmp/x"),
                ("SHOP_LOGOUT_URL", "https://id.example/logout"),
            ],
            Service::Product,
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.variant, Variant::V2);
        assert_eq!(c.instance, "product-v2-b");
        assert_eq!(c.mesh_outbound.as_deref(), Some("127.0.0.1:15001"));
        assert_eq!(
            c.product_url.join("/api/products"),
            "http://localhost:7000/api/products"
        );
        assert_eq!(c.outbox_interval, Duration::from_millis(25));
        assert_eq!(c.logout_url, "https://id.example/logout");
        let v2 = with(&[("SHOP_VARIANT", "v2")], Service::Product).unwrap();
        assert_eq!(v2.instance, "product-v2");
        // Empty counts as unset.
        assert!(
            with(&[("SHOP_MESH_OUTBOUND", "")], Service::Store)
                .unwrap()
                .mesh_outbound
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let cases = [
            ("SHOP_LISTEN", "8080"),
            ("SHOP_VARIANT", "v3"),
            ("SHOP_INSTANCE", "bad name"),
            ("SHOP_MESH_OUTBOUND", "localhost"),
            ("SHOP_MESH_OUTBOUND", "localhost:0"),
            ("SHOP_PRODUCT_URL", "https://product:8081"),
            ("SHOP_INVOICE_URL", "invoice:8082"),
            ("SHOP_NOTIFICATION_URL", "http://n:1/?q=1"),
            ("SHOP_OUTBOX_INTERVAL_MS", "0"),
            ("SHOP_OUTBOX_MAX_BACKOFF_MS", "soon"),
            ("SHOP_LOGOUT_URL", "javascript:alert(1)"),
            ("SHOP_LOGOUT_URL", "//evil.example/"),
        ];
        for (var, value) in cases {
            let e = with(&[(var, value)], Service::Store).unwrap_err();
            assert_eq!(e.variable, var, "{value}");
            assert!(
                e.to_string().starts_with(&format!("invalid {var}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn local_uses_an_ephemeral_loopback_port() {
        let c = Config::local(Service::Product, "/tmp/d").with_variant(Variant::V2);
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.instance, "product-v2");
        assert_eq!(c.variant, Variant::V2);
    }
}

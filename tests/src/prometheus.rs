//! A real Prometheus (Debian's `prometheus`) scraping proxies' `/stats/prometheus`, for tests
//! that check what dashboards and alerts query — against the series Envoy really exports.

use crate::client::Http;
use crate::proc::Proc;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Prometheus {
    pub addr: SocketAddr,
    http: Http,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prometheus({})", self.addr)
    }
}

impl Prometheus {
    /// Starts Prometheus scraping every `targets` (`host:port` of Envoy admins) each second.
    pub async fn start(targets: &[SocketAddr]) -> Result<Self> {
        crate::install::ensure_apt(&["prometheus"])?;
        let dir = tempfile::Builder::new()
            .prefix("meshwright-prometheus-")
            .tempdir()?;
        let port = crate::idp::free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: envoy\n    metrics_path: /stats/prometheus\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        let mut proc = Proc::spawn("prometheus", cmd, &dir.path().join("prometheus.log"))?;
        let http = Http::new(addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !proc.is_running() {
                bail!("{}", proc.exit_report(20));
            }
            if let Ok(r) = http.get("/-/ready", &[]).await
                && r.status == 200
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("Prometheus not ready within 30 s:\n{}", proc.tail(20));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            addr,
            http,
            _proc: proc,
            _dir: dir,
        })
    }

    /// The result vector of an instant query.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let q: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let r = self
            .http
            .get(&format!("/api/v1/query?query={q}"), &[])
            .await?;
        let v = r.json()?;
        if v["status"] != "success" {
            bail!("query {expr}: {v}");
        }
        v["data"]["result"]
            .as_array()
            .cloned()
            .context("no result vector")
    }

    /// How many targets are up.
    pub async fn targets_up(&self) -> Result<usize> {
        Ok(self.query("up == 1").await?.len())
    }
}

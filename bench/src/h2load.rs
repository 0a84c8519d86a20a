//! The load generator: h2load (Debian `nghttp2-client`) over HTTP/1.1, pinned with `taskset`,
//! and what it reports.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// One h2load run.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub requests: u64,
    /// Keep-alive HTTP/1.1 connections.
    pub connections: u32,
    /// Requests per second per connection (`--rps`): a fixed rate; `None` = as fast as possible.
    pub rps_per_connection: Option<u64>,
    /// Pin h2load to these CPUs (`taskset -c`).
    pub cpu: Option<String>,
}

/// What h2load reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// Responses by class: 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    pub req_per_s: f64,
    pub elapsed_s: f64,
}

impl Outcome {
    /// `Ok` when all `n` requests succeeded with a 2xx answer.
    pub fn all_2xx(&self, n: u64) -> Result<()> {
        if self.succeeded == n && self.status[0] == n {
            return Ok(());
        }
        bail!(
            "{n} requests: {} succeeded, {} failed, {} errored, {} timed out; status 2xx {} 3xx {} 4xx {} 5xx {}",
            self.succeeded,
            self.failed,
            self.errored,
            self.timeout,
            self.status[0],
            self.status[1],
            self.status[2],
            self.status[3]
        )
    }
}

/// Runs h2load (blocking) and parses its summary; with `log`, h2load also writes one line per
/// request there.
pub fn run(load: &Load, log: Option<&Path>) -> Result<Outcome> {
    let mut cmd = match &load.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, "h2load"]);
            c
        }
        None => Command::new("h2load"),
    };
    cmd.args(["--h1", "-t", "1", "-c"])
        .arg(load.connections.to_string())
        .arg("-n")
        .arg(load.requests.to_string());
    if let Some(rps) = load.rps_per_connection {
        cmd.arg(format!("--rps={rps}"));
    }
    if let Some(log) = log {
        cmd.arg(format!("--log-file={}", log.display()));
    }
    for (k, v) in &load.headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(&load.url);
    let out = cmd.output().context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("h2load output:\n{text}"))
}

fn number_before<'a>(words: &[&'a str], label: &str) -> Option<&'a str> {
    let i = words
        .iter()
        .position(|w| w.trim_end_matches(',') == label)?;
    words.get(i.checked_sub(1)?).copied()
}

fn count(words: &[&str], label: &str) -> Result<u64> {
    number_before(words, label)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no `{label}` count"))
}

/// `1.23s`, `512.34ms`, `870us` → seconds.
fn duration_s(text: &str) -> Option<f64> {
    let t = text.trim_end_matches(',');
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else {
        (t.strip_suffix('s')?, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// Parses h2load's summary lines (`finished in`, `requests:`, `status codes:`).
pub fn parse(text: &str) -> Result<Outcome> {
    let mut o = Outcome::default();
    let mut seen = [false; 3];
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(rest) = line.strip_prefix("finished in ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            o.elapsed_s = parts
                .first()
                .and_then(|d| duration_s(d))
                .context("elapsed time")?;
            o.req_per_s = parts.get(1).and_then(|r| r.parse().ok()).context("req/s")?;
            seen[0] = true;
        } else if line.starts_with("requests:") {
            o.succeeded = count(&words, "succeeded")?;
            o.failed = count(&words, "failed")?;
            o.errored = count(&words, "errored")?;
            o.timeout = count(&words, "timeout")?;
            seen[1] = true;
        } else if line.starts_with("status codes:") {
            for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                if let Some(slot) = o.status.get_mut(i) {
                    *slot = count(&words, class)?;
                }
            }
            seen[2] = true;
        }
    }
    if seen != [true; 3] {
        bail!("not an h2load summary");
    }
    Ok(o)
}

/// Per-request lines of `--log-file`: (start µs since the epoch, status, µs to the end of the
/// response). Returns the latencies of all requests and how many were not 2xx.
pub fn read_log(path: &Path) -> Result<(Vec<u64>, u64)> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut latencies = Vec::new();
    let mut not_2xx = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(status), Some(us)) = (
            cols.get(1).and_then(|s| s.trim().parse::<i64>().ok()),
            cols.get(2).and_then(|s| s.trim().parse::<u64>().ok()),
        ) else {
            bail!("bad h2load log line: {line:?}");
        };
        if !(200..300).contains(&status) {
            not_2xx += 1;
        }
        latencies.push(us);
    }
    Ok((latencies, not_2xx))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "starting benchmark...
spawning thread #0: 4 total client(s). 20000 total requests
Application protocol: http/1.1
progress: 10% done

finished in 1.23s, 16260.16 req/s, 1.72MB/s
requests: 20000 total, 20000 started, 20000 done, 19990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 19990 2xx, 0 3xx, 10 4xx, 0 5xx
traffic: 2.11MB (2213232) total, 1.44MB (1508000) headers (space savings 0.00%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:      105us      3.12ms       229us       101us    91.23%
";

    #[test]
    fn parses_the_summary() {
        let o = parse(SAMPLE).unwrap();
        assert_eq!(o.succeeded, 19990);
        assert_eq!(o.failed, 10);
        assert_eq!(o.status, [19990, 0, 10, 0]);
        assert!((o.req_per_s - 16260.16).abs() < 1e-9);
        assert!((o.elapsed_s - 1.23).abs() < 1e-9);
        assert!(o.all_2xx(20000).is_err());
        let ok = Outcome {
            succeeded: 5,
            status: [5, 0, 0, 0],
            ..Outcome::default()
        };
        assert!(ok.all_2xx(5).is_ok());
    }

    #[test]
    fn durations_in_any_unit() {
        assert_eq!(duration_s("512.5ms,"), Some(0.5125));
        assert_eq!(duration_s("870us"), Some(0.00087));
        assert_eq!(duration_s("2s"), Some(2.0));
        assert_eq!(duration_s("fast"), None);
    }

    #[test]
    fn refuses_what_is_not_a_summary() {
        assert!(parse("connect error").is_err());
        assert!(parse("finished in 1s, 10 req/s, 1MB/s\n").is_err());
    }

    #[test]
    fn reads_the_request_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(
            &p,
            "1700000000000000\t200\t250\n1700000000001000\t503\t90\n\n",
        )
        .unwrap();
        let (lat, bad) = read_log(&p).unwrap();
        assert_eq!(lat, vec![250, 90]);
        assert_eq!(bad, 1);
        std::fs::write(&p, "garbage\n").unwrap();
        assert!(read_log(&p).is_err());
    }
}

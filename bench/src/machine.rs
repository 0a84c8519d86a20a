//! The machine a run happened on, and the built modules.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub model_name: String,
    /// 1, 5 and 15 minute load averages at the start of the run.
    pub loadavg_start: [f64; 3],
    pub loadavg_end: [f64; 3],
    pub kernel: String,
}

/// Load averages from /proc/loadavg.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    parse_loadavg(&text)
}

fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut out = [f64::NAN; 3];
    for (slot, v) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = v.parse().unwrap_or(f64::NAN);
    }
    out
}

/// CPUs of the machine (`processor` lines of /proc/cpuinfo; affinity does not change it).
fn cpuinfo() -> (usize, String) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let n = text.lines().filter(|l| l.starts_with("processor")).count();
    let model = text
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    (n.max(1), model)
}

impl Machine {
    pub fn read() -> Self {
        let (nproc, model_name) = cpuinfo();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            nproc,
            model_name,
            loadavg_start: loadavg(),
            loadavg_end: [f64::NAN; 3],
            kernel,
        }
    }

    /// A 1-minute load average of half the CPUs or more: other work competed for the cores the
    /// benchmark pins Envoy and the load generator to.
    pub fn load_warning(&self) -> Option<String> {
        let limit = self.nproc as f64 / 2.0;
        let worst = self.loadavg_start[0].max(self.loadavg_end[0]);
        (worst >= limit).then(|| {
            let end = if self.loadavg_end[0].is_finite() {
                format!(", {:.2} at end", self.loadavg_end[0])
            } else {
                String::new()
            };
            format!(
                "load average was high ({:.2} at start{end}, on {} CPUs): other work competed \
                 for the pinned cores; compare variants within this run only, or re-run on a \
                 quiet machine",
                self.loadavg_start[0], self.nproc
            )
        })
    }
}

/// Pins this process and all its threads to `cpus` (`taskset -a -p`); later threads and
/// children inherit it.
pub fn pin_self(cpus: &str) -> Result<()> {
    pin(std::process::id(), cpus)
}

/// Pins process `pid` and all its threads to `cpus`; threads it starts later inherit it.
pub fn pin(pid: u32, cpus: &str) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus])
        .arg(pid.to_string())
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        bail!("taskset: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A built module's size.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleSize {
    pub name: String,
    pub bytes: u64,
    /// `gzip -9` of it (what an OCI layer compressed with gzip would weigh).
    pub gzip_bytes: u64,
}

/// Every `*.wasm` in `dist`, by name.
pub fn module_sizes(dist: &Path) -> Result<Vec<ModuleSize>> {
    let mut files: Vec<_> = std::fs::read_dir(dist)
        .with_context(|| format!("{} (run cargo xtask build)", dist.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::metadata(&f)?.len();
        let gz = Command::new("gzip")
            .args(["-9", "-c"])
            .arg(&f)
            .output()
            .context("running gzip")?;
        if !gz.status.success() {
            bail!("gzip {}", f.display());
        }
        out.push(ModuleSize {
            name: f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            gzip_bytes: gz.stdout.len() as u64,
        });
    }
    Ok(out)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (proleptic Gregorian, UTC).
pub fn utc(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_826_633), "2026-11-28T00:43:53Z");
    }

    #[test]
    fn loadavg_parses() {
        let l = parse_loadavg("2.80 1.98 2.56 6/111 15282\n");
        assert_eq!(l, [2.80, 1.98, 2.56]);
        assert!(parse_loadavg("").iter().all(|v| v.is_nan()));
    }

    #[test]
    fn high_load_is_flagged() {
        let mut m = Machine {
            nproc: 2,
            model_name: "x".into(),
            loadavg_start: [0.3, 0.2, 0.1],
            loadavg_end: [0.4, 0.3, 0.2],
            kernel: String::new(),
        };
        assert!(m.load_warning().is_none());
        m.loadavg_end = [1.5, 1.0, 0.5];
        assert!(m.load_warning().unwrap().contains("1.50 at end"));
    }
}

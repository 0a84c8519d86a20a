//! `cargo xtask bench --instructions`: instructions Envoy executes per request, counted by
//! valgrind's callgrind, added over a bare Envoy receiving the same request.
//!
//! CPU time on a shared or virtualised machine moves by tens of percent from run to run (this
//! one's bare Envoy went from 12 to 60 µs per request between days); an instruction count of the
//! same binary on the same requests does not: two runs agree to a fraction of a percent, so
//! differences of a few hundred instructions — one host call, one allocation — are visible.
//! Instructions are not time (a cache miss costs more than an add), but for the same Envoy
//! build they rank variants the way CPU time does on a quiet machine, and they make the issue's
//! ratios (fault ≤ 1.2 × the floor, the bundle ≤ 1.5 × the cheapest filter…) checkable.
//!
//! Each variant's Envoy (1 worker) runs under `valgrind --tool=callgrind --instr-atstart=no`
//! (JIT code included: `--smc-check=all`); it is proven and warmed up uninstrumented, then
//! instrumentation is switched on (`callgrind_control -i on`) just around a checked h2load run,
//! and the counts dumped. Every thread is counted: workers, main thread, V8's.

use crate::fixtures::{Fixtures, Profile};
use crate::runner::{self, Placement};
use crate::variants::{self, Group, Variant};
use crate::{Options, machine};
use anyhow::{Context, Result, bail};
use meshwright_testbed::{install, paths};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Requests counted per variant (after [`WARM_UP`] uncounted ones).
pub const REQUESTS: u64 = 1_000;
/// Uncounted requests before counting (`--warm-up N`).
pub const WARM_UP: u64 = 200;

/// Turns callgrind's instrumentation of process `pid` on or off.
pub fn instrument(pid: u32, on: bool) -> Result<()> {
    control(&["-i", if on { "on" } else { "off" }], pid)
}

fn control(args: &[&str], pid: u32) -> Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control (Debian package valgrind)")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {args:?} {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The instruction total of a callgrind dump: the sum of its `totals:` lines (one per part).
pub fn totals(dump: &str) -> Option<u64> {
    let mut sum = None;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("totals:") {
            let n: u64 = rest.split_whitespace().next()?.parse().ok()?;
            sum = Some(sum.unwrap_or(0) + n);
        }
    }
    sum
}

/// Instructions a callgrind dump counts in JIT code: callgrind's unknown object (`???`) at
/// addresses of V8's code space (above 4 GiB; the unattributed code below that is Envoy's, and
/// is there for native filters too). That is the module's compiled functions and V8's wasm
/// wrappers; the rest of a wasm filter's cost is Envoy and V8's runtime serving its host calls.
pub fn jit(dump: &str) -> u64 {
    let mut obs: HashMap<&str, &str> = HashMap::new();
    let mut fns: HashMap<&str, &str> = HashMap::new();
    // Define (or refer to) a compressed name: `(id) name` or `(id)`.
    fn name<'a>(rest: &'a str, names: &mut HashMap<&'a str, &'a str>) -> &'a str {
        let (id, name) = rest.split_once(' ').unwrap_or((rest, ""));
        if !name.is_empty() {
            names.insert(id, name);
        }
        names.get(id).copied().unwrap_or(name)
    }
    let is_jit = |ob: &str, f: &str| {
        ob == "???"
            && f.strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .is_some_and(|a| a >= 1 << 32)
    };
    let (mut ob, mut f) = ("", "");
    let mut after_calls = false;
    let mut sum = 0u64;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("ob=") {
            ob = name(rest, &mut obs);
        } else if let Some(rest) = line.strip_prefix("cob=") {
            name(rest, &mut obs);
        } else if let Some(rest) = line.strip_prefix("fn=") {
            f = name(rest, &mut fns);
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            name(rest, &mut fns);
        } else if line.starts_with("calls=") {
            after_calls = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            // A cost line: position, then Ir. The one after `calls=` is the call's inclusive
            // cost, already counted where it was spent.
            if std::mem::take(&mut after_calls) {
                continue;
            }
            if is_jit(ob, f) {
                sum += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    sum
}

/// Dumps the counts of `pid` (started with `--callgrind-out-file=out`) and reads them from
/// `out.1`, waiting a bounded time for the file: (every instruction, those in JIT code).
fn dump_and_read(pid: u32, out: &Path) -> Result<(u64, u64)> {
    control(&["-d"], pid)?;
    let file = out.with_extension("out.1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(text) = std::fs::read_to_string(&file).ok()
            && let Some(n) = totals(&text)
        {
            return Ok((n, jit(&text)));
        }
        if Instant::now() > deadline {
            bail!("no callgrind dump in {}", file.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Counted {
    pub id: String,
    pub name: String,
    pub group: Group,
    pub profile: Profile,
    pub baseline: String,
    /// Instructions per request (every Envoy thread).
    pub per_request: Option<f64>,
    /// Over the bare Envoy of the same profile.
    pub added: Option<f64>,
    /// Of `per_request`, in JIT code (see [`jit`]), and over the bare Envoy's.
    pub jit_per_request: Option<f64>,
    pub jit_added: Option<f64>,
    pub error: Option<String>,
}

/// `left` against `right`: the ratio targets, and the bundle against separate plugins.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub what: String,
    pub left: String,
    pub right: String,
    /// left.added / right.added
    pub ratio: Option<f64>,
    /// The target's limit on the ratio, when the issue sets one.
    pub limit: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstructionReport {
    pub schema: u32,
    pub started: String,
    pub duration_s: f64,
    pub envoy_version: String,
    pub requests: u64,
    /// Uncounted requests per variant before counting (after the proving ones).
    pub warm_up: u64,
    pub variants: Vec<Counted>,
    pub comparisons: Vec<Comparison>,
}

/// (what, left, right candidates — the cheapest measured one is used, limit)
const COMPARISONS: &[(&str, &str, &[&str], Option<f64>)] = &[
    (
        "fault, no rule firing / the floor",
        "fault",
        &["floor"],
        Some(1.2),
    ),
    (
        "OAuth2 hot path / Envoy's native oauth2",
        "oauth2",
        &["envoy-oauth2"],
        Some(1.0),
    ),
    (
        "A/B as the Lua reference / the Lua filter",
        "ab-like-lua",
        &["envoy-lua-ab"],
        Some(1.0),
    ),
    (
        "bundle, all four / the cheapest single filter",
        "bundle-all-four",
        &["oauth2", "ab", "fault", "retry-client", "retry-server"],
        Some(1.5),
    ),
    (
        "bundle, all four / four separate plugins",
        "bundle-all-four",
        &["all-four"],
        None,
    ),
    (
        "bundle, gateway set / separate",
        "bundle-gateway",
        &["gateway-set"],
        None,
    ),
    (
        "bundle, sidecar set / separate",
        "bundle-sidecar",
        &["sidecar-set"],
        None,
    ),
    (
        "bundle, sidecar set / separate, on the shop's call",
        "bundle-sidecar-shop",
        &["sidecar-set-shop"],
        None,
    ),
    (
        "the floor / Envoy's fault filter at 0 %",
        "floor",
        &["envoy-fault"],
        None,
    ),
];

fn compare(variants: &[Counted]) -> Vec<Comparison> {
    let added = |id: &str| variants.iter().find(|v| v.id == id).and_then(|v| v.added);
    COMPARISONS
        .iter()
        .filter_map(|(what, left, right, limit)| {
            let l = added(left)?;
            let (rid, r) = right
                .iter()
                .filter_map(|id| added(id).map(|a| (*id, a)))
                .min_by(|a, b| a.1.total_cmp(&b.1))?;
            Some(Comparison {
                what: (*what).to_owned(),
                left: (*left).to_owned(),
                right: rid.to_owned(),
                ratio: (r > 0.0).then(|| l / r),
                limit: *limit,
            })
        })
        .collect()
}

async fn count(
    v: &Variant,
    fx: &Fixtures,
    placement: &Placement,
    warm_up: u64,
    requests: u64,
    keep: Option<&Path>,
) -> Result<(f64, f64)> {
    eprintln!("bench: counting {} (under callgrind)", v.id);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("callgrind.out");
    let r = runner::start(v, fx, placement, 1, None, Some(out.clone())).await?;
    r.prove().await?;
    if warm_up > 0 {
        r.warm_up(warm_up, 2, None).await?;
    }
    r.counted(requests, 2).await?;
    let pid = r.envoy.pid();
    let dump = out.with_extension("out.1");
    let (total, jit) = tokio::task::spawn_blocking(move || dump_and_read(pid, &out)).await??;
    drop(r);
    if let Some(dir) = keep {
        std::fs::create_dir_all(dir)?;
        let kept = dir.join(format!("{}.callgrind", v.id));
        std::fs::copy(&dump, &kept).with_context(|| format!("keeping {}", kept.display()))?;
    }
    let per = |n: u64| n as f64 / requests as f64;
    Ok((per(total), per(jit)))
}

/// Counts every planned variant (two Envoys at a time) and writes
/// `instructions.{json,md}` (and README.md's `instructions` section, when asked).
pub async fn run(opts: &Options) -> Result<InstructionReport> {
    let t0 = Instant::now();
    let started = machine::utc(machine::now_s());
    install::ensure_envoy()?;
    install::ensure_apt(&["nghttp2-client", "openssl", "gzip", "valgrind"])?;
    let (idp, idp_addr, fx) = crate::idp_and_fixtures().await?;
    let placement = Placement {
        envoy_cpu: None,
        load_cpu: None,
        all_cpus: None,
        idp: idp_addr,
    };
    let all = crate::selected(variants::plan(&fx)?.0, &opts.only);
    let requests = opts.instruction_requests;
    let warm_up = opts.instruction_warm_up;

    let mut counted: Vec<Counted> = Vec::new();
    for pair in all.chunks(2) {
        let results = crate::two_at_once(pair, |v| {
            count(
                v,
                &fx,
                &placement,
                warm_up,
                requests,
                opts.keep_dumps.as_deref(),
            )
        })
        .await;
        for (v, result) in results {
            if let Err(e) = &result {
                eprintln!("bench: {} FAILED: {e:#}", v.id);
            }
            counted.push(Counted {
                id: v.id.clone(),
                name: v.name.clone(),
                group: v.group,
                profile: v.profile,
                baseline: Variant::bare(v.profile).id,
                per_request: result.as_ref().ok().map(|r| r.0),
                added: None,
                jit_per_request: result.as_ref().ok().map(|r| r.1),
                jit_added: None,
                error: result.err().map(|e| format!("{e:#}")),
            });
        }
    }
    let bare: Vec<(String, f64, f64)> = counted
        .iter()
        .filter(|c| c.group == Group::Baseline)
        .filter_map(|c| Some((c.id.clone(), c.per_request?, c.jit_per_request?)))
        .collect();
    for c in &mut counted {
        let base = bare.iter().find(|(id, ..)| *id == c.baseline);
        let over = |n: Option<f64>, b: Option<f64>| match (n, b) {
            (Some(n), Some(b)) if c.group != Group::Baseline => Some(n - b),
            _ => None,
        };
        c.added = over(c.per_request, base.map(|b| b.1));
        c.jit_added = over(c.jit_per_request, base.map(|b| b.2));
    }
    let report = InstructionReport {
        schema: 1,
        started,
        duration_s: t0.elapsed().as_secs_f64(),
        envoy_version: install::envoy_version(),
        requests,
        warm_up,
        comparisons: compare(&counted),
        variants: counted,
    };
    std::fs::create_dir_all(&opts.out_dir)?;
    std::fs::write(
        opts.out_dir.join("instructions.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    std::fs::write(opts.out_dir.join("instructions.md"), report.markdown())?;
    if opts.update_readme {
        let path = paths::root().join("README.md");
        let readme = std::fs::read_to_string(&path)?;
        std::fs::write(
            &path,
            crate::report::replace_marked(&readme, "instructions", &report.table())?,
        )?;
    }
    drop(idp);
    eprintln!(
        "bench: instructions counted in {:.0} s; results in {}",
        report.duration_s,
        opts.out_dir.display()
    );
    Ok(report)
}

fn thousands(n: f64) -> String {
    format!("{:+.1}k", n / 1000.0)
}

impl InstructionReport {
    pub fn failed(&self) -> Vec<&Counted> {
        self.variants.iter().filter(|v| v.error.is_some()).collect()
    }

    /// The tables (README section and the body of instructions.md).
    pub fn table(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Instructions Envoy {} executes per request (every thread; callgrind, {} checked \
             requests per variant after {} uncounted; `cargo xtask bench --instructions`, {}), \
             added over a bare Envoy receiving the same request, and how much of that is in JIT \
             code (the module's compiled functions and V8's wasm wrappers; the rest is Envoy and \
             V8's runtime serving the host calls):\n",
            self.envoy_version, self.requests, self.warm_up, self.started
        );
        md.push_str(
            "| variant | instructions/request | added | of it in JIT code |\n|---|--:|--:|--:|\n",
        );
        for v in &self.variants {
            let per = v
                .per_request
                .map_or_else(|| "failed".to_owned(), |n| format!("{:.1}k", n / 1000.0));
            let added = v.added.map_or_else(|| "—".to_owned(), thousands);
            let jit = match (v.jit_added, v.group) {
                (Some(j), g) if g != Group::Baseline && j.abs() >= 50.0 => thousands(j),
                _ => "—".to_owned(),
            };
            let _ = writeln!(md, "| {} | {per} | {added} | {jit} |", v.name);
        }
        md.push_str("\n| comparison (added instructions) | ratio | target |\n|---|--:|---|\n");
        for c in &self.comparisons {
            let ratio = c
                .ratio
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"));
            let target = match (c.limit, c.ratio) {
                (Some(l), Some(r)) if r <= l => format!("≤ {l}: met"),
                (Some(l), Some(_)) => format!("≤ {l}: missed"),
                (Some(l), None) => format!("≤ {l}"),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} (`{}` / `{}`) | {ratio} | {target} |",
                c.what, c.left, c.right
            );
        }
        md
    }

    pub fn markdown(&self) -> String {
        format!(
            "# meshwright benchmark: instructions per request ({})\n\n{}",
            self.started,
            self.table()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_every_part_of_a_dump() {
        let dump = "version: 1\nevents: Ir\nsummary: 0\n\ntotals: 1200\nfn=x\n1 3\ntotals: 34\n";
        assert_eq!(totals(dump), Some(1234));
        assert_eq!(totals("events: Ir\n"), None);
        assert_eq!(totals("totals: many\n"), None);
    }

    #[test]
    fn jit_counts_self_cost_in_v8_code_space_only() {
        // Envoy's own function, an unattributed one below 4 GiB, two JIT functions (one named
        // where it is first called), and a call's inclusive cost that must not count again.
        let dump = "events: Ir\n\
            ob=(1) /x/envoy\nfn=(1) 0x0000000001000000\n10 5\n\
            ob=(2) ???\nfn=(2) 0x0000000006294800\n1 7\n\
            fn=(3) 0x000035f8801c7018\n1 100\n+1 20\n\
            cob=(2)\ncfn=(4) 0x000035f8801c7d18\ncalls=1 0\n1 1000\n\
            fn=(4)\n1 3\n\
            ob=(1)\nfn=(1)\n11 2\n";
        assert_eq!(jit(dump), 123);
    }

    fn c(id: &str, added: Option<f64>) -> Counted {
        Counted {
            id: id.into(),
            name: id.into(),
            group: Group::Filter,
            profile: Profile::Sidecar,
            baseline: "bare-sidecar".into(),
            per_request: added.map(|a| a + 100_000.0),
            added,
            jit_per_request: None,
            jit_added: None,
            error: None,
        }
    }

    #[test]
    fn comparisons_use_the_cheapest_candidate_and_skip_what_is_missing() {
        let v = vec![
            c("bundle-all-four", Some(60_000.0)),
            c("oauth2", Some(50_000.0)),
            c("fault", Some(30_000.0)),
            c("floor", Some(15_000.0)),
        ];
        let cmp = compare(&v);
        let all_four = cmp
            .iter()
            .find(|x| x.what.starts_with("bundle, all four / the cheapest"))
            .unwrap();
        assert_eq!(all_four.right, "fault");
        assert_eq!(all_four.ratio, Some(2.0));
        let fault = cmp.iter().find(|x| x.left == "fault").unwrap();
        assert_eq!(fault.ratio, Some(2.0));
        assert!(
            cmp.iter().all(|x| x.left != "oauth2"),
            "no native oauth2 measured"
        );
    }
}

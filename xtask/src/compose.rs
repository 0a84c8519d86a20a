//! `cargo xtask compose`: the local mesh as containers. Renders `docker-compose.yaml` and the
//! proxies' configs (target/compose/config/), stages the images' build contexts
//! (target/compose/images/), and with `--up` starts it (Docker engine started when needed).

use crate::args::Args;
use crate::{modules, say};
use anyhow::{Context, Result, bail};
use meshwright_testbed::mesh::PluginSet;
use meshwright_testbed::mesh::compose::{self, Published};
use meshwright_testbed::{install, paths};
use std::process::Command;

pub fn compose(mut args: Args) -> Result<()> {
    let up = args.flag("--up");
    let set = if args.flag("--bundle") {
        PluginSet::Bundle
    } else {
        PluginSet::Separate
    };
    args.finish()?;
    modules::build()?;
    install::ensure_envoy()?;
    let root = paths::root();
    let text = compose::render(
        set,
        Published::default(),
        &compose::dir().join("config"),
        &root,
    )?;
    std::fs::write(root.join("docker-compose.yaml"), text)?;
    compose::stage_images()?;
    // The modules are mounted read-only next to the configs that name them.
    say("rendered docker-compose.yaml and target/compose/ (configs, image contexts)");
    if !up {
        say("next: docker compose up --build   (then open http://localhost:8080/)");
        return Ok(());
    }
    install::ensure_docker_daemon()?;
    let status = Command::new("docker")
        .args(["compose", "up", "--build", "-d", "--wait"])
        .current_dir(&root)
        .status()
        .context("docker compose up")?;
    if !status.success() {
        bail!("docker compose up failed ({status})");
    }
    tokio::runtime::Runtime::new()?.block_on(compose::wait_for_shop(8080))?;
    say("\nmeshwright shop: http://localhost:8080/   (sign in as alice or bob, any password)");
    say("docker compose down -v   stops it");
    Ok(())
}

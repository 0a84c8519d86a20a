//! The shop on the same mesh as containers: `docker-compose.yaml`, rendered from k8s/ and
//! wasmplugins/, on a real Docker engine (started when none runs), images built from the
//! repository's Dockerfiles without any registry, the browser journey through the gateway.

use anyhow::{Context, Result, ensure};
use meshwright_testbed::mesh::PluginSet;
use meshwright_testbed::mesh::compose::{self, Published};
use meshwright_testbed::{install, paths};
use std::process::Command;

#[test]
fn the_committed_compose_file_is_what_the_manifests_render() -> Result<()> {
    // (Writes fresh proxy configs into target/compose/config, as `cargo xtask compose` does.)
    let rendered = compose::render(
        PluginSet::Separate,
        Published::default(),
        &compose::dir().join("config"),
        &paths::root(),
    )?;
    let committed = std::fs::read_to_string(paths::root().join("docker-compose.yaml"))?;
    assert!(
        committed == rendered,
        "docker-compose.yaml is stale: run `cargo xtask compose` and commit it"
    );
    Ok(())
}

/// `docker compose` for one project, taken down (volumes too) however the test ends.
struct Project {
    name: String,
    file: std::path::PathBuf,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["compose", "-p", &self.name, "-f"])
            .arg(&self.file)
            .current_dir(paths::root());
        c
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let out = self.compose().args(args).output()?;
        ensure!(
            out.status.success(),
            "docker compose {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(out) = self.compose().args(["logs", "--tail", "30"]).output()
        {
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
        let _ = self
            .compose()
            .args(["down", "-v", "--timeout", "5"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_runs_in_docker_compose_and_a_browser_shops_there() -> Result<()> {
    let _docker = install::ensure_docker()?;
    install::ensure_envoy()?;
    compose::stage_images()?;
    let dir = tempfile::Builder::new()
        .prefix("meshwright-compose-")
        .tempdir()?;
    let published = Published {
        shop: meshwright_testbed::idp::free_port()?,
        idp: meshwright_testbed::idp::free_port()?,
    };
    let text = compose::render(
        PluginSet::Separate,
        published,
        &dir.path().join("config"),
        dir.path(),
    )?;
    let file = dir.path().join("docker-compose.yaml");
    std::fs::write(&file, text)?;
    let project = Project {
        name: format!("meshwright-test-{}", std::process::id()),
        file,
    };
    project
        .run(&["up", "--build", "-d", "--wait", "--wait-timeout", "120"])
        .context("bringing the compose project up")?;
    compose::wait_for_shop(published.shop).await?;
    let url = format!("http://localhost:{}/", published.shop);
    let out = tokio::process::Command::new("node")
        .args(["shop-journey.mjs", &url, "alice"])
        .current_dir(paths::root().join("tests/idp"))
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("browser journey (compose): {stdout}");
    ensure!(out.status.success(), "the journey failed: {stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    assert!(
        v["invoice"].as_str().is_some_and(|i| i.starts_with("INV-")),
        "{v}"
    );
    assert!(v["notification"].is_string(), "{v}");
    assert_eq!(v["signedOut"], true, "{v}");
    drop(project);
    Ok(())
}

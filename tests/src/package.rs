//! The images a cluster pulls, built as OCI image layouts without any registry or Docker, so
//! that their digests are the same wherever they are built (`cargo xtask package`):
//!
//! - every WasmPlugin module as Istio's "oci" wasm image: a config blob
//!   `application/vnd.module.wasm.config.v1+json` and one layer, the module itself,
//!   `application/vnd.module.wasm.content.layer.v1+wasm`;
//! - the shop's image: one gzipped tar layer of the release binary and exactly the shared
//!   libraries it links, `/etc/passwd`, `/tmp`, `/data` (user 10001), the config without any
//!   timestamp.
//!
//! The release binary is built with the checkout's path remapped (`--remap-path-prefix`), the
//! tar has fixed owners and times, gzip writes no name or time: the same sources, toolchain and
//! Debian packages give the same bytes in any directory (measured: two checkouts, the same
//! sha256). So the digests the manifests pin (WasmPlugin `spec.sha256` — for an `oci://` url
//! istio-agent checks the image's manifest digest there —, `image: …@sha256:`) can be checked
//! by building again.

use crate::{install, paths};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const TAR_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One image, written as an OCI image layout.
#[derive(Debug, Clone)]
pub struct Image {
    /// e.g. `ghcr.io/meshwright/fault`
    pub repository: String,
    pub tag: String,
    /// The layout's directory (`oci:<dir>:<tag>` for skopeo).
    pub layout: PathBuf,
    /// `sha256:<hex>` of the manifest: what `image@` pins.
    pub digest: String,
    pub config_media_type: String,
    /// (media type, digest) of each layer.
    pub layers: Vec<(String, String)>,
    /// For a wasm module: the sha256 of the module itself (informational; WasmPlugin
    /// `spec.sha256` pins the image's digest).
    pub module_sha256: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `bytes` as a blob of the layout; returns its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Result<Value> {
    let h = hex(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(&h), bytes)?;
    Ok(json!({"mediaType": media_type, "digest": format!("sha256:{h}"), "size": bytes.len()}))
}

/// A layout holding one manifest of `config` and `layers`, tagged `tag`.
fn write_layout(
    layout: &Path,
    repository: &str,
    tag: &str,
    config: (&str, Vec<u8>),
    layers: Vec<(&str, Vec<u8>, Value)>,
) -> Result<Image> {
    if layout.exists() {
        std::fs::remove_dir_all(layout)?;
    }
    std::fs::create_dir_all(layout)?;
    let config_desc = blob(layout, config.0, &config.1)?;
    let mut descs = Vec::new();
    for (media_type, bytes, annotations) in &layers {
        let mut d = blob(layout, media_type, bytes)?;
        if annotations.is_object() {
            d["annotations"] = annotations.clone();
        }
        descs.push(d);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_desc = blob(layout, OCI_MANIFEST, &manifest_bytes)?;
    let mut index_entry = manifest_desc.clone();
    index_entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [index_entry]}))?,
    )?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(Image {
        repository: repository.to_owned(),
        tag: tag.to_owned(),
        layout: layout.to_owned(),
        digest: manifest_desc["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        config_media_type: config.0.to_owned(),
        layers: descs
            .iter()
            .map(|d| {
                (
                    d["mediaType"].as_str().unwrap_or_default().to_owned(),
                    d["digest"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        module_sha256: None,
    })
}

/// `oci://repo:tag` or `repo:tag` → (repo, tag).
pub fn split_reference(reference: &str) -> Result<(String, String)> {
    let r = reference.trim_start_matches("oci://");
    let r = r.split_once('@').map_or(r, |(a, _)| a);
    let (repo, tag) = r
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .with_context(|| format!("{reference}: no tag"))?;
    Ok((repo.to_owned(), tag.to_owned()))
}

fn out_dir() -> PathBuf {
    paths::target().join("package")
}

/// The wasm images of every module the shipped WasmPlugins (both sets) pull, from dist/
/// (`cargo xtask build` first).
pub fn wasm_images() -> Result<Vec<Image>> {
    let overlay = crate::wasmplugin::Overlay::local()?;
    let mut plugins = crate::wasmplugin::load_dir(&paths::wasmplugins())?;
    plugins.extend(crate::wasmplugin::load_dir(&paths::bundle_wasmplugins())?);
    let mut root_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &plugins {
        let ids = root_ids.entry(p.spec.url.clone()).or_default();
        if let Some(n) = &p.spec.plugin_name
            && !ids.contains(n)
        {
            ids.push(n.clone());
        }
    }
    let mut out = Vec::new();
    for (url, ids) in root_ids {
        let file = overlay
            .modules
            .get(&url)
            .with_context(|| format!("no module file for {url} in the overlay"))?;
        let module = std::fs::read(paths::root().join(file))
            .with_context(|| format!("{} (cargo xtask build)", file.display()))?;
        let (repository, tag) = split_reference(&url)?;
        let name = repository.rsplit('/').next().unwrap_or("module").to_owned();
        let config = json!({
            "type": "envoy_proxy",
            "abi_version": "v0.2.1",
            "config": {"root_ids": ids},
        });
        let mut image = write_layout(
            &out_dir().join("oci").join(&name),
            &repository,
            &tag,
            (WASM_CONFIG, serde_json::to_vec(&config)?),
            vec![(
                WASM_LAYER,
                module.clone(),
                json!({"org.opencontainers.image.title": "plugin.wasm"}),
            )],
        )?;
        image.module_sha256 = Some(hex(&module));
        out.push(image);
    }
    Ok(out)
}

/// A tar archive (ustar) with fixed owners and times, entries in the order given.
#[derive(Default)]
struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    fn header(&mut self, name: &str, mode: u32, uid: u32, size: u64, kind: u8) -> Result<()> {
        let mut h = [0u8; 512];
        let (prefix, base) = if name.len() > 100 {
            name.rsplit_once('/')
                .filter(|(p, b)| p.len() <= 155 && b.len() <= 100)
                .with_context(|| format!("tar: name too long: {name}"))?
        } else {
            ("", name)
        };
        let put = |h: &mut [u8; 512], at: usize, s: &[u8]| {
            for (i, b) in s.iter().enumerate() {
                if let Some(x) = h.get_mut(at + i) {
                    *x = *b;
                }
            }
        };
        put(&mut h, 0, base.as_bytes());
        put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
        put(&mut h, 108, format!("{uid:07o}\0").as_bytes());
        put(&mut h, 116, format!("{uid:07o}\0").as_bytes());
        put(&mut h, 124, format!("{size:011o}\0").as_bytes());
        put(&mut h, 136, b"00000000000\0");
        put(&mut h, 148, b"        ");
        put(&mut h, 156, &[kind]);
        put(&mut h, 257, b"ustar\0");
        put(&mut h, 263, b"00");
        put(&mut h, 345, prefix.as_bytes());
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&h);
        Ok(())
    }

    fn dir(&mut self, path: &str, mode: u32, uid: u32) -> Result<()> {
        self.header(&format!("{path}/"), mode, uid, 0, b'5')
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.header(path, mode, 0, data.len() as u64, b'0')?;
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

/// The shop's release binary, built so that its bytes do not depend on where the checkout is.
pub fn shop_release_binary() -> Result<PathBuf> {
    let target = out_dir().join("cargo");
    let root = paths::root();
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "-p", "meshwright-shop"])
        .env("CARGO_TARGET_DIR", &target)
        .env(
            "RUSTFLAGS",
            format!(
                "--remap-path-prefix={}=/meshwright --remap-path-prefix={cargo_home}=/cargo",
                root.display()
            ),
        )
        .current_dir(&root)
        .status()
        .context("cargo build --release -p meshwright-shop")?;
    if !status.success() {
        bail!("building the shop's release binary failed ({status})");
    }
    Ok(target.join("release/meshwright-shop"))
}

const SHOP_BIN: &str = "usr/local/bin/meshwright-shop";

/// The shop's image for the cluster (the workloads' `image:` in k8s/).
pub fn shop_image(repository: &str, tag: &str) -> Result<Image> {
    let bin = shop_release_binary()?;
    let mut files: BTreeMap<String, (u32, Vec<u8>)> = BTreeMap::new();
    files.insert(SHOP_BIN.into(), (0o755, std::fs::read(&bin)?));
    for lib in crate::mesh::compose::libraries(&bin)? {
        let at = lib.to_string_lossy().trim_start_matches('/').to_owned();
        files.insert(at, (0o755, std::fs::read(&lib)?));
    }
    files.insert(
        "etc/passwd".into(),
        (
            0o644,
            b"root:x:0:0:root:/:/sbin/nologin\nmeshwright:x:10001:10001:meshwright:/:/sbin/nologin\n"
                .to_vec(),
        ),
    );
    files.insert(
        "etc/group".into(),
        (0o644, b"root:x:0:\nmeshwright:x:10001:\n".to_vec()),
    );
    let mut tar = Tar::default();
    let mut dirs: Vec<String> = Vec::new();
    for path in files.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        tar.dir(d, 0o755, 0)?;
    }
    tar.dir("tmp", 0o1777, 0)?;
    tar.dir("data", 0o755, 10001)?;
    for (path, (mode, data)) in &files {
        tar.file(path, *mode, data)?;
    }
    let tar = tar.finish();
    let diff_id = format!("sha256:{}", hex(&tar));
    let gz = gzip(&tar)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "10001:10001",
            "Entrypoint": [format!("/{SHOP_BIN}")],
            "Env": ["SHOP_DATA_DIR=/data"],
            "ExposedPorts": {"8080/tcp": {}, "8081/tcp": {}, "8082/tcp": {}, "8083/tcp": {}},
            "Volumes": {"/data": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "cargo xtask package"}],
    });
    let name = repository.rsplit('/').next().unwrap_or("shop");
    write_layout(
        &out_dir().join("oci").join(name),
        repository,
        tag,
        (IMAGE_CONFIG, serde_json::to_vec(&config)?),
        vec![(TAR_GZIP_LAYER, gz, Value::Null)],
    )
}

/// gzip without a name or time in its header (`gzip -n`): the same input, the same bytes.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-n", "-9", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer"))??;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// The shop's image reference in the workloads of k8s/ (they all run one image).
pub fn shop_reference() -> Result<(String, String)> {
    let objects = crate::mesh::model::Objects::load()?;
    let image = objects
        .workloads
        .first()
        .map(|w| w.image.clone())
        .context("no workloads in k8s/")?;
    split_reference(&image)
}

/// Every image: the wasm modules' and the shop's.
pub fn all_images() -> Result<Vec<Image>> {
    let mut images = wasm_images()?;
    let (repo, tag) = shop_reference()?;
    images.push(shop_image(&repo, &tag)?);
    Ok(images)
}

/// Files whose pins `write_pins` manages.
fn pinned_files() -> Result<Vec<PathBuf>> {
    let mut files = crate::wasmplugin::plugin_files(&paths::wasmplugins())?;
    files.extend(crate::wasmplugin::plugin_files(
        &paths::bundle_wasmplugins(),
    )?);
    for f in std::fs::read_dir(crate::k8s::dir().join("app"))? {
        let p = f?.path();
        if p.extension().is_some_and(|e| e == "yaml") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// `text` with every WasmPlugin of a packaged module pinned (`sha256:` after its `url:`: the
/// image's manifest digest) and
/// every use of the shop's image pinned by digest (`image: repo:tag@sha256:…`).
pub fn pin(text: &str, images: &[Image]) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(url) = trimmed.strip_prefix("url: ")
            && let Some(img) = images
                .iter()
                .find(|i| url.trim() == format!("oci://{}:{}", i.repository, i.tag))
            && img.module_sha256.is_some()
        {
            // For oci:// modules istio-agent compares spec.sha256 with the image's manifest
            // digest (istio pkg/wasm: the checksum of an OCI image is its digest, not the
            // module's).
            let sha = img.digest.trim_start_matches("sha256:");
            out.push_str(line);
            out.push('\n');
            if lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("sha256: "))
            {
                lines.next();
            }
            out.push_str(&format!("{indent}sha256: {sha}\n"));
            continue;
        }
        if let Some(image) = trimmed.strip_prefix("image: ")
            && let Some(img) = images.iter().find(|i| {
                i.module_sha256.is_none()
                    && image
                        .trim()
                        .split('@')
                        .next()
                        .is_some_and(|r| r == format!("{}:{}", i.repository, i.tag))
            })
        {
            out.push_str(&format!(
                "{indent}image: {}:{}@{}\n",
                img.repository, img.tag, img.digest
            ));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes the pins into k8s/app/ and wasmplugins/; returns the files that changed.
pub fn write_pins(images: &[Image]) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for f in pinned_files()? {
        let text = std::fs::read_to_string(&f)?;
        let pinned = pin(&text, images);
        if pinned != text {
            std::fs::write(&f, pinned)?;
            changed.push(f);
        }
    }
    Ok(changed)
}

/// The files whose pins differ from `images` (empty: the manifests pin what was built).
pub fn stale_pins(images: &[Image]) -> Result<Vec<PathBuf>> {
    let mut stale = Vec::new();
    for f in pinned_files()? {
        let text = std::fs::read_to_string(&f)?;
        if pin(&text, images) != text {
            stale.push(f);
        }
    }
    Ok(stale)
}

/// A registry on loopback (Debian's `docker-registry`, the CNCF distribution), storage in a
/// temporary directory, for the push/pull test.
pub struct Registry {
    pub addr: String,
    _proc: crate::proc::Proc,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.addr)
    }
}

impl Registry {
    pub fn start() -> Result<Self> {
        install::ensure_apt(&["docker-registry", "skopeo"])?;
        let dir = tempfile::Builder::new()
            .prefix("meshwright-registry-")
            .tempdir()?;
        let port = crate::idp::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config);
        let mut proc =
            crate::proc::Proc::spawn("docker-registry", cmd, &dir.path().join("registry.log"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            if !proc.is_running() {
                bail!("{}", proc.exit_report(20));
            }
            if std::time::Instant::now() > deadline {
                bail!("the registry did not listen on {addr}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Self {
            addr,
            _proc: proc,
            _dir: dir,
        })
    }
}

/// `skopeo copy` of an image layout to `registry` (`host:port`, or a registry host), under its
/// repository path without the original host (`ghcr.io/meshwright/x` → `<registry>/meshwright/x`).
pub fn push(image: &Image, registry: &str, tls_verify: bool) -> Result<String> {
    install::ensure_apt(&["skopeo"])?;
    let path = image
        .repository
        .split_once('/')
        .map_or(image.repository.as_str(), |(_, p)| p);
    let dest = format!("docker://{registry}/{path}:{}", image.tag);
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests"])
        .arg(format!("--dest-tls-verify={tls_verify}"))
        .arg(format!("oci:{}:{}", image.layout.display(), image.tag))
        .arg(&dest)
        .output()
        .context("skopeo copy")?;
    if !out.status.success() {
        bail!(
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dest)
}

/// The crate and build target each image's binary comes from, and the file name
/// `cargo cyclonedx --describe binaries` gives its SBOM.
fn sbom_source(image: &Image) -> Result<(&'static str, &'static str, bool)> {
    let name = image.repository.rsplit('/').next().unwrap_or_default();
    Ok(match name {
        "fault" => (
            "filters/fault",
            "meshwright_fault_cdylib-rlib.cdx.json",
            true,
        ),
        "oauth2" => (
            "filters/oauth2",
            "meshwright_oauth2_cdylib-rlib.cdx.json",
            true,
        ),
        "retry-budget" => (
            "filters/retry",
            "meshwright_retry_cdylib-rlib.cdx.json",
            true,
        ),
        "ab" => ("filters/ab", "meshwright_ab_cdylib-rlib.cdx.json", true),
        "bundle" => (
            "filters/bundle",
            "meshwright_bundle_cdylib-rlib.cdx.json",
            true,
        ),
        "bundle-sidecar" => (
            "filters/bundle-sidecar",
            "meshwright_bundle_sidecar_cdylib.cdx.json",
            true,
        ),
        "shop" => ("shop", "meshwright-shop_bin.cdx.json", false),
        other => bail!("no SBOM source for the image {other}"),
    })
}

/// Removes the SBOM files cargo-cyclonedx writes next to every workspace member's Cargo.toml.
fn remove_generated_sboms() -> Result<()> {
    let root = paths::root();
    let mut dirs = vec![
        root.join("shop"),
        root.join("xtask"),
        root.join("tests"),
        root.join("bench"),
    ];
    for e in std::fs::read_dir(root.join("filters"))? {
        dirs.push(e?.path());
    }
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".cdx.json") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    Ok(())
}

/// A CycloneDX 1.5 SBOM (JSON) of every image, from cargo-cyclonedx: the crates that go into
/// the image's binary for its build target (wasm32-wasip1 for the modules, the host for the
/// shop), with versions, licences and Cargo.lock checksums; no dev- or build-dependencies.
/// Each names its image and digest (`metadata.properties`). Written to
/// target/package/sbom/<image>.cdx.json; returns the files.
pub fn sboms(images: &[Image]) -> Result<Vec<PathBuf>> {
    let bin = install::ensure_cargo_cyclonedx()?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let root = paths::root();
    let mut generated: BTreeMap<(String, bool), Value> = BTreeMap::new();
    for wasm in [true, false] {
        remove_generated_sboms()?;
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["cyclonedx", "--describe", "binaries", "--format", "json"])
            .args(["--spec-version", "1.5", "--no-build-deps", "-q"])
            .env("PATH", &path)
            .current_dir(&root);
        if wasm {
            cmd.args(["--target", "wasm32-wasip1"]);
        }
        let status = cmd.status().context("cargo cyclonedx")?;
        if !status.success() {
            remove_generated_sboms()?;
            bail!("cargo cyclonedx failed ({status})");
        }
        for image in images {
            let (dir, file, for_wasm) = sbom_source(image)?;
            if for_wasm != wasm {
                continue;
            }
            let f = root.join(dir).join(file);
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("{}: cargo cyclonedx wrote no SBOM", f.display()))?;
            generated.insert(
                (image.repository.clone(), wasm),
                serde_json::from_str(&text)?,
            );
        }
    }
    remove_generated_sboms()?;
    let dir = out_dir().join("sbom");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for image in images {
        let (_, _, wasm) = sbom_source(image)?;
        let mut bom = generated
            .remove(&(image.repository.clone(), wasm))
            .with_context(|| format!("no SBOM for {}", image.repository))?;
        bom["metadata"]["properties"] = json!([
            {"name": "meshwright:image", "value": format!("{}:{}", image.repository, image.tag)},
            {"name": "meshwright:image-digest", "value": image.digest},
            {"name": "meshwright:target", "value": if wasm { "wasm32-wasip1" } else { "host" }},
        ]);
        let name = image.repository.rsplit('/').next().unwrap_or("image");
        let file = dir.join(format!("{name}.cdx.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&bom)?)?;
        out.push(file);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("oci://ghcr.io/meshwright/fault:0.1.0").unwrap(),
            ("ghcr.io/meshwright/fault".into(), "0.1.0".into())
        );
        assert_eq!(
            split_reference("localhost:5000/a/b:1@sha256:00").unwrap(),
            ("localhost:5000/a/b".into(), "1".into())
        );
        assert!(split_reference("ghcr.io/x").is_err());
    }

    #[test]
    fn pins_are_written_after_the_url_and_into_the_image_and_replaced_on_change() {
        let wasm = Image {
            repository: "ghcr.io/meshwright/fault".into(),
            tag: "0.1.0".into(),
            layout: PathBuf::new(),
            digest: "sha256:aa".into(),
            config_media_type: WASM_CONFIG.into(),
            layers: vec![],
            module_sha256: Some("11".into()),
        };
        let shop = Image {
            repository: "ghcr.io/meshwright/shop".into(),
            tag: "0.1.0".into(),
            digest: "sha256:bb".into(),
            module_sha256: None,
            ..wasm.clone()
        };
        let text = "spec:\n  url: oci://ghcr.io/meshwright/fault:0.1.0\n  pluginName: fault\n        - name: store\n          image: ghcr.io/meshwright/shop:0.1.0\n";
        let once = pin(text, &[wasm.clone(), shop.clone()]);
        assert_eq!(
            once,
            "spec:\n  url: oci://ghcr.io/meshwright/fault:0.1.0\n  sha256: aa\n  pluginName: fault\n        - name: store\n          image: ghcr.io/meshwright/shop:0.1.0@sha256:bb\n"
        );
        assert_eq!(
            pin(&once, &[wasm.clone(), shop.clone()]),
            once,
            "idempotent"
        );
        let newer = Image {
            digest: "sha256:cc".into(),
            ..wasm
        };
        assert!(pin(&once, &[newer, shop]).contains("sha256: cc\n"));
    }

    #[test]
    fn a_tar_entry_is_a_512_byte_header_with_a_valid_checksum_and_padded_data() {
        let mut t = Tar::default();
        t.file("etc/passwd", 0o644, b"x").unwrap();
        let bytes = t.finish();
        assert_eq!(bytes.len(), 512 + 512 + 1024);
        let header = &bytes[..512];
        let stored = std::str::from_utf8(&header[148..154]).unwrap();
        let mut copy = header.to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
        assert_eq!(&header[257..263], b"ustar\0");
        assert_eq!(bytes[512], b'x');
    }
}

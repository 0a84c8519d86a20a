//! The images a cluster pulls: built by `cargo xtask package`'s code, their digests the ones
//! k8s/ and wasmplugins/ pin, pushed to a real registry (Debian's docker-registry) with skopeo
//! and read back with the media types Istio and Kubernetes expect; each with a CycloneDX SBOM.

use anyhow::{Context, Result, ensure};
use meshwright_testbed::package::{self, Image, Registry};
use serde_json::Value;
use std::process::Command;

fn skopeo(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .context("skopeo")?;
    ensure!(
        out.status.success(),
        "skopeo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Every (name, version) in Cargo.lock.
fn locked() -> Result<std::collections::BTreeSet<(String, String)>> {
    let lock = std::fs::read_to_string(meshwright_testbed::paths::root().join("Cargo.lock"))?;
    let mut out = std::collections::BTreeSet::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            out.insert((n, v.trim_matches('"').to_owned()));
        }
    }
    Ok(out)
}

/// Every image has an SBOM of exactly what its binary is built from. (Part of the one images
/// test: building the images again in a parallel test would rewrite the layouts it pushes.)
fn check_sboms(images: &[Image]) -> Result<()> {
    let files = package::sboms(images)?;
    assert_eq!(files.len(), images.len());
    let locked = locked()?;
    for (image, file) in images.iter().zip(&files) {
        let bom: Value = serde_json::from_slice(&std::fs::read(file)?)?;
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["specVersion"], "1.5");
        let props = bom["metadata"]["properties"].to_string();
        assert!(
            props.contains(&image.digest),
            "{}: names its image's digest",
            file.display()
        );
        let names: Vec<&str> = bom["components"]
            .as_array()
            .context("components")?
            .iter()
            .map(|c| {
                let (n, v) = (
                    c["name"].as_str().unwrap_or(""),
                    c["version"].as_str().unwrap_or(""),
                );
                assert!(
                    locked.contains(&(n.to_owned(), v.to_owned())),
                    "{}: {n} {v} is not in Cargo.lock",
                    file.display()
                );
                n
            })
            .collect();
        let has = |n: &str| names.contains(&n);
        assert!(
            !has("proptest") && !has("wasm-bindgen-test"),
            "{}: no dev-dependencies",
            file.display()
        );
        if image.module_sha256.is_some() {
            assert!(
                has("proxy-wasm") && !has("tokio"),
                "{}: a module's crates",
                file.display()
            );
        } else {
            assert!(
                has("axum") && has("rusqlite") && !has("proxy-wasm"),
                "the shop's crates"
            );
        }
    }
    Ok(())
}

#[test]
fn the_images_are_pinned_by_digest_pushed_and_pulled_back_intact() -> Result<()> {
    let images: Vec<Image> = package::all_images()?;
    assert_eq!(images.len(), 7, "six wasm modules and the shop");
    // The manifests pin exactly what is built now (the builds are reproducible).
    let stale = package::stale_pins(&images)?;
    assert!(
        stale.is_empty(),
        "run `cargo xtask package` and commit: these files pin other digests: {stale:?}"
    );

    let registry = Registry::start()?;
    for image in &images {
        let dest = package::push(image, &registry.addr, false)?;
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &dest])?;
        assert_eq!(
            sha256(&raw),
            image.digest,
            "{dest}: the registry serves our manifest"
        );
        let manifest: Value = serde_json::from_slice(&raw)?;
        assert_eq!(manifest["mediaType"], package::OCI_MANIFEST);
        let layers = manifest["layers"].as_array().context("layers")?;
        if image.module_sha256.is_some() {
            // Istio's "oci" wasm variant: this config type and exactly one layer, the module.
            assert_eq!(
                manifest["config"]["mediaType"],
                package::WASM_CONFIG,
                "{dest}"
            );
            assert_eq!(layers.len(), 1, "{dest}");
            assert_eq!(layers[0]["mediaType"], package::WASM_LAYER, "{dest}");
            assert_eq!(
                layers[0]["digest"]
                    .as_str()
                    .map(|d| d.trim_start_matches("sha256:")),
                image.module_sha256.as_deref(),
                "{dest}: the layer is the module"
            );
        } else {
            assert_eq!(manifest["config"]["mediaType"], package::IMAGE_CONFIG);
            assert_eq!(layers[0]["mediaType"], package::TAR_GZIP_LAYER);
            let config = skopeo(&["inspect", "--config", "--tls-verify=false", &dest])?;
            let config: Value = serde_json::from_slice(&config)?;
            assert_eq!(config["config"]["User"], "10001:10001", "non-root");
        }
        // Pulled back into a layout of its own: the same manifest and blobs.
        let pulled = tempfile::tempdir()?;
        let target = format!("oci:{}:{}", pulled.path().display(), image.tag);
        skopeo(&["copy", "--quiet", "--src-tls-verify=false", &dest, &target])?;
        let index: Value =
            serde_json::from_slice(&std::fs::read(pulled.path().join("index.json"))?)?;
        assert_eq!(
            index["manifests"][0]["digest"],
            image.digest.as_str(),
            "{dest}"
        );
        for (_, digest) in &image.layers {
            let blob = pulled
                .path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            assert_eq!(
                sha256(&std::fs::read(&blob)?),
                *digest,
                "{dest}: layer intact"
            );
        }
    }
    check_sboms(&images)
}

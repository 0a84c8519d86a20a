//! `cargo xtask build`: every filter to `dist/<name>.wasm` for wasm32-wasip1, its unused
//! proxy-wasm callbacks removed from the exports, optimised for size by binaryen's wasm-opt,
//! with its sha256 beside it (for `WasmPlugin.spec.sha256`).

use crate::{cargo, note, run};
use anyhow::{Context, Result, bail};
use meshwright_testbed::{install, paths};
use sha2::{Digest, Sha256};
use std::process::Command;

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
            "proxy_on_log",
            "proxy_on_tick",
            "proxy_on_http_call_response",
        ],
    },
    // The bundle without OAuth2, for sidecars: A/B, retry budget and fault (no HTTP calls).
    Module {
        name: "bundle-sidecar",
        package: "meshwright-bundle-sidecar",
        stem: "meshwright_bundle_sidecar",
        callbacks: &[
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_log",
            "proxy_on_tick",
        ],
    },
];

/// Packages built in a cargo invocation of their own: the bundle depends on the filters without
/// their `entrypoint` feature, and cargo unifies features across the packages of one
/// invocation — built with the filters, it would get their entry points too (a duplicate
/// `_initialize`). The sidecar bundle is the bundle without its `oauth2` feature: built with
/// the bundle, it would get that feature too.
const BUILT_ALONE: &[&str] = &["meshwright-bundle", "meshwright-bundle-sidecar"];

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
    crate::exports::remove(wasm, |name| {
        name.starts_with("proxy_on_")
            && !ALWAYS.contains(&name)
            && !module.callbacks.contains(&name)
    })
}

/// Builds every filter for wasm32-wasip1, optimises it with binaryen's wasm-opt, and writes
/// dist/<name>.wasm and dist/<name>.wasm.sha256.
pub fn build() -> Result<Vec<(String, u64)>> {
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
        let artifact = std::fs::read(&built)?;
        let out = dist.join(format!("{name}.wasm"));
        // wasm-opt takes most of a build that cargo found up to date: skip it when neither the
        // module cargo built nor the one in dist/ changed since the last run.
        let stamp = built.with_extension("dist-input.sha256");
        let input_digest = hex(&Sha256::digest(&artifact));
        let current = std::fs::read(&out).ok().map(|b| hex(&Sha256::digest(&b)));
        let recorded = std::fs::read_to_string(&stamp).ok();
        if let (Some(cur), Some(rec)) = (&current, &recorded)
            && rec.trim() == format!("{input_digest} {cur}")
        {
            let size = std::fs::metadata(&out)?.len();
            note(&format!(
                "    dist/{name}.wasm  {size} bytes  sha256 {cur} (unchanged)"
            ));
            sizes.push((name.to_owned(), size));
            continue;
        }
        let (pruned, removed) = prune(&artifact, module)
            .with_context(|| format!("reading the exports of {}", built.display()))?;
        let staged = paths::root()
            .join("target/wasm32-wasip1")
            .join(PROFILE)
            .join(format!("{}.pruned.wasm", module.stem));
        std::fs::write(&staged, pruned)?;
        note(&format!(
            "    {name}: answers {} ({} unused callbacks not exported)",
            module.callbacks.join(" "),
            removed.len()
        ));
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
        let hex = hex(&Sha256::digest(&bytes));
        std::fs::write(
            dist.join(format!("{name}.wasm.sha256")),
            format!("{hex}  {name}.wasm\n"),
        )?;
        std::fs::write(&stamp, format!("{input_digest} {hex}"))?;
        note(&format!(
            "    dist/{name}.wasm  {} bytes  sha256 {hex}",
            bytes.len()
        ));
        sizes.push((name.to_owned(), bytes.len() as u64));
    }
    Ok(sizes)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

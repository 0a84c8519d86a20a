//! The benchmark at a tiny request count, so it cannot rot: every variant starts in a real
//! Envoy, passes its checks on every request, and yields numbers; the result files are written.
//! No timing is asserted (timings are noisy; they are what `cargo xtask bench` reports).
//!
//! Needs `cargo xtask build` first (dist/*.wasm), like the Envoy integration tests.

use meshwright_bench::report::Status;
use meshwright_bench::variants::Group;
use meshwright_bench::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_runs_checked_in_a_real_envoy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let report = run(&Options::smoke(dir.path().to_path_buf())).await?;

    let failed: Vec<String> = report
        .failed()
        .iter()
        .map(|v| format!("{}: {}", v.id, v.error.as_deref().unwrap_or("no samples")))
        .collect();
    assert!(failed.is_empty(), "failed variants:\n{}", failed.join("\n"));
    for id in [
        "bare-session",
        "bare-envoy-cookies",
        "bare-bearer",
        "bare-sidecar",
        "floor",
        "oauth2",
        "ab",
        "ab-like-lua",
        "fault",
        "retry-client",
        "retry-client-authority",
        "retry-server",
        "gateway-set",
        "sidecar-set",
        "all-four",
        "envoy-oauth2",
        "envoy-jwt-authn",
        "envoy-jwt-authn-cache",
        "envoy-lua-ab",
        "envoy-fault",
    ] {
        let v = report
            .variant(id)
            .unwrap_or_else(|| panic!("variant {id} missing"));
        assert_eq!(v.status, Status::Ok);
        assert_eq!(v.rounds.len(), 1, "{id}");
        assert!(!v.checks.is_empty());
        if v.group != Group::Baseline {
            assert!(v.added_us.is_some(), "{id} has no added cost");
            assert!(!v.filters.is_empty(), "{id} has no filters");
        }
    }
    // Only the bundle may be skipped, and only while its module or WasmPlugins are absent.
    for s in &report.skipped {
        assert!(s.id.starts_with("bundle"), "{} skipped: {}", s.id, s.reason);
    }
    let bundle_built = meshwright_testbed::paths::module("bundle").exists();
    if bundle_built {
        assert!(
            report.variants.iter().any(|v| v.group == Group::Bundle),
            "dist/bundle.wasm exists but no bundle variant ran: {:?}",
            report.skipped
        );
    }
    for f in &report.footprint {
        assert!(f.error.is_none(), "{}: {:?}", f.id, f.error);
        assert!(f.rss_mib.is_some() && f.ready_ms.is_some());
    }
    let contention: Vec<&str> = report.contention.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(contention, ["retry-client", "retry-server"]);
    for c in &report.contention {
        assert!(c.error.is_none(), "{}: {:?}", c.id, c.error);
        assert!(
            c.cas_conflicts.is_some() && c.state_errors.is_some(),
            "{c:?}"
        );
    }
    assert!(
        report
            .modules
            .iter()
            .any(|m| m.name == "oauth2" && m.gzip_bytes > 0)
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("latest.json"))?)?;
    assert_eq!(json["kind"], "smoke");
    let md = std::fs::read_to_string(dir.path().join("latest.md"))?;
    for v in &report.variants {
        assert!(md.contains(&v.name), "{} not in latest.md", v.id);
    }
    let svg = std::fs::read_to_string(dir.path().join("latest.svg"))?;
    assert!(svg.starts_with("<svg") && svg.contains("<title>"));
    Ok(())
}

/// `--instructions` at a tiny count: the floor and its bare Envoy start under callgrind, are
/// counted around checked requests, and the comparison is computed (no count is asserted
/// beyond being there and positive: the figures are what the full mode reports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instructions_are_counted_under_callgrind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = Options::smoke(dir.path().to_path_buf());
    opts.only = vec!["floor".into()];
    let report = meshwright_bench::instructions::run(&opts).await?;
    assert!(report.failed().is_empty(), "{:?}", report.failed());
    let ids: Vec<&str> = report.variants.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["bare-sidecar", "floor"]);
    let floor = &report.variants[1];
    assert!(floor.per_request.is_some_and(|n| n > 0.0));
    assert!(floor.added.is_some_and(|n| n > 0.0), "{floor:?}");
    let md = std::fs::read_to_string(dir.path().join("instructions.md"))?;
    assert!(md.contains(&floor.name));
    Ok(())
}

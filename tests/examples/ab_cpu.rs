//! One-off measurement (not a test): Envoy CPU µs per request added by the A/B filter, side by side
//! with an Envoy Lua filter doing the same hashing and header work, until the bench/ crate exists.
//!
//! Method (as in shared/notes/platform-facts.md): one Envoy per variant, 1 worker, HTTP/1.1,
//! a `direct_response` route; the same request to each (JWT, a 3-cookie header, baggage), sent by
//! h2load (Debian nghttp2-client) over 4 keep-alive connections; Envoy's CPU time (user + system,
//! /proc/<pid>/stat) over a fixed number of requests; rounds interleaved across the variants;
//! medians reported.
//!
//!     cargo xtask build && cargo run -p meshwright-testbed --example ab_cpu [-- REQUESTS ROUNDS]

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use meshwright_ab::AbConfig;
use meshwright_ab::bucket::choose;
use meshwright_ab::sticky::{Entry, encode};
use meshwright_testbed::envoy::{Envoy, Options};
use meshwright_testbed::install;
use meshwright_testbed::render::{Bootstrap, Listener, Route};
use meshwright_testbed::wasmplugin::{Overlay, WasmPlugin, shipped};
use serde_json::{Value, json};
use std::process::Command;

const PATH: &str = "/services/product/api/products";
const UID: &str = "u-1234567890";
const SUB: &str = "user-4711";

/// The Lua equivalent of the filter in `growthbook_v2` mode with a cookie identity: read the
/// `ab_uid` cookie, GrowthBook v2 hash (`fnv1a32(tostring(fnv1a32(seed .. id))) % 10000`), pick
/// v1/v2 at 90/10, overwrite `x-ab-product`, replace the `ab.product` baggage member.
const LUA: &str = r#"
local bit = require("bit")
local function fnv(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(h + bit.lshift(h, 1) + bit.lshift(h, 4) + bit.lshift(h, 7)
                    + bit.lshift(h, 8) + bit.lshift(h, 24))
  end
  return h % 4294967296
end
function envoy_on_request(handle)
  local headers = handle:headers()
  local cookie = headers:get("cookie")
  local uid = cookie and cookie:match("ab_uid=([^;]+)")
  if uid == nil then
    headers:remove("x-ab-product")
    return
  end
  local p = fnv(string.format("%d", fnv("product:v1" .. uid))) % 10000
  local variant = "v2"
  if p < 9000 then variant = "v1" end
  headers:replace("x-ab-product", variant)
  local member = "ab.product=" .. variant
  local baggage = headers:get("baggage")
  if baggage then
    baggage = baggage:gsub("%s*ab%.product%s*=[^,]*,?", "")
    if #baggage > 0 then member = baggage .. "," .. member end
  end
  headers:replace("baggage", member)
end
"#;

fn bearer(sub: &str) -> String {
    let p =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}"}}"#));
    format!("Bearer eyJhbGciOiJSUzI1NiJ9.{p}.c2ln")
}

/// The shipped gateway plugin, and the same module configured to do exactly the Lua's work.
fn plugins() -> Result<(WasmPlugin, WasmPlugin)> {
    let shipped = shipped("ab")?;
    let same_as_lua = shipped.clone().with_plugin_config(json!({
        "identity": [{"cookie": "ab_uid"}],
        "experiments": [{"name": "product", "header": "x-ab-product", "salt": "product",
            "hash": "growthbook_v2",
            "variants": [{"name": "v1", "weight": 9000}, {"name": "v2", "weight": 1000}]}]
    }));
    Ok((shipped, same_as_lua))
}

fn bootstrap(filters: Vec<Value>) -> Value {
    let mut l = Listener::new("main").route(Route::direct("/", 200, "ok"));
    for f in filters {
        l = l.filter(f);
    }
    Bootstrap::new().listener(l).to_json()
}

fn lua_filter() -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": LUA},
        }
    })
}

/// Runs h2load: `n` requests over 4 HTTP/1.1 connections.
fn h2load(envoy: &Envoy, n: u64, headers: &[(String, String)]) -> Result<()> {
    let mut cmd = Command::new("h2load");
    cmd.args(["--h1", "-c", "4", "-t", "1", "-n"])
        .arg(n.to_string());
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://{}{PATH}", envoy.listener("main")));
    let out = cmd.output().context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success()
        || !text.contains(&format!("{n} succeeded"))
        || !text.contains(&format!("status codes: {n} 2xx"))
    {
        bail!("h2load did not get {n} 2xx:\n{text}");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().map_or(Ok(100_000), |a| a.parse())?;
    let rounds: usize = args.get(1).map_or(Ok(5), |a| a.parse())?;
    install::ensure_apt(&["nghttp2-client"])?;
    let overlay = Overlay::local()?;
    let (shipped, same_as_lua) = plugins()?;

    // A returning logged-in user: JWT, the shipped sticky cookie, an anonymous id, the uid the
    // Lua reads, and a baggage header.
    let key = overlay.host_env["MESHWRIGHT_AB_SIGNING_KEY"].clone();
    let cfg = AbConfig::from_json(shipped.plugin_config().to_string().as_bytes())?;
    let e = &cfg.experiments[0];
    let variant = choose(e, SUB).map_or("v1", |i| e.variants[i].name.as_str());
    let sticky = encode(
        key.as_bytes(),
        &[Entry {
            experiment: e.name.clone(),
            version: e.version,
            variant: variant.to_owned(),
        }],
    );
    let headers = vec![
        ("authorization".to_owned(), bearer(SUB)),
        (
            "cookie".to_owned(),
            format!("theme=dark; ab_uid={UID}; mw_ab={sticky}"),
        ),
        ("baggage".to_owned(), "tenant=acme".to_owned()),
    ];

    let options = Options {
        concurrency: 1,
        env: overlay.host_env.clone(),
        ..Options::default()
    };
    let floor = same_as_lua
        .clone()
        .with_plugin_config(json!({"identity": [], "baggage": false}));
    let variants: Vec<(&str, Value)> = vec![
        ("bare Envoy", bootstrap(vec![])),
        (
            "ab wasm, nothing to do (proxy-wasm callbacks only)",
            bootstrap(vec![floor.to_envoy_filter(&overlay)?]),
        ),
        (
            "Lua filter, same hashing and header work",
            bootstrap(vec![lua_filter()]),
        ),
        (
            "ab wasm, configured as the Lua (cookie id, GrowthBook v2)",
            bootstrap(vec![same_as_lua.to_envoy_filter(&overlay)?]),
        ),
        (
            "ab wasm, shipped gateway config (JWT sub, sticky cookie HMAC, baggage)",
            bootstrap(vec![shipped.to_envoy_filter(&overlay)?]),
        ),
    ];
    let mut envoys = Vec::new();
    for (name, config) in &variants {
        let envoy = Envoy::start(config, &options)
            .await
            .with_context(|| name.to_string())?;
        h2load(&envoy, n / 10, &headers)?; // warm up
        envoys.push(envoy);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (i, envoy) in envoys.iter().enumerate() {
            let before = envoy.cpu_time()?;
            h2load(envoy, n, &headers)?;
            let used = envoy.cpu_time()? - before;
            let us = used.as_secs_f64() * 1e6 / n as f64;
            samples[i].push(us);
            eprintln!("round {round}: {:<70} {us:6.2} µs/req", variants[i].0);
        }
    }
    let bare = median(samples[0].clone());
    println!(
        "\nEnvoy {} · 1 worker · HTTP/1.1 · direct_response · {rounds} interleaved rounds × {n} requests · medians",
        install::envoy_version()
    );
    println!("| variant | µs CPU/req | added | rounds |");
    println!("|---|---|---|---|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let m = median(samples[i].clone());
        let all: Vec<String> = samples[i].iter().map(|s| format!("{s:.2}")).collect();
        println!("| {name} | {m:.2} | {:+.2} | {} |", m - bare, all.join(" "));
    }
    if let Ok(meta) = std::fs::metadata(meshwright_testbed::paths::module("ab")) {
        println!("\ndist/ab.wasm: {} bytes", meta.len());
    }
    Ok(())
}

//! The real binary: exit codes, SIGTERM drains and exits 0, and a committed order survives
//! SIGKILL.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use meshwright_shop::Variant;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_meshwright-shop");

struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

fn command(service: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(service)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

impl Proc {
    fn spawn(service: &str, env: &[(&str, &str)]) -> Proc {
        let mut child = command(service, env).spawn().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        // Drains stdout for the whole life of the process, so that logging never blocks.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The base URL from the "listening" line.
    async fn url(&self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(e) = self.events().iter().find(|e| e["msg"] == "listening") {
                return format!("http://{}", e["addr"].as_str().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "no listening line: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .expect("the process did not exit in time")
            .unwrap()
    }
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable() {
    let out = command("product", &[("SHOP_VARIANT", "v3")])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid SHOP_VARIANT"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let out = command("store", &[("SHOP_LISTEN", "everywhere")])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHOP_LISTEN"));
    let out = command("warehouse", &[]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).env_clear().output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = command("--help", &[]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("store|product|invoice|notification"));
}

#[tokio::test]
async fn sigterm_drains_and_exits_0() {
    let dir = tmp();
    let data = dir.path().to_str().unwrap();
    let mut p = Proc::spawn(
        "product",
        &[
            ("SHOP_LISTEN", "127.0.0.1:0"),
            ("SHOP_DATA_DIR", data),
            ("SHOP_VARIANT", "v2"),
        ],
    );
    let url = p.url().await;
    let r = get(&format!("{url}/api/products/1"), HeaderMap::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-shop-instance"), Some("product-v2"));
    let pid = p.child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = p.wait().await;
    assert_eq!(status.code(), Some(0));
    // The drain finishes and the last line is written before exit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let msgs: Vec<String> = p
        .events()
        .iter()
        .map(|e| e["msg"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(msgs.contains(&"shutting down".to_owned()), "{msgs:?}");
    assert!(msgs.contains(&"stopped".to_owned()), "{msgs:?}");
    assert!(dir.path().join("product-v2.db").exists());
}

#[tokio::test]
async fn an_order_answered_201_survives_sigkill() {
    let dp = tmp();
    let product = product(&dp, Variant::V1).await;
    let ds = tmp();
    let invoice = closed_url().await;
    let product_url = product.url();
    let env = [
        ("SHOP_LISTEN", "127.0.0.1:0"),
        ("SHOP_DATA_DIR", ds.path().to_str().unwrap()),
        ("SHOP_PRODUCT_URL", product_url.as_str()),
        ("SHOP_INVOICE_URL", invoice.as_str()),
        ("SHOP_OUTBOX_INTERVAL_MS", "50"),
        ("SHOP_OUTBOX_MAX_BACKOFF_MS", "200"),
    ];
    let mut first = Proc::spawn("store", &env);
    let url = first.url().await;
    let r = post_json(
        &format!("{url}/api/product-orders"),
        user("u-ada", "Ada"),
        r#"{"items":[{"productId":4,"quantity":3}]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    // SIGKILL right after the answer: no shutdown code runs.
    first.child.start_kill().unwrap();
    let status = first.wait().await;
    assert_eq!(status.code(), None, "killed by a signal");
    let placed = json(&r);
    let id = placed["id"].as_i64().unwrap();

    let second = Proc::spawn("store", &env);
    let url = second.url().await;
    let found = get(
        &format!("{url}/api/product-orders/{id}"),
        user("u-ada", "Ada"),
    )
    .await;
    assert_eq!(found.status, 200);
    let order = json(&found);
    assert_eq!(order["code"], placed["code"]);
    assert_eq!(order["totalCents"], 3 * 1350);
    assert_eq!(order["items"][0]["name"], "Guatemala Antigua");
    assert_eq!(
        order["invoiceStatus"], "PENDING",
        "its outbox row survived too"
    );
    let m = prometheus(&url).await;
    assert_eq!(
        metric(&m, r#"shop_outbox_pending{service="store"}"#),
        Some(1.0)
    );
    drop(second);
    product.shutdown().await.unwrap();
}

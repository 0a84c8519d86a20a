//! Helpers: services on ephemeral ports, a small HTTP client, users, polling with deadlines,
//! and stub upstreams (a switchable proxy, a fixed catalogue).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use meshwright_shop::client::{Client, Reply};
use meshwright_shop::config::BaseUrl;
use meshwright_shop::{Config, LogBuffer, LogSink, Server, Service, Variant};
use serde_json::Value;
use tempfile::TempDir;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh data directory.
pub fn tmp() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// A test configuration: loopback port 0, logs in memory, a fast outbox.
pub fn config(service: Service, dir: &TempDir) -> (Config, LogBuffer) {
    let logs = LogBuffer::default();
    let mut c = Config::local(service, dir.path());
    c.log = LogSink::Memory(logs.clone());
    c.outbox_interval = Duration::from_millis(50);
    c.outbox_max_backoff = Duration::from_millis(300);
    c.shutdown_grace = Duration::from_secs(5);
    (c, logs)
}

pub fn url(text: &str) -> BaseUrl {
    BaseUrl::parse(text).unwrap()
}

/// An address nothing listens on.
pub async fn closed_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

pub async fn start(service: Service, config: Config) -> Server {
    Server::start(service, config).await.unwrap()
}

pub async fn product(dir: &TempDir, variant: Variant) -> Server {
    let (c, _) = config(Service::Product, dir);
    start(Service::Product, c.with_variant(variant)).await
}

/// A store in front of `product` and `invoice`.
pub async fn store(dir: &TempDir, product: &str, invoice: &str) -> Server {
    let (mut c, _) = config(Service::Store, dir);
    c.product_url = url(product);
    c.invoice_url = url(invoice);
    start(Service::Store, c).await
}

/// A store with a real product service of `variant`; invoice is not running (orders stay
/// PENDING). Tests may stop the product service to see the store degrade.
pub struct Shop {
    pub store: Server,
    pub product: Option<Server>,
    _dirs: (TempDir, TempDir),
}

impl Shop {
    pub async fn start(variant: Variant) -> Shop {
        let (dp, ds) = (tmp(), tmp());
        let product = product(&dp, variant).await;
        let store = store(&ds, &product.url(), &closed_url().await).await;
        Shop {
            store,
            product: Some(product),
            _dirs: (dp, ds),
        }
    }

    /// The store's URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.store.url())
    }

    pub async fn stop(self) {
        self.store.shutdown().await.unwrap();
        if let Some(p) = self.product {
            p.shutdown().await.unwrap();
        }
    }
}

/// Headers of a signed-in user, as the sidecar passes them.
pub fn user(sub: &str, name: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer test.{sub}")).unwrap(),
    );
    h.insert("x-jwt-sub", HeaderValue::from_str(sub).unwrap());
    h.insert(
        "x-jwt-email",
        HeaderValue::from_str(&format!("{sub}@example.com")).unwrap(),
    );
    h.insert("x-jwt-name", HeaderValue::from_str(name).unwrap());
    h
}

/// The usual shopper.
pub fn ada() -> HeaderMap {
    user("u-ada", "Ada Lovelace")
}

pub fn with(mut h: HeaderMap, name: &'static str, value: &str) -> HeaderMap {
    h.insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(value).unwrap(),
    );
    h
}

pub async fn get(url: &str, headers: HeaderMap) -> Reply {
    Client::new(None).get(url, headers, TIMEOUT).await.unwrap()
}

pub async fn send(
    method: Method,
    url: &str,
    mut headers: HeaderMap,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    if let Some(ct) = content_type {
        headers.insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    Client::new(None)
        .send(method, url, headers, Bytes::from(body.to_owned()), TIMEOUT)
        .await
        .unwrap()
}

pub async fn post_json(url: &str, headers: HeaderMap, body: &str) -> Reply {
    send(Method::POST, url, headers, Some("application/json"), body).await
}

pub async fn post_form(url: &str, headers: HeaderMap, body: &str) -> Reply {
    send(
        Method::POST,
        url,
        headers,
        Some("application/x-www-form-urlencoded"),
        body,
    )
    .await
}

/// The text of `/management/prometheus` of the service at `base`.
pub async fn prometheus(base: &str) -> String {
    text(&get(&format!("{base}/management/prometheus"), HeaderMap::new()).await)
}

pub fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(reply)))
}

pub fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Asserts an RFC 9457 problem with this status.
pub fn assert_problem(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status.as_u16(), status, "{}", text(reply));
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{}",
        text(reply)
    );
    let body = json(reply);
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string());
    assert!(body["detail"].is_string());
    body
}

/// Polls `probe` until it returns `Some`, for at most `TIMEOUT`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stand-in for an upstream's sidecar: down (503), rejecting (400), or up, when it forwards
/// to `target` the way the mesh would: it "verifies" the test token (`Bearer test.<sub>`) and
/// sets the claim headers from it, dropping any claim headers the caller sent. It counts the
/// requests it saw.
#[derive(Clone)]
pub struct Switch {
    mode: Arc<AtomicU8>,
    pub seen: Arc<AtomicUsize>,
    target: Arc<std::sync::Mutex<Option<String>>>,
    pub url: String,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

const DOWN: u8 = 0;
const UP: u8 = 1;
const BAD_REQUEST: u8 = 2;

impl Switch {
    /// Starts down.
    pub async fn start() -> Switch {
        let mode = Arc::new(AtomicU8::new(DOWN));
        let seen = Arc::new(AtomicUsize::new(0));
        let target = Arc::new(std::sync::Mutex::new(None));
        let state = (Arc::clone(&mode), Arc::clone(&seen), Arc::clone(&target));
        let app = Router::new().fallback(switch_handler).with_state(state);
        let (addr, stop) = serve_stub(app).await;
        Switch {
            mode,
            seen,
            target,
            url: format!("http://{addr}"),
            _stop: Arc::new(stop),
        }
    }

    /// Starts up, in front of `target`.
    pub async fn sidecar(target: &str) -> Switch {
        let s = Switch::start().await;
        s.up(target);
        s
    }

    pub fn rejecting(&self) {
        self.mode.store(BAD_REQUEST, Ordering::SeqCst);
    }

    pub fn up(&self, target: &str) {
        *self.target.lock().unwrap() = Some(target.to_owned());
        self.mode.store(UP, Ordering::SeqCst);
    }
}

type SwitchState = (
    Arc<AtomicU8>,
    Arc<AtomicUsize>,
    Arc<std::sync::Mutex<Option<String>>>,
);

async fn switch_handler(State((mode, seen, target)): State<SwitchState>, req: Request) -> Response {
    seen.fetch_add(1, Ordering::SeqCst);
    match mode.load(Ordering::SeqCst) {
        UP => {}
        BAD_REQUEST => {
            return (StatusCode::BAD_REQUEST, "{\"detail\":\"no\"}").into_response();
        }
        _ => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "0")],
                "upstream connect error",
            )
                .into_response();
        }
    }
    let Some(target) = target.lock().unwrap().clone() else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    forward(&target, req).await
}

/// Forwards like a sidecar: claim headers from the test token, the rest as sent.
async fn forward(target: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut headers = parts.headers.clone();
    headers.remove("host");
    for claim in ["x-jwt-sub", "x-jwt-email", "x-jwt-name"] {
        headers.remove(claim);
    }
    let sub = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer test."))
        .map(str::to_owned);
    if let Some(sub) = sub {
        headers.insert("x-jwt-sub", HeaderValue::from_str(&sub).unwrap());
        headers.insert(
            "x-jwt-email",
            HeaderValue::from_str(&format!("{sub}@example.com")).unwrap(),
        );
    }
    let reply = Client::new(None)
        .send(
            parts.method,
            &format!("{target}{path}"),
            headers,
            body,
            TIMEOUT,
        )
        .await;
    match reply {
        Ok(r) => {
            let mut response = (r.status, r.body).into_response();
            for (k, v) in &r.headers {
                if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                    response.headers_mut().insert(k.clone(), v.clone());
                }
            }
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// A stand-in for a sidecar's outbound listener (`SHOP_MESH_OUTBOUND`): routes by the `Host`
/// header to the registered targets, recording the hosts it saw.
pub struct MeshOutbound {
    pub addr: SocketAddr,
    pub hosts: Arc<std::sync::Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Routes = (
    Arc<Vec<(String, String)>>,
    Arc<std::sync::Mutex<Vec<String>>>,
);

impl MeshOutbound {
    pub async fn start(routes: Vec<(String, String)>) -> MeshOutbound {
        let hosts: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let state: Routes = (Arc::new(routes), Arc::clone(&hosts));
        let app = Router::new().fallback(mesh_handler).with_state(state);
        let (addr, stop) = serve_stub(app).await;
        MeshOutbound {
            addr,
            hosts,
            _stop: stop,
        }
    }
}

async fn mesh_handler(State((routes, hosts)): State<Routes>, req: Request) -> Response {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    hosts.lock().unwrap().push(host.clone());
    match routes.iter().find(|(h, _)| *h == host) {
        Some((_, target)) => forward(target, req).await,
        None => (StatusCode::NOT_FOUND, "no route (NR)").into_response(),
    }
}

/// Serves a stub router on an ephemeral port until the sender is dropped.
pub async fn serve_stub(app: Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    (addr, tx)
}

/// The Prometheus value of a series whose line starts with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The number in a `Location: /api/…/{id}` or `/orders/{id}` header.
pub fn location_id(reply: &Reply) -> i64 {
    reply
        .header("location")
        .and_then(|l| l.rsplit('/').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in location: {:?}", reply.header("location")))
}

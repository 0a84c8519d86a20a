//! Real upstream servers for the local Envoy: HTTP/1.1 and HTTP/2 (h2c) on 127.0.0.1, an
//! ephemeral port each, with a behaviour per test (echo, fixed status, flaky, gRPC).
//!
//! The default behaviour echoes the request as JSON —
//! `{"upstream": NAME, "method": ..., "path": ..., "headers": {name: value}}` — so tests can see
//! what the proxy forwarded. Every request is counted.

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The values that are not UTF-8, as they came (`headers` holds them lossily).
    pub raw: Vec<(String, Vec<u8>)>,
    /// 1-based index of this request at this upstream.
    pub n: u64,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_grpc(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc"))
    }
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Trailers (gRPC status travels here).
    pub trailers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            trailers: Vec::new(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(value.to_string()),
            ..Self::status(status)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A successful unary gRPC response carrying `message` (already serialised).
    pub fn grpc_ok(message: &[u8]) -> Self {
        let mut framed = Vec::with_capacity(5 + message.len());
        framed.push(0);
        framed.extend_from_slice(
            &u32::try_from(message.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        framed.extend_from_slice(message);
        Self {
            status: 200,
            headers: vec![("content-type".into(), "application/grpc".into())],
            body: Bytes::from(framed),
            trailers: vec![("grpc-status".into(), "0".into())],
        }
    }

    /// The echo reply: the request as JSON.
    pub fn echo(name: &str, seen: &Seen) -> Self {
        if seen.is_grpc() {
            return Self::grpc_ok(b"");
        }
        let headers: serde_json::Map<String, serde_json::Value> = seen
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        // Values that are not UTF-8, hex-encoded: byte-exact checks.
        let raw: serde_json::Map<String, serde_json::Value> = seen
            .raw
            .iter()
            .map(|(k, v)| {
                let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
                (k.clone(), serde_json::Value::String(hex))
            })
            .collect();
        Self::json(
            200,
            &serde_json::json!({
                "upstream": name, "method": seen.method, "path": seen.path, "headers": headers,
                "raw_hex": raw,
            }),
        )
    }
}

pub type Behaviour = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({} at {})", self.name, self.addr)
    }
}

impl Upstream {
    /// An echo server.
    pub async fn echo(name: &str) -> Result<Self> {
        let owned = name.to_owned();
        Self::start(name, Arc::new(move |seen: &Seen| Reply::echo(&owned, seen))).await
    }

    /// A server answering with `behaviour`.
    pub async fn start(name: &str, behaviour: Behaviour) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(listener, behaviour, Arc::clone(&hits)));
        Ok(Self {
            name: name.to_owned(),
            addr,
            hits,
            task,
        })
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn reset_hits(&self) {
        self.hits.store(0, Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, behaviour: Behaviour, hits: Arc<AtomicU64>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let behaviour = Arc::clone(&behaviour);
        let hits = Arc::clone(&hits);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let behaviour = Arc::clone(&behaviour);
                let hits = Arc::clone(&hits);
                async move { Ok::<_, Infallible>(handle(req, &behaviour, &hits).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(req: Request<Incoming>, behaviour: &Behaviour, hits: &AtomicU64) -> Response<Body> {
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), ToString::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        raw: parts
            .headers
            .iter()
            .filter(|(_, v)| std::str::from_utf8(v.as_bytes()).is_err())
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        n,
    };
    let reply = behaviour(&seen);
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    let body: Body = if reply.trailers.is_empty() {
        Full::new(reply.body).boxed()
    } else {
        let mut trailers = HeaderMap::new();
        for (k, v) in &reply.trailers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                trailers.insert(k, v);
            }
        }
        Frames(vec![Frame::data(reply.body), Frame::trailers(trailers)].into()).boxed()
    };
    resp.body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// A body made of a fixed list of frames (data, then trailers).
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

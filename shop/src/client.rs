//! Outbound HTTP for every service: calls to other services, through the mesh.
//!
//! With `SHOP_MESH_OUTBOUND` set, every call connects to that one address (a sidecar's outbound
//! listener) and keeps the target URL's authority as `Host` and its path as the request target,
//! so the sidecar routes by virtual host exactly as it would for captured traffic. Without it,
//! the call connects to the URL's host:port (in Kubernetes, iptables hands that to the sidecar).
//!
//! Each call opens its own HTTP/1.1 connection and has one deadline covering connect, request
//! and the whole body. No pool: traffic is light, the sidecar keeps its own upstream pool, and a
//! fresh connection can never be a stale one the peer already closed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

/// Headers copied from a user's request onto the calls made while serving it: the token (the
/// next sidecar verifies it again), tracing context, the request id, and the mesh's fault-drill
/// header. Nothing else: no cookies, no claim headers (the next sidecar sets its own).
pub const PROPAGATED: [&str; 11] = [
    "authorization",
    "baggage",
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-meshwright-drill",
];

/// The most a response body may be.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Product calls made while serving a page or an order.
pub const PRODUCT_TIMEOUT: Duration = Duration::from_secs(5);
/// Invoice reads for the order page: short, the page degrades instead of waiting.
pub const INVOICE_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Outbox deliveries.
pub const OUTBOX_TIMEOUT: Duration = Duration::from_secs(5);

/// The propagated subset of `incoming`.
pub fn propagate(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PROPAGATED {
        for value in incoming.get_all(name) {
            out.append(HeaderName::from_static(name), value.clone());
        }
    }
    out
}

/// Why a call produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    InvalidUrl(String),
    Connect(String),
    Protocol(String),
    Timeout(Duration),
    TooLarge,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            Self::Connect(m) => write!(f, "connection failed: {m}"),
            Self::Protocol(m) => write!(f, "HTTP error: {m}"),
            Self::Timeout(d) => write!(f, "no response within {} ms", d.as_millis()),
            Self::TooLarge => write!(f, "response body larger than {MAX_RESPONSE_BYTES} bytes"),
        }
    }
}

impl std::error::Error for CallError {}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("unexpected response body: {e}"))
    }
}

/// Where a call connects and what it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to open the TCP connection to.
    pub connect: String,
    /// The `Host` header: the URL's authority.
    pub host: String,
    /// The request target: the URL's path and query.
    pub path_and_query: String,
}

/// Resolves a URL to a [`Target`], honouring the mesh outbound override.
pub fn target(url: &str, mesh_outbound: Option<&str>) -> Result<Target, CallError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| CallError::InvalidUrl(format!("{url}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(CallError::InvalidUrl(format!(
            "{url}: only http:// is supported"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| CallError::InvalidUrl(format!("{url}: no host")))?;
    let connect = match mesh_outbound {
        Some(addr) => addr.to_owned(),
        None => format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        ),
    };
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Target {
        connect,
        host: authority.as_str().to_owned(),
        path_and_query,
    })
}

/// The shared outbound client.
#[derive(Debug, Clone, Default)]
pub struct Client {
    mesh_outbound: Option<Arc<str>>,
}

impl Client {
    pub fn new(mesh_outbound: Option<&str>) -> Client {
        Client {
            mesh_outbound: mesh_outbound.map(Arc::from),
        }
    }

    pub async fn get(
        &self,
        url: &str,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        self.send(Method::GET, url, headers, Bytes::new(), timeout)
            .await
    }

    pub async fn post_json(
        &self,
        url: &str,
        mut headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.send(Method::POST, url, headers, Bytes::from(body), timeout)
            .await
    }

    /// Sends one request and reads the whole response within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let target = target(url, self.mesh_outbound.as_deref())?;
        match tokio::time::timeout(timeout, exchange(method, target, headers, body)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }
}

async fn exchange(
    method: Method,
    target: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Reply, CallError> {
    let stream = TcpStream::connect(&target.connect)
        .await
        .map_err(|e| CallError::Connect(format!("{}: {e}", target.connect)))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CallError::Protocol(e.to_string()))?;

    let mut request = Request::builder()
        .method(method)
        .uri(target.path_and_query.as_str())
        .body(Full::new(body))
        .map_err(|e| CallError::InvalidUrl(e.to_string()))?;
    let host = HeaderValue::from_str(&target.host)
        .map_err(|e| CallError::InvalidUrl(format!("host {}: {e}", target.host)))?;
    let out = request.headers_mut();
    for (name, value) in &headers {
        // Framing and routing headers are the client's own business.
        let reserved = [
            HOST.as_str(),
            "connection",
            "content-length",
            "transfer-encoding",
        ]
        .contains(&name.as_str());
        if !reserved {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(HOST, host);
    out.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("meshwright-shop/", env!("CARGO_PKG_VERSION"))),
    );

    let call = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    CallError::TooLarge
                } else {
                    CallError::Protocol(e.to_string())
                }
            })?;
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
        })
    };
    // The connection is driven here rather than in a spawned task, so that a timeout drops the
    // socket with the call instead of leaving a task behind.
    tokio::pin!(call);
    tokio::pin!(conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            biased;
            result = &mut call => return result,
            // A finished or failed connection shows up in the call's result as well.
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let direct = target("http://product.ecommerce:8081/api/products?size=100", None).unwrap();
        assert_eq!(direct.connect, "product.ecommerce:8081");
        assert_eq!(direct.host, "product.ecommerce:8081");
        assert_eq!(direct.path_and_query, "/api/products?size=100");
        let meshed = target("http://invoice/api/invoices", Some("127.0.0.1:15001")).unwrap();
        assert_eq!(meshed.connect, "127.0.0.1:15001");
        assert_eq!(meshed.host, "invoice");
        assert_eq!(meshed.path_and_query, "/api/invoices");
        assert_eq!(target("http://[::1]:9/x", None).unwrap().connect, "[::1]:9");
        assert_eq!(target("http://a", None).unwrap().connect, "a:80");
        assert!(target("https://a/", None).is_err());
        assert!(target("not a url", None).is_err());
    }

    #[test]
    fn propagates_only_the_listed_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer t"),
            ("cookie", "session=secret"),
            ("x-jwt-sub", "u-1"),
            ("traceparent", "00-abc-def-01"),
            ("x-request-id", "r-1"),
            ("x-meshwright-drill", "invoice-503"),
            ("x-b3-sampled", "1"),
            ("host", "store"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = propagate(&h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "authorization",
                "traceparent",
                "x-b3-sampled",
                "x-meshwright-drill",
                "x-request-id"
            ]
        );
    }

    #[tokio::test]
    async fn connection_refused_and_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and never answers.
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let client = Client::new(None);
        let e = client
            .get(
                &format!("http://{addr}/"),
                HeaderMap::new(),
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
        assert_eq!(e, CallError::Timeout(Duration::from_millis(200)));

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let e = client
            .get(
                &format!("http://{closed_addr}/"),
                HeaderMap::new(),
                Duration::from_secs(2),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Connect(_)), "{e}");
    }

    #[tokio::test]
    async fn mesh_outbound_keeps_host_and_path() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                n += s.read(&mut buf[n..]).await.unwrap();
            }
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-shop-instance: sidecar\r\n\r\nok",
            )
            .await
            .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let client = Client::new(Some(&addr.to_string()));
        let reply = client
            .get(
                "http://product.ecommerce.svc.cluster.local:8081/api/products/3?x=1",
                HeaderMap::new(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(&reply.body[..], b"ok");
        assert_eq!(reply.header("x-shop-instance"), Some("sidecar"));
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /api/products/3?x=1 http/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nhost: product.ecommerce.svc.cluster.local:8081\r\n"),
            "{head}"
        );
    }
}

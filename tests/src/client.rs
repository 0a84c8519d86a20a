//! Real HTTP/1.1, HTTP/2 and gRPC clients for driving a local Envoy.

use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not JSON: {}", self.text()))
    }
}

/// A keep-alive HTTP client bound to one address.
#[derive(Clone, Debug)]
pub struct Http {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    /// HTTP/1.1 with connection reuse.
    pub fn new(addr: SocketAddr) -> Self {
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Self {
            client,
            base: format!("http://{addr}"),
        }
    }

    /// HTTP/2 with prior knowledge (h2c).
    pub fn h2(addr: SocketAddr) -> Self {
        let client = HyperClient::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        Self {
            client,
            base: format!("http://{addr}"),
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response> {
        let raw: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.send_bytes(method, path, &raw, body).await
    }

    /// [`Http::send`] with header values that need not be UTF-8 (HTTP allows obs-text).
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Bytes,
    ) -> Result<Response> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, hyper::header::HeaderValue::from_bytes(v)?);
        }
        let req = req.body(Full::new(body))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .context("request timed out")??;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// The outcome of a unary gRPC call as a real gRPC client (tonic) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcOutcome {
    pub code: i32,
    pub message: String,
}

/// Makes one unary gRPC call with an opaque payload (no protobuf schema needed: the bytes are
/// passed through) and returns the status the client sees.
pub async fn grpc_unary(
    addr: SocketAddr,
    method_path: &'static str,
    payload: Bytes,
) -> Result<GrpcOutcome> {
    grpc_unary_with(addr, method_path, payload, &[]).await
}

/// [`grpc_unary`] with request metadata (headers).
pub async fn grpc_unary_with(
    addr: SocketAddr,
    method_path: &'static str,
    payload: Bytes,
    metadata: &[(&'static str, &str)],
) -> Result<GrpcOutcome> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = hyper::http::uri::PathAndQuery::from_static(method_path);
    let mut request = tonic::Request::new(payload);
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, v.parse()?);
    }
    let result = grpc.unary(request, path, RawCodec).await;
    Ok(match result {
        Ok(_) => GrpcOutcome {
            code: 0,
            message: String::new(),
        },
        Err(status) => GrpcOutcome {
            code: status.code() as i32,
            message: status.message().to_owned(),
        },
    })
}

/// A tonic codec that sends and receives raw message bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

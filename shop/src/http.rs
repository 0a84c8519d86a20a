//! The HTTP pieces every service shares: RFC 9457 problem responses, the mesh-verified identity,
//! extractors that turn bad input into 4xx problems, list responses, and the middleware that
//! logs, counts and labels every response.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::db::Db;
use crate::log::{Level, Logger};
use crate::metrics::Metrics;

pub const X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");
pub const X_SHOP_INSTANCE: HeaderName = HeaderName::from_static("x-shop-instance");
pub const X_SHOP_VARIANT: HeaderName = HeaderName::from_static("x-shop-variant");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The most a request body may be: orders and profiles are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Put on a response whose handler hit an internal error, for the logging middleware: the
/// client gets a generic 500, the log gets the cause.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

/// An RFC 9457 `application/problem+json` error response.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    internal: Option<String>,
    retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            internal: None,
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn unauthorized() -> Problem {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "sign-in required: the request carries no verified identity",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 503 with a `retry-after` hint.
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem {
            retry_after: Some(2),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }

    /// 500; `cause` is logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Problem {
        Problem {
            internal: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "an internal error occurred; it has been logged",
            )
        }
    }

    /// The standard reason phrase of the status.
    pub fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "type": "about:blank",
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
    }

    pub fn internal_cause(&self) -> Option<&str> {
        self.internal.as_deref()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            self.body().to_string(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(cause) = self.internal {
            response.extensions_mut().insert(InternalError(cause));
        }
        response
    }
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Problem {
        Problem::internal(format!("{e:#}"))
    }
}

impl From<rusqlite::Error> for Problem {
    fn from(e: rusqlite::Error) -> Problem {
        Problem::internal(format!("database: {e}"))
    }
}

/// The signed-in user, as verified by the sidecar's `jwt_authn` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The JWT `sub` claim: the user id.
    pub sub: String,
    pub email: String,
    /// Display name (the `name` claim, else the email, else the sub).
    pub name: String,
}

fn header_text(headers: &HeaderMap, name: &str, max_chars: usize) -> Option<String> {
    let value = headers.get(name)?;
    let text = std::str::from_utf8(value.as_bytes()).ok()?.trim();
    if text.is_empty() || text.chars().any(char::is_control) {
        return None;
    }
    Some(text.chars().take(max_chars).collect())
}

impl Identity {
    /// A request is signed in only when the mesh verified a bearer token: `x-jwt-sub` set AND an
    /// `authorization: Bearer …` header present. Claim headers without a token are ignored (the
    /// gateway strips them from outside traffic, but the app does not rely on that alone).
    pub fn from_headers(headers: &HeaderMap) -> Option<Identity> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.get(..7).map(|scheme| (scheme, v.get(7..).unwrap_or(""))))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer ") && !token.trim().is_empty()
            });
        if !bearer {
            return None;
        }
        let sub = header_text(headers, "x-jwt-sub", 255)?;
        let email = header_text(headers, "x-jwt-email", 254).unwrap_or_default();
        let name = header_text(headers, "x-jwt-name", 200)
            .or_else(|| (!email.is_empty()).then(|| email.clone()))
            .unwrap_or_else(|| sub.clone());
        Some(Identity { sub, email, name })
    }
}

/// Extractor for API routes that need a signed-in user; 401 problem otherwise.
#[derive(Debug, Clone)]
pub struct User(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Identity::from_headers(&parts.headers)
            .map(User)
            .ok_or_else(Problem::unauthorized)
    }
}

/// A JSON request body: `application/json` required (415 otherwise), parse and unknown-field
/// errors become 400 problems that say what was wrong.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Whether the content type is JSON (`application/json` or `application/*+json`, any params).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a JSON body with content-type application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| Problem::new(r.status(), r.body_text()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body, describing failures for the client.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "invalid request body",
            _ => "malformed JSON",
        };
        Problem::bad_request(format!("{what}: {e}"))
    })
}

/// Parses a path id: a positive decimal integer.
pub fn parse_id(text: &str) -> Result<i64, String> {
    let shown: String = text.chars().take(40).collect();
    match text.parse::<i64>() {
        Ok(id) if id >= 1 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(format!("id must be a positive integer, got {shown:?}")),
    }
}

/// Extractor for a route's single `{id}` segment; 400 problem when it is not a positive integer.
#[derive(Debug, Clone, Copy)]
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        parse_id(&raw).map(Id).map_err(Problem::bad_request)
    }
}

/// The query string as name/value pairs; 400 when it cannot be decoded.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_none() {
            return Ok(Params::default());
        }
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| Problem::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// A JHipster page request: `page` from 0, `size` 1..=100 (default 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: i64,
    pub size: i64,
}

impl Paging {
    pub const MAX_SIZE: i64 = 100;

    pub fn offset(self) -> i64 {
        self.page.saturating_mul(self.size)
    }
}

impl Params {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An optional positive-integer parameter (a filter such as `orderId`).
    pub fn id(&self, name: &str) -> Result<Option<i64>, Problem> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_id(v)
                .map(Some)
                .map_err(|_| Problem::bad_request(format!("{name} must be a positive integer"))),
        }
    }

    pub fn paging(&self) -> Result<Paging, Problem> {
        let number = |name: &str, default: i64, min: i64, max: i64| match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(Problem::bad_request(format!(
                    "{name} must be an integer between {min} and {max}"
                ))),
            },
        };
        Ok(Paging {
            page: number("page", 0, 0, 1_000_000)?,
            size: number("size", 20, 1, Paging::MAX_SIZE)?,
        })
    }
}

/// A JHipster list: the JSON array of one page and the `X-Total-Count` header.
pub fn list<T: Serialize>(items: &[T], total: i64) -> Response {
    (
        [(X_TOTAL_COUNT, HeaderValue::from(total))],
        axum::Json(items),
    )
        .into_response()
}

/// The answer to a POST: 201 with the resource it `created`, else 200 with the one an earlier
/// request made (an idempotent repeat); `location` is the resource's URL path.
pub fn posted<T: Serialize>(created: bool, location: &str, body: &T) -> Result<Response, Problem> {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = HeaderValue::from_str(location).map_err(Problem::internal)?;
    Ok((status, [(LOCATION, location)], axum::Json(body)).into_response())
}

/// Answers a list route: `read` (on the database's thread) gives one page and the total count.
pub async fn get_list<T, F>(db: &Db, read: F) -> Result<Response, Problem>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<(Vec<T>, i64)> + Send + 'static,
{
    let (items, total) = db
        .call(move |conn| -> Result<_, Problem> { Ok(read(conn)?) })
        .await?;
    Ok(list(&items, total))
}

/// Answers a `…/{id}` route: the JSON of what `read` (on the database's thread) finds, else the
/// 404 problem "`what` `id` does not exist". Where rows belong to users, `read` looks only among
/// the caller's: someone else's row is as absent as a missing one.
pub async fn get_one<T, F>(db: &Db, what: &str, id: i64, read: F) -> Result<Response, Problem>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<Option<T>> + Send + 'static,
{
    let found = db
        .call(move |conn| -> Result<_, Problem> { Ok(read(conn)?) })
        .await?;
    match found {
        Some(item) => Ok(axum::Json(item).into_response()),
        None => Err(Problem::not_found(format!("{what} {id} does not exist"))),
    }
}

/// State of the [`observe`] middleware.
#[derive(Clone, Debug)]
pub struct Observe {
    pub logger: Logger,
    pub metrics: Arc<Metrics>,
    /// Headers put on every response (`x-shop-instance`, product's `x-shop-variant`).
    pub headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

/// Logs, counts and labels every response. Probe and scrape requests are counted but logged
/// only when they fail, so the kubelet does not drown the log.
pub async fn observe(State(o): State<Observe>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(512).collect();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let request_id: Option<String> = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect());

    let mut response = next.run(req).await;

    for (name, value) in o.headers.iter() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    let status = response.status();
    let elapsed = start.elapsed().as_secs_f64();
    o.metrics
        .observe_request(&route, method.as_str(), status.as_u16(), elapsed);

    let internal = response.extensions().get::<InternalError>().cloned();
    if route.starts_with("/management/") && !status.is_server_error() {
        return response;
    }
    let level = if internal.is_some() {
        Level::Error
    } else if status.is_server_error() {
        Level::Warn
    } else {
        Level::Info
    };
    let mut fields = vec![
        ("method", json!(method.as_str())),
        ("path", json!(path)),
        ("route", json!(route)),
        ("status", json!(status.as_u16())),
        ("duration_ms", json!((elapsed * 1e6).round() / 1e3)),
    ];
    if let Some(id) = request_id {
        fields.push(("request_id", json!(id)));
    }
    if let Some(InternalError(cause)) = internal {
        fields.push(("error", json!(cause)));
    }
    o.logger.log(level, "request", &fields);
    response
}

/// The fallback for unknown routes: a 404 problem.
pub async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

/// The fallback for a known route with another method: a 405 problem.
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this method is not allowed on this resource",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn identity_needs_sub_and_bearer() {
        let full = headers(&[
            ("authorization", "Bearer abc.def.ghi"),
            ("x-jwt-sub", "u-1"),
            ("x-jwt-email", "ada@example.com"),
            ("x-jwt-name", "Ada Lovelace"),
        ]);
        let id = Identity::from_headers(&full).unwrap();
        assert_eq!(id.sub, "u-1");
        assert_eq!(id.name, "Ada Lovelace");
        assert!(
            Identity::from_headers(&headers(&[("x-jwt-sub", "u-1")])).is_none(),
            "claims without a token"
        );
        assert!(Identity::from_headers(&headers(&[("authorization", "Bearer x")])).is_none());
        assert!(
            Identity::from_headers(&headers(&[
                ("authorization", "Basic dTpw"),
                ("x-jwt-sub", "u-1")
            ]))
            .is_none()
        );
        assert!(
            Identity::from_headers(&headers(&[
                ("authorization", "Bearer "),
                ("x-jwt-sub", "u")
            ]))
            .is_none()
        );
        assert!(
            Identity::from_headers(&headers(&[
                ("authorization", "Bearer t"),
                ("x-jwt-sub", " ")
            ]))
            .is_none()
        );
        let fallback = Identity::from_headers(&headers(&[
            ("authorization", "bearer t"),
            ("x-jwt-sub", "u-2"),
            ("x-jwt-email", "bo@example.com"),
        ]))
        .unwrap();
        assert_eq!(fallback.name, "bo@example.com");
    }

    #[test]
    fn ids_and_paging() {
        assert_eq!(parse_id("42"), Ok(42));
        for bad in ["0", "-1", "+1", "1.5", "abc", "", "99999999999999999999"] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
        let p = Params(vec![
            ("page".into(), "2".into()),
            ("size".into(), "10".into()),
        ]);
        assert_eq!(p.paging().unwrap(), Paging { page: 2, size: 10 });
        assert_eq!(p.paging().unwrap().offset(), 20);
        assert_eq!(
            Params::default().paging().unwrap(),
            Paging { page: 0, size: 20 }
        );
        assert!(
            Params(vec![("size".into(), "101".into())])
                .paging()
                .is_err()
        );
        assert!(Params(vec![("page".into(), "-1".into())]).paging().is_err());
        assert!(
            Params(vec![("orderId".into(), "x".into())])
                .id("orderId")
                .is_err()
        );
    }

    #[test]
    fn problem_shape() {
        let p = Problem::bad_request("quantity must be between 1 and 99");
        assert_eq!(
            p.body(),
            json!({"type":"about:blank","title":"Bad Request","status":400,"detail":"quantity must be between 1 and 99"})
        );
        let r = Problem::internal("disk on fire").into_response();
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(
            r.extensions().get::<InternalError>().unwrap().0,
            "disk on fire"
        );
        let u = Problem::unavailable("later").into_response();
        assert_eq!(u.headers()[RETRY_AFTER], "2");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(is_json(&headers(&[(
            "content-type",
            "application/merge-patch+json"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&HeaderMap::new()));
    }
}

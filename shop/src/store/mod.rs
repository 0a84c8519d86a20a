//! The store service: the server-rendered storefront and the `/api/account`, `/api/customers`
//! and `/api/product-orders` APIs.
//!
//! Checkout places no half-made orders: prices come from the catalogue (product service) before
//! anything is written, and the order, its items and the outbox row "create the invoice for
//! order N" are committed in one transaction. The outbox worker then delivers the invoice
//! request to the invoice service, retrying through any outage; the order page reads the
//! invoice back and degrades gracefully while invoicing is down.

mod api;
pub mod orders;
mod pages;
pub mod upstream;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rusqlite::{Connection, params};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::http::Problem;
use crate::metrics::Sample;
use crate::outbox::{self, Handler, Message, Worker};
use crate::server::{App, Common};

/// The outbox topic of store's invoice requests.
pub const TOPIC: &str = "invoice.create";

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    email TEXT NOT NULL,
    telephone TEXT NOT NULL DEFAULT '',
    address_line1 TEXT NOT NULL DEFAULT '',
    city TEXT NOT NULL DEFAULT '',
    country TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS product_orders (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    placed_date INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'CANCELLED')),
    total_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    user_id TEXT NOT NULL,
    invoice_status TEXT NOT NULL DEFAULT 'PENDING'
        CHECK (invoice_status IN ('PENDING', 'CREATED', 'FAILED')),
    invoice_id INTEGER,
    idempotency_key TEXT,
    request_fingerprint TEXT,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS product_orders_user ON product_orders (user_id, id);
CREATE TABLE IF NOT EXISTS order_items (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES product_orders (id),
    product_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    total_cents INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS order_items_order ON order_items (order_id);
CREATE TABLE IF NOT EXISTS cart_items (
    user_id TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    emoji TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, product_id)
);
";

/// What store's handlers share.
#[derive(Clone)]
pub(crate) struct StoreState {
    pub common: Common,
    pub upstream: upstream::Upstream,
    /// Wakes the outbox worker after a commit that enqueued a row.
    pub wake: Arc<Notify>,
}

pub fn app(common: &Common) -> App {
    let worker = Worker::new(
        common,
        Arc::new(InvoiceHandler {
            url: common.config.invoice_url.join("/api/invoices"),
        }),
    );
    let state = StoreState {
        common: common.clone(),
        upstream: upstream::Upstream::new(common),
        wake: Arc::clone(&worker.wake),
    };
    let router = Router::new()
        .route("/api/account", get(api::account))
        .route(
            "/api/customers",
            get(api::list_customers).post(api::create_customer),
        )
        .route(
            "/api/customers/{id}",
            put(api::update_customer).get(api::get_customer),
        )
        .route(
            "/api/product-orders",
            get(api::list_orders).post(api::create_order),
        )
        .route("/api/product-orders/{id}", get(api::get_order))
        .route("/", get(pages::catalogue))
        .route("/products/{id}", get(pages::product))
        .route("/cart", get(pages::cart))
        .route("/cart/items", post(pages::add_to_cart))
        .route("/cart/items/{id}/delete", post(pages::remove_from_cart))
        .route("/checkout", post(pages::checkout))
        .route("/orders", get(pages::orders))
        .route("/orders/{id}", get(pages::order))
        .route("/account", get(pages::account))
        .route("/content/shop.css", get(pages::stylesheet))
        .route("/favicon.ico", get(pages::favicon))
        .fallback(pages::fallback)
        .layer(axum::middleware::from_fn(refuse_cross_site))
        .with_state(state);
    App {
        router,
        workers: vec![worker],
        gauges,
        headers: Vec::new(),
    }
}

fn gauges(conn: &Connection) -> rusqlite::Result<Vec<Sample>> {
    let (orders, pending, failed): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(invoice_status = 'PENDING'), 0),
                COALESCE(SUM(invoice_status = 'FAILED'), 0) FROM product_orders",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let carts: i64 = conn.query_row("SELECT COUNT(DISTINCT user_id) FROM cart_items", [], |r| {
        r.get(0)
    })?;
    let mut samples = vec![
        Sample::counter("shop_orders_total", "Orders placed.", orders as f64),
        Sample::gauge(
            "shop_orders_invoice_pending",
            "Orders whose invoice is not created yet.",
            pending as f64,
        ),
        Sample::gauge(
            "shop_orders_invoice_failed",
            "Orders whose invoice request was rejected.",
            failed as f64,
        ),
        Sample::gauge("shop_carts", "Carts with at least one item.", carts as f64),
    ];
    samples.extend(outbox::samples(conn)?);
    Ok(samples)
}

/// Records invoice's answer on the order.
struct InvoiceHandler {
    url: String,
}

#[derive(Deserialize)]
struct CreatedInvoice {
    id: i64,
}

impl Handler for InvoiceHandler {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn delivered(&self, conn: &Connection, message: &Message, body: &[u8]) -> anyhow::Result<()> {
        let invoice: CreatedInvoice = serde_json::from_slice(body)
            .map_err(|e| anyhow::anyhow!("invoice answered an unexpected body: {e}"))?;
        conn.execute(
            "UPDATE product_orders SET invoice_id = ?2, invoice_status = 'CREATED',
             status = 'COMPLETED' WHERE id = ?1",
            params![message.aggregate_id, invoice.id],
        )?;
        Ok(())
    }

    fn failed(&self, conn: &Connection, message: &Message, _: &str) -> anyhow::Result<()> {
        conn.execute(
            "UPDATE product_orders SET invoice_status = 'FAILED' WHERE id = ?1",
            [message.aggregate_id],
        )?;
        Ok(())
    }
}

/// `host[:port]` split, lower-cased host.
fn split_authority(authority: &str) -> (String, Option<u16>) {
    let authority = authority.trim();
    // A bracketed IPv6 literal keeps its colons.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority.get(i..).unwrap_or("").contains(']') => (
            authority.get(..i).unwrap_or(""),
            authority.get(i + 1..).and_then(|p| p.parse::<u16>().ok()),
        ),
        _ => (authority, None),
    };
    (host.to_ascii_lowercase(), port)
}

/// Whether an `Origin` header names the same host and port as a `Host` header. A `Host` without
/// a port matches the origin's scheme default (80 or 443).
pub fn origin_matches(origin: &str, host: &str) -> bool {
    let (scheme, rest) = match origin.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => return false,
    };
    if rest.contains('/') || rest.is_empty() {
        return false;
    }
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return false,
    };
    let (origin_host, origin_port) = split_authority(rest);
    let (host_name, host_port) = split_authority(host);
    let origin_port = origin_port.unwrap_or(default_port);
    origin_host == host_name
        && match host_port {
            Some(port) => port == origin_port,
            None => origin_port == default_port,
        }
}

/// Cross-site request forgery check for state-changing requests: refuse when the browser says
/// the request is cross-site, or when an `Origin` is present and names another host than the
/// one the request was sent to (`Host`, or `X-Forwarded-Host` when a proxy rewrote `Host`).
pub fn is_cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    let hosts = [text(HOST.as_str()), text("x-forwarded-host")];
    !hosts
        .into_iter()
        .flatten()
        .any(|host| origin_matches(origin, host))
}

async fn refuse_cross_site(req: Request, next: Next) -> Response {
    let unsafe_method = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if unsafe_method && is_cross_site(req.headers()) {
        if req.uri().path().starts_with("/api/") {
            return Problem::forbidden("cross-site request refused").into_response();
        }
        return pages::forbidden_page(req.headers()).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_matching() {
        assert!(origin_matches("https://shop.example", "shop.example"));
        assert!(origin_matches("https://shop.example", "shop.example:443"));
        assert!(origin_matches("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(origin_matches(
            "https://Shop.Example:8443",
            "shop.example:8443"
        ));
        assert!(origin_matches("http://[::1]:8080", "[::1]:8080"));
        assert!(!origin_matches("https://evil.example", "shop.example"));
        assert!(!origin_matches("https://shop.example:8443", "shop.example"));
        assert!(!origin_matches("http://shop.example", "shop.example:8080"));
        assert!(!origin_matches("null", "shop.example"));
        assert!(!origin_matches("https://shop.example/path", "shop.example"));
    }

    #[test]
    fn cross_site_detection() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(!is_cross_site(&h(&[("host", "shop.example")])));
        assert!(is_cross_site(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!is_cross_site(&h(&[
            ("sec-fetch-site", "same-origin"),
            ("host", "a")
        ])));
        assert!(is_cross_site(&h(&[
            ("origin", "https://evil.example"),
            ("host", "shop.example")
        ])));
        assert!(!is_cross_site(&h(&[
            ("origin", "https://shop.example"),
            ("host", "shop.example")
        ])));
        assert!(!is_cross_site(&h(&[
            ("origin", "https://shop.example"),
            ("host", "store.ecommerce.svc.cluster.local:8080"),
            ("x-forwarded-host", "shop.example"),
        ])));
        assert!(is_cross_site(&h(&[
            ("origin", "null"),
            ("host", "shop.example")
        ])));
    }
}

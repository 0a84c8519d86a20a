//! The invoice service (`/api/invoices`, `/api/shipments`).
//!
//! Store's outbox posts one invoice per order; the call is idempotent by `orderId`, so retries
//! and redeliveries after a crash find the invoice already made. Creating the invoice also
//! creates its shipment and, in the same transaction, an outbox row that asks notification to
//! tell the customer. When notification answers, the invoice records the notification's id and
//! sent date: that is how the storefront shows it (store may not call notification itself).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::http::{self, Id, JsonBody, Params, Problem, User};
use crate::metrics::Sample;
use crate::outbox::{self, Handler, Message, Worker};
use crate::server::{App, Common};
use crate::{db, text, time};

/// The outbox topic of invoice's notifications.
pub const TOPIC: &str = "notification.send";

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invoices (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    date INTEGER NOT NULL,
    details TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ISSUED', 'PAID', 'CANCELLED')),
    payment_method TEXT NOT NULL,
    payment_date INTEGER NOT NULL,
    payment_amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    order_id INTEGER NOT NULL UNIQUE,
    order_code TEXT NOT NULL,
    customer TEXT NOT NULL,
    email TEXT NOT NULL,
    notification_id INTEGER,
    notification_format TEXT,
    notification_sent_date TEXT,
    notification_details TEXT
);
CREATE INDEX IF NOT EXISTS invoices_customer ON invoices (customer, order_id);
CREATE TABLE IF NOT EXISTS shipments (
    id INTEGER PRIMARY KEY,
    tracking_code TEXT NOT NULL UNIQUE,
    date INTEGER NOT NULL,
    details TEXT NOT NULL,
    invoice_id INTEGER NOT NULL UNIQUE REFERENCES invoices (id)
);
";

/// The body of `POST /api/invoices`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewInvoice {
    pub order_id: i64,
    pub order_code: String,
    pub customer: String,
    #[serde(default)]
    pub email: Option<String>,
    pub amount_cents: i64,
    pub currency: String,
}

/// The largest amount an invoice may have: €10 million, far above any basket of this shop.
pub const MAX_AMOUNT_CENTS: i64 = 1_000_000_000;

/// Checks a new invoice; the message says which field is wrong.
pub fn validate(n: &NewInvoice) -> Result<(), String> {
    if n.order_id < 1 {
        return Err("orderId must be a positive integer".into());
    }
    text::check("orderCode", &n.order_code, 1, 64)?;
    text::check("customer", &n.customer, 1, 255)?;
    text::check("email", n.email.as_deref().unwrap_or(""), 0, 254)?;
    if !(0..=MAX_AMOUNT_CENTS).contains(&n.amount_cents) {
        return Err(format!(
            "amountCents must be between 0 and {MAX_AMOUNT_CENTS}"
        ));
    }
    text::check_currency(&n.currency)
}

/// `INV-2026-000042`.
pub fn invoice_code(year: i64, id: i64) -> String {
    format!("INV-{year}-{id:06}")
}

/// `TRK-2026-000042`.
pub fn tracking_code(year: i64, id: i64) -> String {
    format!("TRK-{year}-{id:06}")
}

/// The shipment embedded in an invoice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentJson {
    pub id: i64,
    pub tracking_code: String,
    pub date: String,
    pub details: String,
    pub invoice_id: i64,
}

/// What the invoice knows of the customer's notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRef {
    pub id: i64,
    pub format: Option<String>,
    pub sent_date: Option<String>,
    pub details: Option<String>,
}

/// An invoice as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceJson {
    pub id: i64,
    pub code: String,
    pub date: String,
    pub details: String,
    pub status: String,
    pub payment_method: String,
    pub payment_date: String,
    pub payment_amount_cents: i64,
    pub currency: String,
    pub order_id: i64,
    pub order_code: String,
    pub customer: String,
    pub shipment: Option<ShipmentJson>,
    /// `null` until notification has confirmed.
    pub notification: Option<NotificationRef>,
}

const INVOICE_SELECT: &str = "SELECT i.id, i.code, i.date, i.details, i.status, i.payment_method,
    i.payment_date, i.payment_amount_cents, i.currency, i.order_id, i.order_code, i.customer,
    i.notification_id, i.notification_format, i.notification_sent_date, i.notification_details,
    s.id, s.tracking_code, s.date, s.details
    FROM invoices i LEFT JOIN shipments s ON s.invoice_id = i.id";

fn invoice_row(r: &Row<'_>) -> rusqlite::Result<InvoiceJson> {
    let id: i64 = r.get(0)?;
    let notification = match r.get::<_, Option<i64>>(12)? {
        Some(nid) => Some(NotificationRef {
            id: nid,
            format: r.get(13)?,
            sent_date: r.get(14)?,
            details: r.get(15)?,
        }),
        None => None,
    };
    let shipment = match r.get::<_, Option<i64>>(16)? {
        Some(sid) => Some(ShipmentJson {
            id: sid,
            tracking_code: r.get(17)?,
            date: time::rfc3339_ms(r.get(18)?),
            details: r.get(19)?,
            invoice_id: id,
        }),
        None => None,
    };
    Ok(InvoiceJson {
        id,
        code: r.get(1)?,
        date: time::rfc3339_ms(r.get(2)?),
        details: r.get(3)?,
        status: r.get(4)?,
        payment_method: r.get(5)?,
        payment_date: time::rfc3339_ms(r.get(6)?),
        payment_amount_cents: r.get(7)?,
        currency: r.get(8)?,
        order_id: r.get(9)?,
        order_code: r.get(10)?,
        customer: r.get(11)?,
        shipment,
        notification,
    })
}

/// Creates the invoice, its shipment and the notification outbox row, unless the order has an
/// invoice already: `(invoice, created)`. A repeat must describe the same invoice (customer,
/// amount, currency), else 409: that would be a bug in the caller, not a retry.
pub fn create(
    conn: &mut Connection,
    n: &NewInvoice,
    now_ms: i64,
) -> Result<(InvoiceJson, bool), Problem> {
    let tx = conn.transaction()?;
    let existing = tx
        .query_row(
            &format!("{INVOICE_SELECT} WHERE i.order_id = ?1"),
            [n.order_id],
            invoice_row,
        )
        .optional()?;
    if let Some(found) = existing {
        let same = found.customer == n.customer
            && found.payment_amount_cents == n.amount_cents
            && found.currency == n.currency;
        return if same {
            Ok((found, false))
        } else {
            Err(Problem::conflict(format!(
                "order {} already has invoice {} with different content",
                n.order_id, found.code
            )))
        };
    }
    let year = time::year(now_ms);
    let details = format!(
        "Order {}: {}",
        n.order_code,
        text::money(n.amount_cents, &n.currency)
    );
    // The demo takes payment at once: the invoice is PAID when issued.
    tx.execute(
        "INSERT INTO invoices (code, date, details, status, payment_method, payment_date,
         payment_amount_cents, currency, order_id, order_code, customer, email)
         VALUES (?1, ?2, ?3, 'PAID', 'CREDIT_CARD', ?2, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            format!("INV-NEW-{}", n.order_id),
            now_ms,
            details,
            n.amount_cents,
            n.currency,
            n.order_id,
            n.order_code,
            n.customer,
            n.email.as_deref().unwrap_or("")
        ],
    )?;
    let id = tx.last_insert_rowid();
    let code = invoice_code(year, id);
    tx.execute(
        "UPDATE invoices SET code = ?2 WHERE id = ?1",
        params![id, code],
    )?;
    tx.execute(
        "INSERT INTO shipments (tracking_code, date, details, invoice_id) VALUES (?1, ?2, ?3, ?4)",
        params![
            tracking_code(year, id),
            now_ms,
            "Standard parcel, 2 to 3 business days",
            id
        ],
    )?;
    let notify = json!({
        "key": format!("invoice-{id}"),
        "userId": n.customer,
        "email": n.email.as_deref().unwrap_or(""),
        "format": "EMAIL",
        "details": format!("Your invoice {code} for order {} is paid", n.order_code),
        "orderId": n.order_id,
        "invoiceId": id,
    });
    outbox::enqueue(&tx, TOPIC, id, &notify.to_string(), now_ms)?;
    let created = tx.query_row(
        &format!("{INVOICE_SELECT} WHERE i.id = ?1"),
        [id],
        invoice_row,
    )?;
    tx.commit()?;
    Ok((created, true))
}

/// Records notification's answer on the invoice.
struct NotifyHandler {
    url: String,
}

/// The part of notification's answer that the invoice keeps.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SentNotification {
    id: i64,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    sent_date: Option<String>,
    #[serde(default)]
    details: Option<String>,
}

impl Handler for NotifyHandler {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn delivered(&self, conn: &Connection, message: &Message, body: &[u8]) -> anyhow::Result<()> {
        let sent: SentNotification = serde_json::from_slice(body)
            .map_err(|e| anyhow::anyhow!("notification answered an unexpected body: {e}"))?;
        conn.execute(
            "UPDATE invoices SET notification_id = ?2, notification_format = ?3,
             notification_sent_date = ?4, notification_details = ?5 WHERE id = ?1",
            params![
                message.aggregate_id,
                sent.id,
                sent.format.map(|v| text::truncate(&v, 16)),
                sent.sent_date.map(|v| text::truncate(&v, 40)),
                sent.details.map(|v| text::truncate(&v, 1000)),
            ],
        )?;
        Ok(())
    }

    fn failed(&self, _: &Connection, _: &Message, _: &str) -> anyhow::Result<()> {
        // The invoice stands; it just shows no notification. The FAILED row is the record.
        Ok(())
    }
}

#[derive(Clone)]
struct InvoiceState {
    common: Common,
    wake: Arc<Notify>,
}

pub fn app(common: &Common) -> App {
    let worker = Worker::new(
        common,
        Arc::new(NotifyHandler {
            url: common.config.notification_url.join("/api/notifications"),
        }),
    );
    let router = Router::new()
        .route("/api/invoices", get(list_invoices).post(post_invoice))
        .route("/api/invoices/{id}", get(get_invoice))
        .route("/api/shipments", get(list_shipments))
        .route("/api/shipments/{id}", get(get_shipment))
        .fallback(http::not_found)
        .with_state(InvoiceState {
            common: common.clone(),
            wake: Arc::clone(&worker.wake),
        });
    App {
        router,
        workers: vec![worker],
        gauges,
        headers: Vec::new(),
    }
}

fn gauges(conn: &Connection) -> rusqlite::Result<Vec<Sample>> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM invoices", [], |r| r.get(0))?;
    let mut samples = vec![Sample::counter(
        "shop_invoices_total",
        "Invoices issued.",
        n as f64,
    )];
    samples.extend(outbox::samples(conn)?);
    Ok(samples)
}

/// Machine to machine (store's outbox); the mesh decides who may call it.
async fn post_invoice(
    State(s): State<InvoiceState>,
    JsonBody(new): JsonBody<NewInvoice>,
) -> Result<Response, Problem> {
    validate(&new).map_err(Problem::bad_request)?;
    let (invoice, created) = s
        .common
        .db
        .call(move |conn| create(conn, &new, time::now_ms()))
        .await?;
    if created {
        s.wake.notify_one();
        s.common.logger.info(
            "invoice issued",
            &[
                ("invoice", json!(invoice.code)),
                ("order_id", json!(invoice.order_id)),
            ],
        );
    }
    http::posted(created, &format!("/api/invoices/{}", invoice.id), &invoice)
}

async fn list_invoices(
    State(s): State<InvoiceState>,
    User(user): User,
    params: Params,
) -> Result<Response, Problem> {
    let paging = params.paging()?;
    let order = params.id("orderId")?;
    http::get_list(&s.common.db, move |conn| {
        let filter = "i.customer = ?1 AND (?2 IS NULL OR i.order_id = ?2)";
        db::page(
            conn,
            &format!("SELECT COUNT(*) FROM invoices i WHERE {filter}"),
            &format!("{INVOICE_SELECT} WHERE {filter} ORDER BY i.id DESC"),
            params![user.sub, order],
            paging,
            invoice_row,
        )
    })
    .await
}

async fn get_invoice(
    State(s): State<InvoiceState>,
    User(user): User,
    Id(id): Id,
) -> Result<Response, Problem> {
    http::get_one(&s.common.db, "invoice", id, move |conn| {
        conn.query_row(
            &format!("{INVOICE_SELECT} WHERE i.id = ?1 AND i.customer = ?2"),
            params![id, user.sub],
            invoice_row,
        )
        .optional()
    })
    .await
}

const SHIPMENT_SELECT: &str = "SELECT s.id, s.tracking_code, s.date, s.details, s.invoice_id
    FROM shipments s JOIN invoices i ON i.id = s.invoice_id";

fn shipment_row(r: &Row<'_>) -> rusqlite::Result<ShipmentJson> {
    Ok(ShipmentJson {
        id: r.get(0)?,
        tracking_code: r.get(1)?,
        date: time::rfc3339_ms(r.get(2)?),
        details: r.get(3)?,
        invoice_id: r.get(4)?,
    })
}

async fn list_shipments(
    State(s): State<InvoiceState>,
    User(user): User,
    params: Params,
) -> Result<Response, Problem> {
    let paging = params.paging()?;
    http::get_list(&s.common.db, move |conn| {
        db::page(
            conn,
            "SELECT COUNT(*) FROM shipments s JOIN invoices i ON i.id = s.invoice_id
             WHERE i.customer = ?1",
            &format!("{SHIPMENT_SELECT} WHERE i.customer = ?1 ORDER BY s.id DESC"),
            params![user.sub],
            paging,
            shipment_row,
        )
    })
    .await
}

async fn get_shipment(
    State(s): State<InvoiceState>,
    User(user): User,
    Id(id): Id,
) -> Result<Response, Problem> {
    http::get_one(&s.common.db, "shipment", id, move |conn| {
        conn.query_row(
            &format!("{SHIPMENT_SELECT} WHERE s.id = ?1 AND i.customer = ?2"),
            params![id, user.sub],
            shipment_row,
        )
        .optional()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewInvoice {
        NewInvoice {
            order_id: 42,
            order_code: "ORD-2026-000042".into(),
            customer: "u-1".into(),
            email: Some("ada@example.com".into()),
            amount_cents: 2900,
            currency: "EUR".into(),
        }
    }

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(outbox::SCHEMA).unwrap();
        conn
    }

    #[test]
    fn validation() {
        assert!(validate(&sample()).is_ok());
        let mut n = sample();
        n.amount_cents = -1;
        assert!(validate(&n).unwrap_err().contains("amountCents"));
        let mut n = sample();
        n.currency = "euro".into();
        assert!(validate(&n).unwrap_err().contains("currency"));
        let mut n = sample();
        n.order_id = 0;
        assert!(validate(&n).unwrap_err().contains("orderId"));
        let mut n = sample();
        n.customer = String::new();
        assert!(validate(&n).unwrap_err().contains("customer"));
    }

    #[test]
    fn create_is_idempotent_by_order_and_enqueues_one_notification() {
        let mut conn = db();
        let now = 1_796_230_800_000;
        let (first, created) = create(&mut conn, &sample(), now).unwrap();
        assert!(created);
        assert_eq!(first.code, "INV-2026-000001");
        assert_eq!(first.status, "PAID");
        assert_eq!(first.payment_method, "CREDIT_CARD");
        assert_eq!(first.details, "Order ORD-2026-000042: €29.00");
        assert_eq!(
            first.shipment.as_ref().unwrap().tracking_code,
            "TRK-2026-000001"
        );
        assert!(first.notification.is_none());
        let (again, created) = create(&mut conn, &sample(), now + 5).unwrap();
        assert!(!created);
        assert_eq!(again, first);
        let mut different = sample();
        different.amount_cents = 1;
        assert_eq!(create(&mut conn, &different, now).unwrap_err().status, 409);
        let rows: Vec<(String, i64, String)> = conn
            .prepare("SELECT topic, aggregate_id, payload FROM outbox")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, TOPIC);
        let payload: serde_json::Value = serde_json::from_str(&rows[0].2).unwrap();
        assert_eq!(payload["key"], "invoice-1");
        assert_eq!(payload["userId"], "u-1");
        assert_eq!(payload["format"], "EMAIL");
        assert_eq!(
            payload["details"],
            "Your invoice INV-2026-000001 for order ORD-2026-000042 is paid"
        );
    }

    #[test]
    fn delivered_notification_is_recorded() {
        let mut conn = db();
        let (inv, _) = create(&mut conn, &sample(), 0).unwrap();
        let handler = NotifyHandler { url: String::new() };
        let message = Message {
            id: 1,
            topic: TOPIC.into(),
            aggregate_id: inv.id,
            payload: String::new(),
            attempts: 0,
        };
        handler
            .delivered(
                &conn,
                &message,
                br#"{"id":9,"format":"EMAIL","sentDate":"2026-12-02T17:00:00.000Z","details":"d","key":"invoice-1"}"#,
            )
            .unwrap();
        assert!(handler.delivered(&conn, &message, b"<html>").is_err());
        let notification = conn
            .query_row(
                &format!("{INVOICE_SELECT} WHERE i.id = ?1"),
                [inv.id],
                invoice_row,
            )
            .unwrap()
            .notification
            .unwrap();
        assert_eq!(notification.id, 9);
        assert_eq!(
            notification.sent_date.as_deref(),
            Some("2026-12-02T17:00:00.000Z")
        );
    }
}

//! The notification service (`/api/notifications`): invoice's outbox posts a notification, this
//! service records and "sends" it (the demo logs a line instead of mailing), idempotently by
//! `key`, and shows each user their own notifications.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::{self, Id, JsonBody, Params, Problem, User};
use crate::metrics::Sample;
use crate::server::{App, Common};
use crate::{db, text, time};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    date INTEGER NOT NULL,
    details TEXT NOT NULL,
    sent_date INTEGER,
    format TEXT NOT NULL CHECK (format IN ('EMAIL', 'SMS', 'PARCEL')),
    user_id TEXT NOT NULL,
    email TEXT NOT NULL,
    order_id INTEGER,
    invoice_id INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user_id, order_id);
";

/// The body of `POST /api/notifications`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewNotification {
    pub key: String,
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    pub format: String,
    pub details: String,
    #[serde(default)]
    pub order_id: Option<i64>,
    #[serde(default)]
    pub invoice_id: Option<i64>,
}

/// Checks a new notification; the message says which field is wrong.
pub fn validate(n: &NewNotification) -> Result<(), String> {
    text::check("key", &n.key, 1, 128)?;
    text::check("userId", &n.user_id, 1, 255)?;
    text::check("email", n.email.as_deref().unwrap_or(""), 0, 254)?;
    text::check("details", &n.details, 1, 1000)?;
    if !matches!(n.format.as_str(), "EMAIL" | "SMS" | "PARCEL") {
        return Err("format must be EMAIL, SMS or PARCEL".into());
    }
    for (name, id) in [("orderId", n.order_id), ("invoiceId", n.invoice_id)] {
        if id.is_some_and(|id| id < 1) {
            return Err(format!("{name} must be a positive integer"));
        }
    }
    Ok(())
}

/// A notification as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationJson {
    pub id: i64,
    pub key: String,
    pub date: String,
    pub details: String,
    pub sent_date: Option<String>,
    pub format: String,
    pub user_id: String,
    pub order_id: Option<i64>,
    pub invoice_id: Option<i64>,
}

const COLUMNS: &str = "id, key, date, details, sent_date, format, user_id, order_id, invoice_id";

fn row(r: &Row<'_>) -> rusqlite::Result<NotificationJson> {
    Ok(NotificationJson {
        id: r.get(0)?,
        key: r.get(1)?,
        date: time::rfc3339_ms(r.get(2)?),
        details: r.get(3)?,
        sent_date: r.get::<_, Option<i64>>(4)?.map(time::rfc3339_ms),
        format: r.get(5)?,
        user_id: r.get(6)?,
        order_id: r.get(7)?,
        invoice_id: r.get(8)?,
    })
}

/// Records a notification unless its key exists: `(notification, created)`. A repeat with the
/// same key must be the same notification (same user, format, order, invoice), else 409.
pub fn create(
    conn: &mut Connection,
    n: &NewNotification,
    now_ms: i64,
) -> Result<(NotificationJson, bool), Problem> {
    let tx = conn.transaction()?;
    let existing = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM notifications WHERE key = ?1"),
            [&n.key],
            row,
        )
        .optional()?;
    if let Some(found) = existing {
        let same = found.user_id == n.user_id
            && found.format == n.format
            && found.order_id == n.order_id
            && found.invoice_id == n.invoice_id;
        return if same {
            Ok((found, false))
        } else {
            Err(Problem::conflict(format!(
                "a different notification with key {:?} exists",
                n.key
            )))
        };
    }
    // The demo "sends" at once, so the sent date is the creation date.
    tx.execute(
        "INSERT INTO notifications (key, date, details, sent_date, format, user_id, email,
         order_id, invoice_id) VALUES (?1, ?2, ?3, ?2, ?4, ?5, ?6, ?7, ?8)",
        params![
            n.key,
            now_ms,
            n.details,
            n.format,
            n.user_id,
            n.email.as_deref().unwrap_or(""),
            n.order_id,
            n.invoice_id
        ],
    )?;
    let id = tx.last_insert_rowid();
    let created = tx.query_row(
        &format!("SELECT {COLUMNS} FROM notifications WHERE id = ?1"),
        [id],
        row,
    )?;
    tx.commit()?;
    Ok((created, true))
}

#[derive(Clone)]
struct NotificationState {
    common: Common,
}

pub fn app(common: &Common) -> App {
    let router = Router::new()
        .route("/api/notifications", get(list).post(post))
        .route("/api/notifications/{id}", get(get_one))
        .fallback(http::not_found)
        .with_state(NotificationState {
            common: common.clone(),
        });
    App {
        router,
        workers: Vec::new(),
        gauges,
        headers: Vec::new(),
    }
}

fn gauges(conn: &Connection) -> rusqlite::Result<Vec<Sample>> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM notifications", [], |r| r.get(0))?;
    Ok(vec![Sample::counter(
        "shop_notifications_total",
        "Notifications recorded and sent.",
        n as f64,
    )])
}

/// Machine to machine (invoice's outbox); the mesh decides who may call it.
async fn post(
    State(s): State<NotificationState>,
    JsonBody(new): JsonBody<NewNotification>,
) -> Result<Response, Problem> {
    validate(&new).map_err(Problem::bad_request)?;
    let email = new.email.clone().unwrap_or_default();
    let (notification, created) = s
        .common
        .db
        .call(move |conn| create(conn, &new, time::now_ms()))
        .await?;
    if created {
        let to = if notification.format == "EMAIL" {
            email
        } else {
            notification.user_id.clone()
        };
        s.common.logger.info(
            "notification sent",
            &[
                ("format", json!(notification.format)),
                ("to", json!(to)),
                ("notification_id", json!(notification.id)),
                ("key", json!(notification.key)),
            ],
        );
    }
    http::posted(
        created,
        &format!("/api/notifications/{}", notification.id),
        &notification,
    )
}

async fn list(
    State(s): State<NotificationState>,
    User(user): User,
    params: Params,
) -> Result<Response, Problem> {
    let paging = params.paging()?;
    let order = params.id("orderId")?;
    http::get_list(&s.common.db, move |conn| {
        let filter = "user_id = ?1 AND (?2 IS NULL OR order_id = ?2)";
        db::page(
            conn,
            &format!("SELECT COUNT(*) FROM notifications WHERE {filter}"),
            &format!("SELECT {COLUMNS} FROM notifications WHERE {filter} ORDER BY id DESC"),
            params![user.sub, order],
            paging,
            row,
        )
    })
    .await
}

async fn get_one(
    State(s): State<NotificationState>,
    User(user): User,
    Id(id): Id,
) -> Result<Response, Problem> {
    http::get_one(&s.common.db, "notification", id, move |conn| {
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM notifications WHERE id = ?1 AND user_id = ?2"),
            params![id, user.sub],
            row,
        )
        .optional()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewNotification {
        NewNotification {
            key: "invoice-7".into(),
            user_id: "u-1".into(),
            email: Some("ada@example.com".into()),
            format: "EMAIL".into(),
            details: "Your invoice is paid".into(),
            order_id: Some(42),
            invoice_id: Some(7),
        }
    }

    #[test]
    fn validation() {
        assert!(validate(&sample()).is_ok());
        let mut n = sample();
        n.format = "PIGEON".into();
        assert!(validate(&n).unwrap_err().contains("format"));
        let mut n = sample();
        n.key = String::new();
        assert!(validate(&n).unwrap_err().contains("key"));
        let mut n = sample();
        n.order_id = Some(0);
        assert!(validate(&n).unwrap_err().contains("orderId"));
        let mut n = sample();
        n.details = "x".repeat(1001);
        assert!(validate(&n).is_err());
    }

    #[test]
    fn idempotent_by_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let (first, created) = create(&mut conn, &sample(), 1000).unwrap();
        assert!(created);
        assert_eq!(first.sent_date.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        let (again, created) = create(&mut conn, &sample(), 2000).unwrap();
        assert!(!created);
        assert_eq!(again, first);
        let mut other = sample();
        other.user_id = "u-2".into();
        assert_eq!(create(&mut conn, &other, 3000).unwrap_err().status, 409);
    }
}

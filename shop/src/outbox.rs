//! The transactional outbox, shared by store (create invoice for order N) and invoice (notify
//! the customer of invoice N).
//!
//! A service writes its own rows and the outbox row in ONE SQLite transaction, so either both
//! exist or neither does. A background worker then delivers due rows by `POST`, at least once:
//! the receivers are idempotent (invoice by `orderId`, notification by `key`), so a delivery that
//! happened but was not recorded (crash, timeout) is harmless when repeated.
//!
//! Outcomes: 2xx marks the row delivered and lets the service record the result in the same
//! transaction; connection errors, timeouts, 5xx and 429 are weather and are retried with capped
//! exponential backoff and jitter, forever; any other 4xx means the request itself is wrong and
//! retrying cannot help, so the row is marked FAILED and kept for a human to look at.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use rusqlite::{Connection, params};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::client::{CallError, Client, OUTBOX_TIMEOUT, Reply};
use crate::db::Db;
use crate::http::X_REQUEST_ID;
use crate::log::Logger;
use crate::metrics::{Metrics, Sample};
use crate::server::Common;
use crate::{rand, time};

/// The outbox table; part of each outbox user's schema.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    aggregate_id INTEGER NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_aggregate ON outbox (topic, aggregate_id);
";

/// Rows delivered per round before the worker looks at the clock again.
const BATCH: usize = 16;

/// The first retry waits about this long; each further one twice as long, up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// A `retry-after` beyond this is not believed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Adds a row, due now. Call it inside the transaction that writes what the row announces.
pub fn enqueue(
    conn: &Connection,
    topic: &str,
    aggregate_id: i64,
    payload: &str,
    now_ms: i64,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO outbox (topic, aggregate_id, payload, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![topic, aggregate_id, payload, now_ms],
    )?;
    Ok(conn.last_insert_rowid())
}

/// One row to deliver.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: i64,
    pub topic: String,
    pub aggregate_id: i64,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What a delivery attempt means for its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    Failed {
        error: String,
    },
}

/// `retry-after` in delta-seconds (the HTTP-date form is not used by the mesh and is ignored).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let seconds: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(200).collect();
    short.retain(|c| !c.is_control());
    short
}

/// Classifies the result of one delivery attempt.
pub fn classify(result: &Result<Reply, CallError>) -> Outcome {
    match result {
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            retry_after: None,
        },
        Ok(reply) if reply.status.is_success() => Outcome::Delivered,
        Ok(reply)
            if reply.status.is_server_error() || reply.status == StatusCode::TOO_MANY_REQUESTS =>
        {
            Outcome::Retry {
                error: format!("HTTP {}: {}", reply.status.as_u16(), excerpt(&reply.body)),
                retry_after: parse_retry_after(reply.header("retry-after")),
            }
        }
        Ok(reply) => Outcome::Failed {
            error: format!("HTTP {}: {}", reply.status.as_u16(), excerpt(&reply.body)),
        },
    }
}

/// The wait before the next attempt after `attempts` failed ones (≥ 1): 500 ms doubling per
/// attempt, capped by `max`, spread ±20 % by `jitter` (in `[0, 1)`) so that rows that failed
/// together do not retry together; never shorter than a server's `retry-after`.
pub fn backoff(
    attempts: u32,
    max: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let base = FIRST_BACKOFF.saturating_mul(1u32 << exponent).min(max);
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    let jittered = base.mul_f64(spread).min(max);
    match retry_after {
        Some(wait) => jittered.max(wait.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// What a service does with the rows of its topic.
pub trait Handler: Send + Sync + 'static {
    /// The topic this worker delivers (rows of other topics are left alone).
    fn topic(&self) -> &'static str;
    /// Where rows are POSTed.
    fn url(&self) -> String;
    /// Records a 2xx answer, inside the transaction that marks the row delivered. An error
    /// rolls both back and the row is retried later.
    fn delivered(&self, conn: &Connection, message: &Message, body: &[u8]) -> anyhow::Result<()>;
    /// Records a permanent failure, inside the transaction that marks the row failed.
    fn failed(&self, conn: &Connection, message: &Message, error: &str) -> anyhow::Result<()>;
}

/// Row counts for the metrics and pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: i64,
    pub failed: i64,
    pub delivered: i64,
}

pub fn counts(conn: &Connection) -> rusqlite::Result<Counts> {
    conn.query_row(
        "SELECT
            COALESCE(SUM(status = 'PENDING'), 0),
            COALESCE(SUM(status = 'FAILED'), 0),
            COALESCE(SUM(status = 'DELIVERED'), 0)
         FROM outbox",
        [],
        |r| {
            Ok(Counts {
                pending: r.get(0)?,
                failed: r.get(1)?,
                delivered: r.get(2)?,
            })
        },
    )
}

/// The outbox gauges of `/management/prometheus`.
pub fn samples(conn: &Connection) -> rusqlite::Result<Vec<Sample>> {
    let c = counts(conn)?;
    Ok(vec![
        Sample::gauge(
            "shop_outbox_pending",
            "Outbox rows waiting for delivery.",
            c.pending as f64,
        ),
        Sample::gauge(
            "shop_outbox_failed",
            "Outbox rows rejected by the receiver (4xx); kept for inspection.",
            c.failed as f64,
        ),
        Sample::counter(
            "shop_outbox_delivered_total",
            "Outbox rows delivered.",
            c.delivered as f64,
        ),
    ])
}

/// The background deliverer of one topic.
pub struct Worker {
    pub db: Db,
    pub client: Client,
    pub logger: Logger,
    pub metrics: Arc<Metrics>,
    pub handler: Arc<dyn Handler>,
    /// The longest sleep between looks at the table.
    pub interval: Duration,
    pub max_backoff: Duration,
    /// Notified after a commit that enqueued a row, for prompt delivery.
    pub wake: Arc<Notify>,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

impl Worker {
    /// The worker of a service's outbox for `handler`'s topic, with its own wake-up.
    pub fn new(common: &Common, handler: Arc<dyn Handler>) -> Worker {
        Worker {
            db: common.db.clone(),
            client: common.client.clone(),
            logger: common.logger.clone(),
            metrics: Arc::clone(&common.metrics),
            handler,
            interval: common.config.outbox_interval,
            max_backoff: common.config.outbox_max_backoff,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn spawn(self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let topic = self.handler.topic();
        self.logger.info(
            "outbox worker started",
            &[
                ("topic", json!(topic)),
                ("target", json!(self.handler.url())),
            ],
        );
        loop {
            let round = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                round = self.run_once() => round,
            };
            match round {
                Ok(n) if n >= BATCH => continue,
                Ok(_) => {}
                Err(e) => self.logger.error(
                    "outbox round failed",
                    &[("topic", json!(topic)), ("error", json!(format!("{e:#}")))],
                ),
            }
            let wait = self.next_wait().await;
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.logger
            .info("outbox worker stopped", &[("topic", json!(topic))]);
    }

    /// Until the earliest due row, at most `interval`.
    async fn next_wait(&self) -> Duration {
        let topic = self.handler.topic();
        let next: anyhow::Result<Option<i64>> = self
            .db
            .call(move |conn| {
                Ok(conn.query_row(
                    "SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'PENDING' AND topic = ?1",
                    [topic],
                    |r| r.get(0),
                )?)
            })
            .await;
        match next {
            Ok(Some(due)) => {
                let ms = u64::try_from(due.saturating_sub(time::now_ms())).unwrap_or(0);
                Duration::from_millis(ms).min(self.interval)
            }
            _ => self.interval,
        }
    }

    /// Delivers the rows that are due now (at most one batch); returns how many it tried.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let topic = self.handler.topic();
        let now = time::now_ms();
        let due: Vec<Message> = self
            .db
            .call(move |conn| -> anyhow::Result<Vec<Message>> {
                let mut stmt = conn.prepare(
                    "SELECT id, topic, aggregate_id, payload, attempts FROM outbox
                     WHERE status = 'PENDING' AND topic = ?1 AND next_attempt_at <= ?2
                     ORDER BY next_attempt_at, id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![topic, now, BATCH as i64], |r| {
                    Ok(Message {
                        id: r.get(0)?,
                        topic: r.get(1)?,
                        aggregate_id: r.get(2)?,
                        payload: r.get(3)?,
                        attempts: r.get(4)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        let n = due.len();
        for message in due {
            self.deliver(message).await?;
        }
        Ok(n)
    }

    async fn deliver(&self, message: Message) -> anyhow::Result<()> {
        let request_id = rand::uuid();
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(X_REQUEST_ID, v);
        }
        let url = self.handler.url();
        let result = self
            .client
            .post_json(
                &url,
                headers,
                message.payload.clone().into_bytes(),
                OUTBOX_TIMEOUT,
            )
            .await;
        let attempt = message.attempts.saturating_add(1);
        let status = result.as_ref().ok().map(|r| r.status.as_u16());
        let mut outcome = classify(&result);
        let now = time::now_ms();

        if outcome == Outcome::Delivered {
            let body = result.map(|r| r.body).unwrap_or_default();
            let handler = Arc::clone(&self.handler);
            let m = message.clone();
            let recorded = self
                .db
                .call(move |conn| -> anyhow::Result<()> {
                    let tx = conn.transaction()?;
                    handler.delivered(&tx, &m, &body)?;
                    tx.execute(
                        "UPDATE outbox SET status = 'DELIVERED', attempts = ?2, delivered_at = ?3,
                         last_error = NULL WHERE id = ?1",
                        params![m.id, attempt, now],
                    )?;
                    tx.commit()?;
                    Ok(())
                })
                .await;
            if let Err(e) = recorded {
                outcome = Outcome::Retry {
                    error: format!("could not record the answer: {e:#}"),
                    retry_after: None,
                };
            }
        }

        let fields = |extra: Vec<(&'static str, serde_json::Value)>| {
            let mut f = vec![
                ("topic", json!(message.topic)),
                ("outbox_id", json!(message.id)),
                ("aggregate_id", json!(message.aggregate_id)),
                ("attempt", json!(attempt)),
                ("request_id", json!(request_id)),
                ("http_status", json!(status)),
            ];
            f.extend(extra);
            f
        };
        let topic = message.topic.clone();
        match outcome {
            Outcome::Delivered => {
                self.count(&topic, "delivered");
                self.logger.info("outbox delivered", &fields(vec![]));
            }
            Outcome::Retry { error, retry_after } => {
                let wait = backoff(attempt, self.max_backoff, retry_after, rand::unit());
                let next = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                let id = message.id;
                let stored_error = error.clone();
                self.db
                    .call(move |conn| -> anyhow::Result<()> {
                        conn.execute(
                            "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4
                             WHERE id = ?1 AND status = 'PENDING'",
                            params![id, attempt, next, stored_error],
                        )?;
                        Ok(())
                    })
                    .await?;
                self.count(&topic, "retry");
                self.logger.warn(
                    "outbox delivery failed; will retry",
                    &fields(vec![
                        ("error", json!(error)),
                        ("retry_in_ms", json!(wait.as_millis() as u64)),
                    ]),
                );
            }
            Outcome::Failed { error } => {
                let handler = Arc::clone(&self.handler);
                let m = message.clone();
                let stored_error = error.clone();
                self.db
                    .call(move |conn| -> anyhow::Result<()> {
                        let tx = conn.transaction()?;
                        tx.execute(
                            "UPDATE outbox SET status = 'FAILED', attempts = ?2, last_error = ?3
                             WHERE id = ?1",
                            params![m.id, attempt, stored_error],
                        )?;
                        handler.failed(&tx, &m, &stored_error)?;
                        tx.commit()?;
                        Ok(())
                    })
                    .await?;
                self.count(&topic, "failed");
                self.logger.error(
                    "outbox delivery rejected; row marked FAILED",
                    &fields(vec![("error", json!(error))]),
                );
            }
        }
        Ok(())
    }

    fn count(&self, topic: &str, result: &str) {
        self.metrics.count(
            "shop_outbox_attempts_total",
            "Outbox delivery attempts by topic and result (delivered, retry, failed).",
            &[("topic", topic), ("result", result)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, retry_after: Option<&str>) -> Result<Reply, CallError> {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert("retry-after", HeaderValue::from_str(v).unwrap());
        }
        Ok(Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: bytes::Bytes::from_static(b"{\"detail\":\"x\"}"),
        })
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&reply(201, None)), Outcome::Delivered);
        assert_eq!(classify(&reply(200, None)), Outcome::Delivered);
        assert!(matches!(
            classify(&reply(503, Some("7"))),
            Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(&reply(429, None)),
            Outcome::Retry {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(classify(&reply(500, None)), Outcome::Retry { .. }));
        assert!(matches!(
            classify(&reply(400, None)),
            Outcome::Failed { .. }
        ));
        assert!(matches!(
            classify(&reply(404, None)),
            Outcome::Failed { .. }
        ));
        assert!(matches!(
            classify(&reply(409, None)),
            Outcome::Failed { .. }
        ));
        assert!(matches!(
            classify(&Err(CallError::Connect("refused".into()))),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(&Err(CallError::Timeout(Duration::from_secs(5)))),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn backoff_doubles_with_cap_jitter_and_retry_after() {
        let max = Duration::from_secs(30);
        let mid = 0.5; // no spread
        assert_eq!(backoff(1, max, None, mid), Duration::from_millis(500));
        assert_eq!(backoff(2, max, None, mid), Duration::from_millis(1000));
        assert_eq!(backoff(5, max, None, mid), Duration::from_millis(8000));
        assert_eq!(backoff(7, max, None, mid), max);
        assert_eq!(backoff(1000, max, None, mid), max);
        assert_eq!(backoff(1, max, None, 0.0), Duration::from_millis(400));
        let high = backoff(1, max, None, 0.999_999);
        assert!(high > Duration::from_millis(599) && high < Duration::from_millis(600));
        assert_eq!(
            backoff(10, max, None, 0.999),
            max,
            "the cap holds after jitter"
        );
        assert_eq!(
            backoff(1, Duration::from_millis(50), None, mid),
            Duration::from_millis(50)
        );
        assert_eq!(
            backoff(1, max, Some(Duration::from_secs(12)), mid),
            Duration::from_secs(12)
        );
        assert_eq!(
            backoff(6, max, Some(Duration::from_secs(1)), mid),
            Duration::from_secs(16)
        );
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(Some("999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn enqueue_and_count() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        enqueue(&conn, "t", 1, "{}", 0).unwrap();
        enqueue(&conn, "t", 2, "{}", 0).unwrap();
        conn.execute(
            "UPDATE outbox SET status = 'FAILED' WHERE aggregate_id = 2",
            [],
        )
        .unwrap();
        assert_eq!(
            counts(&conn).unwrap(),
            Counts {
                pending: 1,
                failed: 1,
                delivered: 0
            }
        );
    }
}

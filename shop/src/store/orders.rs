//! Orders, customers and carts: validation, pricing and the one-transaction checkout.
//!
//! The plain functions here hold the decisions (what a valid order is, how it is priced, when an
//! idempotency key matches); the database functions run inside the caller's transaction.

use std::collections::HashMap;

use axum::http::HeaderMap;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinSet;

use super::upstream::{CatalogueProduct, UpstreamError};
use super::{StoreState, TOPIC};
use crate::http::{Identity, Paging, Problem};
use crate::{db, outbox, text, time};

/// Lines per order.
pub const MAX_LINES: usize = 20;
/// Units per line.
pub const MAX_QUANTITY: i64 = 99;

/// The body of `POST /api/product-orders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrderRequest {
    pub items: Vec<LineRequest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LineRequest {
    pub product_id: i64,
    pub quantity: i64,
}

/// A validated order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub product_id: i64,
    pub quantity: i64,
}

/// Checks an order's lines: 1 to 20 lines, distinct positive product ids, quantities 1 to 99.
pub fn validate_lines(items: &[LineRequest]) -> Result<Vec<Line>, String> {
    if items.is_empty() {
        return Err("an order needs at least one item".into());
    }
    if items.len() > MAX_LINES {
        return Err(format!("an order may have at most {MAX_LINES} items"));
    }
    let mut lines: Vec<Line> = Vec::with_capacity(items.len());
    for item in items {
        if item.product_id < 1 {
            return Err("productId must be a positive integer".into());
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(format!("quantity must be between 1 and {MAX_QUANTITY}"));
        }
        if lines.iter().any(|l| l.product_id == item.product_id) {
            return Err(format!(
                "product {} appears twice; use one item with a quantity",
                item.product_id
            ));
        }
        lines.push(Line {
            product_id: item.product_id,
            quantity: item.quantity,
        });
    }
    Ok(lines)
}

/// A canonical text of the lines, stored with an idempotency key: a repeat with the same key
/// must be the same request.
pub fn fingerprint(lines: &[Line]) -> String {
    let mut sorted: Vec<Line> = lines.to_vec();
    sorted.sort_by_key(|l| l.product_id);
    sorted
        .iter()
        .map(|l| format!("{}x{}", l.product_id, l.quantity))
        .collect::<Vec<_>>()
        .join(",")
}

/// An `Idempotency-Key`: 1 to 200 visible ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if (1..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("Idempotency-Key must be 1 to 200 visible ASCII characters".into())
    }
}

/// `ORD-2026-000042`.
pub fn order_code(year: i64, id: i64) -> String {
    format!("ORD-{year}-{id:06}")
}

/// An order line priced from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: i64,
    pub name: String,
    pub price_cents: i64,
    pub quantity: i64,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub total_cents: i64,
    pub currency: String,
}

/// Prices the lines with the catalogue's products (never the client's numbers).
pub fn price(lines: &[Line], products: &HashMap<i64, CatalogueProduct>) -> Result<Priced, String> {
    let mut priced = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    let mut currency: Option<String> = None;
    for line in lines {
        let product = products
            .get(&line.product_id)
            .ok_or_else(|| format!("product {} does not exist", line.product_id))?;
        match &currency {
            None => currency = Some(product.currency.clone()),
            Some(c) if *c != product.currency => {
                return Err("the items are priced in different currencies".into());
            }
            Some(_) => {}
        }
        let line_total = product
            .price_cents
            .checked_mul(line.quantity)
            .ok_or("order total is too large")?;
        total = total
            .checked_add(line_total)
            .ok_or("order total is too large")?;
        priced.push(PricedLine {
            product_id: line.product_id,
            name: product.name.clone(),
            price_cents: product.price_cents,
            quantity: line.quantity,
            total_cents: line_total,
        });
    }
    if total > crate::invoice::MAX_AMOUNT_CENTS {
        return Err("order total is too large".into());
    }
    Ok(Priced {
        lines: priced,
        total_cents: total,
        currency: currency.unwrap_or_else(|| "EUR".into()),
    })
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderJson {
    pub id: i64,
    pub code: String,
    pub placed_date: String,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    pub customer_id: i64,
    pub items: Vec<OrderItemJson>,
    /// PENDING until the invoice exists, CREATED after, FAILED when invoice refused it.
    pub invoice_status: String,
    pub invoice_id: Option<i64>,
    pub invoice_attempts: i64,
    #[serde(skip)]
    pub placed_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemJson {
    pub product_id: i64,
    pub name: String,
    pub price_cents: i64,
    pub quantity: i64,
    pub total_cents: i64,
}

const ORDER_SELECT: &str = "SELECT o.id, o.code, o.placed_date, o.status, o.total_cents,
    o.currency, o.customer_id, o.invoice_status, o.invoice_id,
    COALESCE((SELECT MAX(b.attempts) FROM outbox b
              WHERE b.topic = 'invoice.create' AND b.aggregate_id = o.id), 0)
    FROM product_orders o";

fn order_row(r: &Row<'_>) -> rusqlite::Result<OrderJson> {
    let placed_ms: i64 = r.get(2)?;
    Ok(OrderJson {
        id: r.get(0)?,
        code: r.get(1)?,
        placed_date: time::rfc3339_ms(placed_ms),
        status: r.get(3)?,
        total_cents: r.get(4)?,
        currency: r.get(5)?,
        customer_id: r.get(6)?,
        items: Vec::new(),
        invoice_status: r.get(7)?,
        invoice_id: r.get(8)?,
        invoice_attempts: r.get(9)?,
        placed_ms,
    })
}

fn with_items(conn: &Connection, mut order: OrderJson) -> rusqlite::Result<OrderJson> {
    let mut stmt = conn.prepare_cached(
        "SELECT product_id, name, price_cents, quantity, total_cents FROM order_items
         WHERE order_id = ?1 ORDER BY id",
    )?;
    order.items = stmt
        .query_map([order.id], |r| {
            Ok(OrderItemJson {
                product_id: r.get(0)?,
                name: r.get(1)?,
                price_cents: r.get(2)?,
                quantity: r.get(3)?,
                total_cents: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(order)
}

/// The user's order `id`, or `None` (also when it is someone else's).
pub fn load_order(conn: &Connection, user: &str, id: i64) -> rusqlite::Result<Option<OrderJson>> {
    let order = conn
        .query_row(
            &format!("{ORDER_SELECT} WHERE o.id = ?1 AND o.user_id = ?2"),
            params![id, user],
            order_row,
        )
        .optional()?;
    order.map(|o| with_items(conn, o)).transpose()
}

/// One page of the user's orders, newest first, and the total count.
pub fn list_orders(
    conn: &Connection,
    user: &str,
    paging: Paging,
) -> rusqlite::Result<(Vec<OrderJson>, i64)> {
    let (orders, total) = db::page(
        conn,
        "SELECT COUNT(*) FROM product_orders WHERE user_id = ?1",
        &format!("{ORDER_SELECT} WHERE o.user_id = ?1 ORDER BY o.id DESC"),
        params![user],
        paging,
        order_row,
    )?;
    let orders = orders
        .into_iter()
        .map(|o| with_items(conn, o))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((orders, total))
}

/// How many orders the user has placed.
pub fn order_count(conn: &Connection, user: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM product_orders WHERE user_id = ?1",
        [user],
        |r| r.get(0),
    )
}

/// The order an idempotency key already made: `(id, fingerprint)`.
fn find_by_key(
    conn: &Connection,
    user: &str,
    key: &str,
) -> rusqlite::Result<Option<(i64, Option<String>)>> {
    conn.query_row(
        "SELECT id, request_fingerprint FROM product_orders
         WHERE user_id = ?1 AND idempotency_key = ?2",
        params![user, key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// A customer record.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerJson {
    pub id: i64,
    pub login: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub telephone: String,
    pub address_line1: String,
    pub city: String,
    pub country: String,
}

/// The body of `POST /api/customers` and `PUT /api/customers/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomerRequest {
    #[serde(default)]
    pub id: Option<i64>,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    #[serde(default)]
    pub telephone: String,
    #[serde(default)]
    pub address_line1: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub country: String,
}

/// Checks a customer's fields; the message names the wrong one.
pub fn validate_customer(c: &CustomerRequest) -> Result<(), String> {
    text::check("firstName", c.first_name.trim(), 1, 100)?;
    text::check("lastName", c.last_name.trim(), 1, 100)?;
    text::check("email", &c.email, 3, 254)?;
    let at = c.email.find('@');
    let plausible = at.is_some_and(|i| i > 0 && i + 1 < c.email.len())
        && !c.email.contains(char::is_whitespace);
    if !plausible {
        return Err("email must be an address such as ada@example.com".into());
    }
    text::check("telephone", &c.telephone, 0, 32)?;
    if !c
        .telephone
        .chars()
        .all(|ch| ch.is_ascii_digit() || " +-()./".contains(ch))
    {
        return Err("telephone may only contain digits, spaces and + - ( ) . /".into());
    }
    text::check("addressLine1", &c.address_line1, 0, 200)?;
    text::check("city", &c.city, 0, 100)?;
    text::check("country", &c.country, 0, 100)?;
    Ok(())
}

const CUSTOMER_COLUMNS: &str =
    "id, user_id, first_name, last_name, email, telephone, address_line1, city, country";

fn customer_row(r: &Row<'_>) -> rusqlite::Result<CustomerJson> {
    Ok(CustomerJson {
        id: r.get(0)?,
        login: r.get(1)?,
        first_name: r.get(2)?,
        last_name: r.get(3)?,
        email: r.get(4)?,
        telephone: r.get(5)?,
        address_line1: r.get(6)?,
        city: r.get(7)?,
        country: r.get(8)?,
    })
}

pub fn customer(conn: &Connection, user: &str) -> rusqlite::Result<Option<CustomerJson>> {
    conn.query_row(
        &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE user_id = ?1"),
        [user],
        customer_row,
    )
    .optional()
}

/// Creates the user's customer record; 409 if there is one.
pub fn create_customer(
    conn: &mut Connection,
    user: &str,
    c: &CustomerRequest,
) -> Result<CustomerJson, Problem> {
    let tx = conn.transaction()?;
    if let Some(existing) = customer(&tx, user)? {
        return Err(Problem::conflict(format!(
            "you already have customer record {}; update it with PUT /api/customers/{}",
            existing.id, existing.id
        )));
    }
    tx.execute(
        "INSERT INTO customers (user_id, first_name, last_name, email, telephone, address_line1,
         city, country) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            user,
            c.first_name.trim(),
            c.last_name.trim(),
            c.email,
            c.telephone,
            c.address_line1,
            c.city,
            c.country
        ],
    )?;
    let created = customer(&tx, user)?.ok_or_else(|| Problem::internal("customer vanished"))?;
    tx.commit()?;
    Ok(created)
}

/// Updates the user's own customer record `id`; 404 for any other id.
pub fn update_customer(
    conn: &mut Connection,
    user: &str,
    id: i64,
    c: &CustomerRequest,
) -> Result<CustomerJson, Problem> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        "UPDATE customers SET first_name = ?3, last_name = ?4, email = ?5, telephone = ?6,
         address_line1 = ?7, city = ?8, country = ?9 WHERE id = ?1 AND user_id = ?2",
        params![
            id,
            user,
            c.first_name.trim(),
            c.last_name.trim(),
            c.email,
            c.telephone,
            c.address_line1,
            c.city,
            c.country
        ],
    )?;
    if changed == 0 {
        return Err(Problem::not_found(format!("customer {id} does not exist")));
    }
    let updated = customer(&tx, user)?.ok_or_else(|| Problem::internal("customer vanished"))?;
    tx.commit()?;
    Ok(updated)
}

/// "Ada King Lovelace" → ("Ada King", "Lovelace").
pub fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    match name.rsplit_once(' ') {
        Some((first, last)) => (first.trim().to_owned(), last.to_owned()),
        None => (name.to_owned(), String::new()),
    }
}

/// The user's customer id, creating the record from the token's claims on first order.
fn ensure_customer(conn: &Connection, user: &Identity) -> rusqlite::Result<i64> {
    if let Some(c) = customer(conn, &user.sub)? {
        return Ok(c.id);
    }
    let (first, last) = if user.name == user.sub || user.name == user.email {
        (String::new(), String::new())
    } else {
        split_name(&user.name)
    };
    conn.execute(
        "INSERT INTO customers (user_id, first_name, last_name, email) VALUES (?1, ?2, ?3, ?4)",
        params![
            user.sub,
            text::truncate(&first, 100),
            text::truncate(&last, 100),
            user.email
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// A cart line (a snapshot of the product when it was added; checkout re-prices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartLine {
    pub product_id: i64,
    pub quantity: i64,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub emoji: String,
}

pub fn cart(conn: &Connection, user: &str) -> rusqlite::Result<Vec<CartLine>> {
    let mut stmt = conn.prepare_cached(
        "SELECT product_id, quantity, name, price_cents, currency, emoji FROM cart_items
         WHERE user_id = ?1 ORDER BY added_at, product_id",
    )?;
    stmt.query_map([user], |r| {
        Ok(CartLine {
            product_id: r.get(0)?,
            quantity: r.get(1)?,
            name: r.get(2)?,
            price_cents: r.get(3)?,
            currency: r.get(4)?,
            emoji: r.get(5)?,
        })
    })?
    .collect()
}

/// Units in the user's cart (the header's badge).
pub fn cart_count(conn: &Connection, user: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(SUM(quantity), 0) FROM cart_items WHERE user_id = ?1",
        [user],
        |r| r.get(0),
    )
}

/// Why an item could not go into the cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartRefusal {
    Full,
}

/// Adds units of a product (capped at 99 per line); a cart holds at most 20 lines.
pub fn add_to_cart(
    conn: &mut Connection,
    user: &str,
    product: &CatalogueProduct,
    quantity: i64,
    now_ms: i64,
) -> rusqlite::Result<Result<(), CartRefusal>> {
    let tx = conn.transaction()?;
    let existing: Option<i64> = tx
        .query_row(
            "SELECT quantity FROM cart_items WHERE user_id = ?1 AND product_id = ?2",
            params![user, product.id],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        Some(q) => {
            tx.execute(
                "UPDATE cart_items SET quantity = ?3, name = ?4, price_cents = ?5, currency = ?6,
                 emoji = ?7 WHERE user_id = ?1 AND product_id = ?2",
                params![
                    user,
                    product.id,
                    q.saturating_add(quantity).min(MAX_QUANTITY),
                    product.name,
                    product.price_cents,
                    product.currency,
                    text::truncate(&product.emoji, 16)
                ],
            )?;
        }
        None => {
            let lines: i64 = tx.query_row(
                "SELECT COUNT(*) FROM cart_items WHERE user_id = ?1",
                [user],
                |r| r.get(0),
            )?;
            if lines >= MAX_LINES as i64 {
                return Ok(Err(CartRefusal::Full));
            }
            tx.execute(
                "INSERT INTO cart_items (user_id, product_id, quantity, name, price_cents,
                 currency, emoji, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    user,
                    product.id,
                    quantity.clamp(1, MAX_QUANTITY),
                    product.name,
                    product.price_cents,
                    product.currency,
                    text::truncate(&product.emoji, 16),
                    now_ms
                ],
            )?;
        }
    }
    tx.commit()?;
    Ok(Ok(()))
}

pub fn remove_from_cart(conn: &Connection, user: &str, product_id: i64) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM cart_items WHERE user_id = ?1 AND product_id = ?2",
        params![user, product_id],
    )?;
    Ok(())
}

/// Why an order was not placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderError {
    Invalid(String),
    UnknownProduct(i64),
    CatalogueUnavailable(String),
    Conflict(String),
    Internal(String),
}

impl From<OrderError> for Problem {
    fn from(e: OrderError) -> Problem {
        match e {
            OrderError::Invalid(detail) => Problem::bad_request(detail),
            OrderError::UnknownProduct(id) => {
                Problem::bad_request(format!("product {id} does not exist"))
            }
            OrderError::CatalogueUnavailable(_) => {
                Problem::unavailable("the catalogue is unavailable; no order was placed")
            }
            OrderError::Conflict(detail) => Problem::conflict(detail),
            OrderError::Internal(cause) => Problem::internal(cause),
        }
    }
}

impl From<anyhow::Error> for OrderError {
    fn from(e: anyhow::Error) -> OrderError {
        OrderError::Internal(format!("{e:#}"))
    }
}

impl From<rusqlite::Error> for OrderError {
    fn from(e: rusqlite::Error) -> OrderError {
        OrderError::Internal(format!("database: {e}"))
    }
}

/// The result of a checkout: the order, and whether this call created it (or an earlier call
/// with the same idempotency key did).
#[derive(Debug, Clone)]
pub struct Placed {
    pub order: OrderJson,
    pub created: bool,
}

/// Where checkout's lines come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An API request: a repeated idempotency key must come with the same lines.
    Api,
    /// The user's cart, which checkout empties in the same transaction. A repeated key (a
    /// double-submitted form) returns the first order whatever the cart holds now.
    Cart,
}

/// Fetches every product of the order from the catalogue, concurrently.
async fn fetch_products(
    s: &StoreState,
    incoming: &HeaderMap,
    lines: &[Line],
) -> Result<HashMap<i64, CatalogueProduct>, OrderError> {
    let mut tasks = JoinSet::new();
    for line in lines {
        let upstream = s.upstream.clone();
        let headers = incoming.clone();
        let id = line.product_id;
        tasks.spawn(async move { (id, upstream.product(&headers, id).await) });
    }
    let mut products = HashMap::new();
    let mut unknown: Option<i64> = None;
    let mut unavailable: Option<String> = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok((product, _)))) => {
                products.insert(product.id, product);
            }
            Ok((id, Err(UpstreamError::NotFound))) => unknown = unknown.or(Some(id)),
            Ok((id, Err(UpstreamError::Unavailable(why)))) => {
                unavailable = unavailable.or(Some(format!("product {id}: {why}")));
            }
            Err(e) => unavailable = unavailable.or(Some(format!("lookup task failed: {e}"))),
        }
    }
    if let Some(why) = unavailable {
        return Err(OrderError::CatalogueUnavailable(why));
    }
    if let Some(id) = unknown {
        return Err(OrderError::UnknownProduct(id));
    }
    Ok(products)
}

/// Places an order: prices it from the catalogue (refusing it whole if the catalogue cannot be
/// reached), then commits the order, its items and the invoice outbox row in one transaction
/// (and, from the cart, empties the cart in that same transaction).
pub(crate) async fn place_order(
    s: &StoreState,
    user: &Identity,
    incoming: &HeaderMap,
    lines: Vec<Line>,
    key: Option<String>,
    source: Source,
) -> Result<Placed, OrderError> {
    let print = fingerprint(&lines);
    if let Some(key) = key.clone() {
        let sub = user.sub.clone();
        let found = s
            .common
            .db
            .call(move |conn| -> Result<_, OrderError> { Ok(find_by_key(conn, &sub, &key)?) })
            .await?;
        if let Some((id, stored)) = found {
            return existing(s, user, id, stored.as_deref(), &print, source).await;
        }
    }

    let products = fetch_products(s, incoming, &lines).await?;
    let priced = price(&lines, &products).map_err(OrderError::Invalid)?;

    let now = time::now_ms();
    let owner = user.clone();
    let tx_key = key.clone();
    let tx_print = print.clone();
    let outcome = s
        .common
        .db
        .call(
            move |conn| -> Result<Result<i64, (i64, Option<String>)>, OrderError> {
                let tx = conn.transaction()?;
                // The key may have been used while the catalogue was asked.
                if let Some(key) = &tx_key
                    && let Some(found) = find_by_key(&tx, &owner.sub, key)?
                {
                    return Ok(Err(found));
                }
                let customer_id = ensure_customer(&tx, &owner)?;
                let placeholder = format!("ORD-NEW-{}", crate::rand::token());
                tx.execute(
                    "INSERT INTO product_orders (code, placed_date, status, total_cents, currency,
                 customer_id, user_id, idempotency_key, request_fingerprint)
                 VALUES (?1, ?2, 'PENDING', ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        placeholder,
                        now,
                        priced.total_cents,
                        priced.currency,
                        customer_id,
                        owner.sub,
                        tx_key,
                        tx_key.as_ref().map(|_| tx_print.clone())
                    ],
                )?;
                let id = tx.last_insert_rowid();
                let code = order_code(time::year(now), id);
                tx.execute(
                    "UPDATE product_orders SET code = ?2 WHERE id = ?1",
                    params![id, code],
                )?;
                for line in &priced.lines {
                    tx.execute(
                    "INSERT INTO order_items (order_id, product_id, name, price_cents, quantity,
                     total_cents) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        id,
                        line.product_id,
                        line.name,
                        line.price_cents,
                        line.quantity,
                        line.total_cents
                    ],
                )?;
                }
                let email = if owner.email.is_empty() {
                    customer(&tx, &owner.sub)?
                        .map(|c| c.email)
                        .unwrap_or_default()
                } else {
                    owner.email.clone()
                };
                let payload = json!({
                    "orderId": id,
                    "orderCode": code,
                    "customer": owner.sub,
                    "email": email,
                    "amountCents": priced.total_cents,
                    "currency": priced.currency,
                });
                outbox::enqueue(&tx, TOPIC, id, &payload.to_string(), now)?;
                if source == Source::Cart {
                    for line in &priced.lines {
                        remove_from_cart(&tx, &owner.sub, line.product_id)?;
                    }
                }
                tx.commit()?;
                Ok(Ok(id))
            },
        )
        .await?;
    match outcome {
        Ok(id) => {
            s.wake.notify_one();
            let order = load(s, user, id).await?;
            s.common.logger.info(
                "order placed",
                &[
                    ("order", json!(order.code)),
                    ("order_id", json!(order.id)),
                    ("total_cents", json!(order.total_cents)),
                    ("lines", json!(order.items.len())),
                ],
            );
            Ok(Placed {
                order,
                created: true,
            })
        }
        Err((id, stored)) => existing(s, user, id, stored.as_deref(), &print, source).await,
    }
}

/// The order an idempotency key of this user already placed.
pub(crate) async fn order_for_key(
    s: &StoreState,
    user: &Identity,
    key: &str,
) -> Result<Option<i64>, OrderError> {
    let sub = user.sub.clone();
    let key = key.to_owned();
    let found = s
        .common
        .db
        .call(move |conn| -> Result<_, OrderError> { Ok(find_by_key(conn, &sub, &key)?) })
        .await?;
    Ok(found.map(|(id, _)| id))
}

async fn existing(
    s: &StoreState,
    user: &Identity,
    id: i64,
    stored: Option<&str>,
    print: &str,
    source: Source,
) -> Result<Placed, OrderError> {
    if source == Source::Api && stored != Some(print) {
        return Err(OrderError::Conflict(
            "this Idempotency-Key was used for a different order".into(),
        ));
    }
    Ok(Placed {
        order: load(s, user, id).await?,
        created: false,
    })
}

async fn load(s: &StoreState, user: &Identity, id: i64) -> Result<OrderJson, OrderError> {
    let sub = user.sub.clone();
    s.common
        .db
        .call(move |conn| -> Result<_, OrderError> { Ok(load_order(conn, &sub, id)?) })
        .await?
        .ok_or_else(|| OrderError::Internal(format!("order {id} vanished after commit")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(items: &[(i64, i64)]) -> Vec<LineRequest> {
        items
            .iter()
            .map(|&(product_id, quantity)| LineRequest {
                product_id,
                quantity,
            })
            .collect()
    }

    fn product(id: i64, price_cents: i64, currency: &str) -> CatalogueProduct {
        CatalogueProduct {
            id,
            name: format!("p{id}"),
            description: String::new(),
            price_cents,
            currency: currency.into(),
            category_id: None,
            emoji: String::new(),
            variant: None,
            rating: None,
            review_count: None,
            list_price_cents: None,
        }
    }

    #[test]
    fn line_validation() {
        assert_eq!(
            validate_lines(&req(&[(1, 2), (3, 99)])).unwrap(),
            vec![
                Line {
                    product_id: 1,
                    quantity: 2
                },
                Line {
                    product_id: 3,
                    quantity: 99
                }
            ]
        );
        assert!(validate_lines(&[]).unwrap_err().contains("at least one"));
        assert_eq!(
            validate_lines(&req(&[(1, 100)])).unwrap_err(),
            "quantity must be between 1 and 99"
        );
        assert!(validate_lines(&req(&[(1, 0)])).is_err());
        assert!(validate_lines(&req(&[(1, -5)])).is_err());
        assert!(validate_lines(&req(&[(0, 1)])).is_err());
        assert!(
            validate_lines(&req(&[(1, 1), (1, 2)]))
                .unwrap_err()
                .contains("twice")
        );
        let many: Vec<(i64, i64)> = (1..=21).map(|i| (i, 1)).collect();
        assert!(
            validate_lines(&req(&many))
                .unwrap_err()
                .contains("at most 20")
        );
    }

    #[test]
    fn fingerprints_ignore_line_order() {
        let a = validate_lines(&req(&[(3, 1), (1, 2)])).unwrap();
        let b = validate_lines(&req(&[(1, 2), (3, 1)])).unwrap();
        assert_eq!(fingerprint(&a), "1x2,3x1");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&a),
            fingerprint(&validate_lines(&req(&[(1, 2)])).unwrap())
        );
    }

    #[test]
    fn pricing_uses_the_catalogue() {
        let products: HashMap<i64, CatalogueProduct> =
            [(1, product(1, 1450, "EUR")), (2, product(2, 300, "EUR"))].into();
        let lines = validate_lines(&req(&[(1, 2), (2, 3)])).unwrap();
        let priced = price(&lines, &products).unwrap();
        assert_eq!(priced.total_cents, 2 * 1450 + 3 * 300);
        assert_eq!(priced.currency, "EUR");
        assert_eq!(priced.lines[0].name, "p1");
        assert_eq!(priced.lines[1].total_cents, 900);
        let mixed: HashMap<i64, CatalogueProduct> =
            [(1, product(1, 1, "EUR")), (2, product(2, 1, "USD"))].into();
        assert!(price(&lines, &mixed).unwrap_err().contains("currencies"));
        let huge: HashMap<i64, CatalogueProduct> = [(1, product(1, 1_000_000_000, "EUR"))].into();
        let one = validate_lines(&req(&[(1, 2)])).unwrap();
        assert!(price(&one, &huge).unwrap_err().contains("too large"));
        assert!(price(&one, &HashMap::new()).is_err());
    }

    #[test]
    fn codes_keys_names() {
        assert_eq!(order_code(2026, 42), "ORD-2026-000042");
        assert_eq!(order_code(2026, 1_234_567), "ORD-2026-1234567");
        assert!(validate_idempotency_key("a-b_c.1").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key(&"k".repeat(201)).is_err());
        assert_eq!(
            split_name("Ada King Lovelace"),
            ("Ada King".into(), "Lovelace".into())
        );
        assert_eq!(split_name("Plato"), ("Plato".into(), String::new()));
    }

    #[test]
    fn customer_validation() {
        let ok = CustomerRequest {
            id: None,
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            telephone: "+44 20 7946 0000".into(),
            address_line1: "12 St James's Square".into(),
            city: "London".into(),
            country: "United Kingdom".into(),
        };
        assert!(validate_customer(&ok).is_ok());
        let mut bad = ok.clone();
        bad.first_name = " ".into();
        assert!(validate_customer(&bad).unwrap_err().contains("firstName"));
        let mut bad = ok.clone();
        bad.email = "ada".into();
        assert!(validate_customer(&bad).unwrap_err().contains("email"));
        let mut bad = ok.clone();
        bad.telephone = "call me".into();
        assert!(validate_customer(&bad).unwrap_err().contains("telephone"));
        let mut bad = ok;
        bad.city = "x".repeat(101);
        assert!(validate_customer(&bad).unwrap_err().contains("city"));
    }
}

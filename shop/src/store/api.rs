//! Store's JSON API: `/api/account`, `/api/customers`, `/api/product-orders`. Every route needs
//! a signed-in user and shows only that user's data.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::StoreState;
use super::orders::{self, CustomerRequest, OrderRequest, Source};
use crate::http::{self, Id, JsonBody, Params, Problem, User};

/// The JHipster account of the signed-in user, from the verified claims.
pub async fn account(User(user): User) -> Response {
    axum::Json(json!({
        "login": user.sub,
        "email": user.email,
        "name": user.name,
        "authorities": ["ROLE_USER"],
        "activated": true,
        "langKey": "en",
    }))
    .into_response()
}

/// The caller's own customer record: an array of 0 or 1.
pub async fn list_customers(
    State(s): State<StoreState>,
    User(user): User,
) -> Result<Response, Problem> {
    http::get_list(&s.common.db, move |conn| {
        let items: Vec<_> = orders::customer(conn, &user.sub)?.into_iter().collect();
        let total = items.len() as i64;
        Ok((items, total))
    })
    .await
}

pub async fn get_customer(
    State(s): State<StoreState>,
    User(user): User,
    Id(id): Id,
) -> Result<Response, Problem> {
    http::get_one(&s.common.db, "customer", id, move |conn| {
        Ok(orders::customer(conn, &user.sub)?.filter(|c| c.id == id))
    })
    .await
}

pub async fn create_customer(
    State(s): State<StoreState>,
    User(user): User,
    JsonBody(body): JsonBody<CustomerRequest>,
) -> Result<Response, Problem> {
    if body.id.is_some() {
        return Err(Problem::bad_request(
            "a new customer cannot already have an id",
        ));
    }
    orders::validate_customer(&body).map_err(Problem::bad_request)?;
    let created = s
        .common
        .db
        .call(move |conn| orders::create_customer(conn, &user.sub, &body))
        .await?;
    http::posted(true, &format!("/api/customers/{}", created.id), &created)
}

pub async fn update_customer(
    State(s): State<StoreState>,
    User(user): User,
    Id(id): Id,
    JsonBody(body): JsonBody<CustomerRequest>,
) -> Result<Response, Problem> {
    if body.id.is_some_and(|body_id| body_id != id) {
        return Err(Problem::bad_request(
            "the body's id differs from the path's",
        ));
    }
    orders::validate_customer(&body).map_err(Problem::bad_request)?;
    let updated = s
        .common
        .db
        .call(move |conn| orders::update_customer(conn, &user.sub, id, &body))
        .await?;
    Ok(axum::Json(updated).into_response())
}

pub async fn list_orders(
    State(s): State<StoreState>,
    User(user): User,
    params: Params,
) -> Result<Response, Problem> {
    let paging = params.paging()?;
    http::get_list(&s.common.db, move |conn| {
        orders::list_orders(conn, &user.sub, paging)
    })
    .await
}

pub async fn get_order(
    State(s): State<StoreState>,
    User(user): User,
    Id(id): Id,
) -> Result<Response, Problem> {
    http::get_one(&s.common.db, "order", id, move |conn| {
        orders::load_order(conn, &user.sub, id)
    })
    .await
}

/// Places an order. `Idempotency-Key` (optional): the same key from the same user returns the
/// first order with 200 instead of placing another.
pub async fn create_order(
    State(s): State<StoreState>,
    User(user): User,
    headers: HeaderMap,
    JsonBody(body): JsonBody<OrderRequest>,
) -> Result<Response, Problem> {
    let lines = orders::validate_lines(&body.items).map_err(Problem::bad_request)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| Problem::bad_request("Idempotency-Key must be visible ASCII"))?
                .trim()
                .to_owned();
            orders::validate_idempotency_key(&key).map_err(Problem::bad_request)?;
            Some(key)
        }
    };
    let placed = orders::place_order(&s, &user, &headers, lines, key, Source::Api).await?;
    http::posted(
        placed.created,
        &format!("/api/product-orders/{}", placed.order.id),
        &placed.order,
    )
}

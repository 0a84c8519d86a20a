//! Store's JSON API against a real product service (invoice is not running: orders stay
//! PENDING, which these tests do not mind).

use axum::http::{HeaderMap, Method};
use meshwright_shop::Variant;
use serde_json::{Value, json};

use crate::common::*;

fn order(items: &[(i64, i64)]) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|(p, q)| json!({"productId": p, "quantity": q}))
        .collect();
    json!({ "items": items }).to_string()
}

#[tokio::test]
async fn account_comes_from_the_verified_claims() {
    let shop = Shop::start(Variant::V1).await;
    let r = get(&shop.url("/api/account"), user("u-ada", "Ada Lovelace")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-shop-instance"), Some("store"));
    assert_eq!(
        json(&r),
        json!({"login": "u-ada", "email": "u-ada@example.com", "name": "Ada Lovelace",
               "authorities": ["ROLE_USER"], "activated": true, "langKey": "en"})
    );
    assert_problem(&get(&shop.url("/api/account"), HeaderMap::new()).await, 401);
    assert_problem(
        &get(
            &shop.url("/api/account"),
            with(HeaderMap::new(), "x-jwt-sub", "u-ada"),
        )
        .await,
        401,
    );
    shop.stop().await;
}

#[tokio::test]
async fn customers_are_per_user() {
    let shop = Shop::start(Variant::V1).await;
    let ada = || user("u-ada", "Ada");
    let list = get(&shop.url("/api/customers"), ada()).await;
    assert_eq!(json(&list), json!([]));
    assert_eq!(list.header("x-total-count"), Some("0"));
    let record = json!({"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
        "telephone": "+44 20 7946 0000", "addressLine1": "12 St James's Square", "city": "London",
        "country": "United Kingdom"});
    let created = post_json(&shop.url("/api/customers"), ada(), &record.to_string()).await;
    assert_eq!(created.status, 201, "{}", text(&created));
    let c = json(&created);
    let id = c["id"].as_i64().unwrap();
    assert_eq!(c["login"], "u-ada");
    assert_eq!(
        created.header("location"),
        Some(format!("/api/customers/{id}").as_str())
    );
    assert_problem(
        &post_json(&shop.url("/api/customers"), ada(), &record.to_string()).await,
        409,
    );

    let mut changed = record.clone();
    changed["city"] = json!("Marylebone");
    let put = send(
        Method::PUT,
        &shop.url(&format!("/api/customers/{id}")),
        ada(),
        Some("application/json"),
        &changed.to_string(),
    )
    .await;
    assert_eq!(put.status, 200, "{}", text(&put));
    assert_eq!(json(&put)["city"], "Marylebone");
    assert_eq!(
        json(&get(&shop.url("/api/customers"), ada()).await)[0]["city"],
        "Marylebone"
    );

    // Bob can neither see nor change Ada's record.
    let bob = || user("u-bob", "Bob");
    assert_eq!(
        json(&get(&shop.url("/api/customers"), bob()).await),
        json!([])
    );
    assert_problem(
        &get(&shop.url(&format!("/api/customers/{id}")), bob()).await,
        404,
    );
    assert_problem(
        &send(
            Method::PUT,
            &shop.url(&format!("/api/customers/{id}")),
            bob(),
            Some("application/json"),
            &changed.to_string(),
        )
        .await,
        404,
    );

    let mut with_id = record.clone();
    with_id["id"] = json!(5);
    assert_problem(
        &post_json(&shop.url("/api/customers"), bob(), &with_id.to_string()).await,
        400,
    );
    let mut unknown = record.clone();
    unknown["role"] = json!("admin");
    assert_problem(
        &post_json(&shop.url("/api/customers"), bob(), &unknown.to_string()).await,
        400,
    );
    let mut bad_email = record.clone();
    bad_email["email"] = json!("nope");
    assert_problem(
        &post_json(&shop.url("/api/customers"), bob(), &bad_email.to_string()).await,
        400,
    );
    let mut long = record;
    long["firstName"] = json!("x".repeat(101));
    assert_problem(
        &post_json(&shop.url("/api/customers"), bob(), &long.to_string()).await,
        400,
    );
    assert_problem(
        &send(
            Method::PUT,
            &shop.url("/api/customers/abc"),
            bob(),
            Some("application/json"),
            "{}",
        )
        .await,
        400,
    );
    assert_problem(
        &post_json(&shop.url("/api/customers"), HeaderMap::new(), "{}").await,
        401,
    );
    shop.stop().await;
}

#[tokio::test]
async fn orders_are_priced_from_the_catalogue_and_private() {
    let shop = Shop::start(Variant::V1).await;
    let r = post_json(
        &shop.url("/api/product-orders"),
        ada(),
        &order(&[(1, 2), (5, 1)]),
    )
    .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let o = json(&r);
    let id = o["id"].as_i64().unwrap();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/product-orders/{id}").as_str())
    );
    let code = o["code"].as_str().unwrap();
    assert!(
        code.starts_with("ORD-20") && code.ends_with(&format!("{id:06}")),
        "{code}"
    );
    assert_eq!(o["status"], "PENDING");
    assert_eq!(o["invoiceStatus"], "PENDING");
    assert_eq!(o["invoiceId"], Value::Null);
    assert_eq!(o["totalCents"], 2 * 1450 + 3490);
    assert_eq!(o["currency"], "EUR");
    assert_eq!(o["items"][0]["name"], "Ethiopia Yirgacheffe");
    assert_eq!(o["items"][0]["priceCents"], 1450);
    assert_eq!(o["items"][0]["totalCents"], 2900);
    assert_eq!(o["items"][1]["name"], "House Espresso");
    assert!(o["placedDate"].as_str().unwrap().ends_with('Z'));

    // The customer record was made from the claims on the first order.
    let customers = json(&get(&shop.url("/api/customers"), ada()).await);
    assert_eq!(customers[0]["firstName"], "Ada");
    assert_eq!(customers[0]["lastName"], "Lovelace");
    assert_eq!(customers[0]["id"], o["customerId"]);

    let list = get(&shop.url("/api/product-orders"), ada()).await;
    assert_eq!(list.header("x-total-count"), Some("1"));
    assert_eq!(json(&list)[0]["code"], code);
    assert_eq!(
        json(&get(&shop.url(&format!("/api/product-orders/{id}")), ada()).await)["code"],
        code
    );

    let bob = || user("u-bob", "Bob");
    assert_problem(
        &get(&shop.url(&format!("/api/product-orders/{id}")), bob()).await,
        404,
    );
    assert_eq!(
        json(&get(&shop.url("/api/product-orders"), bob()).await),
        json!([])
    );
    assert_problem(&get(&shop.url("/api/product-orders/abc"), bob()).await, 400);
    assert_problem(&get(&shop.url("/api/product-orders/999"), ada()).await, 404);
    assert_problem(
        &get(&shop.url("/api/product-orders"), HeaderMap::new()).await,
        401,
    );

    let m = prometheus(&shop.store.url()).await;
    assert_eq!(
        metric(&m, r#"shop_orders_total{service="store"}"#),
        Some(1.0)
    );
    assert!(metric(&m, r#"shop_outbox_pending{service="store"}"#).is_some());
    shop.stop().await;
}

#[tokio::test]
async fn bad_orders_are_refused_with_a_problem() {
    let shop = Shop::start(Variant::V1).await;
    let url = shop.url("/api/product-orders");
    let ada = || user("u-ada", "Ada");
    let cases: Vec<(String, &str)> = vec![
        (order(&[]), "at least one"),
        (order(&[(1, 0)]), "quantity must be between 1 and 99"),
        (order(&[(1, 100)]), "quantity must be between 1 and 99"),
        (
            order(&[(1, 1_000_000_000_000)]),
            "quantity must be between 1 and 99",
        ),
        (
            r#"{"items":[{"productId":1,"quantity":1e40}]}"#.into(),
            "invalid",
        ),
        (order(&[(1, -1)]), "quantity"),
        (order(&[(1, 1), (1, 2)]), "twice"),
        (
            order(&(1..=21).map(|i| (i, 1)).collect::<Vec<_>>()),
            "at most 20",
        ),
        (order(&[(999, 1)]), "product 999 does not exist"),
        (order(&[(0, 1)]), "productId"),
        (
            r#"{"items":[{"productId":1,"quantity":1,"priceCents":1}]}"#.into(),
            "unknown field",
        ),
        (r#"{"items":[],"total":0}"#.into(), "unknown field"),
        (r#"{"items":"#.into(), "malformed JSON"),
        (
            r#"{"items":[{"productId":"one","quantity":1}]}"#.into(),
            "invalid",
        ),
        ("{}".into(), "missing field"),
    ];
    for (body, detail) in cases {
        let p = assert_problem(&post_json(&url, ada(), &body).await, 400);
        assert!(
            p["detail"].as_str().unwrap().contains(detail),
            "{body}: {}",
            p["detail"]
        );
    }
    assert_problem(
        &send(
            Method::POST,
            &url,
            ada(),
            Some("text/plain"),
            &order(&[(1, 1)]),
        )
        .await,
        415,
    );
    assert_problem(
        &post_json(&url, HeaderMap::new(), &order(&[(1, 1)])).await,
        401,
    );
    assert_problem(
        &post_json(
            &url,
            with(ada(), "idempotency-key", "has space"),
            &order(&[(1, 1)]),
        )
        .await,
        400,
    );
    // Nothing was placed.
    assert_eq!(json(&get(&url, ada()).await), json!([]));
    shop.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_first_order() {
    let shop = Shop::start(Variant::V1).await;
    let url = shop.url("/api/product-orders");
    let ada = || with(user("u-ada", "Ada"), "idempotency-key", "k-1");
    let first = post_json(&url, ada(), &order(&[(2, 1), (3, 2)])).await;
    assert_eq!(first.status, 201);
    // The same lines in another order are the same request.
    let again = post_json(&url, ada(), &order(&[(3, 2), (2, 1)])).await;
    assert_eq!(again.status, 200);
    assert_eq!(json(&again)["id"], json(&first)["id"]);
    let different = post_json(&url, ada(), &order(&[(2, 5)])).await;
    assert_problem(&different, 409);
    // Keys are per user.
    let bob = post_json(
        &url,
        with(user("u-bob", "Bob"), "idempotency-key", "k-1"),
        &order(&[(2, 1), (3, 2)]),
    )
    .await;
    assert_eq!(bob.status, 201);
    assert_ne!(json(&bob)["id"], json(&first)["id"]);
    assert_eq!(
        get(&url, user("u-ada", "Ada"))
            .await
            .header("x-total-count"),
        Some("1")
    );
    shop.stop().await;
}

#[tokio::test]
async fn no_order_when_the_catalogue_is_down() {
    let mut shop = Shop::start(Variant::V1).await;
    shop.product.take().unwrap().shutdown().await.unwrap();
    let url = shop.url("/api/product-orders");
    let r = post_json(&url, user("u-ada", "Ada"), &order(&[(1, 1)])).await;
    let p = assert_problem(&r, 503);
    assert_eq!(
        p["detail"],
        "the catalogue is unavailable; no order was placed"
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(json(&get(&url, user("u-ada", "Ada")).await), json!([]));
    let m = prometheus(&shop.store.url()).await;
    assert_eq!(
        metric(&m, r#"shop_orders_total{service="store"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"shop_outbox_pending{service="store"}"#),
        Some(0.0)
    );
    assert_eq!(
        json(&get(&shop.url("/api/customers"), user("u-ada", "Ada")).await),
        json!([])
    );
    shop.stop().await;
}

#[tokio::test]
async fn cross_site_api_writes_are_refused() {
    let shop = Shop::start(Variant::V1).await;
    let url = shop.url("/api/product-orders");
    let h = with(user("u-ada", "Ada"), "sec-fetch-site", "cross-site");
    assert_problem(&post_json(&url, h, &order(&[(1, 1)])).await, 403);
    let h = with(user("u-ada", "Ada"), "origin", "https://evil.example");
    assert_problem(&post_json(&url, h, &order(&[(1, 1)])).await, 403);
    // Reads are not affected.
    let h = with(user("u-ada", "Ada"), "sec-fetch-site", "cross-site");
    assert_eq!(get(&url, h).await.status, 200);
    shop.stop().await;
}

//! The product service alone: the catalogue, v1 against v2, paging, bad input, management.

use axum::http::{HeaderMap, Method};
use meshwright_shop::{Service, Variant};

use crate::common::*;

#[tokio::test]
async fn v1_serves_the_seeded_catalogue_without_v2_fields() {
    let dir = tmp();
    let server = product(&dir, Variant::V1).await;
    let r = get(&format!("{}/api/products", server.url()), HeaderMap::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-total-count"), Some("12"));
    assert_eq!(r.header("x-shop-variant"), Some("v1"));
    assert_eq!(r.header("x-shop-instance"), Some("product-v1"));
    let list = json(&r);
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 12);
    let ids: Vec<i64> = items.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=12).collect::<Vec<_>>());
    let first = &items[0];
    assert_eq!(first["name"], "Ethiopia Yirgacheffe");
    assert_eq!(first["priceCents"], 1450);
    assert_eq!(first["currency"], "EUR");
    assert_eq!(first["categoryId"], 1);
    assert_eq!(first["variant"], "v1");
    assert!(first["emoji"].as_str().is_some_and(|e| !e.is_empty()));
    for field in ["rating", "reviewCount", "listPriceCents"] {
        assert!(first.get(field).is_none(), "v1 must not have {field}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn v2_adds_ratings_and_list_prices_at_the_same_prices() {
    let (d1, d2) = (tmp(), tmp());
    let v1 = product(&d1, Variant::V1).await;
    let v2 = product(&d2, Variant::V2).await;
    let a = json(&get(&format!("{}/api/products", v1.url()), HeaderMap::new()).await);
    let r = get(&format!("{}/api/products", v2.url()), HeaderMap::new()).await;
    assert_eq!(r.header("x-shop-variant"), Some("v2"));
    assert_eq!(r.header("x-shop-instance"), Some("product-v2"));
    let b = json(&r);
    for (p1, p2) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert_eq!(p1["id"], p2["id"]);
        assert_eq!(
            p1["priceCents"], p2["priceCents"],
            "prices must not depend on the variant"
        );
        assert_eq!(p2["variant"], "v2");
        assert!(p2["rating"].as_f64().unwrap() > 0.0);
        assert!(p2["reviewCount"].as_i64().unwrap() > 0);
        assert!(p2["listPriceCents"].as_i64().unwrap() > p2["priceCents"].as_i64().unwrap());
    }
    let one = json(&get(&format!("{}/api/products/5", v2.url()), HeaderMap::new()).await);
    assert_eq!(one["name"], "House Espresso");
    assert_eq!(one["rating"], 4.7);
    // The file is per variant, so both can share a data directory.
    assert!(d2.path().join("product-v2.db").exists());
    v1.shutdown().await.unwrap();
    v2.shutdown().await.unwrap();
}

#[tokio::test]
async fn paging_filters_and_categories() {
    let dir = tmp();
    let server = product(&dir, Variant::V1).await;
    let base = server.url();
    let r = get(
        &format!("{base}/api/products?page=1&size=5"),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(r.header("x-total-count"), Some("12"));
    let ids: Vec<i64> = json(&r)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![6, 7, 8, 9, 10]);
    let r = get(
        &format!("{base}/api/products?categoryId=3"),
        HeaderMap::new(),
    )
    .await;
    let items = json(&r);
    assert!(!items.as_array().unwrap().is_empty());
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["categoryId"] == 3)
    );
    assert_eq!(
        r.header("x-total-count"),
        Some(items.as_array().unwrap().len().to_string().as_str())
    );
    let none = get(
        &format!("{base}/api/products?categoryId=99"),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(json(&none), serde_json::json!([]));
    let cats = get(&format!("{base}/api/product-categories"), HeaderMap::new()).await;
    assert_eq!(cats.header("x-total-count"), Some("4"));
    assert_eq!(json(&cats)[0]["name"], "Single origin");
    let cat = json(
        &get(
            &format!("{base}/api/product-categories/3"),
            HeaderMap::new(),
        )
        .await,
    );
    assert_eq!(cat["name"], "Brewing gear");

    for bad in [
        "/api/products?size=101",
        "/api/products?size=0",
        "/api/products?page=-1",
        "/api/products?categoryId=abc",
        "/api/products/abc",
        "/api/products/0",
        "/api/products/-3",
        "/api/products/99999999999999999999999",
        "/api/product-categories/x",
    ] {
        assert_problem(&get(&format!("{base}{bad}"), HeaderMap::new()).await, 400);
    }
    let missing = assert_problem(
        &get(&format!("{base}/api/products/999"), HeaderMap::new()).await,
        404,
    );
    assert_eq!(missing["detail"], "product 999 does not exist");
    assert_problem(
        &get(
            &format!("{base}/api/product-categories/9"),
            HeaderMap::new(),
        )
        .await,
        404,
    );
    assert_problem(&get(&format!("{base}/nope"), HeaderMap::new()).await, 404);
    let wrong_method = send(
        Method::POST,
        &format!("{base}/api/products"),
        HeaderMap::new(),
        Some("application/json"),
        "{}",
    )
    .await;
    assert_problem(&wrong_method, 405);
    assert_eq!(wrong_method.header("x-shop-instance"), Some("product-v1"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_metrics_and_logs() {
    let dir = tmp();
    let (c, logs) = config(Service::Product, &dir);
    let server = start(Service::Product, c).await;
    let base = server.url();
    let live = get(
        &format!("{base}/management/health/liveness"),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(live.status, 200);
    assert_eq!(json(&live), serde_json::json!({"status": "UP"}));
    let ready = get(
        &format!("{base}/management/health/readiness"),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(ready.status, 200);
    assert_eq!(json(&ready)["status"], "UP");
    get(
        &format!("{base}/api/products/3"),
        with(HeaderMap::new(), "x-request-id", "req-123"),
    )
    .await;
    get(&format!("{base}/api/products/999"), HeaderMap::new()).await;
    let m = get(&format!("{base}/management/prometheus"), HeaderMap::new()).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = text(&m);
    assert_eq!(
        metric(
            &text,
            r#"shop_http_requests_total{service="product",route="/api/products/{id}",method="GET",status="200"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"shop_http_requests_total{service="product",route="/api/products/{id}",method="GET",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains(
        "shop_http_request_duration_seconds_bucket{service=\"product\",route=\"/api/products/{id}\""
    ));
    assert_eq!(
        metric(&text, r#"shop_products{service="product"}"#),
        Some(12.0)
    );
    assert_eq!(metric(&text, r#"shop_db_up{service="product"}"#), Some(1.0));

    let events = logs.events();
    let request = events
        .iter()
        .find(|e| e["msg"] == "request" && e["request_id"] == "req-123")
        .expect("a request line");
    assert_eq!(request["route"], "/api/products/{id}");
    assert_eq!(request["path"], "/api/products/3");
    assert_eq!(request["status"], 200);
    assert_eq!(request["service"], "product");
    assert_eq!(request["instance"], "product-v1");
    assert!(request["duration_ms"].is_number());
    assert!(request["ts"].as_str().unwrap().ends_with('Z'));
    assert!(events.iter().any(|e| e["msg"] == "listening"));
    // Probes are counted, not logged.
    assert!(
        !events
            .iter()
            .any(|e| e["route"] == "/management/health/liveness")
    );
    server.shutdown().await.unwrap();
    assert!(logs.events().iter().any(|e| e["msg"] == "stopped"));
}

#[tokio::test]
async fn the_catalogue_is_seeded_once() {
    let dir = tmp();
    let first = product(&dir, Variant::V2).await;
    first.shutdown().await.unwrap();
    let again = product(&dir, Variant::V2).await;
    let r = get(&format!("{}/api/products", again.url()), HeaderMap::new()).await;
    assert_eq!(r.header("x-total-count"), Some("12"));
    again.shutdown().await.unwrap();
}

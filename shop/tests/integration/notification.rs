//! The notification service alone.

use axum::http::{HeaderMap, Method};
use meshwright_shop::Service;
use serde_json::json;

use crate::common::*;

fn body(key: &str, user: &str) -> String {
    json!({
        "key": key,
        "userId": user,
        "email": format!("{user}@example.com"),
        "format": "EMAIL",
        "details": "Your invoice INV-2026-000001 for order ORD-2026-000001 is paid",
        "orderId": 1,
        "invoiceId": 1,
    })
    .to_string()
}

#[tokio::test]
async fn post_is_idempotent_by_key_and_sends_once() {
    let dir = tmp();
    let (c, logs) = config(Service::Notification, &dir);
    let server = start(Service::Notification, c).await;
    let url = format!("{}/api/notifications", server.url());
    let first = post_json(&url, HeaderMap::new(), &body("invoice-1", "ada")).await;
    assert_eq!(first.status, 201, "{}", text(&first));
    let created = json(&first);
    assert_eq!(created["key"], "invoice-1");
    assert_eq!(created["format"], "EMAIL");
    assert_eq!(created["userId"], "ada");
    assert_eq!(created["orderId"], 1);
    assert!(created["sentDate"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        first.header("location"),
        Some(format!("/api/notifications/{}", created["id"]).as_str())
    );

    let repeat = post_json(&url, HeaderMap::new(), &body("invoice-1", "ada")).await;
    assert_eq!(repeat.status, 200);
    assert_eq!(json(&repeat), created);

    let conflict = post_json(&url, HeaderMap::new(), &body("invoice-1", "bob")).await;
    assert_problem(&conflict, 409);

    let sent: Vec<_> = logs
        .events()
        .into_iter()
        .filter(|e| e["msg"] == "notification sent")
        .collect();
    assert_eq!(sent.len(), 1, "sent once");
    assert_eq!(sent[0]["format"], "EMAIL");
    assert_eq!(sent[0]["to"], "ada@example.com");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem() {
    let dir = tmp();
    let (c, _) = config(Service::Notification, &dir);
    let server = start(Service::Notification, c).await;
    let url = format!("{}/api/notifications", server.url());
    let h = HeaderMap::new;
    assert_problem(&post_json(&url, h(), "{not json").await, 400);
    assert_problem(&post_json(&url, h(), "").await, 400);
    assert_problem(&post_json(&url, h(), "[]").await, 400);
    let unknown = assert_problem(
        &post_json(
            &url,
            h(),
            &body("k", "ada").replace("\"key\"", "\"colour\":\"red\",\"key\""),
        )
        .await,
        400,
    );
    assert!(
        unknown["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field")
    );
    assert_problem(
        &post_json(&url, h(), &body("k", "ada").replace("EMAIL", "PIGEON")).await,
        400,
    );
    assert_problem(&post_json(&url, h(), &body("", "ada")).await, 400);
    assert_problem(
        &send(
            Method::POST,
            &url,
            h(),
            Some("text/plain"),
            &body("k", "ada"),
        )
        .await,
        415,
    );
    assert_problem(
        &send(Method::POST, &url, h(), None, &body("k", "ada")).await,
        415,
    );
    let huge = format!("{{\"key\":\"{}\"}}", "k".repeat(100_000));
    assert_problem(&post_json(&url, h(), &huge).await, 413);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn users_see_only_their_own() {
    let dir = tmp();
    let (c, _) = config(Service::Notification, &dir);
    let server = start(Service::Notification, c).await;
    let base = server.url();
    let url = format!("{base}/api/notifications");
    let ada = json(&post_json(&url, HeaderMap::new(), &body("a", "ada")).await);
    post_json(&url, HeaderMap::new(), &body("b", "bob")).await;

    let mine = get(&url, user("ada", "Ada")).await;
    assert_eq!(mine.status, 200);
    assert_eq!(mine.header("x-total-count"), Some("1"));
    assert_eq!(json(&mine)[0]["key"], "a");
    let filtered = json(&get(&format!("{url}?orderId=1"), user("ada", "Ada")).await);
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let other_order = json(&get(&format!("{url}?orderId=2"), user("ada", "Ada")).await);
    assert_eq!(other_order, json!([]));
    let id = ada["id"].as_i64().unwrap();
    assert_eq!(
        get(&format!("{url}/{id}"), user("ada", "Ada")).await.status,
        200
    );
    assert_problem(&get(&format!("{url}/{id}"), user("bob", "Bob")).await, 404);
    assert_problem(&get(&format!("{url}/x"), user("bob", "Bob")).await, 400);

    // No identity: no token, or claims without a token, or a token without claims.
    assert_problem(&get(&url, HeaderMap::new()).await, 401);
    assert_problem(
        &get(&url, with(HeaderMap::new(), "x-jwt-sub", "ada")).await,
        401,
    );
    let mut token_only = user("ada", "Ada");
    token_only.remove("x-jwt-sub");
    assert_problem(&get(&url, token_only).await, 401);
    server.shutdown().await.unwrap();
}

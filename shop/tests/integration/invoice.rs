//! The invoice service alone, and wired to notification.

use axum::http::{HeaderMap, Method};
use meshwright_shop::Service;
use serde_json::{Value, json};

use crate::common::*;

fn body(order: i64, customer: &str, amount: i64) -> String {
    json!({
        "orderId": order,
        "orderCode": format!("ORD-2026-{order:06}"),
        "customer": customer,
        "email": format!("{customer}@example.com"),
        "amountCents": amount,
        "currency": "EUR",
    })
    .to_string()
}

#[tokio::test]
async fn post_is_idempotent_by_order_and_makes_a_shipment() {
    let dir = tmp();
    let (mut c, _) = config(Service::Invoice, &dir);
    c.notification_url = url(&closed_url().await);
    let server = start(Service::Invoice, c).await;
    let url = format!("{}/api/invoices", server.url());
    let first = post_json(&url, HeaderMap::new(), &body(42, "ada", 2900)).await;
    assert_eq!(first.status, 201, "{}", text(&first));
    let invoice = json(&first);
    let code = invoice["code"].as_str().unwrap();
    assert!(
        code.starts_with("INV-") && code.ends_with("-000001"),
        "{code}"
    );
    assert_eq!(invoice["orderId"], 42);
    assert_eq!(invoice["customer"], "ada");
    assert_eq!(invoice["status"], "PAID");
    assert_eq!(invoice["paymentMethod"], "CREDIT_CARD");
    assert_eq!(invoice["paymentAmountCents"], 2900);
    assert!(invoice["date"].as_str().unwrap().ends_with('Z'));
    assert!(invoice["paymentDate"].is_string());
    assert!(
        invoice["details"]
            .as_str()
            .unwrap()
            .contains("ORD-2026-000042")
    );
    assert!(
        invoice["shipment"]["trackingCode"]
            .as_str()
            .unwrap()
            .starts_with("TRK-")
    );
    assert_eq!(
        invoice["notification"],
        Value::Null,
        "pending: notification is down"
    );

    let again = post_json(&url, HeaderMap::new(), &body(42, "ada", 2900)).await;
    assert_eq!(again.status, 200);
    assert_eq!(json(&again)["id"], invoice["id"]);
    assert_problem(
        &post_json(&url, HeaderMap::new(), &body(42, "ada", 1)).await,
        409,
    );
    let list = get(&url, user("ada", "Ada")).await;
    assert_eq!(list.header("x-total-count"), Some("1"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem() {
    let dir = tmp();
    let (c, _) = config(Service::Invoice, &dir);
    let server = start(Service::Invoice, c).await;
    let url = format!("{}/api/invoices", server.url());
    let h = HeaderMap::new;
    for bad in [
        "{".to_owned(),
        "null".to_owned(),
        body(0, "ada", 1),
        body(1, "", 1),
        body(1, "ada", -1),
        body(1, "ada", 1_000_000_001),
        body(1, "ada", 1).replace("EUR", "euro"),
        body(1, "ada", 1).replace("\"orderId\":1", "\"orderId\":\"one\""),
        body(1, "ada", 1).replace("\"orderId\"", "\"discount\":5,\"orderId\""),
        r#"{"orderId": 1}"#.to_owned(),
    ] {
        assert_problem(&post_json(&url, h(), &bad).await, 400);
    }
    assert_problem(
        &send(
            Method::POST,
            &url,
            h(),
            Some("application/x-www-form-urlencoded"),
            "orderId=1",
        )
        .await,
        415,
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn users_see_only_their_own_invoices_and_shipments() {
    let dir = tmp();
    let (mut c, _) = config(Service::Invoice, &dir);
    c.notification_url = url(&closed_url().await);
    let server = start(Service::Invoice, c).await;
    let base = server.url();
    let ada = json(
        &post_json(
            &format!("{base}/api/invoices"),
            HeaderMap::new(),
            &body(1, "ada", 100),
        )
        .await,
    );
    let bob = json(
        &post_json(
            &format!("{base}/api/invoices"),
            HeaderMap::new(),
            &body(2, "bob", 200),
        )
        .await,
    );

    let by_order = json(
        &get(
            &format!("{base}/api/invoices?orderId=1"),
            user("ada", "Ada"),
        )
        .await,
    );
    assert_eq!(by_order.as_array().unwrap().len(), 1);
    assert_eq!(by_order[0]["id"], ada["id"]);
    let not_mine = json(
        &get(
            &format!("{base}/api/invoices?orderId=2"),
            user("ada", "Ada"),
        )
        .await,
    );
    assert_eq!(not_mine, json!([]));
    let bob_id = bob["id"].as_i64().unwrap();
    assert_problem(
        &get(&format!("{base}/api/invoices/{bob_id}"), user("ada", "Ada")).await,
        404,
    );
    assert_eq!(
        get(&format!("{base}/api/invoices/{bob_id}"), user("bob", "Bob"))
            .await
            .status,
        200
    );
    assert_problem(
        &get(
            &format!("{base}/api/invoices?orderId=x"),
            user("ada", "Ada"),
        )
        .await,
        400,
    );

    let shipments = get(&format!("{base}/api/shipments"), user("ada", "Ada")).await;
    assert_eq!(shipments.header("x-total-count"), Some("1"));
    let shipment = &json(&shipments)[0];
    assert_eq!(shipment["invoiceId"], ada["id"]);
    let sid = shipment["id"].as_i64().unwrap();
    assert_eq!(
        get(&format!("{base}/api/shipments/{sid}"), user("ada", "Ada"))
            .await
            .status,
        200
    );
    assert_problem(
        &get(&format!("{base}/api/shipments/{sid}"), user("bob", "Bob")).await,
        404,
    );

    assert_problem(
        &get(&format!("{base}/api/invoices"), HeaderMap::new()).await,
        401,
    );
    assert_problem(
        &get(&format!("{base}/api/shipments"), HeaderMap::new()).await,
        401,
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_outbox_notifies_the_customer_and_records_the_notification() {
    let (dn, di) = (tmp(), tmp());
    let (nc, _) = config(Service::Notification, &dn);
    let notification = start(Service::Notification, nc).await;
    let (mut ic, _) = config(Service::Invoice, &di);
    ic.notification_url = url(&notification.url());
    let invoice = start(Service::Invoice, ic).await;

    let created = json(
        &post_json(
            &format!("{}/api/invoices", invoice.url()),
            HeaderMap::new(),
            &body(7, "ada", 1450),
        )
        .await,
    );
    let id = created["id"].as_i64().unwrap();
    let shown = eventually("the invoice's notification", || async {
        let inv = json(
            &get(
                &format!("{}/api/invoices/{id}", invoice.url()),
                user("ada", "Ada"),
            )
            .await,
        );
        (!inv["notification"].is_null()).then_some(inv)
    })
    .await;
    assert_eq!(shown["notification"]["format"], "EMAIL");
    assert!(
        shown["notification"]["sentDate"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let sent = json(
        &get(
            &format!("{}/api/notifications?orderId=7", notification.url()),
            user("ada", "Ada"),
        )
        .await,
    );
    assert_eq!(sent.as_array().unwrap().len(), 1);
    assert_eq!(sent[0]["id"], shown["notification"]["id"]);
    assert_eq!(sent[0]["key"], format!("invoice-{id}"));
    assert_eq!(sent[0]["invoiceId"], id);
    assert_eq!(
        sent[0]["details"],
        format!(
            "Your invoice {} for order ORD-2026-000007 is paid",
            created["code"].as_str().unwrap()
        )
    );
    let m = prometheus(&invoice.url()).await;
    assert_eq!(
        metric(&m, r#"shop_outbox_pending{service="invoice"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"shop_invoices_total{service="invoice"}"#),
        Some(1.0)
    );
    invoice.shutdown().await.unwrap();
    notification.shutdown().await.unwrap();
}

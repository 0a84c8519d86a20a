//! Store, product, invoice and notification wired together in-process; the outbox through an
//! invoice outage, a rejection, and a store restart.

use meshwright_shop::{Server, Service, Variant};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::*;

struct Backend {
    product: Server,
    notification: Server,
    invoice: Server,
    _dirs: Vec<TempDir>,
}

impl Backend {
    async fn start() -> Backend {
        let (dp, dn, di) = (tmp(), tmp(), tmp());
        let product = product(&dp, Variant::V2).await;
        let (nc, _) = config(Service::Notification, &dn);
        let notification = start(Service::Notification, nc).await;
        let (mut ic, _) = config(Service::Invoice, &di);
        ic.notification_url = url(&notification.url());
        let invoice = start(Service::Invoice, ic).await;
        Backend {
            product,
            notification,
            invoice,
            _dirs: vec![dp, dn, di],
        }
    }

    async fn stop(self) {
        self.invoice.shutdown().await.unwrap();
        self.notification.shutdown().await.unwrap();
        self.product.shutdown().await.unwrap();
    }
}

async fn place(store: &Server) -> Value {
    let r = post_json(
        &format!("{}/api/product-orders", store.url()),
        ada(),
        r#"{"items":[{"productId":1,"quantity":2},{"productId":8,"quantity":1}]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    json(&r)
}

async fn order(store: &Server, id: i64) -> Value {
    json(&get(&format!("{}/api/product-orders/{id}", store.url()), ada()).await)
}

/// Polls the order until its invoice status is `status`.
async fn order_when(what: &str, store: &Server, id: i64, status: &str) -> Value {
    eventually(what, || async {
        let o = order(store, id).await;
        (o["invoiceStatus"] == status).then_some(o)
    })
    .await
}

async fn invoices_for(invoice: &Server, order_id: i64) -> Vec<Value> {
    let r = get(
        &format!("{}/api/invoices?orderId={order_id}", invoice.url()),
        ada(),
    )
    .await;
    json(&r).as_array().unwrap().clone()
}

#[tokio::test]
async fn an_order_gets_its_invoice_and_notification() {
    let backend = Backend::start().await;
    let sidecar = Switch::sidecar(&backend.invoice.url()).await;
    let ds = tmp();
    let store = store(&ds, &backend.product.url(), &sidecar.url).await;
    let placed = place(&store).await;
    let id = placed["id"].as_i64().unwrap();
    let code = placed["code"].as_str().unwrap().to_owned();
    assert_eq!(placed["totalCents"], 2 * 1450 + 2400);

    let done = order_when("the invoice", &store, id, "CREATED").await;
    assert_eq!(done["status"], "COMPLETED");
    assert!(done["invoiceAttempts"].as_i64().unwrap() >= 1);
    let invoices = invoices_for(&backend.invoice, id).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(done["invoiceId"], invoices[0]["id"]);
    assert_eq!(invoices[0]["paymentAmountCents"], placed["totalCents"]);
    assert_eq!(invoices[0]["customer"], "u-ada");
    assert_eq!(invoices[0]["orderCode"], code.as_str());

    // The order page shows the invoice, then its notification.
    let page = eventually("the notification on the order page", || async {
        let r = get(&format!("{}/orders/{id}", store.url()), ada()).await;
        let page = text(&r);
        page.contains("data-notification=\"").then_some(page)
    })
    .await;
    let invoice_code = invoices[0]["code"].as_str().unwrap();
    assert!(
        page.contains(&format!(r#"data-invoice="{invoice_code}""#)),
        "{page}"
    );
    assert!(page.contains(&format!(r#"data-order="{code}""#)));
    assert!(page.contains(invoices[0]["shipment"]["trackingCode"].as_str().unwrap()));
    assert!(page.contains("Email sent"));
    assert!(page.contains("invoice: instance invoice"));
    assert!(!page.contains("data-degraded"));
    let notes = json(
        &get(
            &format!(
                "{}/api/notifications?orderId={id}",
                backend.notification.url()
            ),
            ada(),
        )
        .await,
    );
    assert_eq!(notes.as_array().unwrap().len(), 1);
    assert!(page.contains(&format!(r#"data-notification="{}""#, notes[0]["id"])));
    assert_eq!(notes[0]["userId"], "u-ada");

    let m = prometheus(&store.url()).await;
    assert_eq!(
        metric(&m, r#"shop_outbox_pending{service="store"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"shop_outbox_delivered_total{service="store"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"shop_outbox_attempts_total{service="store",topic="invoice.create",result="delivered"}"#
        ),
        Some(1.0)
    );
    store.shutdown().await.unwrap();
    backend.stop().await;
}

#[tokio::test]
async fn the_outbox_rides_out_an_invoice_outage_with_exactly_one_invoice() {
    let backend = Backend::start().await;
    let switch = Switch::start().await;
    let ds = tmp();
    let (mut c, logs) = config(Service::Store, &ds);
    c.product_url = url(&backend.product.url());
    c.invoice_url = url(&switch.url);
    let store = start(Service::Store, c).await;

    let placed = place(&store).await;
    let id = placed["id"].as_i64().unwrap();
    assert_eq!(placed["invoiceStatus"], "PENDING");
    // Several attempts fail while invoice is down; the order stays, PENDING.
    let retrying = eventually("retries", || async {
        let o = order(&store, id).await;
        (o["invoiceAttempts"].as_i64().unwrap() >= 3).then_some(o)
    })
    .await;
    assert_eq!(retrying["invoiceStatus"], "PENDING");
    assert_eq!(retrying["status"], "PENDING");
    // The order page degrades instead of failing.
    let r = get(&format!("{}/orders/{id}", store.url()), ada()).await;
    assert_eq!(r.status, 200);
    let page = text(&r);
    assert!(page.contains(r#"data-degraded="invoice""#), "{page}");
    assert!(page.contains("Invoicing is running late."));
    assert!(
        logs.events()
            .iter()
            .any(|e| e["msg"] == "outbox delivery failed; will retry" && e["http_status"] == 503)
    );

    switch.up(&backend.invoice.url());
    let done = order_when("the invoice after recovery", &store, id, "CREATED").await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(
        invoices_for(&backend.invoice, id).await.len(),
        1,
        "exactly one invoice"
    );
    let page = text(&get(&format!("{}/orders/{id}", store.url()), ada()).await);
    assert!(page.contains("data-invoice=\""), "{page}");
    // A delivered row is not delivered again.
    let seen = switch.seen.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let m = prometheus(&backend.invoice.url()).await;
    assert_eq!(
        metric(&m, r#"shop_invoices_total{service="invoice"}"#),
        Some(1.0)
    );
    assert!(switch.seen.load(std::sync::atomic::Ordering::SeqCst) <= seen + 1);
    store.shutdown().await.unwrap();
    backend.stop().await;
}

#[tokio::test]
async fn a_rejected_invoice_request_is_marked_failed_not_retried() {
    let backend = Backend::start().await;
    let switch = Switch::start().await;
    switch.rejecting();
    let ds = tmp();
    let store = store(&ds, &backend.product.url(), &switch.url).await;
    let id = place(&store).await["id"].as_i64().unwrap();
    let failed = order_when("FAILED", &store, id, "FAILED").await;
    assert_eq!(failed["invoiceAttempts"], 1);
    assert_eq!(failed["status"], "PENDING");
    let m = prometheus(&store.url()).await;
    assert_eq!(
        metric(&m, r#"shop_outbox_failed{service="store"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, r#"shop_outbox_pending{service="store"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, r#"shop_orders_invoice_failed{service="store"}"#),
        Some(1.0)
    );
    store.shutdown().await.unwrap();
    backend.stop().await;
}

#[tokio::test]
async fn a_restarted_store_resumes_delivery() {
    let backend = Backend::start().await;
    let switch = Switch::start().await;
    let ds = tmp();
    let first = store(&ds, &backend.product.url(), &switch.url).await;
    let placed = place(&first).await;
    let id = placed["id"].as_i64().unwrap();
    eventually("a failed attempt", || async {
        (order(&first, id).await["invoiceAttempts"].as_i64().unwrap() >= 1).then_some(())
    })
    .await;
    first.shutdown().await.unwrap();

    switch.up(&backend.invoice.url());
    let second = store(&ds, &backend.product.url(), &switch.url).await;
    let again = order(&second, id).await;
    assert_eq!(
        again["code"], placed["code"],
        "the order survived the restart"
    );
    let done = order_when("delivery after the restart", &second, id, "CREATED").await;
    assert_eq!(
        done["invoiceId"],
        invoices_for(&backend.invoice, id).await[0]["id"]
    );
    assert_eq!(invoices_for(&backend.invoice, id).await.len(), 1);
    second.shutdown().await.unwrap();
    backend.stop().await;
}

#[tokio::test]
async fn checkout_from_the_cart_reaches_the_invoice() {
    let backend = Backend::start().await;
    let sidecar = Switch::sidecar(&backend.invoice.url()).await;
    let ds = tmp();
    let store = store(&ds, &backend.product.url(), &sidecar.url).await;
    let add = post_form(
        &format!("{}/cart/items", store.url()),
        ada(),
        "productId=12&quantity=1",
    )
    .await;
    assert_eq!(add.status, 303);
    let placed = post_form(
        &format!("{}/checkout", store.url()),
        ada(),
        "token=ffffffffffffffffffffffffffffffff",
    )
    .await;
    assert_eq!(placed.status, 303);
    let id = location_id(&placed);
    let page = eventually("invoice and notification on the page", || async {
        let page = text(&get(&format!("{}/orders/{id}", store.url()), ada()).await);
        (page.contains("data-invoice=\"") && page.contains("data-notification=\"")).then_some(page)
    })
    .await;
    assert!(page.contains("Subscription, 3 months"));
    assert_eq!(
        json(&get(&format!("{}/api/product-orders/{id}", store.url()), ada()).await)["totalCents"],
        json!(4200)
    );
    store.shutdown().await.unwrap();
    backend.stop().await;
}

#[tokio::test]
async fn with_mesh_outbound_every_call_goes_to_the_sidecar_by_host() {
    let backend = Backend::start().await;
    let mesh = MeshOutbound::start(vec![
        (
            "product.ecommerce.svc.cluster.local:8081".into(),
            backend.product.url(),
        ),
        (
            "invoice.ecommerce.svc.cluster.local:8082".into(),
            backend.invoice.url(),
        ),
    ])
    .await;
    let ds = tmp();
    // The default URLs do not resolve here: only the outbound address can serve them.
    let (mut c, _) = config(Service::Store, &ds);
    c.mesh_outbound = Some(mesh.addr.to_string());
    let store = start(Service::Store, c).await;
    let page = text(&get(&format!("{}/", store.url()), ada()).await);
    assert!(page.contains(r#"data-variant="v2""#), "{page}");
    let id = place(&store).await["id"].as_i64().unwrap();
    order_when("the invoice through the mesh", &store, id, "CREATED").await;
    let page = text(&get(&format!("{}/orders/{id}", store.url()), ada()).await);
    assert!(page.contains("data-invoice=\""), "{page}");
    let hosts = mesh.hosts.lock().unwrap().clone();
    assert!(
        hosts
            .iter()
            .any(|h| h == "product.ecommerce.svc.cluster.local:8081")
    );
    assert!(
        hosts
            .iter()
            .any(|h| h == "invoice.ecommerce.svc.cluster.local:8082")
    );
    store.shutdown().await.unwrap();
    backend.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    // A catalogue that takes its time.
    async fn slow() -> axum::Json<Value> {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        axum::Json(json!([]))
    }
    let app = axum::Router::new()
        .route("/api/products", axum::routing::get(slow))
        .route("/api/product-categories", axum::routing::get(slow));
    let (addr, _stop) = serve_stub(app).await;
    let ds = tmp();
    let store = store(&ds, &format!("http://{addr}"), &closed_url().await).await;
    let base = store.url();
    let in_flight = tokio::spawn(async move { get(&format!("{base}/"), ada()).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let url = store.url();
    store.shutdown().await.unwrap();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the request in flight was answered");
    let refused = meshwright_shop::client::Client::new(None)
        .get(&format!("{url}/"), ada(), std::time::Duration::from_secs(2))
        .await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

//! The storefront's pages: markers, variants, escaping, the cart and checkout, degraded states,
//! cross-site refusal, and what store propagates to product.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::IntoResponse;
use axum::routing::get as route_get;
use meshwright_shop::client::Reply;
use meshwright_shop::{Service, Variant};
use serde_json::json;

use crate::common::*;

fn html(reply: &Reply) -> String {
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{}",
        text(reply)
    );
    text(reply)
}

#[tokio::test]
async fn catalogue_v1_shows_plain_cards_and_who_served_it() {
    let shop = Shop::start(Variant::V1).await;
    let r = get(&shop.url("/"), ada()).await;
    assert_eq!(r.status, 200);
    let page = html(&r);
    assert!(
        page.contains(r#"<main id="main" class="wrap" data-variant="v1">"#),
        "{page}"
    );
    assert!(page.contains("Ethiopia Yirgacheffe"));
    assert!(page.contains("€14.50"));
    assert!(page.contains(r#"<form method="post" action="/cart/items""#));
    assert!(!page.contains("New catalogue (v2)"));
    assert!(!page.contains("price-was"));
    assert!(page.contains("catalogue: product v1 · instance product-v1"));
    assert!(page.contains("storefront: instance store"));
    assert!(page.contains("Signed in as <strong>Ada Lovelace</strong>"));
    assert!(page.contains(r#"href="/oauth2/logout""#));
    assert!(page.contains(r#"href="/content/shop.css""#));
    assert!(!page.contains("<script"), "no JavaScript at all");
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"));
    // Categories filter the grid.
    let coffee = html(&get(&shop.url("/?category=3"), ada()).await);
    assert!(coffee.contains("Hand Grinder"));
    assert!(!coffee.contains("Ethiopia Yirgacheffe"));
    assert!(coffee.contains(r#"<a href="/?category=3" aria-current="page">"#));
    shop.stop().await;
}

#[tokio::test]
async fn catalogue_v2_looks_different() {
    let shop = Shop::start(Variant::V2).await;
    let page = html(&get(&shop.url("/"), ada()).await);
    assert!(page.contains(r#"data-variant="v2""#));
    assert!(page.contains("New catalogue (v2)"));
    assert!(page.contains(r#"<s class="price-was">"#));
    assert!(page.contains("save 14 %"));
    assert!(page.contains("★"));
    assert!(page.contains("(212 reviews)"));
    assert!(page.contains("catalogue: product v2 · instance product-v2"));
    let product = html(&get(&shop.url("/products/1"), ada()).await);
    assert!(product.contains(r#"data-variant="v2""#));
    assert!(product.contains(r#"<label for="quantity">Quantity</label>"#));
    assert!(product.contains("(212 reviews)"));
    shop.stop().await;
}

#[tokio::test]
async fn pages_degrade_when_the_catalogue_is_down() {
    let mut shop = Shop::start(Variant::V1).await;
    shop.product.take().unwrap().shutdown().await.unwrap();
    let r = get(&shop.url("/"), ada()).await;
    assert_eq!(r.status, 200);
    let page = html(&r);
    assert!(page.contains("The catalogue is unavailable right now"));
    assert!(page.contains(r#"data-degraded="catalogue""#));
    assert!(page.contains("catalogue: unavailable"));
    let product = get(&shop.url("/products/1"), ada()).await;
    assert!(html(&product).contains("The catalogue is unavailable right now"));
    shop.stop().await;
}

#[tokio::test]
async fn every_dynamic_text_is_escaped() {
    // A catalogue whose product names are hostile.
    async fn list() -> impl IntoResponse {
        axum::Json(
            json!([{"id": 1, "name": "<script>alert('name')</script>", "description": "\"><img src=x onerror=alert(1)>",
            "priceCents": 100, "currency": "EUR", "categoryId": 1, "emoji": "<b>", "variant": "v1"}]),
        )
    }
    async fn one() -> impl IntoResponse {
        axum::Json(
            json!({"id": 1, "name": "<script>alert('name')</script>", "description": "x",
            "priceCents": 100, "currency": "EUR", "categoryId": 1, "emoji": "<b>", "variant": "v1"}),
        )
    }
    let app = Router::new()
        .route("/api/products", route_get(list))
        .route("/api/products/{id}", route_get(one));
    let (addr, _stop) = serve_stub(app).await;
    let ds = tmp();
    let store = store(&ds, &format!("http://{addr}"), &closed_url().await).await;
    let evil = user("u-evil", "<script>alert('user')</script>");
    let page = html(&get(&format!("{}/", store.url()), evil.clone()).await);
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img src=x"));
    assert!(!page.contains("<b>"));
    assert!(page.contains("&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;"));
    assert!(page.contains(
        "Signed in as <strong>&lt;script&gt;alert(&#39;user&#39;)&lt;/script&gt;</strong>"
    ));
    // Into the cart and onto the order: still escaped.
    let added = post_form(
        &format!("{}/cart/items", store.url()),
        evil.clone(),
        "productId=1&quantity=1",
    )
    .await;
    assert_eq!(added.status, 303);
    let cart = html(&get(&format!("{}/cart", store.url()), evil.clone()).await);
    assert!(!cart.contains("<script"));
    assert!(cart.contains("&lt;script&gt;"));
    let account = html(&get(&format!("{}/account", store.url()), evil).await);
    assert!(!account.contains("<script"));
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_identity_pages_offer_sign_in_and_no_data() {
    let shop = Shop::start(Variant::V1).await;
    for path in [
        "/",
        "/cart",
        "/orders",
        "/orders/1",
        "/account",
        "/products/1",
    ] {
        let r = get(&shop.url(path), HeaderMap::new()).await;
        assert_eq!(r.status, 401, "{path}");
        let page = html(&r);
        assert!(
            page.contains(&format!(r#"href="/oauth2/start?rd={path}""#)),
            "{page}"
        );
        assert!(!page.contains("Ethiopia"));
        assert!(!page.contains("Sign out"));
    }
    let r = post_form(
        &shop.url("/cart/items"),
        HeaderMap::new(),
        "productId=1&quantity=1",
    )
    .await;
    assert_eq!(r.status, 401);
    shop.stop().await;
}

#[tokio::test]
async fn cart_checkout_and_order_page() {
    let shop = Shop::start(Variant::V1).await;
    let add = post_form(&shop.url("/cart/items"), ada(), "productId=2&quantity=3").await;
    assert_eq!(add.status, 303);
    assert_eq!(add.header("location"), Some("/cart"));
    post_form(&shop.url("/cart/items"), ada(), "productId=9").await;
    post_form(&shop.url("/cart/items"), ada(), "productId=2&quantity=1").await;
    let cart = html(&get(&shop.url("/cart"), ada()).await);
    assert!(cart.contains("Colombia Huila"));
    assert!(cart.contains("Gooseneck Kettle"));
    assert!(
        cart.contains(r#"<td class="num">4</td>"#),
        "quantities add up: {cart}"
    );
    assert!(
        cart.contains(r#"aria-label="5 items">5</span>"#),
        "header count"
    );
    assert!(cart.contains(r#"<form method="post" action="/checkout">"#));
    let removed = post_form(&shop.url("/cart/items/9/delete"), ada(), "").await;
    assert_eq!(removed.status, 303);
    assert!(!html(&get(&shop.url("/cart"), ada()).await).contains("Gooseneck Kettle"));

    let token = "0123456789abcdef0123456789abcdef";
    let placed = post_form(&shop.url("/checkout"), ada(), &format!("token={token}")).await;
    assert_eq!(placed.status, 303, "{}", text(&placed));
    let location = placed.header("location").unwrap().to_owned();
    assert!(location.starts_with("/orders/"), "{location}");
    let id = location_id(&placed);
    // A double submit shows the same order and places no other.
    let again = post_form(&shop.url("/checkout"), ada(), &format!("token={token}")).await;
    assert_eq!(again.header("location"), Some(location.as_str()));
    let orders = json(&get(&shop.url("/api/product-orders"), ada()).await);
    assert_eq!(orders.as_array().unwrap().len(), 1);
    assert_eq!(orders[0]["totalCents"], 4 * 1290);
    let cart = html(&get(&shop.url("/cart"), ada()).await);
    assert!(cart.contains("Your cart is empty"), "the cart was emptied");

    // Invoice is not running here: the order page degrades, it does not fail.
    let r = get(&shop.url(&location), ada()).await;
    assert_eq!(r.status, 200);
    let page = html(&r);
    let code = orders[0]["code"].as_str().unwrap();
    assert!(page.contains(&format!(r#"data-order="{code}""#)));
    assert!(page.contains(r#"data-degraded="invoice""#));
    assert!(page.contains(&format!(
        "Your order {code} is confirmed and safe; the invoice will appear here shortly."
    )));
    let list = html(&get(&shop.url("/orders"), ada()).await);
    assert!(list.contains(&format!(r#"data-order="{code}""#)));
    assert!(list.contains(&format!(r#"href="/orders/{id}""#)));
    let account = html(&get(&shop.url("/account"), ada()).await);
    assert!(account.contains(r#"data-order-count="1""#));
    assert!(account.contains("<code>u-ada</code>"));

    // Someone else's order is not found.
    let bob = get(&shop.url(&location), user("u-bob", "Bob")).await;
    assert_eq!(bob.status, 404);
    assert!(!html(&bob).contains(code));
    assert_eq!(get(&shop.url("/orders/abc"), ada()).await.status, 404);
    shop.stop().await;
}

#[tokio::test]
async fn checkout_is_refused_whole_when_the_catalogue_is_down() {
    let mut shop = Shop::start(Variant::V1).await;
    post_form(&shop.url("/cart/items"), ada(), "productId=1&quantity=2").await;
    shop.product.take().unwrap().shutdown().await.unwrap();
    let r = post_form(
        &shop.url("/checkout"),
        ada(),
        "token=0123456789abcdef0123456789abcdef",
    )
    .await;
    assert_eq!(r.status, 503);
    let page = html(&r);
    assert!(page.contains("The catalogue is unavailable; no order was placed."));
    assert!(page.contains("Ethiopia Yirgacheffe"), "the cart is kept");
    assert_eq!(
        json(&get(&shop.url("/api/product-orders"), ada()).await),
        json!([])
    );
    // Adding needs the catalogue too.
    let add = post_form(&shop.url("/cart/items"), ada(), "productId=3").await;
    assert_eq!(add.status, 503);
    assert!(html(&add).contains("The catalogue is unavailable"));
    shop.stop().await;
}

#[tokio::test]
async fn bad_forms_are_4xx_pages() {
    let shop = Shop::start(Variant::V1).await;
    for body in [
        "productId=abc",
        "productId=1&quantity=0",
        "productId=1&quantity=100",
        "quantity=1",
        "productId=1&colour=red",
    ] {
        let r = post_form(&shop.url("/cart/items"), ada(), body).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.status);
        html(&r);
    }
    let unknown = post_form(&shop.url("/cart/items"), ada(), "productId=999").await;
    assert_eq!(unknown.status, 400);
    let json_body = send(
        Method::POST,
        &shop.url("/cart/items"),
        ada(),
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(json_body.status, 415);
    let empty = post_form(
        &shop.url("/checkout"),
        ada(),
        "token=0123456789abcdef0123456789abcdef",
    )
    .await;
    assert_eq!(empty.status, 400);
    assert!(html(&empty).contains("Your cart is empty, so there is nothing to order yet."));
    assert_eq!(
        post_form(&shop.url("/checkout"), ada(), "token=short")
            .await
            .status,
        400
    );
    let missing = get(&shop.url("/no/such/page"), ada()).await;
    assert_eq!(missing.status, 404);
    assert!(html(&missing).contains("Page not found"));
    shop.stop().await;
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let shop = Shop::start(Variant::V1).await;
    let url = shop.url("/cart/items");
    let r = post_form(
        &url,
        with(ada(), "sec-fetch-site", "cross-site"),
        "productId=1",
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(html(&r).contains("Request refused"));
    let r = post_form(
        &url,
        with(ada(), "origin", "https://evil.example"),
        "productId=1",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post_form(
        &shop.url("/checkout"),
        with(ada(), "origin", "null"),
        "token=x",
    )
    .await;
    assert_eq!(r.status, 403);
    // Same origin (the client sends Host 127.0.0.1:port) and same-site are fine.
    let origin = shop.store.url();
    let r = post_form(&url, with(ada(), "origin", &origin), "productId=1").await;
    assert_eq!(r.status, 303);
    let r = post_form(
        &url,
        with(ada(), "sec-fetch-site", "same-origin"),
        "productId=1",
    )
    .await;
    assert_eq!(r.status, 303);
    assert!(!html(&get(&shop.url("/cart"), ada()).await).contains("Your cart is empty"));
    shop.stop().await;
}

#[tokio::test]
async fn assets() {
    let shop = Shop::start(Variant::V1).await;
    let css = get(&shop.url("/content/shop.css"), HeaderMap::new()).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(text(&css).contains(".card"));
    let icon = get(&shop.url("/favicon.ico"), HeaderMap::new()).await;
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    assert!(text(&icon).starts_with("<svg"));
    shop.stop().await;
}

#[tokio::test]
async fn store_propagates_only_the_listed_headers_to_product() {
    type Seen = Arc<Mutex<Vec<HeaderMap>>>;
    async fn list(State(seen): State<Seen>, headers: HeaderMap) -> impl IntoResponse {
        seen.lock().unwrap().push(headers);
        axum::Json(json!([]))
    }
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/api/products", route_get(list))
        .route(
            "/api/product-categories",
            route_get(|| async { axum::Json(json!([])) }),
        )
        .with_state(Arc::clone(&seen));
    let (addr, _stop) = serve_stub(app).await;
    let ds = tmp();
    let (mut c, logs) = config(Service::Store, &ds);
    c.product_url = url(&format!("http://{addr}"));
    c.invoice_url = url(&closed_url().await);
    let store = start(Service::Store, c).await;
    let mut h = ada();
    for (k, v) in [
        ("cookie", "session=secret"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("x-request-id", "req-77"),
        ("x-b3-traceid", "abc"),
        ("x-meshwright-drill", "product-delay"),
        ("baggage", "k=v"),
        ("x-forwarded-for", "10.0.0.1"),
    ] {
        h = with(h, k, v);
    }
    assert_eq!(get(&format!("{}/", store.url()), h).await.status, 200);
    let got = seen.lock().unwrap().first().cloned().unwrap();
    assert_eq!(got["authorization"], "Bearer test.u-ada");
    assert_eq!(got["x-request-id"], "req-77");
    assert_eq!(got["x-meshwright-drill"], "product-delay");
    assert_eq!(got["baggage"], "k=v");
    assert_eq!(got["x-b3-traceid"], "abc");
    assert!(got["traceparent"].to_str().unwrap().starts_with("00-4bf9"));
    assert_eq!(got["host"], addr.to_string().as_str());
    for absent in [
        "cookie",
        "x-jwt-sub",
        "x-jwt-email",
        "x-jwt-name",
        "x-forwarded-for",
    ] {
        assert!(got.get(absent).is_none(), "{absent} must not be propagated");
    }
    // The logs carry the request id, never the token or the cookie.
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"request_id\":\"req-77\""))
    );
    assert!(
        !lines.iter().any(|l| l.contains("Bearer")
            || l.contains("test.u-ada")
            || l.contains("session=secret"))
    );
    store.shutdown().await.unwrap();
}

//! The storefront's page bodies. Each function returns trusted HTML; every dynamic value goes
//! through `esc`. The stable `data-*` attributes are what the browser tests look for.

use std::fmt::Write as _;

use super::orders::{CartLine, CustomerJson, OrderJson};
use super::upstream::{CatalogueCategory, CatalogueProduct, InvoiceView};
use crate::html::{esc, percent_off, stars};
use crate::http::Identity;
use crate::text::money;
use crate::time;

/// The variant a product list was served by: the `x-shop-variant` header, else the JSON.
pub fn variant_of(header: Option<&str>, products: &[CatalogueProduct]) -> Option<String> {
    header
        .map(str::to_owned)
        .or_else(|| products.iter().find_map(|p| p.variant.clone()))
        .filter(|v| v == "v1" || v == "v2")
}

fn media_class(category: Option<i64>) -> String {
    format!("cat-{}", category.unwrap_or(0).clamp(0, 4))
}

/// The price line: v2 adds the struck-through list price and the saving.
fn price_html(p: &CatalogueProduct, v2: bool) -> String {
    let mut out = format!(
        r#"<span class="price-now">{}</span>"#,
        esc(&money(p.price_cents, &p.currency))
    );
    if v2
        && let Some(list) = p.list_price_cents
        && let Some(pct) = percent_off(p.price_cents, list)
    {
        let _ = write!(
            out,
            r#" <s class="price-was"><span class="visually-hidden">was </span>{}</s> <span class="save">save {pct} %</span>"#,
            esc(&money(list, &p.currency))
        );
    }
    out
}

fn rating_html(p: &CatalogueProduct) -> String {
    match (p.rating, p.review_count) {
        (Some(rating), reviews) => {
            let reviews = reviews.unwrap_or(0);
            format!(
                r#"<p class="rating"><span class="stars" aria-hidden="true">{}</span> <span class="visually-hidden">Rated </span>{rating:.1}<span class="visually-hidden"> out of 5</span> <span class="reviews">({reviews} reviews)</span></p>"#,
                stars(rating)
            )
        }
        (None, _) => String::new(),
    }
}

fn add_to_cart_form(p: &CatalogueProduct, compact: bool) -> String {
    if compact {
        format!(
            r#"<form method="post" action="/cart/items" class="add"><input type="hidden" name="productId" value="{id}"><input type="hidden" name="quantity" value="1"><button class="button" type="submit">Add to cart<span class="visually-hidden">: {name}</span></button></form>"#,
            id = p.id,
            name = esc(&p.name)
        )
    } else {
        format!(
            r#"<form method="post" action="/cart/items" class="buy"><input type="hidden" name="productId" value="{id}"><div class="field"><label for="quantity">Quantity</label><input id="quantity" name="quantity" type="number" min="1" max="99" value="1" required inputmode="numeric"></div><button class="button big" type="submit">Add to cart</button></form>"#,
            id = p.id
        )
    }
}

/// The catalogue: hero, v2 banner, category chips and the product grid, or the outage notice.
pub fn catalogue(
    products: Option<&[CatalogueProduct]>,
    categories: &[CatalogueCategory],
    selected: Option<i64>,
    variant: Option<&str>,
) -> String {
    let v2 = variant == Some("v2");
    let mut out = String::new();
    out.push_str(
        r#"<section class="hero"><p class="eyebrow">Small-batch roastery · Leith</p><h1>Coffee roasted this week, at your door next.</h1><p class="lede">Single origins, house blends and the gear to brew them. Roasted on Tuesdays and Fridays, posted the same afternoon.</p></section>"#,
    );
    if v2 {
        out.push_str(
            r#"<aside class="banner-v2" aria-label="New catalogue"><span class="banner-tag">New</span><div><strong>New catalogue (v2)</strong><p>Star ratings from our customers and member prices on every coffee.</p></div></aside>"#,
        );
    }
    let Some(products) = products else {
        out.push_str(
            r#"<div class="notice warn" data-degraded="catalogue" role="status"><strong>The catalogue is unavailable right now.</strong> Please try again in a moment; your cart and your orders are safe.</div><p><a class="button ghost" href="/">Try again</a></p>"#,
        );
        return out;
    };
    if !categories.is_empty() {
        out.push_str(r#"<nav class="chips" aria-label="Categories"><ul>"#);
        let current = |on: bool| if on { r#" aria-current="page""# } else { "" };
        let _ = write!(
            out,
            r#"<li><a href="/"{}>All</a></li>"#,
            current(selected.is_none())
        );
        for c in categories {
            let _ = write!(
                out,
                r#"<li><a href="/?category={id}"{cur}>{name}</a></li>"#,
                id = c.id,
                cur = current(selected == Some(c.id)),
                name = esc(&c.name)
            );
        }
        out.push_str("</ul></nav>");
    }
    if let Some(c) = selected.and_then(|id| categories.iter().find(|c| c.id == id)) {
        let _ = write!(
            out,
            r#"<p class="category-intro">{}</p>"#,
            esc(&c.description)
        );
    }
    if products.is_empty() {
        out.push_str(r#"<p class="empty">Nothing here yet.</p>"#);
        return out;
    }
    out.push_str(r#"<ul class="grid" role="list">"#);
    for p in products {
        let _ = write!(
            out,
            r#"<li class="card" data-product="{id}"><a class="card-media {media}" href="/products/{id}" tabindex="-1" aria-hidden="true"><span>{emoji}</span></a><div class="card-body"><h2 class="card-title"><a href="/products/{id}">{name}</a></h2>{rating}<p class="card-text">{desc}</p><div class="card-foot"><p class="price">{price}</p>{form}</div></div></li>"#,
            id = p.id,
            media = media_class(p.category_id),
            emoji = esc(&p.emoji),
            name = esc(&p.name),
            rating = if v2 { rating_html(p) } else { String::new() },
            desc = esc(&p.description),
            price = price_html(p, v2),
            form = add_to_cart_form(p, true),
        );
    }
    out.push_str("</ul>");
    out
}

/// One product with the quantity form.
pub fn product(p: &CatalogueProduct, variant: Option<&str>) -> String {
    let v2 = variant == Some("v2");
    let mut out = format!(
        r#"<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Catalogue</a> <span aria-hidden="true">›</span> <span>{name}</span></nav><article class="product-detail" data-product="{id}"><div class="product-media {media}"><span role="img" aria-label="{name}">{emoji}</span></div><div class="product-info"><h1>{name}</h1>"#,
        name = esc(&p.name),
        id = p.id,
        media = media_class(p.category_id),
        emoji = esc(&p.emoji),
    );
    if v2 {
        out.push_str(&rating_html(p));
    }
    let _ = write!(
        out,
        r#"<p class="lede">{desc}</p><p class="price big">{price}</p>{form}<p class="muted small">Free delivery on orders over €40. Roasted to order.</p></div></article>"#,
        desc = esc(&p.description),
        price = price_html(p, v2),
        form = add_to_cart_form(p, false),
    );
    out
}

/// A notice at the top of the cart page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CartNotice {
    None,
    Full,
    Empty,
    CatalogueDown,
    UnknownProduct,
    Invalid,
}

fn cart_notice(notice: CartNotice) -> &'static str {
    match notice {
        CartNotice::None => "",
        CartNotice::Full => {
            r#"<div class="notice error" role="alert">Your cart is full: an order can hold 20 different items.</div>"#
        }
        CartNotice::Empty => {
            r#"<div class="notice error" role="alert">Your cart is empty, so there is nothing to order yet.</div>"#
        }
        CartNotice::CatalogueDown => {
            r#"<div class="notice warn" data-degraded="catalogue" role="alert"><strong>The catalogue is unavailable; no order was placed.</strong> Your cart is kept. Please try again in a moment.</div>"#
        }
        CartNotice::UnknownProduct => {
            r#"<div class="notice error" role="alert">An item in your cart is no longer sold. Please remove it and try again.</div>"#
        }
        CartNotice::Invalid => {
            r#"<div class="notice error" role="alert">That did not work: please check the quantity (1 to 99) and try again.</div>"#
        }
    }
}

/// The cart with its lines and the checkout form (`token` makes a double submit harmless).
pub fn cart(lines: &[CartLine], notice: CartNotice, token: &str) -> String {
    let mut out = String::from(r#"<h1>Your cart</h1>"#);
    out.push_str(cart_notice(notice));
    if lines.is_empty() {
        out.push_str(r#"<div class="empty panel"><p>Your cart is empty.</p><p><a class="button" href="/">Browse the catalogue</a></p></div>"#);
        return out;
    }
    out.push_str(r#"<div class="panel"><table class="lines"><caption class="visually-hidden">Items in your cart</caption><thead><tr><th scope="col">Item</th><th scope="col" class="num">Price</th><th scope="col" class="num">Quantity</th><th scope="col" class="num">Total</th><th scope="col"><span class="visually-hidden">Remove</span></th></tr></thead><tbody>"#);
    let mut total: i64 = 0;
    let mut currency = "EUR".to_owned();
    for l in lines {
        let line_total = l.price_cents.saturating_mul(l.quantity);
        total = total.saturating_add(line_total);
        currency.clone_from(&l.currency);
        let _ = write!(
            out,
            r#"<tr data-cart-line="{id}"><td><span class="line-emoji" aria-hidden="true">{emoji}</span> <a href="/products/{id}">{name}</a></td><td class="num">{price}</td><td class="num">{qty}</td><td class="num">{total}</td><td class="num"><form method="post" action="/cart/items/{id}/delete"><button class="link-button" type="submit">Remove<span class="visually-hidden"> {name}</span></button></form></td></tr>"#,
            id = l.product_id,
            emoji = esc(&l.emoji),
            name = esc(&l.name),
            price = esc(&money(l.price_cents, &l.currency)),
            qty = l.quantity,
            total = esc(&money(line_total, &l.currency)),
        );
    }
    let _ = write!(
        out,
        r#"</tbody><tfoot><tr><th scope="row" colspan="3">Estimated total</th><td class="num"><strong>{}</strong></td><td></td></tr></tfoot></table>"#,
        esc(&money(total, &currency))
    );
    let _ = write!(
        out,
        r#"<div class="checkout-row"><p class="muted small">Prices are confirmed from the catalogue when you place the order. You pay by card; the invoice follows by email.</p><form method="post" action="/checkout"><input type="hidden" name="token" value="{}"><button class="button big" type="submit">Place order</button></form></div></div>"#,
        esc(token)
    );
    out
}

fn status_badge(status: &str) -> String {
    let (class, label) = match status {
        "COMPLETED" => ("ok", "Completed"),
        "PENDING" => ("pending", "Pending"),
        "CANCELLED" => ("muted", "Cancelled"),
        "CREATED" => ("ok", "Invoiced"),
        "FAILED" => ("error", "Needs attention"),
        "PAID" => ("ok", "Paid"),
        "ISSUED" => ("pending", "Issued"),
        other => ("muted", other),
    };
    format!(
        r#"<span class="status status-{class}">{}</span>"#,
        esc(label)
    )
}

/// The order list.
pub fn orders(orders: &[OrderJson], total: i64, page: i64, size: i64) -> String {
    let mut out = String::from("<h1>Your orders</h1>");
    if orders.is_empty() && page == 0 {
        out.push_str(r#"<div class="empty panel"><p>You have not ordered anything yet.</p><p><a class="button" href="/">Browse the catalogue</a></p></div>"#);
        return out;
    }
    out.push_str(r#"<ul class="order-list" role="list">"#);
    for o in orders {
        let units: i64 = o.items.iter().map(|i| i.quantity).sum();
        let _ = write!(
            out,
            r#"<li class="order-row" data-order="{code}"><a href="/orders/{id}"><span class="order-code">{code}</span><span class="order-date">{date}</span><span class="order-units">{units} item{plural}</span>{status}<span class="order-total">{total}</span></a></li>"#,
            code = esc(&o.code),
            id = o.id,
            date = esc(&time::human(o.placed_ms)),
            units = units,
            plural = if units == 1 { "" } else { "s" },
            status = status_badge(&o.status),
            total = esc(&money(o.total_cents, &o.currency)),
        );
    }
    out.push_str("</ul>");
    let shown_to = page.saturating_add(1).saturating_mul(size);
    if page > 0 || shown_to < total {
        out.push_str(r#"<nav class="pager" aria-label="Pages">"#);
        if page > 0 {
            let _ = write!(
                out,
                r#"<a class="button ghost" href="/orders?page={}">Newer orders</a>"#,
                page - 1
            );
        }
        if shown_to < total {
            let _ = write!(
                out,
                r#"<a class="button ghost" href="/orders?page={}">Older orders</a>"#,
                page + 1
            );
        }
        out.push_str("</nav>");
    }
    out
}

/// What the order page knows about the invoice.
#[derive(Debug, Clone, PartialEq)]
pub enum InvoiceState {
    Found(Box<InvoiceView>),
    /// invoice answered: no invoice yet.
    Pending,
    /// invoice could not be asked (5xx, 429, timeout, connection error).
    Degraded,
}

fn human_instant(text: Option<&str>) -> String {
    match text.and_then(time::parse_rfc3339) {
        Some(ms) => time::human(ms),
        None => text.unwrap_or("").to_owned(),
    }
}

fn invoice_block(order: &OrderJson, state: &InvoiceState) -> String {
    match state {
        InvoiceState::Found(inv) => {
            let mut out = format!(
                r#"<div class="invoice" data-invoice="{code}"><dl class="facts"><dt>Invoice</dt><dd><strong>{code}</strong></dd><dt>Status</dt><dd>{status}</dd><dt>Amount</dt><dd>{amount}</dd><dt>Payment</dt><dd>{method}{date}</dd>"#,
                code = esc(&inv.code),
                status = status_badge(&inv.status),
                amount = esc(&money(inv.payment_amount_cents, &inv.currency)),
                method = esc(&payment_method(&inv.payment_method)),
                date = match &inv.payment_date {
                    Some(d) => format!(", {}", esc(&human_instant(Some(d)))),
                    None => String::new(),
                },
            );
            if let Some(sh) = &inv.shipment {
                let _ = write!(
                    out,
                    r#"<dt>Shipment</dt><dd><span class="tracking" data-tracking="{code}">{code}</span> <span class="muted">· {details}</span></dd>"#,
                    code = esc(&sh.tracking_code),
                    details = esc(&sh.details),
                );
            }
            out.push_str("</dl>");
            match &inv.notification {
                Some(n) => {
                    let format = n.format.as_deref().unwrap_or("EMAIL");
                    let icon = match format {
                        "SMS" => "💬",
                        "PARCEL" => "📦",
                        _ => "✉️",
                    };
                    let _ = write!(
                        out,
                        r#"<div class="notification" data-notification="{id}"><span class="notification-icon" aria-hidden="true">{icon}</span><div><strong>{label} sent</strong> <span class="muted small">· {when}</span>{details}</div></div>"#,
                        id = n.id,
                        label = esc(&format_label(format)),
                        when = esc(&human_instant(n.sent_date.as_deref())),
                        details = match &n.details {
                            Some(d) => format!(r#"<p class="small">“{}”</p>"#, esc(d)),
                            None => String::new(),
                        },
                    );
                }
                None => out.push_str(
                    r#"<p class="muted small" data-notification-pending>We are emailing you the invoice.</p>"#,
                ),
            }
            out.push_str("</div>");
            out
        }
        InvoiceState::Pending if order.invoice_status == "FAILED" => format!(
            r#"<div class="notice error" data-invoice-failed="{code}" role="status">We could not create the invoice for {code} automatically. Your order is confirmed; our team has been alerted and will send the invoice.</div>"#,
            code = esc(&order.code)
        ),
        InvoiceState::Pending => {
            let attempts = if order.invoice_attempts > 0 {
                format!(
                    r#" <span class="muted small">({} attempt{} so far)</span>"#,
                    order.invoice_attempts,
                    if order.invoice_attempts == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            };
            format!(
                r#"<div class="notice info" data-invoice-pending role="status"><strong>Invoice pending — being created.</strong>{attempts} <a href="/orders/{id}">Refresh</a></div>"#,
                id = order.id
            )
        }
        InvoiceState::Degraded => format!(
            r#"<div class="notice warn" data-degraded="invoice" role="status"><strong>Invoicing is running late.</strong> Your order {code} is confirmed and safe; the invoice will appear here shortly. <a href="/orders/{id}">Refresh</a></div>"#,
            code = esc(&order.code),
            id = order.id
        ),
    }
}

fn payment_method(method: &str) -> String {
    match method {
        "CREDIT_CARD" => "Credit card".into(),
        "PAYPAL" => "PayPal".into(),
        "CASH_ON_DELIVERY" => "Cash on delivery".into(),
        other => other.to_owned(),
    }
}

fn format_label(format: &str) -> String {
    match format {
        "EMAIL" => "Email".into(),
        "SMS" => "Text message".into(),
        "PARCEL" => "Parcel note".into(),
        other => other.to_owned(),
    }
}

/// One order: items and totals, the invoice (or its pending / degraded notice).
pub fn order(order: &OrderJson, invoice: &InvoiceState, just_placed: bool) -> String {
    let mut out = format!(
        r#"<nav class="crumbs" aria-label="Breadcrumb"><a href="/orders">Orders</a> <span aria-hidden="true">›</span> <span>{code}</span></nav><header class="order-head" data-order="{code}"><h1>Order {code}</h1><p class="muted">Placed {date} · {status}</p></header>"#,
        code = esc(&order.code),
        date = esc(&time::human(order.placed_ms)),
        status = status_badge(&order.status),
    );
    if just_placed {
        out.push_str(r#"<div class="notice ok" role="status"><strong>Thank you!</strong> Your order is confirmed.</div>"#);
    }
    out.push_str(r#"<div class="order-grid"><section class="panel" aria-labelledby="items-h"><h2 id="items-h">Items</h2><table class="lines"><thead><tr><th scope="col">Item</th><th scope="col" class="num">Price</th><th scope="col" class="num">Quantity</th><th scope="col" class="num">Total</th></tr></thead><tbody>"#);
    for item in &order.items {
        let _ = write!(
            out,
            r#"<tr><td><a href="/products/{id}">{name}</a></td><td class="num">{price}</td><td class="num">{qty}</td><td class="num">{total}</td></tr>"#,
            id = item.product_id,
            name = esc(&item.name),
            price = esc(&money(item.price_cents, &order.currency)),
            qty = item.quantity,
            total = esc(&money(item.total_cents, &order.currency)),
        );
    }
    let _ = write!(
        out,
        r#"</tbody><tfoot><tr><th scope="row" colspan="3">Total</th><td class="num"><strong>{}</strong></td></tr></tfoot></table></section><section class="panel" aria-labelledby="invoice-h"><h2 id="invoice-h">Invoice &amp; delivery</h2>{}</section></div>"#,
        esc(&money(order.total_cents, &order.currency)),
        invoice_block(order, invoice),
    );
    out
}

/// The profile: verified claims, the customer record if any, the order count.
pub fn account(user: &Identity, customer: Option<&CustomerJson>, order_count: i64) -> String {
    let mut out = format!(
        r#"<h1>Your account</h1><div class="order-grid"><section class="panel" aria-labelledby="profile-h"><h2 id="profile-h">Profile</h2><dl class="facts"><dt>Name</dt><dd>{name}</dd><dt>Email</dt><dd>{email}</dd><dt>User id</dt><dd><code>{sub}</code></dd><dt>Orders</dt><dd data-order-count="{count}">{count}</dd></dl><p><a class="button ghost" href="/orders">Your orders</a></p></section>"#,
        name = esc(&user.name),
        email = if user.email.is_empty() {
            "<span class=\"muted\">not shared</span>".to_owned()
        } else {
            esc(&user.email)
        },
        sub = esc(&user.sub),
        count = order_count,
    );
    out.push_str(r#"<section class="panel" aria-labelledby="address-h"><h2 id="address-h">Delivery details</h2>"#);
    match customer {
        Some(c) => {
            let full_name = format!("{} {}", c.first_name, c.last_name);
            let lines: Vec<String> = [
                full_name.trim(),
                c.address_line1.as_str(),
                c.city.as_str(),
                c.country.as_str(),
                c.telephone.as_str(),
            ]
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| esc(l))
            .collect();
            if lines.is_empty() {
                out.push_str(r#"<p class="muted">No address yet.</p>"#);
            } else {
                let _ = write!(out, "<address>{}</address>", lines.join("<br>"));
            }
            let _ = write!(
                out,
                r#"<p class="muted small">Customer record {} · update it with <code>PUT /api/customers/{}</code>.</p>"#,
                c.id, c.id
            );
        }
        None => out.push_str(
            r#"<p class="muted">We create your customer record with your first order.</p>"#,
        ),
    }
    out.push_str("</section></div>");
    out
}

/// The body shown when the request carries no identity.
pub fn sign_in(path: &str) -> String {
    format!(
        r#"<section class="signin panel"><h1>Sign in to shop</h1><p>Sign in to see the catalogue, fill your cart and follow your orders.</p><p><a class="button big" href="/oauth2/start?rd={}">Sign in</a></p></section>"#,
        esc(&crate::html::query_value(path))
    )
}

/// A short error body.
pub fn error(title: &str, message: &str) -> String {
    format!(
        r#"<section class="panel error-page"><h1>{}</h1><p>{}</p><p><a class="button" href="/">Back to the catalogue</a></p></section>"#,
        esc(title),
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::upstream::{NotificationView, ShipmentView};

    fn product(v2: bool) -> CatalogueProduct {
        CatalogueProduct {
            id: 3,
            name: "<script>alert(1)</script>".into(),
            description: "a & b".into(),
            price_cents: 1450,
            currency: "EUR".into(),
            category_id: Some(1),
            emoji: "🍇".into(),
            variant: Some(if v2 { "v2" } else { "v1" }.into()),
            rating: v2.then_some(4.6),
            review_count: v2.then_some(12),
            list_price_cents: v2.then_some(1690),
        }
    }

    fn order() -> OrderJson {
        OrderJson {
            id: 7,
            code: "ORD-2026-000007".into(),
            placed_date: String::new(),
            status: "PENDING".into(),
            total_cents: 2900,
            currency: "EUR".into(),
            customer_id: 1,
            items: vec![],
            invoice_status: "PENDING".into(),
            invoice_id: None,
            invoice_attempts: 2,
            placed_ms: 0,
        }
    }

    #[test]
    fn catalogue_v1_and_v2_differ_and_escape() {
        let v1 = catalogue(Some(&[product(false)]), &[], None, Some("v1"));
        assert!(!v1.contains("<script>"));
        assert!(v1.contains("&lt;script&gt;"));
        assert!(v1.contains("a &amp; b"));
        assert!(!v1.contains("New catalogue (v2)"));
        assert!(!v1.contains("price-was"));
        let v2 = catalogue(Some(&[product(true)]), &[], None, Some("v2"));
        assert!(v2.contains("New catalogue (v2)"));
        assert!(v2.contains("€16.90</s>"));
        assert!(v2.contains("save 14 %"));
        assert!(v2.contains("★★★★½"));
        assert!(v2.contains("(12 reviews)"));
        let down = catalogue(None, &[], None, None);
        assert!(down.contains(r#"data-degraded="catalogue""#));
        assert!(down.contains("The catalogue is unavailable right now"));
    }

    #[test]
    fn variant_detection() {
        assert_eq!(variant_of(Some("v2"), &[]), Some("v2".into()));
        assert_eq!(variant_of(None, &[product(true)]), Some("v2".into()));
        assert_eq!(variant_of(Some("v9"), &[]), None);
    }

    #[test]
    fn invoice_states() {
        let o = order();
        let degraded = invoice_block(&o, &InvoiceState::Degraded);
        assert!(degraded.contains(r#"data-degraded="invoice""#));
        assert!(degraded.contains(
            "Your order ORD-2026-000007 is confirmed and safe; the invoice will appear here shortly."
        ));
        let pending = invoice_block(&o, &InvoiceState::Pending);
        assert!(pending.contains("Invoice pending — being created"));
        assert!(pending.contains("2 attempts"));
        let mut failed = order();
        failed.invoice_status = "FAILED".into();
        assert!(invoice_block(&failed, &InvoiceState::Pending).contains("data-invoice-failed"));
        let found = invoice_block(
            &o,
            &InvoiceState::Found(Box::new(InvoiceView {
                id: 1,
                code: "INV-2026-000001".into(),
                status: "PAID".into(),
                payment_amount_cents: 2900,
                currency: "EUR".into(),
                payment_method: "CREDIT_CARD".into(),
                payment_date: Some("2026-12-02T17:00:00.000Z".into()),
                shipment: Some(ShipmentView {
                    tracking_code: "TRK-2026-000001".into(),
                    details: "Standard".into(),
                }),
                notification: Some(NotificationView {
                    id: 9,
                    format: Some("EMAIL".into()),
                    sent_date: Some("2026-12-02T17:00:01.000Z".into()),
                    details: Some("Your <invoice>".into()),
                }),
            })),
        );
        assert!(found.contains(r#"data-invoice="INV-2026-000001""#));
        assert!(found.contains(r#"data-notification="9""#));
        assert!(found.contains("TRK-2026-000001"));
        assert!(found.contains("2 Dec 2026, 17:00 UTC"));
        assert!(found.contains("“Your &lt;invoice&gt;”"));
    }
}

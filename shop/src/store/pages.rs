//! The storefront's pages: server-rendered HTML, forms posted as
//! `application/x-www-form-urlencoded`, redirects after every successful POST.
//!
//! Pages degrade instead of failing: a catalogue or invoice outage shows a notice on a page
//! answered with 200 (a storefront that returned 5xx for its dependencies' outages could be
//! ejected by the mesh's outlier detection, turning one outage into two). Refused actions
//! (checkout while the catalogue is down, bad form input) answer 4xx/503 with the styled page.

use std::convert::Infallible;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, FromRequestParts, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::json;

use super::StoreState;
use super::orders::{self, CartRefusal, LineRequest, OrderError, Source};
use super::upstream::UpstreamError;
use super::views::{self, CartNotice, InvoiceState};
use crate::html::{self, Nav, Page};
use crate::http::{Identity, InternalError, Paging, Problem, parse_id};
use crate::{rand, time};

const STYLESHEET: &str = include_str!("../../assets/shop.css");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Per-request page context.
struct Ctx {
    user: Option<Identity>,
    cart_count: i64,
    path: String,
}

async fn ctx(s: &StoreState, headers: &HeaderMap, uri: &Uri) -> Ctx {
    let user = Identity::from_headers(headers);
    let cart_count = match &user {
        Some(u) => {
            let sub = u.sub.clone();
            s.common
                .db
                .call(move |conn| -> anyhow::Result<i64> { Ok(orders::cart_count(conn, &sub)?) })
                .await
                .unwrap_or(0)
        }
        None => 0,
    };
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ctx {
        user,
        cart_count,
        path,
    }
}

/// A page request of a signed-in user, with its page context. A request without an identity is
/// answered with the sign-in page.
pub(super) struct SignedIn {
    ctx: Ctx,
    user: Identity,
}

impl FromRequestParts<StoreState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &StoreState) -> Result<Self, Response> {
        let ctx = ctx(s, &parts.headers, &parts.uri).await;
        match ctx.user.clone() {
            Some(user) => Ok(SignedIn { ctx, user }),
            None => Err(sign_in(s, &ctx)),
        }
    }
}

/// The route's `{id}` segment when it is a positive integer; pages answer any other with a page
/// of their own.
pub(super) struct PathId(Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let raw = Path::<String>::from_request_parts(parts, state).await;
        Ok(PathId(raw.ok().and_then(|Path(raw)| parse_id(&raw).ok())))
    }
}

/// What a page shows besides its body.
struct View<'a> {
    status: StatusCode,
    title: &'a str,
    nav: Nav,
    main_attrs: Vec<(&'static str, String)>,
    served: Vec<String>,
}

impl<'a> View<'a> {
    fn new(title: &'a str, nav: Nav) -> View<'a> {
        View {
            status: StatusCode::OK,
            title,
            nav,
            main_attrs: Vec::new(),
            served: Vec::new(),
        }
    }

    fn status(mut self, status: StatusCode) -> View<'a> {
        self.status = status;
        self
    }

    /// Marks the page with the catalogue version that served it (`data-variant`) and names the
    /// version and instance in the footer.
    fn served_by_catalogue(&mut self, variant: Option<&str>, instance: Option<&str>) {
        if let Some(v) = variant {
            self.main_attrs.push(("data-variant", v.to_owned()));
        }
        self.served.push(format!(
            "catalogue: product {} · instance {}",
            variant.unwrap_or("?"),
            instance.unwrap_or("unknown")
        ));
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn render(s: &StoreState, ctx: &Ctx, view: View<'_>, body: String) -> Response {
    let mut served = vec![format!("storefront: instance {}", s.common.config.instance)];
    served.extend(view.served);
    let document = html::render(&Page {
        title: view.title,
        nav: view.nav,
        user: ctx.user.as_ref(),
        cart_count: ctx.cart_count,
        logout_url: &s.common.config.logout_url,
        path: &ctx.path,
        main_attrs: view.main_attrs,
        body,
        served,
    });
    html_response(view.status, document)
}

/// The page for requests without an identity (the proxy normally signs people in first).
fn sign_in(s: &StoreState, ctx: &Ctx) -> Response {
    render(
        s,
        ctx,
        View::new("Sign in", Nav::None).status(StatusCode::UNAUTHORIZED),
        views::sign_in(&ctx.path),
    )
}

fn error_page(
    s: &StoreState,
    ctx: &Ctx,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    render(
        s,
        ctx,
        View::new(title, Nav::None).status(status),
        views::error(title, message),
    )
}

/// 404 page for a path that names no `what` (of this user's).
fn no_such(s: &StoreState, ctx: &Ctx, what: &str) -> Response {
    error_page(
        s,
        ctx,
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no such {what}."),
    )
}

/// 500 page; the cause goes to the log through the response's `InternalError`.
fn internal(s: &StoreState, ctx: &Ctx, cause: impl std::fmt::Display) -> Response {
    let mut response = error_page(
        s,
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Something went wrong on our side. It has been logged; please try again in a moment.",
    );
    response
        .extensions_mut()
        .insert(InternalError(cause.to_string()));
    response
}

/// Runs `f` with the store's database on its thread; a failure is answered with the 500 page.
async fn database<T, F>(s: &StoreState, ctx: &Ctx, f: F) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
{
    s.common
        .db
        .call(move |conn| -> anyhow::Result<T> { Ok(f(conn)?) })
        .await
        .map_err(|e| internal(s, ctx, format!("{e:#}")))
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

/// A raw query parameter (the pages only read numbers and short tokens).
fn query_param<'u>(uri: &'u Uri, name: &str) -> Option<&'u str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `GET /`: the catalogue of the variant the mesh routes this user to.
pub async fn catalogue(
    State(s): State<StoreState>,
    SignedIn { ctx, .. }: SignedIn,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let selected = query_param(&uri, "category").and_then(|v| parse_id(v).ok());
    let (products, categories) = tokio::join!(
        s.upstream.products(&headers, selected),
        s.upstream.categories(&headers)
    );
    let categories = categories.unwrap_or_default();
    let mut view = View::new("Catalogue", Nav::Catalogue);
    let body = match products {
        Ok((products, served)) => {
            let variant = views::variant_of(served.variant.as_deref(), &products);
            view.served_by_catalogue(variant.as_deref(), served.instance.as_deref());
            views::catalogue(Some(&products), &categories, selected, variant.as_deref())
        }
        Err(e) => {
            s.common.logger.warn(
                "catalogue unavailable",
                &[("error", json!(e.to_string())), ("page", json!("/"))],
            );
            view.served.push("catalogue: unavailable".to_owned());
            views::catalogue(None, &[], selected, None)
        }
    };
    render(&s, &ctx, view, body)
}

/// `GET /products/{id}`.
pub async fn product(
    State(s): State<StoreState>,
    SignedIn { ctx, .. }: SignedIn,
    headers: HeaderMap,
    PathId(id): PathId,
) -> Response {
    let Some(id) = id else {
        return no_such(&s, &ctx, "product");
    };
    match s.upstream.product(&headers, id).await {
        Ok((p, served)) => {
            let variant = served
                .variant
                .clone()
                .or_else(|| p.variant.clone())
                .filter(|v| v == "v1" || v == "v2");
            let mut view = View::new(&p.name, Nav::Catalogue);
            view.served_by_catalogue(variant.as_deref(), served.instance.as_deref());
            let body = views::product(&p, variant.as_deref());
            render(&s, &ctx, view, body)
        }
        Err(UpstreamError::NotFound) => no_such(&s, &ctx, "product"),
        Err(UpstreamError::Unavailable(why)) => {
            s.common.logger.warn(
                "catalogue unavailable",
                &[("error", json!(why)), ("page", json!("/products/{id}"))],
            );
            let body = r#"<div class="notice warn" data-degraded="catalogue" role="status"><strong>The catalogue is unavailable right now.</strong> Please try again in a moment; your cart and your orders are safe.</div><p><a class="button ghost" href="/">Back to the catalogue</a></p>"#;
            let mut view = View::new("Catalogue unavailable", Nav::Catalogue);
            view.served.push("catalogue: unavailable".to_owned());
            render(&s, &ctx, view, body.to_owned())
        }
    }
}

/// The status of a cart page that shows `notice`: 200 without one, else the refusal's.
fn cart_status(notice: CartNotice) -> StatusCode {
    match notice {
        CartNotice::None => StatusCode::OK,
        CartNotice::Full => StatusCode::CONFLICT,
        CartNotice::CatalogueDown => StatusCode::SERVICE_UNAVAILABLE,
        CartNotice::Empty | CartNotice::UnknownProduct | CartNotice::Invalid => {
            StatusCode::BAD_REQUEST
        }
    }
}

async fn cart_page(s: &StoreState, ctx: &Ctx, user: &Identity, notice: CartNotice) -> Response {
    let sub = user.sub.clone();
    match database(s, ctx, move |conn| orders::cart(conn, &sub)).await {
        Ok(lines) => render(
            s,
            ctx,
            View::new("Cart", Nav::Cart).status(cart_status(notice)),
            views::cart(&lines, notice, &rand::token()),
        ),
        Err(page) => page,
    }
}

/// `GET /cart`.
pub async fn cart(State(s): State<StoreState>, SignedIn { ctx, user }: SignedIn) -> Response {
    cart_page(&s, &ctx, &user, CartNotice::None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddForm {
    product_id: String,
    #[serde(default)]
    quantity: Option<String>,
}

fn form_error(s: &StoreState, ctx: &Ctx, rejection: &FormRejection) -> Response {
    let status = rejection.status();
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    error_page(
        s,
        ctx,
        status,
        "That form did not work",
        "The form could not be read. Please go back and try again.",
    )
}

/// `POST /cart/items` (`productId`, `quantity`): checks the product with the catalogue, adds it,
/// redirects to the cart.
pub async fn add_to_cart(
    State(s): State<StoreState>,
    SignedIn { ctx, user }: SignedIn,
    headers: HeaderMap,
    form: Result<Form<AddForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return form_error(&s, &ctx, &rejection),
    };
    let quantity = match form.quantity.as_deref().map(str::trim) {
        None | Some("") => Some(1),
        Some(q) => q
            .parse::<i64>()
            .ok()
            .filter(|q| (1..=orders::MAX_QUANTITY).contains(q)),
    };
    let (Ok(product_id), Some(quantity)) = (parse_id(form.product_id.trim()), quantity) else {
        return cart_page(&s, &ctx, &user, CartNotice::Invalid).await;
    };
    let product = match s.upstream.product(&headers, product_id).await {
        Ok((product, _)) => product,
        Err(UpstreamError::NotFound) => {
            return cart_page(&s, &ctx, &user, CartNotice::UnknownProduct).await;
        }
        Err(UpstreamError::Unavailable(why)) => {
            s.common
                .logger
                .warn("catalogue unavailable", &[("error", json!(why))]);
            return error_page(
                &s,
                &ctx,
                StatusCode::SERVICE_UNAVAILABLE,
                "The catalogue is unavailable",
                "The catalogue is unavailable right now, so the item could not be added. Please try again in a moment.",
            );
        }
    };
    let sub = user.sub.clone();
    let added = database(&s, &ctx, move |conn| {
        orders::add_to_cart(conn, &sub, &product, quantity, time::now_ms())
    })
    .await;
    match added {
        Ok(Ok(())) => see_other("/cart"),
        Ok(Err(CartRefusal::Full)) => cart_page(&s, &ctx, &user, CartNotice::Full).await,
        Err(page) => page,
    }
}

/// `POST /cart/items/{productId}/delete`.
pub async fn remove_from_cart(
    State(s): State<StoreState>,
    SignedIn { ctx, user }: SignedIn,
    PathId(product_id): PathId,
) -> Response {
    let Some(product_id) = product_id else {
        return cart_page(&s, &ctx, &user, CartNotice::Invalid).await;
    };
    let sub = user.sub.clone();
    let removed = database(&s, &ctx, move |conn| {
        orders::remove_from_cart(conn, &sub, product_id)
    })
    .await;
    match removed {
        Ok(()) => see_other("/cart"),
        Err(page) => page,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutForm {
    token: String,
}

/// `POST /checkout`: places the cart's order through the same path as the API (and empties the
/// cart in its transaction), then shows the order. The form's one-time token is the
/// idempotency key, so a double submit shows the same order instead of placing two.
pub async fn checkout(
    State(s): State<StoreState>,
    SignedIn { ctx, user }: SignedIn,
    headers: HeaderMap,
    form: Result<Form<CheckoutForm>, FormRejection>,
) -> Response {
    let token = match form {
        Ok(Form(form)) => form.token,
        Err(rejection) => return form_error(&s, &ctx, &rejection),
    };
    let token_ok = token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit());
    if !token_ok {
        return cart_page(&s, &ctx, &user, CartNotice::Invalid).await;
    }
    let key = format!("checkout-{token}");
    let sub = user.sub.clone();
    let lines = match database(&s, &ctx, move |conn| orders::cart(conn, &sub)).await {
        Ok(lines) => lines,
        Err(page) => return page,
    };
    let requested: Vec<LineRequest> = lines
        .iter()
        .map(|l| LineRequest {
            product_id: l.product_id,
            quantity: l.quantity,
        })
        .collect();
    let lines = if requested.is_empty() {
        Vec::new()
    } else {
        match orders::validate_lines(&requested) {
            Ok(lines) => lines,
            Err(_) => return cart_page(&s, &ctx, &user, CartNotice::Invalid).await,
        }
    };
    if lines.is_empty() {
        // A double submit after the first emptied the cart: show the first order.
        return match orders::order_for_key(&s, &user, &key).await {
            Ok(Some(id)) => see_other(&format!("/orders/{id}")),
            Ok(None) => cart_page(&s, &ctx, &user, CartNotice::Empty).await,
            Err(e) => internal(&s, &ctx, format!("{e:?}")),
        };
    }
    match orders::place_order(&s, &user, &headers, lines, Some(key), Source::Cart).await {
        Ok(placed) => see_other(&format!("/orders/{}", placed.order.id)),
        Err(OrderError::CatalogueUnavailable(why)) => {
            s.common.logger.warn(
                "checkout refused: catalogue unavailable",
                &[("error", json!(why))],
            );
            cart_page(&s, &ctx, &user, CartNotice::CatalogueDown).await
        }
        Err(OrderError::UnknownProduct(_)) => {
            cart_page(&s, &ctx, &user, CartNotice::UnknownProduct).await
        }
        Err(OrderError::Invalid(_) | OrderError::Conflict(_)) => {
            cart_page(&s, &ctx, &user, CartNotice::Invalid).await
        }
        Err(OrderError::Internal(cause)) => internal(&s, &ctx, cause),
    }
}

/// `GET /orders`.
pub async fn orders(
    State(s): State<StoreState>,
    SignedIn { ctx, user }: SignedIn,
    uri: Uri,
) -> Response {
    let page = query_param(&uri, "page")
        .and_then(|p| p.parse::<i64>().ok())
        .filter(|p| (0..=100_000).contains(p))
        .unwrap_or(0);
    let paging = Paging { page, size: 20 };
    let listed = database(&s, &ctx, move |conn| {
        orders::list_orders(conn, &user.sub, paging)
    })
    .await;
    match listed {
        Ok((list, total)) => render(
            &s,
            &ctx,
            View::new("Orders", Nav::Orders),
            views::orders(&list, total, paging.page, paging.size),
        ),
        Err(page) => page,
    }
}

/// `GET /orders/{id}`: the order, and its invoice and notification as the invoice service
/// reports them (or a degraded notice when it cannot be asked).
pub async fn order(
    State(s): State<StoreState>,
    SignedIn { ctx, user }: SignedIn,
    headers: HeaderMap,
    PathId(id): PathId,
) -> Response {
    let Some(id) = id else {
        return no_such(&s, &ctx, "order");
    };
    let found = database(&s, &ctx, move |conn| {
        orders::load_order(conn, &user.sub, id)
    })
    .await;
    let order = match found {
        Ok(Some(order)) => order,
        Ok(None) => return no_such(&s, &ctx, "order"),
        Err(page) => return page,
    };
    let mut view = View::new(&order.code, Nav::Orders);
    let invoice = match s.upstream.invoices_for_order(&headers, order.id).await {
        Ok((invoices, served)) => {
            view.served.push(format!(
                "invoice: instance {}",
                served.instance.as_deref().unwrap_or("unknown")
            ));
            match invoices.into_iter().next() {
                Some(inv) => InvoiceState::Found(Box::new(inv)),
                None => InvoiceState::Pending,
            }
        }
        Err(e) => {
            s.common.logger.warn(
                "invoice unavailable; order page degraded",
                &[
                    ("error", json!(e.to_string())),
                    ("order", json!(order.code)),
                ],
            );
            view.served.push("invoice: unavailable".to_owned());
            InvoiceState::Degraded
        }
    };
    // Redirects after POST carry no state, so "just placed" means "placed a moment ago".
    let just_placed = time::now_ms().saturating_sub(order.placed_ms) < 120_000;
    let code = order.code.clone();
    view.main_attrs.push(("data-order-page", code));
    let body = views::order(&order, &invoice, just_placed);
    render(&s, &ctx, view, body)
}

/// `GET /account`.
pub async fn account(State(s): State<StoreState>, SignedIn { ctx, user }: SignedIn) -> Response {
    let sub = user.sub.clone();
    let read = database(&s, &ctx, move |conn| {
        Ok((
            orders::customer(conn, &sub)?,
            orders::order_count(conn, &sub)?,
        ))
    })
    .await;
    match read {
        Ok((customer, count)) => render(
            &s,
            &ctx,
            View::new("Account", Nav::Account),
            views::account(&user, customer.as_ref(), count),
        ),
        Err(page) => page,
    }
}

/// `GET /content/shop.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// `GET /favicon.ico`: an SVG (browsers go by the content type, not the name).
pub async fn favicon() -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("image/svg+xml")),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        FAVICON,
    )
        .into_response()
}

/// Unknown paths: a problem under `/api/`, a page elsewhere.
pub async fn fallback(State(s): State<StoreState>, headers: HeaderMap, uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return Problem::not_found("no such resource").into_response();
    }
    let ctx = ctx(&s, &headers, &uri).await;
    error_page(
        &s,
        &ctx,
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address.",
    )
}

/// The answer to a refused cross-site form post (no layout: the request is not trusted).
pub fn forbidden_page(_: &HeaderMap) -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Refused · {shop}</title><link rel=\"stylesheet\" href=\"/content/shop.css\"></head><body><main class=\"wrap\"><section class=\"panel error-page\"><h1>Request refused</h1><p>This form was sent from another site, so it was not accepted.</p><p><a class=\"button\" href=\"/\">Go to the shop</a></p></section></main></body></html>\n",
            shop = html::esc(html::SHOP_NAME)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        let uri: Uri = "/?category=2&notice=added&flag".parse().unwrap();
        assert_eq!(query_param(&uri, "category"), Some("2"));
        assert_eq!(query_param(&uri, "notice"), Some("added"));
        assert_eq!(query_param(&uri, "flag"), Some(""));
        assert_eq!(query_param(&uri, "page"), None);
        assert_eq!(query_param(&"/".parse().unwrap(), "x"), None);
    }
}

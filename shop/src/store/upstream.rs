//! Store's calls to product and invoice while serving a user's request: the user's propagated
//! headers go along (the next sidecar verifies the token again and routes by it), and every
//! answer is checked before the store trusts it. A catalogue that cannot be reached, times out
//! or answers nonsense is "unavailable"; the callers decide how to degrade.

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::client::{self, Client, INVOICE_READ_TIMEOUT, PRODUCT_TIMEOUT, Reply};
use crate::config::BaseUrl;
use crate::server::Common;
use crate::text;

/// A product as the catalogue describes it (a tolerant reader: unknown fields are ignored, the
/// v2 fields are optional).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogueProduct {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    #[serde(default)]
    pub category_id: Option<i64>,
    #[serde(default)]
    pub emoji: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub rating: Option<f64>,
    #[serde(default)]
    pub review_count: Option<i64>,
    #[serde(default)]
    pub list_price_cents: Option<i64>,
}

impl CatalogueProduct {
    /// Rejects values the store must not price an order with.
    pub fn check(&self) -> Result<(), String> {
        if self.id < 1 {
            return Err(format!("product id {}", self.id));
        }
        text::check("name", &self.name, 1, 200)?;
        if !(0..=crate::invoice::MAX_AMOUNT_CENTS).contains(&self.price_cents) {
            return Err(format!("price of product {}", self.id));
        }
        text::check_currency(&self.currency)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogueCategory {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// The invoice as the order page shows it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceView {
    pub id: i64,
    pub code: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub payment_amount_cents: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub payment_method: String,
    #[serde(default)]
    pub payment_date: Option<String>,
    #[serde(default)]
    pub shipment: Option<ShipmentView>,
    #[serde(default)]
    pub notification: Option<NotificationView>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentView {
    pub tracking_code: String,
    #[serde(default)]
    pub details: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    pub id: i64,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub sent_date: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
}

/// Which instance answered (from `x-shop-instance` / `x-shop-variant`), for the page footer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedBy {
    pub instance: Option<String>,
    pub variant: Option<String>,
}

fn served_by(reply: &Reply) -> ServedBy {
    let clean = |v: Option<&str>| {
        v.map(|v| text::truncate(v.trim(), 64))
            .filter(|v| !v.is_empty())
    };
    ServedBy {
        instance: clean(reply.header("x-shop-instance")),
        variant: clean(reply.header("x-shop-variant")),
    }
}

/// Why an upstream answer is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// 404: the thing does not exist.
    NotFound,
    /// Anything else: connection, timeout, 5xx, 429, a mesh denial, a malformed body.
    Unavailable(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("not found"),
            Self::Unavailable(why) => f.write_str(why),
        }
    }
}

fn decode<T: DeserializeOwned>(
    result: Result<Reply, client::CallError>,
) -> Result<(T, ServedBy), UpstreamError> {
    let reply = result.map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
    if reply.status == StatusCode::NOT_FOUND {
        return Err(UpstreamError::NotFound);
    }
    if !reply.status.is_success() {
        return Err(UpstreamError::Unavailable(format!(
            "HTTP {}",
            reply.status.as_u16()
        )));
    }
    let value = reply.json::<T>().map_err(UpstreamError::Unavailable)?;
    Ok((value, served_by(&reply)))
}

/// The product and invoice services as store sees them.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client,
    product: BaseUrl,
    invoice: BaseUrl,
}

impl Upstream {
    pub fn new(common: &Common) -> Upstream {
        Upstream {
            client: common.client.clone(),
            product: common.config.product_url.clone(),
            invoice: common.config.invoice_url.clone(),
        }
    }

    /// `GET /api/products/{id}`.
    pub async fn product(
        &self,
        incoming: &HeaderMap,
        id: i64,
    ) -> Result<(CatalogueProduct, ServedBy), UpstreamError> {
        let url = self.product.join(&format!("/api/products/{id}"));
        let result = self
            .client
            .get(&url, client::propagate(incoming), PRODUCT_TIMEOUT)
            .await;
        let (product, served): (CatalogueProduct, ServedBy) = decode(result)?;
        product.check().map_err(|e| {
            UpstreamError::Unavailable(format!("the catalogue sent an invalid product: {e}"))
        })?;
        if product.id != id {
            return Err(UpstreamError::Unavailable(format!(
                "asked for product {id}, got {}",
                product.id
            )));
        }
        Ok((product, served))
    }

    /// `GET /api/products?size=100[&categoryId=N]`: the whole (small) catalogue.
    pub async fn products(
        &self,
        incoming: &HeaderMap,
        category: Option<i64>,
    ) -> Result<(Vec<CatalogueProduct>, ServedBy), UpstreamError> {
        let query = match category {
            Some(c) => format!("/api/products?size=100&categoryId={c}"),
            None => "/api/products?size=100".to_owned(),
        };
        let result = self
            .client
            .get(
                &self.product.join(&query),
                client::propagate(incoming),
                PRODUCT_TIMEOUT,
            )
            .await;
        let (products, served): (Vec<CatalogueProduct>, ServedBy) = decode(result)?;
        // One bad product does not take the catalogue page down.
        let products = products.into_iter().filter(|p| p.check().is_ok()).collect();
        Ok((products, served))
    }

    /// `GET /api/product-categories`.
    pub async fn categories(
        &self,
        incoming: &HeaderMap,
    ) -> Result<Vec<CatalogueCategory>, UpstreamError> {
        let result = self
            .client
            .get(
                &self.product.join("/api/product-categories?size=100"),
                client::propagate(incoming),
                PRODUCT_TIMEOUT,
            )
            .await;
        let (categories, _): (Vec<CatalogueCategory>, ServedBy) = decode(result)?;
        Ok(categories)
    }

    /// `GET /api/invoices?orderId=N`, with the short read timeout.
    pub async fn invoices_for_order(
        &self,
        incoming: &HeaderMap,
        order_id: i64,
    ) -> Result<(Vec<InvoiceView>, ServedBy), UpstreamError> {
        let url = self
            .invoice
            .join(&format!("/api/invoices?orderId={order_id}"));
        let result = self
            .client
            .get(&url, client::propagate(incoming), INVOICE_READ_TIMEOUT)
            .await;
        match decode(result) {
            // The list endpoint exists; a 404 means something in between is wrong.
            Err(UpstreamError::NotFound) => Err(UpstreamError::Unavailable("HTTP 404".into())),
            other => other,
        }
    }
}

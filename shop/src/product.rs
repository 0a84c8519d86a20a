//! The product service: the read-only catalogue (`/api/products`, `/api/product-categories`),
//! in two versions for the A/B experiment. Both serve the same products at the same prices, so
//! an order never depends on which version a shopper saw; v2 adds ratings, review counts and a
//! "was" price for the storefront's new price display.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::config::Variant;
use crate::db;
use crate::http::{self, Id, Params, Problem, X_SHOP_VARIANT};
use crate::metrics::Sample;
use crate::server::{App, Common};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS product_categories (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    list_price_cents INTEGER NOT NULL CHECK (list_price_cents >= price_cents),
    currency TEXT NOT NULL,
    category_id INTEGER NOT NULL REFERENCES product_categories (id),
    emoji TEXT NOT NULL,
    rating REAL NOT NULL,
    review_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS products_category ON products (category_id);
";

/// The roastery's categories: (id, name, description).
pub const CATEGORIES: [(i64, &str, &str); 4] = [
    (
        1,
        "Single origin",
        "Traceable lots from one farm or washing station, roasted light to show where they grew.",
    ),
    (
        2,
        "Blends",
        "Balanced, dependable coffees for espresso and everyday filter.",
    ),
    (3, "Brewing gear", "Tools for a better cup at home."),
    (
        4,
        "Cups & extras",
        "Things to drink from, and things to give.",
    ),
];

/// A seeded product.
#[derive(Debug, Clone, Copy)]
pub struct Seed {
    pub id: i64,
    pub name: &'static str,
    pub description: &'static str,
    pub price_cents: i64,
    pub list_price_cents: i64,
    pub category_id: i64,
    pub emoji: &'static str,
    pub rating: f64,
    pub review_count: i64,
}

const fn seed_product(
    id: i64,
    name: &'static str,
    description: &'static str,
    (price_cents, list_price_cents): (i64, i64),
    category_id: i64,
    emoji: &'static str,
    (rating, review_count): (f64, i64),
) -> Seed {
    Seed {
        id,
        name,
        description,
        price_cents,
        list_price_cents,
        category_id,
        emoji,
        rating,
        review_count,
    }
}

/// The catalogue, the same on every instance and in both versions.
pub const PRODUCTS: [Seed; 12] = [
    seed_product(
        1,
        "Ethiopia Yirgacheffe",
        "Washed heirloom varieties from Gedeo. Jasmine, bergamot and lemon curd. 250 g, whole bean.",
        (1450, 1690),
        1,
        "🌸",
        (4.8, 212),
    ),
    seed_product(
        2,
        "Colombia Huila",
        "Caturra and Castillo from smallholders around Pitalito. Caramel, red apple, milk chocolate. 250 g.",
        (1290, 1490),
        1,
        "🍎",
        (4.6, 184),
    ),
    seed_product(
        3,
        "Kenya Nyeri AA",
        "SL28 and SL34, double fermented. Blackcurrant, grapefruit, a juicy finish. 250 g.",
        (1590, 1850),
        1,
        "🍇",
        (4.7, 96),
    ),
    seed_product(
        4,
        "Guatemala Antigua",
        "Bourbon grown on volcanic soil. Cocoa, toasted almond, orange peel. 250 g.",
        (1350, 1550),
        1,
        "🌋",
        (4.5, 143),
    ),
    seed_product(
        5,
        "House Espresso",
        "Brazil and Colombia, roasted for milk. Hazelnut, dark chocolate, long sweet finish. 1 kg.",
        (3490, 3990),
        2,
        "☕\u{fe0f}",
        (4.7, 531),
    ),
    seed_product(
        6,
        "Morning Ritual",
        "A bright, sweet filter blend that forgives any brewer. 500 g.",
        (1890, 2190),
        2,
        "🌅",
        (4.4, 267),
    ),
    seed_product(
        7,
        "Midnight Decaf",
        "Swiss Water decaffeinated Peru. Cocoa, molasses, no sleepless night. 250 g.",
        (1190, 1390),
        2,
        "🌙",
        (4.3, 88),
    ),
    seed_product(
        8,
        "Ceramic Dripper",
        "Size 02 cone with spiral ribs for an even, unhurried pour-over.",
        (2400, 2900),
        3,
        "🏺",
        (4.6, 159),
    ),
    seed_product(
        9,
        "Gooseneck Kettle",
        "0.9 litre stovetop kettle with a thermometer in the lid.",
        (4900, 5900),
        3,
        "🫖",
        (4.5, 74),
    ),
    seed_product(
        10,
        "Hand Grinder",
        "Conical steel burrs, 40 click settings, a 30 g hopper.",
        (6900, 7900),
        3,
        "⚙️",
        (4.8, 121),
    ),
    seed_product(
        11,
        "Stoneware Mug",
        "Hand-glazed in the workshop next door. 300 ml, dishwasher safe.",
        (1800, 2200),
        4,
        "🍵",
        (4.9, 63),
    ),
    seed_product(
        12,
        "Subscription, 3 months",
        "A fresh single origin every month, roasted to order and posted the same day.",
        (4200, 4800),
        4,
        "🎁",
        (4.7, 208),
    ),
];

/// Seeds the catalogue on first start (when there are no categories yet), in one transaction.
pub fn seed(conn: &mut Connection, _variant: Variant) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    let existing: i64 =
        tx.query_row("SELECT COUNT(*) FROM product_categories", [], |r| r.get(0))?;
    if existing == 0 {
        for (id, name, description) in CATEGORIES {
            tx.execute(
                "INSERT INTO product_categories (id, name, description) VALUES (?1, ?2, ?3)",
                params![id, name, description],
            )?;
        }
        for p in PRODUCTS {
            tx.execute(
                "INSERT INTO products (id, name, description, price_cents, list_price_cents,
                 currency, category_id, emoji, rating, review_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'EUR', ?6, ?7, ?8, ?9)",
                params![
                    p.id,
                    p.name,
                    p.description,
                    p.price_cents,
                    p.list_price_cents,
                    p.category_id,
                    p.emoji,
                    p.rating,
                    p.review_count
                ],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A product as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductJson {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    pub category_id: i64,
    pub emoji: String,
    pub variant: &'static str,
    /// v2 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<f64>,
    /// v2 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_count: Option<i64>,
    /// v2 only: the "was" price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_price_cents: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CategoryJson {
    pub id: i64,
    pub name: String,
    pub description: String,
}

const PRODUCT_COLUMNS: &str = "id, name, description, price_cents, currency, category_id, emoji, \
                               rating, review_count, list_price_cents";

/// Maps a row to the JSON of `variant`: v1 leaves the v2 fields out.
fn product_row(variant: Variant) -> impl Fn(&Row<'_>) -> rusqlite::Result<ProductJson> {
    move |r| {
        let v2 = variant == Variant::V2;
        Ok(ProductJson {
            id: r.get(0)?,
            name: r.get(1)?,
            description: r.get(2)?,
            price_cents: r.get(3)?,
            currency: r.get(4)?,
            category_id: r.get(5)?,
            emoji: r.get(6)?,
            variant: variant.as_str(),
            rating: if v2 { Some(r.get(7)?) } else { None },
            review_count: if v2 { Some(r.get(8)?) } else { None },
            list_price_cents: if v2 { Some(r.get(9)?) } else { None },
        })
    }
}

#[derive(Clone)]
struct ProductState {
    common: Common,
}

pub fn app(common: &Common) -> App {
    let state = ProductState {
        common: common.clone(),
    };
    let router = Router::new()
        .route("/api/products", get(list_products))
        .route("/api/products/{id}", get(get_product))
        .route("/api/product-categories", get(list_categories))
        .route("/api/product-categories/{id}", get(get_category))
        .fallback(http::not_found)
        .with_state(state);
    App {
        router,
        workers: Vec::new(),
        gauges,
        headers: vec![(
            X_SHOP_VARIANT,
            HeaderValue::from_static(common.config.variant.as_str()),
        )],
    }
}

fn gauges(conn: &Connection) -> rusqlite::Result<Vec<Sample>> {
    let products: i64 = conn.query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))?;
    let categories: i64 =
        conn.query_row("SELECT COUNT(*) FROM product_categories", [], |r| r.get(0))?;
    Ok(vec![
        Sample::gauge(
            "shop_products",
            "Products in the catalogue.",
            products as f64,
        ),
        Sample::gauge(
            "shop_product_categories",
            "Categories in the catalogue.",
            categories as f64,
        ),
    ])
}

async fn list_products(State(s): State<ProductState>, params: Params) -> Result<Response, Problem> {
    let paging = params.paging()?;
    let category = params.id("categoryId")?;
    let variant = s.common.config.variant;
    http::get_list(&s.common.db, move |conn| {
        let filter = "(?1 IS NULL OR category_id = ?1)";
        db::page(
            conn,
            &format!("SELECT COUNT(*) FROM products WHERE {filter}"),
            &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE {filter} ORDER BY id"),
            params![category],
            paging,
            product_row(variant),
        )
    })
    .await
}

async fn get_product(State(s): State<ProductState>, Id(id): Id) -> Result<Response, Problem> {
    let variant = s.common.config.variant;
    http::get_one(&s.common.db, "product", id, move |conn| {
        conn.query_row(
            &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?1"),
            [id],
            product_row(variant),
        )
        .optional()
    })
    .await
}

fn category_row(r: &Row<'_>) -> rusqlite::Result<CategoryJson> {
    Ok(CategoryJson {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
    })
}

async fn list_categories(
    State(s): State<ProductState>,
    params: Params,
) -> Result<Response, Problem> {
    let paging = params.paging()?;
    http::get_list(&s.common.db, move |conn| {
        db::page(
            conn,
            "SELECT COUNT(*) FROM product_categories",
            "SELECT id, name, description FROM product_categories ORDER BY id",
            params![],
            paging,
            category_row,
        )
    })
    .await
}

async fn get_category(State(s): State<ProductState>, Id(id): Id) -> Result<Response, Problem> {
    http::get_one(&s.common.db, "category", id, move |conn| {
        conn.query_row(
            "SELECT id, name, description FROM product_categories WHERE id = ?1",
            [id],
            category_row,
        )
        .optional()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_consistent() {
        for (i, p) in PRODUCTS.iter().enumerate() {
            assert_eq!(p.id, i as i64 + 1);
            assert!(p.list_price_cents > p.price_cents, "{}", p.name);
            assert!(CATEGORIES.iter().any(|c| c.0 == p.category_id));
            assert!((0.0..=5.0).contains(&p.rating));
        }
    }

    #[test]
    fn seeding_twice_keeps_one_catalogue() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        seed(&mut conn, Variant::V1).unwrap();
        seed(&mut conn, Variant::V2).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, PRODUCTS.len() as i64);
    }
}

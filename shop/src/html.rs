//! HTML for the storefront: escaping (every piece of dynamic text goes through [`esc`]) and the
//! page layout shared by every page. No JavaScript anywhere: links, forms and CSS only.

use std::fmt::Write as _;

use crate::http::Identity;

/// The shop's name, in the header, titles and footer.
pub const SHOP_NAME: &str = "Kestrel Coffee Roasters";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a URL query value (everything but unreserved characters and `/`).
pub fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Five stars for a rating out of 5, rounded to the nearest half (½ marks the half).
pub fn stars(rating: f64) -> String {
    let halves = (rating.clamp(0.0, 5.0) * 2.0).round() as usize;
    let full = halves / 2;
    let half = halves % 2;
    let empty = 5usize.saturating_sub(full + half);
    format!(
        "{}{}{}",
        "★".repeat(full),
        "½".repeat(half),
        "☆".repeat(empty)
    )
}

/// The whole-percent saving of `price` against a higher `list` price.
pub fn percent_off(price: i64, list: i64) -> Option<i64> {
    if list <= 0 || price >= list {
        return None;
    }
    Some(((list - price) * 100 + list / 2) / list)
}

/// The header's navigation entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Catalogue,
    Cart,
    Orders,
    Account,
    None,
}

/// One page, before rendering. `body` is trusted HTML built with [`esc`]; everything else is
/// plain text and is escaped here.
#[derive(Debug)]
pub struct Page<'a> {
    pub title: &'a str,
    pub nav: Nav,
    pub user: Option<&'a Identity>,
    pub cart_count: i64,
    pub logout_url: &'a str,
    /// Where "Sign in" leads back to.
    pub path: &'a str,
    /// Attributes of `<main>` (such as `data-variant`), escaped here.
    pub main_attrs: Vec<(&'static str, String)>,
    pub body: String,
    /// Which service instances served the page, one entry each.
    pub served: Vec<String>,
}

/// Renders a complete document.
pub fn render(page: &Page<'_>) -> String {
    let mut out = String::with_capacity(8 * 1024 + page.body.len());
    let _ = write!(
        out,
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {shop}</title>
<link rel="stylesheet" href="/content/shop.css">
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
</head>
<body>
<a class="skip-link" href="#main">Skip to content</a>
<header class="site-header">
<div class="wrap header-inner">
<a class="brand" href="/"><img src="/favicon.ico" alt="" width="36" height="36"><span class="brand-name">Kestrel <span>Coffee Roasters</span></span></a>
"##,
        title = esc(page.title),
        shop = esc(SHOP_NAME),
    );
    let link = |out: &mut String, nav: Nav, href: &str, label: &str, extra: &str| {
        let current = if page.nav == nav {
            r#" aria-current="page""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<li><a href="{href}"{current}>{label}{extra}</a></li>"#
        );
    };
    match page.user {
        Some(user) => {
            out.push_str(r#"<nav class="site-nav" aria-label="Main"><ul>"#);
            link(&mut out, Nav::Catalogue, "/", "Catalogue", "");
            let badge = format!(
                r#" <span class="badge" aria-label="{n} items">{n}</span>"#,
                n = page.cart_count
            );
            link(&mut out, Nav::Cart, "/cart", "Cart", &badge);
            link(&mut out, Nav::Orders, "/orders", "Orders", "");
            link(&mut out, Nav::Account, "/account", "Account", "");
            out.push_str("</ul></nav>\n");
            let _ = write!(
                out,
                r#"<div class="session"><span class="signed-in">Signed in as <strong>{name}</strong></span> <a class="button ghost small" href="{logout}">Sign out</a></div>"#,
                name = esc(&user.name),
                logout = esc(page.logout_url),
            );
        }
        None => {
            let _ = write!(
                out,
                r#"<div class="session"><a class="button small" href="/oauth2/start?rd={rd}">Sign in</a></div>"#,
                rd = esc(&query_value(page.path)),
            );
        }
    }
    out.push_str("\n</div>\n</header>\n<main id=\"main\" class=\"wrap\"");
    for (name, value) in &page.main_attrs {
        let _ = write!(out, r#" {name}="{}""#, esc(value));
    }
    out.push_str(">\n");
    out.push_str(&page.body);
    out.push_str("\n</main>\n<footer class=\"site-footer\">\n<div class=\"wrap footer-inner\">\n");
    let _ = write!(
        out,
        r#"<p>{shop} · Roasted in small batches, shipped the same day. A demo shop of the meshwright project.</p>"#,
        shop = esc(SHOP_NAME)
    );
    if !page.served.is_empty() {
        out.push_str(r#"<ul class="served" aria-label="Served by">"#);
        for line in &page.served {
            let _ = write!(out, "<li>{}</li>", esc(line));
        }
        out.push_str("</ul>");
    }
    out.push_str("\n</div>\n</footer>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(esc("Café ☕"), "Café ☕");
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value("/orders/4?x=1&y"), "/orders/4%3Fx%3D1%26y");
        assert_eq!(query_value("/é"), "/%C3%A9");
    }

    #[test]
    fn stars_and_savings() {
        assert_eq!(stars(4.8), "★★★★★");
        assert_eq!(stars(4.3), "★★★★½");
        assert_eq!(stars(4.2), "★★★★☆");
        assert_eq!(stars(0.0), "☆☆☆☆☆");
        assert_eq!(stars(9.0), "★★★★★");
        assert_eq!(percent_off(1450, 1690), Some(14));
        assert_eq!(percent_off(1000, 1000), None);
        assert_eq!(percent_off(1000, 0), None);
    }

    #[test]
    fn layout_escapes_user_and_attributes() {
        let user = Identity {
            sub: "u".into(),
            email: "e".into(),
            name: "<script>alert(1)</script>".into(),
        };
        let html = render(&Page {
            title: "T<",
            nav: Nav::Cart,
            user: Some(&user),
            cart_count: 3,
            logout_url: "/oauth2/logout?a=1&b=2",
            path: "/",
            main_attrs: vec![("data-variant", "v2\"x".into())],
            body: "<p>body</p>".into(),
            served: vec!["catalogue: product v2 · instance <p>".into()],
        });
        assert!(!html.contains("<script>"));
        assert!(
            html.contains("Signed in as <strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>")
        );
        assert!(html.contains(r#"href="/oauth2/logout?a=1&amp;b=2""#));
        assert!(html.contains(r#"data-variant="v2&quot;x""#));
        assert!(html.contains(r#"<a href="/cart" aria-current="page">Cart"#));
        assert!(html.contains("instance &lt;p&gt;"));
        assert!(html.contains("<title>T&lt; · Kestrel Coffee Roasters</title>"));
        let anonymous = render(&Page {
            title: "x",
            nav: Nav::None,
            user: None,
            cart_count: 0,
            logout_url: "/oauth2/logout",
            path: "/orders/1",
            main_attrs: vec![],
            body: String::new(),
            served: vec![],
        });
        assert!(anonymous.contains(r#"href="/oauth2/start?rd=/orders/1""#));
        assert!(!anonymous.contains("Sign out"));
    }
}

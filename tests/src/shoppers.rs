//! A realistic mix of shoppers against the shop's gateway (`cargo xtask load`): what the demo,
//! the dashboards and a soak run on.
//!
//! Each shopper signs in once through the IdP's form (its own user, so A/B assignments spread as
//! real users' do), then browses, views products, fills a cart, orders now and then and reads
//! its orders, with think times between clicks. A few bad actors run beside them: API calls
//! without a session, forged session cookies, spoofed routing and identity headers, malformed
//! orders, requests for actuator paths. Every request is counted by route and status with its
//! latency; shoppers' 5xx answers are what the summary warns about.

use crate::agent::{Agent, login_via_idp};
use crate::client::Response;
use anyhow::{Context, Result};
use hyper::Method;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    /// The shop, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub duration: Duration,
    pub shoppers: usize,
    pub bad_actors: usize,
    /// Mean think time between a shopper's clicks.
    pub think: Duration,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            duration: Duration::from_secs(60),
            shoppers: 8,
            bad_actors: 2,
            think: Duration::from_millis(400),
            seed: 1,
        }
    }
}

/// Statuses and latencies of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteStats {
    pub statuses: BTreeMap<u16, u64>,
    /// Transport failures (no HTTP answer).
    pub errors: u64,
    pub latencies_us: Vec<u64>,
}

impl RouteStats {
    pub fn count(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors
    }

    fn percentile(&self, p: f64) -> Option<u64> {
        let mut v = self.latencies_us.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied()
    }
}

/// What a run saw, by route (`"GET /products/{id}"`, `"bad: forged cookie"`, …).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub routes: BTreeMap<String, RouteStats>,
    pub orders: u64,
    pub signed_in: u64,
    pub elapsed: Duration,
}

impl Report {
    pub fn requests(&self) -> u64 {
        self.routes.values().map(RouteStats::count).sum()
    }

    /// 5xx answers and transport errors on the shoppers' routes (bad actors are expected to
    /// get 4xx, never 5xx either).
    pub fn server_errors(&self) -> u64 {
        self.routes
            .values()
            .map(|r| r.errors + r.statuses.range(500..).map(|(_, n)| n).sum::<u64>())
            .sum()
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let ms =
            |v: Option<u64>| v.map_or("-".to_owned(), |us| format!("{:.1}", us as f64 / 1000.0));
        let mut s = format!(
            "{} requests in {:.1} s ({:.1}/s), {} shoppers signed in, {} orders placed, {} server errors\n\n",
            self.requests(),
            self.elapsed.as_secs_f64(),
            self.requests() as f64 / self.elapsed.as_secs_f64().max(0.001),
            self.signed_in,
            self.orders,
            self.server_errors()
        );
        s.push_str(&format!(
            "{:<34} {:>7}  {:<28} {:>8} {:>8} {:>8} {:>8}\n",
            "route", "count", "statuses", "p50 ms", "p90 ms", "p99 ms", "max ms"
        ));
        for (route, r) in &self.routes {
            let mut statuses: Vec<String> =
                r.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
            if r.errors > 0 {
                statuses.push(format!("err×{}", r.errors));
            }
            s.push_str(&format!(
                "{:<34} {:>7}  {:<28} {:>8} {:>8} {:>8} {:>8}\n",
                route,
                r.count(),
                statuses.join(" "),
                ms(r.percentile(0.5)),
                ms(r.percentile(0.9)),
                ms(r.percentile(0.99)),
                ms(r.percentile(1.0)),
            ));
        }
        s
    }
}

#[derive(Default)]
struct Shared {
    report: Mutex<Report>,
}

impl Shared {
    fn record(&self, route: &str, started: Instant, r: &Result<Response>) {
        if let Ok(mut rep) = self.report.lock() {
            let e = rep.routes.entry(route.to_owned()).or_default();
            match r {
                Ok(resp) => {
                    *e.statuses.entry(resp.status).or_default() += 1;
                    e.latencies_us
                        .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
                }
                Err(_) => e.errors += 1,
            }
        }
    }

    fn bump(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut rep) = self.report.lock() {
            f(&mut rep);
        }
    }

    fn snapshot(&self) -> Report {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// xorshift64*: a shopper's own reproducible choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A think time around `mean` (uniform in [0.5, 1.5] × mean).
    fn think(&mut self, mean: Duration) -> Duration {
        let ms = mean.as_millis() as u64;
        Duration::from_millis(ms / 2 + self.below(ms + 1))
    }
}

/// One client's requests to the shop, each timed and counted under a route name.
struct Session<'a> {
    shared: &'a Shared,
    agent: &'a Agent,
    base: &'a str,
}

impl Session<'_> {
    async fn send(
        &self,
        route: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(String, &str)>,
    ) -> Result<Response> {
        let started = Instant::now();
        let url = format!("{}{path}", self.base);
        let r = self.agent.send(method, &url, headers, body).await;
        self.shared.record(route, started, &r);
        r
    }

    async fn get(&self, route: &str, path: &str) -> Result<Response> {
        self.send(route, Method::GET, path, &[], None).await
    }

    async fn post_form(&self, route: &str, path: &str, body: String) -> Result<Response> {
        self.send(route, Method::POST, path, &[], Some((body, FORM)))
            .await
    }
}

/// The hidden inputs of the form posting to `action` in `page`.
fn form_fields(page: &str, action: &str) -> Option<Vec<(String, String)>> {
    let re = regex_lite::Regex::new(&format!(
        r#"(?s)<form[^>]*action="{}"[^>]*>(.*?)</form>"#,
        regex_lite::escape(action)
    ))
    .ok()?;
    let inner = re.captures(page)?.get(1)?.as_str().to_owned();
    let input = regex_lite::Regex::new(r#"<input[^>]*name="([^"]*)"[^>]*value="([^"]*)""#).ok()?;
    Some(
        input
            .captures_iter(&inner)
            .map(|c| (c[1].to_owned(), c[2].to_owned()))
            .collect(),
    )
}

fn encode(fields: &[(String, String)]) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        f.append_pair(k, v);
    }
    f.finish()
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn shopper(shared: Arc<Shared>, opts: Options, id: usize, deadline: Instant) -> Result<()> {
    let base = opts.url.trim_end_matches('/').to_owned();
    let mut rng = Rng(opts
        .seed
        .wrapping_mul(1_000_003)
        .wrapping_add(id as u64 + 1)
        | 1);
    let agent = Agent::new();
    let started = Instant::now();
    let login = login_via_idp(&agent, &format!("{base}/"), &format!("shopper-{id}")).await;
    shared.record(
        "sign in (IdP form)",
        started,
        &login
            .as_ref()
            .map(|(_, r)| r.clone())
            .map_err(|e| anyhow::anyhow!("{e}")),
    );
    let (_, page) = login.context("signing in")?;
    if page.status != 200 {
        return Ok(());
    }
    shared.bump(|r| r.signed_in += 1);
    let me = Session {
        shared: &shared,
        agent: &agent,
        base: &base,
    };
    while Instant::now() < deadline {
        let roll = rng.below(100);
        let product = 1 + rng.below(12);
        if roll < 35 {
            let _ = me.get("GET /", "/").await;
        } else if roll < 60 {
            let _ = me
                .get("GET /products/{id}", &format!("/products/{product}"))
                .await;
        } else if roll < 78 {
            let body = format!("productId={product}&quantity={}", 1 + rng.below(3));
            let _ = me.post_form("POST /cart/items", "/cart/items", body).await;
        } else if roll < 86 {
            // Check out what is in the cart (the cart page's form carries its one-time token).
            if let Ok(cart) = me.get("GET /cart", "/cart").await
                && let Some(fields) = form_fields(&cart.text(), "/checkout")
                && let Ok(r) = me
                    .post_form("POST /checkout", "/checkout", encode(&fields))
                    .await
                && r.status == 303
            {
                shared.bump(|rep| rep.orders += 1);
                if let Some(loc) = r.header("location") {
                    let _ = me.get("GET /orders/{id}", loc).await;
                }
            }
        } else if roll < 96 {
            let _ = me.get("GET /orders", "/orders").await;
        } else {
            let _ = me.get("GET /account", "/account").await;
        }
        tokio::time::sleep(rng.think(opts.think)).await;
    }
    Ok(())
}

async fn bad_actor(shared: Arc<Shared>, opts: Options, id: usize, deadline: Instant) -> Result<()> {
    let base = opts.url.trim_end_matches('/').to_owned();
    let mut rng = Rng(opts.seed.wrapping_add(0xbad0 + id as u64) | 1);
    let anon = Agent::api();
    let signed = Agent::new();
    let _ = login_via_idp(&signed, &format!("{base}/"), &format!("mallory-{id}")).await;
    let (anon, signed) = (
        Session {
            shared: &shared,
            agent: &anon,
            base: &base,
        },
        Session {
            shared: &shared,
            agent: &signed,
            base: &base,
        },
    );
    while Instant::now() < deadline {
        let _ = match rng.below(5) {
            0 => {
                anon.get("bad: API without a session", "/api/product-orders")
                    .await
            }
            1 => {
                let forged = Agent::new();
                forged.set_cookie(&base, "meshwright", "forged-session-value");
                let forged = Session {
                    shared: &shared,
                    agent: &forged,
                    base: &base,
                };
                forged.get("bad: forged session cookie", "/").await
            }
            2 => {
                let spoofed = [
                    ("x-ab-product", "v2"),
                    ("x-jwt-sub", "alice"),
                    ("x-meshwright-drill", "invoice-outage"),
                ];
                signed
                    .send(
                        "bad: spoofed x-ab-product/x-jwt-sub",
                        Method::GET,
                        "/",
                        &spoofed,
                        None,
                    )
                    .await
            }
            3 => {
                let junk = r#"{"items": [{"productId": "x"}]}"#.to_owned();
                signed
                    .send(
                        "bad: malformed order",
                        Method::POST,
                        "/api/product-orders",
                        &[("accept", "application/json")],
                        Some((junk, "application/json")),
                    )
                    .await
            }
            _ => {
                signed
                    .get("bad: actuator path", "/services/product/management/health")
                    .await
            }
        };
        tokio::time::sleep(rng.think(opts.think * 2)).await;
    }
    Ok(())
}

/// Runs the mix for `opts.duration`; `progress` is called about once a second.
pub async fn run(opts: &Options, progress: impl Fn(&Report, Duration)) -> Result<Report> {
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..opts.shoppers {
        tasks.spawn(shopper(Arc::clone(&shared), opts.clone(), id, deadline));
    }
    for id in 0..opts.bad_actors {
        tasks.spawn(bad_actor(Arc::clone(&shared), opts.clone(), id, deadline));
    }
    let mut failures = Vec::new();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => failures.push(format!("{e:#}")),
                Some(Err(e)) => failures.push(e.to_string()),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => progress(&shared.snapshot(), start.elapsed()),
        }
    }
    let mut report = shared.snapshot();
    report.elapsed = start.elapsed();
    if report.signed_in == 0 && !failures.is_empty() {
        anyhow::bail!("no shopper could sign in: {}", failures.join("; "));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_forms_token_is_found() {
        let page = r#"<form method="post" action="/cart/items/3/delete"><button>x</button></form>
<form method="post" action="/checkout"><input type="hidden" name="token" value="abc123"><button>Place order</button></form>"#;
        assert_eq!(
            form_fields(page, "/checkout").unwrap(),
            vec![("token".to_owned(), "abc123".to_owned())]
        );
        assert!(form_fields(page, "/nowhere").is_none());
    }

    #[test]
    fn percentiles_and_server_errors() {
        let mut r = Report::default();
        let s = r.routes.entry("GET /".into()).or_default();
        s.latencies_us = (1..=100).collect();
        s.statuses.insert(200, 98);
        s.statuses.insert(503, 2);
        s.errors = 1;
        assert_eq!(r.routes["GET /"].percentile(0.5), Some(51));
        assert_eq!(r.routes["GET /"].percentile(1.0), Some(100));
        assert_eq!(r.server_errors(), 3);
        assert!(r.table().contains("503×2"));
    }
}

//! A cookie-keeping HTTP client that follows redirects and submits HTML forms: enough of a
//! browser to log in through an IdP's form without one (the real-browser test uses Chromium).

use crate::client::Response;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub value: String,
    pub path: String,
}

/// Cookies by host:port, then name.
pub struct Agent {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    jar: Mutex<BTreeMap<String, BTreeMap<String, Cookie>>>,
    /// Extra headers sent on every request (e.g. `sec-fetch-mode: navigate`).
    pub headers: Vec<(String, String)>,
    /// Origins reached at another address, as `/etc/hosts` and a TLS-terminating front would
    /// ([`Agent::alias`]), by `host:port`.
    aliases: BTreeMap<String, std::net::SocketAddr>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Agent")
    }
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

/// A browser's request headers for a navigation.
pub fn navigation_headers() -> Vec<(String, String)> {
    vec![
        ("accept".into(), "text/html,application/xhtml+xml".into()),
        ("sec-fetch-mode".into(), "navigate".into()),
    ]
}

impl Agent {
    /// An agent that navigates like a browser (HTML accept, `Sec-Fetch-Mode: navigate`).
    pub fn new() -> Self {
        Self::with_headers(navigation_headers())
    }

    /// An agent that calls APIs (`Accept: application/json`).
    pub fn api() -> Self {
        Self::with_headers(vec![("accept".into(), "application/json".into())])
    }

    pub fn with_headers(headers: Vec<(String, String)>) -> Self {
        Self {
            client: HyperClient::builder(TokioExecutor::new()).build_http(),
            jar: Mutex::new(BTreeMap::new()),
            headers,
            aliases: BTreeMap::new(),
        }
    }

    /// Sends requests for `origin` (e.g. `https://idp.example.com`) as plain HTTP to `addr`,
    /// with the origin's `Host`; cookies stay the origin's. The stand-in for a name that resolves
    /// to a TLS front (a proxy that terminates or originates TLS) in a test on loopback.
    pub fn alias(mut self, origin: &str, addr: std::net::SocketAddr) -> Self {
        if let Ok(u) = url::Url::parse(origin) {
            self.aliases.insert(Self::host_of(&u), addr);
        }
        self
    }

    fn host_of(url: &url::Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(80)
        )
    }

    /// The cookies this agent holds for `url`'s host.
    pub fn cookies(&self, url: &str) -> BTreeMap<String, Cookie> {
        let Ok(u) = url::Url::parse(url) else {
            return BTreeMap::new();
        };
        self.jar
            .lock()
            .ok()
            .and_then(|j| j.get(&Self::host_of(&u)).cloned())
            .unwrap_or_default()
    }

    /// Sets a cookie by hand (e.g. a tampered one).
    pub fn set_cookie(&self, url: &str, name: &str, value: &str) {
        if let (Ok(u), Ok(mut jar)) = (url::Url::parse(url), self.jar.lock()) {
            jar.entry(Self::host_of(&u)).or_default().insert(
                name.to_owned(),
                Cookie {
                    value: value.to_owned(),
                    path: "/".into(),
                },
            );
        }
    }

    pub fn cookie_header(&self, url: &url::Url) -> Option<String> {
        let jar = self.jar.lock().ok()?;
        let cookies = jar.get(&Self::host_of(url))?;
        let pairs: Vec<String> = cookies
            .iter()
            .filter(|(_, c)| url.path().starts_with(&c.path))
            .map(|(k, c)| format!("{k}={}", c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn store(&self, url: &url::Url, resp: &Response) {
        let Ok(mut jar) = self.jar.lock() else { return };
        let host = jar.entry(Self::host_of(url)).or_default();
        for sc in resp
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let mut parts = sc.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let mut path = "/".to_owned();
            let mut delete = false;
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "path" => path = v.trim().to_owned(),
                    "max-age" => delete = v.trim().parse::<i64>().is_ok_and(|m| m <= 0),
                    _ => {}
                }
            }
            if delete {
                host.remove(name.trim());
            } else {
                host.insert(
                    name.trim().to_owned(),
                    Cookie {
                        value: value.trim().to_owned(),
                        path,
                    },
                );
            }
        }
    }

    /// One request (no redirect following), cookies sent and stored.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<(String, &str)>,
    ) -> Result<Response> {
        let u = url::Url::parse(url).with_context(|| format!("bad URL {url}"))?;
        let mut req = match self.aliases.get(&Self::host_of(&u)) {
            Some(addr) => {
                let query = u.query().map(|q| format!("?{q}")).unwrap_or_default();
                let host = match u.port() {
                    Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                    None => u.host_str().unwrap_or("").to_owned(),
                };
                Request::builder()
                    .method(method)
                    .uri(format!("http://{addr}{}{query}", u.path()))
                    .header("host", host)
            }
            None => Request::builder().method(method).uri(url),
        };
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = self.cookie_header(&u) {
            req = req.header("cookie", c);
        }
        let body = match body {
            Some((b, content_type)) => {
                req = req.header("content-type", content_type);
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            self.client.request(req.body(Full::new(body))?),
        )
        .await
        .context("request timed out")??;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let resp = Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        };
        self.store(&u, &resp);
        Ok(resp)
    }

    pub async fn get(&self, url: &str) -> Result<Response> {
        self.send(Method::GET, url, &[], None).await
    }

    /// GET `url` and follow redirects (at most 10); returns the final URL and response.
    pub async fn follow(&self, url: &str) -> Result<(String, Response)> {
        self.follow_from(Method::GET, url, None).await
    }

    async fn follow_from(
        &self,
        method: Method,
        url: &str,
        body: Option<(String, &str)>,
    ) -> Result<(String, Response)> {
        self.follow_until(method, url, body, None).await
    }

    /// Like following redirects, but stops (returning the redirect) when the next location
    /// starts with `stop_at`.
    pub async fn follow_until(
        &self,
        method: Method,
        url: &str,
        body: Option<(String, &str)>,
        stop_at: Option<&str>,
    ) -> Result<(String, Response)> {
        let mut current = url.to_owned();
        let mut resp = self.send(method, &current, &[], body).await?;
        for _ in 0..10 {
            if !(300..400).contains(&resp.status) {
                return Ok((current, resp));
            }
            let location = resp
                .header("location")
                .context("redirect without Location")?
                .to_owned();
            let next = url::Url::parse(&current)?.join(&location)?.to_string();
            if stop_at.is_some_and(|p| next.starts_with(p)) {
                return Ok((current, resp));
            }
            current = next;
            resp = self.send(Method::GET, &current, &[], None).await?;
        }
        bail!("too many redirects, last {current}")
    }

    /// Submits the first HTML form of `page` (hidden inputs plus `fields`), following redirects.
    pub async fn submit_form(
        &self,
        page_url: &str,
        page: &Response,
        fields: &[(&str, &str)],
    ) -> Result<(String, Response)> {
        self.submit_form_until(page_url, page, fields, None).await
    }

    /// [`Agent::submit_form`], stopping before a redirect to `stop_at`.
    pub async fn submit_form_until(
        &self,
        page_url: &str,
        page: &Response,
        fields: &[(&str, &str)],
        stop_at: Option<&str>,
    ) -> Result<(String, Response)> {
        let html = page.text();
        let form_re =
            regex_lite::Regex::new(r#"(?s)<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>"#)?;
        let caps = form_re
            .captures(&html)
            .with_context(|| format!("no form in {page_url}:\n{html}"))?;
        let action = html_unescape(caps.get(1).map_or("", |m| m.as_str()));
        let inner = caps.get(2).map_or("", |m| m.as_str());
        let input_re = regex_lite::Regex::new(
            r#"<input[^>]*type="hidden"[^>]*name="([^"]*)"[^>]*value="([^"]*)""#,
        )?;
        // Built before the await: the serializer is not Sync, and a future holding it is not
        // Send (the load generator runs logins on a multi-threaded runtime).
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for c in input_re.captures_iter(inner) {
                form.append_pair(&c[1], &html_unescape(&c[2]));
            }
            for (k, v) in fields {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let target = url::Url::parse(page_url)?.join(&action)?.to_string();
        self.follow_until(
            Method::POST,
            &target,
            Some((body, "application/x-www-form-urlencoded")),
            stop_at,
        )
        .await
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#x2F;", "/")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// Logs in through oidc-provider's development form starting at `start_url` (a protected page
/// behind the filter): follows the redirect to the IdP, submits login and consent, and follows
/// the callback back. Returns the final URL and page.
pub async fn login_via_idp(
    agent: &Agent,
    start_url: &str,
    user: &str,
) -> Result<(String, Response)> {
    login_until(agent, start_url, user, None).await
}

/// [`login_via_idp`], stopping before the redirect to `stop_at` (e.g. the callback URL, to
/// replay it).
pub async fn login_until(
    agent: &Agent,
    start_url: &str,
    user: &str,
    stop_at: Option<&str>,
) -> Result<(String, Response)> {
    let (mut url, mut page) = agent
        .follow_until(Method::GET, start_url, None, stop_at)
        .await?;
    for _ in 0..4 {
        let html = page.text();
        if html.contains("name=\"login\"") {
            (url, page) = agent
                .submit_form_until(
                    &url,
                    &page,
                    &[("login", user), ("password", "any")],
                    stop_at,
                )
                .await?;
        } else if html.contains("value=\"consent\"") {
            (url, page) = agent.submit_form_until(&url, &page, &[], stop_at).await?;
        } else {
            break;
        }
    }
    Ok((url, page))
}

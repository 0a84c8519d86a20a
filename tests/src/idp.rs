//! A real OpenID Provider on loopback: `oidc-provider` from npm (tests/idp/server.mjs), with its
//! development login form. Nothing about it is mocked; tests that need a misbehaving IdP put a
//! real proxy with a fault filter in front of it.

use crate::{install, paths};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct IdpOptions {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_uris: Vec<String>,
    /// `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    /// `RS256` or `ES256` (ID token signatures).
    pub alg: String,
    /// Access and ID token lifetime.
    pub token_ttl_s: u64,
    pub rotate_refresh_tokens: bool,
}

impl Default for IdpOptions {
    fn default() -> Self {
        Self {
            client_id: "shop".into(),
            client_secret: "shop-secret".into(),
            redirect_uris: Vec::new(),
            post_logout_uris: Vec::new(),
            auth_method: "client_secret_basic".into(),
            alg: "RS256".into(),
            token_ttl_s: 300,
            rotate_refresh_tokens: true,
        }
    }
}

pub struct Idp {
    pub port: u16,
    pub issuer: String,
    pub options: IdpOptions,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Idp({})", self.issuer)
    }
}

/// A free loopback port (bound and released; the caller binds it next).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Idp {
    /// An IdP that will listen on `port` (not started yet).
    pub fn new(port: u16, options: IdpOptions) -> Self {
        Self {
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            options,
            child: None,
            lines: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts (or restarts, with fresh signing keys) the provider and waits until it listens.
    pub async fn start(&mut self) -> Result<()> {
        self.stop();
        let dir = paths::root().join("tests/idp");
        install::ensure_npm(&dir)?;
        let o = &self.options;
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("IDP_PORT", self.port.to_string())
            .env("IDP_CLIENT_ID", &o.client_id)
            .env("IDP_CLIENT_SECRET", &o.client_secret)
            .env("IDP_REDIRECT_URIS", o.redirect_uris.join(","))
            .env("IDP_POST_LOGOUT_URIS", o.post_logout_uris.join(","))
            .env("IDP_AUTH_METHOD", &o.auth_method)
            .env("IDP_ALG", &o.alg)
            .env("IDP_TOKEN_TTL", o.token_ttl_s.to_string())
            .env(
                "IDP_ROTATE_REFRESH",
                if o.rotate_refresh_tokens { "1" } else { "0" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node tests/idp/server.mjs")?;
        let stdout = child.stdout.take().context("idp stdout")?;
        let lines = Arc::clone(&self.lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .lines
                .lock()
                .map(|l| l.iter().any(|x| x.starts_with("ready ")))
                .unwrap_or(false)
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("the IdP exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("the IdP did not start within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(mut l) = self.lines.lock() {
            l.retain(|x| !x.starts_with("ready "));
        }
    }

    /// How many token-endpoint grants of this type succeeded (`authorization_code`,
    /// `refresh_token`).
    pub fn grants(&self, grant_type: &str) -> usize {
        let want = format!("token {grant_type}");
        self.lines
            .lock()
            .map(|l| l.iter().filter(|x| **x == want).count())
            .unwrap_or(0)
    }

    /// Everything the IdP printed.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

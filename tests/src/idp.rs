//! A real OpenID Provider on loopback: `oidc-provider` from npm (tests/idp/server.mjs), with its
//! development login form. Nothing about it is mocked; tests that need a misbehaving IdP put a
//! real proxy with a fault filter in front of it.

use crate::proc::Proc;
use crate::{install, paths};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
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
    /// Where the provider's stderr goes (default: a file in a temporary directory).
    pub log: Option<PathBuf>,
    /// The issuer as browsers and the filter name it (default `http://127.0.0.1:<port>`).
    pub issuer: Option<String>,
    /// Serve HTTPS only, with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Keep grants, tokens and sessions in a file, so that [`Idp::start`] again (a new signing
    /// key) keeps every session and refresh token: a key rotation in mid-session.
    pub durable: bool,
    /// The scopes' claims in the ID token too (many IdPs do that); by default only the UserInfo
    /// endpoint has them, as OIDC Core §5.4 says when an access token is issued.
    pub lenient_claims: bool,
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
            log: None,
            issuer: None,
            tls: None,
            durable: false,
            lenient_claims: false,
        }
    }
}

pub struct Idp {
    pub port: u16,
    pub issuer: String,
    pub options: IdpOptions,
    child: Option<Proc>,
    lines: Arc<Mutex<Vec<String>>>,
    /// Holds the default log file's directory.
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Idp({})", self.issuer)
    }
}

/// A free loopback port (bound and released; the caller binds it next).
///
/// Ports come from 20000–32767, below Linux's ephemeral range (32768–60999), so no outgoing
/// connection of this or another process can take one between this call and the bind; and a
/// process never gets the same port twice (several meshes of one test run pick ports before any
/// binds them). The walk starts at an offset drawn from the pid and the clock, so parallel test
/// processes rarely probe the same ports.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20000;
    const SPAN: u32 = 12768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::SeqCst) == u32::MAX {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seed = (std::process::id().wrapping_mul(2654435761) ^ nanos) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::SeqCst, Ordering::SeqCst);
    }
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(LOW + n % SPAN).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {LOW}..{}", LOW + SPAN)
}

impl Idp {
    /// An IdP that will listen on `port` (not started yet).
    pub fn new(port: u16, options: IdpOptions) -> Self {
        Self {
            port,
            issuer: options
                .issuer
                .clone()
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}")),
            options,
            child: None,
            lines: Arc::new(Mutex::new(Vec::new())),
            _dir: None,
        }
    }

    /// The provider's log (its stderr).
    pub fn log_path(&mut self) -> Result<PathBuf> {
        if let Some(p) = &self.options.log {
            return Ok(p.clone());
        }
        if self._dir.is_none() {
            self._dir = Some(
                tempfile::Builder::new()
                    .prefix("meshwright-idp-")
                    .tempdir()?,
            );
        }
        Ok(self
            ._dir
            .as_ref()
            .map(|d| d.path().join("idp.log"))
            .unwrap_or_default())
    }

    /// Starts (or restarts, with fresh signing keys) the provider and waits until it listens.
    pub async fn start(&mut self) -> Result<()> {
        self.stop();
        let dir = paths::root().join("tests/idp");
        install::ensure_npm(&dir)?;
        let log = self.log_path()?;
        let o = &self.options;
        let mut cmd = Command::new("node");
        cmd.arg("server.mjs")
            .current_dir(&dir)
            .env("IDP_PORT", self.port.to_string())
            .env("IDP_ISSUER", &self.issuer)
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
            );
        if o.lenient_claims {
            cmd.env("IDP_LENIENT_CLAIMS", "1");
        }
        if o.durable {
            let state = log.with_file_name("idp-state.json");
            cmd.env("IDP_STATE_FILE", state);
        }
        if let Some((cert, key)) = &o.tls {
            cmd.env("IDP_TLS_CERT", cert).env("IDP_TLS_KEY", key);
        }
        let mut child = Proc::spawn_piped("the IdP (node tests/idp/server.mjs)", cmd, &log)?;
        let stdout = child.take_stdout().context("idp stdout")?;
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
                && !c.is_running()
            {
                bail!("{}", c.exit_report(20));
            }
            if Instant::now() > deadline {
                let tail = self.child.as_ref().map(|c| c.tail(20)).unwrap_or_default();
                bail!("the IdP did not start within 30 s; last lines of its log:\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop(Duration::from_secs(2));
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

//! Starting and stopping a service: database, routes, background workers, the listener and
//! graceful shutdown. [`serve`] is what the binary runs; [`Server`] starts a service in-process
//! on an ephemeral port for tests.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::Connection;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::config::{Config, Service};
use crate::db::Db;
use crate::http::{self, MAX_BODY_BYTES, Observe, X_SHOP_INSTANCE};
use crate::log::Logger;
use crate::metrics::{Metrics, Sample};
use crate::outbox::Worker;
use crate::{invoice, notification, outbox, product, store};

/// What every service's handlers share.
#[derive(Clone, Debug)]
pub struct Common {
    pub service: Service,
    pub config: Arc<Config>,
    pub db: Db,
    pub logger: Logger,
    pub metrics: Arc<Metrics>,
    pub client: Client,
}

/// Reads a service's gauges from its database at scrape time.
pub type Gauges = fn(&Connection) -> rusqlite::Result<Vec<Sample>>;

/// A service's part: its routes (with a fallback), background workers, gauges, and headers for
/// every response.
pub struct App {
    pub router: Router,
    pub workers: Vec<Worker>,
    pub gauges: Gauges,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The database file of a service.
pub fn db_file(service: Service, config: &Config) -> String {
    match service {
        Service::Product => format!("product-{}.db", config.variant.as_str()),
        other => format!("{}.db", other.name()),
    }
}

/// A service ready to run: database open, routes built, socket bound.
pub struct Prepared {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    workers: Vec<Worker>,
    logger: Logger,
    config: Arc<Config>,
    db_path: String,
}

impl Prepared {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, gives in-flight requests
    /// the grace period, stops the workers.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Prepared {
            listener,
            addr,
            router,
            workers,
            logger,
            config,
            db_path,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let handles: Vec<JoinHandle<()>> = workers
            .into_iter()
            .map(|w| w.spawn(stop_rx.clone()))
            .collect();
        logger.info(
            "listening",
            &[
                ("addr", json!(addr.to_string())),
                ("db", json!(db_path)),
                ("version", json!(env!("CARGO_PKG_VERSION"))),
            ],
        );

        let mut graceful = stop_rx.clone();
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = graceful.wait_for(|s| *s).await;
            })
            .into_future();
        tokio::pin!(server);
        tokio::pin!(shutdown);
        // `None`: the shutdown signal came first.
        let early = tokio::select! {
            served = &mut server => Some(served),
            () = &mut shutdown => None,
        };
        let _ = stop_tx.send(true);
        let result = match early {
            Some(served) => served.context("the HTTP server stopped"),
            None => {
                logger.info(
                    "shutting down",
                    &[("grace_ms", json!(config.shutdown_grace.as_millis() as u64))],
                );
                match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                    Ok(served) => served.context("the HTTP server failed while draining"),
                    Err(_) => {
                        logger.warn("grace period over; closing the remaining connections", &[]);
                        Ok(())
                    }
                }
            }
        };
        for handle in handles {
            if tokio::time::timeout(config.shutdown_grace, handle)
                .await
                .is_err()
            {
                logger.warn("a background worker did not stop in time", &[]);
            }
        }
        match &result {
            Ok(()) => logger.info("stopped", &[]),
            Err(e) => logger.error("stopped", &[("error", json!(format!("{e:#}")))]),
        }
        result
    }
}

/// Opens the database, builds the routes and binds the socket.
pub async fn prepare(service: Service, config: Config) -> anyhow::Result<Prepared> {
    let config = Arc::new(config);
    let logger = Logger::new(service.name(), &config.instance, config.log.clone());
    let dir = config.data_dir.clone();
    let file = db_file(service, &config);
    let path = dir.join(&file);
    let db_path = path.display().to_string();
    let variant = config.variant;
    let db = tokio::task::spawn_blocking(move || -> anyhow::Result<Db> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("SHOP_DATA_DIR: cannot create {}", dir.display()))?;
        let db = Db::open(&path, schema(service))?;
        if service == Service::Product {
            db.blocking(|conn| product::seed(conn, variant))?;
        }
        Ok(db)
    })
    .await
    .context("database set-up task failed")??;

    let common = Common {
        service,
        config: Arc::clone(&config),
        db,
        logger: logger.clone(),
        metrics: Arc::new(Metrics::new(service.name())),
        client: Client::new(config.mesh_outbound.as_deref()),
    };
    let app = match service {
        Service::Store => store::app(&common),
        Service::Product => product::app(&common),
        Service::Invoice => invoice::app(&common),
        Service::Notification => notification::app(&common),
    };
    let mut headers = vec![(
        X_SHOP_INSTANCE,
        HeaderValue::from_str(&config.instance).context("SHOP_INSTANCE: not a header value")?,
    )];
    headers.extend(app.headers);
    let observe = Observe {
        logger: logger.clone(),
        metrics: Arc::clone(&common.metrics),
        headers: Arc::new(headers),
    };
    let router = management(common.clone(), app.gauges)
        .merge(app.router)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(observe, http::observe));

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("SHOP_LISTEN: cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    Ok(Prepared {
        listener,
        addr,
        router,
        workers: app.workers,
        logger,
        config,
        db_path,
    })
}

fn schema(service: Service) -> &'static [&'static str] {
    match service {
        Service::Store => &[store::SCHEMA, outbox::SCHEMA],
        Service::Product => &[product::SCHEMA],
        Service::Invoice => &[invoice::SCHEMA, outbox::SCHEMA],
        Service::Notification => &[notification::SCHEMA],
    }
}

/// Runs a service until `shutdown` completes (the binary passes SIGTERM/SIGINT).
pub async fn serve(
    service: Service,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    prepare(service, config).await?.run(shutdown).await
}

/// A service running in-process (tests, tools). Dropping it asks it to stop;
/// [`Server::shutdown`] also waits until it has.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Starts `service`; returns once it is listening.
    pub async fn start(service: Service, config: Config) -> anyhow::Result<Server> {
        let prepared = prepare(service, config).await?;
        let addr = prepared.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(prepared.run(async move {
            let _ = stopped.await;
        }));
        Ok(Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service and waits for the drain to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.context("the server task failed")?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone)]
struct Management {
    common: Common,
    gauges: Gauges,
}

fn management(common: Common, gauges: Gauges) -> Router {
    Router::new()
        .route("/management/health/liveness", get(liveness))
        .route("/management/health/readiness", get(readiness))
        .route("/management/prometheus", get(prometheus))
        .with_state(Management { common, gauges })
}

async fn liveness() -> Response {
    axum::Json(json!({"status": "UP"})).into_response()
}

async fn readiness(State(m): State<Management>) -> Response {
    if m.common.db.ping().await {
        axum::Json(json!({"status": "UP", "components": {"db": {"status": "UP"}}})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "DOWN", "components": {"db": {"status": "DOWN"}}})),
        )
            .into_response()
    }
}

async fn prometheus(State(m): State<Management>) -> Response {
    let gauges = m.gauges;
    let read: anyhow::Result<Vec<Sample>> = m.common.db.call(move |conn| Ok(gauges(conn)?)).await;
    let mut extra = vec![
        Sample::gauge("shop_info", "The service instance (value 1).", 1.0)
            .label("instance", m.common.config.instance.clone())
            .label("version", env!("CARGO_PKG_VERSION")),
    ];
    match read {
        Ok(samples) => {
            extra.push(Sample::gauge(
                "shop_db_up",
                "1 when the database answered the scrape.",
                1.0,
            ));
            extra.extend(samples);
        }
        Err(e) => {
            m.common.logger.warn(
                "metrics: database read failed",
                &[("error", json!(format!("{e:#}")))],
            );
            extra.push(Sample::gauge(
                "shop_db_up",
                "1 when the database answered the scrape.",
                0.0,
            ));
        }
    }
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        m.common.metrics.render(&extra),
    )
        .into_response()
}

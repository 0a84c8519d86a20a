//! meshwright-shop: the ecommerce services the mesh serves, after the JHipster "store"
//! microservices: **store** (storefront pages, account, customers, orders), **product**
//! (catalogue, v1 and v2), **invoice** (invoices and shipments) and **notification**.
//!
//! The services trust the mesh: the sidecar verifies the user's JWT and passes the claims as
//! `x-jwt-*` headers, mTLS and authorization policies decide which service may call which. The
//! services never see cookies or secrets. Each keeps its data in one SQLite file; cross-service
//! writes go through a transactional outbox, so an order is never half made.
//!
//! [`serve`] runs one service until a shutdown signal; [`Server`] starts one in-process (tests).

pub mod client;
pub mod config;
pub mod db;
pub mod html;
pub mod http;
pub mod invoice;
pub mod log;
pub mod metrics;
pub mod notification;
pub mod outbox;
pub mod product;
pub mod rand;
pub mod server;
pub mod store;
pub mod text;
pub mod time;

pub use config::{Config, ConfigError, Service, Variant};
pub use log::{LogBuffer, LogSink};
pub use server::{Server, serve};

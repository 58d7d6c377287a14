//! tollgate: a reverse proxy for LLM APIs with two-key forwarding. A caller's service key is checked
//! against tollgate's own key store; its provider key is rewritten into the provider's auth form, the
//! request is forwarded to the configured origin, and the response streams back as it arrives.
//!
//! [`run`] serves on a listener the caller bound, so tests embed the real server on port 0.

pub mod access_log;
pub mod admission;
pub mod body;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod error;
pub mod headers;
pub mod key_sync;
pub mod keys;
pub mod limits;
pub mod pipeline;
pub mod providers;
pub mod routes;
pub mod server;
pub mod sse;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod usage;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::keys::{KeyHasher, KeyTable};
use crate::pipeline::App;
use crate::store::{SqliteStore, StoreError};

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Store(StoreError),
    Tls(String),
    Upstream(rustls::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
            StartError::Upstream(e) => write!(f, "upstream TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Opens the store, loads the keys, and serves on `listener` until `shutdown` resolves; then drains
/// in-flight requests within `server.shutdown_grace`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let tls = config
        .server
        .tls
        .as_ref()
        .map(tls::acceptor)
        .transpose()
        .map_err(StartError::Tls)?;
    let upstream = upstream::Upstream::new(&config.upstream).map_err(StartError::Upstream)?;

    let path = config.store.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .map_err(|e| StartError::Store(StoreError::Corrupt(format!("store task failed: {e}"))))?
        .map_err(StartError::Store)?;
    let keys = Arc::new(KeyTable::new(
        config.keys.prefix.clone(),
        KeyHasher::new(config.keys.hash_secret),
    ));
    let readiness = Arc::new(key_sync::Readiness::new(config.store.refresh_interval));
    let version = key_sync::load_all(&store, &keys, &readiness)
        .await
        .map_err(StartError::Store)?;
    tracing::info!(keys = keys.len(), store = %config.store.path.display(), "key store loaded");
    let refresher = tokio::spawn(key_sync::poll(
        store,
        Arc::clone(&keys),
        Arc::clone(&readiness),
        version,
        config.store.refresh_interval,
    ));

    let app = Arc::new(App {
        routes: routes::Routes::new(&config.providers),
        in_flight: admission::InFlight::new(config.server.max_in_flight),
        request_ids: access_log::RequestIds::new(),
        keys,
        upstream,
        readiness,
        config,
    });
    server::serve(app, listener, tls, shutdown).await;
    refresher.abort();
    Ok(())
}

//! tollgate: a reverse proxy for LLM APIs with two-key forwarding. A caller's service key is checked
//! against tollgate's own key store; its provider key is rewritten into the provider's auth form, the
//! request is forwarded to the configured origin, and the response streams back as it arrives.
//!
//! [`run`] serves on a listener the caller bound, so tests embed the real server on port 0.

pub mod access;
pub mod access_log;
pub mod admin;
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
pub mod log_writer;
pub mod metering;
pub mod metrics;
pub mod passwords;
pub mod pipeline;
pub mod providers;
pub mod request_body;
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
    /// The metrics listener could not be bound.
    MetricsListen(std::io::Error),
    Tls(String),
    Upstream(rustls::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::MetricsListen(e) => write!(f, "metrics.listen: {e}"),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
            StartError::Upstream(e) => write!(f, "upstream TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Opens the store, loads the keys, and serves on `listener` until `shutdown` resolves; then drains
/// in-flight requests within `server.shutdown_grace`.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let connection_limits = connection_limits(&config.server);
    let tls = config.server.tls.as_ref().map(tls::acceptor).transpose().map_err(StartError::Tls)?;
    let upstream = upstream::Upstream::new(&config.upstream, &config.providers).map_err(StartError::Upstream)?;

    let path = config.store.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .map_err(|e| StartError::Store(StoreError::Corrupt(format!("store task failed: {e}"))))?
        .map_err(StartError::Store)?;
    let keys = Arc::new(KeyTable::new(config.keys.prefix.clone(), KeyHasher::new(config.keys.hash_secret)));
    let tables = key_sync::Tables {
        keys: Arc::clone(&keys),
        plans: Arc::new(limits::Plans::new(config.plans.clone())),
        readiness: Arc::new(key_sync::Readiness::new(config.store.refresh_interval)),
    };
    let version = key_sync::load_all(&store, &tables).await.map_err(StartError::Store)?;
    tracing::info!(keys = keys.len(), store = %config.store.path.display(), "key store loaded");

    // Reservations live at most as long as a request may; a sweep ends any left behind.
    let lease = config.upstream.total_timeout + std::time::Duration::from_secs(60);
    let limiter = limits::Limiter::new(config.limits.clone(), lease);
    let started = std::time::Instant::now();
    carry_usage(&store, &limiter).await.map_err(StartError::Store)?;

    let app = Arc::new(App {
        routes: routes::Routes::new(&config.providers),
        in_flight: admission::InFlight::new(config.server.max_in_flight),
        request_ids: access_log::RequestIds::new(),
        keys,
        upstream,
        readiness: Arc::clone(&tables.readiness),
        plans: Arc::clone(&tables.plans),
        limiter,
        usage: Arc::new(usage::book::UsageBook::default()),
        started,
        store: store.clone(),
        credentials: admin::tokens::Credentials::new(
            config.management.session_secret.as_deref(),
            config.management.admin_token.as_deref(),
            config.management.access_token_ttl,
        ),
        logins: admin::throttle::LoginGuard::new(passwords::PasswordPool::for_this_machine()),
        last_used: dashmap::DashMap::new(),
        metrics: Arc::new(metrics::Metrics::new(config.providers.iter().map(|p| p.name.clone()).collect())),
        config,
    });
    let metrics_listener = match app.config.metrics.listen.filter(|_| app.config.metrics.enabled) {
        None => None,
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(StartError::MetricsListen)?;
            let addr = listener.local_addr().map_err(StartError::MetricsListen)?;
            tracing::info!(%addr, "metrics served at http://{addr}/metrics");
            Some(tokio::spawn(server::serve_metrics(listener, Arc::clone(&app.metrics))))
        }
    };
    let refresher = tokio::spawn(key_sync::poll(store.clone(), tables, version, app.config.store.refresh_interval));
    let (stop_housekeeping, stopped) = tokio::sync::watch::channel(false);
    let housekeeper = tokio::spawn(housekeeping(Arc::clone(&app), store.clone(), stopped));

    server::serve(Arc::clone(&app), listener, tls, connection_limits, shutdown).await;
    refresher.abort();
    // Stopped between rounds, never aborted: an abort could cut a flush after it took the pending
    // usage from the book and before the store had it.
    let _ = stop_housekeeping.send(true);
    if let Err(e) = housekeeper.await {
        tracing::error!(error = %e, "housekeeping task failed");
    }
    if let Some(task) = metrics_listener {
        task.abort();
    }
    match usage::book::flush(&app.usage, &store).await {
        Ok(rows) => tracing::info!(rows, "usage flushed"),
        Err(e) => {
            tracing::error!(error = %e, "final usage flush failed; up to one flush interval of usage is lost")
        }
    }
    Ok(())
}

/// Raises the open-file limit, then settles the connection caps under it; warns when a total set in the
/// file is more than the limit allows.
fn connection_limits(server: &config::ServerConfig) -> config::ConnectionLimits {
    let open_files = server::raise_open_file_limit();
    let limits = server.connection_limits(open_files);
    let allowed = config::connections_allowed_by(open_files);
    if server.max_connections.is_some() && limits.total > allowed {
        tracing::warn!(
            max_connections = limits.total,
            open_files,
            allowed,
            "server.max_connections is more than the open-file limit allows (two files a connection, {} kept aside): \
             past it, new connections fail to be accepted instead of getting a 503",
            config::OPEN_FILES_RESERVE,
        );
    }
    tracing::info!(
        max_connections = limits.total,
        max_connections_per_ip = limits.per_ip,
        derived = server.max_connections.is_none(),
        "connection caps"
    );
    limits
}

/// Seeds today's request counts and this month's token totals from the store, so a restart keeps them.
async fn carry_usage(store: &SqliteStore, limiter: &limits::Limiter) -> Result<(), StoreError> {
    let unix = clock::unix_now();
    let reader = store.clone();
    let totals =
        tokio::task::spawn_blocking(move || reader.usage_totals(clock::day_of(unix), clock::month_first_day(unix)))
            .await
            .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))??;
    let now = limits::Now { mono_ns: 0, unix };
    for (key, account, carried) in totals {
        limiter.carry(key, Arc::from(account.as_str()), carried, now);
    }
    Ok(())
}

/// Writes when keys were last used (taken from the map as it is read, so no update is lost).
async fn flush_last_used(app: &App, store: &SqliteStore) -> Result<(), StoreError> {
    let mut used = Vec::new();
    app.last_used.retain(|id, at| {
        used.push((*id, *at));
        false
    });
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.touch_keys(&used))
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
}

/// Every `store.flush_interval`: writes pending usage, ends reservations whose lease ran out and forgets
/// the limits counters and model labels of keys that left the key table.
async fn housekeeping(app: Arc<App>, store: SqliteStore, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(app.config.store.flush_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = usage::book::flush(&app.usage, &store).await {
            tracing::warn!(error = %e, "usage flush failed; retrying at the next interval");
        }
        if let Err(e) = flush_last_used(&app, &store).await {
            tracing::warn!(error = %e, "last-used flush failed");
        }
        let expired = app.limiter.expire(app.now());
        if expired > 0 {
            tracing::warn!(expired, "token reservations ended by their lease");
        }
        app.limiter.forget_keys(|id| app.keys.contains(id));
        app.usage.forget_keys(|id| app.keys.contains(id));
    }
}

//! tollgate: a reverse proxy for LLM APIs with two-key forwarding. A caller's service key is checked
//! against tollgate's own key store; its provider key is rewritten into the provider's auth form, the
//! request is forwarded to the configured origin, and the response streams back as it arrives.
//!
//! [`run`] serves on a listener the caller bound, so tests embed the real server on port 0.

// The OpenAPI document is one `serde_json::json!` literal per part, deeper than the default limit.
#![recursion_limit = "256"]

pub mod admin;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod metering;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;

pub use app::StartError;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;

/// Opens the store, loads the keys, and serves on `listener` until `shutdown` resolves; then drains
/// in-flight requests within `server.shutdown_grace` and writes the usage still pending.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let limits = server::connection_limits(&config.server);
    let tls = config.server.tls.as_ref().map(server::tls::acceptor).transpose().map_err(StartError::Tls)?;
    let app::Started { app, background } = app::start(config).await?;
    let metrics_listener = match app.config.metrics.listen.filter(|_| app.config.metrics.enabled) {
        None => None,
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(StartError::MetricsListen)?;
            let addr = listener.local_addr().map_err(StartError::MetricsListen)?;
            tracing::info!(%addr, "metrics served at http://{addr}/metrics");
            Some(tokio::spawn(server::serve_metrics(listener, Arc::clone(&app.metrics))))
        }
    };
    // The main listener and the dashboard's share the connection caps and stop on one signal, so their
    // drains share one grace period.
    let caps = server::ConnectionCaps::new(limits.total, limits.per_ip);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };
    let dashboard_listener = match app.config.dashboard.listen.filter(|_| app.config.dashboard.enabled) {
        None => None,
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(StartError::DashboardListen)?;
            let addr = listener.local_addr().map_err(StartError::DashboardListen)?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(%addr, "dashboard served at {scheme}://{addr}/dashboard/");
            let (app, tls, caps, role) =
                (Arc::clone(&app), tls.clone(), Arc::clone(&caps), server::router::Role::Dashboard);
            Some(tokio::spawn(server::serve(app, listener, tls, caps, role, stopped())))
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    let main = server::serve(Arc::clone(&app), listener, tls, caps, server::router::Role::Main, stopped());
    tokio::join!(main, signal);
    if let Some(task) = dashboard_listener {
        let _ = task.await;
    }
    if let Some(task) = metrics_listener {
        task.abort();
    }
    background.stop(&app).await;
    Ok(())
}

//! The accept loop: HTTP/1.1 and HTTP/2 (h2c by preface, or ALPN over rustls), `TCP_NODELAY` on every
//! socket, caps on connections in total and per client address, deadlines on a connection's first
//! request head and on idleness, head-size limits, and a graceful drain on shutdown that lets in-flight
//! streams finish within the grace period.

mod caps;
mod connection;
mod open_files;
pub mod router;
pub mod tls;
mod unread;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::auth::ClientAddr;
use crate::config::{self, ServerConfig};
pub use caps::ConnectionCaps;
use caps::ThrottledLog;
use connection::{Activity, Deadlines, Tracked};
pub use open_files::raise_open_file_limit;

/// Room hyper keeps for a request head above tollgate's own cap, so an over-cap head still reaches the
/// pipeline and gets a provider-shaped 431; only heads far beyond it are refused bare by hyper.
const HEAD_BUFFER_SLACK: usize = 64 * 1024;
/// HTTP/2 streams a client may open and cancel before they are served (the rapid-reset attack), and
/// streams tollgate may reset for a client's protocol errors, before the connection is ended.
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 64;

/// Serves `listener` until `shutdown` resolves, then drains. `caps` counts connections across every listener
/// that shares it, so a second listener (the dashboard's) adds no room beyond the process's caps.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    caps: Arc<ConnectionCaps>,
    role: router::Role,
    shutdown: impl Future<Output = ()>,
) {
    let server = &app.config.server;
    let builder = http_builder(server);
    let handshake_timeout = server.header_read_timeout;
    let deadlines = Deadlines { first_request: server.header_read_timeout, idle: server.idle_timeout };
    let grace = server.shutdown_grace;
    let accept_errors = ThrottledLog::default();

    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &accept_errors) => accepted,
            () = &mut shutdown => break,
        };
        let Some((stream, peer)) = accepted else { continue };
        let permit = match caps.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(why) => {
                caps.refuse(stream, peer, why, tls.is_none());
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let activity = Activity::new();
        let service = {
            let (app, activity) = (Arc::clone(&app), Arc::clone(&activity));
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let guard = activity.begin();
                let app = Arc::clone(&app);
                async move {
                    let (parts, mut body) = req.into_parts();
                    let version = parts.version;
                    let mut req = http::Request::from_parts(parts, &mut body);
                    req.extensions_mut().insert(ClientAddr(peer));
                    let response = router::handle(app, req, role).await;
                    let response = unread::settle(&mut body, version, response).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, guard)))
                }
            })
        };
        let stopping = stopping.clone();
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(connection::drive(conn, activity, deadlines, stopping, peer, permit));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    connection::drive(conn, activity, deadlines, stopping, peer, permit).await;
                });
            }
        }
    }
    drop(listener);
    drain(&caps, stop, grace).await;
}

/// The next connection. Out of file descriptors and the like: keep serving what is open, try again shortly.
async fn accept(
    listener: &TcpListener,
    errors: &ThrottledLog,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(conn) => Some(conn),
        Err(e) => {
            errors.note(|errors| tracing::warn!(error = %e, errors_in_last_second = errors, "accept failed"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// HTTP/1.1 and HTTP/2 with the head, stream and keep-alive bounds of `[server]`.
fn http_builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let head_buffer = (server.max_header_bytes + HEAD_BUFFER_SLACK).max(8192);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header read timer also runs while a keep-alive connection waits for its next request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(head_buffer)
        .keep_alive(true);
    // The header list bound also caps a CONTINUATION sequence, which h2 refuses once it passes it.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head_buffer).unwrap_or(u32::MAX))
        .max_concurrent_streams(server.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Tells every connection to finish, then waits for them up to the grace period.
async fn drain(caps: &ConnectionCaps, stop: watch::Sender<bool>, grace: Duration) {
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new connections, draining in-flight requests");
    let _ = stop.send(true);
    tokio::select! {
        () = caps.drained() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing the remaining connections"),
    }
}

/// The metrics listener (`metrics.listen`): plain HTTP/1.1, `GET /metrics` and nothing else, until the
/// task is dropped.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<crate::telemetry::metrics::Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (status, text) = if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
                (http::StatusCode::OK, metrics.render())
            } else {
                (http::StatusCode::NOT_FOUND, "not found\n".to_owned())
            };
            let mut response = http::Response::new(crate::proxy::body::ProxyBody::full(text));
            *response.status_mut() = status;
            let content_type = http::HeaderValue::from_static("text/plain; version=0.0.4");
            response.headers_mut().insert(http::header::CONTENT_TYPE, content_type);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Raises the open-file limit, then settles the connection caps under it; warns when a total set in the
/// file is more than the limit allows.
pub fn connection_limits(server: &config::ServerConfig) -> config::ConnectionLimits {
    let open_files = raise_open_file_limit();
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

//! The accept loop: HTTP/1.1 and HTTP/2 (h2c by preface, or ALPN over rustls), `TCP_NODELAY` on every
//! socket, a header-read timeout and head-size limits, and a graceful drain on shutdown that lets
//! in-flight streams finish within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pipeline::{self, App};

/// Room hyper keeps for a request head above tollgate's own cap, so an over-cap head still reaches the
/// pipeline and gets a provider-shaped 431; only heads far beyond it are refused bare by hyper.
const HEAD_BUFFER_SLACK: usize = 64 * 1024;

/// The socket peer of the connection a request arrived on, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

pub async fn serve(app: Arc<App>, listener: TcpListener, tls: Option<TlsAcceptor>, shutdown: impl Future<Output = ()>) {
    let server = &app.config.server;
    let head_buffer = (server.max_header_bytes + HEAD_BUFFER_SLACK).max(8192);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(head_buffer)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(head_buffer as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let handshake_timeout = server.header_read_timeout;
    let grace = server.shutdown_grace;

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving what is open, try again shortly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let app = Arc::clone(&app);
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            let app = Arc::clone(&app);
            async move { Ok::<_, Infallible>(pipeline::handle(app, req).await) }
        });
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new connections, draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing the remaining connections"),
    }
}

/// The metrics listener (`metrics.listen`): plain HTTP/1.1, `GET /metrics` and nothing else, until the
/// task is dropped.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<crate::metrics::Metrics>) {
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
            let mut response = http::Response::new(crate::body::ProxyBody::full(text));
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

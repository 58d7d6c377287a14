//! The pooled upstream client: hyper-util's legacy client over rustls (HTTP/1.1 and HTTP/2 by ALPN),
//! `TCP_NODELAY`, a connect timeout, a pool with a timer and a per-host idle cap, and no redirects ever
//! (a 3xx becomes 502: following one would carry the provider key to another origin). Errors are
//! classified without their URL, which may hold a `?key=`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::config::UpstreamConfig;
use crate::error::ProxyError;

pub type UpstreamRequest = Request<Full<Bytes>>;

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Upstream, rustls::Error> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.enforce_http(false);

        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);

        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(https);
        Ok(Upstream { client, response_timeout: cfg.response_timeout })
    }

    /// Sends `req` and waits for the response head, until the response timeout or `deadline`.
    pub async fn send(&self, req: UpstreamRequest, deadline: Instant) -> Result<Response<Incoming>, ProxyError> {
        let head_deadline = deadline.min(Instant::now() + self.response_timeout);
        let response = match tokio::time::timeout_at(head_deadline, self.client.request(req)).await {
            Err(_elapsed) => return Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(response)) => response,
        };
        if response.status().is_redirection() {
            return Err(ProxyError::UpstreamRedirect);
        }
        Ok(response)
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let error = if e.is_connect() {
        if caused_by_timeout(e) { ProxyError::UpstreamTimeout } else { ProxyError::UpstreamUnreachable }
    } else {
        ProxyError::UpstreamFailed
    };
    // The chain names causes (refused, reset, certificate) and never the request URL.
    tracing::debug!(cause = %error_chain(e), "upstream request failed");
    error
}

fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = err.source();
    }
    false
}

/// `outer: inner: root` for a log field.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

//! The upstream client. `http://` origins (self-hosted models, sidecars, mocks) go over tollgate's own HTTP/1.1
//! connections, driven inside the request's task: the response body's chunks are decoded and handed over
//! without a task switch per chunk, so a stream whose events arrive together leaves in one write. `https://`
//! origins go through hyper-util's pooled client over rustls: HTTP/2 when the origin picks it by ALPN (one
//! multiplexed connection), else HTTP/1.1 with a pool of connections; `[upstream] http2 = false` offers
//! HTTP/1.1 alone. Both use `TCP_NODELAY`, a connect timeout, an idle pool with a per-host cap, and never
//! follow a redirect (a 3xx becomes 502: following one would carry the provider key to another origin).
//! Errors are classified without their URL, which may hold a `?key=`.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{ExtraRoots, ProviderConfig, UpstreamConfig};
use crate::error::ProxyError;

pub type UpstreamRequest = Request<Full<Bytes>>;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Upstream {
    /// One pooled client per distinct trust configuration (webpki roots plus a provider's `ca_file`s),
    /// built at start; the first trusts the webpki roots alone.
    clients: Vec<HttpsClient>,
    /// Index into `clients` for each provider, by provider index.
    client_of: Vec<usize>,
    plain: Arc<Http1Pool>,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, providers: &[ProviderConfig]) -> Result<Upstream, rustls::Error> {
        let mut trusts: Vec<&ExtraRoots> = Vec::new();
        let no_extra = ExtraRoots::default();
        trusts.push(&no_extra);
        let mut client_of = Vec::with_capacity(providers.len());
        for p in providers {
            let i = match trusts.iter().position(|t| t.files == p.extra_roots.files) {
                Some(i) => i,
                None => {
                    trusts.push(&p.extra_roots);
                    trusts.len() - 1
                }
            };
            client_of.push(i);
        }
        let clients = trusts.iter().map(|t| https_client(cfg, t)).collect::<Result<Vec<_>, _>>()?;
        let plain = Arc::new(Http1Pool {
            idle: Mutex::default(),
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.pool_idle_timeout,
            max_idle_per_host: cfg.pool_max_idle_per_host,
        });
        Ok(Upstream { clients, client_of, plain, response_timeout: cfg.response_timeout })
    }

    /// Sends `req` and waits for the response head, until the response timeout or `deadline`.
    /// `provider` is the provider's index in the configuration; it picks the TLS trust for `https://`.
    pub async fn send(
        &self,
        mut req: UpstreamRequest,
        provider: usize,
        deadline: Instant,
    ) -> Result<Response<UpstreamStream>, ProxyError> {
        let response_by = Instant::now() + self.response_timeout;
        let (head_deadline, timed_out) = if deadline < response_by {
            (deadline, ProxyError::UpstreamTotalTimeout)
        } else {
            (response_by, ProxyError::UpstreamHeadTimeout)
        };
        let response = if req.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            match tokio::time::timeout_at(head_deadline, Http1Pool::send(&self.plain, req)).await {
                Err(_elapsed) => return Err(timed_out),
                Ok(result) => result?,
            }
        } else {
            let client = &self.clients[self.client_of.get(provider).copied().unwrap_or(0)];
            // The client writes the origin itself: `Host` from the URI over HTTP/1.1, `:authority` alone
            // over HTTP/2, where a `Host` beside it is refused by some servers (nginx: 400).
            req.headers_mut().remove(http::header::HOST);
            match tokio::time::timeout_at(head_deadline, client.request(req)).await {
                Err(_elapsed) => return Err(timed_out),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(response)) => response.map(|body| UpstreamStream { body, conn: None }),
            }
        };
        if response.status().is_redirection() {
            return Err(ProxyError::UpstreamRedirect);
        }
        Ok(response)
    }
}

/// A pooled `https://` client trusting the webpki roots and `extra`.
fn https_client(cfg: &UpstreamConfig, extra: &ExtraRoots) -> Result<HttpsClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.enforce_http(false);

    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for cert in &extra.certs {
        roots.add(cert.clone()).map_err(|e| rustls::Error::General(format!("ca_file: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    // ALPN offers what is enabled: h2 and http/1.1, or http/1.1 alone.
    let https = if cfg.http2 {
        https.enable_all_versions().wrap_connector(http)
    } else {
        https.enable_http1().wrap_connector(http)
    };

    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
        .build(https))
}

/// An upstream response body; for an `http://` origin it also drives the connection it arrives on, and
/// gives that connection back to the pool once the body has ended.
pub struct UpstreamStream {
    body: Incoming,
    conn: Option<Http1Conn>,
}

impl Body for UpstreamStream {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = this.conn.as_mut() {
            conn.drive(cx);
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                if let Some(conn) = this.conn.take() {
                    conn.release();
                }
            }
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Idle HTTP/1.1 connections to `http://` origins, most recently used first.
struct Http1Pool {
    idle: Mutex<HashMap<Authority, VecDeque<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_host: usize,
}

struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: http1::Connection<TokioIo<TcpStream>, Full<Bytes>>,
    since: Instant,
}

/// A connection in use: the request's task polls it while waiting for the head and while reading the body.
struct Http1Conn {
    idle: Idle,
    /// The connection future finished: the socket is closed.
    closed: bool,
    pool: Arc<Http1Pool>,
    authority: Authority,
}

impl Http1Conn {
    /// Moves the connection along (reads, writes, hands the next body chunk over).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.closed && Pin::new(&mut self.idle.conn).poll(cx).is_ready() {
            self.closed = true;
        }
    }

    /// Ready for a request, or closed.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        self.drive(cx);
        if self.closed {
            return Poll::Ready(Err(()));
        }
        self.idle.sender.poll_ready(cx).map_err(|_| ())
    }

    /// Back to the pool after a complete response, unless the connection is closing.
    fn release(self) {
        if self.closed || self.idle.sender.is_closed() {
            return;
        }
        let Http1Conn { mut idle, pool, authority, .. } = self;
        idle.since = Instant::now();
        let mut all = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.entry(authority).or_default();
        while list.front().is_some_and(|c| c.since.elapsed() >= pool.idle_timeout) {
            list.pop_front();
        }
        if list.len() < pool.max_idle_per_host {
            list.push_back(idle);
        }
    }
}

impl Http1Pool {
    /// Sends `req` on an idle connection to its origin, or on a new one. A request that an idle connection
    /// turned away unsent (the origin had closed it) is tried on the next.
    async fn send(pool: &Arc<Http1Pool>, req: UpstreamRequest) -> Result<Response<UpstreamStream>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let authority = parts.uri.authority().cloned().ok_or(ProxyError::UpstreamUnreachable)?;
        let port = parts.uri.port_u16().unwrap_or(80);
        // An origin server is sent the path, not the absolute URI.
        parts.uri = Uri::from(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        let mut req = Request::from_parts(parts, body);
        loop {
            let (mut conn, reused) = match pool.take(&authority) {
                Some(idle) => {
                    (Http1Conn { idle, closed: false, pool: pool.clone(), authority: authority.clone() }, true)
                }
                None => (pool.connect(&authority, port).await?, false),
            };
            tracing::trace!(origin = %authority, reused, "upstream connection");
            // An idle connection in good order is ready at once; one that is not (closed by the origin,
            // or in a state it should not be in) is dropped rather than waited on.
            let ready = if reused {
                poll_fn(|cx| Poll::Ready(conn.poll_ready(cx))).await
            } else {
                Poll::Ready(poll_fn(|cx| conn.poll_ready(cx)).await)
            };
            match ready {
                Poll::Ready(Ok(())) => {}
                _ if reused => continue,
                _ => return Err(ProxyError::UpstreamFailed),
            }
            let mut response = std::pin::pin!(conn.idle.sender.try_send_request(req));
            let result = poll_fn(|cx| {
                conn.drive(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => return Ok(response.map(|body| UpstreamStream { body, conn: Some(conn) })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        tracing::debug!(cause = %error_chain(e.error()), "upstream request failed");
                        return Err(ProxyError::UpstreamFailed);
                    }
                },
            }
        }
    }

    /// The most recently used idle connection that has not idled too long.
    fn take(&self, authority: &Authority) -> Option<Idle> {
        let mut all = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = all.get_mut(authority)?;
        let idle = list.pop_back().filter(|c| c.since.elapsed() < self.idle_timeout);
        if idle.is_none() {
            list.clear();
        }
        idle
    }

    async fn connect(self: &Arc<Self>, authority: &Authority, port: u16) -> Result<Http1Conn, ProxyError> {
        let connect = TcpStream::connect((authority.host().trim_start_matches('[').trim_end_matches(']'), port));
        let tcp = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_elapsed) => return Err(ProxyError::UpstreamConnectTimeout),
            Ok(Err(e)) => {
                tracing::debug!(cause = %e, "upstream connect failed");
                return Err(ProxyError::UpstreamUnreachable);
            }
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|_| ProxyError::UpstreamFailed)?;
        let idle = Idle { sender, conn, since: Instant::now() };
        Ok(Http1Conn { idle, closed: false, pool: self.clone(), authority: authority.clone() })
    }
}
fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let error = if e.is_connect() {
        if caused_by_timeout(e) { ProxyError::UpstreamConnectTimeout } else { ProxyError::UpstreamUnreachable }
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

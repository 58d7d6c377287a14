//! tollgate's own HTTP/1.1 connections to `http://` origins, pooled per origin and driven inside the request's
//! task (see the module above).

use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{UpstreamRequest, UpstreamStream, error_chain};
use crate::error::ProxyError;

/// Idle HTTP/1.1 connections to `http://` origins, most recently used first.
pub(super) struct Http1Pool {
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
pub(super) struct Http1Conn {
    idle: Idle,
    /// The connection future finished: the socket is closed.
    closed: bool,
    pool: Arc<Http1Pool>,
    authority: Authority,
}

impl Http1Conn {
    /// Moves the connection along (reads, writes, hands the next body chunk over).
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) {
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
    pub(super) fn release(self) {
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
    pub(super) fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle_per_host: usize) -> Http1Pool {
        Http1Pool { idle: Mutex::default(), connect_timeout, idle_timeout, max_idle_per_host }
    }

    /// Sends `req` on an idle connection to its origin, or on a new one. A request that an idle connection
    /// turned away unsent (the origin had closed it) is tried on the next.
    pub(super) async fn send(
        pool: &Arc<Http1Pool>,
        req: UpstreamRequest,
    ) -> Result<Response<UpstreamStream>, ProxyError> {
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
                Ok(response) => return Ok(response.map(|body| UpstreamStream::new(body, Some(conn)))),
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

//! What tollgate sends back: either a body it made (errors, health) or the upstream's body streamed
//! through as it arrives. The stream keeps its own idle and total timers, passes SSE through the framer
//! so a failure ends it with exactly one clean terminal error event, drops the upstream connection the
//! moment it fails or the caller leaves, and writes the access log line when it ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::access_log::AccessLog;
use crate::admission::InFlightSlot;
use crate::error::{LogLevel, ProxyError};
use crate::providers::{Endpoint, ProviderKind};
use crate::sse::SseFramer;

pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Upstream(body) => body.upstream.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream(body) => match (&body.upstream, &body.framer) {
                (Some(upstream), None) => upstream.size_hint(),
                (Some(_), Some(_)) => SizeHint::default(),
                (None, _) => SizeHint::with_exact(0),
            },
        }
    }
}

/// Limits on an upstream body.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub idle: Duration,
    pub deadline: Instant,
}

pub struct UpstreamBody {
    /// `None` once the body ended or failed, so the connection is released at once.
    upstream: Option<Incoming>,
    /// Present for `text/event-stream` responses.
    framer: Option<SseFramer>,
    kind: ProviderKind,
    endpoint: Endpoint,
    idle: Duration,
    deadline: Instant,
    last_data: Instant,
    /// Fires at the earlier of the idle limit and the deadline; re-armed lazily, not per chunk.
    timer: Pin<Box<Sleep>>,
    status: u16,
    bytes: u64,
    log: AccessLog,
    logged: bool,
    _slot: InFlightSlot,
}

impl UpstreamBody {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: Incoming,
        framer: Option<SseFramer>,
        kind: ProviderKind,
        endpoint: Endpoint,
        limits: StreamLimits,
        status: u16,
        log: AccessLog,
        slot: InFlightSlot,
    ) -> UpstreamBody {
        let now = Instant::now();
        UpstreamBody {
            upstream: Some(upstream),
            framer,
            kind,
            endpoint,
            idle: limits.idle,
            deadline: limits.deadline,
            last_data: now,
            timer: Box::pin(tokio::time::sleep_until(
                limits.deadline.min(now + limits.idle),
            )),
            status,
            bytes: 0,
            log,
            logged: false,
            _slot: slot,
        }
    }

    fn finish(&mut self, outcome: &str, level: LogLevel) {
        self.upstream = None;
        if !self.logged {
            self.logged = true;
            self.log.emit(self.status, outcome, self.bytes, level);
        }
    }

    /// Ends the body after a failure: a stream gets one terminal error event in its route's format,
    /// anything else is cut (the caller sees a truncated body, never a wrong one).
    fn fail(&mut self, error: ProxyError) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        self.finish(error.label(), error.log_level());
        if self.framer.take().is_some() {
            let event = self.kind.stream_error_event(self.endpoint, error.parts());
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))));
        }
        Poll::Ready(Some(Err(error)))
    }

    /// Checks the timers when the upstream has nothing; `Ready` means a limit was hit.
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let idle_at = self.last_data + self.idle;
            if now >= self.deadline || now >= idle_at {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(self.deadline.min(idle_at));
        }
    }

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let this = self.get_mut();
        loop {
            let Some(upstream) = this.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not forwarded: the caller's framing is tollgate's own.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.last_data = Instant::now();
                    let Some(framer) = this.framer.as_mut() else {
                        this.bytes += data.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    };
                    match framer.push(data) {
                        Ok(Some(events)) => {
                            this.bytes += events.len() as u64;
                            return Poll::Ready(Some(Ok(Frame::data(events))));
                        }
                        Ok(None) => continue,
                        Err(_) => return this.fail(ProxyError::UpstreamEventTooLarge),
                    }
                }
                Poll::Ready(Some(Err(_))) => return this.fail(ProxyError::UpstreamFailed),
                Poll::Ready(None) => {
                    let rest = this.framer.as_mut().and_then(SseFramer::finish);
                    this.bytes += rest.as_ref().map_or(0, |r| r.len() as u64);
                    this.finish("ok", LogLevel::Info);
                    return Poll::Ready(rest.map(|r| Ok(Frame::data(r))));
                }
                Poll::Pending => {
                    ready!(this.poll_timeout(cx));
                    return this.fail(ProxyError::UpstreamTimeout);
                }
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropping `upstream` here closes the HTTP/1 connection or resets the HTTP/2 stream.
        self.finish("client_closed", LogLevel::Info);
    }
}

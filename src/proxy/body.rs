//! What tollgate sends back: either a body it made (errors, health) or the upstream's body streamed
//! through as it arrives. The stream keeps its own idle and total timers, passes SSE through the framer
//! so a failure ends it with exactly one clean terminal error event, drops the upstream connection the
//! moment it fails or the caller leaves, and writes the access log line when it ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::app::in_flight::InFlightSlot;
use crate::error::{LogLevel, ProxyError};
use crate::metering::Metering;
use crate::metering::usage::json_scan::UsageScanner;
use crate::metering::usage::tap::UsageTap;
use crate::metering::usage::{Meter, Usage};
use crate::providers::{Endpoint, ProviderKind};
use crate::proxy::sse::SseFramer;
use crate::proxy::trial_body::MemberSplice;
use crate::telemetry::access_log::AccessLog;
use crate::upstream::UpstreamStream;

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

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
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
            ProxyBody::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            ProxyBody::Upstream(body) => match (&body.upstream, &body.framer) {
                (Some(_), None) if body.splice.is_some() => SizeHint::default(),
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

/// How a response body is metered.
pub enum BodyMeter {
    /// Charged nothing: a free route, or a provider refusal (status ≥ 400).
    Nothing,
    /// Server-sent events, read by the tap.
    Events(UsageTap),
    /// A JSON body whose usage object the scanner looks for.
    Json(Meter, UsageScanner),
}

/// Everything an upstream body carries besides the upstream stream itself.
pub struct StreamParts {
    pub provider_index: usize,
    pub kind: ProviderKind,
    pub endpoint: Endpoint,
    pub limits: StreamLimits,
    pub status: u16,
    pub log: AccessLog,
    pub slot: InFlightSlot,
    /// `None` with limits off.
    pub metering: Option<Metering>,
    pub meter: BodyMeter,
}

/// The most bytes joined into one frame for the caller.
const COALESCE_BYTES: usize = 64 * 1024;

pub struct UpstreamBody {
    /// `None` once the body ended or failed, so the connection is released at once.
    upstream: Option<UpstreamStream>,
    /// Present for `text/event-stream` responses.
    framer: Option<SseFramer>,
    parts: StreamParts,
    last_data: Instant,
    /// Fires at the earlier of the idle limit and the deadline; re-armed lazily, not per chunk.
    timer: Pin<Box<Sleep>>,
    bytes: u64,
    logged: bool,
    /// No body byte has gone to the caller yet (for time to first byte).
    first_byte_pending: bool,
    /// A failure seen after data that went out first.
    deferred: Option<ProxyError>,
    /// A member added to a JSON body's top-level object (a provisioned trial key, `proxy::trial`).
    splice: Option<MemberSplice>,
}

impl UpstreamBody {
    pub fn new(upstream: UpstreamStream, framer: Option<SseFramer>, parts: StreamParts) -> UpstreamBody {
        if framer.is_some() {
            parts.log.metrics.stream_opened();
        }
        let now = Instant::now();
        let first_alarm = parts.limits.deadline.min(now + parts.limits.idle);
        UpstreamBody {
            upstream: Some(upstream),
            framer,
            parts,
            last_data: now,
            timer: Box::pin(tokio::time::sleep_until(first_alarm)),
            bytes: 0,
            logged: false,
            first_byte_pending: true,
            deferred: None,
            splice: None,
        }
    }

    /// What of `data` goes out now, with a member being added.
    fn spliced(&mut self, data: Bytes) -> Bytes {
        match self.splice.as_mut() {
            Some(splice) => splice.pass(data),
            None => data,
        }
    }

    /// What the framer or the member splice still holds at the end of the body.
    fn rest(&mut self) -> Option<Bytes> {
        match self.framer.as_mut() {
            Some(framer) => framer.finish(),
            None => self.splice.as_mut().and_then(MemberSplice::finish),
        }
    }

    /// Adds `member` (`"name":value`) to the top-level object of this body, if it is a JSON object; the
    /// body still streams through, holding back only what follows its latest `}`. Not for streams.
    pub fn add_member(&mut self, member: Bytes) {
        if self.framer.is_none() {
            self.splice = Some(MemberSplice::new(member));
        }
    }

    /// Counts `bytes` as passed to the caller, noting the time of the first.
    fn sent(&mut self, bytes: usize) {
        if std::mem::take(&mut self.first_byte_pending) {
            self.parts.log.metrics.time_to_first_byte(self.parts.provider_index, self.parts.log.started.elapsed());
        }
        self.bytes += bytes as u64;
    }

    /// Ends the body once: the upstream connection released, the request charged and logged.
    fn finish(&mut self, outcome: &str, level: LogLevel, normal_end: bool) {
        self.upstream = None;
        if !self.logged {
            self.logged = true;
            if let Some(metering) = self.parts.metering.as_mut() {
                let usage = charge(&self.parts.meter, metering, normal_end);
                metering.settle(usage);
                self.parts.log.metrics.tokens(self.parts.provider_index, usage.input, usage.output);
            }
            if self.framer.is_some() {
                self.parts.log.metrics.stream_closed();
            }
            self.parts.log.emit(self.parts.status, outcome, self.bytes, level);
        }
    }

    /// Ends the body after a failure: a stream gets one terminal error event in its route's format,
    /// anything else is cut (the caller sees a truncated body, never a wrong one).
    fn fail(&mut self, error: ProxyError) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        self.finish(error.label(), error.log_level(), false);
        if self.framer.take().is_some() {
            let event = self.parts.kind.stream_error_event(self.parts.endpoint, error.parts());
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))));
        }
        Poll::Ready(Some(Err(error)))
    }

    /// Checks the timers when the upstream has nothing; `Ready` means a limit was hit, and names which.
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<ProxyError> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            let (deadline, idle_at) = (self.parts.limits.deadline, self.last_data + self.parts.limits.idle);
            if let Some(hit) = limit_hit(now, deadline, idle_at) {
                return Poll::Ready(hit);
            }
            self.timer.as_mut().reset(deadline.min(idle_at));
        }
    }

    /// Everything the upstream has ready goes out as one frame (one write to the caller), up to
    /// `COALESCE_BYTES`; the frame leaves as soon as the upstream has nothing more, so nothing waits.
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        let this = self.get_mut();
        if let Some(error) = this.deferred.take() {
            return this.fail(error);
        }
        let mut out = Coalesced::default();
        loop {
            let Some(upstream) = this.upstream.as_mut() else {
                return Poll::Ready(out.into_frame().map(Ok));
            };
            let ended = match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not forwarded: the caller's framing is tollgate's own.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.last_data = Instant::now();
                    let Some(framer) = this.framer.as_mut() else {
                        if let BodyMeter::Json(_, scanner) = &mut this.parts.meter {
                            scanner.feed(&data);
                        }
                        let data = this.spliced(data);
                        if data.is_empty() {
                            continue;
                        }
                        this.sent(data.len());
                        out.push(data);
                        if out.len() >= COALESCE_BYTES {
                            return Poll::Ready(out.into_frame().map(Ok));
                        }
                        continue;
                    };
                    match framer.push(data) {
                        Ok(Some(events)) => {
                            let events = match &mut this.parts.meter {
                                BodyMeter::Events(tap) => tap.pass(events),
                                _ => events,
                            };
                            if !events.is_empty() {
                                this.sent(events.len());
                                out.push(events);
                                if out.len() >= COALESCE_BYTES {
                                    return Poll::Ready(out.into_frame().map(Ok));
                                }
                            }
                            continue;
                        }
                        Ok(None) => continue,
                        Err(_) => Err(ProxyError::UpstreamEventTooLarge),
                    }
                }
                Poll::Ready(Some(Err(_))) => Err(ProxyError::UpstreamFailed),
                Poll::Ready(None) => Ok(()),
                Poll::Pending if !out.is_empty() => return Poll::Ready(out.into_frame().map(Ok)),
                Poll::Pending => Err(ready!(this.poll_timeout(cx))),
            };
            return match ended {
                Ok(()) => {
                    let rest = this.rest();
                    let rest = match (&mut this.parts.meter, rest) {
                        (BodyMeter::Events(tap), Some(rest)) => Some(tap.pass(rest)).filter(|r| !r.is_empty()),
                        (_, rest) => rest,
                    };
                    if let Some(rest) = rest {
                        this.bytes += rest.len() as u64;
                        out.push(rest);
                    }
                    this.finish("ok", LogLevel::Info, true);
                    Poll::Ready(out.into_frame().map(Ok))
                }
                // What was already read goes out first; the failure follows on the next poll.
                Err(error) if !out.is_empty() => {
                    this.deferred = Some(error);
                    Poll::Ready(out.into_frame().map(Ok))
                }
                Err(error) => this.fail(error),
            };
        }
    }
}

/// The limit passed at `now`, if any; the total deadline wins a tie, since it is the one the operator set
/// for the whole request.
fn limit_hit(now: Instant, deadline: Instant, idle_at: Instant) -> Option<ProxyError> {
    if now >= deadline {
        Some(ProxyError::UpstreamTotalTimeout)
    } else if now >= idle_at {
        Some(ProxyError::UpstreamIdleTimeout)
    } else {
        None
    }
}

/// Frames joined for one write: the first is kept as it is, a second starts a copy.
#[derive(Default)]
struct Coalesced {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Coalesced {
    fn push(&mut self, data: Bytes) {
        match (&mut self.first, &mut self.joined) {
            (None, _) => self.first = Some(data),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity((first.len() + data.len()).max(4096));
                joined.extend_from_slice(first);
                joined.extend_from_slice(&data);
                self.joined = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
        }
    }

    fn len(&self) -> usize {
        match (&self.first, &self.joined) {
            (_, Some(joined)) => joined.len(),
            (Some(first), None) => first.len(),
            (None, None) => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn into_frame(self) -> Option<Frame<Bytes>> {
        match (self.first, self.joined) {
            (_, Some(joined)) => Some(Frame::data(joined.freeze())),
            (first, None) => first.map(Frame::data),
        }
    }
}

/// What a response is charged (the rules are in `metering`).
fn charge(meter: &BodyMeter, metering: &Metering, normal_end: bool) -> Usage {
    match meter {
        BodyMeter::Nothing => Usage::default(),
        BodyMeter::Json(meter, scanner) => {
            let mut seen = None;
            if let Some(value) = scanner.found() {
                meter.read_usage(value, &mut seen);
            }
            seen.unwrap_or_else(|| metering.reservation())
        }
        BodyMeter::Events(tap) => match tap.usage() {
            (Some(usage), final_figure) if final_figure || normal_end => usage,
            (seen, _) => {
                let seen = seen.unwrap_or_default();
                let input = if seen.input > 0 { seen.input } else { metering.input_estimate };
                Usage { input, output: seen.output.max(tap.events()) }
            }
        },
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropping `upstream` here closes the HTTP/1 connection or resets the HTTP/2 stream.
        self.finish("client_closed", LogLevel::Info, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(frame: Option<Frame<Bytes>>) -> Bytes {
        frame.expect("a frame").into_data().expect("a data frame")
    }

    #[test]
    fn the_limit_hit_is_named() {
        let now = Instant::now();
        let (before, after) = (now - Duration::from_secs(1), now + Duration::from_secs(1));
        assert_eq!(limit_hit(now, after, after), None);
        assert_eq!(limit_hit(now, after, before), Some(ProxyError::UpstreamIdleTimeout));
        assert_eq!(limit_hit(now, before, after), Some(ProxyError::UpstreamTotalTimeout));
        assert_eq!(limit_hit(now, now, now), Some(ProxyError::UpstreamTotalTimeout));
    }

    #[test]
    fn one_piece_goes_out_uncopied_and_several_go_out_joined() {
        assert!(Coalesced::default().into_frame().is_none());

        let piece = Bytes::from_static(b"data: {\"n\":1}\n\n");
        let mut one = Coalesced::default();
        one.push(piece.clone());
        assert_eq!(one.len(), piece.len());
        assert_eq!(data(one.into_frame()).as_ptr(), piece.as_ptr(), "a single piece is not copied");

        let mut many = Coalesced::default();
        for n in 0..3 {
            many.push(Bytes::from(format!("data: {{\"n\":{n}}}\n\n")));
        }
        assert_eq!(many.len(), 3 * piece.len());
        assert_eq!(data(many.into_frame()), "data: {\"n\":0}\n\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\n");
    }
}

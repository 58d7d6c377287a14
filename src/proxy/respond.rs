//! Phase: the caller's response. Upstream headers cleaned, the rate-limit headers set, and the body
//! streamed through with its own idle and total limits, SSE framed, metered by the route's usage reader,
//! carrying the in-flight slot, the reservation and the log line until it ends.

use http::Response;
use tokio::time::Instant;

use crate::app::App;
use crate::app::in_flight::InFlightSlot;
use crate::metering::Metering;
use crate::metering::usage::Meter;
use crate::metering::usage::json_scan::UsageScanner;
use crate::metering::usage::tap::UsageTap;
use crate::providers::routes::Route;
use crate::proxy::body::{BodyMeter, ProxyBody, StreamLimits, StreamParts, UpstreamBody};
use crate::proxy::context::RequestContext;
use crate::proxy::headers;
use crate::proxy::sse::SseFramer;
use crate::proxy::{X_REQUEST_ID, with_request_id};
use crate::upstream::UpstreamStream;

/// Where an upstream's own `x-request-id` goes, so support tickets with the provider still work.
const X_UPSTREAM_REQUEST_ID: &str = "x-upstream-request-id";

/// A request the upstream answered: the response head (its body still to come) and what the response
/// body carries until it ends.
pub struct Forwarded {
    pub response: Response<UpstreamStream>,
    /// When the whole exchange must be over.
    pub deadline: Instant,
    pub slot: InFlightSlot,
    /// Tollgate asked for the usage chunk this caller did not, so the tap removes it.
    pub injected_usage: bool,
}

/// The response to the caller; the body takes the request's reservation and log line from `ctx`.
pub fn respond(app: &App, route: &Route, forwarded: Forwarded, ctx: &mut RequestContext) -> Response<ProxyBody> {
    let (mut head, incoming) = forwarded.response.into_parts();
    let is_stream = headers::is_event_stream(&head.headers);
    let mut response_headers = headers::caller_response_headers(&head.headers, is_stream);
    if let Some(upstream_id) = response_headers.remove(X_REQUEST_ID) {
        response_headers.insert(X_UPSTREAM_REQUEST_ID, upstream_id);
    }
    if let Some(rate) = ctx.metering.as_ref().and_then(Metering::headers) {
        rate.write_to(&mut response_headers);
    }
    head.headers = response_headers;
    head.version = http::Version::default();
    let status = head.status.as_u16();
    let meter = match ctx.meter {
        _ if ctx.metering.is_none() => BodyMeter::Nothing,
        Meter::Free => BodyMeter::Nothing,
        _ if status >= 400 => BodyMeter::Nothing,
        meter if is_stream => BodyMeter::Events(UsageTap::new(meter, forwarded.injected_usage)),
        meter => BodyMeter::Json(meter, UsageScanner::new(meter.json_key())),
    };
    let parts = StreamParts {
        provider_index: route.provider_index,
        kind: route.provider.kind,
        endpoint: route.endpoint,
        limits: StreamLimits { idle: app.config.upstream.idle_timeout, deadline: forwarded.deadline },
        status,
        log: ctx.access_log(),
        slot: forwarded.slot,
        metering: ctx.metering.take(),
        meter,
    };
    let framer = is_stream.then(|| SseFramer::new(app.config.upstream.max_event_bytes));
    let body = UpstreamBody::new(incoming, framer, parts);
    let response = Response::from_parts(head, ProxyBody::Upstream(Box::new(body)));
    with_request_id(response, ctx.id)
}

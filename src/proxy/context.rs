//! One request's state as it passes the phases: where it goes, who asked, what it holds of its quotas and
//! what its response reports. Made once in `handle`, filled in by the phases in order, and read by the
//! one error exit and the response body; the access log line is built from it.

use std::sync::Arc;

use http::Method;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::error::ProxyError;
use crate::metering::Metering;
use crate::metering::limits::RateHeaders;
use crate::metering::usage::Meter;
use crate::providers::routes::Route;
use crate::providers::{Endpoint, ProviderKind};
use crate::telemetry::access_log::{AccessLog, RequestId};
use crate::telemetry::metrics::Metrics;

pub struct RequestContext {
    pub id: RequestId,
    pub method: Method,
    pub started: Instant,
    /// `None` until the path routed.
    pub route: Option<RouteFacts>,
    /// How the route is metered (`Free` until the path routed).
    pub meter: Meter,
    /// `None` until the caller authenticated.
    pub principal: Option<Principal>,
    /// The caller asked for a stream (known once the body is read).
    pub streaming: bool,
    /// The limits' state after the token reservation, reported on every response from then on.
    pub rate: Option<RateHeaders>,
    /// The reservation and usage line, with limits on, from the token reservation until the request is
    /// charged; the response body takes it when the head goes out.
    pub metering: Option<Metering>,
    /// Where the request is counted when its log line is written.
    pub metrics: Arc<Metrics>,
    /// Served under its device's trial key, or regenerating it (`proxy::trial`).
    pub trial: Option<crate::proxy::trial::TrialServed>,
}

/// What the log line and the metrics know of a request's route.
#[derive(Debug, Clone)]
pub struct RouteFacts {
    /// The provider's position in the configuration (a bounded metric label), and its name.
    pub provider_index: usize,
    pub provider: Arc<str>,
    pub kind: ProviderKind,
    pub endpoint: Endpoint,
}

impl RequestContext {
    pub fn new(id: RequestId, method: Method, metrics: Arc<Metrics>) -> RequestContext {
        RequestContext {
            id,
            method,
            started: Instant::now(),
            route: None,
            meter: Meter::Free,
            principal: None,
            streaming: false,
            rate: None,
            metering: None,
            metrics,
            trial: None,
        }
    }

    /// Records where the request goes.
    pub fn routed(&mut self, route: &Route) {
        self.meter = Meter::of(route.provider.kind, route.endpoint);
        self.route = Some(RouteFacts {
            provider_index: route.provider_index,
            provider: Arc::from(route.provider.name.as_str()),
            kind: route.provider.kind,
            endpoint: route.endpoint,
        });
    }

    /// The request's log line as far as it is known.
    pub fn access_log(&self) -> AccessLog {
        AccessLog {
            request_id: self.id,
            method: self.method.clone(),
            provider: self.route.as_ref().map(|r| (r.provider_index, Arc::clone(&r.provider))),
            endpoint: self.route.as_ref().map(|r| r.endpoint),
            metrics: Arc::clone(&self.metrics),
            key: self.principal.as_ref().map(|p| p.label.clone()),
            streaming: self.streaming,
            started: self.started,
        }
    }

    /// The rate-limit headers an error response carries: a refusal's own, else the reservation's.
    pub fn rate_headers(&self, error: &ProxyError) -> Option<RateHeaders> {
        match error {
            ProxyError::RateLimited(refusal) => Some(refusal.headers),
            _ => self.rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::limits::{LimitKind, Refusal};
    use crate::telemetry::access_log::RequestIds;

    fn headers(remaining_requests: u64) -> RateHeaders {
        RateHeaders {
            limit_requests: 10,
            remaining_requests,
            reset_requests_ns: 0,
            limit_tokens: 100,
            remaining_tokens: 100,
            reset_tokens_secs: 1,
        }
    }

    #[test]
    fn an_unrouted_request_logs_no_provider_and_no_key() {
        let ctx = RequestContext::new(RequestIds::new().next(), Method::POST, Arc::new(Metrics::new(Vec::new())));
        let log = ctx.access_log();
        assert!(log.request_id == ctx.id);
        assert_eq!((log.method, log.streaming), (Method::POST, false));
        assert!(log.provider.is_none() && log.endpoint.is_none() && log.key.is_none());
        assert_eq!((log.started, ctx.meter), (ctx.started, Meter::Free));
    }

    #[test]
    fn an_error_reports_its_refusal_else_the_reservation() {
        let mut ctx = RequestContext::new(RequestIds::new().next(), Method::POST, Arc::new(Metrics::new(Vec::new())));
        assert_eq!(ctx.rate_headers(&ProxyError::NotFound), None);
        ctx.rate = Some(headers(7));
        assert_eq!(ctx.rate_headers(&ProxyError::NotFound), Some(headers(7)));
        let refusal = Refusal { limit: LimitKind::Concurrency, retry_after_secs: 1, headers: headers(0) };
        assert_eq!(ctx.rate_headers(&ProxyError::RateLimited(refusal)), Some(headers(0)));
    }
}

//! One request, phase by phase (docs/ARCHITECTURE.md, One request): route → check head → authenticate → take the
//! provider key → admit against the key's request limits → take a process-wide slot → read and inspect the body →
//! authorize → reserve tokens → build the upstream request → forward → stream back. Each phase is a function; what a
//! request has gathered so far lives in its [`RequestContext`]; every failure leaves through [`error_response`], in the
//! route's shape.

pub mod body;
pub mod browser;
pub mod context;
pub mod credentials;
mod error_response;
pub mod headers;
pub mod output_cap;
pub mod request_body;
pub mod respond;
pub mod sse;
pub mod trial;
pub mod trial_body;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, header, request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::app::App;
use crate::app::trial::TRIAL_ACCOUNT;
use crate::auth::{self, Principal};
use crate::clock;
use crate::config::{Config, OnStale};
use crate::error::ProxyError;
use crate::metering::limits::{self, CounterBackend, Subject};
use crate::metering::usage::{Meter, Usage};
use crate::metering::{self, Metering};
use crate::providers::RouteMiss;
use crate::providers::key::ProviderKey;
use crate::providers::routes::Route;
use crate::telemetry::access_log::RequestId;
use crate::upstream::{UpstreamRequest, UpstreamStream};
use body::ProxyBody;
use context::RequestContext;
use request_body::{Inspected, inspect_body, with_stream_usage};
use respond::{Forwarded, respond};

pub use error_response::error_response;

const X_REQUEST_ID: &str = "x-request-id";

/// Serves one request on a provider route. Never fails: errors become provider-shaped responses. The
/// body stays with the caller, which deals with whatever of it is left unread (`server::unread`).
pub async fn handle(app: Arc<App>, req: Request<&mut Incoming>, request_id: RequestId) -> Response<ProxyBody> {
    if let Some(response) = browser::preflight(&app, &req, request_id) {
        return response;
    }
    let mut ctx = RequestContext::new(request_id, req.method().clone(), Arc::clone(&app.metrics));
    let route = match app.routes.resolve(req.method(), req.uri().path()) {
        Ok(route) => route,
        Err(miss) => {
            let error = match miss.reason {
                RouteMiss::NotFound => ProxyError::NotFound,
                RouteMiss::WrongMethod(allowed) => ProxyError::MethodNotAllowed(allowed),
            };
            return error_response(miss.shape, &error, &ctx.access_log());
        }
    };
    ctx.routed(&route);
    let mut response = match proxy(&app, &route, req, &mut ctx).await {
        Ok(response) => response,
        Err(error) => {
            // A reservation the failure left open is charged before the line is written (`Metering`'s
            // drop: the whole reservation).
            drop(ctx.metering.take());
            let mut response = error_response(route.provider.kind, &error, &ctx.access_log());
            if let Some(rate) = ctx.rate_headers(&error) {
                rate.write_to(response.headers_mut());
            }
            trial::show_provisioned(&app, &mut ctx.trial, false, &mut response);
            response
        }
    };
    browser::allow_origin(ctx.principal.as_ref(), response.headers_mut());
    response
}

/// The phases of a routed request, in order, up to the response head.
async fn proxy(
    app: &App,
    route: &Route,
    req: Request<&mut Incoming>,
    ctx: &mut RequestContext,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, body) = req.into_parts();
    check_head(&parts, app.config.server.max_header_bytes)?;
    if app.config.store.on_stale == OnStale::Refuse && app.readiness.stale_for().is_some() {
        return Err(ProxyError::StoreStale);
    }
    let principal = authenticate(app, &parts, &mut ctx.trial).await?;
    let principal = &*ctx.principal.insert(principal);
    let provider_key = credentials::provider_key_for(principal, &route.provider, &parts.headers)?;
    // The key's own limits come before anything shared is taken: its concurrency bounds how many of
    // the process-wide slots and slow bodies it can hold.
    let admitted = admit_request(app, principal).await?;
    let slot = app.in_flight.admit()?;
    let (body, facts) = if route.endpoint.has_json_body() {
        let body = read_body(body, &parts.headers, &app.config).await?;
        let facts = inspect_body(route.provider.kind, route.endpoint, &body)?;
        trial::take_member(app, route, &parts, (body, facts), principal, &mut ctx.trial).await?
    } else {
        (Bytes::new(), Inspected::default())
    };
    ctx.streaming = facts.stream;
    authorize(principal, route, request_model(route, &facts))?;
    output_cap::check(principal, &facts)?;
    let (body, facts) = output_cap::write(principal, route, (body, facts))?;
    if let Some(admitted) = admitted {
        let default_output = output_cap::default_for(principal, app.config.limits.default_max_output_tokens);
        let metering = reserve(app, admitted, route, (ctx.meter, default_output), &facts, body.len()).await?;
        ctx.rate = metering.headers().copied();
        ctx.metering = Some(metering);
    }
    let injected_usage = ctx.metering.is_some()
        && ctx.meter.usage_on_request()
        && facts.stream
        && facts.include_usage != Some(true)
        && route.provider.inject_stream_usage;
    let body = if injected_usage { with_stream_usage(body, &facts.usage_splice) } else { body };
    let upstream_request = build_upstream_request(route, &parts, body, &provider_key)?;
    drop(provider_key);
    let (response, deadline) = forward(app, route, upstream_request, ctx).await?;
    let mut response = respond(app, route, Forwarded { response, deadline, slot, injected_usage }, ctx);
    trial::show_provisioned(app, &mut ctx.trial, ctx.streaming, &mut response);
    Ok(response)
}

/// Phase: the request sent upstream and its response head awaited, within the total deadline. A
/// request that fails here is charged here (see `metering`).
async fn forward(
    app: &App,
    route: &Route,
    request: UpstreamRequest,
    ctx: &mut RequestContext,
) -> Result<(Response<UpstreamStream>, Instant), ProxyError> {
    let sent = Instant::now();
    let deadline = sent + app.config.upstream.total_timeout;
    match app.upstream.send(request, route.provider_index, deadline).await {
        Ok(response) => {
            let upstream = sent.elapsed();
            app.metrics.upstream_latency(route.provider_index, upstream);
            app.metrics.overhead(ctx.started.elapsed().saturating_sub(upstream));
            Ok((response, deadline))
        }
        Err(error) => {
            if let Some(metering) = ctx.metering.as_mut() {
                metering.settle(charge_before_head(&error, metering));
            }
            Err(error)
        }
    }
}

/// The charge when the upstream never answered (see `metering`).
fn charge_before_head(error: &ProxyError, metering: &Metering) -> Usage {
    match error {
        ProxyError::UpstreamUnreachable | ProxyError::UpstreamRedirect => Usage::default(),
        _ => Usage { input: metering.input_estimate, output: 0 },
    }
}

/// Phase: the head is within the size cap (hyper's own limit sits above it and answers bare).
fn check_head(parts: &request::Parts, max: usize) -> Result<(), ProxyError> {
    if headers::head_size(&parts.uri, &parts.headers) > max {
        return Err(ProxyError::HeadersTooLarge);
    }
    Ok(())
}

/// Phase: the service key is present, well-formed, known, active, enabled and unexpired (or, with
/// `[trial]` on and no key at all, the device's trial key: `trial`), used from an address its IP
/// allowlist names and from a browser origin it allows; its use is noted for the next flush.
async fn authenticate(
    app: &App,
    parts: &request::Parts,
    served: &mut Option<trial::TrialServed>,
) -> Result<Principal, ProxyError> {
    let client = auth::client::of_request(&parts.extensions, &parts.headers, &app.config.server.trusted_proxies);
    let trial_origins = &app.config.trial.allowed_origins;
    let mut principal = match auth::authenticate(&app.keys, &parts.headers, clock::unix_now()) {
        Err(auth::AuthError::Missing) if app.config.trial.enabled => {
            // No other site may have a visitor's trial key issued or used: the origin comes first.
            browser::trial_origin(&parts.headers, trial_origins)?;
            trial::serve_device(app, parts, client, served).await?
        }
        found => {
            let found = found?;
            if found.key.kind == auth::keys::KeyKind::Trial && &*found.key.account == TRIAL_ACCOUNT {
                browser::trial_origin(&parts.headers, trial_origins)?;
            }
            trial::regenerate_presented(app, parts, client, found, served).await?
        }
    };
    if principal.key.policy.ip_allowlist.is_some() && !client.is_some_and(|ip| principal.key.policy.allows_ip(ip)) {
        return Err(ProxyError::Forbidden("This API key may not be used from this address".into()));
    }
    browser::check_origin(&mut principal, &parts.headers, trial_origins)?;
    auth::identity::identify(&mut principal, &parts.headers, clock::unix_now())?;
    app.last_used.insert(principal.key.id, clock::unix_now());
    Ok(principal)
}

/// Phase (limits on): the request counted against its key's request limits, before its body is read.
async fn admit_request(app: &App, principal: &Principal) -> Result<Option<(Subject, limits::Permit)>, ProxyError> {
    if !app.config.limits.enabled {
        return Ok(None);
    }
    let subject = subject(app, principal);
    let permit = app.counters.admit_request(&subject, app.now()).await.map_err(ProxyError::limited)?;
    Ok(Some((subject, permit)))
}

/// Who the limits count a request against: the key, its account, its limits with the defaults
/// applied, and its account's plan.
fn subject(app: &App, principal: &Principal) -> Subject {
    let key = &principal.key;
    let (account, plan_tokens) = trial::counted_as(app, key);
    Subject {
        key: key.id,
        account,
        limits: limits::effective(&key.limits, &app.config.limits),
        plan_tokens,
        end_user: principal
            .end_user
            .as_ref()
            .map(|id| limits::EndUser { id: Arc::clone(id), limits: principal.end_user_limits }),
    }
}

/// Phase: the request body, whole (it must be read to learn `stream`), within the size cap, with an
/// idle limit between chunks and a deadline on the whole against slow senders.
async fn read_body(body: &mut Incoming, headers: &http::HeaderMap, config: &Config) -> Result<Bytes, ProxyError> {
    let max = config.server.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ProxyError::BodyTooLarge);
    }
    let whole_by = Instant::now() + config.server.body_timeout;
    // The common case is one chunk, kept without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut received: usize = 0;
    loop {
        let next_by = (Instant::now() + config.server.body_idle_timeout).min(whole_by);
        let frame = tokio::time::timeout_at(next_by, body.frame()).await.map_err(|_| ProxyError::BodyTimeout)?;
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(|_| ProxyError::BodyUnreadable)?.into_data() else {
            continue;
        };
        received = received.saturating_add(data.len());
        if received > max {
            return Err(ProxyError::BodyTooLarge);
        }
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.reserve(declared.map_or(2 * f.len(), |n| n as usize));
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() { first.unwrap_or_default() } else { rest.freeze() })
}

/// The model a request names, where its provider says: in the path or in the body.
fn request_model<'a>(route: &'a Route, facts: &'a Inspected) -> Option<&'a str> {
    route.model(facts.model.as_deref())
}

/// Phase: the key's scopes and allowlists cover this provider, route and model. A model name is
/// bounded before any allowlist pattern is matched against it.
fn authorize(principal: &Principal, route: &Route, model: Option<&str>) -> Result<(), ProxyError> {
    if model.is_some_and(|m| m.len() > crate::auth::access::MAX_MODEL_BYTES) {
        return Err(ProxyError::ModelNameTooLong);
    }
    let access = &principal.key.access;
    access.check(&route.provider.name, route.endpoint, model).map_err(|denied| ProxyError::Forbidden(denied.0))
}

/// Phase (limits on): `input estimate + output cap` tokens reserved against the key's and its account's
/// monthly quotas, for a request already admitted against its request limits.
async fn reserve(
    app: &App,
    (subject, permit): (Subject, limits::Permit),
    route: &Route,
    (meter, default_output): (Meter, u64),
    facts: &Inspected,
    body_len: usize,
) -> Result<Metering, ProxyError> {
    let reservation = metering::reservation(meter, route.endpoint, facts.asked(), body_len, default_output);
    let now = app.now();
    let ticket = app.counters.reserve(permit, reservation.total(), now).await.map_err(ProxyError::limited)?;
    let model = request_model(route, facts);
    Ok(Metering::new(Arc::clone(&app.usage), &subject, model, clock::day_of(now.unix), reservation, ticket))
}

/// Phase: the upstream request. Only the configured origin, only the allowlisted path; the caller's
/// `key=` query parameters dropped; headers cleaned, then `Host`, framing and exactly one credential set.
fn build_upstream_request(
    route: &Route,
    parts: &request::Parts,
    body: Bytes,
    provider_key: &ProviderKey,
) -> Result<UpstreamRequest, ProxyError> {
    let provider = &route.provider;
    let mut query = query_without_key(parts.uri.query().unwrap_or(""));
    let mut headers = headers::upstream_request_headers(&parts.headers);
    if let Ok(host) = HeaderValue::from_str(provider.authority.as_str()) {
        headers.insert(header::HOST, host);
    }
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if route.endpoint.has_json_body() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    provider.kind.set_credential(provider, provider_key, &mut headers, &mut query);

    let mut path_and_query = String::with_capacity(route.upstream_path.len() + 1 + query.len());
    path_and_query.push_str(&route.upstream_path);
    if !query.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&query);
    }
    let uri = http::Uri::builder()
        .scheme(provider.scheme.clone())
        .authority(provider.authority.clone())
        .path_and_query(path_and_query)
        .build()
        // The path is allowlisted and the query came from a parsed URI, so only the key's characters
        // (all printable, but not all legal in a URI) can make this fail.
        .map_err(|_| ProxyError::InvalidProviderKey)?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = route.endpoint.method();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The caller's query string without any `key` parameter (Gemini's query credential), however spelled.
fn query_without_key(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split('=').next().unwrap_or("");
        if percent_decoded_eq_ignore_case(name, "key") {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    out
}

fn percent_decoded_eq_ignore_case(encoded: &str, want: &str) -> bool {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                decoded.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                decoded.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    decoded.eq_ignore_ascii_case(want.as_bytes())
}

/// Stamps the response with the request's id.
pub fn with_request_id(mut response: Response<ProxyBody>, id: RequestId) -> Response<ProxyBody> {
    response.headers_mut().insert(X_REQUEST_ID, id.header_value());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_key_parameters_are_dropped_in_every_spelling() {
        assert_eq!(query_without_key("alt=sse&key=AIza&x=1"), "alt=sse&x=1");
        assert_eq!(query_without_key("KEY=a&k%65y=b&%4BEY=c&key&beta=true"), "beta=true");
        assert_eq!(query_without_key("keys=1&monkey=2"), "keys=1&monkey=2");
        assert_eq!(query_without_key(""), "");
    }
}

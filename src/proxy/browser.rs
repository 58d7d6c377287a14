//! Browser callers (docs/ARCHITECTURE.md, Browser callers): the `Origin` a publishable key must come from,
//! the refusal of a secret key sent from a browser, and CORS: preflights answered before
//! authentication, and the headers a real response carries to an accepted origin.
//!
//! A preflight cannot know the key (browsers send none with it), so every origin's preflight on a
//! provider route is answered; the real request is then checked against its key's allowed origins,
//! and only an accepted origin gets `Access-Control-Allow-Origin` on the response, so a page from any
//! other origin cannot read it. Stripe and Supabase answer preflights the same way.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::body::ProxyBody;
use super::context::RequestContext;
use super::with_request_id;
use crate::app::App;
use crate::app::trial::TRIAL_ACCOUNT;
use crate::auth::Principal;
use crate::auth::keys::KeyKind;
use crate::auth::origin;
use crate::error::{LogLevel, ProxyError};
use crate::telemetry::access_log::RequestId;

/// The request headers a preflight allows: those the OpenAI, Anthropic and Gemini SDKs send, and
/// tollgate's own. Any `x-stainless-*` header (the OpenAI and Anthropic SDKs' telemetry) is allowed too.
pub const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "x-provider-key",
    "x-tollgate-identity",
    "x-tollgate-end-user",
    "x-tollgate-regenerate-key",
    "anthropic-version",
    "anthropic-beta",
    "x-api-key",
    "x-goog-api-key",
    "anthropic-dangerous-direct-browser-access",
];

/// The response headers a page may read: the request id, the rate-limit headers, `Retry-After`, and a
/// trial key's one showing.
pub const EXPOSED_HEADERS: &str = "x-request-id, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, \
     x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, \
     x-ratelimit-reset-tokens, retry-after, x-tollgate-key-provisioned, x-tollgate-claim-url";

/// How long a browser may cache a preflight (Chromium caps it at 2 hours).
pub const MAX_AGE_SECS: u32 = 7200;

/// The longest origin echoed in an error message.
const SHOWN_ORIGIN: usize = 128;

/// Phase (authenticate): a publishable key needs an `Origin` its allowed origins match; a secret key
/// with an `Origin` is refused unless it allows browsers. The accepted origin is kept on the principal,
/// and the response carries CORS headers for it.
pub fn check_origin(principal: &mut Principal, headers: &HeaderMap, trial: &[String]) -> Result<(), ProxyError> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let (first, second) = (values.next(), values.next());
    let origin = first.map(|v| v.to_str().unwrap_or("(not ASCII)"));
    let policy = &principal.key.policy;
    match principal.key.kind {
        KeyKind::Publishable => {
            let Some(origin) = origin else {
                return Err(ProxyError::OriginNotAllowed(
                    "This publishable key needs an Origin header (it is for browser code); none was sent".into(),
                ));
            };
            let patterns = policy.allowed_origins.as_deref().unwrap_or_default();
            if second.is_some() || !origin::is_allowed(patterns, origin) {
                let shown: String = origin.chars().take(SHOWN_ORIGIN).collect();
                return Err(ProxyError::OriginNotAllowed(format!(
                    "Origin `{shown}` is not allowed for this publishable key"
                )));
            }
            principal.origin = Some(Arc::from(origin));
        }
        // A trial key serves a device, browser or not; from a browser only on the sites `[trial]` names,
        // so no other site can spend (or regenerate) a visitor's trial key.
        KeyKind::Trial if &*principal.key.account == TRIAL_ACCOUNT => {
            principal.origin = trial_origin(headers, trial)?.map(Arc::from);
        }
        // A secret key, or a trial key claimed into an account (a secret key of the account now).
        KeyKind::Live | KeyKind::Trial => {
            let Some(origin) = origin else { return Ok(()) };
            if !policy.allow_browser {
                return Err(ProxyError::SecretKeyInBrowser);
            }
            if second.is_none() && origin::Origin::parse(origin).is_some() {
                principal.origin = Some(Arc::from(origin));
            }
        }
    }
    Ok(())
}

/// The origin of a request to be served under a trial key: none (not a browser), or one that
/// `trial.allowed_origins` names; checked before a key is issued or regenerated, too.
pub fn trial_origin<'h>(headers: &'h HeaderMap, allowed: &[String]) -> Result<Option<&'h str>, ProxyError> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let (Some(first), second) = (values.next(), values.next()) else { return Ok(None) };
    let origin = first.to_str().unwrap_or("(not ASCII)");
    if second.is_some() || !origin::is_allowed(allowed, origin) {
        let shown: String = origin.chars().take(SHOWN_ORIGIN).collect();
        return Err(ProxyError::OriginNotAllowed(format!(
            "Origin `{shown}` is not allowed for trial keys (trial.allowed_origins)"
        )));
    }
    Ok(Some(origin))
}

/// CORS on a real response: an accepted origin may read it, with the headers it needs.
pub fn allow_origin(principal: Option<&Principal>, headers: &mut HeaderMap) {
    let Some(origin) = principal.and_then(|p| p.origin.as_deref()) else { return };
    let Ok(origin) = HeaderValue::from_str(origin) else { return };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
}

/// A CORS preflight on a provider route (`OPTIONS` with `Origin` and `Access-Control-Request-Method`
/// naming a method the path is served for), answered 204 before authentication. `None` for anything
/// else, which is then routed as any request is.
pub fn preflight<B>(app: &App, req: &Request<B>, request_id: RequestId) -> Option<Response<ProxyBody>> {
    if req.method() != Method::OPTIONS {
        return None;
    }
    let h = req.headers();
    let origin = h.get(header::ORIGIN).filter(|o| o.to_str().ok().and_then(origin::Origin::parse).is_some())?;
    let method = h.get(header::ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let route = app.routes.resolve(&method, req.uri().path()).ok()?;
    let mut ctx = RequestContext::new(request_id, req.method().clone(), Arc::clone(&app.metrics));
    ctx.routed(&route);

    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if let Ok(method) = HeaderValue::from_str(method.as_str()) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method);
    }
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers(h));
    out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
    out.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    ctx.access_log().emit(StatusCode::NO_CONTENT.as_u16(), "cors_preflight", 0, LogLevel::Info);
    Some(with_request_id(response, request_id))
}

/// `Access-Control-Allow-Headers`: the request's own list when every name in it is allowed (CORS has no
/// wildcard within a name, so `x-stainless-*` is matched here and echoed), else the fixed list, which
/// the browser then finds lacking.
fn allowed_headers(h: &HeaderMap) -> HeaderValue {
    let fixed = || HeaderValue::from_str(&ALLOWED_HEADERS.join(", ")).unwrap_or(HeaderValue::from_static("*"));
    let Some(asked) = h.get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok()) else {
        return fixed();
    };
    let names: Vec<String> =
        asked.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
    let allowed = |n: &String| ALLOWED_HEADERS.contains(&n.as_str()) || n.starts_with("x-stainless-");
    if names.is_empty() || !names.iter().all(allowed) {
        return fixed();
    }
    HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| fixed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn asked_headers_are_echoed_only_when_all_are_allowed() {
        let h = with("access-control-request-headers", "Authorization, content-type,X-Stainless-OS");
        assert_eq!(allowed_headers(&h), "authorization, content-type, x-stainless-os");
        let h = with("access-control-request-headers", "authorization, cookie");
        let fixed = allowed_headers(&h);
        assert!(fixed.to_str().unwrap().contains("anthropic-dangerous-direct-browser-access"));
        assert!(!fixed.to_str().unwrap().contains("cookie"));
        assert_eq!(allowed_headers(&HeaderMap::new()), fixed);
    }
}

//! Every error's status, type, code, label, level and headers, in each provider's shape.

use super::*;
use crate::metering::limits::RateHeaders;

fn refusal(limit: LimitKind, retry_after_secs: u64) -> Refusal {
    let headers = RateHeaders {
        limit_requests: 0,
        remaining_requests: 0,
        reset_requests_ns: 0,
        limit_tokens: 0,
        remaining_tokens: 0,
        reset_tokens_secs: 0,
    };
    Refusal { limit, retry_after_secs, headers }
}

/// One value of every variant. The match has no wildcard, so a new variant does not compile until it
/// is given a place here, and the check below fails until it is also in the list.
fn one_of_each() -> Vec<ProxyError> {
    fn place(e: &ProxyError) -> usize {
        match e {
            ProxyError::NotFound => 0,
            ProxyError::MethodNotAllowed(_) => 1,
            ProxyError::HeadersTooLarge => 2,
            ProxyError::MissingServiceKey => 3,
            ProxyError::InvalidServiceKey => 4,
            ProxyError::ExpiredServiceKey => 5,
            ProxyError::MissingProviderKey => 6,
            ProxyError::InvalidProviderKey => 7,
            ProxyError::BodyTooLarge => 8,
            ProxyError::BodyTimeout => 9,
            ProxyError::BodyUnreadable => 10,
            ProxyError::InvalidJson(_) => 11,
            ProxyError::ModelNameTooLong => 12,
            ProxyError::Forbidden(_) => 13,
            ProxyError::Overloaded => 14,
            ProxyError::RateLimited(_) => 15,
            ProxyError::UpstreamUnreachable => 16,
            ProxyError::UpstreamRedirect => 17,
            ProxyError::UpstreamFailed => 18,
            ProxyError::UpstreamConnectTimeout => 19,
            ProxyError::UpstreamHeadTimeout => 20,
            ProxyError::UpstreamIdleTimeout => 21,
            ProxyError::UpstreamTotalTimeout => 22,
            ProxyError::UpstreamEventTooLarge => 23,
            ProxyError::KeyDisabled => 24,
            ProxyError::OriginNotAllowed(_) => 25,
            ProxyError::SecretKeyInBrowser => 26,
            ProxyError::NoServerCredential(_) => 27,
            ProxyError::OutputCapExceeded(_) => 28,
            ProxyError::IdentityTokenExpired => 29,
            ProxyError::InvalidIdentityToken(_) => 30,
            ProxyError::InvalidEndUser => 31,
            ProxyError::TrialIssuanceLimited(_) => 32,
            ProxyError::TrialUnavailable => 33,
            ProxyError::CountersUnavailable(_) => 34,
            ProxyError::StoreStale => 35,
        }
    }
    const VARIANTS: usize = 36;
    let all = vec![
        ProxyError::NotFound,
        ProxyError::MethodNotAllowed(Method::POST),
        ProxyError::HeadersTooLarge,
        ProxyError::MissingServiceKey,
        ProxyError::InvalidServiceKey,
        ProxyError::ExpiredServiceKey,
        ProxyError::MissingProviderKey,
        ProxyError::InvalidProviderKey,
        ProxyError::BodyTooLarge,
        ProxyError::BodyTimeout,
        ProxyError::BodyUnreadable,
        ProxyError::InvalidJson("Request body must be a JSON object".into()),
        ProxyError::ModelNameTooLong,
        ProxyError::Forbidden("model not allowed for this key".into()),
        ProxyError::Overloaded,
        ProxyError::RateLimited(refusal(LimitKind::RequestsPerMinute, 7)),
        ProxyError::UpstreamUnreachable,
        ProxyError::UpstreamRedirect,
        ProxyError::UpstreamFailed,
        ProxyError::UpstreamConnectTimeout,
        ProxyError::UpstreamHeadTimeout,
        ProxyError::UpstreamIdleTimeout,
        ProxyError::UpstreamTotalTimeout,
        ProxyError::UpstreamEventTooLarge,
        ProxyError::KeyDisabled,
        ProxyError::OriginNotAllowed("Origin `null` is not allowed for this key".into()),
        ProxyError::SecretKeyInBrowser,
        ProxyError::NoServerCredential("provider `x` holds no server credential".into()),
        ProxyError::OutputCapExceeded("`max_tokens` is over this key's cap".into()),
        ProxyError::IdentityTokenExpired,
        ProxyError::InvalidIdentityToken("Invalid identity token"),
        ProxyError::InvalidEndUser,
        ProxyError::TrialIssuanceLimited(30),
        ProxyError::TrialUnavailable,
        ProxyError::CountersUnavailable(2),
        ProxyError::StoreStale,
    ];
    let mut places: Vec<usize> = all.iter().map(place).collect();
    places.sort_unstable();
    assert_eq!(places, (0..VARIANTS).collect::<Vec<_>>(), "every variant listed once");
    all
}

fn rendered_headers(spec: &ErrorSpec<'_>) -> Vec<(String, String)> {
    let mut h = HeaderMap::new();
    spec.headers.write_to(&mut h);
    let mut out: Vec<(String, String)> =
        h.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
    out.sort();
    out
}

/// The error table of docs/ARCHITECTURE.md, pinned.
#[test]
fn statuses_and_messages_follow_the_design_table() {
    let table = [
        (ProxyError::MissingServiceKey, 401, "Missing API key"),
        (ProxyError::InvalidServiceKey, 401, "Invalid API key"),
        (ProxyError::ExpiredServiceKey, 401, "API key expired"),
        (ProxyError::KeyDisabled, 403, "API key disabled"),
        (ProxyError::SecretKeyInBrowser, 403, "secret key used from a browser; use a publishable key"),
        (ProxyError::MissingProviderKey, 400, "Missing X-Provider-Key header"),
        (ProxyError::InvalidProviderKey, 400, "Invalid X-Provider-Key header"),
        (ProxyError::UpstreamUnreachable, 502, "Upstream provider unreachable"),
        (
            ProxyError::UpstreamRedirect,
            502,
            "Upstream provider answered with a redirect, which tollgate does not follow",
        ),
        (ProxyError::UpstreamConnectTimeout, 504, "Upstream provider timed out"),
        (ProxyError::UpstreamHeadTimeout, 504, "Upstream provider timed out"),
        (ProxyError::UpstreamIdleTimeout, 504, "Upstream provider timed out"),
        (ProxyError::UpstreamTotalTimeout, 504, "Upstream provider timed out"),
        (ProxyError::Overloaded, 503, "tollgate is overloaded; retry shortly"),
        (ProxyError::BodyTooLarge, 413, "Request body too large"),
        (ProxyError::HeadersTooLarge, 431, "Request headers too large"),
    ];
    for (e, status, message) in table {
        assert_eq!(e.status().as_u16(), status, "{e:?}");
        assert_eq!(e.message(), message);
    }
}

/// Every variant: status, OpenAI type and code, log label and level, extra headers, refusal reason.
#[test]
fn every_variant_has_its_pinned_row() {
    use LogLevel::{Info, Warn};
    type Row = (u16, &'static str, &'static str, &'static str, LogLevel, &'static [(&'static str, &'static str)]);
    let client = "invalid_request_error";
    let rows: Vec<Row> = vec![
        (404, client, "unknown_url", "unknown_url", Info, &[]),
        (405, client, "method_not_allowed", "method_not_allowed", Info, &[("allow", "POST")]),
        (431, client, "headers_too_large", "headers_too_large", Info, &[]),
        (401, client, "missing_api_key", "missing_api_key", Info, &[]),
        (401, client, "invalid_api_key", "invalid_api_key", Info, &[]),
        (401, client, "expired_api_key", "expired_api_key", Info, &[]),
        (400, client, "missing_provider_key", "missing_provider_key", Info, &[]),
        (400, client, "invalid_provider_key", "invalid_provider_key", Info, &[]),
        (413, client, "request_too_large", "request_too_large", Info, &[]),
        (408, client, "request_timeout", "request_timeout", Info, &[]),
        (400, client, "body_unreadable", "body_unreadable", Info, &[]),
        (400, client, "invalid_json", "invalid_json", Info, &[]),
        (400, client, "model_name_too_long", "model_name_too_long", Info, &[]),
        (403, "permission_error", "permission_denied", "permission_denied", Info, &[]),
        (503, "server_error", "overloaded", "overloaded", Warn, &[("retry-after", "1")]),
        (429, "requests", "rate_limit_exceeded", "rate_limit_exceeded", Info, &[("retry-after", "7")]),
        (502, "server_error", "upstream_unreachable", "upstream_unreachable", Warn, &[]),
        (502, "server_error", "upstream_redirect", "upstream_redirect", Warn, &[]),
        (502, "server_error", "upstream_failed", "upstream_failed", Warn, &[]),
        (504, "server_error", "upstream_timeout", "upstream_connect_timeout", Warn, &[]),
        (504, "server_error", "upstream_timeout", "upstream_head_timeout", Warn, &[]),
        (504, "server_error", "upstream_timeout", "upstream_idle_timeout", Warn, &[]),
        (504, "server_error", "upstream_timeout", "upstream_total_timeout", Warn, &[]),
        (502, "server_error", "upstream_event_too_large", "upstream_event_too_large", Warn, &[]),
        (403, "permission_error", "api_key_disabled", "api_key_disabled", Info, &[]),
        (403, "permission_error", "origin_not_allowed", "origin_not_allowed", Info, &[]),
        (403, "permission_error", "secret_key_in_browser", "secret_key_in_browser", Info, &[]),
        (400, client, "no_server_credential", "no_server_credential", Info, &[]),
        (400, client, "output_cap_exceeded", "output_cap_exceeded", Info, &[]),
        (401, client, "identity_token_expired", "identity_token_expired", Info, &[]),
        (401, client, "invalid_identity_token", "invalid_identity_token", Info, &[]),
        (400, client, "invalid_end_user", "invalid_end_user", Info, &[]),
        (429, "requests", "trial_issuance_limited", "trial_issuance_limited", Info, &[("retry-after", "30")]),
        (503, "server_error", "trial_unavailable", "trial_unavailable", Warn, &[("retry-after", "1")]),
        (503, "server_error", "counters_unavailable", "counters_unavailable", Warn, &[("retry-after", "2")]),
        (503, "server_error", "store_unavailable", "store_unavailable", Warn, &[("retry-after", "1")]),
    ];
    let all = one_of_each();
    assert_eq!(all.len(), rows.len());
    for (e, (status, openai_type, code, label, level, headers)) in all.iter().zip(rows) {
        let spec = e.spec();
        assert_eq!(
            (spec.status.as_u16(), spec.openai_type, spec.openai_code, spec.label, spec.level),
            (status, openai_type, code, label, level),
            "{e:?}"
        );
        let want: Vec<(String, String)> = headers.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        assert_eq!(rendered_headers(&spec), want, "{e:?}");
        assert_eq!(e.parts().openai_code, Some(code));
        assert_eq!(e.to_string(), spec.message);
    }
}

/// Each limit's message, code, retry headers and refusal reason.
#[test]
fn every_limit_refuses_with_its_own_row() {
    let rows = [
        (LimitKind::RequestsPerMinute, "requests per minute", "rate_limit_exceeded", false),
        (LimitKind::RequestsPerDay, "requests per day", "rate_limit_exceeded", true),
        (LimitKind::Concurrency, "concurrent requests", "rate_limit_exceeded", false),
        (LimitKind::KeyTokens, "this key's monthly token quota", "insufficient_quota", true),
        (LimitKind::AccountTokens, "the account's monthly token quota", "insufficient_quota", true),
        (LimitKind::EndUserRequestsPerMinute, "requests per minute for this end user", "rate_limit_exceeded", false),
        (LimitKind::EndUserRequestsPerDay, "requests per day for this end user", "rate_limit_exceeded", true),
        (LimitKind::EndUserTokens, "this end user's monthly token quota", "insufficient_quota", true),
    ];
    for (limit, message, code, no_retry) in rows {
        let e = ProxyError::RateLimited(refusal(limit, 30));
        let spec = e.spec();
        assert_eq!(spec.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(spec.message.contains(message), "{limit:?}: {}", spec.message);
        assert_eq!((spec.openai_code, spec.label, spec.refusal), (code, code, Some(limit.label())));
        let mut want = vec![("retry-after".to_owned(), "30".to_owned())];
        if no_retry {
            want.push(("x-should-retry".into(), "false".into()));
        }
        assert_eq!(rendered_headers(&spec), want, "{limit:?}");
    }
    assert_eq!(ProxyError::Overloaded.spec().refusal, Some("overloaded"));
    assert!(one_of_each().iter().filter(|e| e.spec().refusal.is_some()).count() == 5);
    assert_eq!(ProxyError::StoreStale.spec().refusal, Some("store_stale"));
    let unavailable = ProxyError::limited(refusal(LimitKind::CountersUnavailable, 1));
    assert_eq!(
        (unavailable.status(), unavailable.spec().refusal),
        (StatusCode::SERVICE_UNAVAILABLE, Some("counters_unavailable"))
    );
    assert_eq!(ProxyError::limited(refusal(LimitKind::KeyTokens, 1)).status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ProxyError::TrialIssuanceLimited(5).spec().refusal, Some("trial_issuance"));
}

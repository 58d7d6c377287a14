//! Every error tollgate itself produces, and how it leaves: one table ([`ProxyError::spec`]) gives each
//! variant its status, message, OpenAI type/code, log label and level, and extra headers, matched
//! exhaustively (no catch-all arm, so a new variant must be placed). Bodies are shaped by the route's
//! provider in `providers`; upstream errors never come through here, they pass through unchanged.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::metering::limits::{LimitKind, Refusal};
use crate::providers::ErrorParts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    NotFound,
    MethodNotAllowed(http::Method),
    HeadersTooLarge,
    MissingServiceKey,
    InvalidServiceKey,
    ExpiredServiceKey,
    /// The key's owner switched it off (reversibly).
    KeyDisabled,
    MissingProviderKey,
    InvalidProviderKey,
    BodyTooLarge,
    BodyTimeout,
    /// The caller's connection failed while sending the body.
    BodyUnreadable,
    /// The request body is not a JSON object; the text says why without quoting the body.
    InvalidJson(String),
    /// The model a request names is longer than [`crate::auth::access::MAX_MODEL_BYTES`].
    ModelNameTooLong,
    /// The key's scopes or allowlists do not cover the request; the text names what is missing.
    Forbidden(String),
    Overloaded,
    /// A limit of the key or its account (docs/ARCHITECTURE.md, Limits and charges): 429 with its retry time.
    RateLimited(Refusal),
    UpstreamUnreachable,
    UpstreamRedirect,
    /// The upstream connection failed after it was made (reset, protocol error, cut mid-body).
    UpstreamFailed,
    /// No connection to the upstream within `upstream.connect_timeout`.
    UpstreamConnectTimeout,
    /// Connected and sent, but no response head within `upstream.response_timeout`.
    UpstreamHeadTimeout,
    /// The response body went silent for `upstream.idle_timeout`.
    UpstreamIdleTimeout,
    /// The request's total deadline passed, before the head or while the body streamed.
    UpstreamTotalTimeout,
    UpstreamEventTooLarge,
    /// A publishable key's request without an `Origin` its allowed origins match; the text names the
    /// origin.
    OriginNotAllowed(String),
    /// A secret key sent with an `Origin` header, from a key that does not allow browsers.
    SecretKeyInBrowser,
    /// A key using the server's provider credential called a provider that holds none; the text names it.
    NoServerCredential(String),
    /// The request asks for more output than its key's `max_output_tokens`; the text names the member
    /// and the cap.
    OutputCapExceeded(String),
    /// The identity token's `exp` (plus the leeway) has passed: the app should mint a new one.
    IdentityTokenExpired,
    /// The identity token is missing where required, malformed, wrongly signed, of another key or
    /// algorithm, or its claims are missing or out of bounds; the text says which without echoing it.
    InvalidIdentityToken(&'static str),
    /// `X-Tollgate-End-User` is not 1-128 printable characters.
    InvalidEndUser,
    /// No new trial key for this network or this instance for now (issuance throttles); seconds to wait.
    TrialIssuanceLimited(u64),
    /// A trial key could not be issued because the store failed.
    TrialUnavailable,
    /// The shared counters (Redis) cannot answer and token quotas fail closed: 503 with the seconds to
    /// wait, never a 429 (the caller's quota is not the problem).
    CountersUnavailable(u64),
}

/// The level of a request's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Routine, including the caller's own mistakes.
    Info,
    /// Upstream or capacity trouble worth an operator's attention.
    Warn,
}

/// Everything about how one error leaves: the response, the log line and the refusal count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorSpec<'a> {
    pub status: StatusCode,
    pub message: &'a str,
    /// OpenAI's `type`; the other shapes derive theirs from the status.
    pub openai_type: &'static str,
    /// OpenAI's `code`, which SDKs and callers match on, so it stays stable.
    pub openai_code: &'static str,
    /// The access log's outcome: the code, or finer where an operator needs to tell causes apart that
    /// a caller need not (the four timeouts share one code).
    pub label: &'static str,
    pub level: LogLevel,
    pub headers: ExtraHeaders<'a>,
    /// The `tollgate_refusals_total` reason, for refusals by a limit or by overload.
    pub refusal: Option<&'static str>,
}

/// Headers an error adds beyond `content-type` and the request id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtraHeaders<'a> {
    /// `Retry-After`, seconds.
    pub retry_after: Option<u64>,
    /// `Allow`, on 405.
    pub allow: Option<&'a Method>,
    /// `x-should-retry: false`: the OpenAI and Anthropic SDKs then give up at once, where waiting cannot
    /// help (a daily or monthly quota).
    pub no_retry: bool,
}

impl ExtraHeaders<'_> {
    pub fn write_to(&self, h: &mut HeaderMap) {
        if let Some(seconds) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow.and_then(|m| HeaderValue::from_str(m.as_str()).ok()) {
            h.insert(header::ALLOW, allow);
        }
        if self.no_retry {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
    }
}

impl<'a> ErrorSpec<'a> {
    /// A caller's mistake: `invalid_request_error`, logged at info.
    fn caller(status: StatusCode, code: &'static str, message: &'a str) -> ErrorSpec<'a> {
        ErrorSpec {
            status,
            message,
            openai_type: "invalid_request_error",
            openai_code: code,
            label: code,
            level: LogLevel::Info,
            headers: ExtraHeaders::default(),
            refusal: None,
        }
    }

    /// Upstream or capacity trouble: `server_error`, logged at warn.
    fn server(status: StatusCode, code: &'static str, message: &'a str) -> ErrorSpec<'a> {
        ErrorSpec { openai_type: "server_error", level: LogLevel::Warn, ..ErrorSpec::caller(status, code, message) }
    }

    /// One of the upstream timeouts: 504 and one wire code for all, told apart in the log.
    fn timeout(label: &'static str) -> ErrorSpec<'a> {
        let spec = ErrorSpec::server(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "Upstream provider timed out");
        ErrorSpec { label, ..spec }
    }

    fn rate_limited(refusal: &Refusal) -> ErrorSpec<'a> {
        let message = match refusal.limit {
            LimitKind::RequestsPerMinute => "rate limit exceeded: requests per minute for this key",
            LimitKind::RequestsPerDay => "rate limit exceeded: requests per day for this key",
            LimitKind::Concurrency => "rate limit exceeded: concurrent requests for this key",
            LimitKind::KeyTokens => "token quota exceeded: this key's monthly token quota",
            LimitKind::AccountTokens => "token quota exceeded: the account's monthly token quota",
            LimitKind::EndUserRequestsPerMinute => "rate limit exceeded: requests per minute for this end user",
            LimitKind::EndUserRequestsPerDay => "rate limit exceeded: requests per day for this end user",
            LimitKind::EndUserTokens => "token quota exceeded: this end user's monthly token quota",
            LimitKind::EndUsers => "rate limit exceeded: this key already counts its most end users at once",
            LimitKind::CountersUnavailable => "the usage counters are unavailable; retry shortly",
        };
        let (openai_type, code) = if refusal.limit.is_tokens() {
            ("insufficient_quota", "insufficient_quota")
        } else {
            ("requests", "rate_limit_exceeded")
        };
        ErrorSpec {
            openai_type,
            headers: ExtraHeaders {
                retry_after: Some(refusal.retry_after_secs),
                no_retry: refusal.limit.is_exhaustion(),
                ..ExtraHeaders::default()
            },
            refusal: Some(refusal.limit.label()),
            ..ErrorSpec::caller(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }
}

impl ProxyError {
    /// The table: one arm per variant.
    pub fn spec(&self) -> ErrorSpec<'_> {
        use ErrorSpec as S;
        use StatusCode as C;
        match self {
            ProxyError::NotFound => {
                S::caller(C::NOT_FOUND, "unknown_url", "Unknown route: this path is not one tollgate forwards")
            }
            ProxyError::MethodNotAllowed(allowed) => S {
                headers: ExtraHeaders { allow: Some(allowed), ..ExtraHeaders::default() },
                ..S::caller(C::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed on this route")
            },
            ProxyError::HeadersTooLarge => {
                S::caller(C::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", "Request headers too large")
            }
            ProxyError::MissingServiceKey => S::caller(C::UNAUTHORIZED, "missing_api_key", "Missing API key"),
            ProxyError::InvalidServiceKey => S::caller(C::UNAUTHORIZED, "invalid_api_key", "Invalid API key"),
            ProxyError::ExpiredServiceKey => S::caller(C::UNAUTHORIZED, "expired_api_key", "API key expired"),
            ProxyError::KeyDisabled => {
                S { openai_type: "permission_error", ..S::caller(C::FORBIDDEN, "api_key_disabled", "API key disabled") }
            }
            ProxyError::MissingProviderKey => {
                S::caller(C::BAD_REQUEST, "missing_provider_key", "Missing X-Provider-Key header")
            }
            ProxyError::InvalidProviderKey => {
                S::caller(C::BAD_REQUEST, "invalid_provider_key", "Invalid X-Provider-Key header")
            }
            ProxyError::BodyTooLarge => S::caller(C::PAYLOAD_TOO_LARGE, "request_too_large", "Request body too large"),
            ProxyError::BodyTimeout => {
                S::caller(C::REQUEST_TIMEOUT, "request_timeout", "Timed out reading the request body")
            }
            ProxyError::BodyUnreadable => {
                S::caller(C::BAD_REQUEST, "body_unreadable", "Failed to read the request body")
            }
            ProxyError::InvalidJson(why) => S::caller(C::BAD_REQUEST, "invalid_json", why),
            ProxyError::ModelNameTooLong => {
                S::caller(C::BAD_REQUEST, "model_name_too_long", "Model name too long (at most 256 bytes)")
            }
            ProxyError::Forbidden(why) => {
                S { openai_type: "permission_error", ..S::caller(C::FORBIDDEN, "permission_denied", why) }
            }
            ProxyError::Overloaded => S {
                headers: ExtraHeaders { retry_after: Some(1), ..ExtraHeaders::default() },
                refusal: Some("overloaded"),
                ..S::server(C::SERVICE_UNAVAILABLE, "overloaded", "tollgate is overloaded; retry shortly")
            },
            ProxyError::RateLimited(refusal) => S::rate_limited(refusal),
            ProxyError::UpstreamUnreachable => {
                S::server(C::BAD_GATEWAY, "upstream_unreachable", "Upstream provider unreachable")
            }
            ProxyError::UpstreamRedirect => S::server(
                C::BAD_GATEWAY,
                "upstream_redirect",
                "Upstream provider answered with a redirect, which tollgate does not follow",
            ),
            ProxyError::UpstreamFailed => {
                S::server(C::BAD_GATEWAY, "upstream_failed", "Upstream provider connection failed")
            }
            ProxyError::UpstreamConnectTimeout => S::timeout("upstream_connect_timeout"),
            ProxyError::UpstreamHeadTimeout => S::timeout("upstream_head_timeout"),
            ProxyError::UpstreamIdleTimeout => S::timeout("upstream_idle_timeout"),
            ProxyError::UpstreamTotalTimeout => S::timeout("upstream_total_timeout"),
            ProxyError::UpstreamEventTooLarge => {
                S::server(C::BAD_GATEWAY, "upstream_event_too_large", "Upstream stream event exceeded the size limit")
            }
            ProxyError::OriginNotAllowed(why) => {
                S { openai_type: "permission_error", ..S::caller(C::FORBIDDEN, "origin_not_allowed", why) }
            }
            ProxyError::SecretKeyInBrowser => S {
                openai_type: "permission_error",
                ..S::caller(
                    C::FORBIDDEN,
                    "secret_key_in_browser",
                    "secret key used from a browser; use a publishable key",
                )
            },
            ProxyError::NoServerCredential(why) => S::caller(C::BAD_REQUEST, "no_server_credential", why),
            ProxyError::OutputCapExceeded(why) => S::caller(C::BAD_REQUEST, "output_cap_exceeded", why),
            ProxyError::IdentityTokenExpired => S::caller(
                C::UNAUTHORIZED,
                "identity_token_expired",
                "Identity token expired: mint a new one on your server and retry",
            ),
            ProxyError::InvalidIdentityToken(why) => S::caller(C::UNAUTHORIZED, "invalid_identity_token", why),
            ProxyError::InvalidEndUser => {
                S::caller(C::BAD_REQUEST, "invalid_end_user", "X-Tollgate-End-User must be 1-128 printable characters")
            }
            ProxyError::TrialIssuanceLimited(seconds) => S {
                openai_type: "requests",
                headers: ExtraHeaders { retry_after: Some(*seconds), ..ExtraHeaders::default() },
                refusal: Some("trial_issuance"),
                ..S::caller(
                    C::TOO_MANY_REQUESTS,
                    "trial_issuance_limited",
                    "Too many new trial keys from this network; retry later or send an API key",
                )
            },
            ProxyError::TrialUnavailable => S {
                headers: ExtraHeaders { retry_after: Some(1), ..ExtraHeaders::default() },
                ..S::server(C::SERVICE_UNAVAILABLE, "trial_unavailable", "Could not issue a trial key; retry shortly")
            },
            ProxyError::CountersUnavailable(seconds) => S {
                headers: ExtraHeaders { retry_after: Some(*seconds), ..ExtraHeaders::default() },
                refusal: Some("counters_unavailable"),
                ..S::server(
                    C::SERVICE_UNAVAILABLE,
                    "counters_unavailable",
                    "The usage counters are unavailable; retry shortly",
                )
            },
        }
    }

    /// A refusal of the limits: 429 for a limit, 503 when the shared counters could not answer.
    pub fn limited(refusal: Refusal) -> ProxyError {
        match refusal.limit {
            LimitKind::CountersUnavailable => ProxyError::CountersUnavailable(refusal.retry_after_secs),
            _ => ProxyError::RateLimited(refusal),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.spec().status
    }

    pub fn message(&self) -> &str {
        self.spec().message
    }

    pub fn log_level(&self) -> LogLevel {
        self.spec().level
    }

    /// A short bounded label for logs.
    pub fn label(&self) -> &'static str {
        self.spec().label
    }

    pub fn parts(&self) -> ErrorParts<'_> {
        self.spec().parts()
    }
}

impl<'a> ErrorSpec<'a> {
    /// What a provider's error shape needs.
    pub fn parts(self) -> ErrorParts<'a> {
        ErrorParts {
            status: self.status.as_u16(),
            message: self.message,
            openai_type: self.openai_type,
            openai_code: Some(self.openai_code),
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
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
            }
        }
        const VARIANTS: usize = 35;
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
            (
                LimitKind::EndUserRequestsPerMinute,
                "requests per minute for this end user",
                "rate_limit_exceeded",
                false,
            ),
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
        assert!(one_of_each().iter().filter(|e| e.spec().refusal.is_some()).count() == 4);
        let unavailable = ProxyError::limited(refusal(LimitKind::CountersUnavailable, 1));
        assert_eq!(
            (unavailable.status(), unavailable.spec().refusal),
            (StatusCode::SERVICE_UNAVAILABLE, Some("counters_unavailable"))
        );
        assert_eq!(ProxyError::limited(refusal(LimitKind::KeyTokens, 1)).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(ProxyError::TrialIssuanceLimited(5).spec().refusal, Some("trial_issuance"));
    }
}

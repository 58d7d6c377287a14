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
    /// The store has not answered for longer than `store.max_staleness` and `store.on_stale` is
    /// `refuse`: a key revoked meanwhile could still be in memory, so no key is trusted (503).
    StoreStale,
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
            ProxyError::StoreStale => S {
                headers: ExtraHeaders { retry_after: Some(1), ..ExtraHeaders::default() },
                refusal: Some("store_stale"),
                ..S::server(
                    C::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "The key store is unreachable, so keys cannot be checked; retry shortly",
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
mod tests;

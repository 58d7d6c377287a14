//! Every error tollgate itself produces: its status, message, OpenAI type/code and log level, mapped
//! exhaustively (no catch-all arm, so a new variant must be placed). Bodies are shaped by the route's
//! provider in `providers`; upstream errors never come through here, they pass through unchanged.

use http::StatusCode;

use crate::metering::limits::LimitKind;
use crate::providers::ErrorParts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    NotFound,
    MethodNotAllowed(http::Method),
    HeadersTooLarge,
    MissingServiceKey,
    InvalidServiceKey,
    ExpiredServiceKey,
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
    /// A limit of the key or its account (§3): 429 with its retry time.
    RateLimited(crate::metering::limits::Refusal),
    UpstreamUnreachable,
    UpstreamRedirect,
    /// The upstream connection failed after it was made (reset, protocol error, cut mid-body).
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamEventTooLarge,
}

/// The level of a request's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Routine, including the caller's own mistakes.
    Info,
    /// Upstream or capacity trouble worth an operator's attention.
    Warn,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::MissingServiceKey | ProxyError::InvalidServiceKey | ProxyError::ExpiredServiceKey => {
                StatusCode::UNAUTHORIZED
            }
            ProxyError::MissingProviderKey
            | ProxyError::InvalidProviderKey
            | ProxyError::InvalidJson(_)
            | ProxyError::ModelNameTooLong
            | ProxyError::BodyUnreadable => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamRedirect
            | ProxyError::UpstreamFailed
            | ProxyError::UpstreamEventTooLarge => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ProxyError::NotFound => "Unknown route: this path is not one tollgate forwards",
            ProxyError::MethodNotAllowed(_) => "Method not allowed on this route",
            ProxyError::HeadersTooLarge => "Request headers too large",
            ProxyError::MissingServiceKey => "Missing API key",
            ProxyError::InvalidServiceKey => "Invalid API key",
            ProxyError::ExpiredServiceKey => "API key expired",
            ProxyError::MissingProviderKey => "Missing X-Provider-Key header",
            ProxyError::InvalidProviderKey => "Invalid X-Provider-Key header",
            ProxyError::BodyTooLarge => "Request body too large",
            ProxyError::BodyTimeout => "Timed out reading the request body",
            ProxyError::BodyUnreadable => "Failed to read the request body",
            ProxyError::InvalidJson(why) => why,
            ProxyError::ModelNameTooLong => "Model name too long (at most 256 bytes)",
            ProxyError::Forbidden(why) => why,
            ProxyError::Overloaded => "tollgate is overloaded; retry shortly",
            ProxyError::RateLimited(refusal) => match refusal.limit {
                LimitKind::RequestsPerMinute => "rate limit exceeded: requests per minute for this key",
                LimitKind::RequestsPerDay => "rate limit exceeded: requests per day for this key",
                LimitKind::Concurrency => "rate limit exceeded: concurrent requests for this key",
                LimitKind::KeyTokens => "token quota exceeded: this key's monthly token quota",
                LimitKind::AccountTokens => "token quota exceeded: the account's monthly token quota",
            },
            ProxyError::UpstreamUnreachable => "Upstream provider unreachable",
            ProxyError::UpstreamRedirect => {
                "Upstream provider answered with a redirect, which tollgate does not follow"
            }
            ProxyError::UpstreamFailed => "Upstream provider connection failed",
            ProxyError::UpstreamTimeout => "Upstream provider timed out",
            ProxyError::UpstreamEventTooLarge => "Upstream stream event exceeded the size limit",
        }
    }

    fn openai_type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ProxyError::NotFound => ("invalid_request_error", Some("unknown_url")),
            ProxyError::MethodNotAllowed(_) => ("invalid_request_error", Some("method_not_allowed")),
            ProxyError::HeadersTooLarge => ("invalid_request_error", Some("headers_too_large")),
            ProxyError::MissingServiceKey => ("invalid_request_error", Some("missing_api_key")),
            ProxyError::InvalidServiceKey => ("invalid_request_error", Some("invalid_api_key")),
            ProxyError::ExpiredServiceKey => ("invalid_request_error", Some("expired_api_key")),
            ProxyError::MissingProviderKey => ("invalid_request_error", Some("missing_provider_key")),
            ProxyError::InvalidProviderKey => ("invalid_request_error", Some("invalid_provider_key")),
            ProxyError::BodyTooLarge => ("invalid_request_error", Some("request_too_large")),
            ProxyError::BodyTimeout => ("invalid_request_error", Some("request_timeout")),
            ProxyError::BodyUnreadable => ("invalid_request_error", Some("body_unreadable")),
            ProxyError::InvalidJson(_) => ("invalid_request_error", Some("invalid_json")),
            ProxyError::ModelNameTooLong => ("invalid_request_error", Some("model_name_too_long")),
            ProxyError::Forbidden(_) => ("permission_error", Some("permission_denied")),
            ProxyError::Overloaded => ("server_error", Some("overloaded")),
            ProxyError::RateLimited(refusal) if refusal.limit.is_tokens() => {
                ("insufficient_quota", Some("insufficient_quota"))
            }
            ProxyError::RateLimited(_) => ("requests", Some("rate_limit_exceeded")),
            ProxyError::UpstreamUnreachable => ("server_error", Some("upstream_unreachable")),
            ProxyError::UpstreamRedirect => ("server_error", Some("upstream_redirect")),
            ProxyError::UpstreamFailed => ("server_error", Some("upstream_failed")),
            ProxyError::UpstreamTimeout => ("server_error", Some("upstream_timeout")),
            ProxyError::UpstreamEventTooLarge => ("server_error", Some("upstream_event_too_large")),
        }
    }

    pub fn log_level(&self) -> LogLevel {
        match self {
            ProxyError::NotFound
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::HeadersTooLarge
            | ProxyError::MissingServiceKey
            | ProxyError::InvalidServiceKey
            | ProxyError::ExpiredServiceKey
            | ProxyError::MissingProviderKey
            | ProxyError::InvalidProviderKey
            | ProxyError::BodyTooLarge
            | ProxyError::BodyTimeout
            | ProxyError::BodyUnreadable
            | ProxyError::InvalidJson(_)
            | ProxyError::ModelNameTooLong
            | ProxyError::RateLimited(_)
            | ProxyError::Forbidden(_) => LogLevel::Info,
            ProxyError::Overloaded
            | ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamRedirect
            | ProxyError::UpstreamFailed
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamEventTooLarge => LogLevel::Warn,
        }
    }

    /// A short bounded label for logs.
    pub fn label(&self) -> &'static str {
        self.openai_type_and_code().1.unwrap_or("error")
    }

    pub fn parts(&self) -> ErrorParts<'_> {
        let (openai_type, openai_code) = self.openai_type_and_code();
        ErrorParts { status: self.status().as_u16(), message: self.message(), openai_type, openai_code }
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

    /// The §4 table, pinned.
    #[test]
    fn statuses_and_messages_follow_the_design_table() {
        let table = [
            (ProxyError::MissingServiceKey, 401, "Missing API key"),
            (ProxyError::InvalidServiceKey, 401, "Invalid API key"),
            (ProxyError::ExpiredServiceKey, 401, "API key expired"),
            (ProxyError::MissingProviderKey, 400, "Missing X-Provider-Key header"),
            (ProxyError::InvalidProviderKey, 400, "Invalid X-Provider-Key header"),
            (ProxyError::UpstreamUnreachable, 502, "Upstream provider unreachable"),
            (
                ProxyError::UpstreamRedirect,
                502,
                "Upstream provider answered with a redirect, which tollgate does not follow",
            ),
            (ProxyError::UpstreamTimeout, 504, "Upstream provider timed out"),
            (ProxyError::Overloaded, 503, "tollgate is overloaded; retry shortly"),
            (ProxyError::BodyTooLarge, 413, "Request body too large"),
            (ProxyError::HeadersTooLarge, 431, "Request headers too large"),
        ];
        for (e, status, message) in table {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.message(), message);
        }
    }
}

//! Anthropic: `/v1/messages` (+ `count_tokens`, models), `x-api-key` with a default `anthropic-version`,
//! and the `{"type": "error", "error": {type, message}}` shape (in-stream as `event: error`).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

use super::key::ProviderKey;
use super::{Endpoint, ErrorParts, is_model_id, sensitive, sse_event};
use crate::config::ProviderConfig;

pub(super) fn endpoint(segments: &[&str]) -> Option<Endpoint> {
    match segments {
        ["v1", "messages"] => Some(Endpoint::Messages),
        ["v1", "messages", "count_tokens"] => Some(Endpoint::CountTokens),
        ["v1", "models"] => Some(Endpoint::ListModels),
        ["v1", "models", id] if is_model_id(id, false) => Some(Endpoint::GetModel),
        _ => None,
    }
}

pub(super) fn set_credential(provider: &ProviderConfig, key: &ProviderKey, headers: &mut HeaderMap) {
    headers.insert(HeaderName::from_static("x-api-key"), sensitive(key.header_value()));
    let version = HeaderName::from_static("anthropic-version");
    if !headers.contains_key(&version) {
        // Validated at config load as [A-Za-z0-9-]+.
        if let Ok(v) = HeaderValue::from_str(&provider.anthropic_version) {
            headers.insert(version, v);
        }
    }
}

fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

pub(super) fn error_json(e: ErrorParts<'_>) -> serde_json::Value {
    json!({"type": "error", "error": {"type": error_type(e.status), "message": e.message}})
}

pub(super) fn stream_error_event(e: ErrorParts<'_>) -> Vec<u8> {
    sse_event(Some("error"), &error_json(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(endpoint(&["v1", "messages"]), Some(Endpoint::Messages));
        assert_eq!(endpoint(&["v1", "messages", "count_tokens"]), Some(Endpoint::CountTokens));
        assert_eq!(endpoint(&["v1", "messages", "batches"]), None);
    }

    #[test]
    fn error_shape() {
        let e = ErrorParts { status: 429, message: "rate limit exceeded", openai_type: "x", openai_code: None };
        let v = error_json(e);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let ev = String::from_utf8(stream_error_event(e)).unwrap();
        assert!(ev.starts_with("event: error\ndata: {"), "{ev}");
    }
}

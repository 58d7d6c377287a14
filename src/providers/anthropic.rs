//! Anthropic: `/v1/messages` (+ `count_tokens`, models), `x-api-key` with a default `anthropic-version`,
//! and the `{"type": "error", "error": {type, message}}` shape (in-stream as `event: error`). Usage is
//! cumulative: `message_start` gives input, each `message_delta` the output so far.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::key::ProviderKey;
use super::{
    BodyMember, Endpoint, EndpointSpec, ErrorParts, Meter, ModelAt, ProviderConfig, Usage, is_model_id, sensitive,
    sse_event,
};

/// Every endpoint Anthropic serves: how it is charged, where its model is named, and which body members
/// bound its output. No arm covers "the rest", so a new endpoint does not compile until it is placed.
pub(super) fn spec(endpoint: Endpoint) -> Option<EndpointSpec> {
    Some(match endpoint {
        // The API requires `max_tokens`, so a key's cap is never written: a request without it is refused.
        Endpoint::Messages => EndpointSpec::tokens(Meter::Anthropic, &[BodyMember::MaxTokens], &[]),
        Endpoint::CountTokens => EndpointSpec::free(ModelAt::Body),
        Endpoint::ListModels => EndpointSpec::free(ModelAt::Nowhere),
        Endpoint::GetModel => EndpointSpec::free(ModelAt::Path),
        Endpoint::ChatCompletions
        | Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::Responses
        | Endpoint::GenerateContent
        | Endpoint::StreamGenerateContent
        | Endpoint::EmbedContent => return None,
    })
}

/// The endpoint a path (after the base) names; each endpoint's method is its own ([`Endpoint::method`]).
pub(super) fn endpoint(segments: &[&str]) -> Option<Endpoint> {
    match segments {
        ["v1", "messages"] => Some(Endpoint::Messages),
        ["v1", "messages", "count_tokens"] => Some(Endpoint::CountTokens),
        ["v1", "models"] => Some(Endpoint::ListModels),
        ["v1", "models", id] if is_model_id(id, false) => Some(Endpoint::GetModel),
        _ => None,
    }
}

/// Whether a path without a provider prefix is meant for Anthropic: anything under `/v1/messages`.
pub(super) fn claims_top_level(segments: &[&str]) -> bool {
    matches!(segments, ["v1", "messages", ..])
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

/// The top-level member holding usage in a message body or a `message_delta` event.
pub(super) const USAGE_KEY: &[u8] = b"usage";

#[derive(Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Fields are cumulative: each present one replaces the last; input includes both cache counts.
    fn merge_into(&self, seen: &mut Option<Usage>) {
        let mut parts = seen.map(|u| (u.input, u.output)).unwrap_or_default();
        let cached = |v: Option<u64>| v.unwrap_or(0);
        if self.input_tokens.is_some()
            || self.cache_creation_input_tokens.is_some()
            || self.cache_read_input_tokens.is_some()
        {
            parts.0 = cached(self.input_tokens)
                .saturating_add(cached(self.cache_creation_input_tokens))
                .saturating_add(cached(self.cache_read_input_tokens));
        }
        if let Some(out) = self.output_tokens {
            parts.1 = out;
        }
        *seen = Some(Usage { input: parts.0, output: parts.1 });
    }
}

pub(super) fn read_usage(value: &[u8], seen: &mut Option<Usage>) {
    if let Ok(Some(u)) = serde_json::from_slice::<Option<AnthropicUsage>>(value) {
        u.merge_into(seen);
    }
}

/// `message_start` carries usage in its `message`, `message_delta` at the top; the figure is final
/// from the first `message_delta` on (later ones only repeat or raise it).
pub(super) fn read_event(name: Option<&[u8]>, data: &[u8], seen: &mut Option<Usage>) -> bool {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        message: Option<Message>,
        usage: Option<AnthropicUsage>,
    }
    #[derive(Deserialize)]
    struct Message {
        usage: Option<AnthropicUsage>,
    }
    let Ok(e) = serde_json::from_slice::<Event>(data) else {
        return false;
    };
    if let Some(u) = e.usage.or(e.message.and_then(|m| m.usage)) {
        u.merge_into(seen);
    }
    e.kind == "message_delta" || name == Some(&b"message_delta"[..])
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

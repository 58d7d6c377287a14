//! OpenAI and every OpenAI-compatible provider: `/v1/...` routes, `Authorization: Bearer`, and the
//! `{"error": {message, type, param, code}}` shape (in-stream as a `data:` event with a top-level `error`,
//! or an `event: error` on the Responses API, which has no `[DONE]`). Usage comes as
//! `prompt_tokens`/`completion_tokens`, or `input_tokens`/`output_tokens` on the Responses API.

use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::json;

use super::key::ProviderKey;
use super::{BodyMember, Endpoint, EndpointSpec, ErrorParts, Meter, ModelAt, Usage, is_model_id, sensitive, sse_event};

/// Every endpoint OpenAI serves: how it is charged, where its model is named, and which body members
/// bound its output. No arm covers "the rest", so a new endpoint does not compile until it is placed.
pub(super) fn spec(endpoint: Endpoint) -> Option<EndpointSpec> {
    use BodyMember::{BestOf, MaxCompletionTokens, MaxOutputTokens, MaxTokens, N};
    Some(match endpoint {
        // `max_tokens` is the older spelling, still read by OpenAI's non-reasoning models and by
        // OpenAI-compatible servers. Both are read and the larger counts, so neither slips past a cap. A cap
        // is written as `max_completion_tokens`: OpenAI reads it for every chat model and refuses
        // `max_tokens` for its reasoning models. OpenAI-compatible servers that follow the current API read
        // it too; one that knows only `max_tokens` and ignores unknown members is not bounded by it.
        Endpoint::ChatCompletions => {
            EndpointSpec::tokens(Meter::OpenAiCompletion, &[MaxCompletionTokens, MaxTokens], &[N])
                .writes_cap(MaxCompletionTokens)
        }
        // `best_of` completions are generated upstream and billed, though only `n` are returned.
        Endpoint::Completions => {
            EndpointSpec::tokens(Meter::OpenAiCompletion, &[MaxTokens], &[N, BestOf]).writes_cap(MaxTokens)
        }
        // Embeddings produce no output to cap: they are charged their input.
        Endpoint::Embeddings => EndpointSpec::tokens(Meter::OpenAiEmbeddings, &[], &[]),
        Endpoint::Responses => {
            EndpointSpec::tokens(Meter::OpenAiResponses, &[MaxOutputTokens], &[]).writes_cap(MaxOutputTokens)
        }
        Endpoint::ListModels => EndpointSpec::free(ModelAt::Nowhere),
        Endpoint::GetModel => EndpointSpec::free(ModelAt::Path),
        Endpoint::Messages
        | Endpoint::CountTokens
        | Endpoint::GenerateContent
        | Endpoint::StreamGenerateContent
        | Endpoint::EmbedContent => return None,
    })
}

/// The endpoint a path (after the base) names; each endpoint's method is its own ([`Endpoint::method`]).
pub(super) fn endpoint(segments: &[&str]) -> Option<Endpoint> {
    match segments {
        ["v1", "chat", "completions"] => Some(Endpoint::ChatCompletions),
        ["v1", "completions"] => Some(Endpoint::Completions),
        ["v1", "embeddings"] => Some(Endpoint::Embeddings),
        ["v1", "responses"] => Some(Endpoint::Responses),
        ["v1", "models"] => Some(Endpoint::ListModels),
        ["v1", "models", id] if is_model_id(id, true) => Some(Endpoint::GetModel),
        _ => None,
    }
}

pub(super) fn set_credential(key: &ProviderKey, headers: &mut HeaderMap) {
    let mut value = Vec::with_capacity(7 + key.as_bytes().len());
    value.extend_from_slice(b"Bearer ");
    value.extend_from_slice(key.as_bytes());
    // The key's bytes were validated as visible ASCII, so this cannot fail.
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        headers.insert(header::AUTHORIZATION, sensitive(v));
    }
}

pub(super) fn error_json(e: ErrorParts<'_>) -> serde_json::Value {
    json!({"error": {"message": e.message, "type": e.openai_type, "param": null, "code": e.openai_code}})
}

pub(super) fn stream_error_event(endpoint: Endpoint, e: ErrorParts<'_>) -> Vec<u8> {
    if endpoint == Endpoint::Responses {
        let data =
            json!({"type": "error", "code": e.openai_code, "message": e.message, "param": null, "sequence_number": 0});
        return sse_event(Some("error"), &data);
    }
    sse_event(None, &error_json(e))
}

/// The top-level member holding usage in a body or a chunk.
pub(super) const USAGE_KEY: &[u8] = b"usage";

/// The list that is empty (or, from some compatible servers, absent) in the chunk a stream sends only
/// to carry the usage asked for with `stream_options.include_usage`.
pub const CHOICES_KEY: &[u8] = b"choices";

#[derive(Deserialize)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

/// Chat, completions and embeddings: the whole figure replaces what was seen.
pub(super) fn read_completion_usage(value: &[u8], seen: &mut Option<Usage>) {
    if let Ok(Some(u)) = serde_json::from_slice::<Option<CompletionUsage>>(value) {
        *seen = Some(Usage { input: u.prompt_tokens, output: u.completion_tokens });
    }
}

pub(super) fn read_responses_usage(value: &[u8], seen: &mut Option<Usage>) {
    if let Ok(Some(u)) = serde_json::from_slice::<Option<ResponsesUsage>>(value) {
        *seen = Some(Usage { input: u.input_tokens, output: u.output_tokens });
    }
}

/// A Responses stream reports usage in its terminal event only (earlier events carry a running
/// `response` with a partial usage); true when one was read.
pub(super) fn read_responses_event(data: &[u8], seen: &mut Option<Usage>) -> bool {
    #[derive(Deserialize)]
    struct Terminal {
        #[serde(rename = "type")]
        kind: String,
        response: Option<ResponseBody>,
    }
    #[derive(Deserialize)]
    struct ResponseBody {
        usage: Option<serde_json::Value>,
    }
    if let Ok(t) = serde_json::from_slice::<Terminal>(data)
        && matches!(t.kind.as_str(), "response.completed" | "response.incomplete" | "response.failed")
        && let Some(usage) = t.response.and_then(|r| r.usage)
    {
        read_responses_usage(usage.to_string().as_bytes(), seen);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(endpoint(&["v1", "chat", "completions"]), Some(Endpoint::ChatCompletions));
        assert_eq!(endpoint(&["v1", "models", "ft:gpt-4o:acme::x1"]), Some(Endpoint::GetModel));
        for bad in
            [&["v1", "chat"][..], &["v1", "chat", "completions", ""], &["v1", "models", ".."], &["v2", "embeddings"]]
        {
            assert_eq!(endpoint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn error_shape() {
        let e = ErrorParts {
            status: 401,
            message: "Invalid API key",
            openai_type: "invalid_request_error",
            openai_code: Some("invalid_api_key"),
        };
        let v = error_json(e);
        assert_eq!(v["error"]["message"], "Invalid API key");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["param"].is_null());
        let ev = String::from_utf8(stream_error_event(Endpoint::ChatCompletions, e)).unwrap();
        assert!(ev.starts_with("data: {\"error\":") && ev.ends_with("\n\n"), "{ev}");
        let ev = String::from_utf8(stream_error_event(Endpoint::Responses, e)).unwrap();
        assert!(ev.starts_with("event: error\ndata: {"), "{ev}");
    }
}

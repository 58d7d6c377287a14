//! Gemini (Generative Language API): `/{v1beta|v1}/models/{model}:{method}` routes, the key as `?key=`
//! (or `x-goog-api-key` with `auth = "header"`), and the `{"error": {code, message, status}}` shape.
//! The model is named in the path, streaming is a method of its own, and usage is a running
//! `usageMetadata` on every chunk.

use http::{HeaderMap, HeaderName, Method};
use serde::Deserialize;
use serde_json::json;

use super::key::ProviderKey;
use super::{
    BodyMember, Endpoint, EndpointSpec, ErrorParts, GeminiAuth, Meter, ModelAt, ProviderConfig, Usage, is_model_id,
    sensitive, sse_event,
};

/// Every endpoint Gemini serves: how it is charged, where its model is named, and which body members
/// bound its output. No arm covers "the rest", so a new endpoint does not compile until it is placed.
pub(super) fn spec(endpoint: Endpoint) -> Option<EndpointSpec> {
    use BodyMember::{GenerationCandidateCount, GenerationMaxOutputTokens};
    let generate = EndpointSpec::tokens(Meter::Gemini, &[GenerationMaxOutputTokens], &[GenerationCandidateCount])
        .writes_cap(GenerationMaxOutputTokens);
    Some(match endpoint {
        Endpoint::GenerateContent => generate.model_in_path(),
        Endpoint::StreamGenerateContent => generate.model_in_path().always_streams(),
        // Embeddings produce no output to cap: they are charged their input.
        Endpoint::EmbedContent => EndpointSpec::tokens(Meter::Gemini, &[], &[]).model_in_path(),
        Endpoint::CountTokens => EndpointSpec::free(ModelAt::Path),
        Endpoint::ListModels => EndpointSpec::free(ModelAt::Nowhere),
        Endpoint::GetModel => EndpointSpec::free(ModelAt::Path),
        Endpoint::ChatCompletions
        | Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::Responses
        | Endpoint::Messages => return None,
    })
}

/// The endpoint a path (after the base) names; each endpoint's method is its own ([`Endpoint::method`]).
pub(super) fn endpoint(segments: &[&str]) -> Option<Endpoint> {
    let (version, rest) = segments.split_first()?;
    if !matches!(*version, "v1beta" | "v1") {
        return None;
    }
    match rest {
        ["models"] => Some(Endpoint::ListModels),
        ["models", target] => {
            let Some((model, method)) = target.rsplit_once(':') else {
                return is_model_id(target, false).then_some(Endpoint::GetModel);
            };
            if !is_model_id(model, false) {
                return None;
            }
            match method {
                "generateContent" => Some(Endpoint::GenerateContent),
                "streamGenerateContent" => Some(Endpoint::StreamGenerateContent),
                "countTokens" => Some(Endpoint::CountTokens),
                "embedContent" => Some(Endpoint::EmbedContent),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a path without a provider prefix is meant for Gemini: anything under `/v1beta`, and a
/// `POST /v1/models/{model}:{method}` (not OpenAI's `GET /v1/models/{id}`, whose ids may hold `:` too).
pub(super) fn claims_top_level(method: &Method, segments: &[&str]) -> bool {
    matches!(segments, ["v1beta", ..]) || (*method == Method::POST && claims_v1_path(segments))
}

/// Whether a top-level `/v1/models/...` path belongs to Gemini (a `model:method` target) rather than
/// OpenAI's `GET /v1/models/{id}`.
fn claims_v1_path(segments: &[&str]) -> bool {
    matches!(segments, ["v1", "models", target] if target.contains(':') && endpoint(segments).is_some_and(|e| e != Endpoint::GetModel))
}

pub(super) fn set_credential(
    provider: &ProviderConfig,
    key: &ProviderKey,
    headers: &mut HeaderMap,
    query: &mut String,
) {
    match provider.gemini_auth {
        GeminiAuth::Header => {
            headers.insert(HeaderName::from_static("x-goog-api-key"), sensitive(key.header_value()));
        }
        GeminiAuth::Query => {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("key=");
            // Validated to contain no `&`, `#`, `%`, `?`, `/`, space or control character.
            query.push_str(key.as_str());
        }
    }
}

fn status_name(status: u16) -> &'static str {
    match status {
        400 | 413 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

pub(super) fn error_json(e: ErrorParts<'_>) -> serde_json::Value {
    json!({"error": {"code": e.status, "message": e.message, "status": status_name(e.status)}})
}

pub(super) fn stream_error_event(e: ErrorParts<'_>) -> Vec<u8> {
    sse_event(None, &error_json(e))
}

/// The top-level member holding usage in a body or a chunk.
pub(super) const USAGE_KEY: &[u8] = b"usageMetadata";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

/// Input is the prompt and tool-use prompt; output the candidates and thoughts.
pub(super) fn read_usage(value: &[u8], seen: &mut Option<Usage>) {
    if let Ok(Some(u)) = serde_json::from_slice::<Option<GeminiUsage>>(value) {
        let now = Usage {
            input: u.prompt_token_count.saturating_add(u.tool_use_prompt_token_count),
            output: u.candidates_token_count.saturating_add(u.thoughts_token_count),
        };
        // A chunk may carry a partial block; never let it lower what was already seen.
        let before = seen.unwrap_or_default();
        *seen = Some(Usage { input: now.input.max(before.input), output: now.output.max(before.output) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |s: &[&str]| endpoint(s);
        assert_eq!(r(&["v1beta", "models", "gemini-2.5-flash:generateContent"]), Some(Endpoint::GenerateContent));
        assert_eq!(
            r(&["v1", "models", "gemini-2.5-flash:streamGenerateContent"]),
            Some(Endpoint::StreamGenerateContent)
        );
        assert_eq!(r(&["v1beta", "models", "m:countTokens"]), Some(Endpoint::CountTokens));
        assert_eq!(r(&["v1beta", "models", "m:embedContent"]), Some(Endpoint::EmbedContent));
        assert_eq!(r(&["v1beta", "models"]), Some(Endpoint::ListModels));
        assert_eq!(r(&["v1beta", "models", "gemini-pro"]), Some(Endpoint::GetModel));
        for bad in [
            &["v1beta", "models", "..:generateContent"][..],
            &["v1beta", "models", "m:deleteEverything"],
            &["v2", "models", "m:generateContent"],
            &["v1beta", "models", "a:b:generateContent"],
            &["v1beta", "tunedModels", "m:generateContent"],
        ] {
            assert_eq!(r(bad), None, "{bad:?}");
        }
        assert!(claims_v1_path(&["v1", "models", "gemini-2.5-flash:generateContent"]));
        assert!(!claims_v1_path(&["v1", "models", "ft:gpt-4o:acme::x1"]));
        assert!(!claims_v1_path(&["v1", "models", "gpt-4o"]));
    }

    #[test]
    fn error_shape() {
        let e = ErrorParts { status: 401, message: "Missing API key", openai_type: "x", openai_code: None };
        let v = error_json(e);
        assert_eq!(v["error"]["code"], 401);
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    }
}

//! Gemini (Generative Language API): `/{v1beta|v1}/models/{model}:{method}` routes, the key as `?key=`
//! (or `x-goog-api-key` with `auth = "header"`), and the `{"error": {code, message, status}}` shape.

use http::{HeaderMap, HeaderName};
use serde_json::json;

use super::key::ProviderKey;
use super::{Endpoint, ErrorParts, is_model_id, sensitive, sse_event};
use crate::config::{GeminiAuth, ProviderConfig};

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

/// Whether a top-level `/v1/models/...` path belongs to Gemini (a `model:method` target) rather than
/// OpenAI's `GET /v1/models/{id}`.
pub fn claims_v1_path(segments: &[&str]) -> bool {
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

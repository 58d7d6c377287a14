//! OpenAI and every OpenAI-compatible provider: `/v1/...` routes, `Authorization: Bearer`, and the
//! `{"error": {message, type, param, code}}` shape (in-stream as a `data:` event with a top-level `error`,
//! or an `event: error` on the Responses API, which has no `[DONE]`).

use http::{HeaderMap, HeaderValue, header};
use serde_json::json;

use super::key::ProviderKey;
use super::{Endpoint, ErrorParts, is_model_id, sensitive, sse_event};

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

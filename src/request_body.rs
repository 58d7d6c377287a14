//! What tollgate reads from a request body, and the one change it may make to it. Only the fields that
//! matter are deserialized (`stream`, `model`, the output limits, `stream_options`); everything else is
//! skipped unparsed, and the body goes upstream as the caller sent it unless usage must be requested.

use bytes::Bytes;
use serde::Deserialize;

use crate::error::ProxyError;
use crate::providers::Endpoint;

/// What tollgate reads from a request body; every other field is skipped unparsed.
#[derive(Debug, Default, Deserialize)]
struct RequestFacts<'a> {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default, rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, Deserialize)]
struct GenerationConfig {
    #[serde(default, rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
    #[serde(default, rename = "candidateCount")]
    candidate_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// What the pipeline needs from a request body.
#[derive(Debug, Default)]
pub struct Inspected {
    pub stream: bool,
    pub model: Option<String>,
    /// The most output the request may produce, if it says (already times the number of choices).
    pub output_cap: Option<u64>,
    pub has_stream_options: bool,
    pub include_usage: Option<bool>,
}

/// Phase: the body is a JSON object (the upstream never sees malformed JSON); what it asks for.
pub fn inspect_body(endpoint: Endpoint, body: &[u8]) -> Result<Inspected, ProxyError> {
    // serde would also read a struct from an array; only an object is a request.
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        return Err(ProxyError::InvalidJson("Request body must be a JSON object".to_owned()));
    }
    let facts: RequestFacts = serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote a value from the body; only its position is echoed.
        let what = match e.classify() {
            serde_json::error::Category::Data => {
                "has a field of the wrong type (`stream` must be a boolean, token limits and `n` integers)"
            }
            _ => "is not valid JSON",
        };
        ProxyError::InvalidJson(format!("Request body {what} (line {}, column {})", e.line(), e.column()))
    })?;
    let choices = facts.n.unwrap_or(1).max(1);
    let output_cap = match endpoint {
        Endpoint::Responses => facts.max_output_tokens,
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => facts
            .generation_config
            .as_ref()
            .and_then(|g| g.max_output_tokens.map(|m| m * g.candidate_count.unwrap_or(1).max(1))),
        _ => facts.max_completion_tokens.or(facts.max_tokens).map(|m| m.saturating_mul(choices)),
    };
    Ok(Inspected {
        stream: match endpoint {
            Endpoint::StreamGenerateContent => true,
            _ => facts.stream == Some(true),
        },
        model: facts.model.map(|m| m.into_owned()),
        output_cap,
        has_stream_options: facts.stream_options.is_some(),
        include_usage: facts.stream_options.and_then(|o| o.include_usage),
    })
}

/// Sets `stream_options.include_usage` so an OpenAI stream reports its usage. Without a
/// `stream_options` member the option is written in after the opening brace, leaving every other byte
/// as the caller sent it; otherwise the body is rewritten.
pub fn with_stream_usage(body: Bytes, has_stream_options: bool) -> Result<Bytes, ProxyError> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true}"#;
    if !has_stream_options {
        let open = body.iter().position(|&b| b == b'{').unwrap_or(0);
        let empty = body[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
        let mut out = Vec::with_capacity(body.len() + MEMBER.len() + 1);
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(MEMBER);
        if !empty {
            out.push(b',');
        }
        out.extend_from_slice(&body[open + 1..]);
        return Ok(Bytes::from(out));
    }
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| ProxyError::InvalidJson("Request body is not valid JSON".to_owned()))?;
    value["stream_options"]["include_usage"] = serde_json::Value::Bool(true);
    Ok(Bytes::from(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_must_be_json_objects_and_errors_do_not_quote_them() {
        assert!(inspect_body(Endpoint::ChatCompletions, br#"{"model":"m","stream":true}"#).unwrap().stream);
        assert!(!inspect_body(Endpoint::ChatCompletions, br#"{"model":"m"}"#).unwrap().stream);
        assert!(inspect_body(Endpoint::StreamGenerateContent, b"{}").unwrap().stream);
        for bad in [&b""[..], b"{", b"[]", b"null", b"{\"stream\":\"sk-canary\"}", b"{} x"] {
            let e = inspect_body(Endpoint::ChatCompletions, bad).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(!e.message().contains("canary"), "{e}");
        }
    }

    #[test]
    fn output_caps_follow_each_api() {
        let cap = |e, b: &[u8]| inspect_body(e, b).unwrap().output_cap;
        assert_eq!(cap(Endpoint::ChatCompletions, br#"{"max_tokens":100,"n":3}"#), Some(300));
        assert_eq!(cap(Endpoint::ChatCompletions, br#"{"max_tokens":100,"max_completion_tokens":40}"#), Some(40));
        assert_eq!(cap(Endpoint::Responses, br#"{"max_output_tokens":70,"max_tokens":1}"#), Some(70));
        assert_eq!(cap(Endpoint::Messages, br#"{"max_tokens":64}"#), Some(64));
        assert_eq!(
            cap(Endpoint::GenerateContent, br#"{"generationConfig":{"maxOutputTokens":50,"candidateCount":2}}"#),
            Some(100)
        );
        assert_eq!(cap(Endpoint::ChatCompletions, b"{}"), None);
    }

    #[test]
    fn usage_is_requested_without_touching_the_rest() {
        let body = Bytes::from_static(br#"{"model":"m","stream":true}"#);
        assert_eq!(
            with_stream_usage(body, false).unwrap(),
            Bytes::from_static(br#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#)
        );
        assert_eq!(
            with_stream_usage(Bytes::from_static(b" { } "), false).unwrap(),
            Bytes::from_static(br#" {"stream_options":{"include_usage":true} } "#)
        );
        let asked_not =
            Bytes::from_static(br#"{"stream_options":{"include_usage":false,"include_obfuscation":false}}"#);
        let v: serde_json::Value = serde_json::from_slice(&with_stream_usage(asked_not, true).unwrap()).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true, "include_obfuscation": false}));
    }
}

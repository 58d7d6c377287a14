//! The provider shapes: a path and body of each, how a tollgate error looks in each, and the canned JSON
//! and SSE answers the mock upstream gives.

use super::clients::Reply;

pub const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from mock"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
pub const OPENAI_SSE: &[&str] = &[
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" from\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" mock\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];
pub const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hello from mock"}],"model":"claude-sonnet-4-5","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":3}}"#;
pub const ANTHROPIC_SSE: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" from mock\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];
pub const GEMINI_JSON: &str = r#"{"candidates":[{"content":{"parts":[{"text":"Hello from mock"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#;
pub const GEMINI_SSE: &[&str] = &[
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"totalTokenCount\":5},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" from mock\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":3,\"totalTokenCount\":8},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
];

pub const COMPLETIONS_JSON: &str = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"gpt-3.5-turbo-instruct","choices":[{"text":"Hello from mock","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}"#;
pub const COMPLETIONS_SSE: &[&str] = &[
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\"Hello\",\"index\":0,\"finish_reason\":null}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n",
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\" from mock\",\"index\":0,\"finish_reason\":\"stop\"}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n",
    "data: [DONE]\n\n",
];
pub const EMBEDDINGS_JSON: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,0.3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":7,"total_tokens":7}}"#;
pub const RESPONSES_JSON: &str = r#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hello from mock"}]}],"usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}}"#;
pub const RESPONSES_SSE: &[&str] = &[
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"Hello from mock\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"total_tokens\":48}}}\n\n",
];

/// OpenAI's stream once `stream_options.include_usage` is set: `"usage":null` on every chunk, then a
/// usage-only chunk before `[DONE]`.
pub fn with_usage_chunk(events: &[&str], prompt: u64, completion: u64) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter(|e| !e.starts_with("data: [DONE]"))
        .map(|e| {
            // Drop the object's closing brace, add the member, close it again.
            let open = e.trim_end().strip_suffix('}').unwrap();
            format!("{open},\"usage\":null}}\n\n")
        })
        .collect();
    out.push(format!(
        "data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n\n",
        prompt + completion
    ));
    out.push("data: [DONE]\n\n".to_owned());
    out
}

/// The provider shapes, with a path of each and how to check an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenAi,
    Anthropic,
    Gemini,
}

pub const SHAPES: [Shape; 3] = [Shape::OpenAi, Shape::Anthropic, Shape::Gemini];

impl Shape {
    pub fn path(self) -> &'static str {
        match self {
            Shape::OpenAi => "/v1/chat/completions",
            Shape::Anthropic => "/v1/messages",
            Shape::Gemini => "/v1beta/models/gemini-2.5-flash:generateContent",
        }
    }

    pub fn stream_path(self) -> &'static str {
        match self {
            Shape::Gemini => "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            _ => self.path(),
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Shape::OpenAi => r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            Shape::Anthropic => {
                r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#
            }
            Shape::Gemini => r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
        }
    }

    pub fn stream_body(self) -> &'static str {
        match self {
            Shape::OpenAi => r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            Shape::Anthropic => {
                r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            }
            Shape::Gemini => self.body(),
        }
    }

    /// Asserts `reply` is a tollgate error of `status` in this shape whose message contains `message`.
    pub fn assert_error(self, reply: &Reply, status: u16, message: &str) {
        assert_eq!(reply.status.as_u16(), status, "{self:?}: {}", reply.text());
        assert!(reply.headers.contains_key("x-request-id"), "{self:?}: no x-request-id");
        let v = reply.json();
        let got = match self {
            Shape::OpenAi => {
                let e = &v["error"];
                assert!(e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some(), "{v}");
                e["message"].as_str()
            }
            Shape::Anthropic => {
                assert_eq!(v["type"], "error", "{v}");
                assert!(v["error"]["type"].is_string(), "{v}");
                v["error"]["message"].as_str()
            }
            Shape::Gemini => {
                assert_eq!(v["error"]["code"], status, "{v}");
                assert!(v["error"]["status"].is_string(), "{v}");
                v["error"]["message"].as_str()
            }
        };
        let got = got.unwrap_or_else(|| panic!("{self:?}: no message in {v}"));
        assert!(got.contains(message), "{self:?}: message {got:?} lacks {message:?}");
    }
}

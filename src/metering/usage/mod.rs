//! Token usage as each provider reports it (DESIGN §3.2), read while the response streams past:
//! [`tap::UsageTap`] watches SSE events (and strips the usage chunk tollgate asked OpenAI for on a
//! caller's behalf), [`json_scan::UsageScanner`] finds the usage object of a JSON body without holding
//! the body. [`book::UsageBook`] collects the figures for the store.

pub mod book;
pub mod json_scan;
pub mod members;
pub mod tap;

use serde::Deserialize;

use crate::providers::{Endpoint, ProviderKind};

/// Tokens one request used: input (prompt, including cached and cache-creation tokens) and output
/// (completion, including reasoning or thoughts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

impl Usage {
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// How a route reports usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// OpenAI chat/completions and completions: `usage.prompt_tokens` / `completion_tokens`, in a stream
    /// on the chunk with `"choices": []` (sent only with `stream_options.include_usage`).
    OpenAiCompletion,
    /// OpenAI embeddings: `usage.prompt_tokens`.
    OpenAiEmbeddings,
    /// OpenAI Responses: `usage.input_tokens` / `output_tokens`; in a stream, in the terminal event.
    OpenAiResponses,
    /// Anthropic messages: `message_start.message.usage`, then each cumulative `message_delta.usage`.
    Anthropic,
    /// Gemini: the last `usageMetadata`; output = candidates + thoughts.
    Gemini,
    /// Not metered (models, token counting).
    Free,
}

impl Meter {
    pub fn of(kind: ProviderKind, endpoint: Endpoint) -> Meter {
        match (kind, endpoint) {
            (_, Endpoint::ListModels | Endpoint::GetModel | Endpoint::CountTokens) => Meter::Free,
            (ProviderKind::OpenAi, Endpoint::ChatCompletions | Endpoint::Completions) => Meter::OpenAiCompletion,
            (ProviderKind::OpenAi, Endpoint::Embeddings) => Meter::OpenAiEmbeddings,
            (ProviderKind::OpenAi, Endpoint::Responses) => Meter::OpenAiResponses,
            (ProviderKind::Anthropic, _) => Meter::Anthropic,
            (ProviderKind::Gemini, _) => Meter::Gemini,
            (ProviderKind::OpenAi, _) => Meter::Free,
        }
    }

    /// The top-level key holding usage in a JSON body.
    pub fn json_key(self) -> &'static [u8] {
        match self {
            Meter::Gemini => b"usageMetadata",
            _ => b"usage",
        }
    }

    /// Reads a usage object (the value of [`Meter::json_key`]), merging into `seen` the way the provider
    /// means it: Anthropic's fields overwrite one by one; everything else replaces the whole.
    pub fn read_usage(self, value: &[u8], seen: &mut Option<Usage>) {
        match self {
            Meter::OpenAiCompletion | Meter::OpenAiEmbeddings => {
                if let Ok(Some(u)) = serde_json::from_slice::<Option<OpenAiUsage>>(value) {
                    *seen = Some(Usage { input: u.prompt_tokens, output: u.completion_tokens });
                }
            }
            Meter::OpenAiResponses => {
                if let Ok(Some(u)) = serde_json::from_slice::<Option<ResponsesUsage>>(value) {
                    *seen = Some(Usage { input: u.input_tokens, output: u.output_tokens });
                }
            }
            Meter::Anthropic => {
                if let Ok(Some(u)) = serde_json::from_slice::<Option<AnthropicUsage>>(value) {
                    u.merge_into(seen);
                }
            }
            Meter::Gemini => {
                if let Ok(Some(u)) = serde_json::from_slice::<Option<GeminiUsage>>(value) {
                    // A chunk may carry a partial block; never let it lower what was already seen.
                    let now = u.usage();
                    let before = seen.unwrap_or_default();
                    *seen = Some(Usage { input: now.input.max(before.input), output: now.output.max(before.output) });
                }
            }
            Meter::Free => {}
        }
    }
}

#[derive(Deserialize)]
struct OpenAiUsage {
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

#[derive(Deserialize)]
pub(crate) struct AnthropicUsage {
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

impl GeminiUsage {
    fn usage(&self) -> Usage {
        Usage {
            input: self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count),
            output: self.candidates_token_count.saturating_add(self.thoughts_token_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_is_read_its_own_way() {
        let mut seen = None;
        Meter::OpenAiCompletion.read_usage(br#"{"prompt_tokens":13,"completion_tokens":5,"total_tokens":18,"completion_tokens_details":{"reasoning_tokens":2}}"#, &mut seen);
        assert_eq!(seen, Some(Usage { input: 13, output: 5 }));
        Meter::OpenAiCompletion.read_usage(b"null", &mut seen);
        assert_eq!(seen, Some(Usage { input: 13, output: 5 }), "a null usage changes nothing");

        let mut seen = None;
        Meter::OpenAiResponses.read_usage(br#"{"input_tokens":37,"output_tokens":11,"total_tokens":48}"#, &mut seen);
        assert_eq!(seen, Some(Usage { input: 37, output: 11 }));

        let mut seen = None;
        Meter::Anthropic.read_usage(
            br#"{"input_tokens":11,"cache_creation_input_tokens":100,"cache_read_input_tokens":7,"output_tokens":1}"#,
            &mut seen,
        );
        assert_eq!(seen, Some(Usage { input: 118, output: 1 }));
        Meter::Anthropic.read_usage(br#"{"output_tokens":6}"#, &mut seen);
        assert_eq!(seen, Some(Usage { input: 118, output: 6 }), "message_delta overwrites output only");

        let mut seen = None;
        Meter::Gemini.read_usage(br#"{"promptTokenCount":5,"candidatesTokenCount":3,"thoughtsTokenCount":4,"toolUsePromptTokenCount":1,"totalTokenCount":13}"#, &mut seen);
        assert_eq!(seen, Some(Usage { input: 6, output: 7 }));
        Meter::Gemini.read_usage(br#"{"promptTokenCount":5}"#, &mut seen);
        assert_eq!(seen, Some(Usage { input: 6, output: 7 }), "a partial block never lowers the count");
    }
}

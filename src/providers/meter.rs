//! How each provider reports the tokens a request used (docs/ARCHITECTURE.md, Usage counting): the meters, and one
//! dispatch per question the usage taps and the JSON scanner ask. The field names and merge rules are in each
//! provider's own file; the machinery that finds usage in a stream or a body is in `metering::usage`.

use super::{Endpoint, ProviderKind, anthropic, gemini, openai};

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

/// How a route reports usage. Each provider's endpoint table names one per endpoint.
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
    /// Not metered (models, token counting): listed as free in its provider's endpoint table.
    Free,
}

/// Where a stream carries its usage, for the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// As a top-level member (named by [`Meter::json_key`]) of data chunks. `final_figure`: whether a
    /// chunk that carries one has the request's final figure (OpenAI sends it once, at the end) or a
    /// running one (Gemini repeats it on every chunk).
    Member { final_figure: bool },
    /// In particular events, read by [`Meter::read_event`].
    Events,
    /// Nowhere that is read.
    Unread,
}

impl Meter {
    /// How `endpoint` is charged on a provider of `kind`, as the provider's endpoint table says. Only
    /// endpoints a table lists ever route ([`ProviderKind::route`]), so the pairs no table lists never
    /// reach a meter; they read as free here only so that this stays total.
    pub fn of(kind: ProviderKind, endpoint: Endpoint) -> Meter {
        let spec = kind.spec(endpoint);
        debug_assert!(spec.is_some(), "{} does not serve {}", kind.as_str(), endpoint.name());
        spec.map_or(Meter::Free, |s| s.meter)
    }

    /// The top-level key holding usage in a JSON body.
    #[inline]
    pub fn json_key(self) -> &'static [u8] {
        match self {
            Meter::OpenAiCompletion | Meter::OpenAiEmbeddings | Meter::OpenAiResponses | Meter::Free => {
                openai::USAGE_KEY
            }
            Meter::Anthropic => anthropic::USAGE_KEY,
            Meter::Gemini => gemini::USAGE_KEY,
        }
    }

    /// Reads a usage object (the value of [`Meter::json_key`]), merging into `seen` the way the provider
    /// means it: Anthropic's fields overwrite one by one, Gemini's never lower what was seen; everything
    /// else replaces the whole.
    #[inline]
    pub fn read_usage(self, value: &[u8], seen: &mut Option<Usage>) {
        match self {
            Meter::OpenAiCompletion | Meter::OpenAiEmbeddings => openai::read_completion_usage(value, seen),
            Meter::OpenAiResponses => openai::read_responses_usage(value, seen),
            Meter::Anthropic => anthropic::read_usage(value, seen),
            Meter::Gemini => gemini::read_usage(value, seen),
            Meter::Free => {}
        }
    }

    /// Where a stream on this route carries its usage.
    #[inline]
    pub fn stream_usage(self) -> StreamUsage {
        match self {
            Meter::OpenAiCompletion | Meter::OpenAiEmbeddings => StreamUsage::Member { final_figure: true },
            Meter::Gemini => StreamUsage::Member { final_figure: false },
            Meter::OpenAiResponses | Meter::Anthropic => StreamUsage::Events,
            Meter::Free => StreamUsage::Unread,
        }
    }

    /// Reads the usage of one stream event (its `event:` name and joined data) for meters whose
    /// usage comes in events ([`StreamUsage::Events`]); true when the figure is now final.
    #[inline]
    pub fn read_event(self, name: Option<&[u8]>, data: &[u8], seen: &mut Option<Usage>) -> bool {
        match self {
            Meter::OpenAiResponses => openai::read_responses_event(data, seen),
            Meter::Anthropic => anthropic::read_event(name, data, seen),
            Meter::OpenAiCompletion | Meter::OpenAiEmbeddings | Meter::Gemini | Meter::Free => false,
        }
    }

    /// Whether a stream reports usage only when the request asks for it with
    /// `stream_options.include_usage` (tollgate then asks on the caller's behalf, and the tap strips
    /// what the caller did not ask for).
    pub fn usage_on_request(self) -> bool {
        match self {
            Meter::OpenAiCompletion => true,
            // Responses streams always end with their usage; the option is refused there.
            Meter::OpenAiEmbeddings | Meter::OpenAiResponses | Meter::Anthropic | Meter::Gemini | Meter::Free => false,
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

        let mut seen = None;
        Meter::Free.read_usage(br#"{"prompt_tokens":13,"completion_tokens":5}"#, &mut seen);
        assert_eq!(seen, None, "a free route reads nothing");
    }

    #[test]
    fn terminal_events_are_each_providers_own() {
        let mut seen = None;
        let created = br#"{"type":"response.created","response":{"usage":{"input_tokens":9,"output_tokens":9}}}"#;
        assert!(!Meter::OpenAiResponses.read_event(Some(b"response.created"), created, &mut seen));
        assert_eq!(seen, None, "only a terminal Responses event counts");
        for kind in ["response.completed", "response.incomplete", "response.failed"] {
            let mut seen = None;
            let data = format!(r#"{{"type":"{kind}","response":{{"usage":{{"input_tokens":3,"output_tokens":4}}}}}}"#);
            assert!(Meter::OpenAiResponses.read_event(None, data.as_bytes(), &mut seen), "{kind}");
            assert_eq!(seen, Some(Usage { input: 3, output: 4 }), "{kind}");
        }

        let mut seen = None;
        let start = br#"{"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1}}}"#;
        assert!(!Meter::Anthropic.read_event(Some(b"message_start"), start, &mut seen));
        assert_eq!(seen, Some(Usage { input: 11, output: 1 }));
        let delta = br#"{"type":"message_delta","usage":{"output_tokens":6}}"#;
        assert!(Meter::Anthropic.read_event(Some(b"message_delta"), delta, &mut seen));
        assert_eq!(seen, Some(Usage { input: 11, output: 6 }));

        assert_eq!(Meter::Gemini.stream_usage(), StreamUsage::Member { final_figure: false });
        assert_eq!(Meter::Free.stream_usage(), StreamUsage::Unread);
        assert_eq!(Meter::Gemini.json_key(), b"usageMetadata");
        assert_eq!(Meter::Anthropic.json_key(), b"usage");
    }
}

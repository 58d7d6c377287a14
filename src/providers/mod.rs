//! What differs between providers lives here, one file per kind: which paths are allowlisted and how
//! each endpoint is charged, where a request names its model and which body members bound its output,
//! how the caller's provider key is written upstream, how errors and terminal stream events are shaped,
//! and how usage reads. This file asks each provider one question at a time; a new provider is one new
//! file and one arm per question here.

pub mod anthropic;
pub mod gemini;
pub mod key;
pub mod meter;
pub mod openai;
pub mod routes;

pub use meter::{Meter, StreamUsage, Usage};

use std::path::PathBuf;

use http::{HeaderMap, HeaderValue, Method};

/// The longest model name a request may carry (longer ones are refused before any allowlist is read).
pub const MAX_MODEL_BYTES: usize = 256;

/// How a Gemini provider receives the caller's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiAuth {
    Query,
    Header,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix of the upstream API without a trailing slash ("" for none).
    pub base_path: String,
    pub gemini_auth: GeminiAuth,
    pub anthropic_version: String,
    /// OpenAI kind: add `stream_options.include_usage` to streams so they report usage (some
    /// OpenAI-compatible servers refuse the option; they are then charged by estimate).
    pub inject_stream_usage: bool,
    /// CA certificates trusted for this provider besides the webpki roots: those of `[upstream] ca_file`
    /// and of its own `ca_file`, read and checked at start.
    pub extra_roots: ExtraRoots,
    /// The environment variable naming the server's own credential for this provider (`key_env`).
    pub key_env: Option<String>,
    /// That credential, read at start; keys allowed the server's credential call without
    /// `X-Provider-Key`. Prints as `[redacted]`.
    pub server_key: Option<std::sync::Arc<key::ProviderKey>>,
}

/// Extra trust roots: the files they came from (which tell one trust configuration from another) and
/// their certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraRoots {
    pub files: Vec<PathBuf>,
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Gemini,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 3] = [ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Gemini];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }
}

/// An allowlisted upstream operation. `name()` is a bounded label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    ListModels,
    GetModel,
    Messages,
    CountTokens,
    GenerateContent,
    StreamGenerateContent,
    EmbedContent,
}

impl Endpoint {
    /// Every endpoint, in declaration order (metrics index their counters by it).
    pub const ALL: [Endpoint; 11] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::ListModels,
        Endpoint::GetModel,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::GenerateContent,
        Endpoint::StreamGenerateContent,
        Endpoint::EmbedContent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::ListModels => "list_models",
            Endpoint::GetModel => "get_model",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::GenerateContent => "generate_content",
            Endpoint::StreamGenerateContent => "stream_generate_content",
            Endpoint::EmbedContent => "embed_content",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Endpoint::ListModels | Endpoint::GetModel => Method::GET,
            Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::CountTokens
            | Endpoint::GenerateContent
            | Endpoint::StreamGenerateContent
            | Endpoint::EmbedContent => Method::POST,
        }
    }

    /// Whether the request carries a JSON body that tollgate reads (to learn `stream`) and forwards.
    pub fn has_json_body(self) -> bool {
        self.method() == Method::POST
    }
}

/// Where a request names its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelAt {
    /// The body's `model`.
    Body,
    /// The path: `…/models/{model}` or `…/models/{model}:{method}`.
    Path,
    /// Nowhere (listing models).
    Nowhere,
}

/// A request-body member that may bound a request's output or ask for several choices. The body
/// inspector reads every one of them on every route, so a mistyped one is refused wherever it appears;
/// each provider's endpoint table says which of them count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMember {
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    N,
    BestOf,
    /// `generationConfig.maxOutputTokens`, in any of the spellings Gemini's proto3 JSON reader accepts:
    /// each field by its JSON name or its proto name, at each level on its own (`generation_config`,
    /// `max_output_tokens`). Two spellings of one field in one object are a repeated field.
    GenerationMaxOutputTokens,
    /// `generationConfig.candidateCount`, spelled as [`BodyMember::GenerationMaxOutputTokens`] is.
    GenerationCandidateCount,
}

impl BodyMember {
    /// The member as a request body spells it.
    pub fn name(self) -> &'static str {
        match self {
            BodyMember::MaxTokens => "max_tokens",
            BodyMember::MaxCompletionTokens => "max_completion_tokens",
            BodyMember::MaxOutputTokens => "max_output_tokens",
            BodyMember::N => "n",
            BodyMember::BestOf => "best_of",
            BodyMember::GenerationMaxOutputTokens => "generationConfig.maxOutputTokens",
            BodyMember::GenerationCandidateCount => "generationConfig.candidateCount",
        }
    }
}

/// What a provider says about one endpoint it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSpec {
    /// How it is charged: by the usage its responses report, read by this meter, or not at all
    /// ([`Meter::Free`], listed as such in the provider's table).
    pub meter: Meter,
    pub model: ModelAt,
    /// Whether every request streams (a streaming method) rather than when its body says `stream`.
    pub always_streams: bool,
    /// The members giving the most output one choice may produce: every one present is read, and the
    /// largest counts (a key's cap must hold for each).
    pub output_cap: &'static [BodyMember],
    /// The member written with a key's output cap when the request names none of `output_cap`; `None`
    /// where there is no output to cap or the API requires the request to name it.
    pub cap_member: Option<BodyMember>,
    /// The members giving how many choices are generated: the largest of them present (at least 1).
    pub choices: &'static [BodyMember],
}

impl EndpointSpec {
    /// Charged by what `meter` reads; the model named in the body; streaming when the body says.
    const fn tokens(meter: Meter, output_cap: &'static [BodyMember], choices: &'static [BodyMember]) -> EndpointSpec {
        EndpointSpec { meter, model: ModelAt::Body, always_streams: false, output_cap, cap_member: None, choices }
    }

    /// A key's output cap is written as `member` into a request naming no output member.
    const fn writes_cap(self, member: BodyMember) -> EndpointSpec {
        EndpointSpec { cap_member: Some(member), ..self }
    }

    /// Not charged.
    const fn free(model: ModelAt) -> EndpointSpec {
        EndpointSpec {
            meter: Meter::Free,
            model,
            always_streams: false,
            output_cap: &[],
            cap_member: None,
            choices: &[],
        }
    }

    const fn model_in_path(self) -> EndpointSpec {
        EndpointSpec { model: ModelAt::Path, ..self }
    }

    const fn always_streams(self) -> EndpointSpec {
        EndpointSpec { always_streams: true, ..self }
    }
}

/// Why a path did not route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    NotFound,
    /// The path exists for another method, named here for the `Allow` header.
    WrongMethod(Method),
}

/// An error tollgate itself produces, in the words each provider shape needs.
#[derive(Debug, Clone, Copy)]
pub struct ErrorParts<'a> {
    pub status: u16,
    pub message: &'a str,
    /// OpenAI's `type`, e.g. `invalid_request_error`.
    pub openai_type: &'a str,
    /// OpenAI's `code`, e.g. `invalid_api_key`; `None` serializes as null.
    pub openai_code: Option<&'a str>,
}

impl ProviderKind {
    /// Matches the path segments after the base (and after `/{provider}` for named providers). Only an
    /// endpoint the provider's table lists routes, so none is forwarded without a charge.
    pub fn route(self, method: &Method, segments: &[&str]) -> Result<Endpoint, RouteMiss> {
        let endpoint = match self {
            ProviderKind::OpenAi => openai::endpoint(segments),
            ProviderKind::Anthropic => anthropic::endpoint(segments),
            ProviderKind::Gemini => gemini::endpoint(segments),
        }
        .filter(|e| self.spec(*e).is_some())
        .ok_or(RouteMiss::NotFound)?;
        if endpoint.method() != *method {
            return Err(RouteMiss::WrongMethod(endpoint.method()));
        }
        Ok(endpoint)
    }

    /// What this provider says about `endpoint`; `None` if it does not serve it.
    pub fn spec(self, endpoint: Endpoint) -> Option<EndpointSpec> {
        match self {
            ProviderKind::OpenAi => openai::spec(endpoint),
            ProviderKind::Anthropic => anthropic::spec(endpoint),
            ProviderKind::Gemini => gemini::spec(endpoint),
        }
    }

    /// The provider a path without a provider prefix is meant for (also the shape of its error when it
    /// does not route): the first that claims it, else OpenAI, whose `/v1/...` is the common default.
    pub fn of_top_level_path(method: &Method, segments: &[&str]) -> ProviderKind {
        if gemini::claims_top_level(method, segments) {
            ProviderKind::Gemini
        } else if anthropic::claims_top_level(segments) {
            ProviderKind::Anthropic
        } else {
            ProviderKind::OpenAi
        }
    }

    /// Writes the caller's provider key in this provider's form. `query` is the upstream query string
    /// being built (already without any caller `key=`).
    pub fn set_credential(
        self,
        provider: &ProviderConfig,
        key: &key::ProviderKey,
        headers: &mut HeaderMap,
        query: &mut String,
    ) {
        match self {
            ProviderKind::OpenAi => openai::set_credential(key, headers),
            ProviderKind::Anthropic => anthropic::set_credential(provider, key, headers),
            ProviderKind::Gemini => gemini::set_credential(provider, key, headers, query),
        }
    }

    /// A complete JSON error body in this provider's shape.
    pub fn error_body(self, e: ErrorParts<'_>) -> Vec<u8> {
        let value = match self {
            ProviderKind::OpenAi => openai::error_json(e),
            ProviderKind::Anthropic => anthropic::error_json(e),
            ProviderKind::Gemini => gemini::error_json(e),
        };
        value.to_string().into_bytes()
    }

    /// One SSE event that ends a stream which failed after it started, in this route's format.
    pub fn stream_error_event(self, endpoint: Endpoint, e: ErrorParts<'_>) -> Vec<u8> {
        match self {
            ProviderKind::OpenAi => openai::stream_error_event(endpoint, e),
            ProviderKind::Anthropic => anthropic::stream_error_event(e),
            ProviderKind::Gemini => gemini::stream_error_event(e),
        }
    }
}

/// A model id as it may appear in a path: ASCII letters, digits, `.`, `-`, `_` (and `:` where the
/// provider uses it inside ids), starting with a letter or digit so `.` and `..` can never match.
pub(crate) fn is_model_id(s: &str, allow_colon: bool) -> bool {
    s.len() <= MAX_MODEL_BYTES
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') || (allow_colon && b == b':'))
}

/// Marks an inserted credential so it never prints in `Debug` output and HPACK never indexes it.
pub(crate) fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

pub(crate) fn sse_event(event: Option<&str>, data: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids() {
        for ok in ["gpt-4o-mini", "gemini-2.5-flash", "claude-3.5", "a", "text_embedding_004"] {
            assert!(is_model_id(ok, false), "{ok}");
        }
        assert!(is_model_id("ft:gpt-4o-mini:org::abc", true));
        for bad in ["", ".", "..", "-x", "a/b", "a%2fb", "a b", "a?b", "ft:x", "é"] {
            assert!(!is_model_id(bad, false), "{bad}");
        }
    }

    /// A path for every endpoint each provider serves (after the base); the tests below check that this
    /// list and the providers' tables agree.
    const EXAMPLES: [(ProviderKind, &[&str], Endpoint); 17] = [
        (ProviderKind::OpenAi, &["v1", "chat", "completions"], Endpoint::ChatCompletions),
        (ProviderKind::OpenAi, &["v1", "completions"], Endpoint::Completions),
        (ProviderKind::OpenAi, &["v1", "embeddings"], Endpoint::Embeddings),
        (ProviderKind::OpenAi, &["v1", "responses"], Endpoint::Responses),
        (ProviderKind::OpenAi, &["v1", "models"], Endpoint::ListModels),
        (ProviderKind::OpenAi, &["v1", "models", "gpt-4o"], Endpoint::GetModel),
        (ProviderKind::Anthropic, &["v1", "messages"], Endpoint::Messages),
        (ProviderKind::Anthropic, &["v1", "messages", "count_tokens"], Endpoint::CountTokens),
        (ProviderKind::Anthropic, &["v1", "models"], Endpoint::ListModels),
        (ProviderKind::Anthropic, &["v1", "models", "claude-sonnet-4-5"], Endpoint::GetModel),
        (ProviderKind::Gemini, &["v1beta", "models", "m:generateContent"], Endpoint::GenerateContent),
        (ProviderKind::Gemini, &["v1beta", "models", "m:streamGenerateContent"], Endpoint::StreamGenerateContent),
        (ProviderKind::Gemini, &["v1beta", "models", "m:embedContent"], Endpoint::EmbedContent),
        (ProviderKind::Gemini, &["v1beta", "models", "m:countTokens"], Endpoint::CountTokens),
        (ProviderKind::Gemini, &["v1beta", "models"], Endpoint::ListModels),
        (ProviderKind::Gemini, &["v1beta", "models", "m"], Endpoint::GetModel),
        (ProviderKind::Gemini, &["v1", "models", "m:generateContent"], Endpoint::GenerateContent),
    ];

    #[test]
    fn every_routed_endpoint_is_metered_or_listed_free() {
        let mut free = std::collections::BTreeSet::new();
        for kind in ProviderKind::ALL {
            for endpoint in Endpoint::ALL {
                let routed = EXAMPLES.iter().any(|(k, _, e)| *k == kind && *e == endpoint);
                let spec = kind.spec(endpoint);
                assert_eq!(spec.is_some(), routed, "{} {}: table and routes disagree", kind.as_str(), endpoint.name());
                let Some(spec) = spec else { continue };
                assert_eq!(Meter::of(kind, endpoint), spec.meter);
                // A written cap is read back as the endpoint's own output member.
                assert!(spec.cap_member.is_none_or(|m| spec.output_cap.contains(&m)), "{}", endpoint.name());
                if spec.meter == Meter::Free {
                    assert!(spec.output_cap.is_empty() && spec.choices.is_empty());
                    free.insert(endpoint.name());
                } else {
                    assert_ne!(spec.meter.stream_usage(), StreamUsage::Unread, "{}", endpoint.name());
                }
            }
        }
        let expected = [Endpoint::ListModels, Endpoint::GetModel, Endpoint::CountTokens].map(Endpoint::name);
        assert_eq!(free, expected.into_iter().collect());
    }

    #[test]
    fn every_example_routes_to_its_endpoint() {
        for (kind, segments, endpoint) in EXAMPLES {
            assert_eq!(kind.route(&endpoint.method(), segments), Ok(endpoint), "{segments:?}");
        }
    }

    #[test]
    fn where_each_provider_names_its_model() {
        let model = |kind: ProviderKind, endpoint| kind.spec(endpoint).map(|s| s.model);
        assert_eq!(model(ProviderKind::OpenAi, Endpoint::ChatCompletions), Some(ModelAt::Body));
        assert_eq!(model(ProviderKind::OpenAi, Endpoint::GetModel), Some(ModelAt::Path));
        assert_eq!(model(ProviderKind::Anthropic, Endpoint::CountTokens), Some(ModelAt::Body));
        for endpoint in Endpoint::ALL {
            let Some(spec) = ProviderKind::Gemini.spec(endpoint) else { continue };
            let expected = if endpoint == Endpoint::ListModels { ModelAt::Nowhere } else { ModelAt::Path };
            assert_eq!(spec.model, expected, "{}", endpoint.name());
            assert_eq!(spec.always_streams, endpoint == Endpoint::StreamGenerateContent);
        }
    }

    #[test]
    fn top_level_paths_go_to_the_provider_that_claims_them() {
        let of = |method: Method, segments: &[&str]| ProviderKind::of_top_level_path(&method, segments);
        assert_eq!(of(Method::POST, &["v1beta", "anything"]), ProviderKind::Gemini);
        assert_eq!(of(Method::POST, &["v1", "models", "m:generateContent"]), ProviderKind::Gemini);
        assert_eq!(of(Method::GET, &["v1", "models", "ft:gpt-4o:acme::x1"]), ProviderKind::OpenAi);
        assert_eq!(of(Method::POST, &["v1", "messages", "nope"]), ProviderKind::Anthropic);
        assert_eq!(of(Method::POST, &["v1", "chat", "completions"]), ProviderKind::OpenAi);
        assert_eq!(of(Method::POST, &["v2"]), ProviderKind::OpenAi);
    }

    #[test]
    fn methods_are_checked() {
        let m = ProviderKind::OpenAi.route(&Method::GET, &["v1", "chat", "completions"]);
        assert_eq!(m, Err(RouteMiss::WrongMethod(Method::POST)));
        let m = ProviderKind::OpenAi.route(&Method::POST, &["v1", "models"]);
        assert_eq!(m, Err(RouteMiss::WrongMethod(Method::GET)));
    }
}

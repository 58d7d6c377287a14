//! What differs between providers lives here, one file per kind: which paths are allowlisted, how the
//! caller's provider key is written upstream, and how errors and terminal stream events are shaped.

pub mod anthropic;
pub mod gemini;
pub mod key;
pub mod openai;

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
    /// Matches the path segments after the base (and after `/{provider}` for named providers).
    pub fn route(self, method: &Method, segments: &[&str]) -> Result<Endpoint, RouteMiss> {
        let endpoint = match self {
            ProviderKind::OpenAi => openai::endpoint(segments),
            ProviderKind::Anthropic => anthropic::endpoint(segments),
            ProviderKind::Gemini => gemini::endpoint(segments),
        }
        .ok_or(RouteMiss::NotFound)?;
        if endpoint.method() != *method {
            return Err(RouteMiss::WrongMethod(endpoint.method()));
        }
        Ok(endpoint)
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

    #[test]
    fn methods_are_checked() {
        let m = ProviderKind::OpenAi.route(&Method::GET, &["v1", "chat", "completions"]);
        assert_eq!(m, Err(RouteMiss::WrongMethod(Method::POST)));
        let m = ProviderKind::OpenAi.route(&Method::POST, &["v1", "models"]);
        assert_eq!(m, Err(RouteMiss::WrongMethod(Method::GET)));
    }
}

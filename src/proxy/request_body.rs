//! What tollgate reads from a request body, and the changes it may make to it. Only the fields that
//! matter are deserialized (`stream`, `model`, the output limits and choice counts, `stream_options`);
//! everything else is skipped unparsed. No body is ever held as a JSON tree: each change (a key's
//! output cap written into a request naming none, asking an OpenAI stream for its usage) is a splice
//! at a byte offset found while inspecting, so the body goes upstream as the caller sent it but for
//! that member. The cap is written first and the body inspected again, so the usage splice is found
//! in the body it applies to.

use std::ops::Range;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::ProxyError;
use crate::providers::{BodyMember, Endpoint, ProviderKind};

/// What tollgate reads from a request body; every other field is skipped unparsed. The token limits and
/// counts are every [`BodyMember`] any provider reads, all read on every route; which count is the
/// provider's call. They are `u64`: a negative, fractional or out-of-range number is a 400, never
/// wrapped. A member given twice is a 400 too (serde refuses duplicate fields), so the upstream never
/// has to choose.
#[derive(Debug, Default, Deserialize)]
struct RequestFacts<'a> {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "limit")]
    max_tokens: Option<Limit<'a>>,
    #[serde(default, borrow, deserialize_with = "limit")]
    max_completion_tokens: Option<Limit<'a>>,
    #[serde(default, borrow, deserialize_with = "limit")]
    max_output_tokens: Option<Limit<'a>>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
    /// Gemini's generation config under either spelling (proto3 JSON reads both); both at once is a
    /// repeated field.
    #[serde(
        default,
        borrow,
        rename = "generationConfig",
        alias = "generation_config",
        deserialize_with = "generation"
    )]
    generation_config: Option<Generation<'a>>,
    /// Kept raw, `null` included: a `null` here is a member the upstream sees, not an absent one.
    #[serde(default, borrow, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    /// tollgate's own member (`proxy::trial_body`), never forwarded.
    #[serde(default, borrow, deserialize_with = "present")]
    tollgate: Option<&'a RawValue>,
}

/// Gemini's generation config: its raw value (where a cap is written) and, unless it is `null`, what
/// it says. Each field is read by its JSON name or its proto name, as Gemini's reader does; both
/// spellings at once is a repeated field.
#[derive(Debug)]
struct Generation<'a> {
    raw: &'a RawValue,
    config: Option<GenerationConfig<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct GenerationConfig<'a> {
    #[serde(default, borrow, rename = "maxOutputTokens", alias = "max_output_tokens", deserialize_with = "limit")]
    max_output_tokens: Option<Limit<'a>>,
    #[serde(default, rename = "candidateCount", alias = "candidate_count")]
    candidate_count: Option<u64>,
}

/// `generationConfig`: `null` (no config) or an object (serde would also read the struct from an
/// array). Errors are serde's, so they are reported as the body's own.
fn generation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Generation<'de>>, D::Error> {
    let raw = <&RawValue>::deserialize(d)?;
    let config = match raw.get().as_bytes().first() {
        Some(b'{') => Some(serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?),
        Some(b'n') => None,
        _ => return Err(serde::de::Error::custom("generationConfig must be an object")),
    };
    Ok(Some(Generation { raw, config }))
}

/// An output limit: where its value lies (a cap is written over a `null` one) and the value, `None`
/// for `null`, which the upstreams read as no limit.
#[derive(Debug, Clone, Copy)]
struct Limit<'a> {
    raw: &'a RawValue,
    value: Option<u64>,
}

/// An output limit: a non-negative integer or `null`. Errors are serde's, so they are reported as the
/// body's own.
fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<'de>>, D::Error> {
    let raw = <&RawValue>::deserialize(d)?;
    let value = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
    Ok(Some(Limit { raw, value }))
}

impl<'a> RequestFacts<'a> {
    fn member(&self, member: BodyMember) -> Option<u64> {
        match member {
            BodyMember::N => self.n,
            BodyMember::BestOf => self.best_of,
            BodyMember::GenerationCandidateCount => self.generation().and_then(|g| g.candidate_count),
            _ => self.limit(member).and_then(|l| l.value),
        }
    }

    /// An output limit as given, `null` included.
    fn limit(&self, member: BodyMember) -> Option<Limit<'a>> {
        match member {
            BodyMember::MaxTokens => self.max_tokens,
            BodyMember::MaxCompletionTokens => self.max_completion_tokens,
            BodyMember::MaxOutputTokens => self.max_output_tokens,
            BodyMember::GenerationMaxOutputTokens => self.generation().and_then(|g| g.max_output_tokens),
            BodyMember::N | BodyMember::BestOf | BodyMember::GenerationCandidateCount => None,
        }
    }

    fn generation(&self) -> Option<&GenerationConfig<'a>> {
        self.generation_config.as_ref().and_then(|g| g.config.as_ref())
    }
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    include_usage: Option<&'a RawValue>,
}

/// A member's raw value, `Some` even when it is `null` (serde's `Option` would read that as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// One change to a request body: the bytes at `at` replaced by `text`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Splice {
    pub at: Range<usize>,
    pub text: &'static [u8],
}

/// Where a key's output cap goes in a body that names no output member: the bytes at `at` replaced by
/// `before`, the cap, then `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapSlot {
    pub at: Range<usize>,
    pub before: &'static [u8],
    pub after: &'static [u8],
}

impl CapSlot {
    /// A new member `"{name}":{cap}` after the `{` at `open`; a comma follows unless the object is empty.
    fn member(body: &[u8], open: usize, name: &'static [u8]) -> CapSlot {
        let after = open.saturating_add(1);
        let comma: &[u8] = if is_empty_object(body, open) { b"" } else { b"," };
        CapSlot { at: after..after, before: name, after: comma }
    }
}

/// What the pipeline needs from a request body.
#[derive(Debug, Default)]
pub struct Inspected {
    pub stream: bool,
    pub model: Option<String>,
    /// The most output one choice may produce, if the request says: the largest of the endpoint's
    /// output members present.
    pub max_output: Option<u64>,
    /// The member that said it.
    pub max_output_member: Option<BodyMember>,
    /// Where a key's output cap is written, when the request names no output member and the endpoint
    /// has one to write.
    pub cap_slot: Option<CapSlot>,
    /// How many choices (completions, candidates) the request asks for; at least 1.
    pub choices: u64,
    pub include_usage: Option<bool>,
    /// The change that sets `stream_options.include_usage` to `true`, wherever the body stands.
    pub usage_splice: Splice,
    /// Where the value of a top-level `"tollgate"` member lies in the body, if it has one.
    pub tollgate: Option<Range<usize>>,
}

impl Inspected {
    /// What the body asks for that its token reservation depends on.
    pub fn asked(&self) -> crate::metering::Asked {
        crate::metering::Asked { max_output: self.max_output, choices: self.choices }
    }
}

/// Phase: the body is a JSON object (the upstream never sees malformed JSON); what it asks for, read
/// as the provider's table for this endpoint says. An endpoint the provider does not serve never
/// routes, and is refused here too.
pub fn inspect_body(kind: ProviderKind, endpoint: Endpoint, body: &[u8]) -> Result<Inspected, ProxyError> {
    let spec = kind.spec(endpoint).ok_or(ProxyError::NotFound)?;
    // serde would also read a struct from an array; only an object is a request.
    let Some(open) = body.iter().position(|b| !b.is_ascii_whitespace()).filter(|&at| body[at] == b'{') else {
        return Err(ProxyError::InvalidJson("Request body must be a JSON object".to_owned()));
    };
    let facts: RequestFacts = serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote a value from the body; only its position is echoed.
        let what = match e.classify() {
            serde_json::error::Category::Data => {
                "has a field of the wrong type or a repeated field (`stream` must be a boolean, token limits \
                 and `n` non-negative integers)"
            }
            _ => "is not valid JSON",
        };
        ProxyError::InvalidJson(format!("Request body {what} (line {}, column {})", e.line(), e.column()))
    })?;
    // Every output member present is read, so a small one cannot hide a big one from the cap check.
    let largest = spec.output_cap.iter().filter_map(|m| facts.member(*m).map(|asked| (asked, *m))).max_by_key(|a| a.0);
    let cap_slot = match largest {
        Some(_) => None,
        None => spec.cap_member.and_then(|m| cap_slot(body, open, m, &facts)),
    };
    let choices = spec.choices.iter().filter_map(|m| facts.member(*m)).max();
    let (include_usage, usage_splice) = usage_splice(body, open, facts.stream_options)?;
    let tollgate = facts.tollgate.and_then(|value| span_in(body, value.get()));
    Ok(Inspected {
        stream: spec.always_streams || facts.stream == Some(true),
        model: facts.model.map(|m| m.into_owned()),
        max_output: largest.map(|a| a.0),
        max_output_member: largest.map(|a| a.1),
        cap_slot,
        choices: choices.unwrap_or(1).max(1),
        include_usage,
        usage_splice,
        tollgate,
    })
}

/// Where `member` goes in a body naming no output member: over its value when it is `null`; else at
/// the top level, or for Gemini in its generation config (the object's first member, the object itself
/// when `null`, a new object when absent).
fn cap_slot(body: &[u8], open: usize, member: BodyMember, facts: &RequestFacts) -> Option<CapSlot> {
    // No output member has a value here, so one that is present is `null`.
    if let Some(null) = facts.limit(member) {
        return Some(CapSlot { at: span_in(body, null.raw.get())?, before: b"", after: b"" });
    }
    let generation = facts.generation_config.as_ref();
    let top: &'static [u8] = match member {
        BodyMember::MaxTokens => br#""max_tokens":"#,
        BodyMember::MaxCompletionTokens => br#""max_completion_tokens":"#,
        BodyMember::MaxOutputTokens => br#""max_output_tokens":"#,
        BodyMember::GenerationMaxOutputTokens => {
            let Some(g) = generation else {
                let mut slot = CapSlot::member(body, open, br#""generationConfig":{"maxOutputTokens":"#);
                slot.after = if slot.after.is_empty() { b"}" } else { b"}," };
                return Some(slot);
            };
            let at = span_in(body, g.raw.get())?;
            if g.config.is_none() {
                return Some(CapSlot { at, before: br#"{"maxOutputTokens":"#, after: b"}" });
            }
            return Some(CapSlot::member(body, at.start, br#""maxOutputTokens":"#));
        }
        BodyMember::N | BodyMember::BestOf | BodyMember::GenerationCandidateCount => return None,
    };
    Some(CapSlot::member(body, open, top))
}

/// The caller's `stream_options.include_usage`, and the splice that sets it to `true`: a new member
/// after the body's `{` when there is no `stream_options`; the value replaced when it is `null`; inside
/// the object, `include_usage`'s value replaced, or the member added after its `{`.
fn usage_splice(
    body: &[u8],
    open: usize,
    stream_options: Option<&RawValue>,
) -> Result<(Option<bool>, Splice), ProxyError> {
    let after = open.saturating_add(1);
    let Some(options) = stream_options else {
        let text: &[u8] = if is_empty_object(body, open) {
            br#""stream_options":{"include_usage":true}"#
        } else {
            br#""stream_options":{"include_usage":true},"#
        };
        return Ok((None, Splice { at: after..after, text }));
    };
    let wrong = || {
        ProxyError::InvalidJson(
            "Request body has a field of the wrong type (`stream_options` must be an object, its \
             `include_usage` a boolean)"
                .to_owned(),
        )
    };
    let at = span_in(body, options.get()).ok_or_else(wrong)?;
    if options.get() == "null" {
        return Ok((None, Splice { at, text: br#"{"include_usage":true}"# }));
    }
    // serde would also read the struct from an array.
    if !options.get().starts_with('{') {
        return Err(wrong());
    }
    let parsed: StreamOptions = serde_json::from_str(options.get()).map_err(|_| wrong())?;
    let Some(include_usage) = parsed.include_usage else {
        // A raw value starts at its first byte, here the object's `{`.
        let inner = at.start.saturating_add(1);
        let text: &[u8] =
            if is_empty_object(body, at.start) { br#""include_usage":true"# } else { br#""include_usage":true,"# };
        return Ok((None, Splice { at: inner..inner, text }));
    };
    let asked: Option<bool> = serde_json::from_str(include_usage.get()).map_err(|_| wrong())?;
    let at = span_in(body, include_usage.get()).ok_or_else(wrong)?;
    Ok((asked, Splice { at, text: b"true" }))
}

/// Where `part`, a raw value borrowed from `body` by serde, lies in it.
fn span_in(body: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= body.len()).then_some(start..end)
}

/// Whether the object opening at `open` has no members.
fn is_empty_object(body: &[u8], open: usize) -> bool {
    body.get(open.saturating_add(1)..).and_then(|rest| rest.iter().find(|b| !b.is_ascii_whitespace())) == Some(&b'}')
}

/// Sets `stream_options.include_usage` so an OpenAI stream reports its usage: the one splice found by
/// [`inspect_body`], every other byte as the caller sent it.
pub fn with_stream_usage(body: Bytes, splice: &Splice) -> Bytes {
    replaced(body, &splice.at, &[splice.text])
}

/// Writes a key's output cap where [`inspect_body`] found its slot, every other byte as the caller
/// sent it.
pub fn with_output_cap(body: Bytes, slot: &CapSlot, cap: u64) -> Bytes {
    replaced(body, &slot.at, &[slot.before, cap.to_string().as_bytes(), slot.after])
}

/// `body` with the bytes at `at` replaced by `parts`, in order.
fn replaced(body: Bytes, at: &Range<usize>, parts: &[&[u8]]) -> Bytes {
    // The range was found in this very body, so both halves exist; if not, the body goes unchanged.
    let (Some(head), Some(tail)) = (body.get(..at.start), body.get(at.end..)) else {
        return body;
    };
    let inserted: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(head.len() + inserted + tail.len());
    out.extend_from_slice(head);
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(tail);
    Bytes::from(out)
}

#[cfg(test)]
mod tests;

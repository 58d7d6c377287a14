//! Reads usage from complete SSE events as they pass (the framer hands over whole events only). Events
//! without `"usage` in them are passed on untouched and unparsed; the few that carry usage are read.
//! When tollgate added `stream_options.include_usage` for a caller that did not ask for it, the usage-only
//! chunk and the `"usage":null` fields OpenAI then adds are taken out, so the caller gets the stream it
//! asked for, byte for byte.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::{self, Finder};
use serde::Deserialize;

use super::json_scan::UsageScanner;
use super::{AnthropicUsage, Meter, Usage};

/// Searchers built once: building one per event costs more than the search.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage"));
static NULL_USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":null"));
static DATA_FIELD: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"data:"));
static NULL_USAGE_AFTER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b",\"usage\":null"));
static NULL_USAGE_BEFORE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":null,"));

pub struct UsageTap {
    meter: Meter,
    strip_injected: bool,
    seen: Option<Usage>,
    /// The provider's final figure arrived (not just a running one).
    complete: bool,
    /// Data events passed to the caller.
    events: u64,
}

impl UsageTap {
    pub fn new(meter: Meter, strip_injected: bool) -> UsageTap {
        UsageTap { meter, strip_injected, seen: None, complete: false, events: 0 }
    }

    /// Usage seen so far, and whether it is final.
    pub fn usage(&self) -> (Option<Usage>, bool) {
        (self.seen, self.complete)
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Takes a run of complete events; returns what the caller gets.
    pub fn pass(&mut self, chunk: Bytes) -> Bytes {
        if USAGE.find(&chunk).is_none() {
            self.events += DATA_FIELD.find_iter(&chunk).count() as u64;
            return chunk;
        }
        let mut out: Option<BytesMut> = None;
        let mut start = 0;
        for end in event_ends(&chunk) {
            let event = &chunk[start..end];
            let kept = self.event(event);
            match (&mut out, kept) {
                (None, Kept::Same) => {}
                (None, changed) => {
                    let mut o = BytesMut::with_capacity(chunk.len());
                    o.extend_from_slice(&chunk[..start]);
                    if let Kept::Rewritten(bytes) = changed {
                        o.extend_from_slice(&bytes);
                    }
                    out = Some(o);
                }
                (Some(o), Kept::Same) => o.extend_from_slice(event),
                (Some(o), Kept::Rewritten(bytes)) => o.extend_from_slice(&bytes),
                (Some(_), Kept::Dropped) => {}
            }
            start = end;
        }
        match out {
            None => chunk,
            Some(mut o) => {
                o.extend_from_slice(&chunk[start..]);
                o.freeze()
            }
        }
    }

    fn event(&mut self, event: &[u8]) -> Kept {
        let (name, data) = fields(event);
        if data.is_empty() {
            return Kept::Same;
        }
        if USAGE.find(&data).is_none() {
            self.events += 1;
            return Kept::Same;
        }
        match self.meter {
            // Once usage is requested OpenAI adds `"usage":null` to every chunk but the last: nothing
            // to read there.
            Meter::OpenAiCompletion if NULL_USAGE.find(&data).is_some() => {
                self.events += 1;
                return if self.strip_injected { strip_null_usage(event) } else { Kept::Same };
            }
            Meter::OpenAiCompletion | Meter::OpenAiEmbeddings | Meter::Gemini => {
                let mut scanner = UsageScanner::new(self.meter.json_key());
                scanner.feed(&data);
                let usage = scanner.found().filter(|v| v.trim_ascii() != b"null");
                if let Some(value) = usage {
                    self.meter.read_usage(value, &mut self.seen);
                    self.complete = self.meter != Meter::Gemini;
                }
                if self.strip_injected {
                    if usage.is_some() && memmem::find(&data, b"\"choices\":[]").is_some() {
                        return Kept::Dropped;
                    }
                    self.events += 1;
                    return strip_null_usage(event);
                }
            }
            Meter::OpenAiResponses => {
                #[derive(Deserialize)]
                struct Terminal {
                    #[serde(rename = "type")]
                    kind: String,
                    response: Option<ResponseBody>,
                }
                #[derive(Deserialize)]
                struct ResponseBody {
                    usage: Option<serde_json::Value>,
                }
                if let Ok(t) = serde_json::from_slice::<Terminal>(&data)
                    && matches!(t.kind.as_str(), "response.completed" | "response.incomplete" | "response.failed")
                    && let Some(usage) = t.response.and_then(|r| r.usage)
                {
                    self.meter.read_usage(usage.to_string().as_bytes(), &mut self.seen);
                    self.complete = true;
                }
            }
            Meter::Anthropic => {
                #[derive(Deserialize)]
                struct Event {
                    #[serde(rename = "type")]
                    kind: String,
                    message: Option<Message>,
                    usage: Option<AnthropicUsage>,
                }
                #[derive(Deserialize)]
                struct Message {
                    usage: Option<AnthropicUsage>,
                }
                if let Ok(e) = serde_json::from_slice::<Event>(&data) {
                    let usage = e.usage.or(e.message.and_then(|m| m.usage));
                    if let Some(u) = usage {
                        u.merge_into(&mut self.seen);
                    }
                    if e.kind == "message_delta" || name == Some(&b"message_delta"[..]) {
                        self.complete = true;
                    }
                }
            }
            Meter::Free => {}
        }
        self.events += 1;
        Kept::Same
    }
}

enum Kept {
    Same,
    Rewritten(Vec<u8>),
    Dropped,
}

/// Removes the `"usage":null` member OpenAI adds to every chunk once usage is requested.
fn strip_null_usage(event: &[u8]) -> Kept {
    for pattern in [&*NULL_USAGE_AFTER, &*NULL_USAGE_BEFORE] {
        if pattern.find(event).is_some() {
            let mut out = Vec::with_capacity(event.len());
            let mut rest = event;
            while let Some(at) = pattern.find(rest) {
                out.extend_from_slice(&rest[..at]);
                rest = &rest[at + pattern.needle().len()..];
            }
            out.extend_from_slice(rest);
            return Kept::Rewritten(out);
        }
    }
    Kept::Same
}

/// Offsets just past each event's closing blank line in a run of complete events.
fn event_ends(chunk: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut line_start = 0;
    while let Some(at) = memchr::memchr2(b'\r', b'\n', &chunk[line_start..]) {
        let i = line_start + at;
        let len = if chunk[i] == b'\r' && chunk.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
        if i == line_start {
            ends.push(i + len);
        }
        line_start = i + len;
    }
    ends
}

/// The `event:` name and the `data:` lines of one event, joined; borrowed when there is one data line.
fn fields(event: &[u8]) -> (Option<&[u8]>, Cow<'_, [u8]>) {
    let mut name = None;
    let mut data = Cow::Borrowed(&b""[..]);
    let mut lines = 0;
    for line in event.split(|&b| b == b'\n' || b == b'\r') {
        let (field, value) = match memchr::memchr(b':', line) {
            Some(at) => (&line[..at], line[at + 1..].strip_prefix(b" ").unwrap_or(&line[at + 1..])),
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                lines += 1;
                if lines == 1 {
                    data = Cow::Borrowed(value);
                } else {
                    let joined = data.to_mut();
                    joined.push(b'\n');
                    joined.extend_from_slice(value);
                }
            }
            b"event" => name = Some(value),
            _ => {}
        }
    }
    (name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tap: &mut UsageTap, events: &[&str]) -> String {
        let mut out = String::new();
        for e in events {
            out.push_str(std::str::from_utf8(&tap.pass(Bytes::copy_from_slice(e.as_bytes()))).unwrap());
        }
        out
    }

    const WITH_USAGE: &[&str] = &[
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n",
        "data: [DONE]\n\n",
    ];
    const WITHOUT_USAGE: &[&str] = &[
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    ];

    #[test]
    fn injected_usage_is_read_then_removed_byte_for_byte() {
        let mut tap = UsageTap::new(Meter::OpenAiCompletion, true);
        assert_eq!(run(&mut tap, WITH_USAGE), WITHOUT_USAGE.concat());
        assert_eq!(tap.usage(), (Some(Usage { input: 9, output: 12 }), true));
        // The same, all in one chunk.
        let mut tap = UsageTap::new(Meter::OpenAiCompletion, true);
        assert_eq!(run(&mut tap, &[&WITH_USAGE.concat()]), WITHOUT_USAGE.concat());
        assert_eq!(tap.events(), 3);
    }

    #[test]
    fn a_caller_who_asked_for_usage_gets_it_untouched() {
        let mut tap = UsageTap::new(Meter::OpenAiCompletion, false);
        assert_eq!(run(&mut tap, WITH_USAGE), WITH_USAGE.concat());
        assert_eq!(tap.usage(), (Some(Usage { input: 9, output: 12 }), true));
    }

    #[test]
    fn anthropic_start_then_cumulative_deltas() {
        let mut tap = UsageTap::new(Meter::Anthropic, false);
        run(
            &mut tap,
            &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":11,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
            ],
        );
        assert_eq!(tap.usage(), (Some(Usage { input: 15, output: 1 }), false));
        run(
            &mut tap,
            &[
                "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":6}}\r\n\r\n",
            ],
        );
        assert_eq!(tap.usage(), (Some(Usage { input: 15, output: 6 }), true));
    }

    #[test]
    fn responses_read_only_the_terminal_event() {
        let mut tap = UsageTap::new(Meter::OpenAiResponses, false);
        run(
            &mut tap,
            &[
                "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":{\"input_tokens\":999,\"output_tokens\":999}}}\n\n",
            ],
        );
        assert_eq!(tap.usage(), (None, false));
        run(
            &mut tap,
            &[
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"total_tokens\":48}}}\n\n",
            ],
        );
        assert_eq!(tap.usage(), (Some(Usage { input: 37, output: 11 }), true));
    }

    #[test]
    fn gemini_last_metadata_wins() {
        let mut tap = UsageTap::new(Meter::Gemini, false);
        run(
            &mut tap,
            &[
                "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":5,\"totalTokenCount\":5}}\r\n\r\n",
                "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":3,\"thoughtsTokenCount\":2}}\r\n\r\n",
            ],
        );
        assert_eq!(tap.usage(), (Some(Usage { input: 5, output: 5 }), false));
        assert_eq!(tap.events(), 2);
    }
}

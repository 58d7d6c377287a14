//! Reads usage from complete SSE events as they pass (the framer hands over whole events only). Events
//! without `"usage` in them are passed on untouched and unparsed; the few that carry usage are read.
//! When tollgate added `stream_options.include_usage` for a caller that did not ask for it, the usage-only
//! chunk and the `"usage": null` members OpenAI then adds are taken out, so the caller gets the stream it
//! asked for, byte for byte. Members are found by a JSON walk, not byte patterns, so any spacing the
//! upstream writes (compact, Python's `", "` / `": "`, pretty-printed over several `data:` lines, CRLF)
//! is read and stripped the same way.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

use super::members::{self, Member};
use crate::providers::{Meter, StreamUsage, Usage, openai};

/// Searchers built once: building one per event costs more than the search.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage"));

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
            self.events += count_data_events(&chunk);
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
        match self.meter.stream_usage() {
            StreamUsage::Member { final_figure } => {
                // Once usage is requested OpenAI adds `"usage": null` to every chunk but the last, as
                // its last member: nothing to read there, and nothing the caller asked for.
                let key = self.meter.json_key();
                if let Some(usage) =
                    members::last_scalar(&data, key).filter(|m| data.get(m.value.clone()) == Some(b"null"))
                {
                    self.events += 1;
                    return if self.strip_injected { strip_member(event, &data, &usage) } else { Kept::Same };
                }
                let [usage, choices] = members::find(&data, [key, openai::CHOICES_KEY]);
                let Some(usage) = usage else {
                    self.events += 1;
                    return Kept::Same;
                };
                let value = data.get(usage.value.clone()).unwrap_or_default();
                if value == b"null" {
                    self.events += 1;
                    return if self.strip_injected { strip_member(event, &data, &usage) } else { Kept::Same };
                }
                self.meter.read_usage(value, &mut self.seen);
                self.complete = final_figure;
                // The chunk that exists only because usage was asked for: `"choices": []`, or (from
                // some compatible servers) no `choices` at all.
                let usage_only = choices.is_none_or(|c| data.get(c.value).is_some_and(members::is_empty_array));
                if self.strip_injected && usage_only {
                    return Kept::Dropped;
                }
            }
            StreamUsage::Events => {
                if self.meter.read_event(name, &data, &mut self.seen) {
                    self.complete = true;
                }
            }
            StreamUsage::Unread => {}
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

/// The event without `member` of its data (and one separator), every other byte as it came. The data
/// may span several `data:` lines; the cut is mapped back onto the event's own bytes.
fn strip_member(event: &[u8], data: &[u8], member: &Member) -> Kept {
    let cut = members::removal(data, member);
    // One data line (the common case): the data is a slice of the event, so the cut maps by its offset.
    let offsets = match offset_in(event, data) {
        Some(base) => (base.checked_add(cut.start), base.checked_add(cut.end)),
        None => (event_offset(event, cut.start), event_offset(event, cut.end)),
    };
    let (Some(from), Some(to)) = offsets else {
        return Kept::Same;
    };
    let (Some(head), Some(tail)) = (event.get(..from), event.get(to..)) else {
        return Kept::Same;
    };
    let mut out = Vec::with_capacity(event.len());
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
    Kept::Rewritten(out)
}

/// Where `part` starts in `whole`, if it is a slice of it.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start.checked_add(part.len())? <= whole.len()).then_some(start)
}

/// Where offset `at` of an event's joined data (its `data:` values joined by `\n`, as [`fields`] makes
/// them) lies in the event. An offset at the end of one line's value is placed there, not on the next.
fn event_offset(event: &[u8], mut at: usize) -> Option<usize> {
    let mut line_start = 0;
    for line in event.split(|&b| b == b'\n' || b == b'\r') {
        let this = line_start;
        line_start += line.len() + 1;
        let Some((field, value)) = split_field(line) else { continue };
        if field != b"data" {
            continue;
        }
        let value_start = this + (line.len() - value.len());
        if at <= value.len() {
            return Some(value_start + at);
        }
        at -= value.len() + 1;
    }
    None
}

/// Data events in a run of complete events, counted as [`UsageTap::event`] counts them: each complete
/// event whose joined `data:` lines are not empty (several `data:` lines make one event, even with other
/// fields between them; a `data:` inside a value is not a field). Bytes after the last complete event
/// are not an event yet, so the count is the same however the stream was cut into runs.
fn count_data_events(chunk: &[u8]) -> u64 {
    let mut events = 0;
    let mut start = 0;
    for end in event_ends(chunk) {
        if chunk.get(start..end).is_some_and(|event| !fields(event).1.is_empty()) {
            events += 1;
        }
        start = end;
    }
    events
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
        let Some((field, value)) = split_field(line) else { continue };
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

/// A line's field name and value (one leading space dropped, as SSE says); `None` for a blank line.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    if line.is_empty() {
        return None;
    }
    Some(match memchr::memchr(b':', line) {
        Some(at) => {
            let value = line.get(at + 1..).unwrap_or_default();
            (line.get(..at).unwrap_or_default(), value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &b""[..]),
    })
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
    fn spaced_and_pretty_upstreams_are_stripped_the_same_way() {
        let spaced = [
            "data: {\"id\": \"c\", \"choices\": [{\"delta\": {\"content\": \"Hi\"}}], \"usage\": null}\r\n\r\n",
            "data: {\"usage\": null, \"id\": \"c\", \"choices\": [{\"delta\": {}}]}\n\n",
            "data: {\"id\": \"c\", \"choices\": [ ], \"usage\": {\"prompt_tokens\": 9, \"completion_tokens\": 12}}\n\n",
            "data: [DONE]\n\n",
        ];
        let plain = [
            "data: {\"id\": \"c\", \"choices\": [{\"delta\": {\"content\": \"Hi\"}}]}\r\n\r\n",
            "data: {\"id\": \"c\", \"choices\": [{\"delta\": {}}]}\n\n",
            "data: [DONE]\n\n",
        ];
        let mut tap = UsageTap::new(Meter::OpenAiCompletion, true);
        assert_eq!(run(&mut tap, &spaced), plain.concat());
        assert_eq!(tap.usage(), (Some(Usage { input: 9, output: 12 }), true));
        assert_eq!(tap.events(), 3);

        let pretty = "data: {\ndata:   \"id\": \"c\",\ndata:   \"usage\": null\ndata: }\n\n";
        let mut tap = UsageTap::new(Meter::OpenAiCompletion, true);
        assert_eq!(run(&mut tap, &[pretty]), "data: {\ndata:   \"id\": \"c\"\ndata: }\n\n");
        let first = "data: {\r\ndata:   \"usage\": null,\r\ndata:   \"id\": \"c\"\r\ndata: }\r\n\r\n";
        assert_eq!(run(&mut tap, &[first]), "data: {\r\ndata:   \"id\": \"c\"\r\ndata: }\r\n\r\n");
        assert_eq!(tap.events(), 2, "one event per blank line, however many data lines");
        let bare = "data: {\"id\": \"c\", \"usage\": {\"prompt_tokens\": 1, \"completion_tokens\": 2}}\n\n";
        assert_eq!(run(&mut tap, &[bare]), "", "a usage chunk without choices is the injected one too");
        assert_eq!(tap.usage(), (Some(Usage { input: 1, output: 2 }), true));
    }

    #[test]
    fn events_are_counted_once_per_complete_event_with_data() {
        assert_eq!(count_data_events(b"data: a\n\ndata: b\r\n\r\n"), 2);
        assert_eq!(count_data_events(b"data: {\ndata: \"x\": \"data: y\"\ndata: }\n\n"), 1);
        assert_eq!(count_data_events(b"event: e\ndata: 1\ndata: 2\n\n: data: comment\n\n"), 1);
        assert_eq!(count_data_events(b"data:1\r\rdata:2\r\r"), 2);
        assert_eq!(count_data_events(b"data: a\nid: 1\ndata: b\n\n"), 1, "other fields between data lines");
        assert_eq!(count_data_events(b"data:\n\ndata: \r\n\r\n"), 0, "empty data is no event");
        assert_eq!(count_data_events(b"data: a\n\ndata: b"), 1, "an incomplete event is not one yet");
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
    fn the_prefilter_sees_every_providers_usage_key() {
        // Events without `"usage` are passed unread, so every meter's key must start with it.
        let meters =
            [Meter::OpenAiCompletion, Meter::OpenAiEmbeddings, Meter::OpenAiResponses, Meter::Anthropic, Meter::Gemini];
        for meter in meters {
            let key = [&b"\""[..], meter.json_key()].concat();
            assert!(USAGE.find(&key).is_some(), "{meter:?}");
        }
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

//! Inputs the fuzz targets under `fuzz/` found wrong, replayed through the same public API the target
//! drove, with the target's chunking.

use bytes::Bytes;
use tollgate::metering::usage::json_scan::UsageScanner;
use tollgate::metering::usage::tap::UsageTap;
use tollgate::metering::usage::{Meter, Usage};
use tollgate::proxy::sse::SseFramer;

/// An upstream stream through the framer and a usage tap, as the response body wires them; the usage
/// and the number of data events counted.
fn tap_stream(meter: Meter, strip: bool, pieces: &[&[u8]]) -> ((Option<Usage>, bool), u64) {
    let mut framer = SseFramer::new(1 << 20);
    let mut tap = UsageTap::new(meter, strip);
    for piece in pieces {
        if let Some(events) = framer.push(Bytes::copy_from_slice(piece)).unwrap() {
            tap.pass(events);
        }
    }
    if let Some(rest) = framer.finish() {
        tap.pass(rest);
    }
    (tap.usage(), tap.events())
}

/// `payload` cut into chunks of the given lengths in turn, as the fuzz targets' control bytes cut it.
fn cut<'a>(payload: &'a [u8], lengths: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = payload;
    for &len in lengths.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(len.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// `sse_tap`: an event whose `data:` lines have another line between them was counted once when its run
/// of events also held usage, and once per data line otherwise, so the output estimate of a cut-off
/// stream depended on how the upstream's bytes were cut.
#[test]
fn an_event_is_counted_once_however_the_stream_is_cut() {
    let stream: &[u8] = b"data: {\ndata:   \"id\": \"c/,\ndata:   \"usage\": null\ndata: }\n\n\
        data: {\r\nd\xe1ta:   \"choices\": [],\r\ndata:   \xe0\x11\x00\x00ge\": {\"prompt_tokens\": 1, \
        \"cgmpletion_tokens\": 2}\r\ndata: }\r\n\r\n";
    let whole = tap_stream(Meter::OpenAiCompletion, true, &[stream]);
    let pieces = tap_stream(Meter::OpenAiCompletion, true, &cut(stream, &[1, 8, 13, 42, 65]));
    assert_eq!(whole, pieces);
    assert_eq!(whole, ((None, false), 2));

    // The same shape, plainly: other fields between data lines, and empty data, which is no event.
    for pieces in
        [vec![&b"data: a\nid: 1\ndata: b\n\ndata:\n\n"[..]], vec![b"data: a\nid: 1\ndata: b\n\n", b"data:\n\n"]]
    {
        assert_eq!(tap_stream(Meter::Anthropic, false, &pieces).1, 1);
    }
}

/// `json_scan`: in a root array, a string equal to the key inside an element array left the scanner
/// waiting for a `:`, and the value after the next object's long key was taken as the usage.
#[test]
fn a_key_like_string_in_an_array_element_names_no_value() {
    let body: &[u8] = br#"[["x","usage"],{"longer_key":5}]"#;
    for len in 1..=body.len() {
        let mut scanner = UsageScanner::new(b"usage");
        for piece in body.chunks(len) {
            scanner.feed(piece);
        }
        assert_eq!(scanner.found(), None, "in pieces of {len}");
    }
    let mut scanner = UsageScanner::new(b"usage");
    scanner.feed(br#"[["x","usage"],{"usage":{"prompt_tokens":3}}]"#);
    assert_eq!(scanner.found(), Some(&br#"{"prompt_tokens":3}"#[..]));
}

//! The request-body inspector ([`inspect_body`]) and the changes tollgate makes to a body: the
//! `stream_options.include_usage` splice ([`with_stream_usage`]) and a key's output cap written into a
//! body naming none ([`with_output_cap`]).
//!
//! Input: a selector byte (a provider kind and an endpoint it serves), then the body.
//!
//! Invariants checked:
//! - Inspection never panics, and a refusal is a 400.
//! - An accepted body is a JSON object, at least one choice is asked for, and the splice lies within
//!   the body and inserts one of the texts the inspector knows.
//! - The spliced body keeps every byte outside the splice: its prefix up to the splice and its suffix
//!   after it are the body's own.
//! - When the body parses as a `serde_json::Value`: the spliced body parses too, has exactly one
//!   top-level `stream_options` with exactly one `include_usage`, which is `true`, and equals the body
//!   with only that member set (added when absent, `stream_options` made an object when `null`).
//! - The inspection of the spliced body says `include_usage` is `Some(true)` and asks for no change
//!   but writing `true` over `true`.
//! - A cap slot is offered only when the body names no output member; the capped body keeps every byte
//!   outside the slot, and when the body parses as a `serde_json::Value`, the capped body parses, is
//!   accepted, reads back the cap as its output cap and offers no slot.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use tollgate::providers::{Endpoint, ProviderKind};
use tollgate::proxy::request_body::{Inspected, inspect_body, with_output_cap, with_stream_usage};

/// Every text a splice may insert (`true` over an `include_usage` value).
const TEXTS: [&[u8]; 6] = [
    b"true",
    br#""stream_options":{"include_usage":true}"#,
    br#""stream_options":{"include_usage":true},"#,
    br#"{"include_usage":true}"#,
    br#""include_usage":true"#,
    br#""include_usage":true,"#,
];

/// Exactly one top-level `stream_options` and one `include_usage` in it (serde refuses a repeat).
#[derive(Deserialize)]
struct Once {
    stream_options: OnceInner,
}

#[derive(Deserialize)]
struct OnceInner {
    include_usage: bool,
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let served: Vec<(ProviderKind, Endpoint)> = ProviderKind::ALL
        .into_iter()
        .flat_map(|kind| Endpoint::ALL.into_iter().map(move |endpoint| (kind, endpoint)))
        .filter(|(kind, endpoint)| kind.spec(*endpoint).is_some())
        .collect();
    let (kind, endpoint) = served[usize::from(selector) % served.len()];
    let inspected = match inspect_body(kind, endpoint, body) {
        Ok(i) => i,
        Err(e) => {
            assert_eq!(e.status(), 400, "{e}");
            return;
        }
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    assert_eq!(first, Some(&b'{'), "accepted a body that is not an object");
    assert!(inspected.choices >= 1);
    check_cap(kind, endpoint, body, &inspected, u64::from(selector).saturating_add(1));

    let splice = &inspected.usage_splice;
    assert!(splice.at.start <= splice.at.end && splice.at.end <= body.len(), "splice {:?} outside the body", splice.at);
    assert!(TEXTS.contains(&splice.text), "unknown splice text {:?}", String::from_utf8_lossy(splice.text));
    let out = with_stream_usage(Bytes::copy_from_slice(body), splice);
    let tail = body.len() - splice.at.end;
    assert_eq!(out.len(), splice.at.start + splice.text.len() + tail);
    assert_eq!(&out[..splice.at.start], &body[..splice.at.start], "bytes before the splice changed");
    assert_eq!(&out[out.len() - tail..], &body[splice.at.end..], "bytes after the splice changed");
    assert_eq!(&out[splice.at.start..out.len() - tail], splice.text);

    let Ok(mut want) = serde_json::from_slice::<Value>(body) else { return };
    let got: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!("the spliced body is not JSON ({e}): {}", String::from_utf8_lossy(&out));
    });
    match want.get_mut("stream_options").filter(|o| o.is_object()) {
        Some(options) => options["include_usage"] = Value::Bool(true),
        None => want["stream_options"] = serde_json::json!({ "include_usage": true }),
    }
    assert_eq!(got, want, "the splice changed more than stream_options.include_usage");
    let once: Once = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!("stream_options or include_usage repeated ({e}): {}", String::from_utf8_lossy(&out));
    });
    assert!(once.stream_options.include_usage);

    let again = inspect_body(kind, endpoint, &out).unwrap_or_else(|e| panic!("the spliced body is refused: {e}"));
    assert_eq!(again.include_usage, Some(true));
    assert_eq!(again.usage_splice.text, b"true");
    assert_eq!(&out[again.usage_splice.at.clone()], b"true");
});

/// The cap splice: offered only when no output member is named, and read back at the cap.
fn check_cap(kind: ProviderKind, endpoint: Endpoint, body: &[u8], inspected: &Inspected, cap: u64) {
    let Some(slot) = &inspected.cap_slot else { return };
    assert_eq!(inspected.max_output, None, "a cap slot for a body naming an output member");
    assert!(slot.at.start <= slot.at.end && slot.at.end <= body.len(), "slot {:?} outside the body", slot.at);
    let out = with_output_cap(Bytes::copy_from_slice(body), slot, cap);
    let tail = body.len() - slot.at.end;
    assert_eq!(&out[..slot.at.start], &body[..slot.at.start], "bytes before the cap changed");
    assert_eq!(&out[out.len() - tail..], &body[slot.at.end..], "bytes after the cap changed");
    if serde_json::from_slice::<Value>(body).is_err() {
        return;
    }
    serde_json::from_slice::<Value>(&out).unwrap_or_else(|e| {
        panic!("the capped body is not JSON ({e}): {}", String::from_utf8_lossy(&out));
    });
    let again = inspect_body(kind, endpoint, &out).unwrap_or_else(|e| panic!("the capped body is refused: {e}"));
    assert_eq!(again.max_output, Some(cap), "{}", String::from_utf8_lossy(&out));
    assert!(again.cap_slot.is_none());
}

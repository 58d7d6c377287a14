//! The streaming JSON usage scanner ([`UsageScanner`]), which finds one top-level key's value in a
//! response body as it passes.
//!
//! Input: a selector byte (`usage` or `usageMetadata`), a chunking control (see `common`), then the
//! body.
//!
//! Invariants checked:
//! - Chunking independence: the body fed in one piece, in fuzzer-chosen pieces, and byte by byte gives
//!   the same `found()`.
//! - Agreement with serde_json, when the body is valid JSON: for an object, the found value parses to
//!   the same value serde_json reads for the key (the last one when the key is repeated), and nothing
//!   is found when the key is absent; for an array, the same holds for the last object element that
//!   has the key. Values over the scanner's 64 KiB cap are skipped by design and not compared.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate::metering::usage::json_scan::UsageScanner;

/// The scanner skips values longer than this (`json_scan::MAX_VALUE`).
const MAX_VALUE: usize = 64 * 1024;

fn scan(key: &'static [u8], pieces: &[&[u8]]) -> Option<Vec<u8>> {
    let mut scanner = UsageScanner::new(key);
    for piece in pieces {
        scanner.feed(piece);
    }
    scanner.found().map(<[u8]>::to_vec)
}

/// What serde_json reads for `key` at the scanner's level: a root object's member, or in a root array
/// the member of the last object element that has it. `None` when the body is not valid JSON.
fn serde_view(key: &str, body: &[u8]) -> Option<Option<Value>> {
    let root: Value = serde_json::from_slice(body).ok()?;
    Some(match root {
        Value::Object(map) => map.get(key).cloned(),
        Value::Array(items) => items.iter().rev().find_map(|item| item.as_object()?.get(key).cloned()),
        _ => None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let key: &'static [u8] = if selector & 1 == 0 { b"usage" } else { b"usageMetadata" };
    let (control, body) = common::control_and_payload(rest);

    let whole = scan(key, &[body]);
    let cut = scan(key, &common::chunks(control, body));
    assert_eq!(whole, cut, "the found value depends on how the body was cut");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, scan(key, &bytes), "byte by byte finds something else");

    if body.len() >= MAX_VALUE {
        return;
    }
    let Some(expected) = serde_view(std::str::from_utf8(key).unwrap_or_default(), body) else { return };
    let found = whole.as_deref().map(|v| {
        serde_json::from_slice::<Value>(v)
            .unwrap_or_else(|e| panic!("found {:?}, which is not JSON: {e}", String::from_utf8_lossy(v)))
    });
    assert_eq!(found, expected, "the scanner and serde_json disagree");
});

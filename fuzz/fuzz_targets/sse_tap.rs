//! The SSE framer feeding each provider's usage tap, as `body.rs` wires them: upstream chunks go through
//! [`SseFramer::push`], whatever it hands on through [`UsageTap::pass`], and at the end
//! [`SseFramer::finish`]'s remainder through the tap too.
//!
//! Input: a selector byte (meter, `strip_injected`, a small event cap), a chunking control (see
//! `common`), then the upstream bytes.
//!
//! Invariants checked:
//! - Framer: every piece it hands on is non-empty and ends on an event boundary (a blank line, by the
//!   SSE line-end rules, computed here byte by byte); the pieces and the remainder joined are exactly
//!   the input; it holds no more than the cap, and refuses an event only when the held bytes would
//!   pass the cap; nothing left at the end contains a complete event.
//! - Tap, when nothing can be stripped (`strip_injected` false, or a meter that never strips): bytes
//!   out equal bytes in. When it may strip: the output is the input with bytes taken out (an in-order
//!   subsequence), since the tap only drops whole events or cuts one member out of one.
//! - Usage within a stream: once seen it never disappears, `complete` never reverts, a `Free` meter
//!   never reports any, and Gemini's figures (the only provider whose usage is a running maximum) never
//!   decrease. The other providers report cumulative figures in which the last one wins, so a lower
//!   later figure is not an error there.
//! - Chunking independence: the stream in one piece and the stream in fuzzer-chosen pieces give the
//!   same usage, completeness and event count.
#![no_main]

mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate::proxy::sse::SseFramer;
use tollgate::metering::usage::tap::UsageTap;
use tollgate::metering::usage::{Meter, Usage};

const METERS: [Meter; 6] = [
    Meter::OpenAiCompletion,
    Meter::OpenAiEmbeddings,
    Meter::OpenAiResponses,
    Meter::Anthropic,
    Meter::Gemini,
    Meter::Free,
];

/// The cap for the runs that compare outcomes: larger than any input.
const LARGE_CAP: usize = 1 << 20;

struct Outcome {
    out: Vec<u8>,
    usage: (Option<Usage>, bool),
    events: u64,
    /// The framer refused an event.
    too_large: bool,
}

/// `boundary[i]`: an event may end just before offset `i` of `input`. A line ends at `\r`, `\n` or
/// `\r\n`, and a line end after an empty line ends an event. When that line end is a `\r\n`, the
/// boundary may fall after the `\r` (a chunk ending there cannot show the `\n`) or after the `\n`.
fn event_boundaries(input: &[u8]) -> Vec<bool> {
    let mut boundary = vec![false; input.len() + 1];
    let mut line_empty = true;
    let mut after_cr = false;
    let mut cr_ended_event = false;
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' && after_cr {
            after_cr = false;
            boundary[i + 1] = cr_ended_event;
            continue;
        }
        if b == b'\r' || b == b'\n' {
            cr_ended_event = line_empty;
            boundary[i + 1] = line_empty;
            line_empty = true;
            after_cr = b == b'\r';
        } else {
            line_empty = false;
            after_cr = false;
        }
    }
    boundary
}

fn run(meter: Meter, strip: bool, pieces: &[&[u8]], cap: usize) -> Outcome {
    let input: Vec<u8> = pieces.concat();
    let boundary = event_boundaries(&input);
    let mut framer = SseFramer::new(cap);
    let mut tap = UsageTap::new(meter, strip);
    let mut framed = Vec::with_capacity(input.len());
    let mut out = Vec::with_capacity(input.len());
    let mut consumed = 0;
    let mut last = tap.usage();
    let mut step = |tap: &mut UsageTap, events: Bytes, out: &mut Vec<u8>| {
        out.extend_from_slice(&tap.pass(events));
        let now = tap.usage();
        check_usage_step(meter, last, now);
        last = now;
    };
    for piece in pieces {
        let held = consumed - framed.len();
        consumed += piece.len();
        match framer.push(Bytes::copy_from_slice(piece)) {
            Ok(Some(events)) => {
                assert!(!events.is_empty(), "the framer handed on an empty piece");
                framed.extend_from_slice(&events);
                assert!(boundary[framed.len()], "a piece ends mid-event at {}", framed.len());
                step(&mut tap, events, &mut out);
            }
            Ok(None) => {}
            Err(_) => {
                assert!(held + piece.len() > cap, "refused {} held bytes under the cap {cap}", held + piece.len());
                return Outcome { out, usage: tap.usage(), events: tap.events(), too_large: true };
            }
        }
        assert!(
            consumed - framed.len() <= cap,
            "the framer holds {} bytes over the cap {cap}",
            consumed - framed.len()
        );
    }
    assert_eq!(&input[..framed.len()], &framed[..], "the framer's pieces are not the input");
    // What is left holds no complete event, but for the `\n` of a `\r\n` whose `\r` ended the last one.
    let held_from = framed.len();
    for end in (held_from + 1)..=input.len() {
        let crlf_tail =
            end == held_from + 1 && input[held_from] == b'\n' && held_from > 0 && input[held_from - 1] == b'\r';
        assert!(!boundary[end] || crlf_tail, "an event ending at {end} was held back");
    }
    if let Some(rest) = framer.finish() {
        framed.extend_from_slice(&rest);
        step(&mut tap, rest, &mut out);
    }
    assert_eq!(framed, input, "the framer's output is not the input");
    Outcome { out, usage: tap.usage(), events: tap.events(), too_large: false }
}

/// Usage as one pass changes it: `before` then `now`.
fn check_usage_step(meter: Meter, before: (Option<Usage>, bool), now: (Option<Usage>, bool)) {
    if meter == Meter::Free {
        assert_eq!(now, (None, false), "an unmetered route reported usage");
    }
    assert!(before.0.is_none() || now.0.is_some(), "usage disappeared: {before:?} then {now:?}");
    assert!(!before.1 || now.1, "final usage became running again: {before:?} then {now:?}");
    if meter == Meter::Gemini
        && let (Some(b), Some(n)) = (before.0, now.0)
    {
        assert!(n.input >= b.input && n.output >= b.output, "Gemini usage went down: {b:?} then {n:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let meter = METERS[usize::from(selector & 0x07) % METERS.len()];
    let strip = selector & 0x08 != 0;
    let (control, payload) = common::control_and_payload(rest);
    let pieces = common::chunks(control, payload);

    if selector & 0x80 != 0 {
        // A small cap: the framer's refusal is what is checked; the run stops at it.
        let cap = usize::from(selector >> 4 & 0x07) * 24 + 1;
        run(meter, strip, &pieces, cap);
    }

    let whole = run(meter, strip, &[payload], LARGE_CAP);
    let cut = run(meter, strip, &pieces, LARGE_CAP);
    assert!(!whole.too_large && !cut.too_large);
    let may_strip = strip && matches!(meter, Meter::OpenAiCompletion | Meter::OpenAiEmbeddings | Meter::Gemini);
    for outcome in [&whole, &cut] {
        if may_strip {
            assert!(
                common::is_subsequence(&outcome.out, payload),
                "the stripped stream has bytes the upstream never sent"
            );
        } else {
            assert_eq!(outcome.out, payload, "bytes out differ from bytes in");
        }
    }
    assert_eq!(whole.usage, cut.usage, "usage depends on how the stream was cut");
    assert_eq!(whole.events, cut.events, "the event count depends on how the stream was cut");
});

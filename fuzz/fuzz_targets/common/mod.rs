//! Helpers shared by the fuzz targets: how an input is cut into a control part and a payload, and how
//! the payload is cut into chunks at fuzzer-chosen boundaries. Each target uses some of them.
#![allow(dead_code)]

/// How many leading bytes (after any selector byte) may steer chunking.
const MAX_CONTROL: usize = 15;

/// Splits `data` into a chunking control and a payload: the first byte's low four bits say how many
/// control bytes follow (at most [`MAX_CONTROL`]); the rest is the payload. A seed that starts with
/// `0x00` is its payload in one piece.
pub fn control_and_payload(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = usize::from(first & 0x0f).min(MAX_CONTROL).min(rest.len());
    rest.split_at(n)
}

/// Cuts `payload` into chunks whose lengths come from `control` in turn (each byte plus one, so no
/// chunk is empty but the last may be short); with no control, one chunk.
pub fn chunks<'a>(control: &[u8], payload: &'a [u8]) -> Vec<&'a [u8]> {
    if control.is_empty() {
        return vec![payload];
    }
    let mut out = Vec::new();
    let mut rest = payload;
    for &c in control.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at((usize::from(c) + 1).min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// Whether `small` is `big` with some bytes taken out (every byte of `small` found in order in `big`).
pub fn is_subsequence(small: &[u8], big: &[u8]) -> bool {
    let mut it = big.iter();
    small.iter().all(|b| it.any(|c| c == b))
}

//! A byte-level server-sent-events framer. It hands on upstream bytes only up to the end of the last
//! complete event (a blank line, with `\n`, `\r\n` or `\r` line ends), so a stream cut mid-event never
//! shows the caller a torn event and a terminal error event always starts on a clean boundary. Only the
//! current incomplete event is held, and its size is capped.

use bytes::{Bytes, BytesMut};

/// An upstream event grew past the configured cap without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge;

pub struct SseFramer {
    /// Bytes of the current, incomplete event.
    carry: BytesMut,
    max_event: usize,
    lines: LineState,
}

/// Where the scan stands between two chunks.
struct LineState {
    /// The current line has no bytes yet (so an end of line now ends an event).
    line_empty: bool,
    /// The previous byte was `\r`, so a `\n` now belongs to the same line end.
    after_cr: bool,
}

impl SseFramer {
    pub fn new(max_event: usize) -> SseFramer {
        SseFramer { carry: BytesMut::new(), max_event, lines: LineState { line_empty: true, after_cr: false } }
    }

    /// Takes the next upstream chunk; returns the bytes that complete one or more events, if any.
    /// Whole events within `chunk` are passed on without a copy.
    pub fn push(&mut self, chunk: Bytes) -> Result<Option<Bytes>, EventTooLarge> {
        if self.carry.is_empty() {
            let Some(end) = self.lines.scan(&chunk) else {
                self.keep(&chunk)?;
                return Ok(None);
            };
            if end == chunk.len() {
                return Ok(Some(chunk));
            }
            self.keep(&chunk[end..])?;
            return Ok(Some(chunk.slice(..end)));
        }
        let start = self.carry.len();
        self.keep(&chunk)?;
        // Scan only the new bytes: the line state carries over from the old ones.
        let found = self.lines.scan(&self.carry[start..]);
        Ok(found.map(|end| self.carry.split_to(start + end).freeze()))
    }

    /// The bytes left when the upstream ended: an incomplete last event, passed on as it is.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.carry.is_empty()).then(|| self.carry.split().freeze())
    }

    fn keep(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        if self.carry.len().saturating_add(bytes.len()) > self.max_event {
            return Err(EventTooLarge);
        }
        self.carry.extend_from_slice(bytes);
        Ok(())
    }
}

impl LineState {
    /// Advances the line state over `bytes`; returns the offset just past the last event end in them.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut last = None;
        let mut i = 0;
        while i < bytes.len() {
            let Some(off) = memchr::memchr2(b'\r', b'\n', &bytes[i..]) else {
                self.line_empty = false;
                self.after_cr = false;
                break;
            };
            let at = i + off;
            i = at + 1;
            if off > 0 {
                self.line_empty = false;
                self.after_cr = false;
            }
            if bytes[at] == b'\n' && self.after_cr {
                // Second half of a `\r\n`: if that line end closed an event, include it.
                self.after_cr = false;
                if last == Some(at) {
                    last = Some(at + 1);
                }
                continue;
            }
            if self.line_empty {
                last = Some(at + 1);
            }
            self.line_empty = true;
            self.after_cr = bytes[at] == b'\r';
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], cuts: &[usize]) -> (Vec<Bytes>, Option<Bytes>) {
        let mut f = SseFramer::new(1 << 20);
        let mut out = Vec::new();
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            if let Some(b) = f.push(Bytes::copy_from_slice(&input[prev..c])).unwrap() {
                out.push(b);
            }
            prev = c;
        }
        (out, f.finish())
    }

    fn ends_an_event(b: &[u8]) -> bool {
        b.ends_with(b"\n\n")
            || b.ends_with(b"\r\r")
            || b.ends_with(b"\r\n\r\n")
            || b.ends_with(b"\n\r\n")
            || b.ends_with(b"\r\n\r")
    }

    #[test]
    fn whole_events_pass_without_holding() {
        let (out, rest) = run(b"data: a\n\ndata: b\n\n", &[]);
        assert_eq!(out, vec![Bytes::from_static(b"data: a\n\ndata: b\n\n")]);
        assert_eq!(rest, None);
    }

    #[test]
    fn every_line_ending_style_and_every_split_point() {
        for input in [
            &b"event: x\ndata: {\"a\":1}\n\ndata: [DONE]\n\n"[..],
            b"data: {\"a\":1}\r\n\r\ndata: {\"b\":2}\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
            b": comment\n\nevent: e\r\ndata: 1\r\n\r\n",
        ] {
            for cut in 0..=input.len() {
                for cut2 in cut..=input.len() {
                    let (out, rest) = run(input, &[cut, cut2]);
                    let mut joined: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
                    for b in &out {
                        assert!(ends_an_event(b) || b.as_ref() == b"\n", "{b:?} from {input:?} cut at {cut},{cut2}");
                    }
                    if let Some(r) = rest {
                        joined.extend_from_slice(&r);
                    }
                    assert_eq!(joined, input, "cut at {cut},{cut2}");
                }
            }
        }
    }

    #[test]
    fn an_incomplete_event_is_held_until_it_ends() {
        let mut f = SseFramer::new(1024);
        assert_eq!(f.push(Bytes::from_static(b"data: {\"par")).unwrap(), None);
        assert_eq!(f.push(Bytes::from_static(b"tial\":1}\n")).unwrap(), None);
        assert_eq!(
            f.push(Bytes::from_static(b"\ndata: next")).unwrap().unwrap(),
            Bytes::from_static(b"data: {\"partial\":1}\n\n")
        );
        assert_eq!(f.finish().unwrap(), Bytes::from_static(b"data: next"));
    }

    #[test]
    fn an_event_over_the_cap_is_refused() {
        let mut f = SseFramer::new(16);
        assert_eq!(f.push(Bytes::from_static(b"data: 0123456789")).unwrap(), None);
        assert_eq!(f.push(Bytes::from_static(b"abcdef")), Err(EventTooLarge));
        // A big chunk made of small complete events is fine.
        let mut f = SseFramer::new(16);
        let many = b"data: 1\n\n".repeat(100);
        assert_eq!(f.push(Bytes::from(many.clone())).unwrap().unwrap().len(), many.len());
    }
}

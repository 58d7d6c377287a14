//! Finds the value of one top-level key (`usage`, `usageMetadata`) in a JSON body as its chunks pass,
//! without holding the body: a byte-level state machine over strings, escapes and nesting that copies
//! only the value it is after (capped). A body that is a JSON array (Gemini's non-SSE stream) is read as
//! a sequence of objects, and the key's last value wins.

/// Values larger than this are not usage objects; they are skipped.
const MAX_VALUE: usize = 64 * 1024;

pub struct UsageScanner {
    key: &'static [u8],
    /// Nesting depth: 1 inside the root object (or inside an element of a root array).
    depth: u32,
    /// Depth at which keys are read: 1, or 2 when the root is an array.
    object_depth: u32,
    started: bool,
    in_string: bool,
    escaped: bool,
    /// At `object_depth`, the next string is a key.
    expect_key: bool,
    /// The key string being read, while it can still equal `key`.
    key_buf: Vec<u8>,
    key_matched: bool,
    /// Between a matching key and its `:`.
    awaiting_colon: bool,
    /// The value being copied, from its first byte.
    value: Option<Vec<u8>>,
    /// The last complete value found.
    found: Option<Vec<u8>>,
}

impl UsageScanner {
    pub fn new(key: &'static [u8]) -> UsageScanner {
        UsageScanner {
            key,
            depth: 0,
            object_depth: 1,
            started: false,
            in_string: false,
            escaped: false,
            expect_key: false,
            key_buf: Vec::new(),
            key_matched: false,
            awaiting_colon: false,
            value: None,
            found: None,
        }
    }

    /// The last complete value of the key seen so far.
    pub fn found(&self) -> Option<&[u8]> {
        self.found.as_deref()
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(&first) = bytes.first() {
            let mut b = first;
            // Inside a string that is neither a candidate key nor part of the copied value, only a
            // quote or a backslash changes anything: jump to the next one.
            if self.in_string && !self.escaped && !self.key_matched && self.value.is_none() {
                match memchr::memchr2(b'"', b'\\', bytes) {
                    Some(at) => {
                        bytes = &bytes[at..];
                        b = bytes[0];
                    }
                    None => return,
                }
            }
            self.step(b);
            bytes = &bytes[1..];
        }
    }

    fn step(&mut self, b: u8) {
        if let Some(v) = self.value.as_mut() {
            if v.len() < MAX_VALUE {
                v.push(b);
            } else {
                self.value = None;
            }
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
                self.note_key_byte(b);
            } else if b == b'\\' {
                self.escaped = true;
                self.note_key_byte(b);
            } else if b == b'"' {
                self.in_string = false;
                if self.key_matched {
                    self.key_matched = false;
                    self.awaiting_colon = self.key_buf == self.key;
                }
            } else {
                self.note_key_byte(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                // A string after a matching key and before any `:` means that key was not a member's
                // key (a string in an array element of a root array): it names no value.
                self.awaiting_colon = false;
                if self.depth == self.object_depth && self.expect_key {
                    self.expect_key = false;
                    self.key_buf.clear();
                    self.key_matched = true;
                }
            }
            b'{' | b'[' => {
                if !self.started {
                    self.started = true;
                    if b == b'[' {
                        self.object_depth = 2;
                    }
                }
                self.depth = self.depth.saturating_add(1);
                if self.depth == self.object_depth && b == b'{' {
                    self.expect_key = true;
                }
            }
            b'}' | b']' => {
                if self.depth == self.object_depth {
                    self.end_value(true);
                }
                self.depth = self.depth.saturating_sub(1);
            }
            b',' if self.depth == self.object_depth => {
                self.end_value(true);
                self.expect_key = true;
            }
            b':' if self.depth == self.object_depth && self.awaiting_colon => {
                self.awaiting_colon = false;
                self.value = Some(Vec::with_capacity(256));
            }
            _ => {}
        }
    }

    fn note_key_byte(&mut self, b: u8) {
        if self.key_matched {
            if self.key_buf.len() < self.key.len() {
                self.key_buf.push(b);
            } else {
                self.key_matched = false;
            }
        }
    }

    /// At a `,` or closing bracket of the object holding the key: the value, if being copied, is done
    /// (without the delimiter just pushed).
    fn end_value(&mut self, drop_last: bool) {
        if let Some(mut v) = self.value.take() {
            if drop_last {
                v.pop();
            }
            self.found = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], key: &'static [u8], piece: usize) -> Option<String> {
        let mut s = UsageScanner::new(key);
        for chunk in body.chunks(piece.max(1)) {
            s.feed(chunk);
        }
        s.found().map(|v| String::from_utf8(v.to_vec()).unwrap().trim().to_owned())
    }

    #[test]
    fn finds_the_top_level_value_however_the_body_is_cut() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {fake}","usage":1}}],"usage" : {"prompt_tokens":13,"completion_tokens":5,"details":{"a":[1,2]}} ,"z":null}"#;
        for piece in 1..body.len() {
            assert_eq!(
                scan_in_pieces(body, b"usage", piece).as_deref(),
                Some(r#"{"prompt_tokens":13,"completion_tokens":5,"details":{"a":[1,2]}}"#),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn the_key_may_be_last_and_escapes_do_not_fool_it() {
        assert_eq!(scan_in_pieces(br#"{"a":"\\","usage":{"x":1}}"#, b"usage", 3).as_deref(), Some(r#"{"x":1}"#));
        assert_eq!(scan_in_pieces(br#"{"usages":{"x":1},"usag":2}"#, b"usage", 4), None);
        assert_eq!(scan_in_pieces(br#"{"a":{"usage":{"x":1}}}"#, b"usage", 5), None, "nested keys are not top-level");
        assert_eq!(scan_in_pieces(br#"{"usage":null}"#, b"usage", 2).as_deref(), Some("null"));
    }

    #[test]
    fn any_json_spacing_is_read_the_same() {
        let forms = [
            r#"{"id":"x","choices":[{"text":"\"usage\":{}"}],"usage":{"prompt_tokens":13,"completion_tokens":5}}"#,
            r#"{"id": "x", "choices": [{"text": "\"usage\": {}"}], "usage": {"prompt_tokens": 13, "completion_tokens": 5}}"#,
            "{\n  \"id\": \"x\",\n  \"usage\": {\n    \"prompt_tokens\": 13,\n    \"completion_tokens\": 5\n  },\n  \"choices\": []\n}",
            "{\r\n\t\"usage\" :\r\n\t{ \"prompt_tokens\" : 13 , \"completion_tokens\" : 5 } ,\r\n\t\"id\" : \"x\"\r\n}\r\n",
        ];
        for body in forms {
            for piece in [1, 2, 7, body.len()] {
                let mut seen = None;
                let found = scan_in_pieces(body.as_bytes(), b"usage", piece).unwrap();
                crate::metering::usage::Meter::OpenAiCompletion.read_usage(found.as_bytes(), &mut seen);
                assert_eq!(
                    seen,
                    Some(crate::metering::usage::Usage { input: 13, output: 5 }),
                    "{body} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_key_like_string_in_an_array_element_names_no_value() {
        let body = br#"[["x","usage"],{"longer_key":5}]"#;
        for piece in 1..=body.len() {
            assert_eq!(scan_in_pieces(body, b"usage", piece), None, "piece {piece}");
        }
    }

    #[test]
    fn in_an_array_of_objects_the_last_value_wins() {
        let body = br#"[{"candidates":[],"usageMetadata":{"promptTokenCount":5}},
{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":9}}]"#;
        assert_eq!(
            scan_in_pieces(body, b"usageMetadata", 7).as_deref(),
            Some(r#"{"promptTokenCount":5,"candidatesTokenCount":9}"#)
        );
    }
}

//! tollgate's `"tollgate"` member, both ways, without building a DOM. In a request body it is removed
//! (key, value and one separating comma) before anything goes upstream, and read for `regenerate_key`. In
//! a non-streaming JSON response that provisions a trial key, `"tollgate": {"provisioned_key", "claim_url"}`
//! is added before the final `}`: the body streams through as it arrives, holding back only the bytes from
//! its latest `}` on, until the end shows which `}` was the last.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::error::ProxyError;

/// What the request's `"tollgate"` member asks.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TollgateMember {
    #[serde(default)]
    pub regenerate_key: bool,
}

/// Reads the member's value (at `value` in `body`).
pub fn read_member(body: &[u8], value: &Range<usize>) -> Result<TollgateMember, ProxyError> {
    let wrong = || {
        ProxyError::InvalidJson(
            "Request body has a `tollgate` member tollgate cannot read (it must be an object whose only member \
             is `regenerate_key`, a boolean)"
                .to_owned(),
        )
    };
    let text = body.get(value.clone()).ok_or_else(wrong)?;
    if text.first() != Some(&b'{') {
        return Err(wrong());
    }
    serde_json::from_slice(text).map_err(|_| wrong())
}

/// The body without its top-level member whose value lies at `value`: the member's key, the value, and
/// the comma that separated it from a neighbour. `None` if the bytes around the value are not those of
/// an object member (then the body is refused rather than forwarded with the member).
pub fn without_member(body: &[u8], value: &Range<usize>) -> Option<Bytes> {
    let is_space = |b: &u8| b.is_ascii_whitespace();
    // Back from the value: spaces, `:`, spaces, the key's closing quote, the key, its opening quote.
    let before_colon = body[..value.start].iter().rposition(|b| !is_space(b))?;
    if body[before_colon] != b':' {
        return None;
    }
    let close_quote = body[..before_colon].iter().rposition(|b| !is_space(b))?;
    if body[close_quote] != b'"' {
        return None;
    }
    let open_quote = opening_quote(body, close_quote)?;
    let before_key = body[..open_quote].iter().rposition(|b| !is_space(b))?;
    let after_value = body[value.end..].iter().position(|b| !is_space(b)).map(|i| value.end + i)?;
    let removed = match (body[before_key], body[after_value]) {
        // A member after another: from the comma before it to the end of its value.
        (b',', _) => before_key..value.end,
        // The first member with others after it: up to and including the comma after it.
        (b'{', b',') => open_quote..after_value + 1,
        // The only member.
        (b'{', b'}') => open_quote..value.end,
        _ => return None,
    };
    let mut out = Vec::with_capacity(body.len() - removed.len());
    out.extend_from_slice(&body[..removed.start]);
    out.extend_from_slice(&body[removed.end..]);
    Some(Bytes::from(out))
}

/// The `"` that opens the JSON string closed at `close`: the nearest one before it that no backslash
/// escapes.
fn opening_quote(body: &[u8], close: usize) -> Option<usize> {
    let mut at = close;
    loop {
        at = body[..at].iter().rposition(|&b| b == b'"')?;
        let backslashes = body[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
    }
}

/// The most bytes held back after a `}` (whitespace after the last one); past it the member is not added.
const MAX_HELD: usize = 64 * 1024;

/// Adds a member to the top-level object of a body that passes through in pieces.
pub struct MemberSplice {
    /// `"tollgate":{…}`, without a leading comma.
    member: Bytes,
    /// From the latest `}` on; empty, or starting with `}`.
    held: BytesMut,
    /// Whether the body's first byte other than whitespace was `{` (`None`: none seen yet).
    object: Option<bool>,
    /// The last byte other than whitespace before `held`.
    before_held: u8,
    gave_up: bool,
}

impl MemberSplice {
    pub fn new(member: Bytes) -> MemberSplice {
        MemberSplice { member, held: BytesMut::new(), object: None, before_held: 0, gave_up: false }
    }

    /// The bytes of `data` that can go to the caller now (with any held before them).
    pub fn pass(&mut self, data: Bytes) -> Bytes {
        if self.gave_up {
            return self.release(data);
        }
        let significant = |b: &u8| !b.is_ascii_whitespace();
        if self.object.is_none()
            && let Some(first) = data.iter().find(|b| significant(b))
        {
            self.object = Some(*first == b'{');
            if *first != b'{' {
                self.gave_up = true;
                return self.release(data);
            }
        }
        let Some(last) = data.iter().rposition(significant) else {
            if self.held.is_empty() {
                return data;
            }
            self.held.extend_from_slice(&data);
            if self.held.len() > MAX_HELD {
                self.gave_up = true;
                return self.release(Bytes::new());
            }
            return Bytes::new();
        };
        if data[last] != b'}' {
            self.before_held = data[last];
            return self.release(data);
        }
        if let Some(before) = data[..last].iter().rposition(significant) {
            self.before_held = data[before];
        } else if !self.held.is_empty() {
            self.before_held = b'}';
        }
        let out = self.release(data.slice(..last));
        self.held.extend_from_slice(&data[last..]);
        out
    }

    /// What is left at the end of the body: the member, then the final `}` and what followed it.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.gave_up || self.object != Some(true) || self.held.first() != Some(&b'}') {
            return (!self.held.is_empty()).then(|| self.held.split().freeze());
        }
        let mut out = BytesMut::with_capacity(self.member.len() + 1 + self.held.len());
        if self.before_held != b'{' {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(&self.member);
        out.extend_from_slice(&self.held.split());
        Some(out.freeze())
    }

    /// `data` after whatever is held.
    fn release(&mut self, data: Bytes) -> Bytes {
        if self.held.is_empty() {
            return data;
        }
        let mut out = self.held.split();
        out.extend_from_slice(&data);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strip(body: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Find<'a> {
            #[serde(borrow)]
            tollgate: &'a serde_json::value::RawValue,
        }
        let found: Find = serde_json::from_str(body).unwrap();
        let start = found.tollgate.get().as_ptr() as usize - body.as_ptr() as usize;
        let value = start..start + found.tollgate.get().len();
        without_member(body.as_bytes(), &value).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn the_member_leaves_with_one_comma_wherever_it_stands() {
        let cases = [
            (r#"{"tollgate":{"regenerate_key":true},"model":"m"}"#, r#"{"model":"m"}"#),
            (r#"{"model":"m", "tollgate" : {} }"#, r#"{"model":"m" }"#),
            (r#"{"a":1,"tollgate":{"regenerate_key":true},"b":2}"#, r#"{"a":1,"b":2}"#),
            (r#"{ "tollgate": {"regenerate_key": false} }"#, r#"{  }"#),
            (r#"{"x":"\"tollgate\":","tollgate":{}}"#, r#"{"x":"\"tollgate\":"}"#),
            (r#"{"\u0074ollgate":{},"m":1}"#, r#"{"m":1}"#),
        ];
        for (sent, want) in cases {
            let got = strip(sent).unwrap();
            assert_eq!(got, want, "{sent}");
            serde_json::from_str::<serde_json::Value>(&got).unwrap();
        }
    }

    #[test]
    fn the_member_must_be_an_object_of_known_members() {
        let read = |text: &str| read_member(text.as_bytes(), &(0..text.len()));
        assert_eq!(read(r#"{"regenerate_key":true}"#).unwrap(), TollgateMember { regenerate_key: true });
        assert_eq!(read("{}").unwrap(), TollgateMember::default());
        for bad in [r#"{"regenerate_key":"yes"}"#, r#"{"regen":true}"#, "true", "[]", "null"] {
            assert_eq!(read(bad).unwrap_err().status(), 400, "{bad}");
        }
    }

    fn spliced(pieces: &[&str]) -> String {
        let mut splice = MemberSplice::new(Bytes::from_static(br#""tollgate":{"k":1}"#));
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(&splice.pass(Bytes::copy_from_slice(p.as_bytes())));
        }
        out.extend_from_slice(&splice.finish().unwrap_or_default());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_member_is_added_before_the_last_brace_however_the_body_is_cut() {
        assert_eq!(spliced(&[r#"{"a":{"b":1}}"#]), r#"{"a":{"b":1},"tollgate":{"k":1}}"#);
        assert_eq!(spliced(&["{", "}", "\n"]), "{\"tollgate\":{\"k\":1}}\n");
        assert_eq!(spliced(&[" { } "]), r#" { "tollgate":{"k":1}} "#);
        assert_eq!(spliced(&[r#"{"a":{}"#, "}", "  ", "\n"]), "{\"a\":{},\"tollgate\":{\"k\":1}}  \n");
        assert_eq!(spliced(&[r#"{"a":"}"#, r#"x"}"#]), r#"{"a":"}x","tollgate":{"k":1}}"#);
        // Not an object: passed through untouched.
        assert_eq!(spliced(&["[1,", "{}]"]), "[1,{}]");
        assert_eq!(spliced(&[""]), "");
    }

    proptest! {
        /// Any object, cut anywhere: the output parses, and is the input with the member added.
        #[test]
        fn any_cut_of_any_object_gets_the_member(
            members in prop::collection::vec(("[a-z]{1,4}", "[a-z{} ]{0,6}"), 0..4),
            cuts in prop::collection::vec(0usize..64, 0..5),
            trailing in "[ \n]{0,3}",
        ) {
            let object: serde_json::Map<String, serde_json::Value> =
                members.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            let text = format!("{}{trailing}", serde_json::to_string_pretty(&object).unwrap());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in cuts {
                pieces.push(&text[from..c]);
                from = c;
            }
            pieces.push(&text[from..]);
            let out: serde_json::Value = serde_json::from_str(&spliced(&pieces)).unwrap();
            let mut want = serde_json::Value::Object(object);
            want["tollgate"] = serde_json::json!({"k": 1});
            prop_assert_eq!(out, want);
        }
    }
}

//! The top-level members of one complete JSON object, such as an SSE event's data: where a key's member
//! starts, where its value lies, and what to cut to remove it. A byte walk that accepts any valid JSON
//! spacing (compact, `", "` and `": "`, pretty-printed, CRLF) and jumps over strings with `memchr`;
//! malformed input finds nothing. Keys are compared as written (an escaped spelling of a key is not it).

use std::ops::Range;

/// One member of the object: `start` is its key's opening quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub start: usize,
    pub value: Range<usize>,
}

/// For each of `keys`, its last top-level member in `json` (JSON's usual last-wins reading).
pub fn find<const N: usize>(json: &[u8], keys: [&[u8]; N]) -> [Option<Member>; N] {
    let mut found = [const { None }; N];
    if walk(json, |key, member| {
        if let Some(slot) = keys.iter().position(|k| *k == key) {
            found[slot] = Some(member);
        }
    })
    .is_none()
    {
        return [const { None }; N];
    }
    found
}

/// The object's last member if it is `key` with a scalar value (`null`, a number, a boolean), read
/// backwards from the closing brace in constant time: where OpenAI-style chunks put `usage`. In
/// well-formed JSON a suffix `, "key" : value }` can only be the root's last member (the quote before
/// the key follows a `,` or `{`, so it opens a string, and the final `}` closes the root); [`find`]
/// gives the same answer by walking the whole object.
pub fn last_scalar(json: &[u8], key: &[u8]) -> Option<Member> {
    let close = rskip_space(json, json.len()).checked_sub(1)?;
    if json.get(close) != Some(&b'}') {
        return None;
    }
    let value_end = rskip_space(json, close);
    let head = json.get(..value_end)?;
    let value_start =
        head.iter().rposition(|b| !matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'+' | b'-' | b'E'))? + 1;
    if value_start == value_end {
        return None;
    }
    let colon = rskip_space(json, value_start).checked_sub(1)?;
    if json.get(colon) != Some(&b':') {
        return None;
    }
    let key_end = rskip_space(json, colon);
    let start = key_end.checked_sub(key.len().checked_add(2)?)?;
    let quoted = json.get(start..key_end)?;
    if quoted.first() != Some(&b'"') || quoted.last() != Some(&b'"') || quoted.get(1..quoted.len() - 1) != Some(key) {
        return None;
    }
    let before = rskip_space(json, start).checked_sub(1)?;
    matches!(json.get(before), Some(b',' | b'{')).then_some(Member { start, value: value_start..value_end })
}

/// Calls `each` with every top-level member's key (as written, without quotes); `None` if `json` is not
/// one well-formed object.
fn walk(json: &[u8], mut each: impl FnMut(&[u8], Member)) -> Option<()> {
    let mut i = skip_space(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(json, i + 1);
    if json.get(i) == Some(&b'}') {
        return Some(());
    }
    loop {
        let start = i;
        if json.get(start) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(json, start)?;
        i = skip_space(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_space(json, i + 1);
        let value_end = value_end(json, value_start)?;
        each(json.get(start + 1..key_end - 1)?, Member { start, value: value_start..value_end });
        i = skip_space(json, value_end);
        match json.get(i)? {
            b',' => i = skip_space(json, i + 1),
            b'}' => return Some(()),
            _ => return None,
        }
    }
}

/// What to cut from `json` to remove `member` and one separator, so the object stays well-formed and
/// spaced as before: the comma before it and the member, or, for the first member, the member, the
/// comma after it and the space up to the next key.
pub fn removal(json: &[u8], member: &Member) -> Range<usize> {
    let before = json.get(..member.start).and_then(|head| head.iter().rposition(|b| !is_space(*b)));
    match before {
        Some(comma) if json.get(comma) == Some(&b',') => comma..member.value.end,
        _ => {
            let after = skip_space(json, member.value.end);
            if json.get(after) == Some(&b',') {
                member.start..skip_space(json, after + 1)
            } else {
                member.start..member.value.end
            }
        }
    }
}

/// Whether `value` is an empty array, however spaced.
pub fn is_empty_array(value: &[u8]) -> bool {
    value.strip_prefix(b"[").and_then(|v| v.strip_suffix(b"]")).is_some_and(|inner| inner.iter().all(|b| is_space(*b)))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Back from `end` (exclusive) over spaces: the end of what precedes them.
fn rskip_space(json: &[u8], end: usize) -> usize {
    json.get(..end).and_then(|head| head.iter().rposition(|b| !is_space(*b))).map_or(0, |i| i + 1)
}

fn skip_space(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(|b| is_space(*b)) {
        i += 1;
    }
    i
}

/// Just past the string whose opening quote is at `open`.
fn string_end(json: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        match json.get(i)? {
            b'\\' => i += 2,
            _ => return Some(i + 1),
        }
    }
}

/// Just past the value starting at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        &open @ (b'{' | b'[') => {
            // In well-formed JSON the other kind of bracket is balanced inside, so only strings and
            // this kind count: jump from one to the next.
            let close = if open == b'{' { b'}' } else { b']' };
            let mut depth = 0usize;
            let mut i = start;
            loop {
                i += memchr::memchr3(b'"', open, close, json.get(i..)?)?;
                match json.get(i)? {
                    b'"' => i = string_end(json, i)?,
                    b if *b == open => {
                        depth += 1;
                        i += 1;
                    }
                    _ => {
                        depth = depth.checked_sub(1)?;
                        i += 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                }
            }
        }
        _ => {
            let len = json.get(start..)?.iter().position(|b| matches!(b, b',' | b'}' | b']') || is_space(*b));
            let end = start + len.unwrap_or(json.len() - start);
            (end > start).then_some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
        let [m] = find(json.as_bytes(), [key.as_bytes()]);
        m.map(|m| &json[m.value])
    }

    fn without(json: &str, key: &str) -> String {
        let [m] = find(json.as_bytes(), [key.as_bytes()]);
        let cut = removal(json.as_bytes(), &m.unwrap());
        format!("{}{}", &json[..cut.start], &json[cut.end..])
    }

    #[test]
    fn finds_top_level_values_in_any_spacing() {
        for json in [
            r#"{"id":"c","choices":[{"usage":1,"t":"\"usage\":2"}],"usage":null}"#,
            r#"{"id": "c", "choices": [{"usage": 1, "t": "\"usage\": 2"}], "usage": null}"#,
            "{\n  \"id\": \"c\",\n  \"choices\": [\n    {\"usage\": 1, \"t\": \"\\\"usage\\\": 2\"}\n  ],\n  \"usage\": null\n}",
            "{\r\n\t\"id\" : \"c\" ,\r\n\t\"choices\" : [ { \"usage\" : 1 , \"t\" : \"x\" } ] ,\r\n\t\"usage\" : null\r\n}",
        ] {
            assert_eq!(value(json, "usage"), Some("null"), "{json}");
            assert_eq!(value(json, "id"), Some(r#""c""#), "{json}");
            assert!(value(json, "choices").unwrap().starts_with('['), "{json}");
            assert_eq!(value(json, "t"), None, "nested keys are not top-level");
        }
        assert_eq!(value(r#"{"a":{"b":[1,{"c":"}"}]},"usage":{"x":1}}"#, "usage"), Some(r#"{"x":1}"#));
        assert_eq!(value(r#"{"usage":1,"usage":2}"#, "usage"), Some("2"), "last wins");
    }

    #[test]
    fn the_last_scalar_member_is_found_from_the_end_as_the_walk_finds_it() {
        let cases = [
            (r#"{"id":"c","choices":[{"t":"x"}],"usage":null}"#, Some("null")),
            (r#"{"id": "c", "choices": [], "usage": null}"#, Some("null")),
            ("{\r\n  \"id\": \"c\",\r\n  \"usage\" :\tnull\r\n}\r\n", Some("null")),
            (r#"{"usage":null}"#, Some("null")),
            (r#"{"id":"c","usage":12}"#, Some("12")),
            (r#"{"usage":null,"id":"c"}"#, None),
            (r#"{"id":"c","usage":{"a":null}}"#, None),
            (r#"{"id":"c","t":"\"usage\":null}"#, None),
            (r#"{"id":"c","xusage":null}"#, None),
            (r#"{"id":"c","a":{"usage":null}}"#, None),
            ("", None),
            ("}", None),
            (r#""usage":null}"#, None),
        ];
        for (json, expected) in cases {
            let fast = last_scalar(json.as_bytes(), b"usage");
            assert_eq!(fast.as_ref().map(|m| &json[m.value.clone()]), expected, "{json}");
            if fast.is_some() {
                let [walked] = find(json.as_bytes(), [b"usage"]);
                assert_eq!(fast, walked, "{json}");
            }
        }
    }

    #[test]
    fn malformed_input_finds_nothing_and_never_panics() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"usage""#,
            r#"{"usage":}"#,
            r#"{"usage":1"#,
            r#"{"a":"\"#,
            r#"{"a":[}"#,
            "{}}",
            "\"",
            "{\"a\":1 \"b\":2}",
        ] {
            assert_eq!(value(bad, "usage"), None, "{bad}");
            assert_eq!(value(bad, "a"), None, "{bad}");
        }
        assert_eq!(value("{}", "usage"), None);
    }

    #[test]
    fn removal_keeps_the_object_as_it_would_have_been_written() {
        let cases = [
            (r#"{"id":"c","usage":null}"#, r#"{"id":"c"}"#),
            (r#"{"id": "c", "usage": null}"#, r#"{"id": "c"}"#),
            (r#"{"usage": null, "id": "c"}"#, r#"{"id": "c"}"#),
            (r#"{"a":1, "usage": null, "b":2}"#, r#"{"a":1, "b":2}"#),
            ("{\n  \"id\": \"c\",\n  \"usage\": null\n}", "{\n  \"id\": \"c\"\n}"),
            ("{\n  \"usage\": null,\n  \"id\": \"c\"\n}", "{\n  \"id\": \"c\"\n}"),
            ("{\r\n  \"id\": \"c\",\r\n  \"usage\": null\r\n}", "{\r\n  \"id\": \"c\"\r\n}"),
            (r#"{"usage":null}"#, "{}"),
        ];
        for (json, expected) in cases {
            assert_eq!(without(json, "usage"), expected, "{json}");
        }
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z \"\\\\{}\\[\\],:]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Python's `json.dumps` defaults, with CRLF and tabs where a pretty printer puts newlines.
    fn write(v: &serde_json::Value, form: u8) -> String {
        match form % 4 {
            0 => v.to_string(),
            1 => serde_json::to_string_pretty(v).unwrap(),
            2 => serde_json::to_string_pretty(v).unwrap().replace('\n', "\r\n\t"),
            _ => match v {
                serde_json::Value::Object(m) => {
                    let members: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{} : {}", serde_json::Value::from(k.as_str()), write(v, 3)))
                        .collect();
                    format!("{{ {} }}", members.join(" , "))
                }
                serde_json::Value::Array(a) => {
                    format!("[{}]", a.iter().map(|v| write(v, 3)).collect::<Vec<_>>().join(", "))
                }
                other => other.to_string(),
            },
        }
    }

    proptest! {
        /// For any object in any spacing, each top-level key's value is what serde reads, and removing
        /// a member leaves what serde reads as the object without it.
        #[test]
        fn the_walk_agrees_with_serde(
            object in prop::collection::btree_map("[a-z]{1,5}", json(), 0..6),
            form in any::<u8>(),
        ) {
            let value = serde_json::Value::Object(object.clone().into_iter().collect());
            let text = write(&value, form);
            for (key, expected) in &object {
                let [m] = find(text.as_bytes(), [key.as_bytes()]);
                let m = m.unwrap();
                let got: serde_json::Value = serde_json::from_str(&text[m.value.clone()]).unwrap();
                prop_assert_eq!(&got, expected);
                let cut = removal(text.as_bytes(), &m);
                let rest: serde_json::Value =
                    serde_json::from_str(&format!("{}{}", &text[..cut.start], &text[cut.end..])).unwrap();
                let mut without = object.clone();
                without.remove(key);
                prop_assert_eq!(rest, serde_json::Value::Object(without.into_iter().collect()));
                if let Some(fast) = last_scalar(text.as_bytes(), key.as_bytes()) {
                    prop_assert_eq!(fast, m);
                }
            }
            let [missing] = find(text.as_bytes(), [b"NOT"]);
            prop_assert!(missing.is_none());
        }
    }

    #[test]
    fn empty_arrays_in_any_spacing() {
        assert!(is_empty_array(b"[]") && is_empty_array(b"[ ]") && is_empty_array(b"[\r\n  ]"));
        assert!(!is_empty_array(b"[0]") && !is_empty_array(b"{}") && !is_empty_array(b"[") && !is_empty_array(b""));
    }
}

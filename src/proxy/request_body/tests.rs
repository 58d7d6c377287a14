//! The body inspector and its splices: what is read on each route, what is refused, and that each
//! splice changes only its member.

use super::*;
use proptest::prelude::*;

/// Inspects as the first provider that serves `endpoint` (each is served by one, or shared by
/// providers that read the same members).
fn inspect(endpoint: Endpoint, body: &[u8]) -> Result<Inspected, ProxyError> {
    let kind = ProviderKind::ALL.into_iter().find(|k| k.spec(endpoint).is_some()).unwrap();
    inspect_body(kind, endpoint, body)
}

#[test]
fn bodies_must_be_json_objects_and_errors_do_not_quote_them() {
    assert!(inspect(Endpoint::ChatCompletions, br#"{"model":"m","stream":true}"#).unwrap().stream);
    assert!(!inspect(Endpoint::ChatCompletions, br#"{"model":"m"}"#).unwrap().stream);
    assert!(inspect(Endpoint::StreamGenerateContent, b"{}").unwrap().stream);
    for bad in [&b""[..], b"{", b"[]", b"null", b"{\"stream\":\"sk-canary\"}", b"{} x"] {
        let e = inspect(Endpoint::ChatCompletions, bad).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(!e.message().contains("canary"), "{e}");
    }
}

#[test]
fn output_caps_and_choices_follow_each_api() {
    let caps = |e, b: &[u8]| {
        let i = inspect(e, b).unwrap();
        (i.max_output, i.choices)
    };
    assert_eq!(caps(Endpoint::ChatCompletions, br#"{"max_tokens":100,"n":3}"#), (Some(100), 3));
    // Every output member is read and the largest counts, in either order.
    assert_eq!(caps(Endpoint::ChatCompletions, br#"{"max_tokens":100,"max_completion_tokens":40}"#), (Some(100), 1));
    assert_eq!(caps(Endpoint::ChatCompletions, br#"{"max_completion_tokens":16,"max_tokens":90}"#), (Some(90), 1));
    assert_eq!(caps(Endpoint::ChatCompletions, br#"{"max_completion_tokens":90,"max_tokens":16}"#), (Some(90), 1));
    assert_eq!(caps(Endpoint::ChatCompletions, br#"{"n":128}"#), (None, 128));
    assert_eq!(caps(Endpoint::Completions, br#"{"max_tokens":10,"n":2,"best_of":5}"#), (Some(10), 5));
    assert_eq!(caps(Endpoint::Completions, br#"{"n":4,"best_of":2}"#), (None, 4));
    assert_eq!(caps(Endpoint::Responses, br#"{"max_output_tokens":70,"max_tokens":1,"n":9}"#), (Some(70), 1));
    assert_eq!(caps(Endpoint::Messages, br#"{"max_tokens":64}"#), (Some(64), 1));
    assert_eq!(
        caps(Endpoint::GenerateContent, br#"{"generationConfig":{"maxOutputTokens":50,"candidateCount":2}}"#),
        (Some(50), 2)
    );
    assert_eq!(caps(Endpoint::GenerateContent, br#"{"generationConfig":{"candidateCount":8}}"#), (None, 8));
    // Gemini's proto names, alone or mixed with the JSON names, and a `null` config.
    for body in [
        r#"{"generation_config":{"max_output_tokens":50,"candidate_count":2}}"#,
        r#"{"generationConfig":{"max_output_tokens":50,"candidateCount":2}}"#,
        r#"{"generation_config":{"maxOutputTokens":50,"candidate_count":2}}"#,
    ] {
        assert_eq!(caps(Endpoint::StreamGenerateContent, body.as_bytes()), (Some(50), 2), "{body}");
    }
    assert_eq!(caps(Endpoint::GenerateContent, br#"{"generationConfig":null}"#), (None, 1));
    assert_eq!(caps(Endpoint::ChatCompletions, br#"{"n":0}"#), (None, 1));
    assert_eq!(caps(Endpoint::ChatCompletions, br#"{"max_tokens":18446744073709551615}"#), (Some(u64::MAX), 1));
}

#[test]
fn the_provider_table_decides_and_an_endpoint_it_does_not_serve_is_refused() {
    let body = br#"{"max_tokens":10,"n":2,"generationConfig":{"maxOutputTokens":50,"candidateCount":3}}"#;
    let caps = |kind, endpoint| inspect_body(kind, endpoint, body).map(|i| (i.max_output, i.choices));
    assert_eq!(caps(ProviderKind::OpenAi, Endpoint::ChatCompletions).unwrap(), (Some(10), 2));
    assert_eq!(caps(ProviderKind::Anthropic, Endpoint::Messages).unwrap(), (Some(10), 1));
    assert_eq!(caps(ProviderKind::Gemini, Endpoint::GenerateContent).unwrap(), (Some(50), 3));
    assert_eq!(caps(ProviderKind::Gemini, Endpoint::CountTokens).unwrap(), (None, 1), "free: nothing to cap");
    assert_eq!(caps(ProviderKind::Anthropic, Endpoint::ChatCompletions).unwrap_err().status(), 404);
    assert_eq!(caps(ProviderKind::OpenAi, Endpoint::GenerateContent).unwrap_err().status(), 404);
}

#[test]
fn negative_fractional_and_oversized_numbers_are_refused_not_wrapped() {
    for body in [
        r#"{"max_tokens":-1}"#,
        r#"{"max_tokens":1.5}"#,
        r#"{"max_tokens":1e3}"#,
        r#"{"max_tokens":18446744073709551616}"#,
        r#"{"n":-2}"#,
        r#"{"best_of":2.0}"#,
        r#"{"generationConfig":{"candidateCount":-1}}"#,
        r#"{"generationConfig":{"maxOutputTokens":1e30}}"#,
    ] {
        for endpoint in [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::GenerateContent] {
            let e = inspect(endpoint, body.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert!(e.message().contains("non-negative integers"), "{body}: {e}");
        }
    }
}

fn rewrite(body: &str) -> String {
    let splice = inspect(Endpoint::ChatCompletions, body.as_bytes()).unwrap().usage_splice;
    String::from_utf8(with_stream_usage(Bytes::copy_from_slice(body.as_bytes()), &splice).to_vec()).unwrap()
}

#[test]
fn usage_is_requested_by_a_splice_in_place() {
    let cases = [
        (r#"{"model":"m","stream":true}"#, r#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#),
        (" { } ", r#" {"stream_options":{"include_usage":true} } "#),
        (r#"{"stream_options":null,"n":1}"#, r#"{"stream_options":{"include_usage":true},"n":1}"#),
        (r#"{"n":1, "stream_options" : null }"#, r#"{"n":1, "stream_options" : {"include_usage":true} }"#),
        (r#"{"stream_options":{}}"#, r#"{"stream_options":{"include_usage":true}}"#),
        (r#"{"stream_options":{ "x":1 }}"#, r#"{"stream_options":{"include_usage":true, "x":1 }}"#),
        (
            r#"{"stream_options":{"include_usage":false,"include_obfuscation":false}}"#,
            r#"{"stream_options":{"include_usage":true,"include_obfuscation":false}}"#,
        ),
        (r#"{"stream_options":{"include_usage" :	null}}"#, r#"{"stream_options":{"include_usage" :	true}}"#),
    ];
    for (sent, expected) in cases {
        assert_eq!(rewrite(sent), expected, "{sent}");
    }
    let i = inspect(Endpoint::ChatCompletions, br#"{"stream_options":{"include_usage":true}}"#).unwrap();
    assert_eq!(i.include_usage, Some(true));
    let i = inspect(Endpoint::ChatCompletions, br#"{"stream_options":null}"#).unwrap();
    assert_eq!(i.include_usage, None);
}

#[test]
fn repeated_or_mistyped_stream_options_are_refused() {
    for bad in [
        r#"{"stream_options":{},"stream_options":null}"#,
        r#"{"stream_options":{"include_usage":true,"include_usage":false}}"#,
        r#"{"stream_options":"yes"}"#,
        r#"{"stream_options":[]}"#,
        r#"{"stream_options":{"include_usage":1}}"#,
    ] {
        assert_eq!(inspect(Endpoint::ChatCompletions, bad.as_bytes()).unwrap_err().status(), 400, "{bad}");
    }
}

/// Exactly one top-level `stream_options` and one `include_usage` in it, or an error.
#[derive(Deserialize)]
struct Once {
    stream_options: OnceInner,
}
#[derive(Deserialize)]
struct OnceInner {
    include_usage: bool,
}

fn spaced(rng: u8) -> &'static str {
    ["", " ", "\n  ", "\r\n\t", "  "][usize::from(rng) % 5]
}

fn options_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("null".to_owned())),
        Just(Some("{}".to_owned())),
        Just(Some(r#"{"include_usage":false}"#.to_owned())),
        Just(Some(r#"{"include_usage":null}"#.to_owned())),
        Just(Some(r#"{ "include_obfuscation" : false }"#.to_owned())),
        Just(Some(r#"{"a":{"include_usage":false},"include_usage":false,"b":"\"include_usage\":"}"#.to_owned())),
    ]
}

proptest! {
    /// Whatever the spacing, order and `stream_options`, the rewritten body is the sent one with
    /// `stream_options.include_usage` set to `true`: parsed, nothing else differs, and no member is
    /// repeated.
    #[test]
    fn the_splice_changes_only_the_usage_member(
        options in options_value(),
        before in any::<bool>(),
        gaps in prop::collection::vec(any::<u8>(), 8),
        text in "[a-z \"\\\\{}:,]{0,12}",
    ) {
        let g = |i: usize| spaced(gaps[i]);
        let mut members = vec![
            format!(r#""model"{}:{}"gpt""#, g(0), g(1)),
            format!(r#""messages":[{{"content":{}}}]"#, serde_json::to_string(&text).unwrap()),
        ];
        if let Some(o) = &options {
            let member = format!(r#""stream_options"{}:{}{o}"#, g(2), g(3));
            if before { members.insert(0, member) } else { members.push(member) }
        }
        let body = format!("{}{{{}{}{}}}{}", g(4), g(5), members.join(&format!(",{}", g(6))), g(7), g(4));
        let out = rewrite(&body);
        let mut want: serde_json::Value = serde_json::from_str(&body).unwrap();
        let options = want.get_mut("stream_options").filter(|o| o.is_object());
        match options {
            Some(o) => { o["include_usage"] = serde_json::Value::Bool(true); }
            None => { want["stream_options"] = serde_json::json!({"include_usage": true}); }
        }
        let got: serde_json::Value = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(got, want);
        prop_assert!(serde_json::from_str::<Once>(&out).is_ok(), "{}", out);
        prop_assert!(serde_json::from_str::<Once>(&out).unwrap().stream_options.include_usage);
    }
}

#[test]
fn the_largest_output_member_is_the_one_named() {
    let i = inspect(Endpoint::ChatCompletions, br#"{"max_completion_tokens":16,"max_tokens":100000}"#).unwrap();
    assert_eq!((i.max_output, i.max_output_member), (Some(100_000), Some(BodyMember::MaxTokens)));
    let i = inspect(Endpoint::GenerateContent, br#"{"generation_config":{"max_output_tokens":7}}"#).unwrap();
    assert_eq!((i.max_output, i.max_output_member), (Some(7), Some(BodyMember::GenerationMaxOutputTokens)));
}

#[test]
fn one_gemini_field_under_two_spellings_or_a_config_that_is_no_object_is_refused() {
    for bad in [
        r#"{"generationConfig":{},"generation_config":{}}"#,
        r#"{"generation_config":null,"generationConfig":{"maxOutputTokens":1}}"#,
        r#"{"generationConfig":{"maxOutputTokens":8,"max_output_tokens":9000}}"#,
        r#"{"generation_config":{"candidate_count":1,"candidateCount":2}}"#,
        r#"{"generationConfig":[5,2]}"#,
        r#"{"generation_config":"sk-canary"}"#,
        r#"{"generation_config":{"max_output_tokens":-1}}"#,
    ] {
        let e = inspect(Endpoint::GenerateContent, bad.as_bytes()).unwrap_err();
        assert_eq!(e.status(), 400, "{bad}");
        assert!(e.message().contains("repeated field") && !e.message().contains("canary"), "{bad}: {e}");
    }
}

/// `body` as inspected for `endpoint`, with a cap of `cap` written where the inspector says, if it says.
fn capped(endpoint: Endpoint, body: &str, cap: u64) -> Option<String> {
    let slot = inspect(endpoint, body.as_bytes()).unwrap().cap_slot?;
    let out = with_output_cap(Bytes::copy_from_slice(body.as_bytes()), &slot, cap);
    Some(String::from_utf8(out.to_vec()).unwrap())
}

#[test]
fn a_cap_is_written_by_a_splice_in_place_in_the_member_each_api_reads() {
    let cases = [
        (Endpoint::ChatCompletions, r#"{"model":"m"}"#, r#"{"max_completion_tokens":16,"model":"m"}"#),
        (Endpoint::ChatCompletions, " { } ", r#" {"max_completion_tokens":16 } "#),
        (Endpoint::Completions, "{\n \"n\": 2}", "{\"max_tokens\":16,\n \"n\": 2}"),
        (Endpoint::Responses, r#"{"input":"x"}"#, r#"{"max_output_tokens":16,"input":"x"}"#),
        (Endpoint::GenerateContent, "{}", r#"{"generationConfig":{"maxOutputTokens":16}}"#),
        (
            Endpoint::GenerateContent,
            r#"{"contents":[]}"#,
            r#"{"generationConfig":{"maxOutputTokens":16},"contents":[]}"#,
        ),
        (
            Endpoint::StreamGenerateContent,
            r#"{"generationConfig" : null, "contents":[]}"#,
            r#"{"generationConfig" : {"maxOutputTokens":16}, "contents":[]}"#,
        ),
        (
            Endpoint::GenerateContent,
            r#"{"generation_config":{ "temperature":1 }}"#,
            r#"{"generation_config":{"maxOutputTokens":16, "temperature":1 }}"#,
        ),
        (
            Endpoint::GenerateContent,
            r#"{"generationConfig":{"candidate_count":2 ,"x":"}"}}"#,
            r#"{"generationConfig":{"maxOutputTokens":16,"candidate_count":2 ,"x":"}"}}"#,
        ),
        (Endpoint::GenerateContent, r#"{"generationConfig":{ }}"#, r#"{"generationConfig":{"maxOutputTokens":16 }}"#),
        // A `null` limit is no limit upstream: the cap is written over it, never beside it.
        (Endpoint::ChatCompletions, r#"{"max_completion_tokens": null}"#, r#"{"max_completion_tokens": 16}"#),
        (Endpoint::ChatCompletions, r#"{"max_tokens":null}"#, r#"{"max_completion_tokens":16,"max_tokens":null}"#),
        (Endpoint::Responses, r#"{"max_output_tokens":null}"#, r#"{"max_output_tokens":16}"#),
        (
            Endpoint::GenerateContent,
            r#"{"generation_config":{"max_output_tokens":null}}"#,
            r#"{"generation_config":{"max_output_tokens":16}}"#,
        ),
    ];
    for (endpoint, sent, expected) in cases {
        assert_eq!(capped(endpoint, sent, 16).as_deref(), Some(expected), "{sent}");
        let again = inspect(endpoint, expected.as_bytes()).unwrap();
        assert_eq!((again.max_output, again.cap_slot), (Some(16), None), "{expected}");
    }
    assert_eq!(
        capped(Endpoint::ChatCompletions, "{}", u64::MAX).unwrap(),
        r#"{"max_completion_tokens":18446744073709551615}"#
    );
}

#[test]
fn no_cap_is_written_where_the_request_names_one_or_there_is_none_to_write() {
    for (endpoint, body) in [
        (Endpoint::ChatCompletions, r#"{"max_tokens":10}"#),
        (Endpoint::ChatCompletions, r#"{"max_completion_tokens":0}"#),
        (Endpoint::Completions, r#"{"max_tokens":10}"#),
        (Endpoint::Responses, r#"{"max_output_tokens":10}"#),
        (Endpoint::GenerateContent, r#"{"generation_config":{"max_output_tokens":10}}"#),
        (Endpoint::GenerateContent, r#"{"generationConfig":{"maxOutputTokens":10}}"#),
        // Anthropic requires `max_tokens`; embeddings and counting have no output.
        (Endpoint::Messages, r#"{"model":"m"}"#),
        (Endpoint::Embeddings, r#"{"input":"x"}"#),
        (Endpoint::EmbedContent, "{}"),
        (Endpoint::CountTokens, "{}"),
    ] {
        assert_eq!(capped(endpoint, body, 16), None, "{body}");
    }
}

/// The output members a cap may be written as, each at most once, or an error (serde refuses a
/// repeated field, and a spelling and its alias are one field).
#[derive(Deserialize)]
struct OneCap {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    #[serde(rename = "generationConfig", alias = "generation_config")]
    generation: Option<OneGeneration>,
}
#[derive(Deserialize)]
struct OneGeneration {
    #[serde(rename = "maxOutputTokens", alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
}

const CAPPED: [(Endpoint, &str); 4] = [
    (Endpoint::ChatCompletions, "/max_completion_tokens"),
    (Endpoint::Completions, "/max_tokens"),
    (Endpoint::Responses, "/max_output_tokens"),
    (Endpoint::GenerateContent, "/generationConfig/maxOutputTokens"),
];

fn generation_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(r#""generationConfig":null"#.to_owned())),
        Just(Some(r#""generation_config" : { }"#.to_owned())),
        Just(Some(r#""generationConfig":{"temperature":0.5, "candidate_count":2}"#.to_owned())),
        Just(Some(r#""generationConfig":{"max_output_tokens" : null}"#.to_owned())),
        Just(Some(r#""generation_config":{"a":{"maxOutputTokens":1},"b":"\"maxOutputTokens\":"}"#.to_owned())),
    ]
}

proptest! {
    /// Whatever the spacing, order and other members, a written cap leaves a body that parses, equals
    /// the sent one plus that one member (nothing else differs, every byte outside the splice is the
    /// caller's), names the member once, and is read back at the cap with nothing more to write.
    #[test]
    fn the_cap_splice_adds_only_the_cap(
        which in 0..CAPPED.len(),
        generation in generation_value(),
        before in any::<bool>(),
        null in any::<bool>(),
        gaps in prop::collection::vec(any::<u8>(), 6),
        text in "[a-z \"\\\\{}:,]{0,12}",
        cap in 1u64..10_000_001,
    ) {
        let (endpoint, pointer) = CAPPED[which];
        let g = |i: usize| spaced(gaps[i]);
        let mut members = vec![format!(r#""contents"{}:{}[{{"text":{}}}]"#, g(0), g(1), serde_json::to_string(&text).unwrap())];
        if let Some(generation) = generation.filter(|_| endpoint == Endpoint::GenerateContent) {
            if before { members.insert(0, generation) } else { members.push(generation) }
        }
        if null && endpoint != Endpoint::GenerateContent {
            let member = format!(r#""{}"{}:{}null"#, &pointer[1..], g(1), g(0));
            if before { members.insert(0, member) } else { members.push(member) }
        }
        let body = format!("{}{{{}{}{}}}{}", g(2), g(3), members.join(&format!(",{}", g(4))), g(5), g(2));
        let slot = inspect(endpoint, body.as_bytes()).unwrap().cap_slot.unwrap();
        let out = with_output_cap(Bytes::copy_from_slice(body.as_bytes()), &slot, cap);
        prop_assert_eq!(&out[..slot.at.start], &body.as_bytes()[..slot.at.start]);
        prop_assert_eq!(&out[out.len() - (body.len() - slot.at.end)..], &body.as_bytes()[slot.at.end..]);
        let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut want: serde_json::Value = serde_json::from_str(&body).unwrap();
        let config = ["generationConfig", "generation_config"].into_iter().find(|k| want.get(k).is_some_and(|c| c.is_object()));
        match (endpoint, config) {
            (Endpoint::GenerateContent, Some(k)) => {
                let name = if want[k].get("max_output_tokens").is_some() { "max_output_tokens" } else { "maxOutputTokens" };
                want[k][name] = cap.into();
            }
            (Endpoint::GenerateContent, None) => { want["generationConfig"] = serde_json::json!({"maxOutputTokens": cap}); }
            _ => { want[&pointer[1..]] = cap.into(); }
        }
        prop_assert_eq!(&got, &want);
        let one: OneCap = serde_json::from_slice(&out).map_err(|e| TestCaseError::fail(format!("{e}: {body}")))?;
        let named = [one.max_tokens, one.max_completion_tokens, one.max_output_tokens, one.generation.and_then(|g| g.max_output_tokens)];
        prop_assert_eq!(named.into_iter().flatten().collect::<Vec<_>>(), vec![cap], "one output member, the cap");
        let again = inspect(endpoint, &out).unwrap();
        prop_assert_eq!((again.max_output, again.cap_slot), (Some(cap), None));
    }
}

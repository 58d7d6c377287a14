//! Upstreams write JSON with any valid spacing: compact, Python's `json.dumps` defaults (`", "` and
//! `": "`), pretty-printed over several `data:` lines, with LF or CRLF line ends. For every provider's
//! stream in every form, the tokens metered are exactly the upstream's figures, and where tollgate asked
//! an OpenAI stream for usage on the caller's behalf, the caller receives byte for byte the stream it
//! would have had without the injection: no usage-only chunk, no `"usage": null` members.

use serde_json::Value;

use crate::common::*;

#[derive(Debug, Clone, Copy)]
enum Form {
    Compact,
    Spaced,
    Pretty,
    SpacedCrlf,
    PrettyCrlf,
}

const FORMS: [Form; 5] = [Form::Compact, Form::Spaced, Form::Pretty, Form::SpacedCrlf, Form::PrettyCrlf];

/// Python's `json.dumps` with its default separators.
fn spaced(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let members: Vec<String> =
                m.iter().map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), spaced(v))).collect();
            format!("{{{}}}", members.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(spaced).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// An object with these members in this order (values as compact JSON), written in `form`.
fn object(members: &[(&str, &str)], form: Form) -> String {
    let value = |v: &str| serde_json::from_str::<Value>(v).unwrap();
    let key = |k: &str| Value::from(k).to_string();
    let parts: Vec<String> = members
        .iter()
        .map(|(k, v)| match form {
            Form::Compact => format!("{}:{}", key(k), value(v)),
            Form::Spaced | Form::SpacedCrlf => format!("{}: {}", key(k), spaced(&value(v))),
            Form::Pretty | Form::PrettyCrlf => {
                format!("  {}: {}", key(k), serde_json::to_string_pretty(&value(v)).unwrap().replace('\n', "\n  "))
            }
        })
        .collect();
    match form {
        Form::Compact => format!("{{{}}}", parts.join(",")),
        Form::Spaced | Form::SpacedCrlf => format!("{{{}}}", parts.join(", ")),
        Form::Pretty | Form::PrettyCrlf => format!("{{\n{}\n}}", parts.join(",\n")),
    }
}

/// One SSE event: an optional name, the data (one `data:` line per line of it), a blank line.
fn event(name: Option<&str>, data: &str, form: Form) -> String {
    let eol = match form {
        Form::SpacedCrlf | Form::PrettyCrlf => "\r\n",
        _ => "\n",
    };
    let mut out = name.map(|n| format!("event: {n}{eol}")).unwrap_or_default();
    for line in data.split('\n') {
        out.push_str(&format!("data: {line}{eol}"));
    }
    out.push_str(eol);
    out
}

/// A stream case: the route, the request, what the upstream sends, what the caller must receive, and
/// the (input, output) the upstream reported.
struct Case {
    path: &'static str,
    body: &'static str,
    sent: String,
    expected: String,
    usage: (u64, u64),
}

/// OpenAI chat or completions chunks with usage requested, and the same chunks as they would have been
/// without it (or, when the caller asked, as sent). The first chunk has `usage` as its first member, the
/// others as their last.
fn openai(object_kind: &str, choice: &[&str; 2], form: Form, caller_asked: bool) -> (String, String) {
    let (mut sent, mut plain) = (String::new(), String::new());
    for (i, c) in choice.iter().enumerate() {
        let base = [("id", r#""chatcmpl-1""#), ("object", object_kind), ("created", "1"), ("choices", c)];
        let mut with = base.to_vec();
        if i == 0 {
            with.insert(0, ("usage", "null"));
        } else {
            with.push(("usage", "null"));
        }
        sent.push_str(&event(None, &object(&with, form), form));
        plain.push_str(&event(None, &object(&base, form), form));
    }
    let usage = r#"{"prompt_tokens":41,"completion_tokens":17,"total_tokens":58,"completion_tokens_details":{"reasoning_tokens":0}}"#;
    let last =
        [("id", r#""chatcmpl-1""#), ("object", object_kind), ("created", "1"), ("choices", "[]"), ("usage", usage)];
    sent.push_str(&event(None, &object(&last, form), form));
    let done = event(None, "[DONE]", form);
    sent.push_str(&done);
    plain.push_str(&done);
    if caller_asked { (sent.clone(), sent) } else { (sent, plain) }
}

fn cases(form: Form) -> Vec<Case> {
    let chat = [
        r#"[{"index":0,"delta":{"role":"assistant","content":"say \"usage\": null"},"finish_reason":null}]"#,
        r#"[{"index":0,"delta":{},"finish_reason":"stop"}]"#,
    ];
    let completion = [
        r#"[{"text":"Hello, \"choices\": []","index":0,"finish_reason":null}]"#,
        r#"[{"text":"!","index":0,"finish_reason":"stop"}]"#,
    ];
    let (chat_sent, chat_plain) = openai(r#""chat.completion.chunk""#, &chat, form, false);
    let (asked_sent, asked_plain) = openai(r#""chat.completion.chunk""#, &chat, form, true);
    let (completion_sent, completion_plain) = openai(r#""text_completion""#, &completion, form, false);

    let responses = [
        (
            "response.created",
            r#"[["type","\"response.created\""],["response","{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null}"]]"#,
        ),
        ("response.output_text.delta", r#"[["type","\"response.output_text.delta\""],["delta","\"Hi\""]]"#),
        (
            "response.completed",
            r#"[["type","\"response.completed\""],["response","{\"id\":\"r\",\"status\":\"completed\",\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"total_tokens\":48}}"]]"#,
        ),
    ];
    let anthropic = [
        (
            "message_start",
            r#"[["type","\"message_start\""],["message","{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}"]]"#,
        ),
        (
            "content_block_delta",
            r#"[["type","\"content_block_delta\""],["index","0"],["delta","{\"type\":\"text_delta\",\"text\":\"Hi\"}"]]"#,
        ),
        (
            "message_delta",
            r#"[["type","\"message_delta\""],["delta","{\"stop_reason\":\"end_turn\"}"],["usage","{\"output_tokens\":9}"]]"#,
        ),
        ("message_stop", r#"[["type","\"message_stop\""]]"#),
    ];
    let gemini = [
        r#"[["candidates","[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}]"],["usageMetadata","{\"promptTokenCount\":12,\"totalTokenCount\":12}"]]"#,
        r#"[["candidates","[{\"content\":{\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\"}]"],["usageMetadata","{\"promptTokenCount\":12,\"candidatesTokenCount\":6,\"thoughtsTokenCount\":2}"]]"#,
    ];
    let members = |pairs: &str| -> Vec<(String, String)> { serde_json::from_str(pairs).unwrap() };
    let named = |list: &[(&str, &str)], with_names: bool| -> String {
        list.iter()
            .map(|(name, pairs)| {
                let m = members(pairs);
                let m: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                event(with_names.then_some(*name), &object(&m, form), form)
            })
            .collect()
    };
    let gemini_stream: String = gemini
        .iter()
        .map(|pairs| {
            let m = members(pairs);
            let m: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            event(None, &object(&m, form), form)
        })
        .collect();
    let responses_stream = named(&responses, true);
    let anthropic_stream = named(&anthropic, true);
    let anthropic_unnamed = named(&anthropic, false);
    vec![
        Case {
            path: "/v1/chat/completions",
            body: Shape::OpenAi.stream_body(),
            sent: chat_sent,
            expected: chat_plain,
            usage: (41, 17),
        },
        Case {
            path: "/v1/chat/completions",
            body: r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            sent: asked_sent,
            expected: asked_plain,
            usage: (41, 17),
        },
        Case {
            path: "/v1/completions",
            body: r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi","stream":true}"#,
            sent: completion_sent,
            expected: completion_plain,
            usage: (41, 17),
        },
        Case {
            path: "/v1/responses",
            body: r#"{"model":"gpt-4o-mini","input":"hi","stream":true}"#,
            sent: responses_stream.clone(),
            expected: responses_stream,
            usage: (37, 11),
        },
        Case {
            path: "/v1/messages",
            body: Shape::Anthropic.stream_body(),
            sent: anthropic_stream.clone(),
            expected: anthropic_stream,
            usage: (30, 9),
        },
        Case {
            path: "/v1/messages",
            body: Shape::Anthropic.stream_body(),
            sent: anthropic_unnamed.clone(),
            expected: anthropic_unnamed,
            usage: (30, 9),
        },
        Case {
            path: Shape::Gemini.stream_path(),
            body: Shape::Gemini.body(),
            sent: gemini_stream.clone(),
            expected: gemini_stream,
            usage: (12, 8),
        },
    ]
}

#[tokio::test]
async fn every_stream_in_every_spacing_is_metered_exactly_and_the_injection_never_shows() {
    let mock = MockUpstream::start().await;
    let all: Vec<(Form, Case)> = FORMS.iter().flat_map(|&f| cases(f).into_iter().map(move |c| (f, c))).collect();
    let keys: Vec<NewKey> = (0..all.len()).map(|i| NewKey::live(&format!("spacing-{i}"), 0)).collect();
    let mut gw = Gateway::start_with(&mock.base_url(), "", &keys).await;
    let mut as_expected = Vec::new();
    for ((form, case), secret) in all.iter().zip(&gw.keys) {
        let keys = Keys::new(secret).with("x-mock", "hold");
        let h = keys.headers();
        let response = open(http::Method::POST, &gw.url(case.path), &h, case.body.as_bytes()).await.unwrap();
        assert_eq!(response.status(), 200, "{form:?} {}", case.path);
        let held = mock.next_held().await;
        // In two pieces cut mid-event: the tap sees a run of whole events, then the rest.
        let (first, second) = case.sent.split_at(case.sent.len() / 2);
        send_event(&held, first).await;
        send_event(&held, second).await;
        drop(held);
        let mut body = response.into_body();
        let mut received = Vec::new();
        while let Some(chunk) = next_chunk(&mut body).await {
            received.extend_from_slice(&chunk);
        }
        as_expected.push(String::from_utf8(received).unwrap() == case.expected);
    }
    gw.begin_shutdown().await.unwrap();
    // The figures, for every case, before any assertion.
    let mut failures = Vec::new();
    for (((form, case), secret), bytes_ok) in all.iter().zip(&gw.keys).zip(as_expected) {
        let id = key_id(secret);
        let rows = gw.store.usage_report(Some(id), 0, i64::MAX).unwrap();
        let metered = rows.iter().fold((0, 0), |t, r| (t.0 + r.input_tokens, t.1 + r.output_tokens));
        let route = case.path.trim_start_matches("/v1/").trim_start_matches("beta/models/");
        let asked = if case.body.contains("include_usage") { " (usage asked)" } else { "" };
        let bytes = if bytes_ok { "as expected" } else { "DIFFERS" };
        println!("{form:<11?} {route}{asked}: metered {metered:?} of {:?}, caller stream {bytes}", case.usage);
        if metered != case.usage || !bytes_ok {
            failures.push(format!("{form:?} {} {}", case.path, case.body));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

//! What a request reserves is read from its body with checked arithmetic: huge limits are refused as
//! over quota rather than wrapped, bad numbers are a 400 in the route's shape, every choice counts
//! (with or without a stated maximum), and `stream_options: null` still gets its usage metered.

use tollgate::auth::keys::KeyLimits;
use tollgate::metering::input_estimate;

use crate::common::*;

fn key_with(tokens: u64) -> NewKey {
    NewKey { limits: KeyLimits { tokens_per_month: Some(tokens), ..KeyLimits::default() }, ..NewKey::live("q", 0) }
}

fn remaining(reply: &Reply) -> u64 {
    reply.headers["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_huge_output_cap_is_refused_as_over_quota_never_wrapped() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start_with(&mock.base_url(), "", &[key_with(1000)]).await;
    let keys = Keys::new(&gw.keys[0]);
    let h = keys.headers();
    let huge = [
        (
            Shape::OpenAi,
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","max_tokens":18446744073709551615,"messages":[]}"#,
        ),
        (
            Shape::OpenAi,
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","max_tokens":9223372036854775807,"n":128,"messages":[]}"#,
        ),
        (
            Shape::OpenAi,
            "/v1/completions",
            r#"{"model":"m","prompt":"hi","max_tokens":4611686018427387904,"best_of":4}"#,
        ),
        (
            Shape::OpenAi,
            "/v1/responses",
            r#"{"model":"gpt-4o-mini","input":"hi","max_output_tokens":18446744073709551615}"#,
        ),
        (
            Shape::Anthropic,
            "/v1/messages",
            r#"{"model":"claude-sonnet-4-5","max_tokens":18446744073709551615,"messages":[]}"#,
        ),
        (
            Shape::Gemini,
            Shape::Gemini.path(),
            r#"{"contents":[],"generationConfig":{"maxOutputTokens":4611686018427387904,"candidateCount":4}}"#,
        ),
        (Shape::OpenAi, "/v1/chat/completions", r#"{"model":"gpt-4o-mini","max_tokens":5000,"messages":[]}"#),
    ];
    for (shape, path, body) in huge {
        let reply = post(&gw.url(path), &h, body).await;
        shape.assert_error(&reply, 429, "token quota");
        assert_eq!(remaining(&reply), 1000, "{body}: nothing reserved");
    }
    assert!(mock.recorded().is_empty(), "no refused request reached the upstream");
    // The key still works for a request that fits.
    let fits = r#"{"model":"gpt-4o-mini","max_tokens":100,"messages":[]}"#;
    let reply = post(&gw.url("/v1/chat/completions"), &h, fits).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn negative_and_fractional_limits_are_a_400_in_the_routes_shape() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let h = keys.headers();
    let bad = [
        (Shape::OpenAi, "/v1/chat/completions", r#"{"model":"gpt-4o-mini","max_tokens":-1,"messages":[]}"#),
        (Shape::OpenAi, "/v1/chat/completions", r#"{"model":"gpt-4o-mini","n":2.5,"messages":[]}"#),
        (Shape::OpenAi, "/v1/completions", r#"{"model":"m","prompt":"hi","best_of":-3}"#),
        (Shape::OpenAi, "/v1/chat/completions", r#"{"model":"gpt-4o-mini","max_tokens":18446744073709551616}"#),
        (Shape::Anthropic, "/v1/messages", r#"{"model":"claude-sonnet-4-5","max_tokens":64.5,"messages":[]}"#),
        (Shape::Gemini, Shape::Gemini.path(), r#"{"contents":[],"generationConfig":{"candidateCount":-1}}"#),
        (Shape::Gemini, Shape::Gemini.path(), r#"{"contents":[],"generationConfig":{"maxOutputTokens":1e9}}"#),
    ];
    for (shape, path, body) in bad {
        shape.assert_error(&post(&gw.url(path), &h, body).await, 400, "non-negative integers");
    }
    assert!(mock.recorded().is_empty());
}

#[tokio::test]
async fn every_choice_is_reserved_with_or_without_a_maximum() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start_with(&mock.base_url(), "", &[key_with(100_000)]).await;
    let keys = Keys::new(&gw.keys[0]);
    let h = keys.headers();
    // 128 choices of the default 4096 tokens is over the quota, as with an explicit 4096.
    for body in [
        r#"{"model":"gpt-4o-mini","n":128,"max_tokens":4096,"messages":[]}"#,
        r#"{"model":"gpt-4o-mini","n":128,"messages":[]}"#,
    ] {
        Shape::OpenAi.assert_error(&post(&gw.url("/v1/chat/completions"), &h, body).await, 429, "token quota");
    }
    let gemini = r#"{"contents":[],"generationConfig":{"candidateCount":32}}"#;
    Shape::Gemini.assert_error(&post(&gw.url(Shape::Gemini.path()), &h, gemini).await, 429, "token quota");
    let best_of = r#"{"model":"m","prompt":"hi","n":1,"best_of":30}"#;
    Shape::OpenAi.assert_error(&post(&gw.url("/v1/completions"), &h, best_of).await, 429, "token quota");
    // A held stream shows its reservation in its head: the estimate plus 3 choices of the default cap.
    let body = r#"{"model":"gpt-4o-mini","n":3,"stream":true,"messages":[]}"#;
    let held = keys.clone().with("x-mock", "hold");
    let response =
        open(http::Method::POST, &gw.url("/v1/chat/completions"), &held.headers(), body.as_bytes()).await.unwrap();
    let left: u64 = response.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap();
    assert_eq!(left, 100_000 - input_estimate(body.len()) - 3 * 4096);
    drop(mock.next_held().await);
}

#[tokio::test]
async fn a_null_stream_options_is_rewritten_in_place_and_the_stream_metered_exactly() {
    let mock = MockUpstream::start().await;
    let bodies = [
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":null,"messages":[]}"#,
        r#"{"stream_options" : null , "model":"gpt-4o-mini","stream":true,"messages":[]}"#,
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":null},"messages":[]}"#,
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}"#,
    ];
    let keys: Vec<NewKey> = (0..bodies.len()).map(|i| NewKey::live(&format!("null-{i}"), 0)).collect();
    let mut gw = Gateway::start_with(&mock.base_url(), "", &keys).await;
    for (body, secret) in bodies.iter().zip(&gw.keys) {
        let reply = post(&gw.url("/v1/chat/completions"), &Keys::new(secret).headers(), body).await;
        assert_eq!(reply.text(), OPENAI_SSE.concat(), "{body}: the caller did not ask for usage");
    }
    for (seen, sent) in mock.recorded().iter().zip(bodies) {
        let text = std::str::from_utf8(&seen.body).unwrap();
        assert_eq!(text.matches("\"stream_options\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"include_usage\"").count(), 1, "{text}");
        // Last-wins and first-wins parsers agree: the upstream asked for usage.
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true, "{text}");
        let mut expected: serde_json::Value = serde_json::from_str(sent).unwrap();
        expected["stream_options"] = match expected["stream_options"].take() {
            serde_json::Value::Object(mut o) => {
                o.insert("include_usage".into(), true.into());
                o.into()
            }
            _ => serde_json::json!({"include_usage": true}),
        };
        assert_eq!(v, expected, "nothing else changed");
    }
    gw.begin_shutdown().await.unwrap();
    for (body, secret) in bodies.iter().zip(&gw.keys) {
        let id = key_id(secret);
        let rows = gw.store.usage_report(Some(id), 0, i64::MAX).unwrap();
        let metered = rows.iter().fold((0, 0), |t, r| (t.0 + r.input_tokens, t.1 + r.output_tokens));
        assert_eq!(metered, (5, 3), "{body}: the upstream's own usage, not one token per event");
    }
}

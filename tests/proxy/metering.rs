//! Usage metering for every route of docs/ARCHITECTURE.md, Usage counting, streamed and not: tokens charged equal what
//! the mock upstream reported; an OpenAI stream whose caller did not ask for usage arrives byte for byte without the
//! injected usage; early ends are charged the documented estimate and free their reservation.

use std::time::Duration;

use tollgate::metering::input_estimate;

use crate::common::*;

struct Case {
    path: &'static str,
    body: &'static str,
    /// (input, output) the mock reports.
    usage: (u64, u64),
    /// What the caller must receive, exactly; `None` to skip the comparison.
    expect_body: Option<String>,
}

fn cases() -> Vec<Case> {
    let chat_stream_asking =
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    vec![
        Case {
            path: "/v1/chat/completions",
            body: Shape::OpenAi.body(),
            usage: (5, 3),
            expect_body: Some(OPENAI_JSON.into()),
        },
        Case {
            path: "/v1/chat/completions",
            body: Shape::OpenAi.stream_body(),
            usage: (5, 3),
            expect_body: Some(OPENAI_SSE.concat()),
        },
        Case {
            path: "/v1/chat/completions",
            body: chat_stream_asking,
            usage: (5, 3),
            expect_body: Some(with_usage_chunk(OPENAI_SSE, 5, 3).concat()),
        },
        Case {
            path: "/v1/completions",
            body: r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi","max_tokens":20}"#,
            usage: (4, 6),
            expect_body: Some(COMPLETIONS_JSON.into()),
        },
        Case {
            path: "/v1/completions",
            body: r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi","stream":true}"#,
            usage: (4, 6),
            expect_body: Some(COMPLETIONS_SSE.concat()),
        },
        Case {
            path: "/v1/embeddings",
            body: r#"{"model":"text-embedding-3-small","input":"hi"}"#,
            usage: (7, 0),
            expect_body: Some(EMBEDDINGS_JSON.into()),
        },
        Case {
            path: "/v1/responses",
            body: r#"{"model":"gpt-4o-mini","input":"hi"}"#,
            usage: (37, 11),
            expect_body: Some(RESPONSES_JSON.into()),
        },
        Case {
            path: "/v1/responses",
            body: r#"{"model":"gpt-4o-mini","input":"hi","stream":true}"#,
            usage: (37, 11),
            expect_body: Some(RESPONSES_SSE.concat()),
        },
        Case {
            path: "/v1/messages",
            body: Shape::Anthropic.body(),
            usage: (5, 3),
            expect_body: Some(ANTHROPIC_JSON.into()),
        },
        Case {
            path: "/v1/messages",
            body: Shape::Anthropic.stream_body(),
            usage: (5, 3),
            expect_body: Some(ANTHROPIC_SSE.concat()),
        },
        Case {
            path: Shape::Gemini.path(),
            body: Shape::Gemini.body(),
            usage: (5, 3),
            expect_body: Some(GEMINI_JSON.into()),
        },
        Case {
            path: Shape::Gemini.stream_path(),
            body: Shape::Gemini.body(),
            usage: (5, 3),
            expect_body: Some(GEMINI_SSE.concat()),
        },
    ]
}

#[tokio::test]
async fn every_route_is_charged_what_the_provider_reported() {
    let mock = MockUpstream::start().await;
    let cases = cases();
    let keys: Vec<NewKey> = (0..cases.len()).map(|i| NewKey::live(&format!("route-{i}"), 0)).collect();
    let mut gw = Gateway::start_with(&mock.base_url(), "", &keys).await;
    for (case, secret) in cases.iter().zip(&gw.keys) {
        let reply = post(&gw.url(case.path), &Keys::new(secret).headers(), case.body).await;
        assert_eq!(reply.status, 200, "{}: {}", case.path, reply.text());
        if let Some(expected) = &case.expect_body {
            assert_eq!(reply.text(), *expected, "{} {}", case.path, case.body);
        }
    }
    gw.begin_shutdown().await.unwrap();
    for (case, secret) in cases.iter().zip(&gw.keys) {
        assert_eq!(usage_of(&gw.store, secret), (1, case.usage.0, case.usage.1), "{} {}", case.path, case.body);
    }
    // Injected only where the caller streams chat/completions without asking.
    let injected: Vec<bool> = mock
        .recorded()
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["stream_options"]["include_usage"] == true
        })
        .collect();
    assert_eq!(injected, [false, true, true, false, true, false, false, false, false, false, false, false]);
}

#[tokio::test]
async fn an_injected_option_keeps_the_rest_of_the_body_as_sent() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let h = keys.headers();
    let sent = r#"{ "model" : "gpt-4o-mini", "stream": true, "messages": [] }"#;
    post(&gw.url("/v1/chat/completions"), &h, sent).await;
    let with_false = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false},"messages":[]}"#;
    let reply = post(&gw.url("/v1/chat/completions"), &h, with_false).await;
    assert_eq!(reply.text(), OPENAI_SSE.concat(), "a caller who said false still gets no usage chunk");
    let seen = mock.recorded();
    assert_eq!(
        std::str::from_utf8(&seen[0].body).unwrap(),
        r#"{"stream_options":{"include_usage":true}, "model" : "gpt-4o-mini", "stream": true, "messages": [] }"#
    );
    let rewritten: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(rewritten["stream_options"]["include_usage"], true);
    assert_eq!(rewritten["messages"], serde_json::json!([]));
}

fn usage_of(store: &SqliteStore, secret: &str) -> (u64, u64, u64) {
    let id = key_id(secret);
    let rows = store.usage_report(Some(id), 0, i64::MAX).unwrap();
    rows.iter().fold((0, 0, 0), |t, r| (t.0 + r.requests, t.1 + r.input_tokens, t.2 + r.output_tokens))
}

#[tokio::test]
async fn early_ends_are_charged_the_documented_estimate_and_free_the_slot() {
    let mock = MockUpstream::start().await;
    let one_at_a_time = tollgate::auth::keys::KeyLimits { concurrent_requests: Some(1), ..Default::default() };
    let keys: Vec<NewKey> =
        (0..5).map(|i| NewKey { limits: one_at_a_time, ..NewKey::live(&format!("early-{i}"), 0) }).collect();
    let mut gw = Gateway::start_with(&mock.base_url(), "", &keys).await;
    let body = Shape::OpenAi.stream_body();
    let estimate = input_estimate(body.len());

    // The caller leaves after k events (k = 0, 1, many), on keys 0-2.
    for (k, secret) in [0u64, 1, 6].into_iter().zip(&gw.keys) {
        let keys = Keys::new(secret);
        let hold = keys.clone().with("x-mock", "hold");
        let h = hold.headers();
        let response = open(http::Method::POST, &gw.url("/v1/chat/completions"), &h, body.as_bytes()).await.unwrap();
        let held = mock.next_held().await;
        let mut stream = response.into_body();
        for i in 0..k {
            send_event(&held, &format!("data: {{\"n\":{i}}}\n\n")).await;
            assert!(next_chunk(&mut stream).await.is_some());
        }
        drop(stream);
        tokio::time::timeout(Duration::from_secs(10), held.closed()).await.unwrap();
        // The slot is free again (concurrency 1): the upstream connection closes after the charge.
        let h = keys.headers();
        assert_eq!(post(&gw.url("/v1/chat/completions"), &h, Shape::OpenAi.body()).await.status, 200, "k={k}");
    }

    // The upstream is cut after one event, on key 3 (OpenAI) and key 4 (Anthropic, whose message_start
    // reports input and a first output count).
    for (secret, path, shape_body, first) in [
        (&gw.keys[3], "/v1/chat/completions", body, OPENAI_SSE[0]),
        (&gw.keys[4], "/v1/messages", Shape::Anthropic.stream_body(), ANTHROPIC_SSE[0]),
    ] {
        let keys = Keys::new(secret).with("x-mock", "hold");
        let h = keys.headers();
        let response = open(http::Method::POST, &gw.url(path), &h, shape_body.as_bytes()).await.unwrap();
        let held = mock.next_held().await;
        let mut stream = response.into_body();
        send_event(&held, first).await;
        assert!(next_chunk(&mut stream).await.is_some());
        held.send(Err(std::io::Error::other("cut"))).await.unwrap();
        let terminal = next_chunk(&mut stream).await.unwrap();
        assert!(std::str::from_utf8(&terminal).unwrap().contains("error"));
        assert_eq!(next_chunk(&mut stream).await, None);
    }

    gw.begin_shutdown().await.unwrap();
    // Leaving after k events: the input estimate plus one token per event delivered. The follow-up
    // request on each key was charged the mock's 5 + 3.
    for (k, secret) in [0u64, 1, 6].into_iter().zip(&gw.keys) {
        assert_eq!(usage_of(&gw.store, secret), (2, estimate + 5, k + 3), "k={k}");
    }
    assert_eq!(usage_of(&gw.store, &gw.keys[3]), (1, estimate, 1), "OpenAI cut after one event");
    assert_eq!(
        usage_of(&gw.store, &gw.keys[4]),
        (1, 5, 1),
        "Anthropic cut after message_start: its own input and output"
    );
}

#[tokio::test]
async fn a_provider_refusal_costs_nothing_and_free_routes_are_not_metered() {
    let mock = MockUpstream::start().await;
    let keys = [NewKey::live("refused", 0), NewKey::live("free", 0)];
    let mut gw = Gateway::start_with(&mock.base_url(), "", &keys).await;
    let keys = Keys::new(&gw.keys[0]).with("x-mock", "status 429");
    let h = keys.headers();
    assert_eq!(post(&gw.url("/v1/chat/completions"), &h, Shape::OpenAi.body()).await.status, 429);
    let keys = Keys::new(&gw.keys[1]);
    let h = keys.headers();
    assert_eq!(request(http::Method::GET, &gw.url("/v1/models"), &h, b"").await.status, 200);
    assert_eq!(post(&gw.url("/v1/messages/count_tokens"), &h, Shape::Anthropic.body()).await.status, 200);
    gw.begin_shutdown().await.unwrap();
    assert_eq!(usage_of(&gw.store, &gw.keys[0]), (1, 0, 0));
    assert_eq!(usage_of(&gw.store, &gw.keys[1]), (2, 0, 0));
}

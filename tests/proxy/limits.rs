//! Limits on the real server (docs/ARCHITECTURE.md, Limits and charges): token quotas that hold under concurrency,
//! per-minute, per-day and concurrency limits with their 429s and headers, and totals that survive a restart.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tollgate::auth::keys::KeyLimits;
use tollgate::metering::input_estimate;

use crate::common::*;

fn key_with(limits: KeyLimits) -> NewKey {
    NewKey { limits, ..NewKey::live("limited", 0) }
}

fn auth(secret: &str) -> String {
    format!("Bearer {secret}")
}

const RATE_HEADERS: [&str; 6] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

fn header(reply: &Reply, name: &str) -> String {
    reply.headers.get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_quota_holds_under_1000_concurrent_requests() {
    let mock = MockUpstream::start().await;
    let limits = KeyLimits {
        tokens_per_month: Some(10_000),
        requests_per_minute: Some(1000),
        requests_per_day: Some(10_000),
        concurrent_requests: Some(1000),
    };
    let gw = Gateway::start_with(&mock.base_url(), "", &[key_with(limits)]).await;
    let secret = gw.keys[0].clone();
    let body = r#"{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let estimate = input_estimate(body.len());
    // The mock reports exactly what was reserved, so settling frees nothing and the number admitted
    // does not depend on timing: floor(quota / reservation).
    let reservation = estimate + 100;
    let expect_admitted = 10_000 / reservation;
    let usage_mode = format!("usage {estimate} 100");

    // One HTTP/2 connection carries all 1000 requests at once.
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let mut sender = sender.clone();
        let req = http::Request::post(gw.url("/v1/chat/completions"))
            .header("authorization", auth(&secret))
            .header("x-provider-key", PROVIDER_KEY)
            .header("x-mock", usage_mode.as_str())
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let response = sender.send_request(req).await.unwrap();
            let (parts, body) = response.into_parts();
            Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
        }));
    }
    let (mut admitted, mut refused) = (0u64, 0u64);
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            200 => admitted += 1,
            429 => {
                refused += 1;
                Shape::OpenAi.assert_error(&reply, 429, "token quota exceeded");
                assert_eq!(reply.json()["error"]["code"], "insufficient_quota");
                assert!(header(&reply, "retry-after").parse::<u64>().unwrap() >= 1);
                assert_eq!(header(&reply, "x-should-retry"), "false");
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!((admitted, refused), (expect_admitted, 1000 - expect_admitted));
    let (requests, input, output) = gw.stop_and_read_usage(&secret).await;
    assert_eq!(requests, admitted);
    assert_eq!((input, output), (admitted * estimate, admitted * 100));
    assert!(input + output <= 10_000, "charged {} over a 10,000 quota", input + output);
    eprintln!("quota test: admitted {admitted}, refused {refused}, charged {} of 10000", input + output);
}

#[tokio::test]
async fn the_eleventh_concurrent_request_waits_for_a_slot() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start_with(
        &mock.base_url(),
        "",
        &[key_with(KeyLimits { concurrent_requests: Some(10), ..KeyLimits::default() })],
    )
    .await;
    let secret = gw.keys[0].clone();
    let keys = Keys::new(&secret);
    let holding = keys.clone().with("x-mock", "hold");
    let hold = holding.headers();
    let mut open_streams = Vec::new();
    for _ in 0..10 {
        let response =
            open(http::Method::POST, &gw.url("/v1/chat/completions"), &hold, Shape::OpenAi.stream_body().as_bytes())
                .await
                .unwrap();
        assert_eq!(response.status(), 200);
        open_streams.push((mock.next_held().await, response.into_body()));
    }
    let plain = keys.headers();
    for shape in SHAPES {
        let reply = post(&gw.url(shape.path()), &plain, shape.body()).await;
        shape.assert_error(&reply, 429, "concurrent requests");
        assert_eq!(header(&reply, "retry-after"), "1");
        assert!(!reply.headers.contains_key("x-should-retry"));
    }
    // One stream ends; its slot is free by the time the caller has read the end.
    let (held, mut body) = open_streams.pop().unwrap();
    drop(held);
    assert_eq!(next_chunk(&mut body).await, None);
    assert_eq!(post(&gw.url("/v1/chat/completions"), &plain, Shape::OpenAi.body()).await.status, 200);
}

#[tokio::test]
async fn per_minute_and_per_day_limits_in_every_shape() {
    let mock = MockUpstream::start().await;
    let keys = [
        key_with(KeyLimits { requests_per_minute: Some(2), ..KeyLimits::default() }),
        key_with(KeyLimits { requests_per_day: Some(3), ..KeyLimits::default() }),
    ];
    let gw = Gateway::start_with(&mock.base_url(), "", &keys).await;
    let (per_minute, per_day) = (Keys::new(&gw.keys[0]), Keys::new(&gw.keys[1]));

    let h = per_minute.headers();
    let first = post(&gw.url("/v1/chat/completions"), &h, Shape::OpenAi.body()).await;
    assert_eq!(
        (
            header(&first, "x-ratelimit-limit-requests").as_str(),
            header(&first, "x-ratelimit-remaining-requests").as_str()
        ),
        ("2", "1")
    );
    let second = post(&gw.url("/v1/messages"), &h, Shape::Anthropic.body()).await;
    assert_eq!(header(&second, "x-ratelimit-remaining-requests"), "0");
    for shape in SHAPES {
        let reply = post(&gw.url(shape.path()), &h, shape.body()).await;
        shape.assert_error(&reply, 429, "rate limit exceeded: requests per minute");
        // Two a minute: the next is allowed 30 seconds after the first, less the moment that passed.
        let retry: u64 = header(&reply, "retry-after").parse().unwrap();
        assert!((29..=30).contains(&retry), "retry-after {retry}");
        assert!(!reply.headers.contains_key("x-should-retry"), "a per-minute limit is worth retrying");
        for name in RATE_HEADERS {
            assert!(reply.headers.contains_key(name), "{name} missing on a 429");
        }
    }

    let h = per_day.headers();
    for shape in SHAPES {
        assert_eq!(post(&gw.url(shape.path()), &h, shape.body()).await.status, 200);
    }
    for shape in SHAPES {
        let reply = post(&gw.url(shape.path()), &h, shape.body()).await;
        shape.assert_error(&reply, 429, "rate limit exceeded: requests per day");
        assert_eq!(header(&reply, "x-should-retry"), "false");
    }
}

#[tokio::test]
async fn every_response_after_admission_carries_the_rate_headers() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let h = keys.headers();
    let json = post(&gw.url("/v1/chat/completions"), &h, Shape::OpenAi.body()).await;
    let stream = post(&gw.url("/v1/messages"), &h, Shape::Anthropic.stream_body()).await;
    let upstream_error = {
        let keys = keys.clone().with("x-mock", "status 500");
        post(&gw.url(Shape::Gemini.path()), &keys.headers(), Shape::Gemini.body()).await
    };
    let redirect = {
        let keys = keys.clone().with("x-mock", "redirect http://127.0.0.1:9/");
        post(&gw.url(Shape::OpenAi.path()), &keys.headers(), Shape::OpenAi.body()).await
    };
    for reply in [&json, &stream, &upstream_error, &redirect] {
        for name in RATE_HEADERS {
            assert!(reply.headers.contains_key(name), "{name} missing on a {}", reply.status);
        }
    }
    assert_eq!(header(&json, "x-ratelimit-limit-requests"), "1000");
    assert_eq!(header(&json, "x-ratelimit-limit-tokens"), "10000000", "the default plan's quota");
    assert!(header(&json, "x-ratelimit-reset-tokens").ends_with('s'));
}

#[tokio::test]
async fn settled_tokens_survive_a_restart() {
    let mock = MockUpstream::start().await;
    let limits = KeyLimits { tokens_per_month: Some(1000), requests_per_day: Some(4), ..KeyLimits::default() };
    let gw = Gateway::start_with(&mock.base_url(), "", &[key_with(limits)]).await;
    let secret = gw.keys[0].clone();
    let keys = Keys::new(&secret);
    let h = keys.headers();
    let body = r#"{"model":"gpt-4o-mini","max_tokens":50,"messages":[]}"#;
    for _ in 0..2 {
        assert_eq!(post(&gw.url("/v1/chat/completions"), &h, body).await.status, 200);
    }
    let gw = gw.restart().await;
    let reply = post(&gw.url("/v1/chat/completions"), &h, body).await;
    // Two requests of 5 + 3 tokens settled before the restart; this one reserves estimate + 50.
    let expected = 1000 - 2 * 8 - (input_estimate(body.len()) + 50);
    assert_eq!(header(&reply, "x-ratelimit-remaining-tokens"), expected.to_string());
    // Today's requests were carried too: the fourth of four is admitted, the fifth is not.
    assert_eq!(post(&gw.url("/v1/chat/completions"), &h, body).await.status, 200);
    let refused = post(&gw.url("/v1/chat/completions"), &h, body).await;
    Shape::OpenAi.assert_error(&refused, 429, "requests per day");
    let (requests, input, output) = gw.stop_and_read_usage(&secret).await;
    assert_eq!((requests, input, output), (4, 20, 12));
}

#[tokio::test]
async fn with_limits_off_nothing_is_limited_or_metered() {
    let mock = MockUpstream::start().await;
    let tight = KeyLimits { requests_per_minute: Some(1), ..KeyLimits::default() };
    let mut gw = Gateway::start_with(&mock.base_url(), "[limits]\nenabled = false", &[key_with(tight)]).await;
    let keys = Keys::new(&gw.keys[0]);
    let h = keys.headers();
    for _ in 0..3 {
        let reply = post(&gw.url("/v1/chat/completions"), &h, Shape::OpenAi.stream_body()).await;
        assert_eq!(reply.status, 200);
        assert!(!reply.headers.contains_key("x-ratelimit-limit-requests"));
        assert_eq!(reply.text(), OPENAI_SSE.concat());
    }
    assert!(mock.recorded().iter().all(|r| !String::from_utf8_lossy(&r.body).contains("stream_options")));
    gw.begin_shutdown().await.unwrap();
    let id = key_id(&gw.keys[0]);
    assert!(gw.store.usage_report(Some(id), 0, i64::MAX).unwrap().is_empty());
}

#[tokio::test]
async fn a_retried_request_never_finds_its_first_attempt_still_holding() {
    let mock = MockUpstream::start().await;
    // One request at a time and room for exactly one reservation: a retry is admitted only if the
    // failed attempt's slot and tokens were released when its response ended.
    let body = Shape::OpenAi.body();
    let one = input_estimate(body.len()) + 4096;
    let limits = KeyLimits { concurrent_requests: Some(1), tokens_per_month: Some(one), ..KeyLimits::default() };
    let gw = Gateway::start_with(&mock.base_url(), "", &[key_with(limits)]).await;
    for status in ["500", "503", "429"] {
        let first = Keys::new(&gw.keys[0]).with("x-mock", format!("status {status}"));
        let first = first.with("x-stainless-retry-count", "0");
        assert_eq!(post(&gw.url("/v1/chat/completions"), &first.headers(), body).await.status.as_str(), status);
        let retry = first.with("x-stainless-retry-count", "1");
        let reply = post(&gw.url("/v1/chat/completions"), &retry.headers(), body).await;
        assert_eq!(reply.status.as_str(), status, "the retry was refused by tollgate: {}", reply.text());
        assert_eq!(header(&reply, "x-ratelimit-remaining-tokens"), "0", "the retry holds the only reservation");
    }
}

#[tokio::test]
async fn absurd_usage_from_an_upstream_is_clamped_and_the_store_still_starts() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let plain = gw.auth();
    let body = r#"{"model":"gpt-4o-mini","max_tokens":50,"messages":[]}"#;
    let absurd = plain.clone().with("x-mock", format!("usage {} 1", i64::MAX));
    assert_eq!(post(&gw.url("/v1/chat/completions"), &absurd.headers(), body).await.status, 200);
    // The restart reads the month's totals back; a figure the store cannot sum would stop it here.
    let gw = gw.restart().await;
    let refused = post(&gw.url("/v1/chat/completions"), &plain.headers(), body).await;
    Shape::OpenAi.assert_error(&refused, 429, "token quota exceeded");
    let key = gw.key.clone();
    let (requests, input, output) = gw.stop_and_read_usage(&key).await;
    assert_eq!((requests, input, output), (1, tollgate::metering::MAX_REPORTED_TOKENS, 1));
}

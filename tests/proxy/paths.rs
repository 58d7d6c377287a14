//! Path tricks never reach anything but an allowlisted path on the configured origin: `..`, `%2e%2e`,
//! `%2F`, `//host`, absolute-form targets, `Host` and `X-Forwarded-Host` games.

use crate::common::*;

fn raw_request(method: &str, target: &str, host: &str, key: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {key}\r\nx-provider-key: {PROVIDER_KEY}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn traversal_and_encoded_paths_are_404_and_reach_nothing() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let body = Shape::OpenAi.body();
    for target in [
        "/v1/../v1/chat/completions",
        "/v1/chat/../../admin",
        "/v1/chat/%2e%2e/completions",
        "/v1/%2e%2e/v1/chat/completions",
        "/v1%2Fchat%2Fcompletions",
        "/v1/chat%2fcompletions",
        "//evil.example/v1/chat/completions",
        "/v1//chat/completions",
        "/./v1/chat/completions",
        "/groq/../v1/chat/completions",
        "/groq/%2e%2e/v1/chat/completions",
        "/v1beta/models/..:generateContent",
        "/v1beta/models/%2e%2e%2fadmin:generateContent",
        "/v1beta/models/a%3AgenerateContent",
    ] {
        let response = raw(gw.addr, &raw_request("POST", target, "localhost", &gw.key, "", body)).await;
        assert!(response.starts_with("HTTP/1.1 404"), "{target}: {response}");
    }
    assert!(mock.recorded().is_empty(), "{:?}", mock.recorded());
}

#[tokio::test]
async fn absolute_form_host_and_forwarded_host_never_choose_the_origin() {
    let mock = MockUpstream::start().await;
    let elsewhere = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let body = Shape::OpenAi.body();
    let evil = elsewhere.addr.to_string();
    let attempts = [
        raw_request("POST", &format!("http://{evil}/v1/chat/completions"), &evil, &gw.key, "", body),
        raw_request(
            "POST",
            "/v1/chat/completions",
            &evil,
            &gw.key,
            &format!("x-forwarded-host: {evil}\r\nforwarded: host={evil}\r\n"),
            body,
        ),
        raw_request("POST", &format!("http://{evil}/v1/../admin"), &evil, &gw.key, "", body),
    ];
    let mut forwarded = 0;
    for attempt in &attempts {
        let response = raw(gw.addr, attempt).await;
        assert!(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.1 404"), "{response}");
        forwarded += usize::from(response.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(elsewhere.connections(), 0, "another origin was contacted");
    let seen = mock.recorded();
    assert_eq!(seen.len(), forwarded);
    for r in seen {
        assert_eq!(r.target, "/v1/chat/completions");
        assert_eq!(r.headers["host"], mock.addr.to_string());
        assert!(!r.headers.contains_key("x-forwarded-host") && !r.headers.contains_key("forwarded"));
    }
}

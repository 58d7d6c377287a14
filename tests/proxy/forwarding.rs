//! Each provider kind: the upstream receives exactly one credential in that provider's form, none of the
//! caller's credentials or hop-by-hop headers, the right path and query, and the body unchanged.

use crate::common::*;

/// Credentials and hop-by-hop headers a caller might send; none may reach the upstream.
const CALLER_NOISE: &[(&str, &str)] = &[
    ("x-goog-api-key", "caller-goog-key"),
    ("api-key", "caller-azure-key"),
    ("cookie", "session=caller-cookie"),
    ("connection", "keep-alive, x-nominated"),
    ("x-nominated", "hop"),
    ("keep-alive", "timeout=5"),
    ("proxy-authorization", "Basic Y2FsbGVyOnNlY3JldA=="),
    ("te", "trailers"),
    ("accept-encoding", "gzip, br, zstd"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-for", "203.0.113.9"),
    ("x-stainless-retry-count", "0"),
];

fn header_names(r: &Recorded) -> Vec<String> {
    r.headers.keys().map(|k| k.as_str().to_owned()).collect()
}

/// What every upstream request must satisfy, whatever the provider.
fn assert_clean(r: &Recorded, mock: &MockUpstream) {
    let names = header_names(r);
    for dropped in [
        "x-provider-key",
        "api-key",
        "cookie",
        "connection",
        "x-nominated",
        "keep-alive",
        "proxy-authorization",
        "te",
        "x-forwarded-host",
        "x-forwarded-for",
    ] {
        assert!(!names.contains(&dropped.to_owned()), "{dropped} reached upstream: {names:?}");
    }
    assert_eq!(r.headers["host"], mock.addr.to_string());
    assert_eq!(r.headers["accept-encoding"], "identity");
    assert_eq!(r.headers["x-stainless-retry-count"], "0", "end-to-end headers pass through");
    let all: String = r.headers.iter().map(|(k, v)| format!("{k}: {v:?}\n")).collect::<String>() + &r.target;
    assert!(!all.contains("tg_live_"), "service key reached upstream: {all}");
    assert!(!all.contains("caller-"), "a caller credential reached upstream: {all}");
}

/// The exact credentials in a request: (where, value).
fn credentials(r: &Recorded) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for name in ["authorization", "x-api-key", "x-goog-api-key", "api-key"] {
        for v in r.headers.get_all(name) {
            found.push((name.to_owned(), v.to_str().unwrap().to_owned()));
        }
    }
    if let Some(q) = r.target.split_once('?').map(|(_, q)| q) {
        for pair in q.split('&').filter(|p| p.starts_with("key=")) {
            found.push(("?key".to_owned(), pair[4..].to_owned()));
        }
    }
    found
}

#[tokio::test]
async fn openai_gets_a_bearer_provider_key_and_nothing_else() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let body = Shape::OpenAi.body();
    let auth = format!("Bearer {}", gw.key);
    let mut headers =
        vec![("authorization", auth.as_str()), ("x-provider-key", PROVIDER_KEY), ("content-type", "application/json")];
    headers.extend_from_slice(CALLER_NOISE);
    headers.push(("x-api-key", "caller-anthropic-key"));
    let reply = post(&gw.url("/v1/chat/completions?foo=1&key=caller-query-key"), &headers, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body, OPENAI_JSON.as_bytes());

    let r = mock.only_request();
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(r.target, "/v1/chat/completions?foo=1");
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(r.headers["content-length"], body.len().to_string());
    assert_eq!(credentials(&r), vec![("authorization".into(), format!("Bearer {PROVIDER_KEY}"))]);
    assert_clean(&r, &mock);
}

#[tokio::test]
async fn anthropic_gets_x_api_key_and_a_default_version() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let body = Shape::Anthropic.body();
    // The Anthropic SDK sends its api_key (here the service key) as x-api-key.
    let mut headers =
        vec![("x-api-key", gw.key.as_str()), ("x-provider-key", PROVIDER_KEY), ("anthropic-beta", "tools-2024-04-04")];
    headers.extend_from_slice(CALLER_NOISE);
    let reply = post(&gw.url("/v1/messages?beta=true"), &headers, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body, ANTHROPIC_JSON.as_bytes());

    let r = mock.only_request();
    assert_eq!(r.target, "/v1/messages?beta=true");
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(credentials(&r), vec![("x-api-key".into(), PROVIDER_KEY.into())]);
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert_eq!(r.headers["anthropic-beta"], "tools-2024-04-04");
    assert_clean(&r, &mock);
}

#[tokio::test]
async fn anthropic_keeps_the_callers_version() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let auth = format!("Bearer {}", gw.key);
    let headers =
        [("authorization", auth.as_str()), ("x-provider-key", PROVIDER_KEY), ("anthropic-version", "2024-01-01")];
    let reply = post(&gw.url("/v1/messages/count_tokens"), &headers, Shape::Anthropic.body()).await;
    assert_eq!(reply.status, 200);
    let r = mock.only_request();
    assert_eq!(r.target, "/v1/messages/count_tokens");
    assert_eq!(r.headers.get_all("anthropic-version").iter().collect::<Vec<_>>(), ["2024-01-01"]);
}

#[tokio::test]
async fn gemini_gets_the_key_in_the_query_by_default() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let body = Shape::Gemini.body();
    // google-genai sends its api_key as x-goog-api-key; here it is the service key.
    let mut headers = vec![("x-goog-api-key", gw.key.as_str()), ("x-provider-key", PROVIDER_KEY)];
    headers.extend(CALLER_NOISE.iter().filter(|(k, _)| *k != "x-goog-api-key"));
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=caller-query-key";
    let reply = post(&gw.url(path), &headers, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), GEMINI_SSE.concat());

    let r = mock.only_request();
    assert_eq!(r.target, format!("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={PROVIDER_KEY}"));
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(credentials(&r), vec![("?key".into(), PROVIDER_KEY.into())]);
    assert_clean(&r, &mock);
}

#[tokio::test]
async fn gemini_with_header_auth_gets_x_goog_api_key() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let auth = format!("Bearer {}", gw.key);
    let mut headers = vec![("authorization", auth.as_str()), ("x-provider-key", PROVIDER_KEY)];
    headers.extend_from_slice(CALLER_NOISE);
    let reply = post(
        &gw.url("/gemhdr/v1/models/gemini-2.5-flash:generateContent?key=caller-query-key"),
        &headers,
        Shape::Gemini.body(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body, GEMINI_JSON.as_bytes());
    let r = mock.only_request();
    assert_eq!(r.target, "/v1/models/gemini-2.5-flash:generateContent");
    assert_eq!(credentials(&r), vec![("x-goog-api-key".into(), PROVIDER_KEY.into())]);
    assert_clean(&r, &mock);
}

#[tokio::test]
async fn a_named_provider_keeps_its_base_path() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let headers = keys.headers();
    let reply = post(&gw.url("/groq/v1/chat/completions"), &headers, Shape::OpenAi.body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let r = mock.only_request();
    assert_eq!(r.target, "/openai/v1/chat/completions");
    assert_eq!(credentials(&r), vec![("authorization".into(), format!("Bearer {PROVIDER_KEY}"))]);
}

#[tokio::test]
async fn get_routes_forward_without_a_body() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let headers = keys.headers();
    let reply = request(http::Method::GET, &gw.url("/v1/models/ft:gpt-4o-mini:acme::abc123"), &headers, b"").await;
    assert_eq!(reply.status, 200);
    let r = mock.only_request();
    assert_eq!(r.method, http::Method::GET);
    assert_eq!(r.target, "/v1/models/ft:gpt-4o-mini:acme::abc123");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn responses_carry_tollgate_request_ids_and_lose_upstream_cookies() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let headers = keys.headers();
    let a = post(&gw.url("/v1/chat/completions"), &headers, Shape::OpenAi.body()).await;
    let b = post(&gw.url("/v1/chat/completions"), &headers, Shape::OpenAi.body()).await;
    let (ida, idb) = (&a.headers["x-request-id"], &b.headers["x-request-id"]);
    assert_eq!(ida.len(), 16);
    assert_ne!(ida, idb);
    assert_eq!(a.headers["x-upstream-request-id"], "upstream-req-1");
    assert!(!a.headers.contains_key("set-cookie"));
}

/// Headers an upstream (or whatever answers at its address) may send that would act on the caller's
/// side: none reaches the caller, in JSON or SSE responses.
const UPSTREAM_NOISE: &[(&str, &str)] = &[
    ("alt-svc", "h3=\":443\"; ma=86400"),
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("access-control-allow-origin", "*"),
    ("access-control-allow-credentials", "true"),
    ("location", "https://evil.example/"),
    ("www-authenticate", "Basic realm=\"upstream\""),
    ("authorization", "Bearer sk-upstream-secret"),
    ("set-cookie", "__cf_bm=secret; domain=.api.openai.com"),
    ("x-powered-by", "upstream"),
    ("cache-control", "public, max-age=86400"),
];

/// An upstream answering every request with `UPSTREAM_NOISE` plus the headers the caller should keep.
async fn noisy_upstream() -> String {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let stream = req.uri().query().is_some_and(|q| q.contains("alt=sse"));
                let (content_type, body) = if stream {
                    ("text/event-stream", GEMINI_SSE.concat())
                } else {
                    ("application/json", GEMINI_JSON.to_owned())
                };
                let mut response = http::Response::builder()
                    .header("content-type", content_type)
                    .header("x-request-id", "upstream-1")
                    .header("retry-after", "3")
                    .header("x-ratelimit-remaining-requests", "7");
                for (name, value) in UPSTREAM_NOISE {
                    response = response.header(*name, *value);
                }
                Ok::<_, std::convert::Infallible>(
                    response.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap(),
                )
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn only_allowlisted_upstream_headers_reach_the_caller() {
    let upstream = noisy_upstream().await;
    let gw = Gateway::start(&upstream, "[limits]\nenabled = false\n").await;
    let keys = gw.auth();
    let headers = keys.headers();
    for path in [Shape::Gemini.path(), Shape::Gemini.stream_path()] {
        let reply = post(&gw.url(path), &headers, Shape::Gemini.body()).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        for (name, value) in UPSTREAM_NOISE {
            assert!(reply.headers.get(*name).is_none_or(|v| v != value), "{path}: {name} reached the caller");
        }
        assert_eq!(reply.headers["cache-control"], "no-store", "a shared cache must not keep one caller's answer");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
        assert_eq!(reply.headers["x-upstream-request-id"], "upstream-1");
        assert_eq!(reply.headers["retry-after"], "3");
        assert_eq!(reply.headers["x-ratelimit-remaining-requests"], "7", "limits off: the provider's report passes");
    }
}

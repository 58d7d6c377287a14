//! The error table (docs/ARCHITECTURE.md, Errors), for each provider shape: tollgate's own errors carry the route's
//! shape, status and message, and the upstream receives nothing for any error tollgate decides before forwarding.

use crate::common::*;

async fn post_shape(gw: &Gateway, shape: Shape, headers: &[(&str, &str)]) -> Reply {
    post_path(gw, shape.path(), headers, shape.body()).await
}

async fn post_path(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    post(&gw.url(path), headers, body).await
}

/// Request headers, the status they earn, and a part of the message.
type Case = (Keys, u16, &'static str);

#[tokio::test]
async fn refusals_before_forwarding_in_every_shape() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (revoked, revoked_info) = gw.create_key(&NewKey::live("revoked", 0));
    gw.store.revoke_key(revoked_info.id, 1).unwrap();
    let (expired, _) = gw.create_key(&NewKey { expires_at: Some(1), ..NewKey::live("expired", 0) });
    let (unknown, _) = {
        // Well-formed, valid checksum, in no store.
        let other = tempfile::tempdir().unwrap();
        let store = tollgate::store::SqliteStore::open(&other.path().join("o.db")).unwrap();
        let (k, i) = seed_key(&store, &NewKey::live("o", 0));
        (k.expose().to_owned(), i)
    };
    let mut tampered = gw.key.clone();
    tampered.replace_range(20..21, if &gw.key[20..21] == "a" { "b" } else { "a" });
    let cases: Vec<Case> = vec![
        (gw.auth().without("authorization"), 401, "Missing API key"),
        (Keys::new("garbage"), 401, "Invalid API key"),
        (Keys::new(&tampered), 401, "Invalid API key"),
        (Keys::new(&unknown), 401, "Invalid API key"),
        (Keys::new(&revoked), 401, "Invalid API key"),
        (Keys::new(&expired), 401, "API key expired"),
        (gw.auth().without("x-provider-key"), 400, "Missing X-Provider-Key header"),
        (gw.auth().with("x-provider-key", "sk bad"), 400, "Invalid X-Provider-Key header"),
    ];
    // Keys written after start become visible within the refresh interval (100ms here): wait until the
    // expired one is known, so the revoked and expired cases are judged on loaded keys.
    let expired_keys = Keys::new(&expired);
    let expired_h = expired_keys.headers();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while post_shape(&gw, Shape::OpenAi, &expired_h).await.json()["error"]["message"] != "API key expired" {
        assert!(tokio::time::Instant::now() < deadline, "new keys not visible within 5s");
        tokio::task::yield_now().await;
    }
    for shape in SHAPES {
        for (keys, status, message) in &cases {
            let reply = post_shape(&gw, shape, &keys.headers()).await;
            shape.assert_error(&reply, *status, message);
        }
    }
    assert!(mock.recorded().is_empty(), "upstream received {:?}", mock.recorded());
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let h = keys.headers();
    Shape::OpenAi.assert_error(&post_path(&gw, "/v1/files", &h, "{}").await, 404, "Unknown route");
    Shape::Anthropic.assert_error(&post_path(&gw, "/v1/messages/batches", &h, "{}").await, 404, "Unknown route");
    Shape::Gemini.assert_error(&post_path(&gw, "/v1beta/models/m:tuneModel", &h, "{}").await, 404, "Unknown route");
    let wrong = request(http::Method::GET, &gw.url("/v1/chat/completions"), &h, b"").await;
    Shape::OpenAi.assert_error(&wrong, 405, "Method not allowed");
    assert_eq!(wrong.headers["allow"], "POST");
    assert!(mock.recorded().is_empty());
}

#[tokio::test]
async fn upstream_refused_is_502() {
    // Bound but never listening: connections are refused, and no other test can take the port meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let gw = Gateway::start(&format!("http://127.0.0.1:{port}"), "").await;
    let keys = gw.auth();
    let h = keys.headers();
    for shape in SHAPES {
        let reply = post_shape(&gw, shape, &h).await;
        shape.assert_error(&reply, 502, "Upstream provider unreachable");
        assert!(!reply.text().contains("127.0.0.1") && !reply.text().contains(PROVIDER_KEY), "{}", reply.text());
    }
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[upstream]\nresponse_timeout = \"300ms\"").await;
    let keys = gw.auth().with("x-mock", "never");
    let h = keys.headers();
    for shape in SHAPES {
        let reply = post_shape(&gw, shape, &h).await;
        shape.assert_error(&reply, 504, "Upstream provider timed out");
    }
}

#[tokio::test]
async fn upstream_redirects_are_502_and_never_followed() {
    let mock = MockUpstream::start().await;
    let elsewhere = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let to = format!("redirect {}/v1/chat/completions?key=x", elsewhere.base_url());
    let keys = gw.auth().with("x-mock", to);
    let h = keys.headers();
    for shape in SHAPES {
        let reply = post_shape(&gw, shape, &h).await;
        shape.assert_error(&reply, 502, "redirect");
        assert!(!reply.headers.contains_key("location"));
        assert!(!reply.text().contains(&elsewhere.addr.to_string()));
    }
    assert_eq!(mock.recorded().len(), 3);
    assert_eq!(elsewhere.connections(), 0, "the redirect target was contacted");
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    for code in ["400", "401", "429", "500", "529"] {
        let keys = gw.auth().with("x-mock", format!("status {code}"));
        let reply = post_shape(&gw, Shape::Anthropic, &keys.headers()).await;
        assert_eq!(reply.status.as_str(), code);
        assert_eq!(reply.json()["error"]["message"], "from upstream");
        assert_eq!(reply.headers["x-upstream-request-id"], "upstream-req-1");
    }
}

#[tokio::test]
async fn overload_is_503_with_retry_after() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nmax_in_flight = 1").await;
    let (held, open_stream) = gw.open_held(&mock, "/v1/chat/completions", Shape::OpenAi.stream_body()).await;
    let keys = gw.auth();
    let h = keys.headers();
    for shape in SHAPES {
        let reply = post_shape(&gw, shape, &h).await;
        shape.assert_error(&reply, 503, "overloaded");
        assert_eq!(reply.headers["retry-after"], "1");
    }
    // The slot frees when the stream ends.
    drop(held);
    drop(open_stream);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let reply = post_shape(&gw, Shape::OpenAi, &h).await;
        if reply.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn bad_bodies_are_400_or_413_in_shape_and_never_forwarded() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nmax_body_bytes = 4096").await;
    let keys = gw.auth();
    let h = keys.headers();
    let big = format!("{{\"model\":\"m\",\"pad\":\"{}\"}}", "x".repeat(5000));
    for shape in SHAPES {
        for bad in ["", "{", "{\"model\":", "[1,2]", "null", "{\"stream\":\"yes\"}", "{} trailing"] {
            let reply = post_path(&gw, shape.path(), &h, bad).await;
            shape.assert_error(&reply, 400, "Request body");
        }
        shape.assert_error(&post_path(&gw, shape.path(), &h, &big).await, 413, "Request body too large");
    }
    assert!(mock.recorded().is_empty());
}

//! One tenant cannot starve the others: a key's slow bodies hold at most its own concurrency, never
//! the process-wide in-flight slots, and hostile model names cost bounded work before a refusal.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate::auth::keys::KeyLimits;

use crate::common::*;

/// Sends a request head announcing a body it never finishes; returns the socket.
async fn slow_body(gw: &Gateway, secret: &str) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}\r\n\
         x-provider-key: {PROVIDER_KEY}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads whatever status line arrives first.
async fn status_of(mut stream: TcpStream) -> (TcpStream, String) {
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    (stream, text.lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn one_keys_slow_bodies_cannot_take_every_in_flight_slot() {
    let mock = MockUpstream::start().await;
    let attacker = NewKey {
        limits: KeyLimits { concurrent_requests: Some(3), ..KeyLimits::default() },
        ..NewKey::live("slow", 0)
    };
    let gw = Gateway::start_with(
        &mock.base_url(),
        "[server]\nmax_in_flight = 8\nbody_idle_timeout = \"30s\"\n",
        &[attacker],
    )
    .await;
    let secret = gw.keys[0].clone();

    // Twelve bodies that never finish: more than the process-wide cap of eight.
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let stream = slow_body(&gw, &secret).await;
        pending.spawn(status_of(stream));
    }
    // All but the key's three are refused at once, by the key's own concurrency limit.
    let mut refused = Vec::new();
    for _ in 0..9 {
        let (stream, status) = tokio::time::timeout(Duration::from_secs(10), pending.join_next())
            .await
            .expect("the requests beyond the key's concurrency were not refused")
            .unwrap()
            .unwrap();
        assert!(status.starts_with("HTTP/1.1 429"), "{status}");
        refused.push(stream);
    }
    assert_eq!(pending.len(), 3, "three bodies are still being waited for");

    // Another tenant is served as usual while the attack holds.
    let keys = gw.auth();
    let headers = keys.headers();
    for shape in SHAPES {
        let reply = post(&gw.url(shape.path()), &headers, shape.body()).await;
        assert_eq!(reply.status, 200, "{shape:?}: {}", reply.text());
    }
}

#[tokio::test]
async fn long_model_names_are_refused_before_any_allowlist_is_matched() {
    let mock = MockUpstream::start().await;
    // Patterns shaped to make a backtracking matcher quadratic in the model name.
    let models: Vec<String> = (0..64).map(|i| format!("*{}b{i}", "a".repeat(120))).collect();
    let globbed = NewKey {
        access: tollgate::auth::access::KeyAccess { models: Some(models), ..Default::default() },
        ..NewKey::live("globs", 0)
    };
    let gw = Gateway::start_with(&mock.base_url(), "", &[globbed]).await;
    let keys = Keys::new(&gw.keys[0]);
    let headers = keys.headers();
    let long = "a".repeat(1 << 20);

    let body = format!(r#"{{"model":"{long}","messages":[]}}"#);
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let shape = if path == "/v1/messages" { Shape::Anthropic } else { Shape::OpenAi };
        let started = std::time::Instant::now();
        shape.assert_error(&post(&gw.url(path), &headers, &body).await, 400, "Model name too long");
        eprintln!("1 MiB model name, 64 hostile globs: refused in {:?}", started.elapsed());
    }
    // A model in the path is bounded by the router: no such route.
    let path = format!("/v1beta/models/{}:generateContent", "a".repeat(300));
    Shape::Gemini.assert_error(&post(&gw.url(&path), &headers, Shape::Gemini.body()).await, 404, "Unknown route");

    // A name within the bound is matched against every pattern and refused by the allowlist.
    let body = format!(r#"{{"model":"{}","messages":[]}}"#, "a".repeat(256));
    let started = std::time::Instant::now();
    Shape::OpenAi.assert_error(&post(&gw.url("/v1/chat/completions"), &headers, &body).await, 403, "may not use model");
    eprintln!("256-byte model name against 64 hostile globs: refused in {:?}", started.elapsed());
    assert!(mock.recorded().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn an_account_cannot_give_its_own_key_most_of_the_in_flight_slots() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let json = [("content-type", "application/json")];
    let account = r#"{"email":"eve@example.com","password":"correct horse battery"}"#;
    let created = post(&gw.url("/v1/accounts"), &[json[0], ("authorization", admin.as_str())], account).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let login = post(&gw.url("/v1/auth/login"), &json, account).await;
    let token = format!("Bearer {}", login.json()["access_token"].as_str().unwrap());
    let headers = [json[0], ("authorization", token.as_str())];
    for (concurrency, status) in [(101, 400), (10_000, 400), (100, 201)] {
        let body = format!(r#"{{"name":"k","limits":{{"concurrent_requests":{concurrency}}}}}"#);
        let reply = post(&gw.url("/v1/auth/keys"), &headers, &body).await;
        assert_eq!(reply.status, status, "{concurrency}: {}", reply.text());
    }
}

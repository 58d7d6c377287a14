//! Management requests against the real binary, with trace-level JSON logs: one line each, named by
//! operation and status, and neither that line nor any other carries a password, token, key or email.

use serde_json::{Value, json};

use crate::common::*;
use crate::process::*;

const ADMIN: &str = "operator-token-4c1e8a0f9b2d7e63";
const PASSWORD: &str = "canary-passphrase-93b1f7";
const WRONG: &str = "canary-wrong-guess-d20a6c";
const EMAIL: &str = "canary.person@example.com";

async fn call(server: &Server, method: http::Method, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let reply = request(method, &server.url(path), &headers, body.as_bytes()).await;
    (reply.status.as_u16(), serde_json::from_slice(&reply.body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_management_request_is_logged_by_operation_without_secrets() {
    let setup = Setup::new("http://127.0.0.1:9", "");
    let env = [
        ("TOLLGATE_ADMIN_TOKEN", ADMIN),
        ("TOLLGATE_SESSION_SECRET", "session-secret-0123456789abcdef"),
        ("TOLLGATE_LOG", "trace"),
        ("TOLLGATE_LOG_FORMAT", "json"),
    ];
    let server = Server::spawn(&setup.config, &env);
    let post = http::Method::POST;
    let account = json!({"email": EMAIL, "password": PASSWORD});
    assert_eq!(call(&server, post.clone(), "/v1/accounts", Some(ADMIN), account).await.0, 201);
    let (status, login) =
        call(&server, post.clone(), "/v1/auth/login", None, json!({"email": EMAIL, "password": PASSWORD})).await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();
    let wrong = json!({"email": EMAIL, "password": WRONG});
    assert_eq!(call(&server, post.clone(), "/v1/auth/login", None, wrong).await.0, 401);
    let (status, created) = call(&server, post.clone(), "/v1/auth/keys", Some(&token), json!({"name": "app"})).await;
    assert_eq!(status, 201, "{created}");
    let raw = created["raw_key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/auth/keys/{id}/rotate");
    assert_eq!(call(&server, http::Method::GET, &path, Some(&token), Value::Null).await.0, 405);
    assert_eq!(call(&server, http::Method::GET, "/v1/accounts/x/y", Some(ADMIN), Value::Null).await.0, 404);
    assert_eq!(call(&server, http::Method::GET, "/v1/auth/keys", Some(WRONG), Value::Null).await.0, 401);
    // A provider call with the key (the upstream is unreachable): its line names the key's kind.
    let reply =
        crate::common::post(&server.url("/v1/chat/completions"), &Keys::new(&raw).headers(), Shape::OpenAi.body())
            .await;
    assert_eq!(reply.status, 502, "{}", reply.text());

    let (status, logs) = server.stop();
    let provider_line: Value = logs
        .iter()
        .find(|l| l.contains("\"message\":\"request\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("the provider request's line");
    assert_eq!((provider_line["key_kind"].as_str(), provider_line["status"].as_u64()), (Some("live"), Some(502)));
    assert!(status.success(), "{status:?}");
    let lines: Vec<Value> = logs
        .iter()
        .filter(|l| l.contains("\"message\":\"management request\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|l| (l["method"].as_str().unwrap(), l["operation"].as_str().unwrap(), l["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("POST", "/v1/accounts", 201),
            ("POST", "/v1/auth/login", 200),
            ("POST", "/v1/auth/login", 401),
            ("POST", "/v1/auth/keys", 201),
            ("GET", "/v1/auth/keys/{id}/rotate", 405),
            ("GET", "unmatched", 404),
            ("GET", "/v1/auth/keys", 401),
        ],
        "{lines:#?}"
    );
    for line in &lines {
        assert_eq!(line["target"], "tollgate::access", "{line}");
        assert_eq!(line["request_id"].as_str().map(str::len), Some(16), "{line}");
        assert!(line["duration_ms"].is_number(), "{line}");
    }
    for line in &logs {
        for secret in [ADMIN, PASSWORD, WRONG, EMAIL, token.as_str(), &raw[8..], "/v1/accounts/x/y"] {
            assert!(!line.contains(secret), "{secret} in a log line: {line}");
        }
    }
}

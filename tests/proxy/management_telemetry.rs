//! Management requests in `/metrics`: counted by operation (the path template, never the path with its
//! ids), method and status class, timed by operation, and never labelled with a secret.

use serde_json::json;

use crate::common::*;
use crate::management::{api, new_account};

const ON_MAIN_LISTENER: &str = "[metrics]\non_main_listener = true\n";
const CANARY_PASSWORD: &str = "canary-password-5e1d9b";
const CANARY_TOKEN: &str = "canary-token-a7c3f0";

async fn scrape(gw: &Gateway) -> String {
    let scrape = format!("Bearer {METRICS_TOKEN}");
    let reply = request(http::Method::GET, &gw.url("/metrics"), &[("authorization", &scrape)], b"").await;
    assert_eq!(reply.status, 200);
    reply.text()
}

fn count(text: &str, operation: &str, method: &str, status: &str) -> u64 {
    let series = format!(
        "tollgate_management_requests_total{{operation=\"{operation}\",method=\"{method}\",status=\"{status}\"}} "
    );
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn management_requests_are_counted_by_operation_and_carry_no_secret() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), ON_MAIN_LISTENER).await;
    let (_, token) = new_account(&gw, "ada@example.com", 10).await;
    let (status, created) =
        api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "app"}))).await;
    assert_eq!(status, 201, "{created}");
    let raw = created["raw_key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let (status, _) = api(&gw, http::Method::GET, &format!("/v1/auth/keys/{id}"), Some(&token), None).await;
    assert_eq!(status, 200);
    let missing = "/v1/auth/keys/tg_live_000000000000";
    assert_eq!(api(&gw, http::Method::GET, missing, Some(&token), None).await.0, 404);
    assert_eq!(api(&gw, http::Method::GET, "/v1/accounts/a/b", Some(ADMIN_TOKEN), None).await.0, 404);
    let wrong = json!({"email": "ada@example.com", "password": CANARY_PASSWORD});
    assert_eq!(api(&gw, http::Method::POST, "/v1/auth/login", None, Some(wrong)).await.0, 401);
    assert_eq!(api(&gw, http::Method::GET, "/v1/auth/keys", Some(CANARY_TOKEN), None).await.0, 401);
    assert_eq!(api(&gw, http::Method::PUT, "/v1/auth/keys", Some(&token), None).await.0, 405);

    let text = scrape(&gw).await;
    assert_eq!(count(&text, "/v1/accounts", "POST", "2xx"), 1, "{text}");
    assert_eq!(count(&text, "/v1/auth/login", "POST", "2xx"), 1, "{text}");
    assert_eq!(count(&text, "/v1/auth/login", "POST", "4xx"), 1, "{text}");
    assert_eq!(count(&text, "/v1/auth/keys", "POST", "2xx"), 1, "{text}");
    assert_eq!(count(&text, "/v1/auth/keys", "GET", "4xx"), 1, "{text}");
    assert_eq!(count(&text, "/v1/auth/keys", "PUT", "4xx"), 1, "{text}");
    assert_eq!(count(&text, "/v1/auth/keys/{id}", "GET", "2xx"), 1, "{text}");
    assert_eq!(count(&text, "/v1/auth/keys/{id}", "GET", "4xx"), 1, "{text}");
    assert_eq!(count(&text, "unmatched", "GET", "4xx"), 1, "{text}");
    let timed = "tollgate_management_request_duration_seconds_count{operation=\"/v1/auth/keys/{id}\"} 2";
    assert!(text.contains(timed), "{text}");
    // Management requests are not provider requests.
    assert!(!text.contains("tollgate_requests_total{"), "{text}");
    for secret in [raw, &raw[8..], id, &token, ADMIN_TOKEN, CANARY_PASSWORD, CANARY_TOKEN, "ada@example.com", missing] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
}

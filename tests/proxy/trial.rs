//! Trial keys for anonymous devices (README, Trial keys for first-time users): a request without a service key is
//! served under its device's key, issued on first sight and shown once; regenerating by header or body member;
//! the issuance throttles; the client address through trusted proxies; claiming a key into an account; and
//! the provisioned secret nowhere but in its one response.

use serde_json::{Value, json};

use crate::common::*;
use crate::management::{api, new_account};

const PROVISIONED: &str = "x-tollgate-key-provisioned";
/// Trial on, every test client reaching tollgate through a "proxy" at 127.0.0.1, so each test names its
/// devices' addresses in `X-Forwarded-For`.
const ON: &str = "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[trial]\nenabled = true\n";

/// A request with no service key at all, from `ip` with `user_agent`.
fn anonymous(ip: &str, user_agent: &str) -> Keys {
    Keys::new("-").without("authorization").with("user-agent", user_agent).with("x-forwarded-for", ip)
}

fn provisioned(reply: &Reply) -> Option<String> {
    reply.headers.get(PROVISIONED).map(|v| v.to_str().unwrap().to_owned())
}

fn remaining_requests(reply: &Reply) -> u64 {
    reply.headers["x-ratelimit-remaining-requests"].to_str().unwrap().parse().unwrap()
}

async fn chat(gw: &Gateway, keys: &Keys) -> Reply {
    gw.call(Shape::OpenAi.path(), keys, Shape::OpenAi.body()).await
}

#[tokio::test]
async fn with_trial_off_a_request_without_a_key_is_refused_as_before() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let reply = chat(&gw, &anonymous("203.0.113.1", "app/1")).await;
    Shape::OpenAi.assert_error(&reply, 401, "Missing API key");
    assert!(provisioned(&reply).is_none());
    assert!(mock.recorded().is_empty());
}

#[tokio::test]
async fn a_device_gets_its_key_once_keeps_it_and_another_device_gets_another() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), ON).await;

    let first = chat(&gw, &anonymous("203.0.113.1", "app/1")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let key = provisioned(&first).expect("the first request shows the key");
    assert!(key.starts_with("tg_trial_"), "{key}");
    assert_eq!(first.headers["x-tollgate-claim-url"], "/dashboard/claim");
    assert_eq!(first.headers["cache-control"], "no-store");
    // The body keeps every member the provider sent and gains tollgate's, with the same key.
    let body = first.json();
    assert_eq!(body["tollgate"], json!({"provisioned_key": key, "claim_url": "/dashboard/claim"}));
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(body["usage"]["total_tokens"], 8);
    if let Some(length) = first.headers.get("content-length") {
        assert_eq!(length.to_str().unwrap(), first.body.len().to_string());
    }
    // Trial limits: 10 a minute.
    assert_eq!(first.headers["x-ratelimit-limit-requests"], "10");
    assert_eq!(remaining_requests(&first), 9);

    // Same device: the same key serves it (its count goes on), and nothing is shown.
    let second = chat(&gw, &anonymous("203.0.113.1", "app/1")).await;
    assert_eq!(second.status, 200);
    assert!(provisioned(&second).is_none());
    assert!(second.json().get("tollgate").is_none(), "{}", second.text());
    assert_eq!(remaining_requests(&second), 8, "counted against the same key");

    // Another user agent on the same address is another device.
    let other = chat(&gw, &anonymous("203.0.113.1", "app/2")).await;
    let other_key = provisioned(&other).expect("another device, another key");
    assert_ne!(other_key, key);
    assert_eq!(remaining_requests(&other), 9);

    // The key sent like any service key works, and shows nothing.
    let presented = chat(&gw, &Keys::new(&key)).await;
    assert_eq!(presented.status, 200, "{}", presented.text());
    assert!(provisioned(&presented).is_none());
    assert_eq!(remaining_requests(&presented), 7);

    // Nothing of tollgate's reached the provider.
    for r in mock.recorded() {
        assert!(!String::from_utf8_lossy(&r.body).contains("tollgate"));
        assert!(!format!("{:?}", r.headers).contains(key_secret(&key)));
    }
}

#[tokio::test]
async fn a_stream_shows_the_key_in_its_headers_only() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), ON).await;
    let reply = gw.call(Shape::OpenAi.path(), &anonymous("203.0.113.2", "app/1"), Shape::OpenAi.stream_body()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let key = provisioned(&reply).expect("the header carries the key");
    assert!(!reply.text().contains("tollgate") && !reply.text().contains(&key), "{}", reply.text());
    assert!(reply.text().contains("data: [DONE]"));
}

#[tokio::test]
async fn regenerating_by_header_or_body_member_replaces_the_key_and_the_member_never_goes_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}issue_per_prefix_per_hour = 100\n")).await;
    let device = anonymous("203.0.113.3", "app/1");
    let first = provisioned(&chat(&gw, &device).await).unwrap();

    let by_header = chat(&gw, &device.clone().with("x-tollgate-regenerate-key", "true")).await;
    assert_eq!(by_header.status, 200, "{}", by_header.text());
    let second = provisioned(&by_header).expect("a new key, shown once");
    assert_ne!(second, first);
    assert_eq!(by_header.json()["tollgate"]["provisioned_key"], second.as_str());
    Shape::OpenAi.assert_error(&chat(&gw, &Keys::new(&first)).await, 401, "Invalid API key");
    assert_eq!(chat(&gw, &Keys::new(&second)).await.status, 200);
    assert!(provisioned(&chat(&gw, &device).await).is_none(), "the device keeps its new key");

    let body =
        r#"{"model":"gpt-4o-mini","tollgate":{"regenerate_key":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let by_member = gw.call(Shape::OpenAi.path(), &device, body).await;
    assert_eq!(by_member.status, 200, "{}", by_member.text());
    let third = provisioned(&by_member).expect("a new key, shown once");
    assert!(third != second && third != first);
    Shape::OpenAi.assert_error(&chat(&gw, &Keys::new(&second)).await, 401, "Invalid API key");
    assert_eq!(chat(&gw, &Keys::new(&third)).await.status, 200);

    // The key itself asks for its replacement, from its device, by a member that comes last.
    let body = r#"{"model":"gpt-4o-mini","messages":[],"tollgate":{"regenerate_key":true}}"#;
    let by_holder = gw
        .call(
            Shape::OpenAi.path(),
            &Keys::new(&third).with("user-agent", "app/1").with("x-forwarded-for", "203.0.113.3"),
            body,
        )
        .await;
    let fourth = provisioned(&by_holder).expect("the device's own key regenerates too");
    assert_ne!(fourth, third);

    // A member that is not tollgate's shape is refused before anything goes upstream.
    let before = mock.recorded().len();
    let bad = r#"{"model":"gpt-4o-mini","tollgate":{"regenerate":1}}"#;
    Shape::OpenAi.assert_error(&gw.call(Shape::OpenAi.path(), &device, bad).await, 400, "tollgate");
    assert_eq!(mock.recorded().len(), before);

    let recorded = mock.recorded();
    assert_eq!(recorded.len(), 7);
    for r in &recorded {
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("tollgate") && !text.contains("regenerate_key"), "reached the upstream: {text}");
        let parsed: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(parsed["model"], "gpt-4o-mini");
        assert!(r.headers.get("x-tollgate-regenerate-key").is_none(), "tollgate's header went upstream");
    }
}

#[tokio::test]
async fn regenerating_does_not_reset_the_devices_monthly_quota() {
    let mock = MockUpstream::start().await;
    let extra = format!("{ON}requests_per_minute = 1000\ntokens_per_month = 60\nissue_per_prefix_per_hour = 100\n");
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    let device = anonymous("203.0.113.4", "app/1");
    let body = r#"{"model":"gpt-4o-mini","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut exhausted = None;
    for _ in 0..30 {
        let reply = gw.call(Shape::OpenAi.path(), &device, body).await;
        if reply.status == 429 {
            exhausted = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let exhausted = exhausted.expect("60 tokens run out");
    Shape::OpenAi.assert_error(&exhausted, 429, "token quota");

    // A new key for the device: shown, but the device's quota is still spent.
    let regenerated =
        gw.call(Shape::OpenAi.path(), &device.clone().with("x-tollgate-regenerate-key", "true"), body).await;
    Shape::OpenAi.assert_error(&regenerated, 429, "token quota");
    let key = provisioned(&regenerated).expect("the new key is shown even on a refusal");
    Shape::OpenAi.assert_error(&gw.call(Shape::OpenAi.path(), &Keys::new(&key), body).await, 429, "token quota");
    // Another device has its own quota.
    assert_eq!(gw.call(Shape::OpenAi.path(), &anonymous("203.0.113.4", "app/2"), body).await.status, 200);

    // After a restart the device still has its key and its month: served without a new key, refused, and a
    // regenerated key is refused too.
    let gw = gw.restart().await;
    let again = gw.call(Shape::OpenAi.path(), &device, body).await;
    Shape::OpenAi.assert_error(&again, 429, "token quota");
    assert!(provisioned(&again).is_none(), "the device's key was found again");
    let regenerated =
        gw.call(Shape::OpenAi.path(), &device.clone().with("x-tollgate-regenerate-key", "true"), body).await;
    Shape::OpenAi.assert_error(&regenerated, 429, "token quota");
    assert!(provisioned(&regenerated).is_some());
}

#[tokio::test]
async fn issuance_is_throttled_per_ipv4_address_and_serving_is_not() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}issue_per_prefix_per_hour = 2\n")).await;
    for ua in ["a", "b"] {
        assert!(provisioned(&chat(&gw, &anonymous("198.51.100.1", ua)).await).is_some());
    }
    let refused = chat(&gw, &anonymous("198.51.100.1", "c")).await;
    Shape::OpenAi.assert_error(&refused, 429, "trial keys");
    assert_eq!(refused.json()["error"]["code"], "trial_issuance_limited");
    let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // Devices with keys are still served; another address may still get one.
    assert_eq!(chat(&gw, &anonymous("198.51.100.1", "a")).await.status, 200);
    assert!(provisioned(&chat(&gw, &anonymous("198.51.100.2", "c")).await).is_some());
    // Regenerating is issuing, and is throttled the same.
    let again = chat(&gw, &anonymous("198.51.100.1", "a").with("x-tollgate-regenerate-key", "true")).await;
    Shape::OpenAi.assert_error(&again, 429, "trial keys");
}

#[tokio::test]
async fn issuance_is_throttled_per_ipv6_64_and_48() {
    let mock = MockUpstream::start().await;
    let extra = format!("{ON}issue_per_prefix_per_hour = 2\nissue_per_ipv6_48_per_hour = 3\n");
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    assert!(provisioned(&chat(&gw, &anonymous("2001:db8:1:1::1", "a")).await).is_some());
    assert!(provisioned(&chat(&gw, &anonymous("2001:db8:1:1:ffff::9", "b")).await).is_some());
    let refused = chat(&gw, &anonymous("2001:db8:1:1::2", "c")).await;
    Shape::OpenAi.assert_error(&refused, 429, "trial keys");
    // Another /64 of the same /48: one more, then the /48 is spent.
    assert!(provisioned(&chat(&gw, &anonymous("2001:db8:1:2::1", "a")).await).is_some());
    Shape::OpenAi.assert_error(&chat(&gw, &anonymous("2001:db8:1:3::1", "a")).await, 429, "trial keys");
    assert!(provisioned(&chat(&gw, &anonymous("2001:db8:2:1::1", "a")).await).is_some(), "another /48");
}

#[tokio::test]
async fn issuance_stops_at_the_hourly_ceiling() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}issue_per_hour = 2\n")).await;
    assert!(provisioned(&chat(&gw, &anonymous("192.0.2.1", "a")).await).is_some());
    assert!(provisioned(&chat(&gw, &anonymous("192.0.2.2", "a")).await).is_some());
    let refused = chat(&gw, &anonymous("192.0.2.3", "a")).await;
    Shape::OpenAi.assert_error(&refused, 429, "trial keys");
    assert!(refused.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_spoofed_leftmost_forwarded_address_is_ignored() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}issue_per_prefix_per_hour = 1\n")).await;
    assert!(provisioned(&chat(&gw, &anonymous("1.1.1.1, 198.51.100.9", "a")).await).is_some());
    // A new leftmost entry per request does not make a new address: the client is 198.51.100.9.
    let spoofed = chat(&gw, &anonymous("2.2.2.2, 198.51.100.9", "b")).await;
    Shape::OpenAi.assert_error(&spoofed, 429, "trial keys");
    // Nor does it make a new device.
    assert!(provisioned(&chat(&gw, &anonymous("3.3.3.3, 198.51.100.9", "a")).await).is_none());

    // Without trusted proxies X-Forwarded-For is not read at all: every client here is 127.0.0.1.
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[trial]\nenabled = true\nissue_per_prefix_per_hour = 1\n").await;
    assert!(provisioned(&chat(&gw, &anonymous("198.51.100.1", "a")).await).is_some());
    Shape::OpenAi.assert_error(&chat(&gw, &anonymous("198.51.100.2", "b")).await, 429, "trial keys");
}

#[tokio::test]
async fn a_trial_key_is_claimed_once_with_its_usage() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}issue_per_prefix_per_hour = 100\n")).await;
    let (_, token) = new_account(&gw, "claimer@example.com", 2).await;
    let device = anonymous("203.0.113.5", "app/1");
    let key = provisioned(&chat(&gw, &device).await).unwrap();
    assert_eq!(chat(&gw, &device).await.status, 200);

    let claim = |text: &str| json!({"trial_key": text});
    let path = "/v1/auth/keys/claim";
    let (status, view) = api(&gw, http::Method::POST, path, Some(&token), Some(claim(&key))).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!((view["kind"].as_str(), view["status"].as_str()), (Some("trial"), Some("active")));
    assert_eq!(view["id"], key_id(&key).as_str());
    assert!(!view.to_string().contains(key_secret(&key)), "the secret is not shown again: {view}");

    // The key keeps working, now with the account's limits; the device gets a new key.
    let claimed = chat(&gw, &Keys::new(&key)).await;
    assert_eq!(claimed.status, 200);
    assert_eq!(claimed.headers["x-ratelimit-limit-requests"], "1000");
    assert!(provisioned(&chat(&gw, &device).await).is_some_and(|k| k != key));

    // Its usage so far is the account's.
    let (status, usage) = api(&gw, http::Method::GET, "/v1/usage?group_by=day", Some(&token), None).await;
    assert_eq!(status, 200, "{usage}");
    let requests: u64 = usage["data"].as_array().unwrap().iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert!(requests >= 2, "the trial requests moved with the key: {usage}");
    let (_, listed) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(&token), None).await;
    assert!(listed["data"].as_array().unwrap().iter().any(|k| k["id"] == key_id(&key).as_str()), "{listed}");

    // Twice: 409. Unknown, revoked or another kind: 404 or 400.
    let (status, again) = api(&gw, http::Method::POST, path, Some(&token), Some(claim(&key))).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("already_claimed")), "{again}");
    let (secret, _) = tollgate::auth::keys::generate("tg", tollgate::auth::keys::KeyKind::Trial).unwrap();
    let (status, _) = api(&gw, http::Method::POST, path, Some(&token), Some(claim(secret.expose()))).await;
    assert_eq!(status, 404);
    let (status, live) = api(&gw, http::Method::POST, path, Some(&token), Some(claim(&gw.key))).await;
    assert_eq!((status, live["error"]["field"].as_str()), (400, Some("trial_key")), "{live}");
    // The shape of a trial key with a checksum that fails names no key, as an unknown one does.
    let forged = format!("tg_trial_{}", "A".repeat(61));
    let (status, _) = api(&gw, http::Method::POST, path, Some(&token), Some(claim(&forged))).await;
    assert_eq!(status, 404);
    let (status, bad) = api(&gw, http::Method::POST, path, Some(&token), Some(claim("hello"))).await;
    assert_eq!((status, bad["error"]["field"].as_str()), (400, Some("trial_key")), "{bad}");
    let regenerated = chat(&gw, &device.clone().with("x-tollgate-regenerate-key", "true")).await;
    let revoked = provisioned(&regenerated).unwrap();
    let _ = chat(&gw, &device.clone().with("x-tollgate-regenerate-key", "true")).await;
    let (status, gone) = api(&gw, http::Method::POST, path, Some(&token), Some(claim(&revoked))).await;
    assert_eq!(status, 404, "a revoked trial key cannot be claimed");
    assert_eq!(gone["error"]["field"], "trial_key", "{gone}");
    let (status, _) = api(&gw, http::Method::POST, path, None, Some(claim(&key))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_claim_counts_against_the_key_cap() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), ON).await;
    let (_, token) = new_account(&gw, "full@example.com", 1).await;
    let (status, _) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "k"}))).await;
    assert_eq!(status, 201);
    let key = provisioned(&chat(&gw, &anonymous("203.0.113.6", "app/1")).await).unwrap();
    let (status, v) =
        api(&gw, http::Method::POST, "/v1/auth/keys/claim", Some(&token), Some(json!({"trial_key": key}))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("key_cap_reached")), "{v}");
    // Still a trial key of its device.
    assert_eq!(chat(&gw, &Keys::new(&key)).await.headers["x-ratelimit-limit-requests"], "10");
}

#[tokio::test]
async fn a_provisioned_key_is_stored_only_as_a_hash() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), ON).await;
    let mut keys = Vec::new();
    for ua in ["a", "b"] {
        keys.push(provisioned(&chat(&gw, &anonymous("203.0.113.7", ua)).await).unwrap());
    }
    let regenerated = chat(&gw, &anonymous("203.0.113.7", "a").with("x-tollgate-regenerate-key", "true")).await;
    keys.push(provisioned(&regenerated).unwrap());
    for key in &keys {
        assert_eq!(chat(&gw, &Keys::new(key)).await.status, if key == &keys[0] { 401 } else { 200 });
    }
    let dir = gw.dir.path().to_owned();
    drop(gw);
    for file in ["tollgate.db", "tollgate.db-wal"] {
        let Ok(bytes) = std::fs::read(dir.join(file)) else { continue };
        for key in &keys {
            let secret = key_secret(key);
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "a trial key in clear in {file}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_of_one_device_end_with_one_key() {
    let mock = MockUpstream::start().await;
    let extra = format!("{ON}issue_per_prefix_per_hour = 1\nconcurrent_requests = 10\ntokens_per_month = 1000000\n");
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    let url = gw.url(Shape::OpenAi.path());
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        pending.spawn(async move {
            let keys = anonymous("203.0.113.8", "app/1");
            post(&url, &keys.headers(), Shape::OpenAi.body()).await
        });
    }
    let replies = pending.join_all().await;
    assert!(replies.iter().all(|r| r.status == 200), "{:?}", replies.iter().map(|r| r.text()).collect::<Vec<_>>());
    let shown: Vec<String> = replies.iter().filter_map(provisioned).collect();
    assert_eq!(shown.len(), 1, "one key issued and shown once: {shown:?}");
    // All eight were counted against that one key: 10 a minute, 2 left.
    assert_eq!(replies.iter().map(remaining_requests).min(), Some(2));
    let stored = gw.store.list_keys().unwrap();
    assert_eq!(stored.iter().filter(|k| k.kind == tollgate::auth::keys::KeyKind::Trial).count(), 1);
}

#[tokio::test]
async fn trial_keys_have_the_scopes_and_models_trial_names() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}models = [\"gpt-4o-mini\"]\n")).await;
    let device = anonymous("203.0.113.9", "app/1");
    assert!(provisioned(&chat(&gw, &device).await).is_some());
    let other_model = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    Shape::OpenAi.assert_error(&gw.call(Shape::OpenAi.path(), &device, other_model).await, 403, "gpt-4o");
    let embeddings = gw.call("/v1/embeddings", &device, r#"{"model":"gpt-4o-mini","input":"hi"}"#).await;
    Shape::OpenAi.assert_error(&embeddings, 403, "embeddings");
    assert_eq!(mock.recorded().len(), 1, "only the allowed request went upstream");
}

/// From a browser, trial keys serve only the sites `[trial]` names: another site's page can neither have a
/// visitor's key issued, nor use it, nor regenerate it, and only a named site may read the answer.
#[tokio::test]
async fn browsers_get_trial_keys_only_on_the_sites_trial_names() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}allowed_origins = [\"https://app.example.com\"]\n")).await;
    let device = anonymous("203.0.113.9", "Mozilla/5.0");

    let elsewhere = chat(&gw, &device.clone().with("origin", "https://evil.example.net")).await;
    Shape::OpenAi.assert_error(&elsewhere, 403, "Origin `https://evil.example.net` is not allowed for trial keys");
    assert!(provisioned(&elsewhere).is_none() && elsewhere.headers.get("access-control-allow-origin").is_none());
    assert!(mock.recorded().is_empty(), "nothing went upstream");

    let home = chat(&gw, &device.clone().with("origin", "https://app.example.com")).await;
    assert_eq!(home.status, 200, "{}", home.text());
    let key = provisioned(&home).expect("the device's first request shows its key");
    assert_eq!(home.headers["access-control-allow-origin"], "https://app.example.com");
    let exposed = home.headers["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains(PROVISIONED), "{exposed}");

    // The key itself, or a regeneration, from another site: refused before anything changes.
    let stolen = Keys::new(&key).with("origin", "https://evil.example.net");
    assert_eq!(chat(&gw, &stolen).await.status, 403);
    let regenerate =
        device.clone().with("origin", "https://evil.example.net").with("x-tollgate-regenerate-key", "true");
    assert_eq!(chat(&gw, &regenerate).await.status, 403);
    let again = chat(&gw, &Keys::new(&key)).await;
    assert_eq!(again.status, 200, "the key was not regenerated: {}", again.text());
    assert!(provisioned(&again).is_none());
    // Outside a browser (no Origin), as before.
    assert_eq!(chat(&gw, &device).await.status, 200);
}

/// `[trial] provider_credential = "server"`: an anonymous device calls with the provider credential the server
/// holds, so a first-time user needs no key of any kind; the output cap `[trial]` names holds.
#[tokio::test]
async fn trial_keys_may_call_with_the_servers_provider_credential() {
    const SERVER_KEY: &str = "sk-server-held-for-trials-7c1d";
    let mock = MockUpstream::start().await;
    let extra = format!(
        "{ON}provider_credential = \"server\"\nmax_output_tokens = 64\n[providers.openai]\nkey_env = \"TRIAL_OPENAI\"\n"
    );
    let gw = Gateway::start_with_env(&mock.base_url(), &extra, &[], &[("TRIAL_OPENAI", SERVER_KEY)]).await;
    let device = anonymous("198.51.100.4", "app/2").without("x-provider-key");
    let reply = chat(&gw, &device).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(provisioned(&reply).is_some());
    let sent = mock.only_request();
    assert_eq!(sent.headers["authorization"], format!("Bearer {SERVER_KEY}").as_str());
    assert!(!reply.text().contains(SERVER_KEY));
    let greedy = r#"{"model":"gpt-4o-mini","max_tokens":65,"messages":[{"role":"user","content":"hi"}]}"#;
    let refused = gw.call(Shape::OpenAi.path(), &device, greedy).await;
    assert_eq!((refused.status.as_u16(), refused.json()["error"]["code"].as_str()), (400, Some("output_cap_exceeded")));
}

/// A key claimed outside this server (the CLI, another instance) is its account's: a regeneration asked from
/// its old device gives the device a new trial key and leaves the claimed one working here.
#[tokio::test]
async fn a_key_claimed_elsewhere_survives_a_regeneration_from_its_old_device() {
    let mock = MockUpstream::start().await;
    // Trial limits high enough for the polling below (the account's default is 1000 a minute).
    let extra = format!("{ON}issue_per_prefix_per_hour = 100\nrequests_per_minute = 500\nrequests_per_day = 10000\n");
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    let (account, _) = new_account(&gw, "claim-elsewhere@example.com", 5).await;
    let device = anonymous("203.0.113.60", "app/1");
    let key = provisioned(&gw.call(Shape::OpenAi.path(), &device, Shape::OpenAi.body()).await).unwrap();

    // Claimed as the CLI does it: straight in the store, the running server following within its refresh.
    let claimed = gw.store.claim_trial_key(key_id(&key), &account, tollgate::clock::unix_now()).unwrap();
    assert!(matches!(claimed, tollgate::store::Claim::Claimed(_)), "{claimed:?}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let reply = gw.call(Shape::OpenAi.path(), &Keys::new(&key), Shape::OpenAi.body()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.headers["x-ratelimit-limit-requests"] == "1000" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the claim was not seen within 5s");
        tokio::task::yield_now().await;
    }

    // Anyone on the device asks for a new trial key.
    let regen = device.clone().with("x-tollgate-regenerate-key", "true");
    let reply = gw.call(Shape::OpenAi.path(), &regen, Shape::OpenAi.body()).await;
    assert!(provisioned(&reply).is_some_and(|k| k != key));

    // The account's key must keep working.
    let after = gw.call(Shape::OpenAi.path(), &Keys::new(&key), Shape::OpenAi.body()).await;
    assert_eq!(after.status, 200, "the claimed (account) key was dropped: {}", after.text());
    let info = gw.store.key_info(key_id(&key)).unwrap().unwrap();
    assert_eq!(info.revoked_at, None, "the store still holds it active");
}

/// Disabling the reserved `trial` account switches trial serving off: its keys are refused when presented, and
/// a keyless request is what it is without trial.
#[tokio::test]
async fn disabling_the_trial_account_stops_keyless_serving() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), ON).await;
    let device = anonymous("203.0.113.80", "app/1");
    let key = provisioned(&gw.call(Shape::OpenAi.path(), &device, Shape::OpenAi.body()).await).unwrap();
    let (status, v) =
        api(&gw, http::Method::PATCH, "/v1/accounts/trial", Some(ADMIN_TOKEN), Some(json!({"disabled": true}))).await;
    assert_eq!(status, 200, "{v}");
    let presented = gw.call(Shape::OpenAi.path(), &Keys::new(&key), Shape::OpenAi.body()).await;
    assert_eq!(presented.status, 401, "the presented key is refused: {}", presented.text());
    let keyless = gw.call(Shape::OpenAi.path(), &device, Shape::OpenAi.body()).await;
    Shape::OpenAi.assert_error(&keyless, 401, "Missing API key");
    assert!(provisioned(&keyless).is_none());
}

/// A keyless request that would be refused for want of a provider key issues nothing, so it cannot spend the
/// issuance ceiling meant for real first requests.
#[tokio::test]
async fn a_request_without_a_provider_key_issues_no_trial_key() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), &format!("{ON}issue_per_hour = 2\n")).await;
    for ip in ["198.51.100.21", "198.51.100.22", "198.51.100.23"] {
        let reply = chat(&gw, &anonymous(ip, "script/1").without("x-provider-key")).await;
        Shape::OpenAi.assert_error(&reply, 400, "Missing X-Provider-Key header");
        assert!(provisioned(&reply).is_none());
    }
    let first = chat(&gw, &anonymous("192.0.2.99", "app/1")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(provisioned(&first).is_some(), "the ceiling was not spent by the refused requests");
}

/// A regenerated key continues its device's request limits (per minute, per day, concurrency) where the old key
/// left them, as it continues its monthly tokens: regenerating buys no new budget.
#[tokio::test]
async fn regenerating_does_not_reset_the_devices_request_limits() {
    let mock = MockUpstream::start().await;
    let extra = format!("{ON}requests_per_day = 2\nissue_per_prefix_per_hour = 100\n");
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    let device = anonymous("203.0.113.50", "app/1");
    for _ in 0..2 {
        let r = gw.call(Shape::OpenAi.path(), &device, Shape::OpenAi.body()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let spent = gw.call(Shape::OpenAi.path(), &device, Shape::OpenAi.body()).await;
    assert_eq!(spent.status, 429, "{}", spent.text());

    let mut served_after_regenerating = 0;
    for _ in 0..5 {
        let regen = device.clone().with("x-tollgate-regenerate-key", "true");
        let reply = gw.call(Shape::OpenAi.path(), &regen, Shape::OpenAi.body()).await;
        assert!(provisioned(&reply).is_some());
        served_after_regenerating += usize::from(reply.status == 200);
        served_after_regenerating +=
            usize::from(gw.call(Shape::OpenAi.path(), &device, Shape::OpenAi.body()).await.status == 200);
    }
    assert_eq!(
        served_after_regenerating, 0,
        "the device spent its 2 requests today, yet {served_after_regenerating} more were served after regenerating"
    );
}

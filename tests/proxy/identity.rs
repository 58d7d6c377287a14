//! End users on the real server (docs/ARCHITECTURE.md, Key kinds): publishable keys' signing secrets and the identity
//! tokens signed with them (valid, expired, forged, of another algorithm or key), `X-Tollgate-End-User` from a
//! secret key, per-end-user limits held per (key, end user) under concurrency, usage by end user, signing-secret
//! rotation, and neither secret anywhere but where it is issued.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tollgate::metering::input_estimate;

use crate::common::*;
use crate::management::{api, new_account};

const ORIGIN: &str = "https://app.example.com";
const BODY: &str = r#"{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A publishable key made through the API: its key, id and signing secret.
struct Publishable {
    key: String,
    id: String,
    secret: String,
}

async fn publishable(gw: &Gateway, token: &str, extra: Value) -> Publishable {
    let mut body = json!({"name": "web", "kind": "publishable", "allowed_origins": [ORIGIN]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = api(gw, http::Method::POST, "/v1/auth/keys", Some(token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["signing_secret"].as_str().unwrap_or_else(|| panic!("no signing secret: {created}"));
    assert!(secret.starts_with("tg_sig_") && secret.len() == 7 + 43, "{secret}");
    Publishable {
        key: created["raw_key"].as_str().unwrap().to_owned(),
        id: created["id"].as_str().unwrap().to_owned(),
        secret: secret.to_owned(),
    }
}

/// An identity token as an app's server mints it.
fn mint(p: &Publishable, alg: Algorithm, claims: Value) -> String {
    let header = Header { alg, kid: Some(p.id.clone()), ..Header::default() };
    encode(&header, &claims, &EncodingKey::from_secret(p.secret.as_bytes())).unwrap()
}

fn token_for(p: &Publishable, sub: &str) -> String {
    mint(p, Algorithm::HS256, json!({"sub": sub, "iat": now(), "exp": now() + 600}))
}

/// A browser's call with a publishable key and, if given, an identity token.
fn browser(key: &str, token: Option<&str>) -> Keys {
    let keys = Keys::new(key).with("origin", ORIGIN);
    match token {
        Some(t) => keys.with("x-tollgate-identity", t),
        None => keys,
    }
}

async fn chat(gw: &Gateway, keys: &Keys) -> Reply {
    gw.call("/v1/chat/completions", keys, BODY).await
}

fn assert_refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], code, "{}", reply.text());
}

#[tokio::test]
async fn tokens_are_verified_and_each_failure_has_its_code() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "id@example.com", 10).await;
    let p = publishable(&gw, &token, json!({})).await;
    let other = publishable(&gw, &token, json!({})).await;

    let valid = token_for(&p, "user-1");
    assert_eq!(chat(&gw, &browser(&p.key, Some(&valid))).await.status, 200);
    let sent = mock.recorded();
    assert!(sent[0].headers.get("x-tollgate-identity").is_none(), "the token went upstream");

    let t = now();
    let within_leeway = mint(&p, Algorithm::HS256, json!({"sub": "u", "iat": t - 100, "exp": t - 20}));
    assert_eq!(chat(&gw, &browser(&p.key, Some(&within_leeway))).await.status, 200, "30 s of leeway");
    let expired = mint(&p, Algorithm::HS256, json!({"sub": "u", "iat": t - 200, "exp": t - 40}));
    let reply = chat(&gw, &browser(&p.key, Some(&expired))).await;
    assert_refused(&reply, 401, "identity_token_expired");
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("mint a new one"), "{}", reply.text());

    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let forged_claims = json!({"sub": "admin", "iat": t, "exp": t + 600}).to_string();
    use base64::Engine;
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims);
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"alg": "none", "typ": "JWT", "kid": p.id}).to_string());
    let bad = [
        ("tampered payload", format!("{head}.{forged_payload}.{signature}")),
        ("alg none", format!("{none_header}.{forged_payload}.")),
        ("HS512", mint(&p, Algorithm::HS512, json!({"sub": "u", "iat": t, "exp": t + 60}))),
        ("wrong kid", {
            let header = Header { kid: Some(other.id.clone()), ..Header::default() };
            encode(
                &header,
                &json!({"sub": "u", "iat": t, "exp": t + 60}),
                &EncodingKey::from_secret(p.secret.as_bytes()),
            )
            .unwrap()
        }),
        ("another key's token", token_for(&other, "u")),
        ("missing sub", mint(&p, Algorithm::HS256, json!({"iat": t, "exp": t + 60}))),
        ("over an hour", mint(&p, Algorithm::HS256, json!({"sub": "u", "iat": t, "exp": t + 3601}))),
        ("garbage", "eyJhbGciOi.garbage".to_owned()),
    ];
    for (case, bad_token) in &bad {
        let reply = chat(&gw, &browser(&p.key, Some(bad_token))).await;
        assert_refused(&reply, 401, "invalid_identity_token");
        let text = reply.text();
        assert!(!text.contains(&bad_token[bad_token.len().saturating_sub(12)..]), "{case}: the token echoed: {text}");
    }
    // The same refusals in the Anthropic shape.
    let reply = gw.call("/v1/messages", &browser(&p.key, Some(&bad[0].1)), Shape::Anthropic.body()).await;
    Shape::Anthropic.assert_error(&reply, 401, "signature");
    assert_eq!(mock.recorded().len(), 2, "no refused request reached the upstream");
}

#[tokio::test]
async fn require_identity_and_the_end_user_header() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "req@example.com", 10).await;
    let p = publishable(&gw, &token, json!({"require_identity": true})).await;
    let reply = chat(&gw, &browser(&p.key, None)).await;
    assert_refused(&reply, 401, "invalid_identity_token");
    assert!(reply.text().contains("Identity token required"), "{}", reply.text());
    assert_eq!(chat(&gw, &browser(&p.key, Some(&token_for(&p, "u")))).await.status, 200);

    // A publishable key may not name an end user unsigned.
    let reply = chat(&gw, &browser(&p.key, Some(&token_for(&p, "u"))).with("x-tollgate-end-user", "mallory")).await;
    assert_eq!(reply.status, 200, "the token wins over the header: {}", reply.text());
    let free = publishable(&gw, &token, json!({})).await;
    let reply = chat(&gw, &browser(&free.key, None).with("x-tollgate-end-user", "mallory")).await;
    assert_refused(&reply, 403, "permission_denied");
    assert!(reply.text().contains("X-Tollgate-Identity"), "{}", reply.text());

    // A secret key names its end user; a bad name is a 400 in the route's shape.
    let live = Keys::new(&gw.key).with("x-tollgate-end-user", "customer-7");
    assert_eq!(chat(&gw, &live).await.status, 200);
    assert!(
        mock.recorded().iter().all(|r| r.headers.get("x-tollgate-end-user").is_none()),
        "the end user went upstream"
    );
    for bad in [String::new(), "x".repeat(129)] {
        let reply = chat(&gw, &Keys::new(&gw.key).with("x-tollgate-end-user", bad.clone())).await;
        assert_refused(&reply, 400, "invalid_end_user");
    }
    let reply =
        gw.call(Shape::Gemini.path(), &Keys::new(&gw.key).with("x-tollgate-end-user", ""), Shape::Gemini.body()).await;
    Shape::Gemini.assert_error(&reply, 400, "X-Tollgate-End-User");

    // Another account's key has no signing secret to rotate here.
    let (status, refused) =
        api(&gw, http::Method::POST, &format!("/v1/auth/keys/{}/signing-secret", key_id(&gw.key)), Some(&token), None)
            .await;
    assert_eq!(status, 404, "another account's key: {refused}");
}

#[tokio::test]
async fn narrowed_limits_and_per_end_user_rate_leave_other_end_users_alone() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "rpm@example.com", 10).await;
    let p = publishable(&gw, &token, json!({"end_user_limits": {"requests_per_minute": 3}})).await;
    let ann = token_for(&p, "ann");
    for _ in 0..3 {
        assert_eq!(chat(&gw, &browser(&p.key, Some(&ann))).await.status, 200);
    }
    let reply = chat(&gw, &browser(&p.key, Some(&ann))).await;
    assert_refused(&reply, 429, "rate_limit_exceeded");
    assert!(reply.text().contains("requests per minute for this end user"), "{}", reply.text());
    assert!(reply.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another end user of the same key is unaffected, and so is the key itself.
    let bob = token_for(&p, "bob");
    assert_eq!(chat(&gw, &browser(&p.key, Some(&bob))).await.status, 200);
    assert_eq!(chat(&gw, &browser(&p.key, None)).await.status, 200, "no end user: the key's own limits only");

    // A token's limits claim narrows (to 1 a minute); a claim above the key's is clamped to it.
    let t = now();
    let narrow =
        mint(&p, Algorithm::HS256, json!({"sub": "cy", "iat": t, "exp": t + 60, "limits": {"requests_per_minute": 1}}));
    assert_eq!(chat(&gw, &browser(&p.key, Some(&narrow))).await.status, 200);
    assert_refused(&chat(&gw, &browser(&p.key, Some(&narrow))).await, 429, "rate_limit_exceeded");
    let wide = mint(
        &p,
        Algorithm::HS256,
        json!({"sub": "di", "iat": t, "exp": t + 60, "limits": {"requests_per_minute": 1000}}),
    );
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(chat(&gw, &browser(&p.key, Some(&wide))).await.status.as_u16());
        }
        out
    };
    assert_eq!(statuses, [200, 200, 200, 429], "clamped to the key's 3 a minute");

    // A refusal by the end-user limit leaves the key's counters as they were: the key's usage counts
    // only admitted requests (3 ann + 1 bob + 1 none + 1 cy + 3 di).
    let (requests, _, _) = gw.stop_and_read_usage(&p.key).await;
    assert_eq!(requests, 9);
}

/// 200 concurrent first requests of one new end user against its token quota: one state is made for
/// it, and what is charged never passes the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_user_token_quota_holds_under_200_concurrent_first_requests() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "quota@example.com", 10).await;
    let quota = 5_000u64;
    let p = publishable(&gw, &token, json!({"end_user_limits": {"tokens_per_month": quota}})).await;
    let identity = token_for(&p, "new-user");
    let estimate = input_estimate(BODY.len());
    let reservation = estimate + 100;
    // The mock reports exactly what was reserved, so the number admitted does not depend on timing.
    let expect_admitted = quota / reservation;
    let usage_mode = format!("usage {estimate} 100");

    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut sender = sender.clone();
        let req = http::Request::post(gw.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {}", p.key))
            .header("x-provider-key", PROVIDER_KEY)
            .header("origin", ORIGIN)
            .header("x-tollgate-identity", identity.as_str())
            .header("x-mock", usage_mode.as_str())
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
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
                assert_refused(&reply, 429, "insufficient_quota");
                assert!(reply.text().contains("this end user's monthly token quota"), "{}", reply.text());
                assert_eq!(reply.headers["x-should-retry"], "false");
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!((admitted, refused), (expect_admitted, 200 - expect_admitted));
    // Another end user of the key still has its whole quota.
    assert_eq!(chat(&gw, &browser(&p.key, Some(&token_for(&p, "other-user")))).await.status, 200);

    let mut gw = gw;
    gw.begin_shutdown().await.unwrap();
    let rows = gw.store.end_user_rows(None, Some(key_id(&p.key)), 0, i64::MAX).unwrap();
    let charged: u64 = rows.iter().filter(|r| r.end_user == "new-user").map(|r| r.input_tokens + r.output_tokens).sum();
    let requests: u64 = rows.iter().filter(|r| r.end_user == "new-user").map(|r| r.requests).sum();
    assert_eq!(requests, admitted);
    assert!(charged <= quota, "charged {charged} over a {quota} quota");
    assert_eq!(charged, admitted * reservation);
    let key_rows = gw.store.usage_report(Some(key_id(&p.key)), 0, i64::MAX).unwrap();
    let key_requests: u64 = key_rows.iter().map(|r| r.requests).sum();
    assert_eq!(key_requests, admitted + 1, "refusals by the end user's quota leave the key's counts alone");
    eprintln!(
        "end-user quota test: 200 concurrent first requests, admitted {admitted}, refused {refused}, charged {charged} of {quota} (one request reserves {reservation})"
    );
}

#[tokio::test]
async fn usage_by_end_user_over_the_api_and_the_quota_survives_a_restart() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "usage@example.com", 10).await;
    let estimate = input_estimate(BODY.len());
    let quota = 3 * (estimate + 100);
    let p = publishable(&gw, &token, json!({"end_user_limits": {"tokens_per_month": quota}})).await;
    let ann = token_for(&p, "ann");
    let exact = format!("usage {estimate} 100");
    for _ in 0..2 {
        assert_eq!(chat(&gw, &browser(&p.key, Some(&ann)).with("x-mock", exact.clone())).await.status, 200);
    }
    assert_eq!(chat(&gw, &browser(&p.key, Some(&token_for(&p, "bob"))).with("x-mock", "usage 7 3")).await.status, 200);

    let gw = gw.restart().await;
    let (status, usage) = api(&gw, http::Method::GET, "/v1/usage?group_by=end_user", Some(&token), None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["group_by"], "end_user");
    let data = usage["data"].as_array().unwrap();
    let row =
        |who: &str| data.iter().find(|r| r["end_user"] == who).unwrap_or_else(|| panic!("{who}: {usage}")).clone();
    assert_eq!((row("ann")["requests"].as_u64(), row("ann")["input_tokens"].as_u64()), (Some(2), Some(2 * estimate)));
    assert_eq!((row("bob")["requests"].as_u64(), row("bob")["total_tokens"].as_u64()), (Some(1), Some(10)));
    let (status, _) = api(&gw, http::Method::GET, "/v1/usage?group_by=person", Some(&token), None).await;
    assert_eq!(status, 400);

    // Ann's month-to-date tokens were carried over the restart: one more request fits, the next does not.
    assert_eq!(chat(&gw, &browser(&p.key, Some(&ann)).with("x-mock", exact.clone())).await.status, 200);
    let reply = chat(&gw, &browser(&p.key, Some(&ann)).with("x-mock", exact)).await;
    assert_refused(&reply, 429, "insufficient_quota");
}

#[tokio::test]
async fn a_rotated_signing_secret_stops_verifying_at_once() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "rot@example.com", 10).await;
    let mut p = publishable(&gw, &token, json!({})).await;
    let old = token_for(&p, "u");
    assert_eq!(chat(&gw, &browser(&p.key, Some(&old))).await.status, 200);

    let path = format!("/v1/auth/keys/{}/signing-secret", p.id);
    let (status, rotated) = api(&gw, http::Method::POST, &path, Some(&token), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, p.secret);
    assert_refused(&chat(&gw, &browser(&p.key, Some(&old))).await, 401, "invalid_identity_token");
    p.secret = new_secret;
    assert_eq!(chat(&gw, &browser(&p.key, Some(&token_for(&p, "u")))).await.status, 200);

    // The secret is shown once: never in the key's view.
    let (_, view) = api(&gw, http::Method::GET, &format!("/v1/auth/keys/{}", p.id), Some(&token), None).await;
    assert!(view.get("signing_secret").is_none() && !view.to_string().contains(&p.secret[7..]), "{view}");
    // A secret key has none to rotate.
    let (status, live) =
        api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "server"}))).await;
    assert_eq!(status, 201);
    assert!(live.get("signing_secret").is_none(), "{live}");
    let path = format!("/v1/auth/keys/{}/signing-secret", live["id"].as_str().unwrap());
    let (status, refused) = api(&gw, http::Method::POST, &path, Some(&token), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("kind_mismatch")), "{refused}");
    let (status, _) =
        api(&gw, http::Method::GET, &format!("/v1/auth/keys/{}/signing-secret", p.id), Some(&token), None).await;
    assert_eq!(status, 405);
}

/// The signing secret and identity tokens are never in a response other than the one issuing the
/// secret, in the metrics, or in the SQLite file in clear.
#[tokio::test]
async fn the_signing_secret_and_tokens_appear_nowhere_else() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[metrics]\non_main_listener = true\n").await;
    let (_, token) = new_account(&gw, "canary@example.com", 10).await;
    let p = publishable(&gw, &token, json!({"end_user_limits": {"requests_per_minute": 1}})).await;
    let canary_user = "canary-end-user-4f1c9e";
    let t = now();
    let identity = token_for(&p, canary_user);
    let expired = mint(&p, Algorithm::HS256, json!({"sub": canary_user, "iat": t - 300, "exp": t - 100}));
    let mut replies = Vec::new();
    for keys in [
        browser(&p.key, Some(&identity)),
        browser(&p.key, Some(&identity)),
        browser(&p.key, Some(&expired)),
        browser(&p.key, Some(&format!("{identity}x"))),
        browser(&p.key, Some(&identity)).with("x-mock", "status 500"),
    ] {
        replies.push(chat(&gw, &keys).await);
    }
    assert_eq!(replies.iter().map(|r| r.status.as_u16()).collect::<Vec<_>>(), [200, 429, 401, 401, 429]);
    let (_, list) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(&token), None).await;
    let scrape = format!("Bearer {METRICS_TOKEN}");
    let metrics = request(http::Method::GET, &gw.url("/metrics"), &[("authorization", &scrape)], b"").await;
    assert_eq!(metrics.status, 200);
    let signature = identity.rsplit('.').next().unwrap().to_owned();
    let secret_part = p.secret[7..].to_owned();
    let mut texts: Vec<String> = replies.iter().map(|r| format!("{:?} {}", r.headers, r.text())).collect();
    texts.push(list.to_string());
    texts.push(metrics.text());
    for text in &texts {
        assert!(!text.contains(&secret_part), "the signing secret in {text}");
        assert!(!text.contains(&signature), "an identity token in {text}");
    }
    assert!(!metrics.text().contains(canary_user), "an end user as a metrics label");
    let refused = "tollgate_refusals_total{reason=\"end_user_requests_per_minute\"} 2";
    assert!(metrics.text().contains(refused), "the end user's refusals are counted under a bounded reason");
    assert!(mock.recorded().iter().all(|r| !format!("{:?}", r.headers).contains(&signature)));
    let mut gw = gw;
    gw.begin_shutdown().await.unwrap();
    for file in ["tollgate.db", "tollgate.db-wal", "tollgate.db-shm"] {
        if let Ok(bytes) = std::fs::read(gw.dir.path().join(file)) {
            for needle in [&secret_part, &signature] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "a secret in {file}");
            }
        }
    }
}

//! The management API over HTTP (docs/ARCHITECTURE.md, Management): the key lifecycle, cross-account isolation, key
//! caps, scopes and allowlists on the data plane, the separation of credential kinds, bad input, and no secret ever
//! shown twice or stored.

use serde_json::{Value, json};

use crate::common::*;

pub(crate) async fn api(
    gw: &Gateway,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = request(method, &gw.url(path), &headers, body.as_bytes()).await;
    let value = if reply.body.is_empty() { Value::Null } else { reply.json() };
    (reply.status.as_u16(), value)
}

pub(crate) async fn new_account(gw: &Gateway, email: &str, key_cap: u32) -> (String, String) {
    let body = json!({"email": email, "password": "correct horse battery", "key_cap": key_cap});
    let (status, account) = api(gw, http::Method::POST, "/v1/accounts", Some(ADMIN_TOKEN), Some(body)).await;
    assert_eq!(status, 201, "{account}");
    let login = json!({"email": email, "password": "correct horse battery"});
    let (status, token) = api(gw, http::Method::POST, "/v1/auth/login", None, Some(login)).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "bearer");
    (account["id"].as_str().unwrap().to_owned(), token["access_token"].as_str().unwrap().to_owned())
}

async fn call(gw: &Gateway, key: &str, shape: Shape) -> Reply {
    gw.call(shape.path(), &Keys::new(key), shape.body()).await
}

fn assert_no_secret(value: &Value) {
    let text = value.to_string();
    assert!(!text.contains("raw_key"), "a secret in {text}");
}

#[tokio::test]
async fn the_whole_key_lifecycle_over_http() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "ada@example.com", 10).await;

    let (status, created) = api(
        &gw,
        http::Method::POST,
        "/v1/auth/keys",
        Some(&token),
        Some(json!({"name": "app", "description": "the app"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let raw = created["raw_key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(raw.starts_with(created["key_prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["chat", "embeddings", "models:read", "count_tokens"]));
    assert_eq!(created["limits"]["requests_per_minute"], 1000, "the test gateway's default");

    // The secret is never shown again.
    let (_, list) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(&token), None).await;
    let (_, one) = api(&gw, http::Method::GET, &format!("/v1/auth/keys/{id}"), Some(&token), None).await;
    for v in [&list, &one] {
        assert_no_secret(v);
        assert!(!v.to_string().contains(key_secret(&raw)), "secret in {v}");
    }
    assert_eq!(list["data"][0]["id"], id.as_str());

    // Used on a provider route; last use and usage show up.
    assert_eq!(call(&gw, &raw, Shape::OpenAi).await.status, 200);
    let (_, one) = api(&gw, http::Method::GET, &format!("/v1/auth/keys/{id}"), Some(&token), None).await;
    assert!(one["last_used_at"].is_string(), "{one}");

    // Rename and change limits: the next request sees the new limit.
    let patch = json!({"name": "app-renamed", "limits": {"requests_per_minute": 1}});
    let (status, patched) =
        api(&gw, http::Method::PATCH, &format!("/v1/auth/keys/{id}"), Some(&token), Some(patch)).await;
    assert_eq!((status, patched["name"].as_str()), (200, Some("app-renamed")), "{patched}");
    assert_eq!(patched["limits"]["requests_per_minute"], 1);
    // At one a minute, of two requests in a row the second is refused. (The first may pass: the request made
    // earlier was spaced at the old rate, and on a slow machine its interval may already be over.)
    let _ = call(&gw, &raw, Shape::OpenAi).await;
    Shape::OpenAi.assert_error(&call(&gw, &raw, Shape::OpenAi).await, 429, "requests per minute");
    let reset = json!({"limits": {"requests_per_minute": null}});
    let (_, patched) = api(&gw, http::Method::PATCH, &format!("/v1/auth/keys/{id}"), Some(&token), Some(reset)).await;
    assert_eq!(patched["limits"]["requests_per_minute"], 1000, "null returns to the default");

    // Rotate without grace: the old key is refused at once, the new one works.
    let (status, rotated) =
        api(&gw, http::Method::POST, &format!("/v1/auth/keys/{id}/rotate"), Some(&token), Some(json!({}))).await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(rotated["replaces"]["id"], id.as_str());
    let new_raw = rotated["raw_key"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_eq!(rotated["name"], "app-renamed", "the new key keeps the old one's settings");
    Shape::OpenAi.assert_error(&call(&gw, &raw, Shape::OpenAi).await, 401, "Invalid API key");
    assert_eq!(call(&gw, &new_raw, Shape::Anthropic).await.status, 200);

    // Rotate with grace: the old key keeps working until the grace ends.
    let grace = json!({"grace_seconds": 2});
    let (_, rotated) =
        api(&gw, http::Method::POST, &format!("/v1/auth/keys/{new_id}/rotate"), Some(&token), Some(grace)).await;
    let newest = rotated["raw_key"].as_str().unwrap().to_owned();
    assert_eq!(call(&gw, &new_raw, Shape::Gemini).await.status, 200, "still inside the grace period");
    assert_eq!(call(&gw, &newest, Shape::Gemini).await.status, 200);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(&gw, &new_raw, Shape::OpenAi).await.status != 401 {
        assert!(tokio::time::Instant::now() < deadline, "old key still accepted long after its grace");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Revoke: refused on the next request.
    let newest_id = rotated["id"].as_str().unwrap();
    let (status, revoked) =
        api(&gw, http::Method::DELETE, &format!("/v1/auth/keys/{newest_id}"), Some(&token), None).await;
    assert_eq!((status, revoked["status"].as_str()), (200, Some("revoked")));
    Shape::Anthropic.assert_error(&call(&gw, &newest, Shape::Anthropic).await, 401, "Invalid API key");

    // Usage of the account, by day and by model.
    let (status, usage) = api(&gw, http::Method::GET, "/v1/usage?group_by=model", Some(&token), None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["group_by"], "model");
    let (status, usage) =
        api(&gw, http::Method::GET, &format!("/v1/usage?key_id={id}&group_by=day"), Some(&token), None).await;
    assert_eq!(status, 200, "{usage}");
}

#[tokio::test]
async fn accounts_never_see_each_others_keys_and_caps_hold() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, a) = new_account(&gw, "a@example.com", 2).await;
    let (_, b) = new_account(&gw, "b@example.com", 10).await;
    let (_, b_key) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&b), Some(json!({"name": "b-key"}))).await;
    let b_id = b_key["id"].as_str().unwrap();
    let missing = "AAAAAAAAAAAA";
    for id in [b_id, missing] {
        for (method, path, body) in [
            (http::Method::GET, format!("/v1/auth/keys/{id}"), None),
            (http::Method::PATCH, format!("/v1/auth/keys/{id}"), Some(json!({"name": "mine now"}))),
            (http::Method::DELETE, format!("/v1/auth/keys/{id}"), None),
            (http::Method::POST, format!("/v1/auth/keys/{id}/rotate"), Some(json!({}))),
            (http::Method::GET, format!("/v1/usage?key_id={id}"), None),
        ] {
            let (status, v) = api(&gw, method.clone(), &path, Some(&a), body).await;
            assert_eq!(status, 404, "{method} {path}: {v}");
            assert_eq!(
                v,
                json!({"error": {"code": "not_found", "message": "No such resource", "field": null}}),
                "same answer whether or not it exists"
            );
        }
    }
    let (_, a_list) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(&a), None).await;
    assert_eq!(a_list["data"], json!([]));
    // B's key still works: A changed nothing.
    assert_eq!(call(&gw, b_key["raw_key"].as_str().unwrap(), Shape::OpenAi).await.status, 200);

    for i in 0..2 {
        let (status, _) =
            api(&gw, http::Method::POST, "/v1/auth/keys", Some(&a), Some(json!({"name": format!("k{i}")}))).await;
        assert_eq!(status, 201);
    }
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&a), Some(json!({"name": "third"}))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("key_cap_reached")), "{v}");
    // Raising the cap (operator) lets it through.
    let account_id = api(&gw, http::Method::GET, "/v1/accounts", Some(ADMIN_TOKEN), None).await.1["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|acc| acc["email"] == "a@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = api(
        &gw,
        http::Method::PATCH,
        &format!("/v1/accounts/{account_id}"),
        Some(ADMIN_TOKEN),
        Some(json!({"key_cap": 3})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&a), Some(json!({"name": "third"}))).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn scopes_and_allowlists_refuse_before_anything_reaches_upstream() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "s@example.com", 10).await;
    let make = |body: Value| {
        let (gw, token) = (&gw, token.clone());
        async move {
            let (status, v) = api(gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(body)).await;
            assert_eq!(status, 201, "{v}");
            v["raw_key"].as_str().unwrap().to_owned()
        }
    };
    let chat_only = make(json!({"name": "chat", "scopes": ["chat"]})).await;
    let embeddings_only = make(json!({"name": "emb", "scopes": ["embeddings"]})).await;
    let anthropic_only = make(json!({"name": "anth", "providers": ["anthropic"]})).await;
    let claude_only = make(json!({"name": "claude", "models": ["claude-*"]})).await;

    for shape in SHAPES {
        Shape::assert_error(shape, &call(&gw, &embeddings_only, shape).await, 403, "lacks the `chat` scope");
    }
    let embed = r#"{"model":"text-embedding-3-small","input":"x"}"#;
    let chat = Keys::new(&chat_only);
    let reply = post(&gw.url("/v1/embeddings"), &chat.headers(), embed).await;
    Shape::OpenAi.assert_error(&reply, 403, "lacks the `embeddings` scope");
    let reply = request(http::Method::GET, &gw.url("/v1/models"), &chat.headers(), b"").await;
    Shape::OpenAi.assert_error(&reply, 403, "lacks the `models:read` scope");
    let reply = post(&gw.url("/v1/messages/count_tokens"), &chat.headers(), Shape::Anthropic.body()).await;
    Shape::Anthropic.assert_error(&reply, 403, "lacks the `count_tokens` scope");

    Shape::OpenAi.assert_error(&call(&gw, &anthropic_only, Shape::OpenAi).await, 403, "provider `openai`");
    Shape::Gemini.assert_error(&call(&gw, &anthropic_only, Shape::Gemini).await, 403, "provider `gemini`");
    Shape::OpenAi.assert_error(&call(&gw, &claude_only, Shape::OpenAi).await, 403, "model `gpt-4o-mini`");
    Shape::Gemini.assert_error(&call(&gw, &claude_only, Shape::Gemini).await, 403, "model `gemini-2.5-flash`");
    assert!(mock.recorded().is_empty(), "upstream saw {:?}", mock.recorded());

    // What the allowlists allow goes through.
    assert_eq!(call(&gw, &anthropic_only, Shape::Anthropic).await.status, 200);
    assert_eq!(call(&gw, &claude_only, Shape::Anthropic).await.status, 200);
    assert_eq!(call(&gw, &chat_only, Shape::Gemini).await.status, 200);
}

#[tokio::test]
async fn credential_kinds_do_not_mix() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "k@example.com", 10).await;
    for credential in [token.as_str(), ADMIN_TOKEN] {
        Shape::OpenAi.assert_error(&call(&gw, credential, Shape::OpenAi).await, 401, "Invalid API key");
    }
    let (status, v) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(&gw.key), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = api(&gw, http::Method::GET, "/v1/accounts", Some(&token), None).await;
    assert_eq!(status, 403, "an account token cannot administer accounts");
    let (status, _) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 403, "the operator token does not own keys");
    let (status, _) = api(&gw, http::Method::GET, "/v1/auth/keys", None, None).await;
    assert_eq!(status, 401);
    let wrong = json!({"email": "k@example.com", "password": "wrong password"});
    let unknown = json!({"email": "nobody@example.com", "password": "correct horse battery"});
    for body in [wrong, unknown] {
        let (status, v) = api(&gw, http::Method::POST, "/v1/auth/login", None, Some(body)).await;
        assert_eq!((status, v["error"]["message"].as_str()), (401, Some("Invalid email or password")));
    }
    assert!(mock.recorded().is_empty());
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "f@example.com", 10).await;
    let cases = [
        (json!({"name": "x", "colour": "red"}), "colour"),
        (json!({"name": 7}), "name"),
        (json!({"name": "x".repeat(129)}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "limits": {"requests_per_minute": 1001}}), "limits.requests_per_minute"),
        (json!({"name": "x", "limits": {"requests_per_day": 0}}), "limits.requests_per_day"),
        (json!({"name": "x", "limits": {"burst": 1}}), "limits.burst"),
        (json!({"name": "x", "limits": {"requests_per_minute": -5}}), "limits.requests_per_minute"),
        (json!({"name": "x", "end_user_limits": {"tokens_per_month": "lots"}}), "end_user_limits.tokens_per_month"),
        (json!({"name": "x", "scopes": ["admin"]}), "scopes"),
        (json!({"name": "x", "providers": ["bedrock"]}), "providers"),
        (json!({"name": "x", "models": null}), "models"),
        (json!({"name": "x", "metadata": {"tier": 2}}), "metadata"),
        (json!({"name": "x", "kind": "trial"}), "kind"),
        (json!({"name": "x", "end_user_limits": {"concurrent_requests": 2}}), "end_user_limits.concurrent_requests"),
        (json!({"name": "x", "expires_in_days": 0}), "expires_in_days"),
        (json!({}), "name"),
    ];
    for (body, field) in cases {
        let (status, v) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request");
        let got = v["error"]["field"].as_str().unwrap_or_default();
        assert!(got == field || got.ends_with(field), "{body}: field {got:?}, message {}", v["error"]["message"]);
        assert!(!v["error"]["message"].as_str().unwrap().contains('\u{1f}'), "{v}");
    }
    let bad_accounts = [
        (json!({"email": "not-an-email", "password": "long enough"}), "email"),
        (json!({"email": "x@example.com", "password": "short"}), "password"),
        (json!({"email": "x@example.com", "password": "long enough", "plan": "gold"}), "plan"),
    ];
    for (body, field) in bad_accounts {
        let (status, v) = api(&gw, http::Method::POST, "/v1/accounts", Some(ADMIN_TOKEN), Some(body)).await;
        assert_eq!((status, v["error"]["field"].as_str()), (400, Some(field)), "{v}");
    }
    let dup = json!({"email": "f@example.com", "password": "correct horse battery"});
    let (status, v) = api(&gw, http::Method::POST, "/v1/accounts", Some(ADMIN_TOKEN), Some(dup)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("conflict")));
    let (status, v) = api(&gw, http::Method::GET, "/v1/usage?from=2026-02-30", Some(&token), None).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("from")));
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (status, doc) = api(&gw, http::Method::GET, "/openapi.json", None, None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method: http::Method = method.to_uppercase().parse().unwrap();
            let concrete = path.replace("{id}", "AAAAAAAAAAAA");
            let (status, v) = api(&gw, method.clone(), &concrete, None, Some(json!({}))).await;
            // Unauthenticated: 401 (or 400 for login's empty body, 200 for the document), never "no such route".
            assert!(matches!(status, 200 | 400 | 401), "{method} {path}: {status} {v}");
        }
    }
}

#[tokio::test]
async fn a_thousand_keys_and_no_secret_anywhere() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "many@example.com", 1000).await;
    let mut secrets = Vec::new();
    for i in 0..1000 {
        let (status, v) =
            api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": format!("k{i}")}))).await;
        assert_eq!(status, 201, "{v}");
        secrets.push(v["raw_key"].as_str().unwrap().to_owned());
    }
    let (_, list) = api(&gw, http::Method::GET, "/v1/auth/keys?limit=1000", Some(&token), None).await;
    assert_eq!((list["data"].as_array().unwrap().len(), &list["has_more"]), (1000, &json!(false)));
    assert_no_secret(&list);
    let listing = list.to_string();
    let db: Vec<u8> = ["tollgate.db", "tollgate.db-wal"]
        .iter()
        .flat_map(|f| std::fs::read(gw.dir.path().join(f)).unwrap_or_default())
        .collect();
    for secret in &secrets {
        let tail = key_secret(secret); // the secret part, past the public id
        assert!(!listing.contains(tail));
        assert!(memchr::memmem::find(&db, tail.as_bytes()).is_none(), "a secret is stored");
    }
    assert_eq!(call(&gw, &secrets[999], Shape::OpenAi).await.status, 200);
}

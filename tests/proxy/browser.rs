//! Browser callers: publishable keys and their allowed origins (the origin matrix), bad origin patterns
//! refused at creation, CORS preflights and response headers, secret keys sent from a browser,
//! server-held provider credentials, and the per-key output-token cap.

use http::Method;
use serde_json::{Value, json};
use tollgate::config::Config;

use crate::common::*;
use crate::management::{api, new_account};

const SERVER_OPENAI_KEY: &str = "sk-server-openai-0123456789";
const SERVER_ANTHROPIC_KEY: &str = "sk-ant-server-0123456789";

async fn create(gw: &Gateway, token: &str, body: Value) -> (u16, Value) {
    api(gw, Method::POST, "/v1/auth/keys", Some(token), Some(body)).await
}

/// A call from browser code: the key, no provider key unless `with_provider_key`, and `origin`.
async fn from_browser(gw: &Gateway, key: &str, origin: Option<&str>, shape: Shape) -> Reply {
    let mut keys = Keys::new(key);
    if let Some(origin) = origin {
        keys = keys.with("origin", origin);
    }
    gw.call(shape.path(), &keys, shape.body()).await
}

fn code(reply: &Reply) -> String {
    reply.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn publishable_keys_are_accepted_only_from_their_origins() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "pub@example.com", 10).await;
    let origins = json!(["https://app.example.com", "https://*.example.org", "http://localhost:3000"]);
    let (status, created) =
        create(&gw, &token, json!({"name": "web", "kind": "publishable", "allowed_origins": origins})).await;
    assert_eq!(status, 201, "{created}");
    let key = created["raw_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tg_pub_"), "{key}");
    assert_eq!(created["kind"], "publishable");
    assert_eq!(created["scopes"], json!(["chat"]), "a publishable key is for chat unless it says otherwise");
    assert_eq!(created["allowed_origins"], origins);

    let allowed = [
        "https://app.example.com",
        "https://app.example.com:443",
        "https://a.example.org",
        "https://a.b.example.org",
        "http://localhost:3000",
    ];
    for origin in allowed {
        let reply = from_browser(&gw, &key, Some(origin), Shape::OpenAi).await;
        assert_eq!(reply.status, 200, "{origin}: {}", reply.text());
        assert_eq!(reply.headers["access-control-allow-origin"], origin);
        assert!(reply.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("Origin")));
        let exposed = reply.headers["access-control-expose-headers"].to_str().unwrap();
        for name in ["x-request-id", "x-ratelimit-remaining-tokens", "retry-after", "x-tollgate-key-provisioned"] {
            assert!(exposed.contains(name), "{name} not exposed: {exposed}");
        }
    }
    let refused = [
        (Some("https://example.org"), "https://example.org"),
        (Some("https://evil-example.org"), "https://evil-example.org"),
        (Some("https://app.example.com.evil.com"), "https://app.example.com.evil.com"),
        (Some("https://app.example.com:8443"), "https://app.example.com:8443"),
        (Some("http://app.example.com"), "http://app.example.com"),
        (Some("http://localhost:3001"), "http://localhost:3001"),
        (Some("null"), "`null`"),
        (None, "needs an Origin header"),
    ];
    for (origin, named) in refused {
        let reply = from_browser(&gw, &key, origin, Shape::OpenAi).await;
        Shape::OpenAi.assert_error(&reply, 403, named);
        assert_eq!(code(&reply), "origin_not_allowed");
        assert!(!reply.headers.contains_key("access-control-allow-origin"), "{origin:?}");
    }
    let reply = from_browser(&gw, &key, Some("https://evil.test"), Shape::Anthropic).await;
    Shape::Anthropic.assert_error(&reply, 403, "https://evil.test");
    assert_eq!(mock.recorded().len(), allowed.len(), "no refused request went upstream");

    // tollgate's own errors, once the key and its origin are accepted, are readable by the page.
    let embeddings = Keys::new(&key).with("origin", "https://app.example.com");
    let reply = gw.call("/v1/embeddings", &embeddings, r#"{"model":"m","input":"x"}"#).await;
    Shape::OpenAi.assert_error(&reply, 403, "embeddings");
    assert_eq!(reply.headers["access-control-allow-origin"], "https://app.example.com");

    // Not secret: shown in full on every view; never accepted by the management API.
    let id = created["id"].as_str().unwrap();
    let (_, one) = api(&gw, Method::GET, &format!("/v1/auth/keys/{id}"), Some(&token), None).await;
    assert_eq!(one["key"], key.as_str(), "{one}");
    let (_, list) = api(&gw, Method::GET, "/v1/auth/keys", Some(&token), None).await;
    assert_eq!(list["data"][0]["key"], key.as_str(), "{list}");
    let (status, _) = api(&gw, Method::GET, "/v1/auth/keys", Some(&key), None).await;
    assert_eq!(status, 401, "a publishable key manages nothing");
    let (status, rotated) =
        api(&gw, Method::POST, &format!("/v1/auth/keys/{id}/rotate"), Some(&token), Some(json!({}))).await;
    assert_eq!(status, 201, "{rotated}");
    let new_key = rotated["raw_key"].as_str().unwrap();
    assert!(new_key.starts_with("tg_pub_") && new_key != key);
    assert_eq!(rotated["key"], new_key, "{rotated}");
    assert_eq!(rotated["allowed_origins"], origins);
    let (_, live) = create(&gw, &token, json!({"name": "server"})).await;
    let live_id = live["id"].as_str().unwrap();
    let (_, live) = api(&gw, Method::GET, &format!("/v1/auth/keys/{live_id}"), Some(&token), None).await;
    assert!(live.get("key").is_none(), "a live key never shows its secret: {live}");
}

#[tokio::test]
async fn bad_origin_patterns_are_refused_at_creation() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "patterns@example.com", 10).await;
    for bad in [
        "https://app.example.com/path",
        "https://app.example.com/",
        "https://app.*.example.com",
        "https://*.com",
        "https://*.co.uk",
        "https://*.github.io",
        "https://user@app.example.com",
        "ftp://app.example.com",
        "app.example.com",
    ] {
        let body = json!({"name": "web", "kind": "publishable", "allowed_origins": [bad]});
        let (status, refused) = create(&gw, &token, body).await;
        assert_eq!(status, 400, "{bad}: {refused}");
        assert_eq!(refused["error"]["field"], "allowed_origins", "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains(bad), "{refused}");
    }
    let (status, refused) = create(&gw, &token, json!({"name": "web", "kind": "publishable"})).await;
    assert_eq!((status, &refused["error"]["field"]), (400, &json!("allowed_origins")), "{refused}");
    let body = json!({"name": "web", "kind": "publishable", "allowed_origins": ["https://*.example.com"]});
    let (status, created) = create(&gw, &token, body).await;
    assert_eq!(status, 201, "{created}");
    let body = json!({"name": "srv", "provider_credential": "server"});
    let (status, refused) = create(&gw, &token, body).await;
    assert_eq!((status, &refused["error"]["field"]), (400, &json!("provider_credential")), "{refused}");

    let (_, doc) = api(&gw, Method::GET, "/openapi.json", None, None).await;
    let schemas = &doc["components"]["schemas"];
    for member in ["kind", "allowed_origins", "allow_browser", "provider_credential", "max_output_tokens"] {
        assert!(schemas["Key"]["properties"].get(member).is_some(), "Key.{member}");
    }
    // Creation is one of two shapes: a live key without origins, a publishable key with them.
    let (live, publishable) = (&schemas["CreateLiveKey"], &schemas["CreatePublishableKey"]);
    assert_eq!(schemas["CreateKey"]["oneOf"].as_array().map(Vec::len), Some(2));
    assert!(live["properties"].get("allowed_origins").is_none() && live["properties"].get("allow_browser").is_some());
    assert_eq!(publishable["required"], json!(["name", "kind", "allowed_origins"]));
    assert_eq!(
        publishable["properties"]["provider_credential"]["enum"],
        json!(["caller"]),
        "no provider holds one here"
    );
    assert!(schemas["PatchKey"]["properties"].get("allowed_origins").is_some());
    assert!(schemas["Key"]["properties"].get("key").is_some());
}

#[tokio::test]
async fn preflights_are_answered_before_authentication() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let preflight = |path: &'static str, origin: Option<&'static str>, asked: &'static str| {
        let url = gw.url(path);
        async move {
            let mut h = vec![("access-control-request-method", "POST"), ("access-control-request-headers", asked)];
            if let Some(origin) = origin {
                h.push(("origin", origin));
            }
            request(Method::OPTIONS, &url, &h, b"").await
        }
    };
    let asked =
        "authorization, content-type, x-stainless-os, x-stainless-lang, anthropic-dangerous-direct-browser-access";
    for path in [Shape::OpenAi.path(), Shape::Anthropic.path(), Shape::Gemini.stream_path()] {
        let reply = preflight(path, Some("https://any.example"), asked).await;
        assert_eq!(reply.status, 204, "{path}: {}", reply.text());
        let h = &reply.headers;
        assert_eq!(h["access-control-allow-origin"], "https://any.example");
        assert_eq!(h["access-control-allow-methods"], "POST");
        assert_eq!(h["access-control-allow-headers"], asked);
        assert_eq!(h["access-control-max-age"], "7200");
        assert!(h["vary"].to_str().unwrap().contains("Origin"));
        assert!(h.contains_key("x-request-id"));
    }
    let reply = preflight(Shape::OpenAi.path(), Some("https://any.example"), "authorization, cookie").await;
    assert_eq!(reply.status, 204);
    let allowed = reply.headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("x-provider-key") && allowed.contains("x-goog-api-key") && !allowed.contains("cookie"));
    assert!(mock.recorded().is_empty(), "a preflight never goes upstream");

    // Anything else is answered as before: no origin, a path that is not a provider route, a method the
    // path does not serve.
    let reply = preflight(Shape::OpenAi.path(), None, "authorization").await;
    assert_eq!(reply.status, 405);
    let reply = preflight("/v1/auth/keys", Some("https://any.example"), "authorization").await;
    assert_ne!(reply.status, 204);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
    let reply = preflight("/v1/nowhere", Some("https://any.example"), "authorization").await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn secret_keys_from_a_browser_are_refused_unless_allowed() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let reply = from_browser(&gw, &gw.key, Some("https://app.example.com"), Shape::OpenAi).await;
    Shape::OpenAi.assert_error(&reply, 403, "secret key used from a browser; use a publishable key");
    assert_eq!(code(&reply), "secret_key_in_browser");
    assert!(!reply.headers.contains_key("access-control-allow-origin"));
    let reply = from_browser(&gw, &gw.key, Some("https://app.example.com"), Shape::Gemini).await;
    Shape::Gemini.assert_error(&reply, 403, "secret key used from a browser");
    assert_eq!(from_browser(&gw, &gw.key, None, Shape::OpenAi).await.status, 200);

    let (_, token) = new_account(&gw, "internal@example.com", 10).await;
    let (status, created) = create(&gw, &token, json!({"name": "tool", "allow_browser": true})).await;
    assert_eq!(status, 201, "{created}");
    let key = created["raw_key"].as_str().unwrap();
    let reply = from_browser(&gw, key, Some("https://tool.internal.example"), Shape::OpenAi).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["access-control-allow-origin"], "https://tool.internal.example");
}

#[tokio::test]
async fn a_server_credential_reaches_the_upstream_in_the_providers_form() {
    let mock = MockUpstream::start().await;
    let extra =
        "[providers.openai]\nkey_env = \"TEST_OPENAI_KEY\"\n[providers.anthropic]\nkey_env = \"TEST_ANTHROPIC_KEY\"";
    let env = [("TEST_OPENAI_KEY", SERVER_OPENAI_KEY), ("TEST_ANTHROPIC_KEY", SERVER_ANTHROPIC_KEY)];
    let gw = Gateway::start_with_env(&mock.base_url(), extra, &[], &env).await;
    assert!(!format!("{:?}", gw.config).contains(SERVER_OPENAI_KEY), "the credential never prints");
    let (_, token) = new_account(&gw, "server@example.com", 10).await;
    let body = json!({
        "name": "web", "kind": "publishable", "allowed_origins": ["https://app.example.com"],
        "provider_credential": "server"
    });
    let (status, created) = create(&gw, &token, body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["provider_credential"], "server");
    let key = created["raw_key"].as_str().unwrap();
    let browser = Keys::new(key).without("x-provider-key").with("origin", "https://app.example.com");

    let reply = gw.call(Shape::OpenAi.path(), &browser, Shape::OpenAi.body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = mock.recorded().pop().unwrap();
    assert_eq!(seen.headers["authorization"], format!("Bearer {SERVER_OPENAI_KEY}"));
    let reply = gw.call(Shape::Anthropic.path(), &browser, Shape::Anthropic.body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = mock.recorded().pop().unwrap();
    assert_eq!(seen.headers["x-api-key"], SERVER_ANTHROPIC_KEY);
    assert!(!seen.headers.contains_key("authorization"));

    // The caller's own provider key, when it sends one, is the one used.
    let own = browser.clone().with("x-provider-key", PROVIDER_KEY);
    assert_eq!(gw.call(Shape::OpenAi.path(), &own, Shape::OpenAi.body()).await.status, 200);
    assert_eq!(mock.recorded().pop().unwrap().headers["authorization"], format!("Bearer {PROVIDER_KEY}"));

    // A provider without key_env; a key that uses the caller's credential.
    let reply = gw.call(Shape::Gemini.path(), &browser, Shape::Gemini.body()).await;
    Shape::Gemini.assert_error(&reply, 400, "provider `gemini` holds none");
    let reply = gw.call(Shape::OpenAi.path(), &Keys::new(&gw.key).without("x-provider-key"), "{}").await;
    Shape::OpenAi.assert_error(&reply, 400, "Missing X-Provider-Key header");
    assert_eq!(mock.recorded().len(), 3);

    let missing = Config::from_toml(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\nkey_env = \"NOT_SET_ANYWHERE\"\n",
        |_| None,
    );
    let e = missing.unwrap_err().to_string();
    assert!(e.contains("providers.openai.key_env") && e.contains("NOT_SET_ANYWHERE"), "{e}");
}

#[tokio::test]
async fn the_output_cap_refuses_bigger_asks_and_reserves_at_the_cap() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "cap@example.com", 10).await;
    let body = json!({"name": "capped", "max_output_tokens": 100, "limits": {"tokens_per_month": 1000}});
    let (status, created) = create(&gw, &token, body).await;
    assert_eq!(status, 201, "{created}");
    let keys = Keys::new(created["raw_key"].as_str().unwrap());

    let ask = |max: u64| format!(r#"{{"model":"gpt-4o-mini","max_tokens":{max},"messages":[]}}"#);
    let reply = gw.call(Shape::OpenAi.path(), &keys, &ask(500)).await;
    Shape::OpenAi.assert_error(&reply, 400, "`max_tokens` is 500, over this key's output cap of 100");
    assert_eq!(code(&reply), "output_cap_exceeded");
    let gemini = r#"{"contents":[],"generationConfig":{"maxOutputTokens":101}}"#;
    let reply = gw.call(Shape::Gemini.path(), &keys, gemini).await;
    Shape::Gemini.assert_error(&reply, 400, "generationConfig.maxOutputTokens");
    assert!(mock.recorded().is_empty());
    assert_eq!(gw.call(Shape::OpenAi.path(), &keys, &ask(100)).await.status, 200);
    // Naming no cap, it is reserved at the key's 100, not the default 4096 (over the 1000-token quota).
    let reply = gw.call(Shape::OpenAi.path(), &keys, Shape::OpenAi.body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The body the upstream received last, parsed.
fn upstream_body(mock: &MockUpstream) -> Value {
    serde_json::from_slice(&mock.recorded().pop().unwrap().body).unwrap()
}

/// A request naming no output member goes upstream with the key's cap written in the member its endpoint
/// reads; nothing else in the body changes.
#[tokio::test]
async fn the_output_cap_is_written_into_a_request_that_names_none() {
    let mock = MockUpstream::start().await;
    let extra = "[providers.openai]\nkey_env = \"TEST_OPENAI_KEY\"\n";
    let gw = Gateway::start_with_env(&mock.base_url(), extra, &[], &[("TEST_OPENAI_KEY", SERVER_OPENAI_KEY)]).await;
    let (_, token) = new_account(&gw, "cap-written@example.com", 10).await;
    let body = json!({
        "name": "web", "kind": "publishable", "allowed_origins": ["https://app.example.com"],
        "provider_credential": "server", "max_output_tokens": 16
    });
    let (status, created) = create(&gw, &token, body).await;
    assert_eq!(status, 201, "{created}");
    let browser = Keys::new(created["raw_key"].as_str().unwrap())
        .without("x-provider-key")
        .with("origin", "https://app.example.com");

    let reply = gw.call(Shape::OpenAi.path(), &browser, r#"{"model":"gpt-4o-mini","messages":[]}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream_body(&mock);
    assert_eq!(seen, json!({"max_completion_tokens": 16, "model": "gpt-4o-mini", "messages": []}));

    // A stream gets both the cap and the usage request, each spliced into the body as sent.
    let reply = gw.call(Shape::OpenAi.path(), &browser, r#" {"stream": true} "#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = mock.recorded().pop().unwrap().body;
    let want = r#" {"stream_options":{"include_usage":true},"max_completion_tokens":16,"stream": true} "#;
    assert_eq!(String::from_utf8_lossy(&seen), want);

    // Gemini: into an existing generation config, or a new one.
    let reply = gw.call(Shape::Gemini.path(), &browser.clone().with("x-provider-key", PROVIDER_KEY), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream_body(&mock), json!({"generationConfig": {"maxOutputTokens": 16}}));
    let gemini = r#"{"contents":[],"generation_config":{"temperature":0.5}}"#;
    let reply = gw.call(Shape::Gemini.path(), &browser.clone().with("x-provider-key", PROVIDER_KEY), gemini).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let want = json!({"contents": [], "generation_config": {"maxOutputTokens": 16, "temperature": 0.5}});
    assert_eq!(upstream_body(&mock), want);

    // A request naming its own (smaller) cap goes as sent.
    let own = r#"{"model":"gpt-4o-mini","max_tokens":8,"messages":[]}"#;
    assert_eq!(gw.call(Shape::OpenAi.path(), &browser, own).await.status, 200);
    assert_eq!(mock.recorded().pop().unwrap().body, own.as_bytes());
}

/// Every output member present is checked, not only the first: a small one cannot carry a big one past
/// the cap.
#[tokio::test]
async fn the_output_cap_checks_every_output_member() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "cap-two@example.com", 10).await;
    let (status, created) = create(&gw, &token, json!({"name": "capped", "max_output_tokens": 16})).await;
    assert_eq!(status, 201, "{created}");
    let keys = Keys::new(created["raw_key"].as_str().unwrap());
    let two = r#"{"model":"gpt-4o-mini","max_completion_tokens":16,"max_tokens":100000,"messages":[]}"#;
    let reply = gw.call(Shape::OpenAi.path(), &keys, two).await;
    Shape::OpenAi.assert_error(&reply, 400, "`max_tokens` is 100000, over this key's output cap of 16");
    assert_eq!(code(&reply), "output_cap_exceeded");
    assert!(mock.recorded().is_empty());
}

/// Gemini's proto field names (`generation_config`, `max_output_tokens`), alone or mixed with the JSON
/// names, are read like the JSON names; one field under both spellings is a repeated field.
#[tokio::test]
async fn the_output_cap_reads_gemini_snake_case_members() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "cap-gemini@example.com", 10).await;
    let (status, created) = create(&gw, &token, json!({"name": "capped", "max_output_tokens": 16})).await;
    assert_eq!(status, 201, "{created}");
    let keys = Keys::new(created["raw_key"].as_str().unwrap());
    for gemini in [
        r#"{"contents":[],"generation_config":{"max_output_tokens":65536}}"#,
        r#"{"contents":[],"generationConfig":{"max_output_tokens":65536}}"#,
        r#"{"contents":[],"generation_config":{"maxOutputTokens":65536}}"#,
    ] {
        let reply = gw.call(Shape::Gemini.path(), &keys, gemini).await;
        Shape::Gemini.assert_error(&reply, 400, "is 65536, over this key's output cap of 16");
    }
    for repeated in [
        r#"{"generationConfig":{},"generation_config":{"maxOutputTokens":65536}}"#,
        r#"{"generationConfig":{"maxOutputTokens":8,"max_output_tokens":65536}}"#,
    ] {
        let reply = gw.call(Shape::Gemini.path(), &keys, repeated).await;
        Shape::Gemini.assert_error(&reply, 400, "repeated field");
    }
    assert!(mock.recorded().is_empty());
    let within = r#"{"contents":[],"generation_config":{"max_output_tokens":16}}"#;
    assert_eq!(gw.call(Shape::Gemini.path(), &keys, within).await.status, 200);
    assert_eq!(mock.recorded().pop().unwrap().body, within.as_bytes(), "a body within the cap goes as sent");
}

//! Projects over HTTP (docs/ARCHITECTURE.md, Management): their lifecycle, keys in them, the per-project key cap
//! beside the account's under concurrent creation, deletion refused while keys are active, usage by project,
//! and the key policy members that come with them (description, metadata, reversible disable, IP allowlist).

use serde_json::{Value, json};

use crate::common::*;
use crate::management::{api, new_account};

async fn create_project(gw: &Gateway, token: &str, name: &str, key_cap: u32) -> String {
    let body = json!({"name": name, "key_cap": key_cap});
    let (status, project) = api(gw, http::Method::POST, "/v1/projects", Some(token), Some(body)).await;
    assert_eq!(status, 201, "{project}");
    assert_eq!((project["name"].as_str(), project["active_keys"].as_u64()), (Some(name), Some(0)));
    project["id"].as_str().unwrap().to_owned()
}

async fn create_key(gw: &Gateway, token: &str, body: Value) -> (u16, Value) {
    api(gw, http::Method::POST, "/v1/auth/keys", Some(token), Some(body)).await
}

/// Sends every key creation at once, each on its own task; their statuses.
async fn all_at_once(gw: &Gateway, token: &str, bodies: impl Iterator<Item = Value>) -> Vec<u16> {
    let url = gw.url("/v1/auth/keys");
    let auth = format!("Bearer {token}");
    let tasks: Vec<_> = bodies
        .map(|body| {
            let (url, auth) = (url.clone(), auth.clone());
            tokio::spawn(async move {
                let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
                request(http::Method::POST, &url, &headers, body.to_string().as_bytes()).await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn a_project_holds_keys_under_its_cap_and_is_deleted_only_when_empty() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "projects@example.com", 10).await;
    let (_, other) = new_account(&gw, "other@example.com", 10).await;
    let web = create_project(&gw, &token, "web", 2).await;
    assert!(web.starts_with("prj_"), "{web}");

    let (status, dup) = api(&gw, http::Method::POST, "/v1/projects", Some(&token), Some(json!({"name": "web"}))).await;
    assert_eq!((status, dup["error"]["code"].as_str()), (409, Some("conflict")), "{dup}");
    let (status, _) = api(&gw, http::Method::GET, &format!("/v1/projects/{web}"), Some(&other), None).await;
    assert_eq!(status, 404, "another account's project does not exist for it");

    let (status, key) = create_key(&gw, &token, json!({"name": "a", "project_id": web})).await;
    assert_eq!((status, key["project_id"].as_str()), (201, Some(web.as_str())), "{key}");
    let (status, _) = create_key(&gw, &token, json!({"name": "b", "project_id": web})).await;
    assert_eq!(status, 201);
    let (status, full) = create_key(&gw, &token, json!({"name": "c", "project_id": web})).await;
    assert_eq!((status, full["error"]["code"].as_str()), (409, Some("project_key_cap_reached")), "{full}");
    let (status, _) = create_key(&gw, &token, json!({"name": "elsewhere"})).await;
    assert_eq!(status, 201, "the account's own cap still has room outside the project");
    let (status, foreign) = create_key(&gw, &other, json!({"name": "x", "project_id": web})).await;
    assert_eq!((status, foreign["error"]["field"].as_str()), (404, Some("project_id")), "{foreign}");
    let (status, bad) = create_key(&gw, &token, json!({"name": "x", "project_id": "web"})).await;
    assert_eq!((status, bad["error"]["field"].as_str()), (404, Some("project_id")), "{bad}");

    let (status, listed) = api(&gw, http::Method::GET, "/v1/projects", Some(&token), None).await;
    assert_eq!((status, listed["data"][0]["active_keys"].as_u64()), (200, Some(2)), "{listed}");
    let patch = json!({"name": "website", "key_cap": 3});
    let (status, renamed) =
        api(&gw, http::Method::PATCH, &format!("/v1/projects/{web}"), Some(&token), Some(patch)).await;
    assert_eq!((status, renamed["name"].as_str(), renamed["key_cap"].as_u64()), (200, Some("website"), Some(3)));
    let (status, refused) = api(&gw, http::Method::DELETE, &format!("/v1/projects/{web}"), Some(&token), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("project_has_keys")), "{refused}");

    let (_, keys) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(&token), None).await;
    for k in keys["data"].as_array().unwrap().iter().filter(|k| k["project_id"] == web.as_str()) {
        let path = format!("/v1/auth/keys/{}", k["id"].as_str().unwrap());
        assert_eq!(api(&gw, http::Method::DELETE, &path, Some(&token), None).await.0, 200);
    }
    let (status, _) = api(&gw, http::Method::DELETE, &format!("/v1/projects/{web}"), Some(&token), None).await;
    assert_eq!(status, 200);
    let (status, _) = api(&gw, http::Method::GET, &format!("/v1/projects/{web}"), Some(&token), None).await;
    assert_eq!(status, 404);
}

/// 24 creations at once into one project of cap 3 (account cap 10), then 24 at once across two projects of cap 4
/// each in an account of cap 5: never more active keys than the tightest cap.
#[tokio::test]
async fn caps_hold_under_concurrent_creation() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "race@example.com", 10).await;
    let project = create_project(&gw, &token, "race", 3).await;
    let statuses =
        all_at_once(&gw, &token, (0..24).map(|i| json!({"name": format!("k{i}"), "project_id": project}))).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
    let (_, listed) = api(&gw, http::Method::GET, &format!("/v1/projects/{project}"), Some(&token), None).await;
    assert_eq!(listed["active_keys"], 3);

    let (_, token) = new_account(&gw, "race2@example.com", 5).await;
    let (a, b) = (create_project(&gw, &token, "a", 4).await, create_project(&gw, &token, "b", 4).await);
    let bodies = (0..24).map(|i| json!({"name": format!("k{i}"), "project_id": if i % 2 == 0 { &a } else { &b }}));
    let statuses = all_at_once(&gw, &token, bodies).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "the account's cap binds: {statuses:?}");
    let (_, listed) = api(&gw, http::Method::GET, "/v1/projects", Some(&token), None).await;
    let active: Vec<u64> =
        listed["data"].as_array().unwrap().iter().map(|p| p["active_keys"].as_u64().unwrap()).collect();
    assert_eq!(active.iter().sum::<u64>(), 5, "{listed}");
    assert!(active.iter().all(|n| *n <= 4), "{listed}");
}

#[tokio::test]
async fn usage_reads_by_project_and_by_key() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "usage@example.com", 10).await;
    let project = create_project(&gw, &token, "reports", 5).await;
    let (_, inside) = create_key(&gw, &token, json!({"name": "in", "project_id": project})).await;
    let (_, outside) = create_key(&gw, &token, json!({"name": "out"})).await;
    for (key, times) in [(&inside, 2), (&outside, 1)] {
        for _ in 0..times {
            let reply =
                gw.call(Shape::OpenAi.path(), &Keys::new(key["raw_key"].as_str().unwrap()), Shape::OpenAi.body()).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }
    let gw = gw.restart().await;
    let (status, by_project) = api(&gw, http::Method::GET, "/v1/usage?group_by=project", Some(&token), None).await;
    assert_eq!(status, 200, "{by_project}");
    let requests = |label: Value| {
        by_project["data"].as_array().unwrap().iter().find(|r| r["project"] == label).map(|r| r["requests"].clone())
    };
    assert_eq!(requests(json!(project)), Some(json!(2)), "{by_project}");
    assert_eq!(requests(Value::Null), Some(json!(1)), "keys outside a project group under null: {by_project}");
    let path = format!("/v1/usage?group_by=key&project_id={project}");
    let (_, by_key) = api(&gw, http::Method::GET, &path, Some(&token), None).await;
    assert_eq!(by_key["data"].as_array().unwrap().len(), 1, "{by_key}");
    assert_eq!(by_key["data"][0]["key"], inside["key_prefix"]);
}

#[tokio::test]
async fn a_disabled_key_is_refused_until_enabled_and_the_ip_allowlist_holds() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "policy@example.com", 10).await;
    let body = json!({"name": "k", "description": "billing worker", "metadata": {"team": "billing", "tier": "2"}});
    let (status, key) = create_key(&gw, &token, body).await;
    assert_eq!(status, 201, "{key}");
    assert_eq!((key["description"].as_str(), key["metadata"]["tier"].as_str()), (Some("billing worker"), Some("2")));
    let (raw, path) =
        (key["raw_key"].as_str().unwrap().to_owned(), format!("/v1/auth/keys/{}", key["id"].as_str().unwrap()));
    let call = |shape: Shape| {
        let raw = raw.clone();
        let gw = &gw;
        async move { gw.call(shape.path(), &Keys::new(&raw), shape.body()).await }
    };

    let (status, off) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(json!({"enabled": false}))).await;
    assert_eq!((status, off["status"].as_str(), off["enabled"].as_bool()), (200, Some("disabled"), Some(false)));
    Shape::OpenAi.assert_error(&call(Shape::OpenAi).await, 403, "API key disabled");
    Shape::Anthropic.assert_error(&call(Shape::Anthropic).await, 403, "API key disabled");
    let (status, on) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(json!({"enabled": true}))).await;
    assert_eq!((status, on["status"].as_str()), (200, Some("active")));
    assert_eq!(call(Shape::OpenAi).await.status, 200, "enabled again, it works again");

    let elsewhere = json!({"ip_allowlist": ["192.0.2.0/24"]});
    let (status, fenced) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(elsewhere)).await;
    assert_eq!((status, fenced["ip_allowlist"].clone()), (200, json!(["192.0.2.0/24"])), "{fenced}");
    let refused = call(Shape::Gemini).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let here = json!({"ip_allowlist": ["127.0.0.1"], "description": null});
    let (_, fenced) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(here)).await;
    assert_eq!((fenced["ip_allowlist"].clone(), fenced["description"].clone()), (json!(["127.0.0.1/32"]), Value::Null));
    assert_eq!(call(Shape::Gemini).await.status, 200);

    let bad = [
        (json!({"metadata": [1, 2]}), "metadata"),
        (json!({"ip_allowlist": ["10.0.0.0/40"]}), "ip_allowlist"),
        (json!({"kind": "publishable"}), "kind"),
        (json!({"enabled": "yes"}), "enabled"),
    ];
    for (body, field) in bad {
        let (status, v) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(body.clone())).await;
        assert_eq!((status, v["error"]["field"].as_str()), (400, Some(field)), "{body}: {v}");
    }
    // A member of another kind of key conflicts with this one as it is.
    let origins = json!({"allowed_origins": ["https://app.example.com"]});
    let (status, v) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(origins)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (409, Some("kind_mismatch"), Some("allowed_origins")),
        "{v}"
    );
}

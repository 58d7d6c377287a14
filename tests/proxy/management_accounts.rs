//! Account limits that an account cannot lift itself: its keys' token quotas stay within what the
//! operator gave it, and its key cap holds under parallel creates and rotations.

use serde_json::json;

use crate::common::*;
use crate::management::{api, new_account};

#[tokio::test]
async fn an_account_cannot_raise_a_key_quota_above_its_plan_or_the_default() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[limits]\ntokens_per_month = 1000").await;
    let (_, token) = new_account(&gw, "quota@example.com", 10).await;

    // On creation, above the operator's default per-key quota: refused, naming the field.
    let over = json!({"name": "k", "limits": {"tokens_per_month": 9_007_199_254_740_991u64}});
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(over)).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("limits.tokens_per_month")), "{v}");

    let (status, created) =
        api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "k"}))).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/v1/auth/keys/{}", created["id"].as_str().unwrap());
    for too_many in [1001u64, 9_007_199_254_740_991] {
        let patch = json!({"limits": {"tokens_per_month": too_many}});
        let (status, v) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(patch)).await;
        assert_eq!((status, v["error"]["field"].as_str()), (400, Some("limits.tokens_per_month")), "{v}");
    }
    let (_, v) = api(&gw, http::Method::GET, &path, Some(&token), None).await;
    assert_eq!(v["limits"]["tokens_per_month"], 1000, "unchanged: {v}");

    // Lowering, and going back to the default, are the account's to do.
    for (patch, want) in [(json!(400), json!(400)), (json!(1000), json!(1000)), (json!(null), json!(1000))] {
        let body = json!({"limits": {"tokens_per_month": patch}});
        let (status, v) = api(&gw, http::Method::PATCH, &path, Some(&token), Some(body)).await;
        assert_eq!((status, &v["limits"]["tokens_per_month"]), (200, &want), "{v}");
    }
}

#[tokio::test]
async fn without_a_default_the_plan_quota_bounds_a_key() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[plans.default]\ntokens_per_month = 5000").await;
    let (_, token) = new_account(&gw, "plan@example.com", 10).await;
    let body = json!({"name": "k", "limits": {"tokens_per_month": 5001}});
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(body)).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("limits.tokens_per_month")), "{v}");
    let body = json!({"name": "k", "limits": {"tokens_per_month": 5000}});
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(body)).await;
    assert_eq!((status, &v["limits"]["tokens_per_month"]), (201, &json!(5000)), "{v}");
}

/// The account's keys whose status is active (a key in its rotation grace period is).
async fn active_keys(gw: &Gateway, token: &str) -> usize {
    let (status, list) = api(gw, http::Method::GET, "/v1/auth/keys", Some(token), None).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().iter().filter(|k| k["status"] == "active").count()
}

#[tokio::test]
async fn parallel_creates_stop_at_the_key_cap() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "racer@example.com", 2).await;
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (url, auth) = (gw.url("/v1/auth/keys"), format!("Bearer {token}"));
        creates.spawn(async move {
            let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
            let reply =
                request(http::Method::POST, &url, &headers, json!({"name": format!("k{i}")}).to_string().as_bytes())
                    .await;
            (reply.status.as_u16(), reply.json())
        });
    }
    let answers = creates.join_all().await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    let refused = answers.iter().filter(|(s, v)| *s == 409 && v["error"]["code"] == "key_cap_reached").count();
    assert_eq!((created, refused), (2, 28), "{answers:?}");
    assert_eq!(active_keys(&gw, &token).await, 2);
}

#[tokio::test]
async fn rotation_cannot_grow_an_account_past_its_key_cap() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "rotator@example.com", 2).await;
    let rotate = |id: String, grace: u64| {
        let (gw, token) = (&gw, token.clone());
        async move {
            let path = format!("/v1/auth/keys/{id}/rotate");
            api(gw, http::Method::POST, &path, Some(&token), Some(json!({"grace_seconds": grace}))).await
        }
    };
    let (_, first) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "a"}))).await;
    let first = first["id"].as_str().unwrap().to_owned();

    // One key under a cap of 2: a graceful rotation fits, and leaves the account at its cap.
    let (status, second) = rotate(first.clone(), 86_400).await;
    assert_eq!(status, 201, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();
    assert_eq!(active_keys(&gw, &token).await, 2);

    // The key in its grace period has its replacement already.
    let (status, v) = rotate(first.clone(), 86_400).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("rotation_pending")), "{v}");
    let (status, v) = rotate(first.clone(), 0).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("rotation_pending")), "{v}");

    // At the cap, a rotation with a grace period would add an active key: refused. Repeating it changes
    // nothing; without a grace period it is a swap and goes through.
    for _ in 0..10 {
        let (status, v) = rotate(second.clone(), 86_400).await;
        assert_eq!((status, v["error"]["code"].as_str()), (409, Some("key_cap_reached")), "{v}");
    }
    assert_eq!(active_keys(&gw, &token).await, 2);
    let (status, third) = rotate(second.clone(), 0).await;
    assert_eq!(status, 201, "{third}");
    let (status, v) = rotate(third["id"].as_str().unwrap().to_owned(), 600).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("key_cap_reached")), "{v}");
    assert_eq!(active_keys(&gw, &token).await, 2);

    // Creating is refused at the cap too.
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "b"}))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("key_cap_reached")), "{v}");
}

/// Walks a list endpoint page by page with `limit` and `after`; returns every id in order.
async fn walk(gw: &Gateway, path: &str, token: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = after.as_ref().map_or(format!("?limit={limit}"), |a| format!("?limit={limit}&after={a}"));
        let (status, page) = api(gw, http::Method::GET, &format!("{path}{query}"), Some(token), None).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{page}");
        ids.extend(data.iter().map(|item| item["id"].as_str().unwrap().to_owned()));
        assert_eq!(page["last_id"].as_str(), ids.last().map(String::as_str).filter(|_| !data.is_empty()), "{page}");
        if page["has_more"] == false {
            return ids;
        }
        assert_eq!(data.len(), limit, "a page before the last is full: {page}");
        after = Some(page["last_id"].as_str().unwrap().to_owned());
    }
}

#[tokio::test]
async fn key_and_account_lists_come_a_page_at_a_time() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "pages@example.com", 10).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let (status, key) =
            api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": format!("k{i}")}))).await;
        assert_eq!(status, 201, "{key}");
        created.push(key["id"].as_str().unwrap().to_owned());
    }
    // Revoked keys stay in the list (with their revoked_at), in their place.
    let (status, _) =
        api(&gw, http::Method::DELETE, &format!("/v1/auth/keys/{}", created[1]), Some(&token), None).await;
    assert_eq!(status, 200);
    // Oldest first: by creation time, then by id among keys made in the same second.
    let (_, all) = api(&gw, http::Method::GET, "/v1/auth/keys", Some(&token), None).await;
    assert_eq!((all["data"].as_array().unwrap().len(), &all["has_more"]), (5, &json!(false)), "{all}");
    let listed: Vec<String> =
        all["data"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(all["first_id"].as_str(), listed.first().map(String::as_str));
    let (mut sorted, mut made) = (listed.clone(), created.clone());
    sorted.sort();
    made.sort();
    assert_eq!(sorted, made, "every key, the revoked one included");
    for limit in [1, 2, 5, 100] {
        assert_eq!(walk(&gw, "/v1/auth/keys", &token, limit).await, listed, "limit {limit}");
    }

    // A cursor from another account's list is refused like an unknown one: nothing of theirs shows.
    let (_, other) = new_account(&gw, "other@example.com", 10).await;
    let (_, theirs) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&other), Some(json!({"name": "x"}))).await;
    let foreign = format!("/v1/auth/keys?after={}", theirs["id"].as_str().unwrap());
    for path in [foreign.as_str(), "/v1/auth/keys?after=AAAAAAAAAAAA"] {
        let (status, v) = api(&gw, http::Method::GET, path, Some(&token), None).await;
        assert_eq!((status, v["error"]["field"].as_str()), (404, Some("after")), "{path}: {v}");
    }
    let (status, v) = api(&gw, http::Method::GET, "/v1/auth/keys?after=a%20b", Some(&token), None).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("after")), "not an id at all: {v}");
    for limit in ["0", "1001", "-1", "1.5", "x"] {
        let (status, v) =
            api(&gw, http::Method::GET, &format!("/v1/auth/keys?limit={limit}"), Some(&token), None).await;
        assert_eq!((status, v["error"]["field"].as_str()), (400, Some("limit")), "{limit}: {v}");
    }

    // The operator's list of accounts pages the same way.
    let accounts = walk(&gw, "/v1/accounts", ADMIN_TOKEN, 1).await;
    assert!(accounts.len() >= 2, "{accounts:?}");
    let (_, all) = api(&gw, http::Method::GET, "/v1/accounts", Some(ADMIN_TOKEN), None).await;
    let ids: Vec<&str> = all["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, accounts);
    let (status, v) = api(&gw, http::Method::GET, "/v1/accounts?after=acct_none", Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, v["error"]["field"].as_str()), (404, Some("after")), "{v}");
}

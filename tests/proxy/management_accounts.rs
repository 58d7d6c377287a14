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

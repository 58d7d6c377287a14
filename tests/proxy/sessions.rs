//! Ending access tokens (docs/ARCHITECTURE.md, Management): logout, a password change and the operator disabling an
//! account each end every earlier token of that account at once; a disabled account's keys stop working on the provider
//! routes too; tokens outlive a restart (the session secret is shared, not per process).

use serde_json::json;

use crate::common::*;
use crate::management::{api, new_account};

const PASSWORD: &str = "correct horse battery";

async fn login(gw: &Gateway, email: &str, password: &str) -> (u16, serde_json::Value) {
    api(gw, http::Method::POST, "/v1/auth/login", None, Some(json!({"email": email, "password": password}))).await
}

async fn keys_status(gw: &Gateway, token: &str) -> u16 {
    api(gw, http::Method::GET, "/v1/auth/keys", Some(token), None).await.0
}

async fn provider_call(gw: &Gateway, key: &str) -> Reply {
    gw.call(Shape::OpenAi.path(), &Keys::new(key), Shape::OpenAi.body()).await
}

#[tokio::test]
async fn logout_ends_every_token_of_the_account() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, first) = new_account(&gw, "leaver@example.com", 10).await;
    let (_, second) = login(&gw, "leaver@example.com", PASSWORD).await;
    let second = second["access_token"].as_str().unwrap().to_owned();
    let (_, other) = new_account(&gw, "stayer@example.com", 10).await;
    assert_eq!((keys_status(&gw, &first).await, keys_status(&gw, &second).await), (200, 200));

    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/logout", Some(&first), None).await;
    assert_eq!((status, &v["logged_out"]), (200, &json!(true)), "{v}");
    assert_eq!((keys_status(&gw, &first).await, keys_status(&gw, &second).await), (401, 401));
    let (status, _) = api(&gw, http::Method::POST, "/v1/auth/logout", Some(&first), None).await;
    assert_eq!(status, 401, "an ended token cannot log out again");
    assert_eq!(keys_status(&gw, &other).await, 200, "another account's token is untouched");

    let (status, fresh) = login(&gw, "leaver@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(keys_status(&gw, fresh["access_token"].as_str().unwrap()).await, 200);
}

#[tokio::test]
async fn a_new_password_ends_earlier_tokens_and_the_old_password() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "mover@example.com", 10).await;

    let wrong = json!({"old_password": "not the password", "new_password": "a new long passphrase"});
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/password", Some(&token), Some(wrong)).await;
    assert_eq!((status, v["error"]["field"].as_str()), (401, Some("old_password")), "{v}");
    assert_eq!(keys_status(&gw, &token).await, 200, "a failed change ends nothing");
    let short = json!({"old_password": PASSWORD, "new_password": "short"});
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/password", Some(&token), Some(short)).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("new_password")), "{v}");

    let change = json!({"old_password": PASSWORD, "new_password": "a new long passphrase"});
    let (status, v) = api(&gw, http::Method::POST, "/v1/auth/password", Some(&token), Some(change)).await;
    assert_eq!(status, 200, "{v}");
    let renewed = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!((keys_status(&gw, &token).await, keys_status(&gw, &renewed).await), (401, 200));
    assert_eq!(login(&gw, "mover@example.com", PASSWORD).await.0, 401);
    assert_eq!(login(&gw, "mover@example.com", "a new long passphrase").await.0, 200);
}

#[tokio::test]
async fn a_disabled_account_loses_its_tokens_login_and_keys() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (id, token) = new_account(&gw, "gone@example.com", 10).await;
    let (_, key) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "k"}))).await;
    let key = key["raw_key"].as_str().unwrap().to_owned();
    assert_eq!(provider_call(&gw, &key).await.status, 200);

    let path = format!("/v1/accounts/{id}");
    let (status, v) = api(&gw, http::Method::PATCH, &path, Some(ADMIN_TOKEN), Some(json!({"disabled": true}))).await;
    assert_eq!((status, &v["disabled"]), (200, &json!(true)), "{v}");
    assert_eq!(keys_status(&gw, &token).await, 401);
    Shape::OpenAi.assert_error(&provider_call(&gw, &key).await, 401, "Invalid API key");
    let (status, v) = login(&gw, "gone@example.com", PASSWORD).await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("account_disabled")), "{v}");
    assert_eq!(login(&gw, "gone@example.com", "a wrong password").await.0, 401, "nothing learned without it");
    let (_, accounts) = api(&gw, http::Method::GET, "/v1/accounts", Some(ADMIN_TOKEN), None).await;
    let listed = accounts["data"].as_array().unwrap().iter().find(|a| a["id"] == id.as_str()).unwrap().clone();
    assert_eq!(listed["disabled"], true, "{listed}");

    // Still refused after a restart, which loads the state from the store.
    let gw = gw.restart().await;
    Shape::OpenAi.assert_error(&provider_call(&gw, &key).await, 401, "Invalid API key");

    let (status, v) = api(&gw, http::Method::PATCH, &path, Some(ADMIN_TOKEN), Some(json!({"disabled": false}))).await;
    assert_eq!((status, &v["disabled"]), (200, &json!(false)), "{v}");
    assert_eq!(provider_call(&gw, &key).await.status, 200, "enabled again, its keys work");
    assert_eq!(keys_status(&gw, &token).await, 401, "tokens from before the disable stay ended");
    let (status, v) = login(&gw, "gone@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn access_tokens_outlive_a_restart() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (_, token) = new_account(&gw, "steady@example.com", 10).await;
    let gw = gw.restart().await;
    assert_eq!(keys_status(&gw, &token).await, 200, "signed with the shared session secret");
}

/// Logging into one's own account does not wipe the guesses the same address made at another: after 4
/// wrong guesses, a login of its own and one more guess, the address has used its 5 free failures and
/// the next guess is refused before any hashing.
#[tokio::test]
async fn own_account_logins_do_not_reset_guesses_at_another_account() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    new_account(&gw, "victim@example.com", 10).await;
    new_account(&gw, "guesser@example.com", 10).await;
    for _ in 0..4 {
        assert_eq!(login(&gw, "victim@example.com", "a wrong guess").await.0, 401);
    }
    assert_eq!(login(&gw, "guesser@example.com", PASSWORD).await.0, 200);
    assert_eq!(login(&gw, "victim@example.com", "a wrong guess").await.0, 401);
    let (status, v) = login(&gw, "victim@example.com", "a wrong guess").await;
    assert_eq!((status, v["error"]["code"].as_str()), (429, Some("too_many_attempts")), "{v}");
}

//! The real server on the PostgreSQL store (docs/ARCHITECTURE.md, The seams): a key created through the
//! management API is written to PostgreSQL and serves a request. Runs when `TOLLGATE_TEST_POSTGRES` holds
//! a database URL, in a schema of its own dropped afterwards; otherwise it says it skipped.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::management::{api, new_account};

fn test_database() -> Option<String> {
    let url = std::env::var("TOLLGATE_TEST_POSTGRES").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: TOLLGATE_TEST_POSTGRES is not set, so there is no PostgreSQL to serve from");
    }
    url
}

async fn drop_schema(url: &str, schema: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// Calls `gw` with `key` until it answers `status`; how long that took, at most `within`.
async fn until_status(gw: &Gateway, key: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let reply = gw.call(Shape::OpenAi.path(), &Keys::new(key), Shape::OpenAi.body()).await;
        if reply.status == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "still {} after {within:?}, not {status}", reply.status);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_over_the_api_on_postgres_serves_a_request() {
    let Some(url) = test_database() else { return };
    let schema = format!("tg_test_e2e_{}", std::process::id());
    let mock = MockUpstream::start().await;
    let extra = format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\nschema = \"{schema}\"\n");
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    let (account, token) = new_account(&gw, "pg@example.com", 2).await;
    let body = json!({"name": "on-postgres"});
    let (status, created) = api(&gw, http::Method::POST, "/v1/auth/keys", Some(&token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let raw = created["raw_key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let reply = gw.call(Shape::OpenAi.path(), &Keys::new(&raw), Shape::OpenAi.body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The SQLite file the test gateway also has was not used: the key is in PostgreSQL only.
    assert!(gw.store.list_keys().unwrap().iter().all(|k| k.id.to_string() != id));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let sql = format!("SELECT account_id FROM {schema}.service_keys WHERE id = $1");
    let row = client.query_one(&sql, &[&id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), account);
    // A revocation reaches the server, which then refuses the key.
    let (status, _) = api(&gw, http::Method::DELETE, &format!("/v1/auth/keys/{id}"), Some(&token), None).await;
    assert_eq!(status, 200);
    let refused = gw.call(Shape::OpenAi.path(), &Keys::new(&raw), Shape::OpenAi.body()).await;
    Shape::OpenAi.assert_error(&refused, 401, "Invalid API key");
    drop((gw, client));
    let _ = driver.await;
    drop_schema(&url, &schema).await;
}

/// Two instances on one database, each polling only every 30 s: a key created on one serves on the other,
/// and its revocation is refused there, within a second each, woken by `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_and_revoked_on_one_instance_takes_effect_on_another_within_a_second() {
    let Some(url) = test_database() else { return };
    let schema = format!("tg_test_two_{}", std::process::id());
    let mock = MockUpstream::start().await;
    let extra =
        format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\nschema = \"{schema}\"\nrefresh_interval = \"30s\"\n");
    let a = Gateway::start(&mock.base_url(), &extra).await;
    let b = Gateway::start(&mock.base_url(), &extra).await;
    let (_, token) = new_account(&a, "two@example.com", 2).await;
    let (status, created) =
        api(&a, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "shared"}))).await;
    assert_eq!(status, 201, "{created}");
    let (raw, id) = (created["raw_key"].as_str().unwrap(), created["id"].as_str().unwrap());
    let second = Duration::from_secs(1);
    let usable = until_status(&b, raw, 200, second).await;
    let (status, _) = api(&a, http::Method::DELETE, &format!("/v1/auth/keys/{id}"), Some(&token), None).await;
    assert_eq!(status, 200);
    let refused = until_status(&b, raw, 401, second).await;
    eprintln!("on the other instance: usable after {usable:?}, refused after {refused:?}");
    drop((a, b));
    drop_schema(&url, &schema).await;
}

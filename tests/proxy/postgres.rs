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

/// A TCP path to the test database that the test can cut: while cut, every connection through it is
/// closed and new ones are closed as soon as they arrive, as when a network partition or a failover
/// leaves the instance without its store.
struct Cuttable {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cuttable {
    async fn to(target: String) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let watch = std::sync::Arc::clone(&cut);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch.borrow() {
                    continue;
                }
                let mut cut = watch.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Cuttable { addr, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The test database's host and port.
fn database_address(url: &str) -> String {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("TOLLGATE_TEST_POSTGRES must name a TCP host, not {other:?}"),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

/// The test database's URL with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let user = config.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{addr}/{}", config.get_dbname().unwrap_or("postgres"))
}

/// Polls `/readyz` until it answers `status`; its text and how long that took, at most 10 s.
async fn readyz_until(gw: &Gateway, status: u16) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let reply = request(http::Method::GET, &gw.url("/readyz"), &[], b"").await;
        if reply.status == status {
            return (reply.text(), started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(10), "/readyz still {} after 10 s", reply.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An instance cut off from its store stops trusting the keys in memory once `store.max_staleness` has
/// passed: `/readyz` says so (503), key requests are refused with 503 `store_unavailable` in each
/// provider's shape (never 401, never 500), and all of it ends by itself when the store is back. With
/// `store.on_stale = "serve"` the same instance goes on serving its keys while saying so on `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_its_store_stops_trusting_its_keys_after_max_staleness() {
    let Some(url) = test_database() else { return };
    let schema = format!("tg_test_stale_{}", std::process::id());
    let path = Cuttable::to(database_address(&url)).await;
    let via = via(&url, path.addr);
    let mock = MockUpstream::start().await;
    let store = |on_stale: &str| {
        format!(
            "[store]\nbackend = \"postgres\"\nurl = {:?}\nschema = \"{schema}\"\nrefresh_interval = \"100ms\"\n\
             max_staleness = \"400ms\"\non_stale = \"{on_stale}\"\nstatement_timeout = \"1s\"\n",
            via
        )
    };
    let refusing = Gateway::start(&mock.base_url(), &store("refuse")).await;
    let serving = Gateway::start(&mock.base_url(), &store("serve")).await;
    let (_, token) = new_account(&refusing, "stale@example.com", 2).await;
    let (status, created) =
        api(&refusing, http::Method::POST, "/v1/auth/keys", Some(&token), Some(json!({"name": "k"}))).await;
    assert_eq!(status, 201, "{created}");
    let raw = created["raw_key"].as_str().unwrap();
    let keys = Keys::new(raw);
    until_status(&serving, raw, 200, Duration::from_secs(1)).await;

    path.set_cut(true);
    let (text, after) = readyz_until(&refusing, 503).await;
    assert!(text.contains("store unreachable") && text.contains("key requests are refused"), "{text}");
    eprintln!("store cut: /readyz 503 after {after:?} (max_staleness 400ms, refresh 100ms)");
    for shape in [Shape::OpenAi, Shape::Anthropic, Shape::Gemini] {
        let reply = refusing.call(shape.path(), &keys, shape.body()).await;
        shape.assert_error(&reply, 503, "key store is unreachable");
        assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    }
    let (text, _) = readyz_until(&serving, 503).await;
    assert!(text.contains("serving the keys last read"), "{text}");
    let served = serving.call(Shape::OpenAi.path(), &keys, Shape::OpenAi.body()).await;
    assert_eq!(served.status, 200, "{}", served.text());

    path.set_cut(false);
    let (_, back) = readyz_until(&refusing, 200).await;
    eprintln!("store back: /readyz 200 after {back:?}");
    until_status(&refusing, raw, 200, Duration::from_secs(5)).await;
    drop((refusing, serving, path));
    drop_schema(&url, &schema).await;
}

/// `n` key creations over the management API while another task cuts the gateway's connections every
/// `pace` (`pg_terminate_backend`): the keys acknowledged (201), the creations refused (503, each as
/// `store_unavailable`; any other answer fails the test), and the connections cut.
async fn create_under_cuts(
    gw: &Gateway,
    token: &str,
    schema: &str,
    pace: Duration,
    n: usize,
) -> (Vec<String>, usize, i64) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let url = test_database().unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let stop = Arc::new(AtomicBool::new(false));
    let cutter = tokio::spawn({
        let (stop, schema) = (Arc::clone(&stop), schema.to_owned());
        async move {
            let cut = "SELECT count(pg_terminate_backend(pid))::BIGINT FROM pg_stat_activity
                       WHERE application_name = $1 AND pid <> pg_backend_pid()";
            let (mut cuts, mut pace) = (0i64, tokio::time::interval(pace));
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                cuts += client.query_one(cut, &[&schema]).await.unwrap().get::<_, i64>(0);
            }
            cuts
        }
    });
    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    for i in 0..n {
        let body = json!({"name": format!("cut-{i}")});
        let (status, reply) = api(gw, http::Method::POST, "/v1/auth/keys", Some(token), Some(body)).await;
        match status {
            201 => acknowledged.push(reply["raw_key"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(reply["error"]["code"], "store_unavailable", "{reply}");
                refused += 1;
            }
            other => panic!("key creation {i} answered {other}: {reply}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cuts = cutter.await.unwrap();
    let _ = driver.await;
    (acknowledged, refused, cuts)
}

/// Key creations over the management API while the pool's connections are cut again and again: a write
/// whose connection was lost runs once more on a fresh one (finding the key if the first run landed), so
/// at a cut every 100 ms (almost) every creation succeeds; at a cut every 5 ms some fail twice and answer a clear
/// 503, never a 500. Every key answered 201 is in the database and serves a request once the cuts stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_creations_under_cut_connections_are_kept_or_refused_clearly() {
    let Some(url) = test_database() else { return };
    let schema = format!("tg_test_cut_api_{}", std::process::id());
    let mock = MockUpstream::start().await;
    let separator = if url.contains('?') { '&' } else { '?' };
    let tagged = format!("{url}{separator}application_name={schema}");
    let extra = format!("[store]\nbackend = \"postgres\"\nurl = {tagged:?}\nschema = \"{schema}\"\npool_size = 4\n");
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    let (account, token) = new_account(&gw, "cut@example.com", 1000).await;

    let (mut acknowledged, refused, cuts) =
        create_under_cuts(&gw, &token, &schema, Duration::from_millis(100), 150).await;
    eprintln!(
        "a cut every 100 ms: 150 creations, {} acknowledged, {refused} refused, {cuts} connections cut",
        acknowledged.len()
    );
    assert!(cuts > 0, "the cuts ran");
    // A creation hit by one cut runs again on a fresh connection; only one hit twice (by two cuts 100 ms
    // apart on a slow machine) may fail.
    assert!(refused <= 5, "{refused} of 150 creations failed although each cut hit one attempt");
    let (more, refused, cuts) = create_under_cuts(&gw, &token, &schema, Duration::from_millis(5), 100).await;
    eprintln!(
        "a cut every 5 ms: 100 creations, {} acknowledged, {refused} refused with 503, {cuts} connections cut",
        more.len()
    );
    acknowledged.extend(more);

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let sql = format!("SELECT count(*) FROM {schema}.service_keys WHERE account_id = $1 AND id = ANY($2)");
    let ids: Vec<String> = acknowledged.iter().map(|k| key_id(k).to_string()).collect();
    let stored: i64 = client.query_one(&sql, &[&account, &ids]).await.unwrap().get(0);
    assert_eq!(stored as usize, acknowledged.len(), "every acknowledged key is in the database");
    for key in &acknowledged {
        until_status(&gw, key, 200, Duration::from_secs(5)).await;
    }
    drop((gw, client));
    let _ = driver.await;
    drop_schema(&url, &schema).await;
}

//! TLS to the database, against the test server's own certificate: trusted through `store.ca_file`, the
//! connection is encrypted; without it, the certificate is refused. Runs when `TOLLGATE_TEST_POSTGRES` is
//! set and that server has TLS on with a certificate for `localhost` (Debian's default); else it says why
//! it skipped.

use std::time::Duration;

use super::PgStore;
use crate::config::{DatabaseUrl, PostgresConfig};

fn config(url: &str, ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>) -> PostgresConfig {
    PostgresConfig {
        url: DatabaseUrl::new(url.to_owned()),
        pool_size: 2,
        statement_timeout: Duration::from_secs(10),
        schema: Some(format!("tg_test_tls_{}", std::process::id())),
        ca_certs,
    }
}

#[tokio::test]
async fn tls_verifies_the_servers_certificate_against_ca_file() {
    let Some(url) = std::env::var(crate::store::conformance::ENV_TEST_POSTGRES).ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: TOLLGATE_TEST_POSTGRES is not set");
        return;
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let cert_file: String = client.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    let pem = std::fs::read(&cert_file).ok();
    let Some(pem) = pem.filter(|_| ssl == "on") else {
        eprintln!("skipped: the test server has no TLS certificate this test can read (ssl = {ssl})");
        return;
    };
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let tls_url = format!("{}{separator}sslmode=verify-full", url.replace("@127.0.0.1", "@localhost"));

    let store = PgStore::open(&config(&tls_url, certs)).await.unwrap();
    let encrypted: bool = store
        .client()
        .await
        .unwrap()
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "the pooled connection is over TLS");
    drop(store);

    let refused = PgStore::open(&config(&tls_url, Vec::new())).await.err().expect("an untrusted certificate");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let schema = format!("tg_test_tls_{}", std::process::id());
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// Whether, after the listener lost its connection, a write by another instance wakes a waiter again
/// (the listener opens a new connection after a second; a write before that is found by the poll only,
/// so it tries for a few seconds).
async fn woken_again(store: &PgStore, config: &PostgresConfig) -> bool {
    use crate::store::Store;
    let other = PgStore::open(config).await.unwrap();
    for _ in 0..5 {
        let version = store.key_changes(0, Box::new(|_| {})).await.unwrap().version;
        other.end_tokens("acct_kept".into()).await.unwrap();
        let started = std::time::Instant::now();
        store.wait_for_changes(version, Duration::from_secs(1)).await;
        if started.elapsed() < Duration::from_millis(900) {
            return true;
        }
    }
    false
}

/// The pool's connections and the listener's killed (`pg_terminate_backend`): a call may fail, clearly, as
/// unavailable; the pool opens new connections for the next; nothing acknowledged before is lost; the
/// listener comes back.
#[tokio::test]
async fn connections_cut_by_the_server_fail_clearly_and_are_replaced() {
    let Some(url) = std::env::var(crate::store::conformance::ENV_TEST_POSTGRES).ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: TOLLGATE_TEST_POSTGRES is not set");
        return;
    };
    let name = format!("tg_test_cut_{}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut config = config(&format!("{url}{separator}application_name={name}"), Vec::new());
    config.schema = Some(name.clone());
    let store = PgStore::open(&config).await.unwrap();
    let new = crate::store::NewAccount {
        id: "acct_kept".into(),
        email: "kept@example.com".into(),
        password_hash: "h".into(),
        plan: "default".into(),
        key_cap: 1,
        created_at: 1,
    };
    crate::store::Store::create_account(&store, new).await.unwrap();

    assert!(woken_again(&store, &config).await, "the listener is connected before the cut");

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let cut = "SELECT count(pg_terminate_backend(pid))::BIGINT FROM pg_stat_activity WHERE application_name = $1";
    let killed: i64 = client.query_one(cut, &[&name]).await.unwrap().get(0);
    assert!(killed >= 1, "the pool and the listener had connections");

    let mut failures = 0;
    let found = loop {
        match crate::store::Store::account(&store, "acct_kept".into()).await {
            Ok(found) => break found,
            Err(e) => {
                assert!(matches!(e, crate::store::StoreError::Unavailable(_)), "a clear failure: {e:?}");
                failures += 1;
                assert!(failures <= 2, "the pool replaces dead connections: {e}");
            }
        }
    };
    assert_eq!(found.map(|a| a.email), Some(Some("kept@example.com".to_owned())), "nothing acknowledged is lost");
    assert!(woken_again(&store, &config).await, "the listener reconnected: a write wakes waiters again");
    drop(store);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await.unwrap();
    drop(client);
    let _ = driver.await;
}

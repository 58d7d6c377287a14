//! The same store-level scenarios run against every backend: the SQLite file, and PostgreSQL when
//! `TOLLGATE_TEST_POSTGRES` holds a URL (each run in a schema of its own, dropped afterwards). Without
//! it the PostgreSQL runs are skipped, and each test says so.

mod accounts;
mod keys;
mod usage;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{EndUserAddition, HashedKey, KeyIdentity, NewAccount, NewKey, Store, UsageAddition, UsageBatch};
use crate::auth::keys::{KeyHasher, KeyKind, SecretKey, generate, key_prefix};
use crate::config::{DatabaseUrl, PostgresConfig, StoreBackend, StoreConfig};

/// The environment variable holding the URL of the PostgreSQL database the tests may use.
pub const ENV_TEST_POSTGRES: &str = "TOLLGATE_TEST_POSTGRES";

/// A store under test, and how to open another instance on the same data (another process would).
pub(super) struct Subject {
    pub store: Arc<dyn Store>,
    config: StoreConfig,
    /// Whether the backend tells waiters of writes (PostgreSQL) rather than letting them poll.
    pub notifies: bool,
    pub hasher: KeyHasher,
}

impl Subject {
    pub async fn another(&self) -> Arc<dyn Store> {
        super::open(&self.config).await.unwrap()
    }

    /// A new key's secret and the key ready to write.
    pub fn key(&self, kind: KeyKind, new: NewKey) -> (SecretKey, HashedKey) {
        // As the control plane mints keys (admin::service::mint), which this layer may not use.
        let (secret, parsed) = generate("tg", kind).unwrap();
        let identity = KeyIdentity {
            id: parsed.id,
            key_prefix: key_prefix("tg", kind, parsed.id),
            hash: self.hasher.hash(secret.expose()),
            public_key: (kind == KeyKind::Publishable).then(|| secret.expose().to_owned()),
        };
        (secret, HashedKey { identity, key: NewKey { kind, ..new } })
    }

    pub async fn account(&self, id: &str, key_cap: u32) -> String {
        let new = NewAccount {
            id: id.into(),
            email: format!("{id}@example.com"),
            password_hash: "hash".into(),
            plan: "default".into(),
            key_cap,
            created_at: 1,
        };
        self.store.create_account(new).await.unwrap().id
    }
}

fn config(backend: StoreBackend, path: std::path::PathBuf) -> StoreConfig {
    StoreConfig {
        path,
        backend,
        refresh_interval: Duration::from_millis(100),
        flush_interval: Duration::from_millis(100),
        max_staleness: Duration::from_secs(10),
        on_stale: crate::config::OnStale::Refuse,
    }
}

/// Runs `scenario` against SQLite, then against PostgreSQL in a fresh schema when the tests have one.
pub(super) async fn run<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Subject) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = config(StoreBackend::Sqlite, dir.path().join("t.db"));
    let store = super::open(&sqlite).await.unwrap();
    scenario(Subject { store, config: sqlite, notifies: false, hasher: KeyHasher::new(None) }).await;

    let Some(url) = std::env::var(ENV_TEST_POSTGRES).ok().filter(|u| !u.is_empty()) else {
        eprintln!("{name}: skipped on PostgreSQL ({ENV_TEST_POSTGRES} is not set); ran on SQLite");
        return;
    };
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let schema = format!("tg_test_{name}_{}_{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
    let pg = PostgresConfig {
        url: DatabaseUrl::new(url.clone()),
        pool_size: 8,
        statement_timeout: Duration::from_secs(10),
        schema: Some(schema.clone()),
        ca_certs: Vec::new(),
    };
    let postgres = config(StoreBackend::Postgres(pg), dir.path().join("unused.db"));
    let store = super::open(&postgres).await.unwrap_or_else(|e| panic!("{name}: opening PostgreSQL: {e}"));
    let subject = Subject { store, config: postgres, notifies: true, hasher: KeyHasher::new(None) };
    let outcome = tokio::spawn(scenario(subject)).await;
    drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Drops a test's schema and everything in it.
pub async fn drop_schema(url: &str, schema: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// A usage batch of a fresh id.
pub(super) fn batch(rows: Vec<UsageAddition>, end_users: Vec<EndUserAddition>) -> UsageBatch {
    let id = format!("ub_{}", crate::auth::id::random_id().unwrap());
    UsageBatch { id, made_at: crate::clock::unix_now(), rows, end_users }
}

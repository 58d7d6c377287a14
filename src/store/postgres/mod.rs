//! The shared store: a PostgreSQL database several tollgate instances use at once (docs/ARCHITECTURE.md,
//! The seams). Every write commits before it returns, with the server's default `synchronous_commit`.
//! Every key or account write first takes the row lock of the store version (`store_meta`) and bumps it,
//! so those writes are serialized across instances as SQLite's `BEGIN IMMEDIATE` serializes them in one
//! process: the key caps are counted under that lock, and versions become visible in the order they
//! were taken (a sequence could commit 11 before 10 and a poller would skip 10). The same transaction
//! sends `NOTIFY tollgate_keys` with `<schema>:<version>`, which wakes [`Store::wait_for_changes`] on
//! every instance; polling stays the safety net.

mod accounts;
mod copy;
mod keys;
mod listen;
mod retry;
mod rows;
mod schema;
mod store_impl;
#[cfg(test)]
mod tests;
mod trial;
mod usage;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

pub(crate) use copy::copy_in;

use super::StoreError;
use crate::config::PostgresConfig;

/// PostgreSQL's errors stay in this module: the rest of tollgate sees a backend failure as text.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            // Class 08 (connection exception) and 57 (operator intervention: a terminated backend, a
            // server shutting down) say the database is out of reach, not that the statement was wrong.
            Some(db) if matches!(&db.code().code()[..2], "08" | "57") => {
                StoreError::Unavailable(format!("postgres: {}: {}", db.code().code(), db.message()))
            }
            Some(db) => StoreError::Backend(format!("postgres: {}: {}", db.code().code(), db.message())),
            None if unreachable(&e) => StoreError::Unavailable(format!("postgres: {}", with_cause(&e))),
            // A value the row could not be read as, a statement the code got wrong.
            None => StoreError::Backend(format!("postgres: {}", with_cause(&e))),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => {
                StoreError::Unavailable(format!("postgres: {}", with_cause(&e)))
            }
            other => StoreError::Unavailable(format!("postgres pool: {other}")),
        }
    }
}

/// Whether `e` says the server could not be reached or the connection was lost (rather than that a
/// statement or a row was wrong).
fn unreachable(e: &tokio_postgres::Error) -> bool {
    let text = e.to_string();
    e.is_closed()
        || std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>())
        || ["error connecting", "TLS", "timeout"].iter().any(|what| text.contains(what))
}

/// An error and its cause (`error connecting to server: Connection refused`); neither holds the URL.
fn with_cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether `e` is a unique-constraint violation (a taken email or project name).
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The store on PostgreSQL: a pool of connections, and a listener for other instances' writes.
pub struct PgStore {
    pool: Pool,
    listener: listen::Listener,
}

impl PgStore {
    /// Connects, creates the schema if needed, applies the migrations and starts listening for changes.
    pub async fn open(config: &PostgresConfig) -> Result<PgStore, StoreError> {
        let (pg, tls) = (connection_config(config)?, tls(config)?);
        if let Some(schema) = &config.schema {
            schema::create_schema(&pg, &tls, schema).await?;
        }
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = Manager::from_config(pg.clone(), tls.clone(), recycling);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.statement_timeout))
            .create_timeout(Some(config.statement_timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        let current: String = client.query_one("SELECT current_schema()", &[]).await?.get(0);
        drop(client);
        let listener = listen::Listener::start(pg, tls, current);
        Ok(PgStore { pool, listener })
    }

    /// Applies the migrations not applied yet; how many there were, and how many ran now.
    pub async fn migrate(config: &PostgresConfig) -> Result<(usize, usize), StoreError> {
        let (pg, tls) = (connection_config(config)?, tls(config)?);
        if let Some(schema) = &config.schema {
            schema::create_schema(&pg, &tls, schema).await?;
        }
        let (mut client, connection) = pg.connect(tls).await?;
        let driver = tokio::spawn(connection);
        let applied = schema::migrate(&mut client).await;
        drop(client);
        let _ = driver.await;
        Ok((schema::MIGRATIONS.len(), applied?))
    }

    /// Connects without changing anything: the server's version and how many of the migrations the
    /// schema has (for `check-config`).
    pub async fn probe(config: &PostgresConfig) -> Result<(String, usize, usize), StoreError> {
        let (pg, tls) = (connection_config(config)?, tls(config)?);
        let (client, connection) = pg.connect(tls).await?;
        let driver = tokio::spawn(connection);
        let probed = async {
            let version: String = client.query_one("SHOW server_version", &[]).await?.try_get(0)?;
            let table = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?;
            let applied: i64 = if table.try_get(0)? {
                client.query_one("SELECT count(*) FROM schema_migrations", &[]).await?.try_get(0)?
            } else {
                0
            };
            Ok::<_, StoreError>((version, usize::try_from(applied).unwrap_or(0), schema::MIGRATIONS.len()))
        }
        .await;
        drop(client);
        let _ = driver.await;
        probed
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// The connection settings: the URL's, with the statement timeout and the schema as session options.
fn connection_config(config: &PostgresConfig) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .for_connection()
        .parse()
        .map_err(|e| StoreError::Backend(format!("store.url is not a PostgreSQL URL: {e}")))?;
    // TLS when the URL asks for it (`require`, or `verify-full`/`verify-ca`, read as `require`), and then
    // verified; never the unverified attempt libpq makes for `prefer`, the default, which stays plain here.
    if pg.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let mut options = format!("-c statement_timeout={}", config.statement_timeout.as_millis());
    if let Some(schema) = &config.schema {
        options.push_str(&format!(" -c search_path={schema}"));
    }
    pg.options(&options);
    if pg.get_application_name().is_none() {
        pg.application_name("tollgate");
    }
    Ok(pg)
}

/// TLS through rustls (as everywhere in tollgate), used when the URL's `sslmode` asks for it: trusting the
/// webpki roots and `store.ca_file`, verifying the chain and the host name.
fn tls(config: &PostgresConfig) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for cert in &config.ca_certs {
        roots.add(cert.clone()).map_err(|e| StoreError::Backend(format!("store.ca_file: {e}")))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(tls))
}

/// Bumps the store version inside a write's transaction and tells listeners of it when the
/// transaction commits. Takes the version row's lock: key and account writes run one at a time.
async fn bump_version(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "UPDATE store_meta SET value = value + 1 WHERE name = 'version'
             RETURNING value, pg_notify('tollgate_keys', current_schema() || ':' || value)::text",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Takes the version row's lock without a change to announce, so a write that must not race key
/// creations (deleting a project) waits for them.
async fn lock_writes(tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT value FROM store_meta WHERE name = 'version' FOR UPDATE", &[]).await?;
    Ok(())
}

/// A count or quota as PostgreSQL stores it: a `BIGINT`, saturating rather than wrapping.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

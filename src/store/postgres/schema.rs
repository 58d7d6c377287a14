//! The PostgreSQL schema: migrations applied in order at open (and by `tollgate store migrate`), each
//! in its own transaction under a transaction-level advisory lock, so instances starting together
//! apply each migration once. `schema_migrations` records those that ran.

use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// Schema migrations, applied in order; never edit one that has shipped, append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE accounts (
        id            TEXT PRIMARY KEY,
        email         TEXT,
        password_hash TEXT,
        plan          TEXT NOT NULL,
        key_cap       BIGINT NOT NULL DEFAULT 10,
        created_at    BIGINT NOT NULL,
        -- Access tokens carry the epoch they were issued in; bumping it ends every earlier token.
        token_epoch   BIGINT NOT NULL DEFAULT 0,
        disabled      BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE UNIQUE INDEX accounts_by_email ON accounts(email) WHERE email IS NOT NULL;
    INSERT INTO accounts (id, plan, created_at) VALUES ('default', 'default', 0);
    -- The reserved account holding trial keys until one is claimed.
    INSERT INTO accounts (id, plan, created_at, key_cap) VALUES ('trial', 'default', 0, 0);
    -- The store version: bumped (under its row lock) by every key and account write.
    CREATE TABLE store_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO store_meta (name, value) VALUES ('version', 0);
    CREATE TABLE service_keys (
        id                  TEXT PRIMARY KEY,
        key_prefix          TEXT NOT NULL,
        kind                TEXT NOT NULL,
        name                TEXT NOT NULL,
        hash                BYTEA NOT NULL,
        created_at          BIGINT NOT NULL,
        expires_at          BIGINT,
        revoked_at          BIGINT,
        version             BIGINT NOT NULL,
        account_id          TEXT NOT NULL DEFAULT 'default' REFERENCES accounts(id),
        requests_per_minute BIGINT,
        requests_per_day    BIGINT,
        concurrent_requests BIGINT,
        tokens_per_month    BIGINT,
        scopes              TEXT NOT NULL DEFAULT 'chat,embeddings,models:read,count_tokens',
        -- JSON arrays of provider names and model globs; NULL allows any.
        providers           TEXT,
        models              TEXT,
        project             TEXT,
        last_used_at        BIGINT,
        -- The key's policy (auth::policy::KeyPolicy) as JSON, NULL for the default.
        policy              TEXT,
        description         TEXT,
        metadata            TEXT,
        -- A publishable key's whole text (not secret); NULL for every other kind.
        public_key          TEXT,
        -- A publishable key's signing secret, sealed (auth::signing).
        signing_secret      BYTEA,
        -- The keyed hash of the device a trial key serves (cleared when claimed).
        trial_device        BYTEA
    );
    CREATE INDEX service_keys_by_version ON service_keys(version);
    CREATE INDEX service_keys_by_account ON service_keys(account_id);
    CREATE INDEX service_keys_by_project ON service_keys(project) WHERE project IS NOT NULL;
    CREATE UNIQUE INDEX service_keys_by_trial_device ON service_keys(trial_device)
        WHERE trial_device IS NOT NULL AND revoked_at IS NULL;
    CREATE TABLE projects (
        id          TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL REFERENCES accounts(id),
        name        TEXT NOT NULL,
        key_cap     BIGINT NOT NULL DEFAULT 5,
        created_at  BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX projects_by_name ON projects(account_id, name);
    -- Usage per key, UTC day and model; requests counted at admission, tokens when settled.
    CREATE TABLE usage_daily (
        key_id        TEXT NOT NULL,
        account_id    TEXT NOT NULL,
        day           BIGINT NOT NULL,
        model         TEXT NOT NULL,
        requests      BIGINT NOT NULL DEFAULT 0,
        input_tokens  BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, day, model)
    );
    CREATE INDEX usage_daily_by_day ON usage_daily(day);
    -- Usage per key, end user and UTC day.
    CREATE TABLE usage_end_users (
        key_id        TEXT NOT NULL,
        account_id    TEXT NOT NULL,
        end_user      TEXT NOT NULL,
        day           BIGINT NOT NULL,
        requests      BIGINT NOT NULL DEFAULT 0,
        input_tokens  BIGINT NOT NULL DEFAULT 0,
        output_tokens BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, end_user, day)
    );
    CREATE INDEX usage_end_users_by_day ON usage_end_users(day);
",
    "
    -- Usage flushes applied, by id (store::UsageBatch): a batch sent again is skipped. Ids are pruned
    -- two days after their batch was made.
    CREATE TABLE usage_batches (id TEXT PRIMARY KEY, made_at BIGINT NOT NULL);
    CREATE INDEX usage_batches_by_time ON usage_batches(made_at);
",
];

/// The advisory lock of this schema's migrations (one per schema, so tests in their own schemas do
/// not wait on each other).
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('tollgate migrations ' || current_schema()))";

/// Applies the migrations not yet recorded; how many ran.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, StoreError> {
    let mut ran = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let tx = client.transaction().await?;
        tx.batch_execute(LOCK).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
        let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&version]).await?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version]).await?;
        tx.commit().await?;
        ran += 1;
    }
    Ok(ran)
}

/// Creates the configured schema if it is missing, under a database-wide advisory lock (two
/// `CREATE SCHEMA IF NOT EXISTS` at once can still collide).
pub(super) async fn create_schema(
    pg: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    schema: &str,
) -> Result<(), StoreError> {
    let (mut client, connection) = pg.connect(tls.clone()).await?;
    let driver = tokio::spawn(connection);
    let result = async {
        // A schema made beforehand needs no right to create one (a least-privileged role may lack it).
        if client.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).await?.is_some() {
            return Ok(());
        }
        let tx = client.transaction().await?;
        tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('tollgate create schema'))").await?;
        // The name was checked to be a plain lowercase identifier (config::StoreConfig).
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
        tx.commit().await
    }
    .await;
    drop(client);
    let _ = driver.await;
    Ok(result?)
}

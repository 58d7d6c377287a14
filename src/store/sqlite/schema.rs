//! The SQLite schema: migrations applied in order at open, `PRAGMA user_version` counting those that ran.

use rusqlite::Connection;

use crate::store::StoreError;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE service_keys (
        id          TEXT PRIMARY KEY,
        key_prefix  TEXT NOT NULL,
        kind        TEXT NOT NULL,
        name        TEXT NOT NULL,
        hash        BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        revoked_at  INTEGER,
        version     INTEGER NOT NULL
    );
    CREATE INDEX service_keys_by_version ON service_keys(version);
    CREATE TABLE store_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO store_meta (name, value) VALUES ('version', 0);
",
    "
    CREATE TABLE accounts (
        id          TEXT PRIMARY KEY,
        plan        TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    INSERT INTO accounts (id, plan, created_at) VALUES ('default', 'default', 0);
    ALTER TABLE service_keys ADD COLUMN account_id TEXT NOT NULL DEFAULT 'default' REFERENCES accounts(id);
    ALTER TABLE service_keys ADD COLUMN requests_per_minute INTEGER;
    ALTER TABLE service_keys ADD COLUMN requests_per_day INTEGER;
    ALTER TABLE service_keys ADD COLUMN concurrent_requests INTEGER;
    ALTER TABLE service_keys ADD COLUMN tokens_per_month INTEGER;
    -- Usage per key, UTC day and model; requests counted at admission, tokens when settled.
    CREATE TABLE usage_daily (
        key_id        TEXT NOT NULL,
        account_id    TEXT NOT NULL,
        day           INTEGER NOT NULL,
        model         TEXT NOT NULL,
        requests      INTEGER NOT NULL DEFAULT 0,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, day, model)
    );
    CREATE INDEX usage_daily_by_day ON usage_daily(day);
",
    "
    ALTER TABLE accounts ADD COLUMN email TEXT;
    ALTER TABLE accounts ADD COLUMN password_hash TEXT;
    ALTER TABLE accounts ADD COLUMN key_cap INTEGER NOT NULL DEFAULT 10;
    CREATE UNIQUE INDEX accounts_by_email ON accounts(email) WHERE email IS NOT NULL;
    ALTER TABLE service_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'chat,embeddings,models:read,count_tokens';
    -- JSON arrays of provider names and model globs; NULL allows any.
    ALTER TABLE service_keys ADD COLUMN providers TEXT;
    ALTER TABLE service_keys ADD COLUMN models TEXT;
    ALTER TABLE service_keys ADD COLUMN project TEXT;
    ALTER TABLE service_keys ADD COLUMN last_used_at INTEGER;
    CREATE INDEX service_keys_by_account ON service_keys(account_id);
",
    "
    -- Access tokens carry the epoch they were issued in; bumping it (logout, new password, disable)
    -- ends every token issued before. A disabled account cannot log in and its keys are refused.
    ALTER TABLE accounts ADD COLUMN token_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
",
    "
    -- A key's policy (auth::policy::KeyPolicy) as JSON, NULL for the default; its owner's notes.
    ALTER TABLE service_keys ADD COLUMN policy TEXT;
    ALTER TABLE service_keys ADD COLUMN description TEXT;
    ALTER TABLE service_keys ADD COLUMN metadata TEXT;
    -- Projects group an account's keys under a cap of their own; service_keys.project holds a
    -- project's id. Earlier free-form project labels become projects of their account.
    CREATE TABLE projects (
        id          TEXT PRIMARY KEY,
        account_id  TEXT NOT NULL REFERENCES accounts(id),
        name        TEXT NOT NULL,
        key_cap     INTEGER NOT NULL DEFAULT 5,
        created_at  INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX projects_by_name ON projects(account_id, name);
    INSERT INTO projects (id, account_id, name, created_at)
        SELECT 'prj_' || hex(randomblob(6)), account_id, project, MIN(created_at)
        FROM service_keys WHERE project IS NOT NULL GROUP BY account_id, project;
    UPDATE service_keys SET project = (SELECT p.id FROM projects p
        WHERE p.account_id = service_keys.account_id AND p.name = service_keys.project)
    WHERE project IS NOT NULL;
    CREATE INDEX service_keys_by_project ON service_keys(project) WHERE project IS NOT NULL;
",
    "
    -- A publishable key's whole text: it is not secret (it sits in browser code) and is shown on every
    -- view of the key. NULL for every other kind, whose secret is never stored.
    ALTER TABLE service_keys ADD COLUMN public_key TEXT;
",
    "
    -- A publishable key's signing secret, sealed (auth::signing): format byte, nonce, ciphertext and tag.
    ALTER TABLE service_keys ADD COLUMN signing_secret BLOB;
    -- Usage per key, end user and UTC day (the end user as the key's owner names it).
    CREATE TABLE usage_end_users (
        key_id        TEXT NOT NULL,
        account_id    TEXT NOT NULL,
        end_user      TEXT NOT NULL,
        day           INTEGER NOT NULL,
        requests      INTEGER NOT NULL DEFAULT 0,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, end_user, day)
    );
    CREATE INDEX usage_end_users_by_day ON usage_end_users(day);
",
    "
    -- Trial keys: the reserved account that holds them until one is claimed, and the keyed hash of the
    -- device each serves (cleared when claimed). A device has at most one active trial key.
    INSERT OR IGNORE INTO accounts (id, plan, created_at, key_cap) VALUES ('trial', 'default', 0, 0);
    ALTER TABLE service_keys ADD COLUMN trial_device BLOB;
    CREATE UNIQUE INDEX service_keys_by_trial_device ON service_keys(trial_device)
        WHERE trial_device IS NOT NULL AND revoked_at IS NULL;
",
    "
    -- Usage flushes applied, by id (store::UsageBatch): a batch sent again is skipped. Ids are pruned
    -- two days after their batch was made.
    CREATE TABLE usage_batches (id TEXT PRIMARY KEY, made_at INTEGER NOT NULL);
    CREATE INDEX usage_batches_by_time ON usage_batches(made_at);
",
];

/// How many migrations this version of tollgate has (a file up to date has this `user_version`).
pub(crate) fn version() -> usize {
    MIGRATIONS.len()
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    /// A file written before projects existed: its free-form project labels become projects of their
    /// accounts, and the keys point at them.
    #[test]
    fn project_labels_become_projects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", i + 1).unwrap();
            }
            let tx = conn.transaction().unwrap();
            for (id, project) in
                [("AAAAAAAAAAAA", Some("alpha")), ("BBBBBBBBBBBB", Some("alpha")), ("CCCCCCCCCCCC", None)]
            {
                tx.execute(
                    "INSERT INTO service_keys (id, key_prefix, kind, name, hash, created_at, version, project)
                     VALUES (?1, 'tg_live_' || ?1, 'live', 'k', x'00', 7, 1, ?2)",
                    rusqlite::params![id, project],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let projects = store.projects("default", 10).unwrap();
        assert_eq!(projects.len(), 1);
        let alpha = &projects[0];
        assert_eq!((alpha.name.as_str(), alpha.key_cap, alpha.active_keys, alpha.created_at), ("alpha", 5, 2, 7));
        assert!(crate::admin::service::is_project_id(&alpha.id), "{}", alpha.id);
        let keys = store.list_keys().unwrap();
        let in_alpha = keys.iter().filter(|k| k.project.as_deref() == Some(alpha.id.as_str())).count();
        assert_eq!((in_alpha, keys.iter().filter(|k| k.project.is_none()).count()), (2, 1));
    }
}

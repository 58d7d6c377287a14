//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a key write is on disk
//! before the call returns. Every write bumps a store-wide version so servers can poll for changes cheaply.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use std::collections::HashMap;

mod accounts;
mod batches;
mod end_users;
pub mod key_cap;
mod pages;
mod projects;
mod schema;
mod trial;

mod store_impl;

use key_cap::{Owner, count_active_in, insert_key};

use super::{AccountInfo, HashedKey, KeyChanges, KeyInfo, KeyUpdate, StoreError, UsageAddition, UsageRow, UsageTotal};
use crate::auth::access::{KeyAccess, Scopes};
use crate::auth::keys::{KeyId, KeyKind, KeyLimits, KeyRecord};
use crate::auth::policy::KeyPolicy;

/// The update of an additive usage upsert: each count grows by the new row's, saturating at SQLite's
/// largest integer rather than failing the flush.
pub(super) const ADD_COUNTS: &str = "
    requests = CASE WHEN requests > 9223372036854775807 - excluded.requests
        THEN 9223372036854775807 ELSE requests + excluded.requests END,
    input_tokens = CASE WHEN input_tokens > 9223372036854775807 - excluded.input_tokens
        THEN 9223372036854775807 ELSE input_tokens + excluded.input_tokens END,
    output_tokens = CASE WHEN output_tokens > 9223372036854775807 - excluded.output_tokens
        THEN 9223372036854775807 ELSE output_tokens + excluded.output_tokens END";

/// SQLite's errors stay in this module: the rest of tollgate sees a backend failure as text.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

/// How many schema migrations this version has: a file up to date records this `user_version`.
pub(crate) fn schema_version() -> usize {
    schema::version()
}

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes keys in one transaction (one fsync), in order.
    pub fn create_keys(&self, keys: &[HashedKey]) -> Result<Vec<KeyInfo>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version = bump_version(&tx)?;
        let created = keys.iter().map(|key| insert_key(&tx, key, version)).collect::<Result<_, _>>()?;
        tx.commit()?;
        Ok(created)
    }

    /// Adds usage to the daily totals, all in one transaction (without a batch id: for tools and tests;
    /// the server's flushes go through [`SqliteStore::apply_usage`]).
    pub fn add_usage(&self, rows: &[UsageAddition]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        batches::add_usage_in(&tx, rows)?;
        tx.commit()?;
        Ok(())
    }

    /// Per key: its account, requests on day `today`, and tokens from day `month_start` on.
    pub fn usage_totals(&self, today: i64, month_start: i64) -> Result<Vec<UsageTotal>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            // TOTAL sums as a float, which cannot overflow as SUM can (an error that would stop the start);
            // the figures are exact up to 2^53.
            "SELECT key_id, account_id,
                    TOTAL(CASE WHEN day = ?1 THEN requests ELSE 0 END),
                    TOTAL(input_tokens) + TOTAL(output_tokens)
             FROM usage_daily WHERE day >= ?2 GROUP BY key_id, account_id",
        )?;
        let mut rows = stmt.query(params![today, month_start])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(UsageTotal {
                key: parse_id(&row.get::<_, String>(0)?)?,
                account: row.get(1)?,
                // A float to integer `as` saturates (and maps NaN to 0).
                day_requests: row.get::<_, f64>(2)? as u64,
                month_tokens: row.get::<_, f64>(3)? as u64,
            });
        }
        Ok(out)
    }

    /// Usage rows between two days (inclusive), optionally for one key, by key, day and model.
    pub fn usage_report(&self, key: Option<KeyId>, from: i64, to: i64) -> Result<Vec<UsageRow>, StoreError> {
        self.usage_rows(None, key, from, to)
    }

    /// Usage rows between two days (inclusive), optionally of one account and one key, by key, day
    /// and model.
    pub fn usage_rows(
        &self,
        account: Option<&str>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT u.key_id, COALESCE(k.key_prefix, u.key_id), u.day, u.model, u.requests, u.input_tokens, u.output_tokens,
                    k.project
             FROM usage_daily u LEFT JOIN service_keys k ON k.id = u.key_id
             WHERE u.day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR u.key_id = ?3) AND (?4 IS NULL OR u.account_id = ?4)
             ORDER BY u.key_id, u.day, u.model",
        )?;
        let mut rows = stmt.query(params![from, to, key.map(|k| k.as_str().to_owned()), account])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(UsageRow {
                key: parse_id(&row.get::<_, String>(0)?)?,
                key_prefix: row.get(1)?,
                day: row.get(2)?,
                model: row.get(3)?,
                requests: row.get::<_, i64>(4)?.max(0) as u64,
                input_tokens: row.get::<_, i64>(5)?.max(0) as u64,
                output_tokens: row.get::<_, i64>(6)?.max(0) as u64,
                project: row.get(7)?,
            });
        }
        Ok(out)
    }

    /// Replaces what a key's owner may change; `false` if no such key.
    pub fn update_key(&self, id: KeyId, update: &KeyUpdate) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version = bump_version(&tx)?;
        let (limits, access) = (update.limits, &update.access);
        let n = tx.execute(
            "UPDATE service_keys SET name = ?1, requests_per_minute = ?2, requests_per_day = ?3, concurrent_requests = ?4,
                                     tokens_per_month = ?5, scopes = ?6, providers = ?7, models = ?8, version = ?9,
                                     policy = ?10, description = ?11, metadata = ?12
             WHERE id = ?13",
            params![
                update.name,
                limits.requests_per_minute,
                limits.requests_per_day,
                limits.concurrent_requests,
                limits.tokens_per_month.map(sql_int),
                access.scopes.to_stored(),
                list_json(&access.providers),
                list_json(&access.models),
                version,
                update.policy.to_stored(),
                update.description,
                update.metadata.as_ref().map(|m| m.to_string()),
                id.as_str()
            ],
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    /// Records when keys were last used (batched by the flusher; no version bump, servers need not see it).
    pub fn touch_keys(&self, used: &[(KeyId, i64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE service_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?1) WHERE id = ?2",
            )?;
            for (id, at) in used {
                stmt.execute(params![at, id.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Revokes a key; `false` if no such key or it was already revoked.
    pub fn revoke_key(&self, id: KeyId, at: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version = bump_version(&tx)?;
        let n = tx.execute(
            "UPDATE service_keys SET revoked_at = ?1, version = ?2
             WHERE id = ?3 AND (revoked_at IS NULL OR revoked_at > ?1)",
            params![at, version, id.as_str()],
        )?;
        if n == 0 {
            // Nothing changed: leave the version alone so pollers have nothing to do.
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.infos("ORDER BY created_at, id", [])
    }

    pub fn key_info(&self, id: KeyId) -> Result<Option<KeyInfo>, StoreError> {
        Ok(self.infos("WHERE id = ?1", [id.as_str()])?.into_iter().next())
    }

    /// Keys of an account neither revoked nor expired at `now`.
    pub fn active_keys(&self, account: &str, now: i64) -> Result<usize, StoreError> {
        count_active_in(&self.conn(), Owner::Account(account), now)
    }

    fn infos<P: rusqlite::Params>(&self, tail: &str, params: P) -> Result<Vec<KeyInfo>, StoreError> {
        infos_in(&self.conn(), tail, params)
    }
}

/// The keys a query `tail` selects, as listed to their owner.
fn infos_in<P: rusqlite::Params>(conn: &Connection, tail: &str, params: P) -> Result<Vec<KeyInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, key_prefix, kind, name, created_at, expires_at, revoked_at, account_id,
                requests_per_minute, requests_per_day, concurrent_requests, tokens_per_month,
                scopes, providers, models, project, last_used_at, policy, description, metadata, public_key
         FROM service_keys {tail}"
    ))?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(KeyInfo {
            id: parse_id(&row.get::<_, String>(0)?)?,
            key_prefix: row.get(1)?,
            kind: parse_kind(&row.get::<_, String>(2)?)?,
            name: row.get(3)?,
            created_at: row.get(4)?,
            expires_at: row.get(5)?,
            revoked_at: row.get(6)?,
            account: row.get(7)?,
            limits: limits_from(row, 8)?,
            access: access_from(row, 12)?,
            project: row.get(15)?,
            last_used_at: row.get(16)?,
            policy: policy_from(row, 17)?,
            description: row.get(18)?,
            metadata: row
                .get_ref(19)?
                .as_str_or_null()
                .map_err(rusqlite::Error::from)?
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?,
            public_key: row.get(20)?,
        });
    }
    Ok(out)
}

impl SqliteStore {
    /// Every key written after `since` (0 for all), with the store version to pass next time.
    /// Hands every key written after `since` (0 for all) to `each` as it is read, so a million keys
    /// never sit in a list; returns the account plans and the version to ask from next time.
    pub fn key_changes(&self, since: i64, mut each: impl FnMut(KeyRecord)) -> Result<KeyChanges, StoreError> {
        let conn = self.conn();
        let version: i64 = conn
            .query_row("SELECT value FROM store_meta WHERE name = 'version'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if version <= since {
            return Ok(KeyChanges { plans: Vec::new(), disabled: Vec::new(), version });
        }
        let mut stmt = conn.prepare_cached(&format!("{RECORD_SELECT} WHERE version > ?1 AND version <= ?2"))?;
        let mut rows = stmt.query(params![since, version])?;
        let mut accounts = Accounts::default();
        while let Some(row) = rows.next()? {
            each(record_from(row, &mut accounts)?);
        }
        drop(rows);
        drop(stmt);
        drop(conn);
        let plans = self.account_plans()?;
        let disabled = self.disabled_accounts()?;
        Ok(KeyChanges { plans, disabled, version })
    }

    /// One key as the hot path holds it.
    pub fn key_record(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{RECORD_SELECT} WHERE id = ?1"))?;
        let mut rows = stmt.query([id.as_str()])?;
        rows.next()?.map(|row| record_from(row, &mut Accounts::default())).transpose()
    }

    /// A cheap round trip, for readiness.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

fn bump_version(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
    Ok(tx.query_row("UPDATE store_meta SET value = value + 1 WHERE name = 'version' RETURNING value", [], |r| {
        r.get(0)
    })?)
}

/// The columns of a [`KeyRecord`], as [`record_from`] reads them.
const RECORD_SELECT: &str = "SELECT id, NULL, kind, NULL, hash, created_at, expires_at, revoked_at, account_id,
        requests_per_minute, requests_per_day, concurrent_requests, tokens_per_month, scopes, providers, models,
        policy, signing_secret, version
    FROM service_keys";

/// Shares one `Arc` per account among the records read in one go (most keys share a few accounts).
#[derive(Default)]
struct Accounts(HashMap<String, Arc<str>>);

impl Accounts {
    fn intern(&mut self, id: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(id) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(id);
        self.0.insert(id.to_owned(), Arc::clone(&shared));
        shared
    }
}

/// Reads text and blobs in place: loading a million keys should not allocate for every column.
fn record_from(row: &rusqlite::Row<'_>, accounts: &mut Accounts) -> Result<KeyRecord, StoreError> {
    let id = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
    let hash: [u8; 32] = row
        .get_ref(4)?
        .as_blob()
        .map_err(rusqlite::Error::from)?
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("hash of key {id}")))?;
    Ok(KeyRecord {
        id: parse_id(id)?,
        kind: parse_kind(row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?)?,
        hash: blake3::Hash::from_bytes(hash),
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
        account: accounts.intern(row.get_ref(8)?.as_str().map_err(rusqlite::Error::from)?),
        limits: limits_from(row, 9)?,
        access: access_from(row, 13)?,
        policy: policy_from(row, 16)?,
        signing: match row.get_ref(17)?.as_blob_or_null().map_err(rusqlite::Error::from)? {
            Some(sealed) => crate::auth::signing::Signing::Sealed(std::sync::Arc::from(sealed)),
            None => crate::auth::signing::Signing::None,
        },
        version: row.get(18)?,
    })
}

fn policy_from(row: &rusqlite::Row<'_>, at: usize) -> Result<KeyPolicy, StoreError> {
    let text = row.get_ref(at)?.as_str_or_null().map_err(rusqlite::Error::from)?;
    KeyPolicy::from_stored(text).map_err(|e| StoreError::Corrupt(format!("key policy: {e}")))
}

/// The columns of an [`AccountInfo`], as [`account_from`] reads them.
const ACCOUNT_SELECT: &str = "SELECT id, email, plan, key_cap, created_at, token_epoch, disabled FROM accounts";

fn account_from(r: &rusqlite::Row<'_>) -> Result<AccountInfo, rusqlite::Error> {
    Ok(AccountInfo {
        id: r.get(0)?,
        email: r.get(1)?,
        plan: r.get(2)?,
        key_cap: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
        created_at: r.get(4)?,
        token_epoch: r.get::<_, i64>(5)?.max(0) as u64,
        disabled: r.get(6)?,
    })
}

/// The scopes, providers and models columns starting at `first`.
fn access_from(row: &rusqlite::Row<'_>, first: usize) -> Result<KeyAccess, rusqlite::Error> {
    let list = |i: usize| -> Result<Option<Vec<String>>, rusqlite::Error> {
        Ok(row.get::<_, Option<String>>(i)?.and_then(|json| serde_json::from_str(&json).ok()))
    };
    Ok(KeyAccess {
        scopes: Scopes::from_stored(row.get_ref(first)?.as_str().map_err(rusqlite::Error::from)?),
        providers: list(first + 1)?,
        models: list(first + 2)?,
    })
}

fn list_json(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref().map(|l| serde_json::Value::from(l.clone()).to_string())
}

/// The four limit columns starting at `first`.
fn limits_from(row: &rusqlite::Row<'_>, first: usize) -> Result<KeyLimits, rusqlite::Error> {
    Ok(KeyLimits {
        requests_per_minute: row.get(first)?,
        requests_per_day: row.get(first + 1)?,
        concurrent_requests: row.get(first + 2)?,
        tokens_per_month: row.get::<_, Option<i64>>(first + 3)?.map(|t| t.max(0) as u64),
    })
}

/// A count or quota as SQLite stores it: an `i64`, saturating rather than wrapping to a negative number.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn parse_id(id: &str) -> Result<KeyId, StoreError> {
    KeyId::parse(id).ok_or_else(|| StoreError::Corrupt(format!("key id {id:?}")))
}

fn parse_kind(kind: &str) -> Result<KeyKind, StoreError> {
    KeyKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("key kind {kind:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::service::mint;
    use crate::auth::keys::{KeyHasher, SecretKey};
    use crate::store::NewKey;

    /// Writes a key of prefix `tg`, made by the caller as every key is.
    fn create(store: &SqliteStore, hasher: &KeyHasher, new: NewKey) -> (SecretKey, KeyInfo) {
        let (secret, identity) = mint("tg", hasher, new.kind).unwrap();
        (secret, store.create_keys(&[HashedKey { identity, key: new }]).unwrap().remove(0))
    }

    #[test]
    fn a_quota_beyond_what_sqlite_holds_is_stored_as_its_largest_integer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let limits = KeyLimits { tokens_per_month: Some(u64::MAX), ..KeyLimits::default() };
        let (_, info) = create(&store, &KeyHasher::new(None), NewKey { limits, ..NewKey::live("big", 1) });
        let stored = store.key_info(info.id).unwrap().unwrap();
        assert_eq!(stored.limits.tokens_per_month, Some(i64::MAX as u64), "not wrapped to a negative quota");
    }

    #[test]
    fn keys_round_trip_and_changes_are_incremental() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let hasher = KeyHasher::new(None);
        let (k1, i1) = create(&store, &hasher, NewKey::live("one", 10));
        let changes = |since| {
            let mut records = Vec::new();
            let c = store.key_changes(since, |r| records.push(r)).unwrap();
            (records, c.version)
        };
        let (records, version) = changes(0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].hash, hasher.hash(k1.expose()));
        let table = crate::auth::keys::KeyTable::new("tg".into(), hasher.clone());
        assert_eq!(table.label(&records[0]).to_string(), i1.key_prefix);

        let (none, same) = changes(version);
        assert!(none.is_empty());
        assert_eq!(same, version);

        let (_, i2) =
            create(&store, &hasher, NewKey { kind: KeyKind::Trial, expires_at: Some(99), ..NewKey::live("two", 11) });
        assert!(store.revoke_key(i1.id, 12).unwrap());
        assert!(!store.revoke_key(i1.id, 13).unwrap(), "revoking twice reports no change");
        let (later, _) = changes(version);
        let mut got: Vec<_> = later.iter().map(|r| (r.id, r.revoked_at)).collect();
        got.sort();
        let mut want = vec![(i1.id, Some(12)), (i2.id, None)];
        want.sort();
        assert_eq!(got, want);

        let listed = store.list_keys().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].status_at(12), "revoked");
        assert_eq!(listed[1].status_at(98), "active");
        assert_eq!(listed[1].status_at(99), "expired");
    }

    #[test]
    fn reopening_keeps_keys_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let info = {
            let store = SqliteStore::open(&path).unwrap();
            create(&store, &KeyHasher::new(None), NewKey::live("kept", 1)).1
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.key_info(info.id).unwrap().unwrap().name, "kept");
    }
}

//! Keys in the PostgreSQL store: writing them (the key caps counted under the version lock, so
//! creations from several instances cannot all pass the count), reading them, and the changes servers
//! follow. A key in its rotation grace period is still active and counts; so does a disabled one.

use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::rows::{INFO_SELECT, RECORD_SELECT, cap, info_from, list_json, record_from};
use super::{PgStore, bump_version, sql_int};
use crate::auth::keys::{KeyId, KeyRecord};
use crate::store::{
    DEFAULT_KEY_CAP, HashedKey, KeyChanges, KeyIdentity, KeyInfo, KeySink, KeyUpdate, Rotated, StoreError,
};

impl PgStore {
    pub(super) async fn pg_create_keys(&self, keys: &[HashedKey]) -> Result<Vec<KeyInfo>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        let mut created = Vec::with_capacity(keys.len());
        for key in keys {
            created.push(insert_key(&tx, key, version).await?);
        }
        tx.commit().await?;
        Ok(created)
    }

    pub(super) async fn pg_create_key_within_cap(&self, key: &HashedKey, now: i64) -> Result<KeyInfo, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        within_caps(&tx, &key.key.account, key.key.project.as_deref(), now).await?;
        let created = insert_key(&tx, key, version).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub(super) async fn pg_rotate_key(
        &self,
        id: KeyId,
        replacement: KeyIdentity,
        now: i64,
        grace_seconds: u64,
        enforce_cap: bool,
    ) -> Result<Rotated, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        let old = infos(&tx, "WHERE id = $1", &[&id.as_str()]).await?.into_iter().next();
        let old = old.ok_or(StoreError::KeyNotActive)?;
        if !matches!(old.status_at(now), "active" | "disabled") {
            return Err(StoreError::KeyNotActive);
        }
        if let Some(at) = old.revoked_at {
            return Err(StoreError::RotationPending(at));
        }
        if grace_seconds > 0 && enforce_cap {
            within_caps(&tx, &old.account, old.project.as_deref(), now).await?;
        }
        let key = HashedKey { identity: replacement, key: old.replacement(now) };
        let info = insert_key(&tx, &key, version).await?;
        let old_revoked_at = now.saturating_add(i64::try_from(grace_seconds).unwrap_or(i64::MAX));
        tx.execute(
            "UPDATE service_keys SET revoked_at = $1, version = $2 WHERE id = $3",
            &[&old_revoked_at, &version, &id.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(Rotated { info, old_revoked_at })
    }

    pub(super) async fn pg_revoke_key(&self, id: KeyId, at: i64) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        let n = tx
            .execute(
                "UPDATE service_keys SET revoked_at = $1, version = $2
                 WHERE id = $3 AND (revoked_at IS NULL OR revoked_at > $1)",
                &[&at, &version, &id.as_str()],
            )
            .await?;
        if n == 0 {
            // Nothing changed: the rollback leaves the version (and the notification) alone.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn pg_update_key(&self, id: KeyId, update: KeyUpdate) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let version = bump_version(&tx).await?;
        let (l, access) = (update.limits, &update.access);
        let n = tx
            .execute(
                "UPDATE service_keys SET name = $1, requests_per_minute = $2, requests_per_day = $3,
                        concurrent_requests = $4, tokens_per_month = $5, scopes = $6, providers = $7, models = $8,
                        version = $9, policy = $10, description = $11, metadata = $12
                 WHERE id = $13",
                &[
                    &update.name,
                    &l.requests_per_minute.map(i64::from),
                    &l.requests_per_day.map(i64::from),
                    &l.concurrent_requests.map(i64::from),
                    &l.tokens_per_month.map(sql_int),
                    &access.scopes.to_stored(),
                    &list_json(&access.providers),
                    &list_json(&access.models),
                    &version,
                    &update.policy.to_stored(),
                    &update.description,
                    &update.metadata.as_ref().map(|m| m.to_string()),
                    &id.as_str(),
                ],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records when keys were last used; no version bump, servers need not see it.
    /// Sorted by key, so touches from several instances lock rows in one order.
    pub(super) async fn pg_touch_keys(&self, mut used: Vec<(KeyId, i64)>) -> Result<(), StoreError> {
        used.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare("UPDATE service_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $1) WHERE id = $2")
            .await?;
        for (id, at) in &used {
            tx.execute(&stmt, &[at, &id.as_str()]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn pg_infos(
        &self,
        tail: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<KeyInfo>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(&format!("{INFO_SELECT} {tail}"), params).await?;
        rows.iter().map(info_from).collect()
    }

    pub(super) async fn pg_key_record(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt(&format!("{RECORD_SELECT} WHERE id = $1"), &[&id.as_str()]).await?;
        row.map(|r| record_from(&r, &mut Default::default())).transpose()
    }

    pub(super) async fn pg_keys_page(
        &self,
        account: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<KeyInfo>>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let Some(after) = after else {
            let tail = "WHERE account_id = $1 ORDER BY created_at, id LIMIT $2";
            return self.pg_infos(tail, &[&account, &limit]).await.map(Some);
        };
        let client = self.client().await?;
        let cursor = "SELECT created_at FROM service_keys WHERE id = $1 AND account_id = $2";
        let Some(row) = client.query_opt(cursor, &[&after, &account]).await? else {
            return Ok(None);
        };
        drop(client);
        let created: i64 = row.try_get(0)?;
        let tail = "WHERE account_id = $1 AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4";
        self.pg_infos(tail, &[&account, &created, &after, &limit]).await.map(Some)
    }

    /// Hands every key written after `since` to `each`; the plans, disabled accounts and version.
    /// One repeatable-read transaction, so the keys, plans and version agree.
    pub(super) async fn pg_key_changes(&self, since: i64, mut each: KeySink) -> Result<KeyChanges, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let version: i64 =
            tx.query_one("SELECT value FROM store_meta WHERE name = 'version'", &[]).await?.try_get(0)?;
        if version <= since {
            return Ok(KeyChanges { plans: Vec::new(), disabled: Vec::new(), version });
        }
        let rows =
            tx.query(&format!("{RECORD_SELECT} WHERE version > $1 AND version <= $2"), &[&since, &version]).await?;
        let mut accounts = Default::default();
        for row in &rows {
            each(record_from(row, &mut accounts)?);
        }
        drop(rows);
        let plans = tx.query("SELECT id, plan FROM accounts", &[]).await?;
        let plans = plans.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, StoreError>>()?;
        let disabled = tx.query("SELECT id FROM accounts WHERE disabled", &[]).await?;
        let disabled = disabled.iter().map(|r| Ok(r.try_get(0)?)).collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(KeyChanges { plans, disabled, version })
    }
}

/// The keys a query `tail` selects inside a transaction.
pub(super) async fn infos(
    tx: &Transaction<'_>,
    tail: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<KeyInfo>, StoreError> {
    let rows = tx.query(&format!("{INFO_SELECT} {tail}"), params).await?;
    rows.iter().map(info_from).collect()
}

/// Whether one more active key fits under the account's cap and its project's (which must be one of
/// the account's). Called after [`bump_version`], whose lock makes the count and the insert one step.
pub(super) async fn within_caps(
    tx: &Transaction<'_>,
    account: &str,
    project: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let active = count_active(tx, "account_id", account, now).await?;
    if active >= key_cap(tx, account).await? as usize {
        return Err(StoreError::KeyCapReached(active));
    }
    if let Some(project) = project {
        let cap = project_cap(tx, account, project).await?;
        let active = count_active(tx, "project", project, now).await?;
        if active >= cap as usize {
            return Err(StoreError::ProjectKeyCapReached(active));
        }
    }
    Ok(())
}

pub(super) async fn key_cap(tx: &Transaction<'_>, account: &str) -> Result<u32, StoreError> {
    let row = tx.query_opt("SELECT key_cap FROM accounts WHERE id = $1", &[&account]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?.map_or(DEFAULT_KEY_CAP, cap))
}

/// A project of `account` and its key cap.
pub(super) async fn project_cap(tx: &Transaction<'_>, account: &str, project: &str) -> Result<u32, StoreError> {
    let row =
        tx.query_opt("SELECT key_cap FROM projects WHERE id = $1 AND account_id = $2", &[&project, &account]).await?;
    Ok(cap(row.ok_or(StoreError::UnknownProject)?.try_get(0)?))
}

/// Keys of an account (`column` = `account_id`) or a project neither revoked nor expired at `now`.
pub(super) async fn count_active(tx: &Transaction<'_>, column: &str, id: &str, now: i64) -> Result<usize, StoreError> {
    let sql = format!(
        "SELECT COUNT(*) FROM service_keys WHERE {column} = $1
           AND (revoked_at IS NULL OR revoked_at > $2) AND (expires_at IS NULL OR expires_at > $2)"
    );
    let n: i64 = tx.query_one(&sql, &[&id, &now]).await?.try_get(0)?;
    Ok(n.max(0) as usize)
}

/// Inserts one new key at store `version`; its project, if it names one, must be its account's.
pub(super) async fn insert_key(tx: &Transaction<'_>, key: &HashedKey, version: i64) -> Result<KeyInfo, StoreError> {
    if let Some(project) = &key.key.project {
        project_cap(tx, &key.key.account, project).await?;
    }
    let (identity, new) = (&key.identity, &key.key);
    let l = new.limits;
    tx.execute(
        "INSERT INTO service_keys (id, key_prefix, kind, name, hash, created_at, expires_at, version, account_id,
                                   requests_per_minute, requests_per_day, concurrent_requests, tokens_per_month,
                                   scopes, providers, models, project, policy, description, metadata, public_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
        &[
            &identity.id.as_str(),
            &identity.key_prefix,
            &new.kind.as_str(),
            &new.name,
            &identity.hash.as_bytes().as_slice(),
            &new.created_at,
            &new.expires_at,
            &version,
            &new.account,
            &l.requests_per_minute.map(i64::from),
            &l.requests_per_day.map(i64::from),
            &l.concurrent_requests.map(i64::from),
            &l.tokens_per_month.map(sql_int),
            &new.access.scopes.to_stored(),
            &list_json(&new.access.providers),
            &list_json(&new.access.models),
            &new.project,
            &new.policy.to_stored(),
            &new.description,
            &new.metadata.as_ref().map(|m| m.to_string()),
            &identity.public_key,
        ],
    )
    .await?;
    Ok(key.info())
}

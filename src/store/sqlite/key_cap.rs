//! Writing keys: the insert every creation goes through, and the writes the key caps bound (the
//! account's, and the project's when the key is in one), creating a key and rotating one. Each of those
//! counts the active keys and writes in one `BEGIN IMMEDIATE` transaction, so parallel requests cannot
//! all pass the count before any of them inserts. A key in its rotation grace period is still active and
//! counts; so does a disabled one.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, bump_version, infos_in, list_json, sql_int};
use crate::auth::keys::KeyId;
use crate::store::{DEFAULT_KEY_CAP, HashedKey, KeyIdentity, KeyInfo, Rotated, StoreError};

impl SqliteStore {
    /// Creates `new` if its account has fewer active keys at `now` than its cap; else `KeyCapReached`.
    pub fn create_key_within_cap(&self, key: &HashedKey, now: i64) -> Result<KeyInfo, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        within_caps(&tx, &key.key.account, key.key.project.as_deref(), now)?;
        let version = bump_version(&tx)?;
        let created = insert_key(&tx, key, version)?;
        tx.commit()?;
        Ok(created)
    }

    /// Replaces key `id` with `replacement`, of the same settings; the old one is revoked `grace_seconds`
    /// after `now`. A key has at most one pending replacement: rotating a key already in its grace period
    /// is `RotationPending`. With a grace period both keys are active for a while, so the rotation must
    /// fit under the account's cap when `enforce_cap` (the operator's CLI may go over it); without one
    /// it is a swap and always fits.
    pub fn rotate_key(
        &self,
        id: KeyId,
        replacement: KeyIdentity,
        now: i64,
        grace_seconds: u64,
        enforce_cap: bool,
    ) -> Result<Rotated, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let old = infos_in(&tx, "WHERE id = ?1", [id.as_str()])?.into_iter().next().ok_or(StoreError::KeyNotActive)?;
        if !matches!(old.status_at(now), "active" | "disabled") {
            return Err(StoreError::KeyNotActive);
        }
        if let Some(at) = old.revoked_at {
            return Err(StoreError::RotationPending(at));
        }
        if grace_seconds > 0 && enforce_cap {
            within_caps(&tx, &old.account, old.project.as_deref(), now)?;
        }
        let version = bump_version(&tx)?;
        let key = HashedKey { identity: replacement, key: old.replacement(now) };
        let info = insert_key(&tx, &key, version)?;
        let old_revoked_at = now.saturating_add(i64::try_from(grace_seconds).unwrap_or(i64::MAX));
        tx.execute(
            "UPDATE service_keys SET revoked_at = ?1, version = ?2 WHERE id = ?3",
            params![old_revoked_at, version, id.as_str()],
        )?;
        tx.commit()?;
        Ok(Rotated { info, old_revoked_at })
    }
}

/// Whether one more active key fits under the account's cap and its project's (which must be one of
/// the account's).
fn within_caps(conn: &Connection, account: &str, project: Option<&str>, now: i64) -> Result<(), StoreError> {
    let active = count_active_in(conn, Owner::Account(account), now)?;
    if active >= key_cap(conn, account)? as usize {
        return Err(StoreError::KeyCapReached(active));
    }
    if let Some(project) = project {
        let cap = project_cap(conn, account, project)?;
        let active = count_active_in(conn, Owner::Project(project), now)?;
        if active >= cap as usize {
            return Err(StoreError::ProjectKeyCapReached(active));
        }
    }
    Ok(())
}

/// The key cap of `account`.
pub(super) fn key_cap(conn: &rusqlite::Connection, account: &str) -> Result<u32, StoreError> {
    use rusqlite::OptionalExtension;
    let cap: Option<i64> =
        conn.query_row("SELECT key_cap FROM accounts WHERE id = ?1", [account], |r| r.get(0)).optional()?;
    Ok(cap.map_or(DEFAULT_KEY_CAP, |c| c.clamp(0, i64::from(u32::MAX)) as u32))
}

/// Inserts one new key at store `version`; its project, if it names one, must be its account's.
pub(super) fn insert_key(tx: &rusqlite::Transaction<'_>, key: &HashedKey, version: i64) -> Result<KeyInfo, StoreError> {
    if let Some(project) = &key.key.project {
        project_cap(tx, &key.key.account, project)?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO service_keys (id, key_prefix, kind, name, hash, created_at, expires_at, version, account_id,
                                   requests_per_minute, requests_per_day, concurrent_requests, tokens_per_month,
                                   scopes, providers, models, project, policy, description, metadata, public_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?;
    let (identity, new) = (&key.identity, &key.key);
    let l = new.limits;
    stmt.execute(params![
        identity.id.as_str(),
        identity.key_prefix,
        new.kind.as_str(),
        new.name,
        identity.hash.as_bytes().as_slice(),
        new.created_at,
        new.expires_at,
        version,
        new.account,
        l.requests_per_minute,
        l.requests_per_day,
        l.concurrent_requests,
        l.tokens_per_month.map(sql_int),
        new.access.scopes.to_stored(),
        list_json(&new.access.providers),
        list_json(&new.access.models),
        new.project,
        new.policy.to_stored(),
        new.description,
        new.metadata.as_ref().map(|m| m.to_string()),
        identity.public_key,
    ])?;
    Ok(key.info())
}

/// Whose keys a count is of.
pub(super) enum Owner<'a> {
    Account(&'a str),
    Project(&'a str),
}

/// Keys of an account or a project neither revoked nor expired at `now`; a key in its rotation grace
/// period counts, and so does a disabled one.
pub(super) fn count_active_in(conn: &Connection, owner: Owner<'_>, now: i64) -> Result<usize, StoreError> {
    let (column, id) = match owner {
        Owner::Account(id) => ("account_id", id),
        Owner::Project(id) => ("project", id),
    };
    let n: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM service_keys WHERE {column} = ?1
           AND (revoked_at IS NULL OR revoked_at > ?2) AND (expires_at IS NULL OR expires_at > ?2)"
        ))?
        .query_row(params![id, now], |r| r.get(0))?;
    Ok(n.max(0) as usize)
}

/// A project of `account` and its key cap, read inside a key write's transaction.
pub(super) fn project_cap(conn: &Connection, account: &str, project: &str) -> Result<u32, StoreError> {
    let cap: Option<i64> = conn
        .query_row("SELECT key_cap FROM projects WHERE id = ?1 AND account_id = ?2", [project, account], |r| r.get(0))
        .optional()?;
    cap.map(|c| c.clamp(0, i64::from(u32::MAX)) as u32).ok_or(StoreError::UnknownProject)
}

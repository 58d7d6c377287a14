//! Key writes an account's key cap bounds: creating a key and rotating one. Each counts the account's
//! active keys and writes in one `BEGIN IMMEDIATE` transaction, so parallel requests cannot all pass the
//! count before any of them inserts. A key in its rotation grace period is still active and counts.

use rusqlite::params;

use super::{SqliteStore, bump_version, count_active, infos_in, insert_key};
use crate::keys::{KeyHasher, KeyId, SecretKey};
use crate::store::{KeyInfo, NewKey, StoreError};

/// The cap of an account the store does not know (only reachable from the CLI's default account).
const DEFAULT_KEY_CAP: u32 = 10;

/// The new key of a rotation, and when the old one stops working.
pub struct Rotated {
    pub secret: SecretKey,
    pub info: KeyInfo,
    pub old_revoked_at: i64,
}

impl SqliteStore {
    /// Creates `new` if its account has fewer active keys at `now` than its cap; else `KeyCapReached`.
    pub fn create_key_within_cap(
        &self,
        prefix: &str,
        hasher: &KeyHasher,
        new: &NewKey,
        now: i64,
    ) -> Result<(SecretKey, KeyInfo), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let active = count_active(&tx, &new.account, now)?;
        if active >= key_cap(&tx, &new.account)? as usize {
            return Err(StoreError::KeyCapReached(active));
        }
        let version = bump_version(&tx)?;
        let created = insert_key(&tx, prefix, hasher, new, version)?;
        tx.commit()?;
        Ok(created)
    }

    /// Replaces key `id` with a new one of the same settings; the old one is revoked `grace_seconds`
    /// after `now`. A key has at most one pending replacement: rotating a key already in its grace period
    /// is `RotationPending`. With a grace period both keys are active for a while, so the rotation must
    /// fit under the account's cap when `enforce_cap` (the operator's CLI may go over it); without one
    /// it is a swap and always fits.
    pub fn rotate_key(
        &self,
        prefix: &str,
        hasher: &KeyHasher,
        id: KeyId,
        now: i64,
        grace_seconds: u64,
        enforce_cap: bool,
    ) -> Result<Rotated, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let old = infos_in(&tx, "WHERE id = ?1", [id.as_str()])?.into_iter().next().ok_or(StoreError::KeyNotActive)?;
        if old.status_at(now) != "active" {
            return Err(StoreError::KeyNotActive);
        }
        if let Some(at) = old.revoked_at {
            return Err(StoreError::RotationPending(at));
        }
        if grace_seconds > 0 && enforce_cap {
            let active = count_active(&tx, &old.account, now)?;
            if active >= key_cap(&tx, &old.account)? as usize {
                return Err(StoreError::KeyCapReached(active));
            }
        }
        let version = bump_version(&tx)?;
        let (secret, info) = insert_key(&tx, prefix, hasher, &NewKey::replacing(&old, now), version)?;
        let old_revoked_at = now.saturating_add(i64::try_from(grace_seconds).unwrap_or(i64::MAX));
        tx.execute(
            "UPDATE service_keys SET revoked_at = ?1, version = ?2 WHERE id = ?3",
            params![old_revoked_at, version, id.as_str()],
        )?;
        tx.commit()?;
        Ok(Rotated { secret, info, old_revoked_at })
    }
}

fn key_cap(conn: &rusqlite::Connection, account: &str) -> Result<u32, StoreError> {
    use rusqlite::OptionalExtension;
    let cap: Option<i64> =
        conn.query_row("SELECT key_cap FROM accounts WHERE id = ?1", [account], |r| r.get(0)).optional()?;
    Ok(cap.map_or(DEFAULT_KEY_CAP, |c| c.clamp(0, i64::from(u32::MAX)) as u32))
}

//! Reading rows of the PostgreSQL store into the store's rows, and the column lists they read.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Row;

use crate::auth::access::{KeyAccess, Scopes};
use crate::auth::keys::{KeyId, KeyKind, KeyLimits, KeyRecord};
use crate::auth::policy::KeyPolicy;
use crate::auth::signing::Signing;
use crate::store::{AccountInfo, KeyInfo, ProjectInfo, StoreError};

/// The columns of a [`KeyInfo`], as [`info_from`] reads them.
pub(super) const INFO_SELECT: &str =
    "SELECT id, key_prefix, kind, name, created_at, expires_at, revoked_at, account_id,
        requests_per_minute, requests_per_day, concurrent_requests, tokens_per_month,
        scopes, providers, models, project, last_used_at, policy, description, metadata, public_key
    FROM service_keys";

/// The columns of a [`KeyRecord`], as [`record_from`] reads them.
pub(super) const RECORD_SELECT: &str = "SELECT id, kind, hash, created_at, expires_at, revoked_at, account_id,
        requests_per_minute, requests_per_day, concurrent_requests, tokens_per_month, scopes, providers, models,
        policy, signing_secret, version
    FROM service_keys";

/// The columns of an [`AccountInfo`], as [`account_from`] reads them.
pub(super) const ACCOUNT_SELECT: &str =
    "SELECT id, email, plan, key_cap, created_at, token_epoch, disabled FROM accounts";

/// The columns of a [`ProjectInfo`] with its active keys at `$1`, as [`project_from`] reads them.
pub(super) const PROJECT_SELECT: &str = "SELECT p.id, p.account_id, p.name, p.key_cap, p.created_at,
        (SELECT COUNT(*) FROM service_keys k WHERE k.project = p.id
           AND (k.revoked_at IS NULL OR k.revoked_at > $1) AND (k.expires_at IS NULL OR k.expires_at > $1))
    FROM projects p";

pub(super) fn info_from(row: &Row) -> Result<KeyInfo, StoreError> {
    Ok(KeyInfo {
        id: parse_id(row.try_get(0)?)?,
        key_prefix: row.try_get(1)?,
        kind: parse_kind(row.try_get(2)?)?,
        name: row.try_get(3)?,
        created_at: row.try_get(4)?,
        expires_at: row.try_get(5)?,
        revoked_at: row.try_get(6)?,
        account: row.try_get(7)?,
        limits: limits_from(row, 8)?,
        access: access_from(row, 12)?,
        project: row.try_get(15)?,
        last_used_at: row.try_get(16)?,
        policy: policy_from(row, 17)?,
        description: row.try_get(18)?,
        metadata: row
            .try_get::<_, Option<&str>>(19)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?,
        public_key: row.try_get(20)?,
    })
}

/// Shares one `Arc` per account among the records read in one go (most keys share a few accounts).
#[derive(Default)]
pub(super) struct Accounts(HashMap<String, Arc<str>>);

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

pub(super) fn record_from(row: &Row, accounts: &mut Accounts) -> Result<KeyRecord, StoreError> {
    let id: &str = row.try_get(0)?;
    let hash: [u8; 32] =
        row.try_get::<_, &[u8]>(2)?.try_into().map_err(|_| StoreError::Corrupt(format!("hash of key {id}")))?;
    Ok(KeyRecord {
        id: parse_id(id)?,
        kind: parse_kind(row.try_get(1)?)?,
        hash: blake3::Hash::from_bytes(hash),
        created_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
        account: accounts.intern(row.try_get(6)?),
        limits: limits_from(row, 7)?,
        access: access_from(row, 11)?,
        policy: policy_from(row, 14)?,
        signing: match row.try_get::<_, Option<&[u8]>>(15)? {
            Some(sealed) => Signing::Sealed(Arc::from(sealed)),
            None => Signing::None,
        },
        version: row.try_get(16)?,
    })
}

pub(super) fn account_from(r: &Row) -> Result<AccountInfo, StoreError> {
    Ok(AccountInfo {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        plan: r.try_get(2)?,
        key_cap: cap(r.try_get(3)?),
        created_at: r.try_get(4)?,
        token_epoch: r.try_get::<_, i64>(5)?.max(0) as u64,
        disabled: r.try_get(6)?,
    })
}

pub(super) fn project_from(r: &Row) -> Result<ProjectInfo, StoreError> {
    Ok(ProjectInfo {
        id: r.try_get(0)?,
        account: r.try_get(1)?,
        name: r.try_get(2)?,
        key_cap: cap(r.try_get(3)?),
        created_at: r.try_get(4)?,
        active_keys: r.try_get::<_, i64>(5)?.max(0) as usize,
    })
}

/// A stored cap as a `u32`, clamped.
pub(super) fn cap(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

fn policy_from(row: &Row, at: usize) -> Result<KeyPolicy, StoreError> {
    KeyPolicy::from_stored(row.try_get(at)?).map_err(|e| StoreError::Corrupt(format!("key policy: {e}")))
}

/// The scopes, providers and models columns starting at `first`.
fn access_from(row: &Row, first: usize) -> Result<KeyAccess, StoreError> {
    let list = |i: usize| -> Result<Option<Vec<String>>, StoreError> {
        Ok(row.try_get::<_, Option<&str>>(i)?.and_then(|json| serde_json::from_str(json).ok()))
    };
    Ok(KeyAccess {
        scopes: Scopes::from_stored(row.try_get(first)?),
        providers: list(first + 1)?,
        models: list(first + 2)?,
    })
}

/// The four limit columns starting at `first`.
fn limits_from(row: &Row, first: usize) -> Result<KeyLimits, StoreError> {
    let small = |i: usize| -> Result<Option<u32>, StoreError> { Ok(row.try_get::<_, Option<i64>>(i)?.map(cap)) };
    Ok(KeyLimits {
        requests_per_minute: small(first)?,
        requests_per_day: small(first + 1)?,
        concurrent_requests: small(first + 2)?,
        tokens_per_month: row.try_get::<_, Option<i64>>(first + 3)?.map(|t| t.max(0) as u64),
    })
}

pub(super) fn list_json(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref().map(|l| serde_json::Value::from(l.clone()).to_string())
}

pub(super) fn parse_id(id: &str) -> Result<KeyId, StoreError> {
    KeyId::parse(id).ok_or_else(|| StoreError::Corrupt(format!("key id {id:?}")))
}

fn parse_kind(kind: &str) -> Result<KeyKind, StoreError> {
    KeyKind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("key kind {kind:?}")))
}

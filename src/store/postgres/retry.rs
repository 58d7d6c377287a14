//! Writes under a cut connection: a write that failed because its connection was lost (a terminated
//! backend, a reset, a timeout) may have failed before its `COMMIT` reached the server or after, so it
//! may or may not have landed. The writes below are run once more on a fresh pooled connection, and each
//! second run first looks for what a first run that landed left (the keys by id and hash, the revocation
//! at its instant, the account or project by id) and answers as that run would have; writes that set
//! values are simply run again, and a usage batch is skipped by its id. Reads are run again too. The
//! writes that are neither (rotating a key, ending an account's tokens, a trial key's issue or claim,
//! deleting a project) fail as [`StoreError::Unavailable`], which the management API answers with 503, as
//! does a second failure. Nothing acknowledged is lost: every write commits before it returns.

use std::future::Future;

use super::PgStore;
use crate::auth::keys::KeyId;
use crate::store::{AccountInfo, HashedKey, KeyInfo, NewAccount, NewProject, ProjectInfo, StoreError};

impl PgStore {
    /// Runs `write(false)`; if it lost its connection, `write(true)` once on a fresh connection, whose
    /// run must find and report the first run's effect if it landed.
    pub(super) async fn retried<T, Fut>(&self, what: &str, write: impl Fn(bool) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match write(false).await {
            Err(StoreError::Unavailable(first)) => {
                tracing::warn!(error = %first, call = what, "store call lost its connection; trying once more");
                // A cut seldom ends one connection alone (a restart, a failover, a network fault): the idle
                // ones are dropped too, so the second run opens a fresh connection rather than finding a
                // dead one whose end this process has not read yet.
                self.pool.retain(|_, _| false);
                write(true).await.map_err(|e| match e {
                    StoreError::Unavailable(second) => StoreError::Unavailable(format!("{second} (tried twice)")),
                    other => other,
                })
            }
            other => other,
        }
    }

    /// On a second run: the keys as written if a first run wrote them (each id there with its own hash),
    /// `None` if it wrote none of them; a key id held by another key is a backend failure.
    pub(super) async fn keys_landed(&self, keys: &[HashedKey]) -> Result<Option<Vec<KeyInfo>>, StoreError> {
        let ids: Vec<&str> = keys.iter().map(|k| k.identity.id.as_str()).collect();
        let client = self.client().await?;
        let rows = client.query("SELECT id, hash FROM service_keys WHERE id = ANY($1)", &[&ids]).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let ours = |row: &tokio_postgres::Row| -> Result<bool, StoreError> {
            let (id, hash): (&str, &[u8]) = (row.try_get(0)?, row.try_get(1)?);
            Ok(keys.iter().any(|k| k.identity.id.as_str() == id && k.identity.hash.as_bytes()[..] == *hash))
        };
        let mut all_ours = rows.len() == keys.len();
        for row in &rows {
            all_ours &= ours(row)?;
        }
        if !all_ours {
            return Err(StoreError::Backend("a new key's id is held by another key".into()));
        }
        Ok(Some(keys.iter().map(HashedKey::info).collect()))
    }

    /// On a second run of a revocation that found nothing to revoke: whether the key is revoked at
    /// exactly `at`, as a first run that landed left it.
    pub(super) async fn revoked_at(&self, id: KeyId, at: i64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT revoked_at FROM service_keys WHERE id = $1", &[&id.as_str()]).await?;
        Ok(row.map(|r| r.try_get::<_, Option<i64>>(0)).transpose()?.flatten() == Some(at))
    }

    /// On a second run of an account creation refused as a conflict: the account, if a first run that
    /// landed wrote it (the same id, email and password hash).
    pub(super) async fn account_landed(&self, new: &NewAccount) -> Result<Option<AccountInfo>, StoreError> {
        let client = self.client().await?;
        let found = client
            .query_opt(
                "SELECT 1 FROM accounts WHERE id = $1 AND email = $2 AND password_hash = $3",
                &[&new.id, &new.email, &new.password_hash],
            )
            .await?;
        drop(client);
        if found.is_none() {
            return Ok(None);
        }
        Ok(self.pg_accounts("WHERE id = $1", &[&new.id]).await?.into_iter().next())
    }

    /// On a second run of a project creation refused as a conflict: the project, if a first run that
    /// landed wrote it (the same id, account and name).
    pub(super) async fn project_landed(&self, new: &NewProject) -> Result<Option<ProjectInfo>, StoreError> {
        let client = self.client().await?;
        let found = client
            .query_opt(
                "SELECT 1 FROM projects WHERE id = $1 AND account_id = $2 AND name = $3",
                &[&new.id, &new.account, &new.name],
            )
            .await?;
        Ok(found.map(|_| ProjectInfo {
            id: new.id.clone(),
            account: new.account.clone(),
            name: new.name.clone(),
            key_cap: new.key_cap,
            created_at: new.created_at,
            active_keys: 0,
        }))
    }
}

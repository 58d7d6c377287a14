//! [`Store`] for PostgreSQL: each call takes a pooled connection for its statements (`keys.rs`,
//! `accounts.rs`, `usage.rs`, `trial.rs`); the writes that can be, run once more when their connection
//! was lost (`retry.rs`).

use std::time::Duration;

use super::PgStore;
use crate::auth::keys::{KeyId, KeyRecord};
use crate::store::{
    AccountInfo, Claim, EndUserTotal, EndUserUsageRow, HashedKey, KeyChanges, KeyIdentity, KeyInfo, KeySink, KeyUpdate,
    NewAccount, NewProject, ProjectInfo, Rotated, Store, StoreError, TrialIssue, UsageBatch, UsageRow, UsageTotal,
};

#[async_trait::async_trait]
impl Store for PgStore {
    async fn create_keys(&self, keys: Vec<HashedKey>) -> Result<Vec<KeyInfo>, StoreError> {
        let keys = &keys;
        self.retried("create keys", |retry| async move {
            if retry {
                if let Some(landed) = self.keys_landed(keys).await? {
                    return Ok(landed);
                }
            }
            self.pg_create_keys(keys).await
        })
        .await
    }

    async fn create_key_within_cap(&self, key: HashedKey, now: i64) -> Result<KeyInfo, StoreError> {
        let key = &key;
        self.retried("create a key", |retry| async move {
            if retry {
                if let Some(mut landed) = self.keys_landed(std::slice::from_ref(key)).await? {
                    return landed.pop().ok_or_else(|| StoreError::Backend("no key written".into()));
                }
            }
            self.pg_create_key_within_cap(key, now).await
        })
        .await
    }

    async fn rotate_key(
        &self,
        id: KeyId,
        replacement: KeyIdentity,
        now: i64,
        grace_seconds: u64,
        enforce_cap: bool,
    ) -> Result<Rotated, StoreError> {
        self.pg_rotate_key(id, replacement, now, grace_seconds, enforce_cap).await
    }

    async fn revoke_key(&self, id: KeyId, at: i64) -> Result<bool, StoreError> {
        self.retried("revoke a key", |retry| async move {
            let revoked = self.pg_revoke_key(id, at).await?;
            Ok(revoked || (retry && self.revoked_at(id, at).await?))
        })
        .await
    }

    async fn update_key(&self, id: KeyId, update: KeyUpdate) -> Result<bool, StoreError> {
        self.retried("update a key", |_| self.pg_update_key(id, update.clone())).await
    }

    async fn touch_keys(&self, used: Vec<(KeyId, i64)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.retried("record last use", |_| self.pg_touch_keys(used.clone())).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.retried("list keys", |_| self.pg_infos("ORDER BY created_at, id", &[])).await
    }

    async fn key_info(&self, id: KeyId) -> Result<Option<KeyInfo>, StoreError> {
        let found = self
            .retried("read a key", |_| async move { self.pg_infos("WHERE id = $1", &[&id.as_str()]).await })
            .await?;
        Ok(found.into_iter().next())
    }

    async fn key_record(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.retried("read a key", |_| self.pg_key_record(id)).await
    }

    async fn keys_page(
        &self,
        account: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<KeyInfo>>, StoreError> {
        self.retried("list keys", |_| self.pg_keys_page(account.clone(), after.clone(), limit)).await
    }

    async fn create_account(&self, account: NewAccount) -> Result<AccountInfo, StoreError> {
        let account = &account;
        self.retried("create an account", |retry| async move {
            match self.pg_create_account(account.clone()).await {
                Err(StoreError::Conflict(what)) if retry => {
                    self.account_landed(account).await?.ok_or(StoreError::Conflict(what))
                }
                other => other,
            }
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        self.retried("list accounts", |_| self.pg_accounts("ORDER BY created_at, id", &[])).await
    }

    async fn account(&self, id: String) -> Result<Option<AccountInfo>, StoreError> {
        let id = &id;
        Ok(self
            .retried("read an account", |_| async move { self.pg_accounts("WHERE id = $1", &[id]).await })
            .await?
            .into_iter()
            .next())
    }

    async fn accounts_page(&self, after: Option<String>, limit: usize) -> Result<Option<Vec<AccountInfo>>, StoreError> {
        self.retried("list accounts", |_| self.pg_accounts_page(after.clone(), limit)).await
    }

    async fn account_for_login(&self, email: String) -> Result<Option<(AccountInfo, String)>, StoreError> {
        self.retried("read an account", |_| self.pg_account_for_login(email.clone())).await
    }

    async fn password_hash(&self, id: String) -> Result<Option<String>, StoreError> {
        self.retried("read an account", |_| self.pg_password_hash(id.clone())).await
    }

    async fn update_account(&self, id: String, plan: String, key_cap: u32) -> Result<bool, StoreError> {
        self.retried("update an account", |_| self.pg_update_account(id.clone(), plan.clone(), key_cap)).await
    }

    async fn end_tokens(&self, id: String) -> Result<Option<u64>, StoreError> {
        self.pg_account_write(id, "", None).await
    }

    async fn set_password(&self, id: String, password_hash: String) -> Result<Option<u64>, StoreError> {
        self.pg_account_write(id, ", password_hash = $2", Some(&password_hash)).await
    }

    async fn set_disabled(&self, id: String, disabled: bool) -> Result<Option<u64>, StoreError> {
        self.pg_account_write(id, ", disabled = $2", Some(&disabled)).await
    }

    async fn create_project(&self, project: NewProject) -> Result<ProjectInfo, StoreError> {
        let project = &project;
        self.retried("create a project", |retry| async move {
            match self.pg_create_project(project.clone()).await {
                Err(StoreError::Conflict(what)) if retry => {
                    self.project_landed(project).await?.ok_or(StoreError::Conflict(what))
                }
                other => other,
            }
        })
        .await
    }

    async fn projects(&self, account: String, now: i64) -> Result<Vec<ProjectInfo>, StoreError> {
        let account = &account;
        let tail = "WHERE p.account_id = $2 ORDER BY p.created_at, p.id";
        self.retried("list projects", |_| async move { self.pg_projects(tail, &[&now, account]).await }).await
    }

    async fn project(&self, id: String, now: i64) -> Result<Option<ProjectInfo>, StoreError> {
        let id = &id;
        Ok(self
            .retried("read a project", |_| async move { self.pg_projects("WHERE p.id = $2", &[&now, id]).await })
            .await?
            .into_iter()
            .next())
    }

    async fn update_project(&self, id: String, name: String, key_cap: u32) -> Result<bool, StoreError> {
        self.retried("update a project", |_| self.pg_update_project(id.clone(), name.clone(), key_cap)).await
    }

    async fn delete_project(&self, id: String, now: i64) -> Result<bool, StoreError> {
        self.pg_delete_project(id, now).await
    }

    async fn apply_usage(&self, batch: UsageBatch) -> Result<bool, StoreError> {
        // A second run finds the batch's id if the first landed, and skips it.
        self.retried("write usage", |_| self.pg_apply_usage(&batch)).await
    }

    async fn usage_totals(&self, today: i64, month_start: i64) -> Result<Vec<UsageTotal>, StoreError> {
        self.retried("read usage", |_| self.pg_usage_totals(today, month_start)).await
    }

    async fn usage_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.retried("read usage", |_| self.pg_usage_report(account.clone(), key, from, to)).await
    }

    async fn end_user_totals(&self, today: i64, month_start: i64) -> Result<Vec<EndUserTotal>, StoreError> {
        self.retried("read usage", |_| self.pg_end_user_totals(today, month_start)).await
    }

    async fn end_user_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<EndUserUsageRow>, StoreError> {
        self.retried("read usage", |_| self.pg_end_user_report(account.clone(), key, from, to)).await
    }

    async fn set_signing_secret(&self, id: KeyId, sealed: Vec<u8>, now: i64) -> Result<bool, StoreError> {
        self.retried("replace a signing secret", |_| self.pg_set_signing_secret(id, sealed.clone(), now)).await
    }

    async fn trial_devices(&self) -> Result<Vec<(KeyId, [u8; 32])>, StoreError> {
        self.retried("read trial keys", |_| self.pg_trial_devices()).await
    }

    async fn trial_key_of_device(&self, device: [u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        self.retried("read a trial key", |_| self.pg_trial_key_of_device(device)).await
    }

    async fn create_trial_key(&self, device: [u8; 32], key: HashedKey) -> Result<TrialIssue, StoreError> {
        self.pg_create_trial_key(device, key).await
    }

    async fn replace_trial_key(&self, device: [u8; 32], key: HashedKey, now: i64) -> Result<TrialIssue, StoreError> {
        self.pg_replace_trial_key(device, key, now).await
    }

    async fn claim_trial_key(&self, id: KeyId, account: String, now: i64) -> Result<Claim, StoreError> {
        self.pg_claim_trial_key(id, account, now).await
    }

    async fn key_changes(&self, since: i64, each: KeySink) -> Result<KeyChanges, StoreError> {
        self.pg_key_changes(since, each).await
    }

    /// Returns as soon as a write of any instance announces a version after `since` (`NOTIFY`), at the
    /// latest after `max_wait` (the poll, for a notification lost with the listening connection).
    async fn wait_for_changes(&self, since: i64, max_wait: Duration) {
        self.listener.wait(since, max_wait).await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}

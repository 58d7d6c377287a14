//! [`Store`] for PostgreSQL: each call takes a pooled connection for its statements (`keys.rs`,
//! `accounts.rs`, `usage.rs`, `trial.rs`).

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
        self.pg_create_keys(keys).await
    }

    async fn create_key_within_cap(&self, key: HashedKey, now: i64) -> Result<KeyInfo, StoreError> {
        self.pg_create_key_within_cap(key, now).await
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
        self.pg_revoke_key(id, at).await
    }

    async fn update_key(&self, id: KeyId, update: KeyUpdate) -> Result<bool, StoreError> {
        self.pg_update_key(id, update).await
    }

    async fn touch_keys(&self, used: Vec<(KeyId, i64)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.pg_touch_keys(used).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.pg_infos("ORDER BY created_at, id", &[]).await
    }

    async fn key_info(&self, id: KeyId) -> Result<Option<KeyInfo>, StoreError> {
        Ok(self.pg_infos("WHERE id = $1", &[&id.as_str()]).await?.into_iter().next())
    }

    async fn key_record(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.pg_key_record(id).await
    }

    async fn keys_page(
        &self,
        account: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<KeyInfo>>, StoreError> {
        self.pg_keys_page(account, after, limit).await
    }

    async fn create_account(&self, account: NewAccount) -> Result<AccountInfo, StoreError> {
        self.pg_create_account(account).await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        self.pg_accounts("ORDER BY created_at, id", &[]).await
    }

    async fn account(&self, id: String) -> Result<Option<AccountInfo>, StoreError> {
        Ok(self.pg_accounts("WHERE id = $1", &[&id]).await?.into_iter().next())
    }

    async fn accounts_page(&self, after: Option<String>, limit: usize) -> Result<Option<Vec<AccountInfo>>, StoreError> {
        self.pg_accounts_page(after, limit).await
    }

    async fn account_for_login(&self, email: String) -> Result<Option<(AccountInfo, String)>, StoreError> {
        self.pg_account_for_login(email).await
    }

    async fn password_hash(&self, id: String) -> Result<Option<String>, StoreError> {
        self.pg_password_hash(id).await
    }

    async fn update_account(&self, id: String, plan: String, key_cap: u32) -> Result<bool, StoreError> {
        self.pg_update_account(id, plan, key_cap).await
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
        self.pg_create_project(project).await
    }

    async fn projects(&self, account: String, now: i64) -> Result<Vec<ProjectInfo>, StoreError> {
        self.pg_projects("WHERE p.account_id = $2 ORDER BY p.created_at, p.id", &[&now, &account]).await
    }

    async fn project(&self, id: String, now: i64) -> Result<Option<ProjectInfo>, StoreError> {
        Ok(self.pg_projects("WHERE p.id = $2", &[&now, &id]).await?.into_iter().next())
    }

    async fn update_project(&self, id: String, name: String, key_cap: u32) -> Result<bool, StoreError> {
        self.pg_update_project(id, name, key_cap).await
    }

    async fn delete_project(&self, id: String, now: i64) -> Result<bool, StoreError> {
        self.pg_delete_project(id, now).await
    }

    async fn apply_usage(&self, batch: UsageBatch) -> Result<bool, StoreError> {
        self.pg_apply_usage(&batch).await
    }

    async fn usage_totals(&self, today: i64, month_start: i64) -> Result<Vec<UsageTotal>, StoreError> {
        self.pg_usage_totals(today, month_start).await
    }

    async fn usage_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.pg_usage_report(account, key, from, to).await
    }

    async fn end_user_totals(&self, today: i64, month_start: i64) -> Result<Vec<EndUserTotal>, StoreError> {
        self.pg_end_user_totals(today, month_start).await
    }

    async fn end_user_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<EndUserUsageRow>, StoreError> {
        self.pg_end_user_report(account, key, from, to).await
    }

    async fn set_signing_secret(&self, id: KeyId, sealed: Vec<u8>, now: i64) -> Result<bool, StoreError> {
        self.pg_set_signing_secret(id, sealed, now).await
    }

    async fn trial_devices(&self) -> Result<Vec<(KeyId, [u8; 32])>, StoreError> {
        self.pg_trial_devices().await
    }

    async fn trial_key_of_device(&self, device: [u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        self.pg_trial_key_of_device(device).await
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

//! [`Store`] for the SQLite file: each call runs its blocking SQLite work on tokio's blocking pool, so
//! no async caller waits on a disk write or the connection lock.

use std::time::Duration;

use super::SqliteStore;
use crate::auth::keys::{KeyId, KeyRecord};
use crate::store::{
    AccountInfo, Claim, HashedKey, KeyChanges, KeyIdentity, KeyInfo, KeySink, KeyUpdate, NewAccount, NewProject,
    ProjectInfo, Rotated, Store, StoreError, TrialIssue, UsageBatch, UsageRow, UsageTotal,
};
use crate::store::{EndUserTotal, EndUserUsageRow};

impl SqliteStore {
    /// Runs `f` on the blocking pool with a handle to this store.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_keys(&self, keys: Vec<HashedKey>) -> Result<Vec<KeyInfo>, StoreError> {
        self.blocking(move |s| s.create_keys(&keys)).await
    }

    async fn create_key_within_cap(&self, key: HashedKey, now: i64) -> Result<KeyInfo, StoreError> {
        self.blocking(move |s| s.create_key_within_cap(&key, now)).await
    }

    async fn rotate_key(
        &self,
        id: KeyId,
        replacement: KeyIdentity,
        now: i64,
        grace_seconds: u64,
        enforce_cap: bool,
    ) -> Result<Rotated, StoreError> {
        self.blocking(move |s| s.rotate_key(id, replacement, now, grace_seconds, enforce_cap)).await
    }

    async fn revoke_key(&self, id: KeyId, at: i64) -> Result<bool, StoreError> {
        self.blocking(move |s| s.revoke_key(id, at)).await
    }

    async fn update_key(&self, id: KeyId, update: KeyUpdate) -> Result<bool, StoreError> {
        self.blocking(move |s| s.update_key(id, &update)).await
    }

    async fn touch_keys(&self, used: Vec<(KeyId, i64)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.blocking(move |s| s.touch_keys(&used)).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.blocking(|s| s.list_keys()).await
    }

    async fn key_info(&self, id: KeyId) -> Result<Option<KeyInfo>, StoreError> {
        self.blocking(move |s| s.key_info(id)).await
    }

    async fn key_record(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.blocking(move |s| s.key_record(id)).await
    }

    async fn keys_page(
        &self,
        account: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<KeyInfo>>, StoreError> {
        self.blocking(move |s| s.keys_page(&account, after.as_deref(), limit)).await
    }

    async fn create_account(&self, account: NewAccount) -> Result<AccountInfo, StoreError> {
        self.blocking(move |s| s.create_account(&account)).await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        self.blocking(|s| s.list_accounts()).await
    }

    async fn account(&self, id: String) -> Result<Option<AccountInfo>, StoreError> {
        self.blocking(move |s| s.account(&id)).await
    }

    async fn accounts_page(&self, after: Option<String>, limit: usize) -> Result<Option<Vec<AccountInfo>>, StoreError> {
        self.blocking(move |s| s.accounts_page(after.as_deref(), limit)).await
    }

    async fn account_for_login(&self, email: String) -> Result<Option<(AccountInfo, String)>, StoreError> {
        self.blocking(move |s| s.account_for_login(&email)).await
    }

    async fn password_hash(&self, id: String) -> Result<Option<String>, StoreError> {
        self.blocking(move |s| s.password_hash(&id)).await
    }

    async fn update_account(&self, id: String, plan: String, key_cap: u32) -> Result<bool, StoreError> {
        self.blocking(move |s| s.update_account(&id, &plan, key_cap)).await
    }

    async fn end_tokens(&self, id: String) -> Result<Option<u64>, StoreError> {
        self.blocking(move |s| s.end_tokens(&id)).await
    }

    async fn set_password(&self, id: String, password_hash: String) -> Result<Option<u64>, StoreError> {
        self.blocking(move |s| s.set_password(&id, &password_hash)).await
    }

    async fn set_disabled(&self, id: String, disabled: bool) -> Result<Option<u64>, StoreError> {
        self.blocking(move |s| s.set_disabled(&id, disabled)).await
    }

    async fn create_project(&self, project: NewProject) -> Result<ProjectInfo, StoreError> {
        self.blocking(move |s| s.create_project(&project)).await
    }

    async fn projects(&self, account: String, now: i64) -> Result<Vec<ProjectInfo>, StoreError> {
        self.blocking(move |s| s.projects(&account, now)).await
    }

    async fn project(&self, id: String, now: i64) -> Result<Option<ProjectInfo>, StoreError> {
        self.blocking(move |s| s.project(&id, now)).await
    }

    async fn update_project(&self, id: String, name: String, key_cap: u32) -> Result<bool, StoreError> {
        self.blocking(move |s| s.update_project(&id, &name, key_cap)).await
    }

    async fn delete_project(&self, id: String, now: i64) -> Result<bool, StoreError> {
        self.blocking(move |s| s.delete_project(&id, now)).await
    }

    async fn apply_usage(&self, batch: UsageBatch) -> Result<bool, StoreError> {
        self.blocking(move |s| s.apply_usage(&batch)).await
    }

    async fn usage_totals(&self, today: i64, month_start: i64) -> Result<Vec<UsageTotal>, StoreError> {
        self.blocking(move |s| s.usage_totals(today, month_start)).await
    }

    async fn usage_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.blocking(move |s| s.usage_rows(account.as_deref(), key, from, to)).await
    }

    async fn end_user_totals(&self, today: i64, month_start: i64) -> Result<Vec<EndUserTotal>, StoreError> {
        self.blocking(move |s| s.end_user_totals(today, month_start)).await
    }

    async fn end_user_report(
        &self,
        account: Option<String>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<EndUserUsageRow>, StoreError> {
        self.blocking(move |s| s.end_user_rows(account.as_deref(), key, from, to)).await
    }

    async fn set_signing_secret(&self, id: KeyId, sealed: Vec<u8>, now: i64) -> Result<bool, StoreError> {
        self.blocking(move |s| s.set_signing_secret(id, &sealed, now)).await
    }

    async fn trial_devices(&self) -> Result<Vec<(KeyId, [u8; 32])>, StoreError> {
        self.blocking(|s| s.trial_devices()).await
    }

    async fn trial_key_of_device(&self, device: [u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        self.blocking(move |s| s.trial_key_of_device(&device)).await
    }

    async fn create_trial_key(&self, device: [u8; 32], key: HashedKey) -> Result<TrialIssue, StoreError> {
        self.blocking(move |s| s.create_trial_key(&device, &key)).await
    }

    async fn replace_trial_key(&self, device: [u8; 32], key: HashedKey, now: i64) -> Result<TrialIssue, StoreError> {
        self.blocking(move |s| s.replace_trial_key(&device, &key, now)).await
    }

    async fn claim_trial_key(&self, id: KeyId, account: String, now: i64) -> Result<Claim, StoreError> {
        self.blocking(move |s| s.claim_trial_key(id, &account, now)).await
    }

    async fn key_changes(&self, since: i64, each: KeySink) -> Result<KeyChanges, StoreError> {
        self.blocking(move |s| s.key_changes(since, each)).await
    }

    /// SQLite cannot tell this process of another's writes, so changes are found by polling: wait the
    /// whole interval, then look.
    async fn wait_for_changes(&self, _since: i64, max_wait: Duration) {
        tokio::time::sleep(max_wait).await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|s| s.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::admin::service::mint;
    use crate::auth::keys::{KeyHasher, KeyKind};
    use crate::store::NewKey;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_creations_stop_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let (cap, tries) = (3, 16);
        let new = NewAccount {
            id: "acct_cap".into(),
            email: "cap@example.com".into(),
            password_hash: "-".into(),
            plan: "default".into(),
            key_cap: cap,
            created_at: 1,
        };
        let account = store.create_account(new).await.unwrap();
        let hasher = KeyHasher::new(None);
        let creations: Vec<_> = (0..tries)
            .map(|i| {
                let (store, account) = (Arc::clone(&store), account.id.clone());
                let (_, identity) = mint("tg", &hasher, KeyKind::Live).unwrap();
                let key = NewKey { account, ..NewKey::live(&format!("k{i}"), 2) };
                tokio::spawn(async move { store.create_key_within_cap(HashedKey { identity, key }, 2).await })
            })
            .collect();
        let mut created = 0;
        for creation in creations {
            match creation.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::KeyCapReached(active)) => assert_eq!(active, cap as usize),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(created, cap as usize);
        let keys = store.keys_page(account.id, None, 100).await.unwrap().unwrap();
        assert_eq!(keys.iter().filter(|k| k.status_at(3) == "active").count(), cap as usize);
    }

    #[tokio::test]
    async fn a_rotation_swaps_in_the_callers_key() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let hasher = KeyHasher::new(None);
        let (_, identity) = mint("tg", &hasher, KeyKind::Live).unwrap();
        let old = store.create_keys(vec![HashedKey { identity, key: NewKey::live("r", 1) }]).await.unwrap().remove(0);
        let (secret, identity) = mint("tg", &hasher, KeyKind::Live).unwrap();
        let rotated = store.rotate_key(old.id, identity.clone(), 5, 0, true).await.unwrap();
        assert_eq!((rotated.info.id, rotated.info.name.as_str(), rotated.old_revoked_at), (identity.id, "r", 5));
        let records = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&records);
        store.key_changes(0, Box::new(move |r| sink.lock().unwrap().push(r))).await.unwrap();
        let new = records.lock().unwrap().iter().find(|r| r.id == identity.id).unwrap().hash;
        assert_eq!(new, hasher.hash(secret.expose()), "the store keeps the caller's hash");
        let again = mint("tg", &hasher, KeyKind::Live).unwrap().1;
        assert!(matches!(store.rotate_key(old.id, again, 6, 0, true).await, Err(StoreError::KeyNotActive)));
    }
}

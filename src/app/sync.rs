//! Keeps the in-memory [`KeyTable`] in step with the store: everything at start, then only the keys
//! written since the last look (by the CLI or another process), whenever the store says there may be
//! changes and at the latest every `store.refresh_interval`. A key created or revoked elsewhere is
//! therefore seen within one interval plus one read. Each successful read also marks the store
//! reachable for `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::keys::KeyTable;
use crate::metering::limits::Plans;
use crate::store::{Store, StoreError};

/// Whether the store answered recently.
pub struct Readiness {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last successful poll, plus one (0 = never).
    last_ok: AtomicU64,
    max_age: Duration,
}

impl Readiness {
    pub fn new(refresh_interval: Duration) -> Readiness {
        let max_age = (refresh_interval * 3).max(Duration::from_secs(3));
        Readiness { epoch: Instant::now(), last_ok: AtomicU64::new(0), max_age }
    }

    fn mark_ok(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_ok.store(ms, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        let last = self.last_ok.load(Ordering::Acquire);
        last != 0 && self.epoch.elapsed().as_millis() as u64 + 1 - last <= self.max_age.as_millis() as u64
    }
}

/// What a refresh updates: the keys, and the plan of every account.
pub struct Tables {
    pub keys: Arc<KeyTable>,
    pub plans: Arc<Plans>,
    pub readiness: Arc<Readiness>,
}

/// Loads every key; returns the store version reached.
pub async fn load_all(store: &dyn Store, tables: &Tables) -> Result<i64, StoreError> {
    apply_changes(store, tables, 0).await
}

async fn apply_changes(store: &dyn Store, tables: &Tables, since: i64) -> Result<i64, StoreError> {
    let keys = Arc::clone(&tables.keys);
    let changes = store.key_changes(since, Box::new(move |record| keys.upsert(record))).await?;
    if !changes.plans.is_empty() {
        tables.plans.set(&changes.plans);
        tables.keys.set_disabled_accounts(&changes.disabled);
    }
    tables.readiness.mark_ok();
    Ok(changes.version)
}

/// Follows the store's changes forever from `version`, looking at least every `every`; run it as a
/// task and abort it on shutdown.
pub async fn follow(store: Arc<dyn Store>, tables: Tables, mut version: i64, every: Duration) {
    loop {
        store.wait_for_changes(version, every).await;
        match apply_changes(&*store, &tables, version).await {
            Ok(v) => version = v,
            Err(e) => {
                tracing::warn!(error = %e, "key refresh failed; serving the keys already loaded")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::service::mint;
    use crate::auth::keys::{KeyHasher, KeyKind};
    use crate::store::{HashedKey, NewKey, SqliteStore};

    #[tokio::test]
    async fn a_key_written_elsewhere_is_followed_within_an_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let hasher = KeyHasher::new(None);
        let tables = Tables {
            keys: Arc::new(KeyTable::new("tg".into(), hasher.clone())),
            plans: Arc::new(Plans::new(Default::default())),
            readiness: Arc::new(Readiness::new(Duration::from_millis(10))),
        };
        let keys = Arc::clone(&tables.keys);
        let version = load_all(&*store, &tables).await.unwrap();
        assert!(keys.is_empty() && tables.readiness.is_ready());
        let follower = tokio::spawn(follow(Arc::clone(&store), tables, version, Duration::from_millis(10)));

        let (_, identity) = mint("tg", &hasher, KeyKind::Live).unwrap();
        let id = identity.id;
        store.create_keys(vec![HashedKey { identity, key: NewKey::live("later", 1) }]).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            while !keys.contains(id) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(seen.await.is_ok(), "the new key never reached the key table");
        follower.abort();
    }
}

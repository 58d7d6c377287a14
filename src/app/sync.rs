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
use crate::store::{KeySink, Store, StoreError};

/// How recently the store answered, so an instance that lost it knows its keys may be stale: a key
/// revoked elsewhere after the last successful read is still in memory.
pub struct Readiness {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last successful read, plus one (0 = never).
    last_ok: AtomicU64,
    /// `store.max_staleness`.
    max_age: Duration,
}

impl Readiness {
    pub fn new(max_staleness: Duration) -> Readiness {
        Readiness { epoch: Instant::now(), last_ok: AtomicU64::new(0), max_age: max_staleness }
    }

    fn mark_ok(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_ok.store(ms, Ordering::Release);
    }

    /// How long ago the store last answered, once that is longer than `store.max_staleness` (or the
    /// store never answered); `None` while the keys in memory are trusted.
    pub fn stale_for(&self) -> Option<Duration> {
        let last = self.last_ok.load(Ordering::Acquire);
        let age = Duration::from_millis((self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(last));
        (last == 0 || age > self.max_age).then_some(age)
    }

    pub fn is_ready(&self) -> bool {
        self.stale_for().is_none()
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
    let sink: KeySink = if since == 0 {
        Box::new(move |record| keys.load(record))
    } else {
        Box::new(move |record| keys.upsert(record))
    };
    let changes = store.key_changes(since, sink).await?;
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
    let mut stale = false;
    loop {
        store.wait_for_changes(version, every).await;
        match apply_changes(&*store, &tables, version).await {
            Ok(v) => {
                version = v;
                if std::mem::take(&mut stale) {
                    tracing::warn!("the store answers again; keys are current");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "key refresh failed; serving the keys already loaded");
                if let (false, Some(age)) = (stale, tables.readiness.stale_for()) {
                    stale = true;
                    tracing::error!(
                        seconds = age.as_secs(),
                        "the store has not answered for longer than store.max_staleness: revocations made \
                         since are not seen (store.on_stale says what is served meanwhile)"
                    );
                }
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
            readiness: Arc::new(Readiness::new(Duration::from_millis(20))),
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

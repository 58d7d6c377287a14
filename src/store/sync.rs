//! Keeps the in-memory [`KeyTable`] in step with the store: everything at start, then every
//! `store.refresh_interval` only the keys written since the last poll (by the CLI or another process).
//! A key created or revoked elsewhere is therefore seen within one interval plus one poll. Each
//! successful poll also marks the store reachable for `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::auth::keys::KeyTable;
use crate::metering::limits::Plans;
use crate::store::{SqliteStore, StoreError};

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
pub async fn load_all(store: &SqliteStore, tables: &Tables) -> Result<i64, StoreError> {
    apply_changes(store, tables, 0).await
}

async fn apply_changes(store: &SqliteStore, tables: &Tables, since: i64) -> Result<i64, StoreError> {
    let (store, keys) = (store.clone(), Arc::clone(&tables.keys));
    let changes = tokio::task::spawn_blocking(move || store.key_changes(since, |record| keys.upsert(record)))
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))??;
    if !changes.plans.is_empty() {
        tables.plans.set(&changes.plans);
        tables.keys.set_disabled_accounts(&changes.disabled);
    }
    tables.readiness.mark_ok();
    Ok(changes.version)
}

/// Polls forever from `version`; run it as a task and abort it on shutdown.
pub async fn poll(store: SqliteStore, tables: Tables, mut version: i64, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match apply_changes(&store, &tables, version).await {
            Ok(v) => version = v,
            Err(e) => {
                tracing::warn!(error = %e, "key refresh failed; serving the keys already loaded")
            }
        }
    }
}

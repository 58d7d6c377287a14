//! Work that must not wait for Redis on the request's path (a settle, a release, a seed, an inheritance): spawned on the runtime, retried a few times while Redis is away, then left to
//! the lease, which ends a reservation or a slot whose ending never arrived.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Carried, Keys, Now, Shared, TTL_SECS};
use crate::clock;

pub(super) enum Ending {
    /// Ends reservation `id` charging `actual`, and frees its concurrency slot.
    Settle { keys: Keys, id: u64, actual: u64, month: i64 },
    /// Seeds a hash from the store's totals where Redis has none.
    Seed { hash: String, account: Option<String>, carried: Carried, now: Now },
    /// Renames a key's Redis key to its successor's.
    Inherit { from: String, to: String },
}

/// Waits between attempts; after the last, the lease ends what is left.
const RETRIES: [Duration; 3] = [Duration::from_millis(100), Duration::from_millis(500), Duration::from_secs(2)];

pub(super) fn spawn(shared: &Arc<Shared>, ending: Ending) {
    shared.pending.fetch_add(1, Ordering::AcqRel);
    let shared = Arc::clone(shared);
    let runtime = shared.runtime.clone();
    runtime.spawn(async move {
        let mut done = run(&shared, &ending).await;
        for wait in RETRIES {
            if done {
                break;
            }
            tokio::time::sleep(wait).await;
            done = run(&shared, &ending).await;
        }
        if !done {
            tracing::warn!("redis counters unreachable: a settle or release is left to its lease");
        }
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.drained.notify_waiters();
        }
    });
}

/// One attempt; `true` when Redis took it.
async fn run(shared: &Shared, ending: &Ending) -> bool {
    match ending {
        Ending::Settle { keys, id, actual, month } => settle(shared, keys, *id, *actual, *month).await,
        Ending::Seed { hash, account, carried, now } => {
            let mut inv = shared.scripts.seed.prepare_invoke();
            inv.key(hash).key(account.as_deref().unwrap_or(""));
            inv.arg(clock::day_of(now.unix)).arg(carried.day_requests);
            inv.arg(clock::month_of(now.unix)).arg(carried.month_tokens).arg(TTL_SECS);
            shared.call::<i64>(&inv).await.is_ok()
        }
        Ending::Inherit { from, to } => {
            let Some(mut conn) = shared.conn.get().cloned() else { return false };
            let mut rename = ::redis::cmd("RENAME");
            rename.arg(from).arg(to);
            match tokio::time::timeout(shared.timeout, rename.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => true,
                // Nothing to move: `from` has no counters in Redis.
                Ok(Err(e)) => e.kind() != ::redis::ErrorKind::IoError,
                Err(_) => false,
            }
        }
    }
}

async fn settle(shared: &Shared, keys: &Keys, id: u64, actual: u64, month: i64) -> bool {
    let mut inv = shared.scripts.settle.prepare_invoke();
    inv.key(&keys.key).key(&keys.flight).key(&keys.end_user).key(&keys.account).key(&keys.res).key(&keys.resd);
    inv.arg(id).arg(actual).arg(id).arg(month);
    shared.call::<i64>(&inv).await.is_ok()
}

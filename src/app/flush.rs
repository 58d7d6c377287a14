//! What the background task writes to the store: the usage book's pending totals, as batches the store
//! applies at most once, and when keys were last used. The store never reads the usage book; it is
//! handed rows.

use std::collections::HashMap;
use std::sync::Arc;

use super::App;
use crate::auth::id::random_id;
use crate::metering::usage::book::{EndUserKey, UsageBook, UsageDelta, UsageKey};
use crate::store::{EndUserAddition, Store, StoreError, UsageAddition, UsageBatch};

/// The usage batch a failed flush left, sent again as it is (same id, same rows) before anything newer,
/// behind the lock that runs one flush at a time. A batch stays here until the store has acknowledged it,
/// so neither a failed commit nor a flush cancelled mid-way loses it, and the store's batch ids keep a
/// commit that landed unseen from being counted twice (store::UsageBatch).
#[derive(Default)]
pub struct Unflushed(tokio::sync::Mutex<Option<UsageBatch>>);

impl Unflushed {
    /// Rows waiting in a batch that failed (for tests and shutdown logs).
    pub async fn rows(&self) -> usize {
        self.0.lock().await.as_ref().map_or(0, |b| b.rows.len() + b.end_users.len())
    }
}

/// Writes everything pending to the store: first a batch a failed flush left, then the book's usage as
/// a new batch. On failure the batch is kept for the next try; the rows written.
pub async fn flush_usage(book: &UsageBook, unflushed: &Unflushed, store: &dyn Store) -> Result<usize, StoreError> {
    let mut held = unflushed.0.lock().await;
    let mut written = 0;
    if let Some(batch) = held.as_ref() {
        written += send(store, batch).await?;
        *held = None;
    }
    let id = random_id().map_err(|e| StoreError::Backend(format!("usage batch id: {e}")))?;
    let by_key = book.take();
    let end_users = book.take_end_users();
    let batch = UsageBatch {
        id: format!("ub_{id}"),
        made_at: crate::clock::unix_now(),
        rows: additions(&by_key),
        end_users: end_user_additions(&end_users),
    };
    if batch.is_empty() {
        return Ok(written);
    }
    // Held before it is sent: from here on it is written, or kept for the next try.
    let batch = held.insert(batch);
    written += send(store, batch).await?;
    *held = None;
    Ok(written)
}

/// Sends one batch; its rows (also when the store had it already).
async fn send(store: &dyn Store, batch: &UsageBatch) -> Result<usize, StoreError> {
    let rows = batch.rows.len() + batch.end_users.len();
    if !store.apply_usage(batch.clone()).await? {
        tracing::info!(batch = %batch.id, rows, "usage batch was written already; skipped");
    }
    Ok(rows)
}

/// The end users' pending usage as the store takes it.
fn end_user_additions(rows: &HashMap<EndUserKey, UsageDelta>) -> Vec<EndUserAddition> {
    rows.iter()
        .map(|(at, d)| EndUserAddition {
            key: at.key,
            account: Arc::clone(&d.account),
            end_user: Arc::clone(&at.end_user),
            day: at.day,
            requests: d.requests,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
        })
        .collect()
}

/// The pending usage as the store takes it.
pub fn additions(rows: &HashMap<UsageKey, UsageDelta>) -> Vec<UsageAddition> {
    rows.iter()
        .map(|(k, d)| UsageAddition {
            key: k.key,
            account: Arc::clone(&d.account),
            day: k.day,
            model: Arc::clone(&k.model),
            requests: d.requests,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
        })
        .collect()
}

/// Writes when keys were last used (taken from the map as it is read, so no update is lost).
pub async fn flush_last_used(app: &App) -> Result<(), StoreError> {
    let mut used = Vec::new();
    app.last_used.retain(|id, at| {
        used.push((*id, *at));
        false
    });
    app.store.touch_keys(used).await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::auth::keys::KeyId;
    use crate::metering::usage::Usage;

    /// `n` requests of `key`, each of 10 input tokens, on day 50.
    fn record(book: &UsageBook, key: KeyId, n: u64) {
        let account: Arc<str> = Arc::from("default");
        for _ in 0..n {
            let model = book.request(key, &account, 50, Arc::from("m"));
            book.tokens(key, &account, 50, &model, Usage { input: 10, output: 0 });
        }
    }

    /// Requests and input tokens of `key` on day 50, as the store has them.
    async fn stored(store: &dyn Store, key: KeyId) -> (u64, u64) {
        let rows = store.usage_report(None, Some(key), 50, 50).await.unwrap();
        rows.iter().fold((0, 0), |(r, t), row| (r + row.requests, t + row.input_tokens))
    }

    /// A batch whose commit landed but whose answer was lost stays held and is sent again as it is: the
    /// store skips it, and the usage recorded since goes in a batch of its own.
    #[tokio::test]
    async fn a_held_batch_is_sent_again_as_it_is_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let (book, unflushed) = (UsageBook::default(), Unflushed::default());
        let key = KeyId::parse("AAAAAAAAAAAA").unwrap();
        record(&book, key, 3);
        let rows = additions(&book.take());
        let landed =
            UsageBatch { id: "ub_landed".into(), made_at: crate::clock::unix_now(), rows, end_users: Vec::new() };
        assert!(Store::apply_usage(&store, landed.clone()).await.unwrap());
        *unflushed.0.lock().await = Some(landed);
        assert_eq!(unflushed.rows().await, 1);

        record(&book, key, 2);
        assert_eq!(flush_usage(&book, &unflushed, &store).await.unwrap(), 2, "the held batch, then the new one");
        assert_eq!(unflushed.rows().await, 0, "nothing held once the store has it");
        assert_eq!(stored(&store, key).await, (5, 50), "the held batch counted once");
        assert_eq!(flush_usage(&book, &unflushed, &store).await.unwrap(), 0, "nothing left to write");
    }

    /// The pool's connections cut (`pg_terminate_backend`) every 7 ms while usage is flushed: a flush whose
    /// call is cut twice (a single cut is run again on a fresh connection) fails as unavailable and keeps its
    /// batch; once the cuts stop, the totals are exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushes_under_cut_connections_add_up_exactly() {
        let env = crate::store::conformance::ENV_TEST_POSTGRES;
        let Some(url) = std::env::var(env).ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipped: {env} is not set");
            return;
        };
        let name = format!("tg_test_flush_cut_{}", std::process::id());
        let separator = if url.contains('?') { '&' } else { '?' };
        let config = crate::config::PostgresConfig {
            url: crate::config::DatabaseUrl::new(format!("{url}{separator}application_name={name}")),
            pool_size: 2,
            statement_timeout: Duration::from_secs(10),
            schema: Some(name.clone()),
            ca_certs: Vec::new(),
        };
        let store = crate::store::PgStore::open(&config).await.unwrap();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        let stop = Arc::new(AtomicBool::new(false));
        let cutter = tokio::spawn({
            let (stop, name) = (Arc::clone(&stop), name.clone());
            async move {
                let cut = "SELECT count(pg_terminate_backend(pid))::BIGINT FROM pg_stat_activity
                           WHERE application_name = $1 AND pid <> pg_backend_pid()";
                let mut cuts = 0i64;
                let mut pace = tokio::time::interval(Duration::from_millis(7));
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    cuts += client.query_one(cut, &[&name]).await.unwrap().get::<_, i64>(0);
                }
                (client, cuts)
            }
        });

        let (book, unflushed) = (UsageBook::default(), Unflushed::default());
        let key = KeyId::parse("BBBBBBBBBBBB").unwrap();
        // At least 300 flushes, and on until three have failed: a cut lands on a flush's connection only
        // when it comes mid-call (an idle one is replaced unseen), which a fast machine makes rare.
        let (mut rounds, mut failures) = (0u64, 0);
        while rounds < 300 || (failures < 3 && rounds < 20_000) {
            rounds += 1;
            record(&book, key, 1);
            if let Err(e) = flush_usage(&book, &unflushed, &store).await {
                assert!(matches!(e, StoreError::Unavailable(_)), "a clear failure: {e:?}");
                failures += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (client, cuts) = cutter.await.unwrap();
        let mut left = 5;
        while flush_usage(&book, &unflushed, &store).await.is_err() || unflushed.rows().await > 0 {
            left -= 1;
            assert!(left > 0, "the store is reachable again once the cuts stop");
        }
        eprintln!("{rounds} flushes, {cuts} connections cut, {failures} flushes failed and were sent again");
        assert!(cuts > 0 && failures > 0, "the cuts hit flushes: {cuts} cuts, {failures} failures");
        assert_eq!(stored(&store, key).await, (rounds, rounds * 10), "nothing lost, nothing counted twice");
        drop(store);
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await.unwrap();
        drop(client);
        let _ = driver.await;
    }
}

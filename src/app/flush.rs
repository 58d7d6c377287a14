//! What the background task writes to the store: the usage book's pending totals and when keys were last
//! used. The store never reads the usage book; it is handed rows.

use std::collections::HashMap;
use std::sync::Arc;

use super::App;
use crate::metering::usage::book::{UsageBook, UsageDelta, UsageKey};
use crate::store::{EndUserAddition, Store, StoreError, UsageAddition};

/// Writes everything pending to the store; on failure puts it back for the next try.
pub async fn flush_usage(book: &UsageBook, store: &dyn Store) -> Result<usize, StoreError> {
    let end_users = flush_end_users(book, store).await;
    let by_key = flush_by_key(book, store).await;
    Ok(by_key? + end_users?)
}

/// Writes the end users' pending usage; on failure puts it back for the next try.
async fn flush_end_users(book: &UsageBook, store: &dyn Store) -> Result<usize, StoreError> {
    let rows = book.take_end_users();
    if rows.is_empty() {
        return Ok(0);
    }
    let n = rows.len();
    let additions = rows
        .iter()
        .map(|(at, d)| EndUserAddition {
            key: at.key,
            account: Arc::clone(&d.account),
            end_user: Arc::clone(&at.end_user),
            day: at.day,
            requests: d.requests,
            input_tokens: d.input_tokens,
            output_tokens: d.output_tokens,
        })
        .collect();
    if let Err(e) = store.add_end_user_usage(additions).await {
        book.restore_end_users(rows);
        return Err(e);
    }
    Ok(n)
}

async fn flush_by_key(book: &UsageBook, store: &dyn Store) -> Result<usize, StoreError> {
    let rows = book.take();
    if rows.is_empty() {
        return Ok(0);
    }
    let n = rows.len();
    if let Err(e) = store.add_usage(additions(&rows)).await {
        book.restore(rows);
        return Err(e);
    }
    Ok(n)
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

//! What the background task writes to the store: the usage book's pending totals and when keys were last
//! used. The store never reads the usage book; it is handed rows.

use std::collections::HashMap;
use std::sync::Arc;

use super::App;
use crate::metering::usage::book::{UsageBook, UsageDelta, UsageKey};
use crate::store::{Store, StoreError, UsageAddition};

/// Writes everything pending to the store; on failure puts it back for the next try.
pub async fn flush_usage(book: &UsageBook, store: &dyn Store) -> Result<usize, StoreError> {
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

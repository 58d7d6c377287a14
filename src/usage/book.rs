//! Usage waiting to be written: per key, UTC day and model, requests (counted at admission) and tokens
//! (counted when a request settles). The flusher takes it all every `store.flush_interval` and on
//! shutdown and adds it to the store in one transaction; a crash loses at most one interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Usage;
use crate::keys::KeyId;

/// Longest model name kept; longer ones are cut (the name is the caller's).
const MAX_MODEL: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub key: KeyId,
    pub day: i64,
    pub model: Arc<str>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub account: Arc<str>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Default)]
pub struct UsageBook {
    pending: Mutex<HashMap<UsageKey, UsageDelta>>,
}

impl UsageBook {
    pub fn request(&self, key: KeyId, account: &Arc<str>, day: i64, model: &Arc<str>) {
        self.add(key, account, day, model, |d| d.requests += 1);
    }

    pub fn tokens(&self, key: KeyId, account: &Arc<str>, day: i64, model: &Arc<str>, usage: Usage) {
        self.add(key, account, day, model, |d| {
            d.input_tokens = add_tokens(d.input_tokens, usage.input);
            d.output_tokens = add_tokens(d.output_tokens, usage.output);
        });
    }

    fn add(&self, key: KeyId, account: &Arc<str>, day: i64, model: &Arc<str>, f: impl FnOnce(&mut UsageDelta)) {
        let usage_key = UsageKey { key, day, model: Arc::clone(model) };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let delta = pending
            .entry(usage_key)
            .or_insert_with(|| UsageDelta { account: Arc::clone(account), ..UsageDelta::default() });
        f(delta);
    }

    /// Everything pending, leaving the book empty.
    pub fn take(&self) -> HashMap<UsageKey, UsageDelta> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back what could not be written, so the next flush tries again.
    pub fn restore(&self, rows: HashMap<UsageKey, UsageDelta>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (k, d) in rows {
            let entry = pending
                .entry(k)
                .or_insert_with(|| UsageDelta { account: Arc::clone(&d.account), ..UsageDelta::default() });
            entry.requests = entry.requests.saturating_add(d.requests);
            entry.input_tokens = add_tokens(entry.input_tokens, d.input_tokens);
            entry.output_tokens = add_tokens(entry.output_tokens, d.output_tokens);
        }
    }
}

/// Token figures come from upstream reports; they saturate at what the store's `INTEGER` holds.
fn add_tokens(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(i64::MAX as u64)
}

/// Writes everything pending to the store; on failure puts it back for the next try.
pub async fn flush(book: &UsageBook, store: &crate::store::SqliteStore) -> Result<usize, crate::store::StoreError> {
    let rows = book.take();
    if rows.is_empty() {
        return Ok(0);
    }
    let n = rows.len();
    let writer = store.clone();
    let (rows, result) = tokio::task::spawn_blocking(move || {
        let result = writer.add_usage(&rows);
        (rows, result)
    })
    .await
    .map_err(|e| crate::store::StoreError::Corrupt(format!("usage flush task failed: {e}")))?;
    if let Err(e) = result {
        book.restore(rows);
        return Err(e);
    }
    Ok(n)
}

/// A model name as stored: at most [`MAX_MODEL`] bytes, `-` when the request named none.
pub fn model_label(model: Option<&str>) -> Arc<str> {
    match model {
        None | Some("") => Arc::from("-"),
        Some(m) => {
            let mut end = m.len().min(MAX_MODEL);
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            Arc::from(&m[..end])
        }
    }
}

//! Usage waiting to be written: per key, UTC day and model, and per key, end user and UTC day, requests
//! (counted at admission) and tokens (counted when a request settles). The background task (`app::flush`) takes it all every
//! `store.flush_interval` and on shutdown and hands it to the store as one batch, applied in one
//! transaction and at most once; a crash loses at most one interval.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::Usage;
use crate::auth::keys::KeyId;

/// Longest model name kept as a label; longer ones become [`OTHER`] (the name is the caller's).
const MAX_MODEL: usize = 128;
/// Distinct model labels one key may add in one UTC day (per process); further ones are counted as
/// [`OTHER`], so a caller naming a new model per request cannot grow the usage table without bound.
pub const MAX_MODELS_PER_KEY_DAY: usize = 32;
/// The label of a model name outside the safe alphabet, too long, or over the per-day cap.
pub const OTHER: &str = "other";

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

/// Where an end user's usage is counted: its key, its id and the UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndUserKey {
    pub key: KeyId,
    pub end_user: Arc<str>,
    pub day: i64,
}

type ModelLabels = HashSet<Arc<str>>;

#[derive(Default)]
pub struct UsageBook {
    pending: Mutex<HashMap<UsageKey, UsageDelta>>,
    /// Per end user; at most one entry per end user seen in a flush interval.
    end_users: Mutex<HashMap<EndUserKey, UsageDelta>>,
    /// The model labels each key has used per day, for [`MAX_MODELS_PER_KEY_DAY`].
    labels: Mutex<HashMap<(KeyId, i64), ModelLabels>>,
}

impl UsageBook {
    /// Counts a request and returns the label its usage is recorded under: `model`, or [`OTHER`] once
    /// the key has used [`MAX_MODELS_PER_KEY_DAY`] other labels today.
    pub fn request(&self, key: KeyId, account: &Arc<str>, day: i64, model: Arc<str>) -> Arc<str> {
        let model = self.capped(key, day, model);
        self.add(key, account, day, &model, |d| d.requests = d.requests.saturating_add(1));
        model
    }

    fn capped(&self, key: KeyId, day: i64, model: Arc<str>) -> Arc<str> {
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        let seen = labels.entry((key, day)).or_default();
        if seen.contains(&model) || &*model == OTHER {
            return model;
        }
        if seen.len() >= MAX_MODELS_PER_KEY_DAY {
            return Arc::from(OTHER);
        }
        seen.insert(Arc::clone(&model));
        model
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

    /// Counts a request of an end user of `key`.
    pub fn end_user_request(&self, at: &EndUserKey, account: &Arc<str>) {
        self.add_end_user(at, account, |d| d.requests = d.requests.saturating_add(1));
    }

    /// Counts the tokens of a request of an end user of `key`.
    pub fn end_user_tokens(&self, at: &EndUserKey, account: &Arc<str>, usage: Usage) {
        self.add_end_user(at, account, |d| {
            d.input_tokens = add_tokens(d.input_tokens, usage.input);
            d.output_tokens = add_tokens(d.output_tokens, usage.output);
        });
    }

    fn add_end_user(&self, at: &EndUserKey, account: &Arc<str>, f: impl FnOnce(&mut UsageDelta)) {
        let mut pending = self.end_users.lock().unwrap_or_else(|p| p.into_inner());
        let delta = pending
            .entry(at.clone())
            .or_insert_with(|| UsageDelta { account: Arc::clone(account), ..UsageDelta::default() });
        f(delta);
    }

    /// Every end user's pending usage, leaving that part of the book empty.
    pub fn take_end_users(&self) -> HashMap<EndUserKey, UsageDelta> {
        std::mem::take(&mut *self.end_users.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Everything pending, leaving the book empty. Labels of days before yesterday are forgotten.
    pub fn take(&self) -> HashMap<UsageKey, UsageDelta> {
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(latest) = labels.keys().map(|(_, day)| *day).max() {
            labels.retain(|(_, day), _| *day >= latest.saturating_sub(1));
        }
        drop(labels);
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Forgets the model labels of keys that `known` no longer lists (revoked or deleted): they make no
    /// more requests, so keys created and revoked in a loop leave nothing here.
    pub fn forget_keys(&self, known: impl Fn(KeyId) -> bool) {
        self.labels.lock().unwrap_or_else(|p| p.into_inner()).retain(|(key, _), _| known(*key));
    }
}

/// Token figures come from upstream reports; they saturate at what the store's `INTEGER` holds.
fn add_tokens(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(i64::MAX as u64)
}

/// A model name as stored: `-` when the request named none; the name itself when it is at most
/// [`MAX_MODEL`] bytes of letters, digits and `.-_:/@+`; otherwise [`OTHER`]. Labels are printed in
/// terminals and reports, so nothing else reaches them.
pub fn model_label(model: Option<&str>) -> Arc<str> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/' | b'@' | b'+');
    match model {
        None | Some("") => Arc::from("-"),
        Some(m) if m.len() <= MAX_MODEL && m.bytes().all(safe) => Arc::from(m),
        Some(_) => Arc::from(OTHER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_a_safe_alphabet() {
        for kept in ["gpt-4o-mini", "ft:gpt-4o-mini:acme::abc123", "meta-llama/Llama-3-70b", "@cf/x+y", "llama3.1:8b"] {
            assert_eq!(&*model_label(Some(kept)), kept);
        }
        for odd in ["gpt\x1b[2J", "a b", "x\ny", "café", "m\u{202e}", &"m".repeat(129)] {
            assert_eq!(&*model_label(Some(odd)), OTHER, "{odd:?}");
        }
        assert_eq!(&*model_label(None), "-");
    }

    #[test]
    fn a_key_adds_a_bounded_number_of_models_a_day() {
        let book = UsageBook::default();
        let key = KeyId::parse("AAAAAAAAAAAA").unwrap();
        let account: Arc<str> = Arc::from("acct");
        let labels: Vec<Arc<str>> =
            (0..100).map(|i| book.request(key, &account, 1, model_label(Some(&format!("m{i}"))))).collect();
        assert_eq!(&*labels[MAX_MODELS_PER_KEY_DAY - 1], "m31");
        assert!(labels[MAX_MODELS_PER_KEY_DAY..].iter().all(|l| &**l == OTHER));
        assert_eq!(&*book.request(key, &account, 1, Arc::from("m0")), "m0", "a model already used stays itself");
        assert_eq!(&*book.request(key, &account, 2, Arc::from("m99")), "m99", "a new day starts afresh");
        let rows = book.take();
        assert_eq!(rows.len(), MAX_MODELS_PER_KEY_DAY + 2);
        assert_eq!(rows[&UsageKey { key, day: 1, model: Arc::from(OTHER) }].requests, 100 - 32);
    }

    #[test]
    fn labels_of_forgotten_keys_are_dropped() {
        let book = UsageBook::default();
        let (gone, kept) = (KeyId::parse("AAAAAAAAAAAA").unwrap(), KeyId::parse("BBBBBBBBBBBB").unwrap());
        let account: Arc<str> = Arc::from("acct");
        for i in 0..MAX_MODELS_PER_KEY_DAY {
            book.request(gone, &account, 1, Arc::from(format!("m{i}")));
            book.request(kept, &account, 1, Arc::from(format!("m{i}")));
        }
        book.forget_keys(|id| id == kept);
        assert_eq!(&*book.request(kept, &account, 1, Arc::from("new")), OTHER, "the kept key's labels stay");
        assert_eq!(&*book.request(gone, &account, 1, Arc::from("new")), "new", "the forgotten key's went");
    }
}

//! The rows of usage per end user: what the usage book adds, what is carried over a restart, what a report
//! lists.

use std::sync::Arc;

use crate::auth::keys::KeyId;

/// Usage to add to an end user's daily totals under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUserAddition {
    pub key: KeyId,
    pub account: Arc<str>,
    pub end_user: Arc<str>,
    pub day: i64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// An end user's totals under a key that survive a restart: requests today and tokens this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUserTotal {
    pub key: KeyId,
    pub end_user: String,
    pub day_requests: u64,
    pub month_tokens: u64,
}

/// One line of a usage report by end user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUserUsageRow {
    pub key: KeyId,
    pub key_prefix: String,
    /// The project of the key, if it is in one.
    pub project: Option<String>,
    pub end_user: String,
    pub day: i64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

//! One usage flush as the store takes it: an id, when it was made, and its rows. The store applies a
//! batch at most once: the id is recorded in the same transaction as the additive upserts, so a batch
//! whose commit landed but whose answer was lost (a connection cut during `COMMIT`) is recognized when
//! it is sent again and skipped. The caller keeps a batch that failed aside and sends the same batch
//! (same id, same rows) until the store has it; it never merges it back into newer usage.

use super::{EndUserAddition, UsageAddition};

/// How long the store remembers an applied batch id, in seconds (two days): a batch sent again within
/// that time after it was applied is recognized. Ids older than that are pruned by later batches.
pub const BATCH_RETENTION_SECONDS: i64 = 2 * 86_400;

/// One usage flush: the usage of keys and of their end users, applied all or nothing, at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBatch {
    /// Unique among every instance's batches (random, from the caller).
    pub id: String,
    /// When the batch was made (Unix seconds); the store prunes ids by it.
    pub made_at: i64,
    pub rows: Vec<UsageAddition>,
    pub end_users: Vec<EndUserAddition>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.end_users.is_empty()
    }
}

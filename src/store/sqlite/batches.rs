//! Usage flushes in the SQLite file: each batch's id is recorded in the transaction of its additive
//! upserts, so a batch sent again after a failure is skipped (store::UsageBatch).

use rusqlite::{Transaction, params};

use super::{ADD_COUNTS, SqliteStore, sql_int};
use crate::store::{BATCH_RETENTION_SECONDS, EndUserAddition, StoreError, UsageAddition, UsageBatch};

impl SqliteStore {
    /// Applies `batch` unless its id was applied already; `true` if applied now.
    pub fn apply_usage(&self, batch: &UsageBatch) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let recorded = tx.execute(
            "INSERT INTO usage_batches (id, made_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
            params![batch.id, batch.made_at],
        )?;
        if recorded == 0 {
            return Ok(false);
        }
        add_usage_in(&tx, &batch.rows)?;
        add_end_users_in(&tx, &batch.end_users)?;
        tx.execute(
            "DELETE FROM usage_batches WHERE made_at < ?1",
            [batch.made_at.saturating_sub(BATCH_RETENTION_SECONDS)],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

/// Adds key usage rows inside the caller's transaction.
pub(super) fn add_usage_in(tx: &Transaction<'_>, rows: &[UsageAddition]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO usage_daily (key_id, account_id, day, model, requests, input_tokens, output_tokens)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (key_id, day, model) DO UPDATE SET {ADD_COUNTS}"
    ))?;
    for r in rows {
        stmt.execute(params![
            r.key.as_str(),
            &*r.account,
            r.day,
            &*r.model,
            sql_int(r.requests),
            sql_int(r.input_tokens),
            sql_int(r.output_tokens)
        ])?;
    }
    Ok(())
}

/// Adds end-user usage rows inside the caller's transaction.
pub(super) fn add_end_users_in(tx: &Transaction<'_>, rows: &[EndUserAddition]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(&format!(
        "INSERT INTO usage_end_users (key_id, account_id, end_user, day, requests, input_tokens, output_tokens)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (key_id, end_user, day) DO UPDATE SET {ADD_COUNTS}"
    ))?;
    for r in rows {
        stmt.execute(params![
            r.key.as_str(),
            &*r.account,
            &*r.end_user,
            r.day,
            sql_int(r.requests),
            sql_int(r.input_tokens),
            sql_int(r.output_tokens)
        ])?;
    }
    Ok(())
}

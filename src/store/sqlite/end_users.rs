//! Signing secrets (sealed) and usage per end user (docs/ARCHITECTURE.md, Key kinds): the sealed secret is written
//! beside its key and follows it to every server like any key change; end-user usage is added by the same
//! idempotent-per-flush additive upsert as the key's daily usage.

use rusqlite::params;

use super::{SqliteStore, bump_version, parse_id};
use crate::auth::keys::KeyId;
use crate::store::{EndUserAddition, EndUserTotal, EndUserUsageRow, StoreError};

impl SqliteStore {
    /// Replaces a key's sealed signing secret; `false` if no such key or it is revoked.
    pub fn set_signing_secret(&self, id: KeyId, sealed: &[u8], now: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version = bump_version(&tx)?;
        let n = tx.execute(
            "UPDATE service_keys SET signing_secret = ?1, version = ?2
             WHERE id = ?3 AND (revoked_at IS NULL OR revoked_at > ?4)",
            params![sealed, version, id.as_str(), now],
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    /// Adds end-user usage to the daily totals, all in one transaction (without a batch id, as
    /// [`SqliteStore::add_usage`]).
    pub fn add_end_user_usage(&self, rows: &[EndUserAddition]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        super::batches::add_end_users_in(&tx, rows)?;
        tx.commit()?;
        Ok(())
    }

    /// Per key and end user: requests on day `today`, and tokens from day `month_start` on.
    pub fn end_user_totals(&self, today: i64, month_start: i64) -> Result<Vec<EndUserTotal>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key_id, end_user,
                    TOTAL(CASE WHEN day = ?1 THEN requests ELSE 0 END),
                    TOTAL(input_tokens) + TOTAL(output_tokens)
             FROM usage_end_users WHERE day >= ?2 GROUP BY key_id, end_user",
        )?;
        let mut rows = stmt.query(params![today, month_start])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(EndUserTotal {
                key: parse_id(&row.get::<_, String>(0)?)?,
                end_user: row.get(1)?,
                day_requests: row.get::<_, f64>(2)? as u64,
                month_tokens: row.get::<_, f64>(3)? as u64,
            });
        }
        Ok(out)
    }

    /// End-user usage rows between two days (inclusive), optionally of one account and one key, by key,
    /// end user and day.
    pub fn end_user_rows(
        &self,
        account: Option<&str>,
        key: Option<KeyId>,
        from: i64,
        to: i64,
    ) -> Result<Vec<EndUserUsageRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT u.key_id, COALESCE(k.key_prefix, u.key_id), u.end_user, u.day, u.requests, u.input_tokens,
                    u.output_tokens, k.project
             FROM usage_end_users u LEFT JOIN service_keys k ON k.id = u.key_id
             WHERE u.day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR u.key_id = ?3) AND (?4 IS NULL OR u.account_id = ?4)
             ORDER BY u.key_id, u.end_user, u.day",
        )?;
        let mut rows = stmt.query(params![from, to, key.map(|k| k.as_str().to_owned()), account])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(EndUserUsageRow {
                key: parse_id(&row.get::<_, String>(0)?)?,
                key_prefix: row.get(1)?,
                end_user: row.get(2)?,
                day: row.get(3)?,
                requests: row.get::<_, i64>(4)?.max(0) as u64,
                input_tokens: row.get::<_, i64>(5)?.max(0) as u64,
                output_tokens: row.get::<_, i64>(6)?.max(0) as u64,
                project: row.get(7)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn end_user_usage_adds_up_and_totals_carry_the_month() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let key = KeyId::parse("AAAAAAAAAAAA").unwrap();
        let row = |end_user: &str, day, tokens| EndUserAddition {
            key,
            account: Arc::from("default"),
            end_user: Arc::from(end_user),
            day,
            requests: 1,
            input_tokens: tokens,
            output_tokens: 1,
        };
        store.add_end_user_usage(&[row("ann", 10, 5), row("bob", 10, 7)]).unwrap();
        store.add_end_user_usage(&[row("ann", 10, 5), row("ann", 11, 100), row("ann", 3, 1000)]).unwrap();
        let mut totals = store.end_user_totals(11, 10).unwrap();
        totals.sort_by(|a, b| a.end_user.cmp(&b.end_user));
        let got: Vec<_> = totals.iter().map(|t| (t.end_user.as_str(), t.day_requests, t.month_tokens)).collect();
        assert_eq!(got, [("ann", 1, 5 + 1 + 5 + 1 + 100 + 1), ("bob", 0, 8)]);
        let rows = store.end_user_rows(Some("default"), None, 10, 11).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].end_user.as_str(), rows[0].requests, rows[0].input_tokens), ("ann", 2, 10));
        assert!(store.end_user_rows(Some("other"), None, 0, 100).unwrap().is_empty());
    }
}

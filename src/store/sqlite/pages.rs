//! Lists a page at a time, oldest first (by creation time, then id), for the management API: at most
//! `limit` rows after the row `after`, or `None` when `after` names no row of the list.

use rusqlite::{OptionalExtension, params};

use super::{ACCOUNT_SELECT, SqliteStore, account_from, infos_in};
use crate::store::{AccountInfo, KeyInfo, StoreError};

impl SqliteStore {
    /// A page of an account's keys, oldest first: at most `limit`, after the key `after`; `None` when
    /// `after` is not one of the account's keys.
    pub fn keys_page(
        &self,
        account: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<KeyInfo>>, StoreError> {
        let conn = self.conn();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let Some(after) = after else {
            let tail = "WHERE account_id = ?1 ORDER BY created_at, id LIMIT ?2";
            return infos_in(&conn, tail, params![account, limit]).map(Some);
        };
        let cursor = "SELECT created_at FROM service_keys WHERE id = ?1 AND account_id = ?2";
        let Some(created) = conn.query_row(cursor, [after, account], |r| r.get::<_, i64>(0)).optional()? else {
            return Ok(None);
        };
        let tail = "WHERE account_id = ?1 AND (created_at, id) > (?2, ?3) ORDER BY created_at, id LIMIT ?4";
        infos_in(&conn, tail, params![account, created, after, limit]).map(Some)
    }

    /// A page of the accounts, oldest first: at most `limit`, after the account `after`; `None` when
    /// there is no account `after`.
    pub fn accounts_page(&self, after: Option<&str>, limit: usize) -> Result<Option<Vec<AccountInfo>>, StoreError> {
        let conn = self.conn();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                let mut stmt = conn.prepare_cached(&format!("{ACCOUNT_SELECT} ORDER BY created_at, id LIMIT ?1"))?;
                stmt.query_map([limit], account_from)?.collect::<Result<Vec<_>, _>>()?
            }
            Some(after) => {
                let cursor = "SELECT created_at FROM accounts WHERE id = ?1";
                let Some(created) = conn.query_row(cursor, [after], |r| r.get::<_, i64>(0)).optional()? else {
                    return Ok(None);
                };
                let page =
                    format!("{ACCOUNT_SELECT} WHERE (created_at, id) > (?1, ?2) ORDER BY created_at, id LIMIT ?3");
                let mut stmt = conn.prepare_cached(&page)?;
                stmt.query_map(params![created, after, limit], account_from)?.collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(Some(rows))
    }
}

//! Accounts in the SQLite store: creating them, reading them (by id, and with the password hash by
//! email, for logging in), and their plans and key caps.

use rusqlite::{OptionalExtension, params};

use super::{ACCOUNT_SELECT, SqliteStore, account_from, bump_version};
use crate::store::{AccountInfo, NewAccount, StoreError};

impl SqliteStore {
    /// Creates an account; `Conflict` if the email is taken.
    pub fn create_account(&self, new: &NewAccount) -> Result<AccountInfo, StoreError> {
        let NewAccount { id, email, password_hash, plan, key_cap, created_at } = new;
        let (key_cap, created_at) = (*key_cap, *created_at);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        bump_version(&tx)?;
        let inserted = tx.execute(
            "INSERT INTO accounts (id, email, password_hash, plan, key_cap, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, email, password_hash, plan, key_cap, created_at],
        );
        match inserted {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::Conflict(format!("an account with email {email}")));
            }
            other => other?,
        };
        tx.commit()?;
        Ok(AccountInfo {
            id: id.clone(),
            email: Some(email.clone()),
            plan: plan.clone(),
            key_cap,
            created_at,
            token_epoch: 0,
            disabled: false,
        })
    }

    pub fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{ACCOUNT_SELECT} ORDER BY created_at, id"))?;
        let rows = stmt.query_map([], account_from)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn account(&self, id: &str) -> Result<Option<AccountInfo>, StoreError> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("{ACCOUNT_SELECT} WHERE id = ?1"), [id], account_from).optional()?)
    }

    /// An account and its password hash, by email (for logging in).
    pub fn account_for_login(&self, email: &str) -> Result<Option<(AccountInfo, String)>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT id, email, plan, key_cap, created_at, token_epoch, disabled, password_hash
                 FROM accounts WHERE email = ?1",
                [email],
                |r| Ok((account_from(r)?, r.get::<_, Option<String>>(7)?)),
            )
            .optional()?
            .and_then(|(account, hash)| hash.map(|h| (account, h))))
    }

    /// An account's password hash, if it has one.
    pub fn password_hash(&self, id: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let hash = conn
            .query_row("SELECT password_hash FROM accounts WHERE id = ?1", [id], |r| r.get::<_, Option<String>>(0))
            .optional()?;
        Ok(hash.flatten())
    }

    /// Changes an account's plan and key cap; `false` if no such account.
    pub fn update_account(&self, id: &str, plan: &str, key_cap: u32) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        bump_version(&tx)?;
        let n = tx.execute("UPDATE accounts SET plan = ?1, key_cap = ?2 WHERE id = ?3", params![plan, key_cap, id])?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit()?;
        Ok(true)
    }

    /// The plan of each account.
    pub fn account_plans(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, plan FROM accounts")?;
        let plans = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(plans)
    }

    /// Every disabled account.
    pub fn disabled_accounts(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id FROM accounts WHERE disabled")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    /// Ends every access token of an account (logout); the new epoch, or `None` if no such account.
    pub fn end_tokens(&self, id: &str) -> Result<Option<u64>, StoreError> {
        self.account_write(id, "", None)
    }

    /// Replaces an account's password hash and ends its access tokens; the new epoch.
    pub fn set_password(&self, id: &str, password_hash: &str) -> Result<Option<u64>, StoreError> {
        self.account_write(id, ", password_hash = ?2", Some(&password_hash))
    }

    /// Disables (ending its access tokens) or enables an account; the new epoch.
    pub fn set_disabled(&self, id: &str, disabled: bool) -> Result<Option<u64>, StoreError> {
        self.account_write(id, ", disabled = ?2", Some(&disabled))
    }

    /// Bumps the token epoch of account `id` and applies `assignments` (SQL over `?2`, bound to `value`)
    /// in one write that servers see at their next poll.
    fn account_write(
        &self,
        id: &str,
        assignments: &str,
        value: Option<&dyn rusqlite::ToSql>,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        bump_version(&tx)?;
        let sql = format!(
            "UPDATE accounts SET token_epoch = token_epoch + 1{assignments} WHERE id = ?1 RETURNING token_epoch"
        );
        let epoch: Option<i64> = match value {
            Some(v) => tx.query_row(&sql, params![id, v], |r| r.get(0)).optional()?,
            None => tx.query_row(&sql, params![id], |r| r.get(0)).optional()?,
        };
        let Some(epoch) = epoch else { return Ok(None) };
        tx.commit()?;
        Ok(Some(epoch.max(0) as u64))
    }
}

//! Accounts in the SQLite store: creating them, reading them (by id, and with the password hash by
//! email, for logging in), and their plans and key caps.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, account_from, bump_version};
use crate::keys;
use crate::store::{AccountInfo, StoreError};

impl SqliteStore {
    /// Creates an account; `Conflict` if the email is taken.
    pub fn create_account(
        &self,
        email: &str,
        password_hash: &str,
        plan: &str,
        key_cap: u32,
        created_at: i64,
    ) -> Result<AccountInfo, StoreError> {
        let id = format!("acct_{}", keys::random_id().map_err(StoreError::Random)?);
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
        Ok(AccountInfo { id, email: Some(email.to_owned()), plan: plan.to_owned(), key_cap, created_at })
    }

    pub fn list_accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, email, plan, key_cap, created_at FROM accounts ORDER BY created_at, id")?;
        let rows = stmt.query_map([], account_from)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn account(&self, id: &str) -> Result<Option<AccountInfo>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row("SELECT id, email, plan, key_cap, created_at FROM accounts WHERE id = ?1", [id], account_from)
            .optional()?)
    }

    /// An account and its password hash, by email (for logging in).
    pub fn account_for_login(&self, email: &str) -> Result<Option<(AccountInfo, String)>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT id, email, plan, key_cap, created_at, password_hash FROM accounts WHERE email = ?1",
                [email],
                |r| Ok((account_from(r)?, r.get::<_, Option<String>>(5)?)),
            )
            .optional()?
            .and_then(|(account, hash)| hash.map(|h| (account, h))))
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
}

//! Projects in the SQLite store: an account's groups of keys, each under a key cap of its own. The
//! cap is checked where keys are written (`key_cap.rs`), in the same transaction as the insert.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::key_cap::{Owner, count_active_in};
use crate::store::{NewProject, ProjectInfo, StoreError};

/// The columns of a [`ProjectInfo`] with its active keys at `?1`, as [`project_from`] reads them.
const PROJECT_SELECT: &str = "SELECT p.id, p.account_id, p.name, p.key_cap, p.created_at,
        (SELECT COUNT(*) FROM service_keys k WHERE k.project = p.id
           AND (k.revoked_at IS NULL OR k.revoked_at > ?1) AND (k.expires_at IS NULL OR k.expires_at > ?1))
    FROM projects p";

fn project_from(r: &rusqlite::Row<'_>) -> Result<ProjectInfo, rusqlite::Error> {
    Ok(ProjectInfo {
        id: r.get(0)?,
        account: r.get(1)?,
        name: r.get(2)?,
        key_cap: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
        created_at: r.get(4)?,
        active_keys: r.get::<_, i64>(5)?.max(0) as usize,
    })
}

/// A unique-name violation as the conflict it is.
fn name_taken(e: rusqlite::Error, name: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(format!("a project named {name:?}"))
        }
        other => other.into(),
    }
}

impl SqliteStore {
    /// Creates a project; `Conflict` if the account has one of that name.
    pub fn create_project(&self, new: &NewProject) -> Result<ProjectInfo, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO projects (id, account_id, name, key_cap, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![new.id, new.account, new.name, new.key_cap, new.created_at],
        )
        .map_err(|e| name_taken(e, &new.name))?;
        Ok(ProjectInfo {
            id: new.id.clone(),
            account: new.account.clone(),
            name: new.name.clone(),
            key_cap: new.key_cap,
            created_at: new.created_at,
            active_keys: 0,
        })
    }

    /// An account's projects, oldest first.
    pub fn projects(&self, account: &str, now: i64) -> Result<Vec<ProjectInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("{PROJECT_SELECT} WHERE p.account_id = ?2 ORDER BY p.created_at, p.id"))?;
        let rows = stmt.query_map(params![now, account], project_from)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn project(&self, id: &str, now: i64) -> Result<Option<ProjectInfo>, StoreError> {
        let conn = self.conn();
        Ok(conn.query_row(&format!("{PROJECT_SELECT} WHERE p.id = ?2"), params![now, id], project_from).optional()?)
    }

    /// Renames a project and sets its key cap; `false` if no such project.
    pub fn update_project(&self, id: &str, name: &str, key_cap: u32) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = conn
            .execute("UPDATE projects SET name = ?1, key_cap = ?2 WHERE id = ?3", params![name, key_cap, id])
            .map_err(|e| name_taken(e, name))?;
        Ok(n > 0)
    }

    /// Deletes a project that has no active key (`ProjectHasKeys` otherwise); `false` if no such
    /// project. Its revoked and expired keys keep its id, so their usage still reads by project.
    pub fn delete_project(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let active = count_active_in(&tx, Owner::Project(id), now)?;
        if active > 0 {
            return Err(StoreError::ProjectHasKeys(active));
        }
        let n = tx.execute("DELETE FROM projects WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }
}

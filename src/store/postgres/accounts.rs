//! Accounts and projects in the PostgreSQL store. Account writes bump the store version (servers
//! follow plans and disabled accounts); a project's cap is checked where keys are written (`keys.rs`).

use tokio_postgres::types::ToSql;

use super::keys::count_active;
use super::rows::{ACCOUNT_SELECT, PROJECT_SELECT, account_from, project_from};
use super::{PgStore, bump_version, is_unique_violation, lock_writes};
use crate::store::{AccountInfo, NewAccount, NewProject, ProjectInfo, StoreError};

impl PgStore {
    pub(super) async fn pg_create_account(&self, new: NewAccount) -> Result<AccountInfo, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        bump_version(&tx).await?;
        let inserted = tx
            .execute(
                "INSERT INTO accounts (id, email, password_hash, plan, key_cap, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&new.id, &new.email, &new.password_hash, &new.plan, &i64::from(new.key_cap), &new.created_at],
            )
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!("an account with email {}", new.email)));
            }
            other => other?,
        };
        tx.commit().await?;
        let NewAccount { id, email, plan, key_cap, created_at, .. } = new;
        Ok(AccountInfo { id, email: Some(email), plan, key_cap, created_at, token_epoch: 0, disabled: false })
    }

    pub(super) async fn pg_accounts(
        &self,
        tail: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<AccountInfo>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(&format!("{ACCOUNT_SELECT} {tail}"), params).await?;
        rows.iter().map(account_from).collect()
    }

    pub(super) async fn pg_accounts_page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<AccountInfo>>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let Some(after) = after else {
            return self.pg_accounts("ORDER BY created_at, id LIMIT $1", &[&limit]).await.map(Some);
        };
        let client = self.client().await?;
        let Some(row) = client.query_opt("SELECT created_at FROM accounts WHERE id = $1", &[&after]).await? else {
            return Ok(None);
        };
        drop(client);
        let created: i64 = row.try_get(0)?;
        let tail = "WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3";
        self.pg_accounts(tail, &[&created, &after, &limit]).await.map(Some)
    }

    pub(super) async fn pg_account_for_login(
        &self,
        email: String,
    ) -> Result<Option<(AccountInfo, String)>, StoreError> {
        let client = self.client().await?;
        let sql = "SELECT id, email, plan, key_cap, created_at, token_epoch, disabled, password_hash
                   FROM accounts WHERE email = $1";
        let Some(row) = client.query_opt(sql, &[&email]).await? else { return Ok(None) };
        let hash: Option<String> = row.try_get(7)?;
        hash.map(|h| account_from(&row).map(|a| (a, h))).transpose()
    }

    pub(super) async fn pg_password_hash(&self, id: String) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT password_hash FROM accounts WHERE id = $1", &[&id]).await?;
        Ok(row.map(|r| r.try_get::<_, Option<String>>(0)).transpose()?.flatten())
    }

    pub(super) async fn pg_update_account(&self, id: String, plan: String, key_cap: u32) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        bump_version(&tx).await?;
        let n = tx
            .execute("UPDATE accounts SET plan = $1, key_cap = $2 WHERE id = $3", &[&plan, &i64::from(key_cap), &id])
            .await?;
        if n == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Bumps the token epoch of account `id` and applies `assignments` (SQL over `$2`, bound to `value`)
    /// in one write; the new epoch, `None` if no such account.
    pub(super) async fn pg_account_write(
        &self,
        id: String,
        assignments: &str,
        value: Option<&(dyn ToSql + Sync)>,
    ) -> Result<Option<u64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        bump_version(&tx).await?;
        let sql = format!(
            "UPDATE accounts SET token_epoch = token_epoch + 1{assignments} WHERE id = $1 RETURNING token_epoch"
        );
        let row = match value {
            Some(v) => tx.query_opt(&sql, &[&id, v]).await?,
            None => tx.query_opt(&sql, &[&id]).await?,
        };
        let Some(row) = row else { return Ok(None) };
        let epoch: i64 = row.try_get(0)?;
        tx.commit().await?;
        Ok(Some(epoch.max(0) as u64))
    }

    pub(super) async fn pg_create_project(&self, new: NewProject) -> Result<ProjectInfo, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO projects (id, account_id, name, key_cap, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&new.id, &new.account, &new.name, &i64::from(new.key_cap), &new.created_at],
            )
            .await
            .map_err(|e| name_taken(e, &new.name))?;
        let NewProject { id, account, name, key_cap, created_at } = new;
        Ok(ProjectInfo { id, account, name, key_cap, created_at, active_keys: 0 })
    }

    pub(super) async fn pg_projects(
        &self,
        tail: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<ProjectInfo>, StoreError> {
        let client = self.client().await?;
        let rows = client.query(&format!("{PROJECT_SELECT} {tail}"), params).await?;
        rows.iter().map(project_from).collect()
    }

    pub(super) async fn pg_update_project(&self, id: String, name: String, key_cap: u32) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("UPDATE projects SET name = $1, key_cap = $2 WHERE id = $3", &[&name, &i64::from(key_cap), &id])
            .await
            .map_err(|e| name_taken(e, &name))?;
        Ok(n > 0)
    }

    /// Deletes a project with no active key, under the write lock so no key is created in it meanwhile.
    pub(super) async fn pg_delete_project(&self, id: String, now: i64) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_writes(&tx).await?;
        let active = count_active(&tx, "project", &id, now).await?;
        if active > 0 {
            return Err(StoreError::ProjectHasKeys(active));
        }
        let n = tx.execute("DELETE FROM projects WHERE id = $1", &[&id]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }
}

/// A unique-name violation as the conflict it is.
fn name_taken(e: tokio_postgres::Error, name: &str) -> StoreError {
    if is_unique_violation(&e) { StoreError::Conflict(format!("a project named {name:?}")) } else { e.into() }
}

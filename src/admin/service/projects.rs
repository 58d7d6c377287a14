//! Projects on the control plane: an account's groups of keys, each with a key cap of its own beside
//! the account's. The same checks for the management API and the CLI.

use super::rules::check_name;
use super::{ControlPlane, ServiceError};
use crate::auth::keys;
use crate::store::{NewProject, ProjectInfo};

/// The key cap of a new project when none is given.
pub const DEFAULT_PROJECT_KEY_CAP: u32 = 5;
/// The range of a project's key cap.
pub const PROJECT_KEY_CAP_RANGE: (u32, u32) = (1, 1000);

fn check_project_cap(cap: u32) -> Result<u32, ServiceError> {
    let (min, max) = PROJECT_KEY_CAP_RANGE;
    if !(min..=max).contains(&cap) {
        return Err(ServiceError::Invalid {
            field: "key_cap".into(),
            message: format!("{cap} is outside {min}..={max}"),
        });
    }
    Ok(cap)
}

/// A project id as made by [`ControlPlane::create_project`]: `prj_` and twelve base62 characters.
pub fn is_project_id(text: &str) -> bool {
    text.strip_prefix("prj_").is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl ControlPlane<'_> {
    pub async fn create_project(
        &self,
        account: &str,
        name: &str,
        key_cap: Option<u32>,
        now: i64,
    ) -> Result<ProjectInfo, ServiceError> {
        let name = check_name("name", name)?;
        let key_cap = key_cap.map(check_project_cap).transpose()?.unwrap_or(DEFAULT_PROJECT_KEY_CAP);
        if self.store.account(account.to_owned()).await?.is_none() {
            return Err(ServiceError::NotFound(format!("account {account:?}")));
        }
        let id = format!("prj_{}", keys::random_id()?);
        let new = NewProject { id, account: account.to_owned(), name, key_cap, created_at: now };
        Ok(self.store.create_project(new).await?)
    }

    pub async fn projects(&self, account: &str, now: i64) -> Result<Vec<ProjectInfo>, ServiceError> {
        Ok(self.store.projects(account.to_owned(), now).await?)
    }

    /// A project of `account`, or `NotFound` (also when it is another account's: no existence oracle).
    pub async fn project(&self, account: &str, id: &str, now: i64) -> Result<ProjectInfo, ServiceError> {
        let found = if is_project_id(id) { self.store.project(id.to_owned(), now).await? } else { None };
        found.filter(|p| p.account == account).ok_or_else(|| ServiceError::NotFound(format!("project {id}")))
    }

    /// Renames a project or changes its key cap (a cap below its active keys only stops new ones).
    pub async fn update_project(
        &self,
        account: &str,
        id: &str,
        name: Option<String>,
        key_cap: Option<u32>,
        now: i64,
    ) -> Result<ProjectInfo, ServiceError> {
        let current = self.project(account, id, now).await?;
        let name = name.map(|n| check_name("name", &n)).transpose()?.unwrap_or(current.name);
        let key_cap = key_cap.map(check_project_cap).transpose()?.unwrap_or(current.key_cap);
        self.store.update_project(id.to_owned(), name, key_cap).await?;
        self.project(account, id, now).await
    }

    /// Deletes a project with no active key.
    pub async fn delete_project(&self, account: &str, id: &str, now: i64) -> Result<(), ServiceError> {
        self.project(account, id, now).await?;
        self.store.delete_project(id.to_owned(), now).await?;
        Ok(())
    }
}

//! The control plane: every key and account operation, with its one set of checks, used alike by the
//! management API and the CLI. Callers parse their own input (JSON, flags) and shape their own
//! output; what is allowed and what is written is decided here.

mod claim;
mod policy;
mod projects;
mod rules;
mod signing;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::store::DEFAULT_KEY_CAP;
pub use policy::{EndUserLimitChanges, PolicyChanges};
pub use projects::{DEFAULT_PROJECT_KEY_CAP, PROJECT_KEY_CAP_RANGE, is_project_id};
pub use rules::{
    Actor, EXPIRES_IN_DAYS_RANGE, Effective, EffectiveLimits, KEY_CAP_RANGE, LimitChanges, MAX_GRACE_SECONDS,
    check_password, parse_key_id,
};
pub use signing::NO_SEALING_KEY;

use crate::auth::access::{KeyAccess, Scopes};
use crate::auth::keys::{self, KeyHasher, KeyId, KeyKind, KeyLimits, SecretKey};
use crate::auth::policy::{KeyPolicy, ProviderCredential};
use crate::clock;
use crate::config::Config;
use crate::store::EndUserUsageRow;
use crate::store::UsageRow;
use crate::store::{
    AccountInfo, HashedKey, KeyIdentity, KeyInfo, KeyUpdate, NewAccount, NewKey, Rotated, Store, StoreError,
};
use policy::{check_description, check_metadata};
use rules::{check_email, check_key_cap, check_list, check_name, check_scopes};
use serde_json::Value;

/// Why a control-plane operation was refused or failed.
#[derive(Debug)]
pub enum ServiceError {
    /// A request field broke its rule; `field` as the management API names it.
    Invalid {
        field: String,
        message: String,
    },
    /// The key or account named does not exist (`what`: `key <id>`, `account <id>`).
    NotFound(String),
    Store(StoreError),
    /// The system's random source failed, so no key or account id could be made.
    Random(getrandom::Error),
    /// The request conflicts with the current state (a trial key claimed twice, a member of another
    /// kind of key); `code` is stable, `field` as the management API names it, if one is to blame.
    Conflict {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Invalid { field, message } | ServiceError::Conflict { field: Some(field), message, .. } => {
                write!(f, "{field} {message}")
            }
            ServiceError::NotFound(what) => write!(f, "{what} does not exist"),
            ServiceError::Store(e) => e.fmt(f),
            ServiceError::Random(e) => write!(f, "random source failed: {e}"),
            ServiceError::Conflict { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for ServiceError {}

impl ServiceError {
    /// An invalid field as a conflict with the key it would change.
    fn into_conflict(self) -> ServiceError {
        match self {
            ServiceError::Invalid { field, message } => {
                ServiceError::Conflict { code: "kind_mismatch", field: Some(field), message }
            }
            other => other,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> ServiceError {
        ServiceError::Store(e)
    }
}

impl From<getrandom::Error> for ServiceError {
    fn from(e: getrandom::Error) -> ServiceError {
        ServiceError::Random(e)
    }
}

/// Generates a key of `kind` and hashes it: the secret for the caller to show once, the identity for
/// the store. Generation and hashing stay out of every store backend.
pub fn mint(prefix: &str, hasher: &KeyHasher, kind: KeyKind) -> Result<(SecretKey, KeyIdentity), getrandom::Error> {
    let (secret, parsed) = keys::generate(prefix, kind)?;
    let identity = KeyIdentity {
        id: parsed.id,
        key_prefix: keys::key_prefix(prefix, kind, parsed.id),
        hash: hasher.hash(secret.expose()),
        // A publishable key is not secret: it sits in browser code, and its owner reads it back.
        public_key: (kind == KeyKind::Publishable).then(|| secret.expose().to_owned()),
    };
    Ok((secret, identity))
}

/// The scopes a key of `kind` gets when its request names none: a publishable key, which sits in
/// browser code, only `chat`; every other kind all of them.
fn default_scopes(kind: KeyKind) -> Scopes {
    match kind {
        KeyKind::Publishable => Scopes::from_names(["chat"]).unwrap_or_default(),
        KeyKind::Live | KeyKind::Trial => Scopes::default(),
    }
}

/// A key to create, as asked for: checked by [`ControlPlane::create_keys`].
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub kind: KeyKind,
    pub name: String,
    /// The owner; an account actor's keys are always its own.
    pub account: String,
    pub scopes: Option<Vec<String>>,
    pub providers: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    pub limits: LimitChanges,
    pub expires_in_days: Option<u32>,
    pub project: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<Value>,
    pub policy: PolicyChanges,
}

/// Changes to a key: `None` leaves a setting as it is; `Some(None)` allows any provider or model.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub providers: Option<Option<Vec<String>>>,
    pub models: Option<Option<Vec<String>>>,
    pub limits: LimitChanges,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// `Some(None)` clears it.
    pub metadata: Option<Option<Value>>,
    pub policy: PolicyChanges,
}

/// An account to create, checked; the caller hashes the password (on its own pool) and then calls
/// [`ControlPlane::create_account`].
#[derive(Debug, Clone)]
pub struct AccountDraft {
    pub email: String,
    pub plan: String,
    pub key_cap: u32,
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    AlreadyRevoked,
}

/// Usage between two days (inclusive), by key, day and model.
pub struct UsageReport {
    pub from: i64,
    pub to: i64,
    pub rows: Vec<UsageRow>,
}

/// The one place keys and accounts are changed. Cheap to make (the store is shared, the configuration
/// borrowed), so each management request and each CLI command makes its own.
pub struct ControlPlane<'c> {
    store: Arc<dyn Store>,
    config: &'c Config,
    hasher: KeyHasher,
}

impl<'c> ControlPlane<'c> {
    pub fn new(store: Arc<dyn Store>, config: &'c Config) -> ControlPlane<'c> {
        ControlPlane { store, config, hasher: KeyHasher::new(config.keys.hash_secret) }
    }

    fn is_provider(&self, name: &str) -> bool {
        self.config.providers.iter().any(|p| p.name == name)
    }

    /// The limits a key runs under, from its own and the configured defaults.
    pub fn effective_limits(&self, own: &KeyLimits) -> EffectiveLimits {
        EffectiveLimits::of(own, &self.config.limits)
    }

    // ------------------------------------------------------------ keys

    /// Creates `count` keys alike, each with its secret (shown once). An account's creation is one at a
    /// time and within its key cap; the operator's are written in one transaction, past any cap.
    pub async fn create_keys(
        &self,
        actor: Actor<'_>,
        request: KeyRequest,
        count: u32,
        now: i64,
    ) -> Result<Vec<(SecretKey, KeyInfo)>, ServiceError> {
        let new = self.check_new_key(actor, request, now)?;
        self.check_identity(new.kind, &new.policy)?;
        if let Actor::Account { .. } = actor {
            let (secret, identity) = mint(&self.config.keys.prefix, &self.hasher, new.kind)?;
            let info = self.store.create_key_within_cap(HashedKey { identity, key: new }, now).await?;
            return Ok(vec![(secret, info)]);
        }
        if self.store.account(new.account.clone()).await?.is_none() {
            return Err(ServiceError::NotFound(format!("account {:?}", new.account)));
        }
        let mut secrets = Vec::with_capacity(count as usize);
        let mut keys = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (secret, identity) = mint(&self.config.keys.prefix, &self.hasher, new.kind)?;
            secrets.push(secret);
            keys.push(HashedKey { identity, key: new.clone() });
        }
        let created = self.store.create_keys(keys).await?;
        Ok(secrets.into_iter().zip(created).collect())
    }

    fn check_new_key(&self, actor: Actor<'_>, r: KeyRequest, now: i64) -> Result<NewKey, ServiceError> {
        let name = check_name("name", &r.name)?;
        let access = KeyAccess {
            scopes: check_scopes(r.scopes)?.unwrap_or_else(|| default_scopes(r.kind)),
            providers: check_list("providers", r.providers, Some(&|p| self.is_provider(p)))?,
            models: check_list("models", r.models, None)?,
        };
        let limits = r.limits.apply(actor, KeyLimits::default())?;
        let project = match r.project {
            Some(p) if !projects::is_project_id(&p) => return Err(ServiceError::Store(StoreError::UnknownProject)),
            other => other,
        };
        let (min, max) = EXPIRES_IN_DAYS_RANGE;
        let expires_at = match r.expires_in_days {
            Some(d) if !(min..=max).contains(&d) => {
                return Err(ServiceError::Invalid {
                    field: "expires_in_days".into(),
                    message: format!("must be {min}-{max}"),
                });
            }
            Some(d) => Some(now + i64::from(d) * 86_400),
            None => None,
        };
        let account = match actor {
            Actor::Account { id, .. } => id.to_owned(),
            Actor::Operator => r.account,
        };
        Ok(NewKey {
            kind: r.kind,
            name,
            account,
            limits,
            access,
            policy: self.check_policy(r.kind, &r.policy, r.policy.apply(actor, Default::default())?)?,
            project,
            description: check_description(r.description)?,
            metadata: check_metadata(r.metadata)?,
            created_at: now,
            expires_at,
        })
    }

    /// A policy as it suits a key of `kind`; a key newly set to use the server's provider credential
    /// needs a provider that holds one.
    fn check_policy(
        &self,
        kind: KeyKind,
        change: &PolicyChanges,
        policy: KeyPolicy,
    ) -> Result<KeyPolicy, ServiceError> {
        policy::check_kind(kind, &policy)?;
        let asks = change.provider_credential.is_some() && policy.provider_credential == ProviderCredential::Server;
        if asks && !self.config.providers.iter().any(|p| p.server_key.is_some()) {
            return Err(ServiceError::Invalid {
                field: "provider_credential".into(),
                message: "no provider holds a server credential (set key_env on a provider in proxy.toml)".into(),
            });
        }
        Ok(policy)
    }

    /// Changes a key's name, access and limits; the key as it is now.
    pub async fn update_key(&self, actor: Actor<'_>, id: KeyId, change: KeyChange) -> Result<KeyInfo, ServiceError> {
        let current = self.key(id).await?;
        let name = change.name.map(|n| check_name("name", &n)).transpose()?.unwrap_or(current.name.clone());
        let access = KeyAccess {
            scopes: check_scopes(change.scopes)?.unwrap_or(current.access.scopes),
            providers: match change.providers {
                None => current.access.providers.clone(),
                Some(list) => check_list("providers", list, Some(&|p| self.is_provider(p)))?,
            },
            models: match change.models {
                None => current.access.models.clone(),
                Some(list) => check_list("models", list, None)?,
            },
        };
        let update = KeyUpdate {
            name,
            limits: change.limits.apply(actor, current.limits)?,
            access,
            // What does not suit the key's kind conflicts with the key as it is (409), where the same
            // request could suit another key.
            policy: self
                .check_policy(current.kind, &change.policy, change.policy.apply(actor, current.policy.clone())?)
                .map_err(ServiceError::into_conflict)?,
            description: match change.description {
                None => current.description.clone(),
                Some(text) => check_description(text)?,
            },
            metadata: match change.metadata {
                None => current.metadata.clone(),
                Some(value) => check_metadata(value)?,
            },
        };
        self.check_identity(current.kind, &update.policy)?;
        self.store.update_key(id, update).await?;
        self.key(id).await
    }

    /// Revokes a key now.
    pub async fn revoke_key(&self, id: KeyId, now: i64) -> Result<Revocation, ServiceError> {
        if self.store.revoke_key(id, now).await? {
            return Ok(Revocation::Revoked);
        }
        self.key(id).await.map(|_| Revocation::AlreadyRevoked)
    }

    /// Replaces a key by a new one of the same settings (its secret shown once); the old one is revoked
    /// `grace_seconds` from now. Only an account's rotation must fit under its key cap.
    pub async fn rotate_key(
        &self,
        actor: Actor<'_>,
        id: KeyId,
        grace_seconds: u64,
        now: i64,
    ) -> Result<(SecretKey, Rotated), ServiceError> {
        if grace_seconds > MAX_GRACE_SECONDS {
            return Err(ServiceError::Invalid {
                field: "grace_seconds".into(),
                message: format!("must be at most {MAX_GRACE_SECONDS} (30 days)"),
            });
        }
        let old = self.key(id).await?;
        let (secret, identity) = mint(&self.config.keys.prefix, &self.hasher, old.kind)?;
        let enforce_cap = matches!(actor, Actor::Account { .. });
        // Insert and revoke are one store operation, so the cap and the one-pending-replacement rule hold.
        let rotated = self.store.rotate_key(id, identity, now, grace_seconds, enforce_cap).await?;
        Ok((secret, rotated))
    }

    /// A key, or `NotFound`.
    pub async fn key(&self, id: KeyId) -> Result<KeyInfo, ServiceError> {
        self.store.key_info(id).await?.ok_or_else(|| ServiceError::NotFound(format!("key {id}")))
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ServiceError> {
        Ok(self.store.list_keys().await?)
    }

    /// This month's usage of an account's keys, by key: (requests, input tokens, output tokens).
    pub async fn month_usage(&self, account: &str, now: i64) -> Result<BTreeMap<KeyId, (u64, u64, u64)>, ServiceError> {
        let report = self.usage(Some(account), None, None, None, now).await?;
        let mut by_key = BTreeMap::new();
        for r in report.rows {
            let t: &mut (u64, u64, u64) = by_key.entry(r.key).or_default();
            *t = (
                t.0.saturating_add(r.requests),
                t.1.saturating_add(r.input_tokens),
                t.2.saturating_add(r.output_tokens),
            );
        }
        Ok(by_key)
    }

    /// Usage between two days (default: this month so far), optionally of one account and one key.
    pub async fn usage(
        &self,
        account: Option<&str>,
        key: Option<KeyId>,
        from: Option<i64>,
        to: Option<i64>,
        now: i64,
    ) -> Result<UsageReport, ServiceError> {
        let from = from.unwrap_or_else(|| clock::month_first_day(now));
        let to = to.unwrap_or_else(|| clock::day_of(now));
        let rows = self.store.usage_report(account.map(str::to_owned), key, from, to).await?;
        Ok(UsageReport { from, to, rows })
    }

    /// End-user usage between two days (default: this month so far), optionally of one account and one
    /// key: the days and the rows by key, end user and day.
    pub async fn end_user_usage(
        &self,
        account: Option<&str>,
        key: Option<KeyId>,
        from: Option<i64>,
        to: Option<i64>,
        now: i64,
    ) -> Result<(i64, i64, Vec<EndUserUsageRow>), ServiceError> {
        let from = from.unwrap_or_else(|| clock::month_first_day(now));
        let to = to.unwrap_or_else(|| clock::day_of(now));
        let rows = self.store.end_user_report(account.map(str::to_owned), key, from, to).await?;
        Ok((from, to, rows))
    }

    // ------------------------------------------------------------ accounts

    /// Checks a new account; the password is checked here and hashed by the caller.
    pub fn check_account(
        &self,
        email: &str,
        password: &str,
        plan: Option<String>,
        key_cap: Option<u32>,
    ) -> Result<AccountDraft, ServiceError> {
        let email = check_email(email)?;
        check_password("password", password)?;
        let plan = self.check_plan(plan)?.unwrap_or_else(|| "default".to_owned());
        let key_cap = key_cap.map(check_key_cap).transpose()?.unwrap_or(DEFAULT_KEY_CAP);
        Ok(AccountDraft { email, plan, key_cap })
    }

    pub async fn create_account(
        &self,
        draft: AccountDraft,
        password_hash: String,
        now: i64,
    ) -> Result<AccountInfo, ServiceError> {
        let AccountDraft { email, plan, key_cap } = draft;
        let id = format!("acct_{}", keys::random_id()?);
        let new = NewAccount { id, email, password_hash, plan, key_cap, created_at: now };
        Ok(self.store.create_account(new).await?)
    }

    fn check_plan(&self, plan: Option<String>) -> Result<Option<String>, ServiceError> {
        match plan {
            Some(p) if !self.config.plans.contains_key(&p) => Err(ServiceError::Invalid {
                field: "plan".into(),
                message: format!("`{p}` is not a plan in proxy.toml"),
            }),
            other => Ok(other),
        }
    }

    /// An account, or `NotFound`.
    pub async fn account(&self, id: &str) -> Result<AccountInfo, ServiceError> {
        self.store.account(id.to_owned()).await?.ok_or_else(|| ServiceError::NotFound(format!("account {id}")))
    }

    pub async fn list_accounts(&self) -> Result<Vec<AccountInfo>, ServiceError> {
        Ok(self.store.list_accounts().await?)
    }

    /// Changes an account's plan, key cap and whether it is disabled (which ends its access tokens);
    /// the account as it is now.
    pub async fn update_account(
        &self,
        id: &str,
        plan: Option<String>,
        key_cap: Option<u32>,
        disabled: Option<bool>,
    ) -> Result<AccountInfo, ServiceError> {
        let plan = self.check_plan(plan)?;
        let key_cap = key_cap.map(check_key_cap).transpose()?;
        let current = self.account(id).await?;
        let mut updated = AccountInfo {
            plan: plan.unwrap_or(current.plan.clone()),
            key_cap: key_cap.unwrap_or(current.key_cap),
            ..current
        };
        self.store.update_account(id.to_owned(), updated.plan.clone(), updated.key_cap).await?;
        if let Some(disabled) = disabled.filter(|d| *d != updated.disabled) {
            updated.token_epoch = self.set_disabled(id, disabled).await?;
            updated.disabled = disabled;
        }
        Ok(updated)
    }

    /// Disables or enables an account; its new token epoch.
    pub async fn set_disabled(&self, id: &str, disabled: bool) -> Result<u64, ServiceError> {
        let epoch = self.store.set_disabled(id.to_owned(), disabled).await?;
        epoch.ok_or_else(|| ServiceError::NotFound(format!("account {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn config() -> Config {
        Config::from_toml("", |_| None).unwrap()
    }

    fn control_plane<'c>(dir: &tempfile::TempDir, config: &'c Config) -> ControlPlane<'c> {
        let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        ControlPlane::new(store, config)
    }

    fn request(name: &str, account: &str) -> KeyRequest {
        KeyRequest {
            kind: KeyKind::Live,
            name: name.to_owned(),
            account: account.to_owned(),
            scopes: None,
            providers: None,
            models: None,
            limits: LimitChanges::default(),
            expires_in_days: None,
            project: None,
            description: None,
            metadata: None,
            policy: PolicyChanges::default(),
        }
    }

    async fn account(control: &ControlPlane<'_>, key_cap: u32) -> AccountInfo {
        let draft = control.check_account("Cap@Example.com", "long enough", None, Some(key_cap)).unwrap();
        assert_eq!((draft.email.as_str(), draft.plan.as_str()), ("cap@example.com", "default"));
        control.create_account(draft, "-".into(), 1).await.unwrap()
    }

    #[tokio::test]
    async fn an_account_stays_under_its_cap_and_the_operator_may_go_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = config();
        let control = control_plane(&dir, &config);
        let acct = account(&control, 1).await;
        let actor = Actor::Account { id: &acct.id, tokens_ceiling: u64::MAX };
        let (_, first) = control.create_keys(actor, request("one", "ignored"), 1, 2).await.unwrap().remove(0);
        assert_eq!(first.account, acct.id, "an account's key is its own, whatever the request names");
        let refused = control.create_keys(actor, request("two", &acct.id), 1, 2).await.unwrap_err();
        assert!(matches!(refused, ServiceError::Store(StoreError::KeyCapReached(1))), "{refused}");
        let refused = control.rotate_key(actor, first.id, 60, 3).await.unwrap_err();
        assert!(matches!(refused, ServiceError::Store(StoreError::KeyCapReached(1))), "{refused}");

        let created = control.create_keys(Actor::Operator, request("bulk", &acct.id), 3, 4).await.unwrap();
        assert_eq!(created.len(), 3);
        let (secret, rotated) = control.rotate_key(Actor::Operator, first.id, 60, 5).await.unwrap();
        assert!(secret.expose().starts_with("tg_live_") && secret.expose().contains(rotated.info.id.as_str()));
        assert_eq!(rotated.old_revoked_at, 65);
    }

    #[tokio::test]
    async fn refusals_name_their_field_or_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let config = config();
        let control = control_plane(&dir, &config);
        let invalid = |e: ServiceError| match e {
            ServiceError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        };
        let long = request(&"n".repeat(129), "default");
        assert_eq!(invalid(control.create_keys(Actor::Operator, long, 1, 1).await.unwrap_err()), "name");
        let nobody = control.create_keys(Actor::Operator, request("k", "acct_nobody"), 1, 1).await.unwrap_err();
        assert_eq!(nobody.to_string(), "account \"acct_nobody\" does not exist");
        let id = parse_key_id("tg_live_AbCdEf123456").unwrap();
        assert_eq!(control.revoke_key(id, 1).await.unwrap_err().to_string(), "key AbCdEf123456 does not exist");
        let grace = control.rotate_key(Actor::Operator, id, MAX_GRACE_SECONDS + 1, 1).await.unwrap_err();
        assert_eq!(invalid(grace), "grace_seconds");
        assert_eq!(invalid(control.check_account("a@b", "short", None, None).unwrap_err()), "password");
        assert_eq!(
            invalid(control.check_account("a@b", "long enough", Some("gold".into()), None).unwrap_err()),
            "plan"
        );
        let cap = control.check_account("a@b", "long enough", None, None).unwrap().key_cap;
        assert_eq!(cap, DEFAULT_KEY_CAP);
    }
}

//! The rows a store takes and returns. They carry no backend types, so the same rows serve the SQLite
//! file today and a PostgreSQL database later.

use std::sync::Arc;

use crate::auth::access::KeyAccess;
use crate::auth::keys::{KeyId, KeyKind, KeyLimits};
use crate::auth::policy::KeyPolicy;

/// What a new key is made of: its settings. Its secret, id and hash are made by the caller
/// ([`crate::admin::service::mint`]) and travel as a [`KeyIdentity`] beside it.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub kind: KeyKind,
    pub name: String,
    pub account: String,
    pub limits: KeyLimits,
    pub access: KeyAccess,
    pub policy: KeyPolicy,
    pub project: Option<String>,
    pub description: Option<String>,
    /// A small JSON object of the owner's, stored and shown as given.
    pub metadata: Option<serde_json::Value>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl NewKey {
    /// A live key of the default account with default limits.
    pub fn live(name: &str, created_at: i64) -> NewKey {
        NewKey {
            kind: KeyKind::Live,
            name: name.to_owned(),
            account: "default".to_owned(),
            limits: KeyLimits::default(),
            access: KeyAccess::default(),
            policy: KeyPolicy::default(),
            project: None,
            description: None,
            metadata: None,
            created_at,
            expires_at: None,
        }
    }
}

/// What a store keeps of a freshly generated key: its id, the prefix it is listed under and the hash
/// of its secret. The secret itself never reaches a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub id: KeyId,
    pub key_prefix: String,
    pub hash: blake3::Hash,
    /// The whole key text of a publishable key, which is not secret (shown on every view of it);
    /// `None` for every other kind.
    pub public_key: Option<String>,
}

/// A key ready to be written: who it is and what it is made of.
#[derive(Debug, Clone)]
pub struct HashedKey {
    pub identity: KeyIdentity,
    pub key: NewKey,
}

impl HashedKey {
    /// The key as listed once it is written: never revoked, never used yet.
    pub fn info(&self) -> KeyInfo {
        let (identity, new) = (&self.identity, &self.key);
        KeyInfo {
            id: identity.id,
            key_prefix: identity.key_prefix.clone(),
            public_key: identity.public_key.clone(),
            kind: new.kind,
            name: new.name.clone(),
            account: new.account.clone(),
            limits: new.limits,
            access: new.access.clone(),
            policy: new.policy.clone(),
            project: new.project.clone(),
            description: new.description.clone(),
            metadata: new.metadata.clone(),
            created_at: new.created_at,
            expires_at: new.expires_at,
            revoked_at: None,
            last_used_at: None,
        }
    }
}

/// What a key's owner may change after creation: everything a [`KeyInfo`] shows that is not its
/// identity, owner, project or lifetime.
#[derive(Debug, Clone)]
pub struct KeyUpdate {
    pub name: String,
    pub limits: KeyLimits,
    pub access: KeyAccess,
    pub policy: KeyPolicy,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// The new key of a rotation, and when the old one stops working.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub info: KeyInfo,
    pub old_revoked_at: i64,
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub key: KeyId,
    pub key_prefix: String,
    /// The project of the key, if it is in one.
    pub project: Option<String>,
    pub day: i64,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Usage to add to a key's daily totals for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageAddition {
    pub key: KeyId,
    pub account: Arc<str>,
    pub day: i64,
    pub model: Arc<str>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A key's totals that survive a restart: requests today and tokens this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotal {
    pub key: KeyId,
    pub account: String,
    pub day_requests: u64,
    pub month_tokens: u64,
}

/// A key as listed to an operator: everything but the hash.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: KeyId,
    pub key_prefix: String,
    /// A publishable key's whole text (see [`KeyIdentity::public_key`]).
    pub public_key: Option<String>,
    pub kind: KeyKind,
    pub name: String,
    pub account: String,
    pub limits: KeyLimits,
    pub access: KeyAccess,
    pub policy: KeyPolicy,
    pub project: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl KeyInfo {
    pub fn status_at(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some_and(|at| now >= at) {
            "revoked"
        } else if self.expires_at.is_some_and(|at| now >= at) {
            "expired"
        } else if self.policy.disabled {
            "disabled"
        } else {
            "active"
        }
    }

    /// The settings of the key that replaces this one in a rotation: same account, name, limits,
    /// access, policy, project, description, metadata and expiry.
    pub fn replacement(&self, created_at: i64) -> NewKey {
        NewKey {
            kind: self.kind,
            name: self.name.clone(),
            account: self.account.clone(),
            limits: self.limits,
            access: self.access.clone(),
            policy: self.policy.clone(),
            project: self.project.clone(),
            description: self.description.clone(),
            metadata: self.metadata.clone(),
            created_at,
            expires_at: self.expires_at,
        }
    }
}

/// A new account: its id (made by the caller, as key ids are), email and password hash (the store
/// never sees a password).
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub plan: String,
    pub key_cap: u32,
    pub created_at: i64,
}

/// An account as the store holds it (without its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub id: String,
    pub email: Option<String>,
    pub plan: String,
    pub key_cap: u32,
    pub created_at: i64,
    /// Access tokens issued in an earlier epoch are refused.
    pub token_epoch: u64,
    /// Refused at login, and its keys refused on the data plane.
    pub disabled: bool,
}

/// What a key refresh returns besides the keys themselves: the plans, and the version to ask from next.
pub struct KeyChanges {
    /// Every account's plan, whenever anything changed.
    pub plans: Vec<(String, String)>,
    /// Every disabled account, whenever anything changed.
    pub disabled: Vec<String>,
    pub version: i64,
}

/// A new project: its id (made by the caller), owner, name and key cap.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub id: String,
    pub account: String,
    pub name: String,
    pub key_cap: u32,
    pub created_at: i64,
}

/// A project as the store holds it, with the keys in it that are active now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectInfo {
    pub id: String,
    pub account: String,
    pub name: String,
    pub key_cap: u32,
    pub created_at: i64,
    /// Keys neither revoked nor expired (a disabled key counts: it can be enabled again).
    pub active_keys: usize,
}

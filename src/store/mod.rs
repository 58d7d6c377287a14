//! Durable state. The embedded default is one SQLite file ([`sqlite::SqliteStore`]); key writes are
//! fsynced before they return. The server reads keys from memory and polls the store for changes.

pub mod sync;

pub mod sqlite;

pub use sqlite::SqliteStore;
pub use sqlite::key_cap::Rotated;

use crate::auth::access::KeyAccess;
use crate::auth::keys::{KeyId, KeyKind, KeyLimits};

/// What a new key is made of (its secret is generated).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub kind: KeyKind,
    pub name: String,
    pub account: String,
    pub limits: KeyLimits,
    pub access: KeyAccess,
    pub project: Option<String>,
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
            project: None,
            created_at,
            expires_at: None,
        }
    }
}

impl NewKey {
    /// The replacement of `old` in a rotation: same account, name, limits, access, project and expiry.
    pub fn replacing(old: &KeyInfo, created_at: i64) -> NewKey {
        NewKey {
            kind: old.kind,
            name: old.name.clone(),
            account: old.account.clone(),
            limits: old.limits,
            access: old.access.clone(),
            project: old.project.clone(),
            created_at,
            expires_at: old.expires_at,
        }
    }
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub key: KeyId,
    pub key_prefix: String,
    pub day: i64,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A key as listed to an operator: everything but the hash.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: KeyId,
    pub key_prefix: String,
    pub kind: KeyKind,
    pub name: String,
    pub account: String,
    pub limits: KeyLimits,
    pub access: KeyAccess,
    pub project: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
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

impl KeyInfo {
    pub fn status_at(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some_and(|at| now >= at) {
            "revoked"
        } else if self.expires_at.is_some_and(|at| now >= at) {
            "expired"
        } else {
            "active"
        }
    }
}

/// What a key refresh returns besides the keys themselves: the plans, and the version to ask from next.
pub struct KeyChanges {
    /// Every account's plan, whenever anything changed.
    pub plans: Vec<(String, String)>,
    /// Every disabled account, whenever anything changed.
    pub disabled: Vec<String>,
    pub version: i64,
}

#[derive(Debug)]
pub enum StoreError {
    Sqlite(rusqlite::Error),
    Corrupt(String),
    Random(getrandom::Error),
    /// A unique value (an account's email) is taken.
    Conflict(String),
    /// The account already has this many active keys, its cap.
    KeyCapReached(usize),
    /// The key is revoked or expired, so it cannot be rotated.
    KeyNotActive,
    /// The key was rotated already and is in its grace period until this instant.
    RotationPending(i64),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "store: {e}"),
            StoreError::Corrupt(what) => write!(f, "store: unreadable row: {what}"),
            StoreError::Random(e) => write!(f, "random source failed: {e}"),
            StoreError::Conflict(what) => write!(f, "{what} already exists"),
            StoreError::KeyCapReached(active) => {
                write!(f, "the account already has {active} active keys, its cap; revoke one first")
            }
            StoreError::KeyNotActive => write!(f, "only an active key can be rotated"),
            StoreError::RotationPending(at) => {
                write!(f, "the key was rotated already; it stays valid until {}", crate::clock::rfc3339(*at))
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite(e)
    }
}

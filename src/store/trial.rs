//! The rows of trial keys: a device's key as issued or found, and what a claim did.

use crate::auth::keys::KeyRecord;

use super::KeyInfo;

/// The account that holds every trial key until one is claimed (made by the schema; its key cap does
/// not apply to trial keys).
pub const TRIAL_ACCOUNT: &str = "trial";

/// A device's active trial key after an issuance: the one just written (`created`), or the one another
/// request wrote first.
#[derive(Debug, Clone)]
pub struct TrialIssue {
    pub record: KeyRecord,
    pub created: bool,
}

/// What a claim of a trial key found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Moved into the account: the key as it is now.
    Claimed(Box<KeyInfo>),
    /// No such key, or revoked or expired.
    NotFound,
    /// A key of another kind.
    NotTrial,
    /// Claimed before.
    AlreadyClaimed,
}

//! Claiming a trial key into an account: the caller proves it holds the key by its full text, and the
//! store moves it (README, Trial keys for first-time users). A claimed key keeps working under the same
//! text, as a key of the account like one it created: the configured default limits, every scope, any
//! provider and model, no expiry, counted against the account's key cap. Its usage so far moves to the
//! account, and its device gets a new trial key on its next request without one.

use super::{ControlPlane, ServiceError};
use crate::auth::keys::{self, KeyKind};
use crate::store::{Claim, KeyInfo};

impl ControlPlane<'_> {
    /// Moves the trial key `trial_key` (its full text) into `account` at `now`.
    pub async fn claim_trial_key(&self, account: &str, trial_key: &str, now: i64) -> Result<KeyInfo, ServiceError> {
        let invalid = |message: &str| ServiceError::Invalid { field: "trial_key".into(), message: message.into() };
        let not_found = || ServiceError::NotFound("trial key".into());
        let text = trial_key.trim();
        // Text of a trial key's shape that is no key (a checksum that fails) names no key: 404, as an
        // unknown one does.
        let trial_shape = text.strip_prefix(self.config.keys.prefix.as_str()).is_some_and(|r| r.starts_with("_trial_"));
        let parsed = keys::parse(&self.config.keys.prefix, text)
            .ok_or_else(|| if trial_shape { not_found() } else { invalid("is not a tollgate key") })?;
        if parsed.kind != KeyKind::Trial {
            return Err(invalid("is not a trial key"));
        }
        // Only the holder of the whole key may claim it; its prefix alone (as logs show it) is not enough.
        match self.store.key_record(parsed.id).await? {
            Some(record) if record.hash == self.hasher.hash(text) => {}
            _ => return Err(not_found()),
        }
        if self.store.account(account.to_owned()).await?.is_none() {
            return Err(ServiceError::NotFound(format!("account {account:?}")));
        }
        match self.store.claim_trial_key(parsed.id, account.to_owned(), now).await? {
            Claim::Claimed(info) => Ok(*info),
            Claim::NotFound => Err(not_found()),
            Claim::NotTrial => Err(invalid("is not a trial key")),
            Claim::AlreadyClaimed => Err(ServiceError::Conflict {
                field: None,
                code: "already_claimed",
                message: "This trial key was claimed already".into(),
            }),
        }
    }
}

//! Signing secrets of publishable keys (docs/ARCHITECTURE.md, Key kinds): made here, beside `mint`, sealed under the
//! server's sealing key (`auth::signing`) and stored; the clear secret goes back to the caller to be shown once.
//! Without a sealing key (neither `TOLLGATE_SIGNING_KEY` nor `TOLLGATE_KEY_HASH_SECRET` set) a publishable key
//! is made without one, and a key that requires identity tokens is refused.

use super::{ControlPlane, ServiceError};
use crate::auth::keys::{KeyId, KeyKind};
use crate::auth::policy::KeyPolicy;
use crate::auth::signing::{Sealer, SigningSecret};
use crate::store::KeyInfo;

/// Why a key has no signing secret, as the API and the CLI say it.
pub const NO_SEALING_KEY: &str = "cannot be made: the server has no sealing key (set TOLLGATE_SIGNING_KEY to 32 bytes, \
     64 hex digits or base64, or TOLLGATE_KEY_HASH_SECRET)";

impl ControlPlane<'_> {
    /// Whether signing secrets can be made and sealed here.
    pub fn can_sign(&self) -> bool {
        self.config.keys.signing_key.is_some()
    }

    /// A policy that asks for identity tokens needs a signing secret to verify them: a publishable key
    /// with `require_identity` is refused where none can be made. (A secret key may require an end user
    /// and name it in `X-Tollgate-End-User`.)
    pub(super) fn check_identity(&self, kind: KeyKind, policy: &KeyPolicy) -> Result<(), ServiceError> {
        if kind == KeyKind::Publishable && policy.require_identity && !self.can_sign() {
            return Err(ServiceError::Conflict {
                code: "signing_unavailable",
                field: Some("require_identity".into()),
                message: format!("needs a signing secret, which {NO_SEALING_KEY}"),
            });
        }
        Ok(())
    }

    /// A new signing secret for publishable key `id`, sealed and stored in place of any earlier one,
    /// which stops verifying once a server loads the change (this one at once: the caller reloads the
    /// key). The secret is for the caller to show once.
    pub async fn issue_signing_secret(&self, id: KeyId, now: i64) -> Result<SigningSecret, ServiceError> {
        let key = self.key(id).await?;
        // Both refusals are about the key or the server as they are, not the request: 409.
        let conflict = |code, message: &str| ServiceError::Conflict { code, field: None, message: message.into() };
        if key.kind != KeyKind::Publishable {
            return Err(conflict("kind_mismatch", "Only publishable keys have a signing secret"));
        }
        let sealing_key = self
            .config
            .keys
            .signing_key
            .ok_or_else(|| conflict("signing_unavailable", &format!("A signing secret {NO_SEALING_KEY}")))?;
        let secret = SigningSecret::generate(&self.config.keys.prefix)?;
        let sealed = Sealer::new(&sealing_key).seal(id, &secret)?;
        if !self.store.set_signing_secret(id, sealed, now).await? {
            return Err(ServiceError::NotFound(format!("active key {id}")));
        }
        Ok(secret)
    }

    /// The signing secret of a key just made: a new one for a publishable key where a sealing key is
    /// set, else none.
    pub async fn signing_for_new(&self, key: &KeyInfo, now: i64) -> Result<Option<SigningSecret>, ServiceError> {
        if key.kind != KeyKind::Publishable || !self.can_sign() {
            return Ok(None);
        }
        self.issue_signing_secret(key.id, now).await.map(Some)
    }
}

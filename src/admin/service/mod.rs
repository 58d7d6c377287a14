//! The control plane: every key and account operation, with its one set of checks, used alike by the
//! management API and the CLI. Callers parse their own input (JSON, flags) and shape their own
//! output; what is allowed and what is written is decided here.

use crate::auth::keys::{self, KeyHasher, KeyKind, SecretKey};
use crate::store::{KeyIdentity, StoreError};

/// Generates a key of `kind` and hashes it: the secret for the caller to show once, the identity for
/// the store. Generation and hashing stay out of every store backend.
pub fn mint(prefix: &str, hasher: &KeyHasher, kind: KeyKind) -> Result<(SecretKey, KeyIdentity), StoreError> {
    let (secret, parsed) = keys::generate(prefix, kind).map_err(StoreError::Random)?;
    let identity = KeyIdentity {
        id: parsed.id,
        key_prefix: keys::key_prefix(prefix, kind, parsed.id),
        hash: hasher.hash(secret.expose()),
    };
    Ok((secret, identity))
}

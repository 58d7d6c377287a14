//! Signing secrets of publishable keys (docs/ARCHITECTURE.md, Key kinds): the `<prefix>_sig_…` text an app's
//! server signs identity tokens with, generated from the OS CSPRNG (43 base62 characters, 256 bits), shown once
//! and kept only sealed: ChaCha20-Poly1305 under the server's sealing key (`TOLLGATE_SIGNING_KEY`, or one derived
//! from `TOLLGATE_KEY_HASH_SECRET`), a random 96-bit nonce per seal, the key's id as associated data, so a copy
//! of the database alone cannot sign and a sealed secret cannot be moved to another key. The key table opens
//! it when a key is loaded and holds it in memory only, in a [`SigningSecret`] that never prints.

use std::sync::Arc;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::auth::id::{self, KeyId};

/// The first byte of a sealed secret: the format (`1`: ChaCha20-Poly1305, nonce, ciphertext and tag).
const SEALED_V1: u8 = 1;

/// A signing secret in clear: the HMAC key of a publishable key's identity tokens. Never printed.
pub struct SigningSecret(String);

impl SigningSecret {
    /// A new secret `<prefix>_sig_<43 base62>`.
    pub fn generate(prefix: &str) -> Result<SigningSecret, getrandom::Error> {
        let body = id::random_base62::<{ id::SECRET_LEN }>()?;
        let mut text = String::with_capacity(prefix.len() + 5 + body.len());
        text.push_str(prefix);
        text.push_str("_sig_");
        text.extend(body.iter().map(|&b| b as char));
        Ok(SigningSecret(text))
    }

    /// The secret as the app's server holds it (its bytes are the HMAC key).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The server's key that seals signing secrets for the store.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        // A 32-byte key is exactly what ChaCha20-Poly1305 takes, so this cannot fail.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).unwrap_or_else(|_| unreachable!("32-byte key"));
        Sealer { key: LessSafeKey::new(unbound) }
    }

    /// `secret` sealed for key `id`: format byte, nonce, ciphertext and tag.
    pub fn seal(&self, id: KeyId, secret: &SigningSecret) -> Result<Vec<u8>, getrandom::Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)?;
        let mut sealed = secret.0.as_bytes().to_vec();
        // ring refuses only an input beyond its length limit (about 256 GiB); a secret is 50 bytes.
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_str()), &mut sealed)
            .map_err(|_| getrandom::Error::UNSUPPORTED)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The secret sealed for key `id`; `None` if it was sealed under another server key, for another
    /// key id, or altered.
    pub fn open(&self, id: KeyId, sealed: &[u8]) -> Option<SigningSecret> {
        let (&format, rest) = sealed.split_first()?;
        if format != SEALED_V1 || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let clear = self.key.open_in_place(nonce, Aad::from(id.as_str()), &mut buffer).ok()?;
        String::from_utf8(clear.to_vec()).ok().map(SigningSecret)
    }
}

/// A key's signing secret as the key table holds it.
#[derive(Clone, Default)]
pub enum Signing {
    /// The key has none (a secret key, or a publishable key made without a sealing key).
    #[default]
    None,
    /// As read from the store; the key table opens it on load.
    Sealed(Arc<[u8]>),
    /// Opened: identity tokens of this key verify against it.
    Open(Arc<SigningSecret>),
    /// Stored, but this server cannot open it (another sealing key, or altered): no token verifies.
    Unopenable,
}

impl Signing {
    /// The secret tokens verify against, once opened.
    pub fn secret(&self) -> Option<&SigningSecret> {
        match self {
            Signing::Open(secret) => Some(secret),
            _ => None,
        }
    }

    /// Opens a sealed secret with `sealer` (for key `id`); anything else is returned as it is.
    pub fn opened(self, id: KeyId, sealer: Option<&Sealer>) -> Signing {
        match self {
            Signing::Sealed(sealed) => match sealer.and_then(|s| s.open(id, &sealed)) {
                Some(secret) => Signing::Open(Arc::new(secret)),
                None => {
                    tracing::warn!(key = %id, "the key's signing secret cannot be opened with this server's sealing key; its identity tokens are refused");
                    Signing::Unopenable
                }
            },
            other => other,
        }
    }
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signing::None => "None",
            Signing::Sealed(_) => "Sealed([redacted])",
            Signing::Open(_) => "Open([redacted])",
            Signing::Unopenable => "Unopenable",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> KeyId {
        KeyId::parse(text).unwrap()
    }

    #[test]
    fn a_secret_has_256_bits_and_never_prints() {
        let a = SigningSecret::generate("tg").unwrap();
        let b = SigningSecret::generate("tg").unwrap();
        assert!(a.expose().starts_with("tg_sig_") && a.expose().len() == 7 + id::SECRET_LEN);
        assert!(a.expose()[7..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(format!("{a:?}"), "[redacted]");
        let signing = Signing::Open(Arc::new(a));
        assert_eq!(format!("{signing:?}"), "Open([redacted])");
    }

    #[test]
    fn sealed_secrets_open_only_for_their_key_under_the_same_server_key() {
        let sealer = Sealer::new(&[7; 32]);
        let secret = SigningSecret::generate("tg").unwrap();
        let (mine, other) = (id("AAAAAAAAAAAA"), id("BBBBBBBBBBBB"));
        let sealed = sealer.seal(mine, &secret).unwrap();
        let text = secret.expose().as_bytes();
        assert!(!sealed.windows(text.len()).any(|w| w == text), "the secret in clear");
        assert!(!sealed.windows(16).any(|w| text.windows(16).any(|t| t == w)), "a part of it in clear");
        assert_eq!(sealer.open(mine, &sealed).unwrap().expose(), secret.expose());
        assert!(sealer.open(other, &sealed).is_none(), "moved to another key");
        assert!(Sealer::new(&[8; 32]).open(mine, &sealed).is_none(), "another server key");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(mine, &altered).is_none());
        assert!(sealer.open(mine, &[]).is_none() && sealer.open(mine, &[1, 2, 3]).is_none());
        let twice = sealer.seal(mine, &secret).unwrap();
        assert_ne!(sealed, twice, "a fresh nonce each time");
        let opened = Signing::Sealed(Arc::from(sealed)).opened(mine, Some(&sealer));
        assert_eq!(opened.secret().unwrap().expose(), secret.expose());
        let unopened = Signing::Sealed(Arc::from(twice)).opened(mine, None);
        assert!(matches!(unopened, Signing::Unopenable));
    }
}

//! Public ids and random base62 text: the alphabet, the lengths of a key's id and secret, [`KeyId`], and
//! uniform draws from the OS CSPRNG. Service keys and signing secrets are made of these.

/// Public id: safe to show and log; the store's primary key.
pub const ID_LEN: usize = 12;
/// 43 base62 characters carry 256.03 bits.
pub const SECRET_LEN: usize = 43;

/// The base62 alphabet, in the order of its values.
pub(crate) const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The public id of a key: [`ID_LEN`] base62 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; ID_LEN]);

impl KeyId {
    /// An id of characters drawn by [`random_base62`] (so all alphanumeric).
    pub(crate) fn drawn(bytes: [u8; ID_LEN]) -> KeyId {
        KeyId(bytes)
    }

    pub fn parse(s: &str) -> Option<KeyId> {
        let bytes: [u8; ID_LEN] = s.as_bytes().try_into().ok()?;
        bytes.iter().all(u8::is_ascii_alphanumeric).then_some(KeyId(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII alphanumerics (parse and generate check it).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A random public id, for accounts and the like.
pub fn random_id() -> Result<String, getrandom::Error> {
    Ok(random_base62::<ID_LEN>()?.iter().map(|&b| b as char).collect())
}

/// Uniform base62 characters by rejection sampling (bytes ≥ 248 are dropped so `% 62` has no bias).
pub(crate) fn random_base62<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    let mut filled = 0;
    let mut pool = [0u8; 64];
    while filled < N {
        getrandom::fill(&mut pool)?;
        for &b in pool.iter().filter(|&&b| b < 248) {
            if filled == N {
                break;
            }
            out[filled] = BASE62[usize::from(b % 62)];
            filled += 1;
        }
    }
    Ok(out)
}

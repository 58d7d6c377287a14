//! The caller's own provider key, held in a type that never prints.

use http::HeaderValue;

/// Longest provider key accepted, in bytes.
pub const MAX_PROVIDER_KEY_LEN: usize = 512;

/// The caller's provider key. Its `Debug` and `Display` print `[redacted]`; the value is only ever
/// written into the upstream request, marked sensitive.
#[derive(Clone)]
pub struct ProviderKey(HeaderValue);

impl ProviderKey {
    /// The key in a header value: printable ASCII without space, `&`, `#`, `%`, `?` or `/`, at most
    /// [`MAX_PROVIDER_KEY_LEN`] bytes; the copy kept is marked sensitive.
    pub fn parse(value: &HeaderValue) -> Option<ProviderKey> {
        if !is_valid_provider_key(value.as_bytes()) {
            return None;
        }
        let mut value = value.clone();
        value.set_sensitive(true);
        Some(ProviderKey(value))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The key as text; validated ASCII, so never lossy.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The key as a sensitive header value.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn is_valid_provider_key(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= MAX_PROVIDER_KEY_LEN
        && bytes.iter().all(|&b| b.is_ascii_graphic() && !matches!(b, b'&' | b'#' | b'%' | b'?' | b'/'))
}

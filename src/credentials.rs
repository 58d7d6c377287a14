//! The two keys a caller presents: where the service key is found (`Authorization: Bearer`, `x-api-key`
//! or `x-goog-api-key`, the headers each SDK sends natively), and the provider key, validated before any
//! connection and held in a type that never prints.

use http::{HeaderMap, HeaderValue, header};

use crate::error::ProxyError;

/// The header carrying the caller's own provider key.
pub const PROVIDER_KEY_HEADER: &str = "x-provider-key";
/// Longest provider key accepted, in bytes.
pub const MAX_PROVIDER_KEY_LEN: usize = 512;

/// Finds the service key. The Anthropic and Gemini SDKs put their `api_key` in `x-api-key` /
/// `x-goog-api-key`, and users may set both that and `Authorization`, so among the present candidates one
/// that carries tollgate's prefix wins; otherwise the first present one is judged (and refused).
pub fn service_key<'a>(headers: &'a HeaderMap, prefix: &str) -> Result<&'a str, ProxyError> {
    let bearer = headers.get(header::AUTHORIZATION).map(|v| {
        let v = v.to_str().unwrap_or_default();
        match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => "",
        }
    });
    let candidates = [
        bearer,
        headers.get("x-api-key").map(|v| v.to_str().unwrap_or_default()),
        headers.get("x-goog-api-key").map(|v| v.to_str().unwrap_or_default()),
    ];
    let is_ours = |k: &str| k.len() > prefix.len() && k.starts_with(prefix) && k.as_bytes()[prefix.len()] == b'_';
    candidates
        .iter()
        .flatten()
        .find(|k| is_ours(k))
        .or_else(|| candidates.iter().flatten().next())
        .copied()
        .ok_or(ProxyError::MissingServiceKey)
}

/// The caller's provider key. Its `Debug` and `Display` print `[redacted]`; the value is only ever
/// written into the upstream request, marked sensitive.
pub struct ProviderKey(HeaderValue);

impl ProviderKey {
    /// Takes the key from `X-Provider-Key`: exactly one header, printable ASCII without space, `&`, `#`, `%`,
    /// `?` or `/`, at most [`MAX_PROVIDER_KEY_LEN`] bytes.
    pub fn from_headers(headers: &HeaderMap) -> Result<ProviderKey, ProxyError> {
        let mut values = headers.get_all(PROVIDER_KEY_HEADER).iter();
        let value = values.next().ok_or(ProxyError::MissingProviderKey)?;
        if values.next().is_some() || !is_valid_provider_key(value.as_bytes()) {
            return Err(ProxyError::InvalidProviderKey);
        }
        let mut value = value.clone();
        value.set_sensitive(true);
        Ok(ProviderKey(value))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn the_service_key_comes_from_any_sdk_header() {
        let h = headers(&[("authorization", b"Bearer tg_live_x")]);
        assert_eq!(service_key(&h, "tg"), Ok("tg_live_x"));
        let h = headers(&[("authorization", b"bearer   tg_live_x ")]);
        assert_eq!(service_key(&h, "tg"), Ok("tg_live_x"));
        let h = headers(&[("x-api-key", b"tg_live_y")]);
        assert_eq!(service_key(&h, "tg"), Ok("tg_live_y"));
        // google-genai always sends its api_key; the Authorization header carries ours.
        let h = headers(&[("x-goog-api-key", b"unused"), ("authorization", b"Bearer tg_live_z")]);
        assert_eq!(service_key(&h, "tg"), Ok("tg_live_z"));
        // An Anthropic SDK with ANTHROPIC_API_KEY in the env and auth_token set.
        let h = headers(&[("x-api-key", b"tg_live_a"), ("authorization", b"Bearer sk-ant-real")]);
        assert_eq!(service_key(&h, "tg"), Ok("tg_live_a"));
        let h = headers(&[("authorization", b"Basic abc")]);
        assert_eq!(service_key(&h, "tg"), Ok(""));
        assert_eq!(service_key(&HeaderMap::new(), "tg"), Err(ProxyError::MissingServiceKey));
    }

    #[test]
    fn provider_keys_are_validated() {
        let ok = headers(&[("x-provider-key", b"sk-proj-abc_DEF.123=+")]);
        assert_eq!(ProviderKey::from_headers(&ok).unwrap().as_str(), "sk-proj-abc_DEF.123=+");
        assert_eq!(ProviderKey::from_headers(&HeaderMap::new()).unwrap_err(), ProxyError::MissingProviderKey);
        let long = vec![b'a'; MAX_PROVIDER_KEY_LEN + 1];
        for bad in [
            &b""[..],
            b"sk abc",
            b"sk&x=1",
            b"sk#frag",
            b"sk%0d",
            b"sk?a",
            b"sk/..",
            b"sk\tx",
            "sk-é".as_bytes(),
            &long,
        ] {
            let h = headers(&[("x-provider-key", bad)]);
            assert_eq!(ProviderKey::from_headers(&h).unwrap_err(), ProxyError::InvalidProviderKey, "{bad:?}");
        }
        let two = headers(&[("x-provider-key", b"a"), ("x-provider-key", b"b")]);
        assert_eq!(ProviderKey::from_headers(&two).unwrap_err(), ProxyError::InvalidProviderKey);
    }

    #[test]
    fn the_provider_key_never_prints() {
        let h = headers(&[("x-provider-key", b"sk-canary")]);
        let k = ProviderKey::from_headers(&h).unwrap();
        assert_eq!(format!("{k:?} {k}"), "[redacted] [redacted]");
        assert!(!format!("{:?}", k.header_value()).contains("canary"));
    }
}

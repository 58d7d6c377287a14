//! The two keys a caller presents: where the service key is found (`Authorization: Bearer`, `x-api-key`
//! or `x-goog-api-key`, the headers each SDK sends natively), and the provider key, validated before any
//! connection and held in a type that never prints.

use http::{HeaderMap, header};

use crate::error::ProxyError;
pub use crate::providers::key::{MAX_PROVIDER_KEY_LEN, ProviderKey};

/// The header carrying the caller's own provider key.
pub const PROVIDER_KEY_HEADER: &str = "x-provider-key";

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

/// Takes the caller's provider key from `X-Provider-Key`: exactly one header, printable ASCII without
/// space, `&`, `#`, `%`, `?` or `/`, at most [`MAX_PROVIDER_KEY_LEN`] bytes.
pub fn provider_key(headers: &HeaderMap) -> Result<ProviderKey, ProxyError> {
    let mut values = headers.get_all(PROVIDER_KEY_HEADER).iter();
    let value = values.next().ok_or(ProxyError::MissingProviderKey)?;
    if values.next().is_some() {
        return Err(ProxyError::InvalidProviderKey);
    }
    ProviderKey::parse(value).ok_or(ProxyError::InvalidProviderKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
        assert_eq!(provider_key(&ok).unwrap().as_str(), "sk-proj-abc_DEF.123=+");
        assert_eq!(provider_key(&HeaderMap::new()).unwrap_err(), ProxyError::MissingProviderKey);
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
            assert_eq!(provider_key(&h).unwrap_err(), ProxyError::InvalidProviderKey, "{bad:?}");
        }
        let two = headers(&[("x-provider-key", b"a"), ("x-provider-key", b"b")]);
        assert_eq!(provider_key(&two).unwrap_err(), ProxyError::InvalidProviderKey);
    }

    #[test]
    fn the_provider_key_never_prints() {
        let h = headers(&[("x-provider-key", b"sk-canary")]);
        let k = provider_key(&h).unwrap();
        assert_eq!(format!("{k:?} {k}"), "[redacted] [redacted]");
        assert!(!format!("{:?}", k.header_value()).contains("canary"));
    }
}

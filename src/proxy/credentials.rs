//! The two keys a caller presents: the service key, whose failures (found and judged in `auth`) become
//! the route's 401s here, and the provider key, validated before any connection and held in a type that
//! never prints.

use http::HeaderMap;

use crate::auth::identity::IdentityError;
use crate::auth::policy::ProviderCredential;
use crate::auth::{AuthError, Principal};
use crate::error::ProxyError;
use crate::providers::ProviderConfig;
pub use crate::providers::key::{MAX_PROVIDER_KEY_LEN, ProviderKey};

/// The header carrying the caller's own provider key.
pub const PROVIDER_KEY_HEADER: &str = "x-provider-key";

/// A caller that did not authenticate, as the error its route answers with.
impl From<AuthError> for ProxyError {
    fn from(error: AuthError) -> ProxyError {
        match error {
            AuthError::Missing => ProxyError::MissingServiceKey,
            AuthError::Invalid => ProxyError::InvalidServiceKey,
            AuthError::Expired => ProxyError::ExpiredServiceKey,
            AuthError::Disabled => ProxyError::KeyDisabled,
        }
    }
}

/// A request whose end user could not be named, as the error its route answers with.
impl From<IdentityError> for ProxyError {
    fn from(error: IdentityError) -> ProxyError {
        match error {
            IdentityError::Expired => ProxyError::IdentityTokenExpired,
            IdentityError::Invalid(why) => ProxyError::InvalidIdentityToken(why),
            IdentityError::BadEndUser => ProxyError::InvalidEndUser,
            IdentityError::EndUserHeaderNotAllowed => ProxyError::Forbidden(
                "X-Tollgate-End-User is for secret keys; a publishable key names its end user with an identity \
                 token in X-Tollgate-Identity"
                    .into(),
            ),
        }
    }
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

/// Phase: the provider key for a request of `principal` to `provider`. The caller's `X-Provider-Key`
/// when it sends one, even for a key allowed the server's credential: the caller then pays its own
/// provider. Without one, a key allowed the server's credential (`provider_credential: server`) uses
/// the provider's `key_env` credential, and a provider without one is a 400 naming it; any other key
/// without one is the 400 it always was.
pub fn provider_key_for(
    principal: &Principal,
    provider: &ProviderConfig,
    headers: &HeaderMap,
) -> Result<ProviderKey, ProxyError> {
    match provider_key(headers) {
        Err(ProxyError::MissingProviderKey)
            if principal.key.policy.provider_credential == ProviderCredential::Server =>
        {
            let key = provider.server_key.as_deref().ok_or_else(|| {
                ProxyError::NoServerCredential(format!(
                    "This key uses the server's provider credential, but provider `{}` holds none (key_env in \
                     proxy.toml); send X-Provider-Key",
                    provider.name
                ))
            })?;
            Ok(key.clone())
        }
        other => other,
    }
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
    fn authentication_failures_are_the_401s_of_the_error_table() {
        assert_eq!(ProxyError::from(AuthError::Missing), ProxyError::MissingServiceKey);
        assert_eq!(ProxyError::from(AuthError::Invalid), ProxyError::InvalidServiceKey);
        assert_eq!(ProxyError::from(AuthError::Expired), ProxyError::ExpiredServiceKey);
        assert_eq!(ProxyError::from(AuthError::Disabled), ProxyError::KeyDisabled);
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

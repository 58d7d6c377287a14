//! Who a request is from, as authentication found it: the service key it presented (found in whichever
//! header its SDK sends), checked against the key table. Later key kinds add to the [`Principal`] (the
//! end user a request acts for, the browser origin a publishable key was accepted from) without the
//! phases that read it changing.

use std::sync::Arc;

use http::{HeaderMap, header};

use crate::auth::keys::{KeyLabel, KeyRecord, KeyTable, Refusal};
use crate::auth::policy::EndUserLimits;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The service key: its account, limits, scopes and allowlists.
    pub key: Arc<KeyRecord>,
    /// How the key is named in logs.
    pub label: KeyLabel,
    /// The end user the request acts for (identity tokens, `X-Tollgate-End-User`; `auth::identity`).
    pub end_user: Option<Arc<str>>,
    /// The limits that end user runs under: the key's `end_user_limits`, narrowed by its token.
    pub end_user_limits: EndUserLimits,
    /// The browser origin a publishable key (or a secret key allowed in browsers) was accepted from.
    pub origin: Option<Arc<str>>,
}

impl Principal {
    /// The principal of a key found by other means than a presented secret (a device's trial key).
    pub fn of_key(keys: &KeyTable, key: Arc<KeyRecord>) -> Principal {
        Principal {
            label: keys.label(&key),
            key,
            end_user: None,
            end_user_limits: EndUserLimits::default(),
            origin: None,
        }
    }
}

/// Why a caller was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No service key in any header an SDK sends.
    Missing,
    /// Malformed, unknown, wrong secret, revoked or of a disabled account: callers cannot tell these
    /// apart.
    Invalid,
    Expired,
    Disabled,
}

/// Authenticates a request by its headers at unix time `now`.
pub fn authenticate(keys: &KeyTable, headers: &HeaderMap, now: i64) -> Result<Principal, AuthError> {
    let presented = service_key(headers, keys.prefix())?;
    let key = keys.verify(presented, now).map_err(|refusal| match refusal {
        Refusal::Invalid => AuthError::Invalid,
        Refusal::Expired => AuthError::Expired,
        Refusal::Disabled => AuthError::Disabled,
    })?;
    Ok(Principal::of_key(keys, key))
}

/// Finds the service key. The Anthropic and Gemini SDKs put their `api_key` in `x-api-key` /
/// `x-goog-api-key`, and users may set both that and `Authorization`, so among the present candidates one
/// that carries tollgate's prefix wins; otherwise the first present one is judged (and refused).
pub fn service_key<'a>(headers: &'a HeaderMap, prefix: &str) -> Result<&'a str, AuthError> {
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
        .ok_or(AuthError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{self, KeyHasher, KeyKind, KeyLimits};
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
        assert_eq!(service_key(&HeaderMap::new(), "tg"), Err(AuthError::Missing));
    }

    #[test]
    fn a_known_active_key_is_the_principal_and_every_other_is_refused() {
        let hasher = KeyHasher::new(None);
        let table = KeyTable::new("tg".into(), hasher.clone());
        let add = |expires_at| {
            let (secret, parsed) = keys::generate("tg", KeyKind::Live).unwrap();
            table.upsert(KeyRecord {
                id: parsed.id,
                account: "acct".into(),
                limits: KeyLimits::default(),
                kind: parsed.kind,
                hash: hasher.hash(secret.expose()),
                created_at: 0,
                expires_at,
                revoked_at: None,
                access: Default::default(),
                policy: Default::default(),
                signing: Default::default(),
                version: 0,
            });
            (secret, parsed.id)
        };
        let (live, id) = add(None);
        let (expired, _) = add(Some(100));
        let bearer = |k: &str| headers(&[("authorization", format!("Bearer {k}").as_bytes())]);

        let principal = authenticate(&table, &bearer(live.expose()), 200).unwrap();
        assert_eq!((principal.key.id, &*principal.key.account), (id, "acct"));
        assert_eq!(principal.label.to_string(), keys::key_prefix("tg", KeyKind::Live, id));
        assert_eq!((principal.end_user, principal.origin), (None, None));
        assert_eq!(authenticate(&table, &bearer(expired.expose()), 200).unwrap_err(), AuthError::Expired);
        assert!(authenticate(&table, &bearer(expired.expose()), 99).is_ok());
        assert_eq!(authenticate(&table, &bearer("tg_live_nope"), 200).unwrap_err(), AuthError::Invalid);
        assert_eq!(authenticate(&table, &HeaderMap::new(), 200).unwrap_err(), AuthError::Missing);
    }
}

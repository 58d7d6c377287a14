//! The end user a request acts for (docs/ARCHITECTURE.md, Key kinds). A publishable key's caller proves it with an
//! identity token in `X-Tollgate-Identity`: a JWT signed HS256 by the app's server with the key's signing secret,
//! header `kid` = the key's id, claims `sub` (the end user, 1-128 printable characters), `iat`, `exp` (at most one
//! hour after `iat`, 30 s of leeway for clocks) and optional `limits` that narrow the key's `end_user_limits`
//! (each member the smaller of the two; a larger claim is clamped, not refused). A secret (`live`) key's holder
//! is trusted and names the end user in `X-Tollgate-End-User`; a publishable or trial key may not (its holder
//! is a browser or a device, so only a token the app's server signed names an end user).
//!
//! Verification is the `jsonwebtoken` crate's, with the algorithm pinned to HS256 (`none`, HS512, RS256 and
//! every other `alg` are refused). Neither the token nor any part of it is ever logged or put in an error:
//! every refusal is one of the fixed messages below.

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::auth::Principal;
use crate::auth::keys::KeyKind;
use crate::auth::policy::EndUserLimits;

/// The header carrying an identity token.
pub const IDENTITY_HEADER: &str = "x-tollgate-identity";
/// The header a secret key names its end user in.
pub const END_USER_HEADER: &str = "x-tollgate-end-user";
/// Clock leeway for `exp` and `iat`, seconds.
pub const LEEWAY_SECS: i64 = 30;
/// The longest a token may live: `exp - iat`, seconds.
pub const MAX_LIFETIME_SECS: i64 = 3600;
/// The longest token read; anything longer is refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The longest end-user id, in characters.
pub const MAX_END_USER_CHARS: usize = 128;

/// Why no end user could be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityError {
    /// The token verified but its `exp` (plus leeway) has passed.
    Expired,
    /// The token is missing where required, or bad; the text is fixed and says which check failed.
    Invalid(&'static str),
    /// `X-Tollgate-End-User` is empty, too long or not printable.
    BadEndUser,
    /// `X-Tollgate-End-User` from a key whose holder is not trusted to name end users.
    EndUserHeaderNotAllowed,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    limits: Option<LimitsClaim>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsClaim {
    requests_per_minute: Option<u64>,
    requests_per_day: Option<u64>,
    tokens_per_month: Option<u64>,
}

/// Names the end user of a request by `principal`'s key, from its headers, at unix time `now`: sets
/// `principal.end_user` and `principal.end_user_limits`. Nothing named is fine unless the key sets
/// `require_identity`.
pub fn identify(principal: &mut Principal, headers: &HeaderMap, now: i64) -> Result<(), IdentityError> {
    let key = &principal.key;
    let limits = key.policy.end_user_limits;
    let (end_user, limits) = if let Some(token) = headers.get(IDENTITY_HEADER) {
        let secret = key
            .signing
            .secret()
            .ok_or(IdentityError::Invalid("Invalid identity token: this key has no signing secret"))?;
        let claims = verify(token.as_bytes(), key.id.as_str(), secret.expose().as_bytes(), now)?;
        (claims.0, narrow(limits, claims.1))
    } else if let Some(named) = headers.get(END_USER_HEADER) {
        if key.kind != KeyKind::Live {
            return Err(IdentityError::EndUserHeaderNotAllowed);
        }
        (end_user_id(named.as_bytes()).ok_or(IdentityError::BadEndUser)?, limits)
    } else if key.policy.require_identity && key.kind == KeyKind::Live {
        return Err(IdentityError::Invalid(
            "Identity required: this key's requests must name their end user in X-Tollgate-End-User",
        ));
    } else if key.policy.require_identity {
        return Err(IdentityError::Invalid("Identity token required: send X-Tollgate-Identity"));
    } else {
        return Ok(());
    };
    principal.end_user = Some(end_user.into());
    principal.end_user_limits = limits;
    Ok(())
}

/// An end-user id as given: 1-128 characters of UTF-8, none of them a control character.
pub fn end_user_id(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let chars = text.chars().count();
    let printable = text.chars().all(|c| !c.is_control());
    ((1..=MAX_END_USER_CHARS).contains(&chars) && printable).then(|| text.to_owned())
}

/// Verifies `token` for the key `kid` with `secret` at `now`: the end user and the limits it claims.
fn verify(token: &[u8], kid: &str, secret: &[u8], now: i64) -> Result<(String, Option<LimitsClaim>), IdentityError> {
    use IdentityError::Invalid;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Invalid("Invalid identity token: longer than 4096 bytes"));
    }
    let token = std::str::from_utf8(token).map_err(|_| Invalid("Invalid identity token: malformed"))?.trim();
    let header = jsonwebtoken::decode_header(token).map_err(|_| Invalid("Invalid identity token: malformed"))?;
    if header.alg != Algorithm::HS256 {
        return Err(Invalid("Invalid identity token: alg must be HS256"));
    }
    if header.kid.as_deref() != Some(kid) {
        return Err(Invalid("Invalid identity token: kid is not this key's id"));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // Time and the registered claims are checked below, against `now`, with messages of their own.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation).map_err(|e| {
        Invalid(match e.kind() {
            ErrorKind::InvalidSignature => "Invalid identity token: signature does not verify",
            ErrorKind::InvalidAlgorithm => "Invalid identity token: alg must be HS256",
            ErrorKind::Json(_) => "Invalid identity token: claims malformed",
            _ => "Invalid identity token: malformed",
        })
    })?;
    check_claims(data.claims, now)
}

/// The registered claims within their bounds; the end user and its limits claim.
fn check_claims(claims: Claims, now: i64) -> Result<(String, Option<LimitsClaim>), IdentityError> {
    use IdentityError::Invalid;
    let sub = claims.sub.ok_or(Invalid("Invalid identity token: sub missing"))?;
    let sub =
        end_user_id(sub.as_bytes()).ok_or(Invalid("Invalid identity token: sub must be 1-128 printable characters"))?;
    let iat = claims.iat.ok_or(Invalid("Invalid identity token: iat missing"))?;
    let exp = claims.exp.ok_or(Invalid("Invalid identity token: exp missing"))?;
    if exp <= iat || exp.saturating_sub(iat) > MAX_LIFETIME_SECS {
        return Err(Invalid("Invalid identity token: exp must be after iat and at most 3600 s after it"));
    }
    if iat > now.saturating_add(LEEWAY_SECS) {
        return Err(Invalid("Invalid identity token: issued in the future"));
    }
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(IdentityError::Expired);
    }
    Ok((sub, claims.limits))
}

/// The key's end-user limits narrowed by a token's claim: each member the smaller where both set one.
fn narrow(key: EndUserLimits, claim: Option<LimitsClaim>) -> EndUserLimits {
    let Some(claim) = claim else {
        return key;
    };
    fn min<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    let small = |v: Option<u64>| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    EndUserLimits {
        requests_per_minute: min(key.requests_per_minute, small(claim.requests_per_minute)),
        requests_per_day: min(key.requests_per_day, small(claim.requests_per_day)),
        tokens_per_month: min(key.tokens_per_month, claim.tokens_per_month),
    }
}

#[cfg(test)]
mod tests;

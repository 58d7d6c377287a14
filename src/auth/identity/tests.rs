use std::sync::Arc;

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;
use crate::auth::keys::{KeyId, KeyLimits, KeyRecord};
use crate::auth::policy::KeyPolicy;
use crate::auth::signing::{Signing, SigningSecret};

const NOW: i64 = 1_800_000_000;
const KID: &str = "AbCdEf123456";

fn principal(kind: KeyKind, policy: KeyPolicy, secret: Option<&SigningSecret>) -> Principal {
    let keys = crate::auth::keys::KeyTable::new("tg".into(), crate::auth::keys::KeyHasher::new(None));
    let record = KeyRecord {
        id: KeyId::parse(KID).unwrap(),
        account: "acct".into(),
        limits: KeyLimits::default(),
        kind,
        hash: blake3::hash(b"-"),
        created_at: 0,
        expires_at: None,
        revoked_at: None,
        access: Default::default(),
        policy,
        signing: secret.map_or(Signing::None, |s| Signing::Open(Arc::new(clone(s)))),
        version: 0,
    };
    Principal {
        label: keys.label(&record),
        key: Arc::new(record),
        end_user: None,
        end_user_limits: EndUserLimits::default(),
        origin: None,
    }
}

/// A copy of a secret, for the test's own signing.
fn clone(secret: &SigningSecret) -> SigningSecret {
    let sealer = crate::auth::signing::Sealer::new(&[1; 32]);
    let id = KeyId::parse(KID).unwrap();
    sealer.open(id, &sealer.seal(id, secret).unwrap()).unwrap()
}

fn limited() -> KeyPolicy {
    KeyPolicy {
        end_user_limits: EndUserLimits {
            requests_per_minute: Some(10),
            requests_per_day: None,
            tokens_per_month: Some(5000),
        },
        ..KeyPolicy::default()
    }
}

fn sign(secret: &SigningSecret, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let header = Header { alg, kid: kid.map(str::to_owned), ..Header::default() };
    encode(&header, claims, &EncodingKey::from_secret(secret.expose().as_bytes())).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": NOW - 10, "exp": NOW + 600})
}

fn with(name: &str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_bytes(value.as_bytes()).unwrap(),
    );
    h
}

fn identify_at(p: &mut Principal, token: &str, now: i64) -> Result<(), IdentityError> {
    identify(p, &with(IDENTITY_HEADER, token), now)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn a_valid_token_names_its_end_user_under_the_keys_limits() {
    let secret = SigningSecret::generate("tg").unwrap();
    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    let token = sign(&secret, Algorithm::HS256, Some(KID), &claims("user-42"));
    identify_at(&mut p, &token, NOW).unwrap();
    assert_eq!(p.end_user.as_deref(), Some("user-42"));
    assert_eq!(p.end_user_limits, limited().end_user_limits);
}

#[test]
fn expiry_holds_to_the_leeway_and_says_expired_after() {
    let secret = SigningSecret::generate("tg").unwrap();
    let token = sign(&secret, Algorithm::HS256, Some(KID), &json!({"sub": "u", "iat": NOW - 100, "exp": NOW}));
    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    assert_eq!(identify_at(&mut p, &token, NOW + LEEWAY_SECS), Ok(()), "within the leeway");
    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    assert_eq!(identify_at(&mut p, &token, NOW + LEEWAY_SECS + 1), Err(IdentityError::Expired));
    assert_eq!(p.end_user, None);
    let early = sign(&secret, Algorithm::HS256, Some(KID), &json!({"sub": "u", "iat": NOW + 31, "exp": NOW + 90}));
    assert!(matches!(identify_at(&mut p, &early, NOW), Err(IdentityError::Invalid(m)) if m.contains("future")));
    let early = sign(&secret, Algorithm::HS256, Some(KID), &json!({"sub": "u", "iat": NOW + 30, "exp": NOW + 90}));
    assert_eq!(identify_at(&mut p, &early, NOW), Ok(()), "a clock 30 s ahead is tolerated");
}

/// Every malformed, forged or out-of-bounds token is refused with a fixed message that quotes none of it.
#[test]
fn bad_tokens_are_invalid_each_for_its_reason() {
    let secret = SigningSecret::generate("tg").unwrap();
    let other = SigningSecret::generate("tg").unwrap();
    let good = sign(&secret, Algorithm::HS256, Some(KID), &claims("user-1"));
    let (head, rest) = good.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let tampered = format!("{head}.{}.{signature}", b64(&claims("user-2")));
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": KID})), b64(&claims("u")));
    let rs256 = format!("{}.{}.{signature}", b64(&json!({"alg": "RS256", "kid": KID})), b64(&claims("u")));
    let cases: Vec<(&str, String, &str)> = vec![
        ("tampered payload", tampered, "signature"),
        ("alg none", none, "malformed"),
        ("HS512", sign(&secret, Algorithm::HS512, Some(KID), &claims("u")), "HS256"),
        ("RS256", rs256, "HS256"),
        ("another key's secret", sign(&other, Algorithm::HS256, Some(KID), &claims("u")), "signature"),
        ("wrong kid", sign(&secret, Algorithm::HS256, Some("ZZZZZZZZZZZZ"), &claims("u")), "kid"),
        ("no kid", sign(&secret, Algorithm::HS256, None, &claims("u")), "kid"),
        ("no sub", sign(&secret, Algorithm::HS256, Some(KID), &json!({"iat": NOW, "exp": NOW + 60})), "sub"),
        ("long sub", sign(&secret, Algorithm::HS256, Some(KID), &claims(&"x".repeat(129))), "sub"),
        ("control in sub", sign(&secret, Algorithm::HS256, Some(KID), &claims("a\nb")), "sub"),
        (
            "sub a number",
            sign(&secret, Algorithm::HS256, Some(KID), &json!({"sub": 7, "iat": NOW, "exp": NOW + 1})),
            "claims",
        ),
        ("no exp", sign(&secret, Algorithm::HS256, Some(KID), &json!({"sub": "u", "iat": NOW})), "exp"),
        ("no iat", sign(&secret, Algorithm::HS256, Some(KID), &json!({"sub": "u", "exp": NOW + 60})), "iat"),
        (
            "over an hour",
            sign(&secret, Algorithm::HS256, Some(KID), &json!({"sub": "u", "iat": NOW - 10, "exp": NOW + 3591})),
            "3600",
        ),
        (
            "unknown limit",
            sign(
                &secret,
                Algorithm::HS256,
                Some(KID),
                &json!({"sub": "u", "iat": NOW, "exp": NOW + 60, "limits": {"rpm": 1}}),
            ),
            "claims",
        ),
        ("garbage", "not.a.token".into(), "malformed"),
        ("empty", String::new(), "malformed"),
        ("oversized", format!("{good}{}", "A".repeat(MAX_TOKEN_BYTES)), "4096"),
    ];
    for (case, token, says) in cases {
        let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
        match identify_at(&mut p, &token, NOW) {
            Err(IdentityError::Invalid(message)) => {
                assert!(message.contains(says), "{case}: {message}");
                assert!(token.len() < 8 || !message.contains(&token[..8]), "{case}: the token echoed");
            }
            other => panic!("{case}: {other:?}"),
        }
        assert_eq!(p.end_user, None, "{case}");
    }
    let exactly_an_hour = json!({"sub": "u", "iat": NOW - 10, "exp": NOW + 3590});
    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    assert_eq!(identify_at(&mut p, &sign(&secret, Algorithm::HS256, Some(KID), &exactly_an_hour), NOW), Ok(()));
}

#[test]
fn a_limits_claim_only_narrows() {
    let secret = SigningSecret::generate("tg").unwrap();
    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    let mut c = claims("u");
    c["limits"] = json!({"requests_per_minute": 2, "requests_per_day": 50, "tokens_per_month": 1_000_000});
    identify_at(&mut p, &sign(&secret, Algorithm::HS256, Some(KID), &c), NOW).unwrap();
    let want = EndUserLimits { requests_per_minute: Some(2), requests_per_day: Some(50), tokens_per_month: Some(5000) };
    assert_eq!(p.end_user_limits, want, "rpm and a day limit narrowed; the token quota clamped to the key's");
    c["limits"] = json!({"requests_per_minute": u64::MAX});
    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    identify_at(&mut p, &sign(&secret, Algorithm::HS256, Some(KID), &c), NOW).unwrap();
    assert_eq!(p.end_user_limits, limited().end_user_limits);
}

#[test]
fn require_identity_and_the_end_user_header() {
    let secret = SigningSecret::generate("tg").unwrap();
    let required = KeyPolicy { require_identity: true, ..limited() };
    let mut p = principal(KeyKind::Publishable, required.clone(), Some(&secret));
    assert!(
        matches!(identify(&mut p, &HeaderMap::new(), NOW), Err(IdentityError::Invalid(m)) if m.contains("required"))
    );
    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    assert_eq!(identify(&mut p, &HeaderMap::new(), NOW), Ok(()));
    assert_eq!(p.end_user, None, "no end user named, none required");

    let mut p = principal(KeyKind::Publishable, limited(), Some(&secret));
    assert_eq!(identify(&mut p, &with(END_USER_HEADER, "u"), NOW), Err(IdentityError::EndUserHeaderNotAllowed));
    let mut live = principal(KeyKind::Live, limited(), None);
    identify(&mut live, &with(END_USER_HEADER, "customer 7 ü"), NOW).unwrap();
    assert_eq!((live.end_user.as_deref(), live.end_user_limits), (Some("customer 7 ü"), limited().end_user_limits));
    let mut live = principal(KeyKind::Live, required.clone(), None);
    assert_eq!(identify(&mut live, &with(END_USER_HEADER, "u"), NOW), Ok(()), "naming one satisfies require_identity");
    let mut live = principal(KeyKind::Live, required, None);
    let refused = identify(&mut live, &HeaderMap::new(), NOW);
    assert!(matches!(refused, Err(IdentityError::Invalid(m)) if m.contains("X-Tollgate-End-User")), "{refused:?}");
    for bad in ["", &"x".repeat(129), "a\tb"] {
        let mut live = principal(KeyKind::Live, limited(), None);
        assert_eq!(identify(&mut live, &with(END_USER_HEADER, bad), NOW), Err(IdentityError::BadEndUser), "{bad:?}");
    }
    let mut live = principal(KeyKind::Live, limited(), None);
    let token = sign(&secret, Algorithm::HS256, Some(KID), &claims("u"));
    assert!(
        matches!(identify_at(&mut live, &token, NOW), Err(IdentityError::Invalid(m)) if m.contains("no signing secret"))
    );
}

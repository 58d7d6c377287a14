//! The limiter's own tests: admission against each limit, reservations and their leases, and counters
//! forgotten with their keys.

use super::*;
use crate::auth::keys::{KeyKind, KeyLimits};

fn defaults() -> LimitsConfig {
    LimitsConfig {
        enabled: true,
        requests_per_minute: 1000,
        requests_per_day: 10_000,
        concurrent_requests: 10,
        tokens_per_month: None,
        default_max_output_tokens: 100,
    }
}

fn key(limits: KeyLimits) -> KeyRecord {
    KeyRecord {
        id: KeyId::parse("AAAAAAAAAAAA").unwrap(),
        account: "acct".into(),
        limits,
        kind: KeyKind::Live,
        hash: blake3::hash(b"x"),
        created_at: 0,
        expires_at: None,
        revoked_at: None,
        access: Default::default(),
    }
}

const T0: Now = Now { mono_ns: 10_000_000_000, unix: 1_795_422_645 };

#[test]
fn the_concurrency_slot_frees_when_an_admission_ends() {
    let l = Limiter::new(defaults(), std::time::Duration::from_secs(60));
    let k = key(KeyLimits { concurrent_requests: Some(2), ..KeyLimits::default() });
    let a = l.admit(&k, 1_000, 10, T0).unwrap();
    let _b = l.admit(&k, 1_000, 10, T0).unwrap();
    let refused = l.admit(&k, 1_000, 10, T0).err().unwrap();
    assert_eq!(refused.limit, LimitKind::Concurrency);
    a.settle(3);
    assert!(l.admit(&k, 1_000, 10, T0).is_ok());
    assert_eq!(l.key_tokens(k.id).unwrap().0, 3 + 10, "settled 3, the dropped one charged its 10");
}

#[test]
fn token_quotas_are_all_or_nothing_and_name_the_tighter_limit() {
    let l = Limiter::new(defaults(), std::time::Duration::from_secs(60));
    let k = key(KeyLimits { tokens_per_month: Some(250), ..KeyLimits::default() });
    let a = l.admit(&k, 1_000, 100, T0).unwrap();
    assert_eq!((a.headers.limit_tokens, a.headers.remaining_tokens), (250, 150));
    let _b = l.admit(&k, 1_000, 100, T0).unwrap();
    let refused = l.admit(&k, 1_000, 100, T0).err().unwrap();
    assert_eq!(refused.limit, LimitKind::KeyTokens);
    assert!(refused.limit.is_exhaustion());
    // A refused reservation takes no tokens.
    assert_eq!(l.key_tokens(k.id), Some((0, 200)));
    let tight_plan = l.admit(&key(KeyLimits::default()), 150, 100, T0).err().unwrap();
    assert_eq!(tight_plan.limit, LimitKind::AccountTokens);
}

#[test]
fn per_minute_and_per_day_limits_refuse_with_their_retry_after() {
    let l = Limiter::new(defaults(), std::time::Duration::from_secs(60));
    let k = key(KeyLimits { requests_per_minute: Some(2), requests_per_day: Some(3), ..KeyLimits::default() });
    for _ in 0..2 {
        l.admit(&k, 1_000, 0, T0).unwrap();
    }
    let r = l.admit(&k, 1_000, 0, T0).err().unwrap();
    assert_eq!((r.limit, r.retry_after_secs), (LimitKind::RequestsPerMinute, 30));
    let later = Now { mono_ns: T0.mono_ns + 30_000_000_000, unix: T0.unix + 30 };
    l.admit(&k, 1_000, 0, later).unwrap();
    let later = Now { mono_ns: T0.mono_ns + 120_000_000_000, unix: T0.unix + 120 };
    let r = l.admit(&k, 1_000, 0, later).err().unwrap();
    assert_eq!(r.limit, LimitKind::RequestsPerDay);
    assert_eq!(r.retry_after_secs as i64, clock::next_day_start(later.unix) - later.unix);
    let tomorrow = Now { mono_ns: later.mono_ns + 86_400_000_000_000, unix: clock::next_day_start(later.unix) };
    assert!(l.admit(&k, 1_000, 0, tomorrow).is_ok());
}

#[test]
fn leases_end_forgotten_reservations() {
    let l = Limiter::new(defaults(), std::time::Duration::from_secs(1));
    let k = key(KeyLimits::default());
    let a = l.admit(&k, 1_000, 40, T0).unwrap();
    assert_eq!(l.expire(T0), 0);
    assert_eq!(l.expire(Now { mono_ns: T0.mono_ns + 1_000_000_000, unix: T0.unix + 1 }), 1);
    assert_eq!(l.key_tokens(k.id), Some((40, 0)));
    a.settle(5);
    assert_eq!(l.key_tokens(k.id), Some((40, 0)), "an expired reservation is not settled again");
}

#[test]
fn counters_of_keys_gone_from_the_table_are_forgotten_once_no_request_holds_them() {
    let l = Limiter::new(defaults(), std::time::Duration::from_secs(60));
    let gone = key(KeyLimits::default());
    let kept = KeyRecord { id: KeyId::parse("BBBBBBBBBBBB").unwrap(), ..key(KeyLimits::default()) };
    let in_flight = l.admit(&gone, 1_000, 40, T0).unwrap();
    l.admit(&kept, 1_000, 40, T0).unwrap().settle(40);
    assert_eq!(l.forget_keys(|id| id == kept.id), 0, "a request in flight holds its key's counters");
    in_flight.settle(30);
    assert_eq!(l.forget_keys(|id| id == kept.id), 1);
    assert_eq!((l.tracked_keys(), l.key_tokens(gone.id), l.key_tokens(kept.id)), (1, None, Some((40, 0))));
    // The account keeps what the forgotten key used: a tight plan still sees 70 tokens taken.
    let refused = l.admit(&kept, 100, 40, T0).err().unwrap();
    assert_eq!(refused.limit, LimitKind::AccountTokens);
}

#[test]
fn a_new_month_starts_from_zero() {
    let l = Limiter::new(defaults(), std::time::Duration::from_secs(60));
    let k = key(KeyLimits { tokens_per_month: Some(100), ..KeyLimits::default() });
    l.admit(&k, 1_000, 100, T0).unwrap().settle(100);
    assert!(l.admit(&k, 1_000, 1, T0).is_err());
    let next = Now { mono_ns: T0.mono_ns + 1, unix: clock::next_month_start(T0.unix) };
    assert!(l.admit(&k, 1_000, 100, next).is_ok());
}

#[test]
fn durations_in_openai_style() {
    assert_eq!(go_duration(12_000_000), "12ms");
    assert_eq!(go_duration(1_000_000_000), "1s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(10_250_000_000), "10.25s");
    assert_eq!(go_duration(360_000_000_000), "6m0s");
    assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
}

//! The limiter's own tests: admission against each limit, reservations and their leases, and counters
//! forgotten with their keys.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::memory::Ticket as MemoryTicket;
use super::*;
use crate::clock::{self, Clock, ManualClock};

/// The limits every test key starts from (the Redis backend's tests share them).
pub(super) fn defaults() -> LimitsConfig {
    LimitsConfig {
        enabled: true,
        requests_per_minute: 1000,
        requests_per_day: 10_000,
        concurrent_requests: 10,
        tokens_per_month: None,
        default_max_output_tokens: 100,
        end_users_per_key: 100_000,
    }
}

struct Key {
    id: KeyId,
    limits: KeyLimits,
}

fn key(limits: KeyLimits) -> Key {
    Key { id: KeyId::parse("AAAAAAAAAAAA").unwrap(), limits }
}

fn subject(k: &Key, plan_tokens: u64) -> Subject {
    Subject {
        key: k.id,
        account: "acct".into(),
        limits: effective(&k.limits, &defaults()),
        plan_tokens,
        end_user: None,
    }
}

/// The memory backend's futures are ready on their first poll; this drives one without a runtime.
fn at_once<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the memory backend never waits"),
    }
}

/// Both admission steps, through the backend trait.
fn admit(l: &MemoryCounters, k: &Key, plan_tokens: u64, cost: u64, now: Now) -> Result<MemoryTicket, Refusal> {
    let permit = at_once(l.admit_request(&subject(k, plan_tokens), now))?;
    at_once(l.reserve(permit, cost, now))
}

const T0: Now = Now { mono_ns: 10_000_000_000, unix: 1_795_422_645 };

#[test]
fn the_concurrency_slot_frees_when_an_admission_ends() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(60));
    let k = key(KeyLimits { concurrent_requests: Some(2), ..KeyLimits::default() });
    let a = admit(&l, &k, 1_000, 10, T0).unwrap();
    let _b = admit(&l, &k, 1_000, 10, T0).unwrap();
    let refused = admit(&l, &k, 1_000, 10, T0).err().unwrap();
    assert_eq!(refused.limit, LimitKind::Concurrency);
    a.settle(3);
    assert!(admit(&l, &k, 1_000, 10, T0).is_ok());
    assert_eq!(l.key_tokens(k.id).unwrap().0, 3 + 10, "settled 3, the dropped one charged its 10");
}

#[test]
fn token_quotas_are_all_or_nothing_and_name_the_tighter_limit() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(60));
    let k = key(KeyLimits { tokens_per_month: Some(250), ..KeyLimits::default() });
    let a = admit(&l, &k, 1_000, 100, T0).unwrap();
    assert_eq!((a.headers().limit_tokens, a.headers().remaining_tokens), (250, 150));
    let _b = admit(&l, &k, 1_000, 100, T0).unwrap();
    let refused = admit(&l, &k, 1_000, 100, T0).err().unwrap();
    assert_eq!(refused.limit, LimitKind::KeyTokens);
    assert!(refused.limit.is_exhaustion());
    // A refused reservation takes no tokens.
    assert_eq!(l.key_tokens(k.id), Some((0, 200)));
    let tight_plan = admit(&l, &key(KeyLimits::default()), 150, 100, T0).err().unwrap();
    assert_eq!(tight_plan.limit, LimitKind::AccountTokens);
}

#[test]
fn per_minute_and_per_day_limits_refuse_with_their_retry_after() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(60));
    let k = key(KeyLimits { requests_per_minute: Some(2), requests_per_day: Some(3), ..KeyLimits::default() });
    for _ in 0..2 {
        admit(&l, &k, 1_000, 0, T0).unwrap();
    }
    let r = admit(&l, &k, 1_000, 0, T0).err().unwrap();
    assert_eq!((r.limit, r.retry_after_secs), (LimitKind::RequestsPerMinute, 30));
    let later = Now { mono_ns: T0.mono_ns + 30_000_000_000, unix: T0.unix + 30 };
    admit(&l, &k, 1_000, 0, later).unwrap();
    let later = Now { mono_ns: T0.mono_ns + 120_000_000_000, unix: T0.unix + 120 };
    let r = admit(&l, &k, 1_000, 0, later).err().unwrap();
    assert_eq!(r.limit, LimitKind::RequestsPerDay);
    assert_eq!(r.retry_after_secs as i64, clock::next_day_start(later.unix) - later.unix);
    let tomorrow = Now { mono_ns: later.mono_ns + 86_400_000_000_000, unix: clock::next_day_start(later.unix) };
    assert!(admit(&l, &k, 1_000, 0, tomorrow).is_ok());
}

#[test]
fn leases_end_forgotten_reservations() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(1));
    let k = key(KeyLimits::default());
    let a = admit(&l, &k, 1_000, 40, T0).unwrap();
    assert_eq!(l.sweep(T0), 0);
    assert_eq!(l.sweep(Now { mono_ns: T0.mono_ns + 1_000_000_000, unix: T0.unix + 1 }), 1);
    assert_eq!(l.key_tokens(k.id), Some((40, 0)));
    a.settle(5);
    assert_eq!(l.key_tokens(k.id), Some((40, 0)), "an expired reservation is not settled again");
}

#[test]
fn counters_of_keys_gone_from_the_table_are_forgotten_once_no_request_holds_them() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(60));
    let gone = key(KeyLimits::default());
    let kept = Key { id: KeyId::parse("BBBBBBBBBBBB").unwrap(), ..key(KeyLimits::default()) };
    let in_flight = admit(&l, &gone, 1_000, 40, T0).unwrap();
    admit(&l, &kept, 1_000, 40, T0).unwrap().settle(40);
    assert_eq!(l.forget(|id| id == kept.id), 0, "a request in flight holds its key's counters");
    in_flight.settle(30);
    assert_eq!(l.forget(|id| id == kept.id), 1);
    assert_eq!((l.tracked_keys(), l.key_tokens(gone.id), l.key_tokens(kept.id)), (1, None, Some((40, 0))));
    // The account keeps what the forgotten key used: a tight plan still sees 70 tokens taken.
    let refused = admit(&l, &kept, 100, 40, T0).err().unwrap();
    assert_eq!(refused.limit, LimitKind::AccountTokens);
}

#[test]
fn a_new_month_starts_from_zero() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(60));
    let k = key(KeyLimits { tokens_per_month: Some(100), ..KeyLimits::default() });
    admit(&l, &k, 1_000, 100, T0).unwrap().settle(100);
    assert!(admit(&l, &k, 1_000, 1, T0).is_err());
    let next = Now { mono_ns: T0.mono_ns + 1, unix: clock::next_month_start(T0.unix) };
    assert!(admit(&l, &k, 1_000, 100, next).is_ok());
}

#[test]
fn defaults_fill_only_the_limits_a_key_does_not_set() {
    let d = LimitsConfig { tokens_per_month: Some(5_000), ..defaults() };
    let all_default = effective(&KeyLimits::default(), &d);
    assert_eq!(
        (all_default.per_minute, all_default.per_day, all_default.concurrency, all_default.key_tokens),
        (1000, 10_000, 10, Some(5_000))
    );
    assert_eq!(all_default.rate, gcra::Rate::per_minute(1000));
    let own = KeyLimits {
        requests_per_minute: Some(7),
        requests_per_day: Some(8),
        concurrent_requests: Some(9),
        tokens_per_month: Some(10),
    };
    let own = effective(&own, &d);
    assert_eq!((own.per_minute, own.per_day, own.concurrency, own.key_tokens), (7, 8, 9, Some(10)));
    assert_eq!(own.rate, gcra::Rate::per_minute(7));
}

#[test]
fn a_released_or_dropped_ticket_charges_its_whole_reservation() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(60));
    let k = key(KeyLimits { concurrent_requests: Some(1), ..KeyLimits::default() });
    let a = admit(&l, &k, 1_000, 30, T0).unwrap();
    assert_eq!((a.reserved(), l.in_flight(k.id)), (30, 1));
    a.release();
    assert_eq!((l.key_tokens(k.id), l.in_flight(k.id)), (Some((30, 0)), 0));
    drop(admit(&l, &k, 1_000, 20, T0).unwrap());
    assert_eq!((l.key_tokens(k.id), l.in_flight(k.id)), (Some((50, 0)), 0));
    // A permit dropped before its reservation frees its place and charges no tokens.
    drop(at_once(l.admit_request(&subject(&k, 1_000), T0)).unwrap());
    assert_eq!((l.key_tokens(k.id), l.in_flight(k.id)), (Some((50, 0)), 0));
}

#[test]
fn the_server_enum_dispatches_to_the_memory_backend() {
    let counters = Counters::Memory(MemoryCounters::new(std::time::Duration::from_secs(60)));
    let k = key(KeyLimits { tokens_per_month: Some(100), ..KeyLimits::default() });
    let permit = at_once(counters.admit_request(&subject(&k, 1_000), T0)).unwrap();
    let ticket = at_once(counters.reserve(permit, 60, T0)).unwrap();
    assert_eq!((ticket.reserved(), ticket.headers().remaining_tokens), (60, 40));
    ticket.settle(25);
    counters.carry(KeyId::parse("CCCCCCCCCCCC").unwrap(), &Arc::from("acct"), Carried::default(), T0);
    assert_eq!(counters.sweep(T0), 0);
    assert_eq!(counters.forget(|id| id == k.id), 1, "the carried key is not in the table");
    let Counters::Memory(memory) = &counters else { unreachable!("made as memory counters above") };
    assert_eq!(memory.key_tokens(k.id), Some((25, 0)));
}

#[test]
fn carried_usage_counts_until_its_day_and_month_end() {
    let l = MemoryCounters::new(std::time::Duration::from_secs(60));
    let k = key(KeyLimits { requests_per_day: Some(5), tokens_per_month: Some(1_000), ..KeyLimits::default() });
    l.carry(k.id, &Arc::from("acct"), Carried { day_requests: 5, month_tokens: 900 }, T0);
    assert_eq!(admit(&l, &k, 10_000, 1, T0).err().unwrap().limit, LimitKind::RequestsPerDay);
    let tomorrow = Now { mono_ns: T0.mono_ns + 1, unix: clock::next_day_start(T0.unix) };
    assert_eq!(admit(&l, &k, 10_000, 101, tomorrow).err().unwrap().limit, LimitKind::KeyTokens);
    // The account holds the key's carried tokens too.
    let other = Key { id: KeyId::parse("DDDDDDDDDDDD").unwrap(), ..key(KeyLimits::default()) };
    assert_eq!(admit(&l, &other, 1_000, 101, tomorrow).err().unwrap().limit, LimitKind::AccountTokens);
}

/// A manual clock from the last minute of a month across midnight: the day's requests and the month's
/// tokens start again together, a reservation held across the boundary settles into the new month, and
/// a day boundary inside a month leaves the month's tokens alone.
#[test]
fn a_manual_clock_carries_the_counters_across_a_utc_day_and_month() {
    let clock = ManualClock::new(Now { mono_ns: 1, unix: 1_798_761_540 }); // 2026-12-31T23:59:00Z
    assert_eq!(clock::rfc3339(clock.now().unix), "2026-12-31T23:59:00Z");
    let l = MemoryCounters::new(std::time::Duration::from_secs(600));
    let k = key(KeyLimits { requests_per_day: Some(2), tokens_per_month: Some(100), ..KeyLimits::default() });
    admit(&l, &k, 1_000, 60, clock.now()).unwrap().settle(60);
    let held = admit(&l, &k, 1_000, 40, clock.now()).unwrap();
    assert_eq!(held.headers().remaining_tokens, 0);
    let refused = admit(&l, &k, 1_000, 0, clock.now()).err().unwrap();
    assert_eq!((refused.limit, refused.retry_after_secs), (LimitKind::RequestsPerDay, 60));

    clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(clock::rfc3339(clock.now().unix), "2027-01-01T00:00:00Z");
    let fresh = admit(&l, &k, 1_000, 50, clock.now()).unwrap();
    assert_eq!(fresh.headers().remaining_tokens, 10, "the new month holds only the open reservations");
    held.settle(30);
    assert_eq!(l.key_tokens(k.id), Some((30, 50)), "settled in the month it ends in");
    fresh.settle(50);

    clock.advance_to(clock::next_day_start(clock.now().unix));
    assert_eq!(clock::rfc3339(clock.now().unix), "2027-01-02T00:00:00Z");
    admit(&l, &k, 1_000, 20, clock.now()).unwrap().settle(20);
    let refused = admit(&l, &k, 1_000, 1, clock.now()).err().unwrap();
    assert_eq!(refused.limit, LimitKind::KeyTokens, "100 used this month; the new day does not reset it");
    assert_eq!(refused.retry_after_secs as i64, clock::next_month_start(clock.now().unix) - clock.now().unix);
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

/// Every limit's label is one of the bounded refusal reasons the metrics count.
#[test]
fn every_limit_is_a_counted_refusal_reason() {
    use LimitKind::*;
    let all = [
        RequestsPerMinute,
        RequestsPerDay,
        Concurrency,
        KeyTokens,
        AccountTokens,
        EndUserRequestsPerMinute,
        EndUserRequestsPerDay,
        EndUserTokens,
    ];
    for limit in all {
        assert!(crate::telemetry::metrics::REFUSALS.contains(&limit.label()), "{limit:?}");
    }
}

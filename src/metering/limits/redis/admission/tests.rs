//! One Redis round trip per admission, the places a key holds on one instance, and the per-key cap of end
//! users, against a real Redis (`TOLLGATE_TEST_REDIS`; see `redis::tests`).

use std::time::Duration;

use super::super::tests::{MINUTE, Server, T0, admit, config, connect, key_tokens, subject, url};
use super::super::*;
use crate::auth::keys::KeyLimits;
use crate::clock;

/// EVALSHA calls a Redis has answered since its statistics were reset.
async fn script_calls(conn: &mut ConnectionManager) -> u64 {
    let info: String = ::redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

fn at(secs: u64) -> Now {
    Now { mono_ns: T0.mono_ns + secs * 1_000_000_000, unix: T0.unix + secs as i64 }
}

/// A private Redis counts the scripts run: none before the body, one per admission, one per settle; and a
/// key's places on the instance are held and freed without a call.
#[tokio::test]
async fn one_round_trip_per_admission_and_one_per_settle() {
    if url("round trips").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server::start(port);
    server.ready().await;
    let r = connect(&config(&format!("redis://127.0.0.1:{port}")), Duration::from_secs(60)).await;
    let mut conn = r.shared.conn.get().unwrap().clone();
    ::redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(&mut conn).await.unwrap();
    let s = subject(KeyLimits { concurrent_requests: Some(1), ..KeyLimits::default() }, 1_000_000);
    let pending = r.admit_request(&s, T0).await.unwrap();
    let refused = r.admit_request(&s, T0).await.err().unwrap();
    assert_eq!(refused.limit, LimitKind::Concurrency, "the key's one place here is taken");
    drop(pending);
    assert_eq!(script_calls(&mut conn).await, 0, "nothing asked of Redis before the reservation");
    for i in 0..10 {
        let now = at(i);
        let permit = r.admit_request(&s, now).await.unwrap();
        let ticket = r.reserve(permit, 10, now).await.unwrap();
        assert_eq!(script_calls(&mut conn).await, 2 * i + 1, "one call admitted and reserved");
        ticket.settle(7);
        r.settled().await;
        assert_eq!(script_calls(&mut conn).await, 2 * i + 2, "one call settled");
    }
    assert_eq!(key_tokens(&r, &s).await, (70, 0));
}

/// As in the memory backend, a request past the request limits but refused for tokens counts against the
/// per-minute limit, and holds no concurrency slot.
#[tokio::test]
async fn a_request_refused_for_tokens_still_counts_against_the_rate() {
    let Some(url) = url("a token refusal's count") else { return };
    let r = connect(&config(&url), Duration::from_secs(60)).await;
    let limits = KeyLimits {
        requests_per_minute: Some(2),
        concurrent_requests: Some(1),
        tokens_per_month: Some(50),
        ..KeyLimits::default()
    };
    let s = subject(limits, 1_000_000);
    for _ in 0..2 {
        assert_eq!(admit(&r, &s, 100, T0).await.err().unwrap().limit, LimitKind::KeyTokens);
    }
    assert_eq!(admit(&r, &s, 10, T0).await.err().unwrap().limit, LimitKind::RequestsPerMinute);
    let later = Now { mono_ns: T0.mono_ns + MINUTE, unix: T0.unix + 60 };
    let held = admit(&r, &s, 10, later).await.expect("no slot was held by the refused ones");
    assert_eq!(held.headers().remaining_tokens, 40);
    assert_eq!(key_tokens(&r, &s).await, (0, 10));
}

/// `limits.end_users_per_key` across two instances: a third end user waits while two count, an end user
/// already counted goes on, and one whose limits count nothing more (its rate back to a full burst) makes
/// room; one with a day limit counts until the day ends.
#[tokio::test]
async fn the_cap_of_end_users_holds_across_instances_and_frees_idle_ones() {
    let Some(url) = url("the end-user cap") else { return };
    let config = config(&url);
    let connect = || RedisCounters::connect(&config, Duration::from_secs(60), 2, wall_offset(T0));
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    let user = |name: &str, per_day: Option<u32>| {
        let mut s = subject(KeyLimits::default(), 1_000_000);
        let limits = EndUserLimits { requests_per_minute: Some(60), requests_per_day: per_day, ..Default::default() };
        s.end_user = Some(EndUser { id: name.into(), limits });
        s
    };
    admit(&a, &user("ann", None), 1, T0).await.unwrap().settle(1);
    admit(&b, &user("bob", Some(100)), 1, T0).await.unwrap().settle(1);
    let refused = admit(&a, &user("cy", None), 1, T0).await.err().unwrap();
    assert_eq!((refused.limit, refused.retry_after_secs), (LimitKind::EndUsers, 60));
    assert!(admit(&b, &user("ann", None), 1, T0).await.is_ok(), "ann is counted already");
    // ann's rate is back to its full burst after 2 s; bob's day limit keeps him counted until midnight.
    let later = at(5);
    assert!(admit(&b, &user("cy", None), 1, later).await.is_ok(), "ann went idle: room for cy");
    assert_eq!(admit(&a, &user("dan", None), 1, later).await.err().unwrap().limit, LimitKind::EndUsers);
    let tomorrow = Now { mono_ns: later.mono_ns + 86_400_000_000_000, unix: clock::next_day_start(later.unix) + 1 };
    assert!(admit(&a, &user("dan", None), 1, tomorrow).await.is_ok(), "bob's day ended, cy went idle");
}

/// A burst whose answers queue past the per-call timeout on a Redis that answers all along is not an
/// outage: with a 20 ms timeout and a breaker that opens at the first failure, 300 admissions at once all
/// reach Redis and are all admitted (each waits on while other calls are answered), none refused as
/// unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_queued_past_the_timeout_on_a_live_redis_is_not_an_outage() {
    let Some(url) = url("a burst past the timeout") else { return };
    let mut config = config(&url);
    (config.timeout, config.breaker_failures) = (Duration::from_millis(20), 1);
    let r = std::sync::Arc::new(connect(&config, Duration::from_secs(600)).await);
    let limits =
        KeyLimits { concurrent_requests: Some(1000), requests_per_minute: Some(100_000), ..Default::default() };
    let s = subject(limits, 1_000_000_000);
    let burst: Vec<_> = (0..300)
        .map(|_| {
            let (r, s) = (std::sync::Arc::clone(&r), s.clone());
            tokio::spawn(async move { admit(&r, &s, 10, T0).await.map(|t| matches!(t, Ticket::Remote(_))) })
        })
        .collect();
    let mut remote = 0;
    for task in burst {
        match task.await.unwrap() {
            Ok(true) => remote += 1,
            Ok(false) => {}
            Err(refusal) => panic!("refused: {:?}", refusal.limit),
        }
    }
    assert_eq!(remote, 300, "every admission was Redis's");
    assert!(!r.degraded());
}

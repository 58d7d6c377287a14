//! The Redis backend against a real Redis, named by `TOLLGATE_TEST_REDIS` (a URL; each test under its own
//! key prefix). Without it each test says what it skips and passes. The outage test starts its own
//! `redis-server` on a free port so it can kill it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::auth::keys::KeyLimits;
use crate::clock;
use crate::config::counters::CountersBackend;
use crate::metering::limits::effective;
use crate::metering::limits::tests::defaults;

pub(super) const T0: Now = Now { mono_ns: 10_000_000_000, unix: 1_795_422_645 };
pub(super) const MINUTE: u64 = 60_000_000_000;

pub(super) fn url(what: &str) -> Option<String> {
    match std::env::var("TOLLGATE_TEST_REDIS") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("TOLLGATE_TEST_REDIS is not set: skipping the Redis counters test of {what}");
            None
        }
    }
}

pub(super) fn config(url: &str) -> CountersConfig {
    let mut tag = [0u8; 6];
    getrandom::fill(&mut tag).unwrap();
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    CountersConfig {
        backend: CountersBackend::Redis,
        url: Some(url.into()),
        prefix: format!("tollgate-test-{tag}"),
        timeout: Duration::from_millis(500),
        ..CountersConfig::default()
    }
}

pub(super) async fn connect(config: &CountersConfig, lease: Duration) -> RedisCounters {
    RedisCounters::connect(config, lease, u32::MAX, wall_offset(T0)).await.unwrap()
}

pub(super) fn subject(limits: KeyLimits, plan_tokens: u64) -> Subject {
    Subject {
        key: KeyId::parse("AAAAAAAAAAAA").unwrap(),
        account: "acct".into(),
        limits: effective(&limits, &defaults()),
        plan_tokens,
        end_user: None,
    }
}

pub(super) async fn admit(r: &RedisCounters, s: &Subject, cost: u64, now: Now) -> Result<Ticket, Refusal> {
    let permit = r.admit_request(s, now).await?;
    r.reserve(permit, cost, now).await
}

/// (used, reserved) of a counters hash, read straight from Redis.
pub(super) async fn tokens(r: &RedisCounters, hash: &str) -> (u64, u64) {
    r.settled().await;
    let mut conn = r.shared.conn.get().unwrap().clone();
    let v: Vec<Option<u64>> =
        ::redis::cmd("HMGET").arg(hash).arg("used").arg("reserved").query_async(&mut conn).await.unwrap();
    (v[0].unwrap_or(0), v[1].unwrap_or(0))
}

pub(super) async fn key_tokens(r: &RedisCounters, s: &Subject) -> (u64, u64) {
    tokens(r, &r.shared.keys(s.key, &s.account, None).key).await
}

#[tokio::test]
async fn the_concurrency_slot_frees_when_an_admission_ends() {
    let Some(url) = url("concurrency slots") else { return };
    let r = connect(&config(&url), Duration::from_secs(60)).await;
    let s = subject(KeyLimits { concurrent_requests: Some(2), ..KeyLimits::default() }, 1_000);
    let a = admit(&r, &s, 10, T0).await.unwrap();
    let _b = admit(&r, &s, 10, T0).await.unwrap();
    assert_eq!(admit(&r, &s, 10, T0).await.err().unwrap().limit, LimitKind::Concurrency);
    a.settle(3);
    r.settled().await;
    let c = admit(&r, &s, 10, T0).await;
    assert!(matches!(c, Ok(Ticket::Remote(_))));
    drop(c);
    assert_eq!(key_tokens(&r, &s).await.0, 3 + 10, "settled 3, the dropped one charged its 10");
    // A permit dropped before its reservation gives its slot back too.
    let permit = r.admit_request(&s, T0).await.unwrap();
    drop(permit);
    r.settled().await;
    let x = admit(&r, &s, 1, T0).await;
    assert!(x.is_ok(), "the dropped permit's slot came back");
    assert_eq!(admit(&r, &s, 1, T0).await.err().unwrap().limit, LimitKind::Concurrency, "b and x hold both");
}

#[tokio::test]
async fn token_quotas_are_all_or_nothing_and_name_the_tighter_limit() {
    let Some(url) = url("token quotas") else { return };
    let r = connect(&config(&url), Duration::from_secs(60)).await;
    let s = subject(KeyLimits { tokens_per_month: Some(250), ..KeyLimits::default() }, 1_000);
    let a = admit(&r, &s, 100, T0).await.unwrap();
    assert_eq!((a.headers().limit_tokens, a.headers().remaining_tokens), (250, 150));
    let _b = admit(&r, &s, 100, T0).await.unwrap();
    let refused = admit(&r, &s, 100, T0).await.err().unwrap();
    assert_eq!(refused.limit, LimitKind::KeyTokens);
    assert_eq!(key_tokens(&r, &s).await, (0, 200), "a refused reservation takes no tokens");
    let mut other = subject(KeyLimits::default(), 150);
    other.key = KeyId::parse("BBBBBBBBBBBB").unwrap();
    assert_eq!(admit(&r, &other, 100, T0).await.err().unwrap().limit, LimitKind::AccountTokens);
}

#[tokio::test]
async fn per_minute_and_per_day_limits_refuse_with_their_retry_after() {
    let Some(url) = url("per-minute and per-day limits") else { return };
    let r = connect(&config(&url), Duration::from_secs(60)).await;
    let s =
        subject(KeyLimits { requests_per_minute: Some(2), requests_per_day: Some(3), ..KeyLimits::default() }, 1_000);
    for _ in 0..2 {
        admit(&r, &s, 0, T0).await.unwrap();
    }
    let refused = admit(&r, &s, 0, T0).await.err().unwrap();
    assert_eq!((refused.limit, refused.retry_after_secs), (LimitKind::RequestsPerMinute, 30));
    let later = Now { mono_ns: T0.mono_ns + 30_000_000_000, unix: T0.unix + 30 };
    admit(&r, &s, 0, later).await.unwrap();
    let later = Now { mono_ns: T0.mono_ns + 2 * MINUTE, unix: T0.unix + 120 };
    let refused = admit(&r, &s, 0, later).await.err().unwrap();
    assert_eq!(refused.limit, LimitKind::RequestsPerDay);
    assert_eq!(refused.retry_after_secs as i64, clock::next_day_start(later.unix) - later.unix);
    let tomorrow = Now { mono_ns: later.mono_ns + 86_400_000_000_000, unix: clock::next_day_start(later.unix) };
    assert!(admit(&r, &s, 0, tomorrow).await.is_ok());
}

/// A reservation whose holder vanished (its ending never reaches Redis) ends with its lease, charged
/// whole, and is not charged again if its ending comes late.
#[tokio::test]
async fn leases_end_forgotten_reservations() {
    let Some(url) = url("leases") else { return };
    let config = config(&url);
    let (crashed, survivor) =
        (connect(&config, Duration::from_secs(1)).await, connect(&config, Duration::from_secs(1)).await);
    let s = subject(KeyLimits { concurrent_requests: Some(1), ..KeyLimits::default() }, 1_000);
    let held = admit(&crashed, &s, 40, T0).await.unwrap();
    assert_eq!(admit(&survivor, &s, 1, T0).await.err().unwrap().limit, LimitKind::Concurrency);
    let later = Now { mono_ns: T0.mono_ns + 1_000_000_000, unix: T0.unix + 1 };
    admit(&survivor, &s, 0, later).await.unwrap().settle(0);
    assert_eq!(key_tokens(&survivor, &s).await, (40, 0), "the lease ended it: the slot and the reservation");
    held.settle(5);
    assert_eq!(key_tokens(&crashed, &s).await, (40, 0), "an expired reservation is not settled again");
}

/// The key's and the end user's budgets are charged all or nothing.
#[tokio::test]
async fn the_key_and_its_end_users_are_charged_all_or_nothing() {
    let Some(url) = url("end users") else { return };
    let r = connect(&config(&url), Duration::from_secs(60)).await;
    let user = |name: &str, tokens: u64| {
        let mut s = subject(
            KeyLimits { tokens_per_month: Some(150), requests_per_day: Some(3), ..KeyLimits::default() },
            1_000_000,
        );
        s.end_user = Some(EndUser {
            id: name.into(),
            limits: EndUserLimits { tokens_per_month: Some(tokens), ..EndUserLimits::default() },
        });
        s
    };
    let (ann, bob) = (user("ann", 100), user("bob", 100));
    let held = admit(&r, &ann, 80, T0).await.unwrap();
    assert_eq!(admit(&r, &ann, 30, T0).await.err().unwrap().limit, LimitKind::EndUserTokens);
    assert_eq!(key_tokens(&r, &ann).await, (0, 80), "the end user's refusal reserved nothing of the key's");
    let bobs = admit(&r, &bob, 70, T0).await.unwrap();
    assert_eq!(admit(&r, &bob, 1, T0).await.err().unwrap().limit, LimitKind::RequestsPerDay);
    let bob_hash = r.shared.keys(bob.key, &bob.account, Some("bob")).end_user;
    assert_eq!(tokens(&r, &bob_hash).await, (0, 70), "the key's refusal charged bob nothing");
    held.settle(50);
    bobs.release();
    assert_eq!(tokens(&r, &bob_hash).await, (70, 0));
    assert_eq!(key_tokens(&r, &ann).await, (120, 0));
    // An end user's per-minute refusal counts no request of the key's.
    let mut cy = user("cy", 1000);
    cy.limits.per_day = 10_000;
    cy.end_user.as_mut().unwrap().limits.requests_per_minute = Some(1);
    admit(&r, &cy, 0, T0).await.unwrap().settle(0);
    let refused = admit(&r, &cy, 0, T0).await.err().unwrap();
    assert_eq!((refused.limit, refused.retry_after_secs), (LimitKind::EndUserRequestsPerMinute, 60));
}

/// Two instances sharing one Redis admit in parallel: never more tokens than the quota (each request
/// settles what it reserved), never more than the key's concurrency in flight, and not stingy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_exceed_the_quota_or_the_concurrency() {
    let Some(url) = url("two instances") else { return };
    let config = config(&url);
    let instances = [connect(&config, Duration::from_secs(60)).await, connect(&config, Duration::from_secs(60)).await];
    let instances = Arc::new(instances);
    let s = Arc::new(subject(
        KeyLimits { tokens_per_month: Some(10_000), concurrent_requests: Some(4), ..KeyLimits::default() },
        u64::MAX / 2,
    ));
    let (in_flight, most, admitted) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (instances, s) = (Arc::clone(&instances), Arc::clone(&s));
        let (in_flight, most, admitted) = (Arc::clone(&in_flight), Arc::clone(&most), Arc::clone(&admitted));
        tasks.push(tokio::spawn(async move {
            let r = &instances[worker % 2];
            for _ in 0..150 {
                let Ok(ticket) = admit(r, &s, 100, T0).await else { continue };
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                admitted.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                ticket.settle(100);
                r.settled().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (used, reserved) = key_tokens(&instances[0], &s).await;
    assert_eq!(reserved, 0);
    assert!(used <= 10_000, "charged {used} over a quota of 10000");
    assert_eq!(used, admitted.load(Ordering::SeqCst) * 100);
    assert_eq!(used, 10_000, "the whole quota was usable");
    assert!(most.load(Ordering::SeqCst) <= 4, "{} in flight at once", most.load(Ordering::SeqCst));
}

pub(super) struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    pub(super) fn start(port: u16) -> Server {
        Server::start_with(port, &["--port", &port.to_string()])
    }

    fn start_with(port: u16, args: &[&str]) -> Server {
        let child = std::process::Command::new("redis-server")
            .args(args)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        Server { child, port }
    }

    /// Waits until the server listens (it takes a few milliseconds).
    async fn listening(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} never listened", self.port);
    }

    /// Waits until the server answers a PING.
    pub(super) async fn ready(&self) {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        for _ in 0..200 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && ::redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} never answered", self.port);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Redis killed mid-run: request limits go on locally (the key's rate halved for two
/// instances), token reservations are refused as unavailable (never as a quota), no call waits past the
/// timeout, and once Redis is back everything goes to it again without a restart.
#[tokio::test]
async fn a_redis_outage_falls_back_locally_and_recovers() {
    if url("an outage").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Server::start(port);
    server.ready().await;
    let mut config = config(&format!("redis://127.0.0.1:{port}"));
    (config.timeout, config.instances, config.breaker_cooldown) =
        (Duration::from_millis(50), 2, Duration::from_millis(200));
    let r = connect(&config, Duration::from_secs(60)).await;
    let s = subject(KeyLimits { requests_per_minute: Some(10), ..KeyLimits::default() }, 1_000_000);
    let mut now = T0;
    assert!(matches!(admit(&r, &s, 10, now).await, Ok(Ticket::Remote(_))));
    server.kill();

    let mut refused_for_rate = 0;
    for _ in 0..10 {
        now.mono_ns += 1_000_000; // a millisecond apart: far above 10 a minute
        let started = Instant::now();
        let refused = admit(&r, &s, 10, now).await.err().expect("no reservation without Redis");
        if refused.limit == LimitKind::CountersUnavailable {
            assert_eq!(crate::error::ProxyError::limited(refused).status().as_u16(), 503);
        } else {
            assert_eq!(refused.limit, LimitKind::RequestsPerMinute, "a local rate limit, not an outage");
            refused_for_rate += 1;
        }
        assert!(started.elapsed() < Duration::from_millis(400), "waited {:?}", started.elapsed());
    }
    assert_eq!(refused_for_rate, 5, "the local limit is the key's 10 a minute over 2 instances");
    assert!(r.degraded());
    assert_eq!(r.unavailable_counts(), (10, 5));
    // A reservation of nothing (a free route) checks no quota: taken locally, never refused.
    let mut free = s.clone();
    free.key = KeyId::parse("CCCCCCCCCCCC").unwrap();
    let permit = r.admit_request(&free, now).await.unwrap();
    assert!(matches!(r.reserve(permit, 0, now).await, Ok(Ticket::Local(_))));

    let server = Server::start(port);
    server.ready().await;
    let started = Instant::now();
    loop {
        now.mono_ns += MINUTE;
        if let Ok(Ticket::Remote(_)) = admit(&r, &s, 10, now).await {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!r.degraded());
    drop(server);
}

/// `rediss://` through rustls, trusting the roots of `counters.ca_file` only.
#[tokio::test]
async fn rediss_connects_through_rustls_with_the_configured_roots() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    if url("TLS").is_none() {
        return;
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "tollgate test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (cert_file, key_file, ca_file) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    let server = Server::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "no",
        ],
    );
    server.listening().await;
    let mut config = config(&format!("rediss://localhost:{port}"));
    config.ca_file = Some(ca_file.into());
    let r = RedisCounters::connect(&config, Duration::from_secs(60), u32::MAX, wall_offset(T0)).await.unwrap();
    let s = subject(KeyLimits { tokens_per_month: Some(100), ..KeyLimits::default() }, 1_000);
    assert!(matches!(admit(&r, &s, 60, T0).await, Ok(Ticket::Remote(_))));
    assert_eq!(admit(&r, &s, 60, T0).await.err().unwrap().limit, LimitKind::KeyTokens);
    // Without the test CA among its roots, the server's certificate is refused.
    config.ca_file = None;
    let refused = RedisCounters::connect(&config, Duration::from_secs(60), u32::MAX, wall_offset(T0)).await;
    assert!(refused.is_err());
}

/// A Redis that lost the scripts (a restart, `SCRIPT FLUSH`) gets them again on NOSCRIPT.
#[tokio::test]
async fn scripts_are_reloaded_after_noscript() {
    if url("NOSCRIPT").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server::start(port);
    server.ready().await;
    let r = connect(&config(&format!("redis://127.0.0.1:{port}")), Duration::from_secs(60)).await;
    let s = subject(KeyLimits::default(), 1_000);
    admit(&r, &s, 1, T0).await.unwrap().settle(1);
    let mut conn = r.shared.conn.get().unwrap().clone();
    ::redis::cmd("SCRIPT").arg("FLUSH").query_async::<()>(&mut conn).await.unwrap();
    assert!(matches!(admit(&r, &s, 1, T0).await, Ok(Ticket::Remote(_))));
    assert!(!r.degraded());
}

/// With `on_unavailable = "local"`, a reservation while Redis is away is made against this instance's
/// share of the quota (the key's 300 tokens over 3 instances).
#[tokio::test]
async fn local_fallback_reserves_against_the_instances_share_of_the_quota() {
    if url("the local token fallback").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Server::start(port);
    server.ready().await;
    let mut config = config(&format!("redis://127.0.0.1:{port}"));
    (config.timeout, config.instances, config.on_unavailable) = (Duration::from_millis(50), 3, OnUnavailable::Local);
    let r = connect(&config, Duration::from_secs(60)).await;
    server.kill();
    let s = subject(KeyLimits { tokens_per_month: Some(300), ..KeyLimits::default() }, 1_000_000);
    let held = admit(&r, &s, 60, T0).await.unwrap();
    assert!(matches!(held, Ticket::Local(_)));
    assert_eq!(held.headers().remaining_tokens, 40, "a third of 300, less 60");
    assert_eq!(admit(&r, &s, 60, T0).await.err().unwrap().limit, LimitKind::KeyTokens);
    assert_eq!(r.unavailable_counts(), (2, 0), "both admitted locally, neither refused as unavailable");
}

/// Across two instances, a key's per-minute limit admits its burst and no more at one instant, and an end
/// user's monthly quota holds as in one instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_and_end_user_quotas_hold_across_two_instances() {
    let Some(url) = url("rates across instances") else { return };
    let config = config(&url);
    let pair =
        Arc::new([connect(&config, Duration::from_secs(60)).await, connect(&config, Duration::from_secs(60)).await]);
    let mut s = subject(KeyLimits { requests_per_minute: Some(60), ..KeyLimits::default() }, 1_000_000);
    s.end_user = Some(EndUser {
        id: "ann".into(),
        limits: EndUserLimits { tokens_per_month: Some(1_000), ..EndUserLimits::default() },
    });
    let s = Arc::new(s);
    let (admitted, reserved) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (pair, s, admitted, reserved) =
            (Arc::clone(&pair), Arc::clone(&s), Arc::clone(&admitted), Arc::clone(&reserved));
        tasks.push(tokio::spawn(async move {
            let r = &pair[worker % 2];
            for _ in 0..50 {
                let permit = r.admit_request(&s, T0).await.unwrap();
                match r.reserve(permit, 100, T0).await {
                    Ok(ticket) => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        reserved.fetch_add(1, Ordering::SeqCst);
                        ticket.settle(100);
                    }
                    // Past the request limits, refused for tokens: counted against the rate all the same.
                    Err(refused) if refused.limit == LimitKind::EndUserTokens => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(refused) => assert_eq!(refused.limit, LimitKind::RequestsPerMinute),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 60, "the burst of 60 a minute passed, across both");
    assert_eq!(reserved.load(Ordering::SeqCst), 10, "1000 tokens of the end user's at 100 each");
    pair[0].settled().await;
    pair[1].settled().await;
    let hash = pair[0].shared.keys(s.key, &s.account, Some("ann")).end_user;
    assert_eq!(tokens(&pair[0], &hash).await, (1_000, 0));
}

/// A key that replaces another (a device's regenerated trial key) continues its counters in Redis.
#[tokio::test]
async fn an_inheriting_key_continues_its_predecessors_counters() {
    let Some(url) = url("inheritance") else { return };
    let r = connect(&config(&url), Duration::from_secs(60)).await;
    let old = subject(KeyLimits { requests_per_day: Some(2), ..KeyLimits::default() }, 1_000);
    for _ in 0..2 {
        admit(&r, &old, 5, T0).await.unwrap().settle(5);
    }
    let new = Subject { key: KeyId::parse("NNNNNNNNNNNN").unwrap(), ..old.clone() };
    r.inherit(old.key, new.key);
    r.settled().await;
    assert_eq!(admit(&r, &new, 5, T0).await.err().unwrap().limit, LimitKind::RequestsPerDay);
    assert_eq!(key_tokens(&r, &new).await, (10, 0));
}

/// canary: a Redis URL's password appears in no connection error.
#[tokio::test]
async fn the_redis_password_is_not_in_connection_errors() {
    let Some(url) = url("password redaction") else { return };
    let with_password = url.replacen("://", "://someone:canary-redis-pw-9f2@", 1);
    let Err(e) = RedisCounters::connect(&config(&with_password), Duration::from_secs(60), u32::MAX, 0).await else {
        panic!("the test Redis took a password it does not have");
    };
    assert!(!e.to_string().contains("canary-redis-pw-9f2") && e.to_string().contains("[redacted]"), "{e}");
}

/// A Redis that does not answer at start: the counters start degraded (limits checked locally) and go
/// to Redis once it answers, without a restart.
#[tokio::test]
async fn a_redis_absent_at_start_is_used_once_it_answers() {
    if url("a Redis absent at start").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = config(&format!("redis://127.0.0.1:{port}"));
    (config.timeout, config.breaker_cooldown) = (Duration::from_millis(50), Duration::from_millis(100));
    let r = connect(&config, Duration::from_secs(60)).await;
    assert!(r.degraded());
    let s = subject(KeyLimits::default(), 1_000);
    assert!(matches!(r.admit_request(&s, T0).await, Ok(Permit::Local(_))));
    let server = Server::start(port);
    server.ready().await;
    let started = Instant::now();
    while !matches!(admit(&r, &s, 1, T0).await, Ok(Ticket::Remote(_))) {
        assert!(started.elapsed() < Duration::from_secs(10), "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!r.degraded());
}

/// Keeps the Redis at `url` busy for `ms` milliseconds (a script that spins), and returns once it is: a
/// PING from another connection then goes unanswered.
async fn keep_busy(url: &str, ms: u64) -> tokio::task::JoinHandle<()> {
    let client = ::redis::Client::open(url).unwrap();
    let mut busy = client.get_multiplexed_async_connection().await.unwrap();
    let mut probe = client.get_multiplexed_async_connection().await.unwrap();
    let spin = "local t = redis.call('TIME') local stop = t[1] * 1000000 + t[2] + ARGV[1] \
                repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop return 1";
    let task = tokio::spawn(async move {
        let _: i64 = ::redis::cmd("EVAL").arg(spin).arg(0).arg(ms * 1000).query_async(&mut busy).await.unwrap();
    });
    let ping = ::redis::cmd("PING");
    loop {
        let ping = ping.query_async::<String>(&mut probe);
        if tokio::time::timeout(Duration::from_millis(20), ping).await.is_err() {
            return task;
        }
    }
}

/// An admission that Redis runs after its caller stopped waiting (Redis busy past `timeout`) keeps
/// nothing: the reservation and the slot of the request refused meanwhile are ended uncharged, rather than
/// held until their lease ends (and the reservation then charged whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_timed_out_leave_no_reservation_or_slot_behind() {
    if url("timed-out calls").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Server::start(port);
    server.ready().await;
    let mut config = config(&format!("redis://127.0.0.1:{port}"));
    // A call waits at most 20 timeouts (400 ms) however late its answer, and Redis stays busy for 700.
    (config.timeout, config.breaker_failures, config.breaker_cooldown) =
        (Duration::from_millis(20), 10, Duration::from_millis(100));
    let r = connect(&config, Duration::from_secs(600)).await;
    let limits = KeyLimits { concurrent_requests: Some(1), tokens_per_month: Some(1_000), ..KeyLimits::default() };
    let s = subject(limits, 10_000);
    let permit = r.admit_request(&s, T0).await.unwrap();
    assert!(matches!(permit, Permit::Pending(_)), "no call before the body");

    let busy = keep_busy(&format!("redis://127.0.0.1:{port}"), 700).await;
    let refused = r.reserve(permit, 100, T0).await.err().unwrap();
    assert_eq!(refused.limit, LimitKind::CountersUnavailable);
    busy.await.unwrap();

    r.settled().await;
    assert_eq!(key_tokens(&r, &s).await, (0, 0), "nothing reserved, nothing charged");
    let again = admit(&r, &s, 100, T0).await;
    assert!(matches!(again, Ok(Ticket::Remote(_))), "the only slot is free");
    drop(server);
}

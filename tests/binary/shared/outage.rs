//! Redis killed and started again under traffic on three processes: while it is away, request limits go
//! on locally (the key's divided by `counters.instances`), token-quota routes answer 503 in the provider's
//! shape with `Retry-After` (never 429, never 500), no request waits past the breaker's bound and `/readyz`
//! says the counters are degraded; once it is back, every process recovers by itself. The test starts its
//! own `redis-server` on a free port, so it can kill it and start it again on the same port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// Each Redis call's timeout; a request makes one (its admission) before it is answered.
const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// The longest any request may take while Redis is away: its Redis call at its timeout (Redis answers
/// nothing then, so the call does not wait on), and the rest of the request with room for a loaded
/// two-core machine.
const BREAKER_BOUND: Duration = Duration::from_millis(50 + 400);

/// Steady traffic on one process until `stop`, a request every 20 ms: each answer's status, body and time.
async fn steady(url: String, key: String, stop: Arc<AtomicBool>) -> Vec<(u16, String, Duration)> {
    let keys = Keys::new(&key);
    let mut seen = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let reply = post(&url, &keys.headers(), Shape::OpenAi.body()).await;
        seen.push((reply.status.as_u16(), reply.text(), started.elapsed()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// Calls process `i` with `keys` until it answers `status`, within `within` of `since`; that reply and the
/// time from `since`.
async fn until(
    cluster: &Cluster,
    i: usize,
    keys: &Keys,
    status: u16,
    (since, within): (Instant, Duration),
) -> (Reply, Duration) {
    let started = since;
    loop {
        let asked = Instant::now();
        let reply = post(&cluster.url(i, Shape::OpenAi.path()), &keys.headers(), Shape::OpenAi.body()).await;
        assert!(asked.elapsed() < BREAKER_BOUND, "process {i} took {:?}", asked.elapsed());
        if reply.status == status {
            return (reply, started.elapsed());
        }
        assert!([200, 503].contains(&reply.status.as_u16()), "process {i}: {} {}", reply.status, reply.text());
        assert!(started.elapsed() < within, "process {i} still not {status} after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn readyz(cluster: &Cluster, i: usize) -> String {
    let reply = request(http::Method::GET, &cluster.url(i, "/readyz"), &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

/// While Redis is away: `GET /v1/models` (no token reservation) with a key of `rpm` requests a minute is
/// admitted exactly rpm / 3 times on each process, then refused as over the per-minute limit.
async fn local_rate_limits(cluster: &Cluster, key: &str, rpm: u64) {
    let keys = Keys::new(key);
    for i in 0..3 {
        let mut admitted = 0;
        for _ in 0..rpm / 3 + 5 {
            let reply = request(http::Method::GET, &cluster.url(i, "/v1/models"), &keys.headers(), b"").await;
            match reply.status.as_u16() {
                200 => admitted += 1,
                429 => assert!(reply.text().contains("requests per minute for this key"), "{}", reply.text()),
                other => panic!("process {i}: {other} {}", reply.text()),
            }
        }
        eprintln!("Redis away: process {i} admitted {admitted} of {} for a key of {rpm} a minute", rpm / 3 + 5);
        assert_eq!(admitted, rpm / 3, "process {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_ride_out_a_redis_restart() {
    let Some(services) = services("the three-process Redis outage test") else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = RedisServer::start(port).await;
    let extra = format!("timeout = \"{}ms\"\nbreaker_cooldown = \"200ms\"\n", REDIS_TIMEOUT.as_millis());
    let cluster = Cluster::start(&services, &format!("redis://127.0.0.1:{port}"), "outage", &extra).await;
    let token = cluster.account("outage@example.com", 10).await;
    let (steady_key, _) = cluster.key(0, &token, json!({"name": "steady"})).await;
    let rpm = 30;
    let (paced_key, _) = cluster.key(0, &token, json!({"name": "paced", "limits": {"requests_per_minute": rpm}})).await;
    cluster.until_known_everywhere(&steady_key).await;
    cluster.until_known_everywhere(&paced_key).await;
    let keys = Keys::new(&steady_key);
    for i in 0..3 {
        until(&cluster, i, &keys, 200, (Instant::now(), Duration::from_secs(5))).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|i| tokio::spawn(steady(cluster.url(i, Shape::OpenAi.path()), steady_key.clone(), Arc::clone(&stop))))
        .collect();
    drop(redis);
    let killed = Instant::now();
    for i in 0..3 {
        let (reply, after) = until(&cluster, i, &keys, 503, (killed, Duration::from_secs(5))).await;
        Shape::OpenAi.assert_error(&reply, 503, "usage counters are unavailable");
        assert_eq!(reply.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
        assert!(readyz(&cluster, i).await.contains("counters degraded"));
        eprintln!("Redis killed: process {i} answered 503 {after:?} after the kill");
    }
    let anthropic = post(&cluster.url(1, Shape::Anthropic.path()), &keys.headers(), Shape::Anthropic.body()).await;
    Shape::Anthropic.assert_error(&anthropic, 503, "usage counters are unavailable");
    local_rate_limits(&cluster, &paced_key, rpm).await;

    let _redis = RedisServer::start(port).await;
    let back = Instant::now();
    for i in 0..3 {
        let (_, after) = until(&cluster, i, &keys, 200, (back, Duration::from_secs(10))).await;
        assert_eq!(readyz(&cluster, i).await, "ready");
        eprintln!("Redis back: process {i} served 200 again {after:?} after Redis listened");
    }
    stop.store(true, Ordering::SeqCst);
    let mut seen = Vec::new();
    for task in load {
        seen.extend(task.await.unwrap());
    }
    for (status, body, _) in &seen {
        assert!(
            *status == 200 || (*status == 503 && body.contains("usage counters are unavailable")),
            "{status} {body}"
        );
    }
    let slowest = seen.iter().map(|s| s.2).max().unwrap();
    let unavailable = seen.iter().filter(|s| s.0 == 503).count();
    eprintln!(
        "steady traffic through the outage: {} requests, {unavailable} answered 503, none other than 200/503, \
         slowest {slowest:?} (bound {BREAKER_BOUND:?})",
        seen.len()
    );
    assert!(unavailable > 0, "the steady traffic never saw the outage");
    assert!(slowest < BREAKER_BOUND, "a request took {slowest:?}");
}

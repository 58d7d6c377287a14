//! The Redis counters on the real server (docs/ARCHITECTURE.md, The seams, Counters), against a private
//! `redis-server` this test starts on a free port and kills mid-run: while Redis is away, token-quota
//! routes answer 503 in the provider's shape with `Retry-After` (never 429, never 500), request limits go
//! on locally, no request waits past the breaker, `/readyz` says so, the metric counts it, and everything
//! recovers when Redis is back, without a restart. Runs when `TOLLGATE_TEST_REDIS` is set (which also
//! says `redis-server` is installed); otherwise it says what it skips and passes.

use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test]
async fn a_redis_outage_answers_503_in_the_provider_shape_and_recovers() {
    if std::env::var("TOLLGATE_TEST_REDIS").map_or(true, |v| v.is_empty()) {
        eprintln!("TOLLGATE_TEST_REDIS is not set: skipping the Redis outage test of the server");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = RedisServer::start(port).await;
    let mock = MockUpstream::start().await;
    let extra = format!(
        "[counters]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\ntimeout = \"50ms\"\n\
         breaker_cooldown = \"200ms\"\ninstances = 2\nprefix = \"tollgate-it-{port}\"\n\
         [metrics]\non_main_listener = true\n"
    );
    let gw = Gateway::start(&mock.base_url(), &extra).await;
    let keys = gw.auth();
    let ok = gw.call(Shape::OpenAi.path(), &keys, Shape::OpenAi.body()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    drop(redis);

    for shape in [Shape::OpenAi, Shape::Anthropic, Shape::Gemini] {
        let started = Instant::now();
        let reply = gw.call(shape.path(), &keys, shape.body()).await;
        assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());
        shape.assert_error(&reply, 503, "usage counters are unavailable");
        assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    }
    let ready = request(http::Method::GET, &gw.url("/readyz"), &[], b"").await;
    assert_eq!(ready.status, 200);
    assert!(ready.text().contains("counters degraded"), "{}", ready.text());
    let metrics =
        request(http::Method::GET, &gw.url("/metrics"), &[("authorization", &format!("Bearer {METRICS_TOKEN}"))], b"")
            .await;
    let text = metrics.text();
    assert!(text.contains("tollgate_refusals_total{reason=\"counters_unavailable\"} 3"), "{text}");
    assert!(text.contains("tollgate_counters_degraded 1"), "{text}");
    assert!(text.contains("tollgate_counters_local_admissions_total 3"), "{text}");

    let _redis = RedisServer::start(port).await;
    let started = Instant::now();
    loop {
        let reply = gw.call(Shape::OpenAi.path(), &keys, Shape::OpenAi.body()).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(started.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = request(http::Method::GET, &gw.url("/readyz"), &[], b"").await;
    assert_eq!((ready.status.as_u16(), ready.text().as_str()), (200, "ready"));
}

/// Two instances on one store and one Redis, 1000 concurrent requests alternating between them against
/// one key with a 10,000-token quota: exactly as many admitted as one instance would admit
/// (floor(quota / reservation)), never more tokens charged than the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_token_quota() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tollgate::auth::keys::KeyLimits;

    let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS") else {
        eprintln!("TOLLGATE_TEST_REDIS is not set: skipping the two-instance quota test");
        return;
    };
    let mock = MockUpstream::start().await;
    let mut tag = [0u8; 6];
    getrandom::fill(&mut tag).unwrap();
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    // 1 s per Redis call rather than 50 ms: two servers, the mock and 1000 requests share one test
    // process's two threads here, and the task reading Redis's answers can wait its turn past 50 ms, which
    // the breaker cannot tell from a Redis that is away (503s). The three-process tests keep the default.
    let extra =
        format!("[counters]\nbackend = \"redis\"\nurl = \"{url}\"\nprefix = \"tollgate-it-{tag}\"\ntimeout = \"1s\"\n");
    let limits = KeyLimits {
        tokens_per_month: Some(10_000),
        requests_per_minute: Some(1000),
        requests_per_day: Some(10_000),
        concurrent_requests: Some(1000),
    };
    let a = Gateway::start_with(&mock.base_url(), &extra, &[NewKey { limits, ..NewKey::live("shared", 0) }]).await;
    let b = a.another_instance().await;
    let secret = a.keys[0].clone();
    let body = r#"{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let estimate = tollgate::metering::input_estimate(body.len());
    let reservation = estimate + 100;
    let usage_mode = format!("usage {estimate} 100");
    let mut senders = Vec::new();
    for gw in [&a, &b] {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        senders.push((sender, gw.url("/v1/chat/completions")));
    }
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (sender, url) = &senders[i % 2];
        let mut sender = sender.clone();
        let req = http::Request::post(url)
            .header("authorization", format!("Bearer {secret}"))
            .header("x-provider-key", PROVIDER_KEY)
            .header("x-mock", usage_mode.as_str())
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let response = sender.send_request(req).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    let (mut admitted, mut refused) = (0u64, 0u64);
    for task in tasks {
        match task.await.unwrap() {
            (200, _) => admitted += 1,
            (429, body) => {
                assert!(String::from_utf8_lossy(&body).contains("insufficient_quota"));
                refused += 1;
            }
            (other, body) => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert_eq!((admitted, refused), (10_000 / reservation, 1000 - 10_000 / reservation));
    assert!(admitted * reservation <= 10_000);
    eprintln!("two instances: admitted {admitted}, refused {refused}, charged {} of 10000", admitted * reservation);
}

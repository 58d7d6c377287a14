//! The Redis counters on the real server (docs/ARCHITECTURE.md, The seams, Counters), against a private
//! `redis-server` this test starts on a free port and kills mid-run: while Redis is away, token-quota
//! routes answer 503 in the provider's shape with `Retry-After` (never 429, never 500), request limits go
//! on locally, no request waits past the breaker, `/readyz` says so, the metric counts it, and everything
//! recovers when Redis is back, without a restart. Runs when `TOLLGATE_TEST_REDIS` is set (which also
//! says `redis-server` is installed); otherwise it says what it skips and passes.

use std::time::{Duration, Instant};

use crate::common::*;

struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    async fn start(port: u16) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = RedisServer { child, port };
        // It listens a few milliseconds after it starts.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {port} never listened");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

//! The management API's login against the real binary: the operator token needs a session secret
//! beside it.

use crate::process::*;

#[test]
fn an_operator_token_without_a_session_secret_is_refused_at_start() {
    let setup = Setup::new("http://127.0.0.1:9", "");
    for args in [&["check-config"][..], &["serve"]] {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&setup.config)
            .args(args)
            .env("TOLLGATE_ADMIN_TOKEN", "operator-token-0123456789abcdef")
            .env_remove("TOLLGATE_SESSION_SECRET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TOLLGATE_SESSION_SECRET"), "{args:?}: {err}");
    }
}

/// A keep-alive HTTP/1.1 connection to `to` from the loopback address `from`, so each flooding client is
/// its own client address.
async fn connect_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(std::net::SocketAddr::new(from, 0)).ok()?;
    let stream = socket.connect(to).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn login_from(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    body: &str,
) -> Option<u16> {
    use http_body_util::BodyExt;
    sender.ready().await.ok()?;
    let req = http::Request::post("/v1/auth/login")
        .header("host", "tollgate")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
        .ok()?;
    let reply = sender.send_request(req).await.ok()?;
    let status = reply.status().as_u16();
    reply.into_body().collect().await.ok()?;
    Some(status)
}

fn p95(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[(ms.len() * 95 / 100).min(ms.len() - 1)]
}

async fn provider_latency_ms(url: &str, key: &str) -> f64 {
    let auth = format!("Bearer {key}");
    let started = std::time::Instant::now();
    let reply = crate::common::post(
        url,
        &[("authorization", &auth), ("x-provider-key", crate::common::PROVIDER_KEY)],
        crate::common::Shape::OpenAi.body(),
    )
    .await;
    assert_eq!(reply.status, 200);
    started.elapsed().as_secs_f64() * 1000.0
}

/// 48 clients, each from its own loopback address, guess one account's password for three seconds.
/// Argon2 runs on a fixed pool with reused memory behind a short queue and per-address and per-account
/// throttles, so the server's RSS stays within 256 MiB of where it started (before the fix it grew by
/// gigabytes) and provider requests meanwhile keep a p95 within 10× of idle (plus 20 ms for a loaded CI
/// machine). The right password from an address that was not guessing still gets in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_guessing_flood_leaves_memory_and_the_data_plane_alone() {
    use crate::common::*;
    let _quiet = QUIET_CORES.lock().await;
    const ADMIN: &str = "operator-token-0123456789abcdef";
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let key = setup.create_key("flood");
    let server = Server::spawn(
        &setup.config,
        &[("TOLLGATE_ADMIN_TOKEN", ADMIN), ("TOLLGATE_SESSION_SECRET", "session-secret-0123456789abcdef")],
    );
    let admin = format!("Bearer {ADMIN}");
    let account = r#"{"email":"victim@example.com","password":"the real passphrase"}"#;
    let created = request(
        http::Method::POST,
        &server.url("/v1/accounts"),
        &[("authorization", &admin), ("content-type", "application/json")],
        account.as_bytes(),
    )
    .await;
    assert_eq!(created.status, 201);
    let provider_url = server.url(Shape::OpenAi.path());

    // Paced under the key's 1000 requests a minute.
    let pace = || {
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(75));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    };
    let mut ticks = pace();
    let mut idle = Vec::new();
    for _ in 0..25 {
        ticks.tick().await;
        idle.push(provider_latency_ms(&provider_url, &key).await);
    }
    let idle_p95 = p95(idle);
    let rss_start = rss_kib(server.pid());

    let flood_for = std::time::Duration::from_secs(3);
    let deadline = tokio::time::Instant::now() + flood_for;
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..48u8 {
        let to = server.addr;
        attackers.spawn(async move {
            let from = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, i + 1));
            let wrong = format!(r#"{{"email":"victim@example.com","password":"guess number {i}"}}"#);
            let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
            while tokio::time::Instant::now() < deadline {
                let Some(mut sender) = connect_from(from, to).await else { continue };
                while tokio::time::Instant::now() < deadline {
                    // A guess the account back-off holds past the deadline is abandoned, not waited for.
                    let Ok(Some(status)) = tokio::time::timeout_at(deadline, login_from(&mut sender, &wrong)).await
                    else {
                        break;
                    };
                    *statuses.entry(status).or_default() += 1;
                }
            }
            statuses
        });
    }
    let pid = server.pid();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while tokio::time::Instant::now() < deadline + std::time::Duration::from_millis(500) {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        peak
    });
    let mut during = Vec::new();
    let mut ticks = pace();
    while tokio::time::Instant::now() < deadline {
        ticks.tick().await;
        during.push(provider_latency_ms(&provider_url, &key).await);
    }
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for per_client in attackers.join_all().await {
        for (status, n) in per_client {
            *statuses.entry(status).or_default() += n;
        }
    }
    let peak = sampler.await.unwrap();
    let flood_p95 = p95(during.clone());
    eprintln!(
        "login flood: RSS {} MiB at start, peak {} MiB (+{} MiB); provider p95 idle {idle_p95:.2} ms, during the \
         flood {flood_p95:.2} ms over {} requests ({:.1}x); login answers {statuses:?}",
        rss_start / 1024,
        peak / 1024,
        peak.saturating_sub(rss_start) / 1024,
        during.len(),
        flood_p95 / idle_p95
    );
    assert!(statuses.keys().all(|s| [401, 429].contains(s)), "{statuses:?}");
    assert!(statuses.contains_key(&429), "the flood was throttled: {statuses:?}");
    assert!(peak.saturating_sub(rss_start) <= 256 * 1024, "RSS grew from {rss_start} KiB to {peak} KiB");
    assert!(
        flood_p95 <= idle_p95 * 10.0 + 20.0,
        "provider p95 {flood_p95:.2} ms during the flood, {idle_p95:.2} ms idle"
    );

    // The real user, from an address that was not guessing: delayed at most a few seconds, never locked out.
    let from = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 2, 1));
    let mut sender = connect_from(from, server.addr).await.unwrap();
    let right = r#"{"email":"victim@example.com","password":"the real passphrase"}"#;
    let started = std::time::Instant::now();
    let mut status = 0;
    for _ in 0..20 {
        status = login_from(&mut sender, right).await.unwrap();
        if status != 429 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    eprintln!("the real user got {status} after {:?}", started.elapsed());
    assert_eq!(status, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

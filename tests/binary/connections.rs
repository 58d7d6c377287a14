//! Ten thousand idle connections against the real binary under the common limit of 1,024 open files: the
//! connection caps derived from that limit keep what it holds bounded, and a real client is still served at
//! once.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;
use crate::process::{Server, Setup, rss_kib};

const IDLE: usize = 10_000;

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One request over a new connection from the loopback address `from`.
async fn request_from(from: IpAddr, to: SocketAddr, req: http::Request<String>) -> (http::StatusCode, String) {
    let stream = connect_from(from, to).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_stop_a_real_client() {
    let mock = MockUpstream::start().await;
    // The shipped defaults for the caps (the rig's generous caps taken out again): under `ulimit -n 1024`
    // (soft and hard) the total is (1024 - 64) / 2 = 480 and each address may hold 100. The head deadline
    // is longer than the test, so that the silent connections hold their places however slowly a loaded
    // machine opens them (the deadline itself is tested in tests/proxy/connections.rs).
    let setup = Setup::new(
        &mock.base_url(),
        "[server]\nmax_connections = \"auto\"\nmax_connections_per_ip = \"auto\"\nheader_read_timeout = \"2m\"\n",
    );
    let key = setup.create_key("real");
    let server = Server::spawn_with_open_files(&setup.config, &[], 1024);
    let before = open_files(server.pid());

    // The attacker, from four addresses, opens connections and never sends a byte; 64 connects at a time.
    // Four addresses at their cap hold 400 places, which filled the former fixed total of 400.
    let attackers: [IpAddr; 4] =
        [[127, 0, 0, 1].into(), [127, 0, 0, 3].into(), [127, 0, 0, 4].into(), [127, 0, 0, 5].into()];
    let mut held = Vec::with_capacity(IDLE);
    let started = Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    // Bounded: a server that stopped accepting leaves connects hanging in SYN retries.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    for i in 0..IDLE {
        if i >= 64 {
            if let Some(Ok(Ok(Ok(stream)))) = pending.join_next().await {
                held.push(stream);
            }
        }
        pending.spawn(tokio::time::timeout_at(give_up, connect_from(attackers[i % attackers.len()], server.addr)));
    }
    while let Some(done) = pending.join_next().await {
        if let Ok(Ok(Ok(stream))) = done {
            held.push(stream);
        }
    }
    eprintln!("{} of {IDLE} idle connections opened in {:?}", held.len(), started.elapsed());

    // A real client, from another address, is served at once: a probe and a proxied request.
    let real: IpAddr = [127, 0, 0, 2].into();
    let started = Instant::now();
    let probe = http::Request::get("/healthz").header("host", "t").body(String::new()).unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), request_from(real, server.addr, probe))
        .await
        .expect("no answer within 5 s while idle connections are held");
    assert_eq!(status, 200);
    let proxied = http::Request::post("/v1/chat/completions")
        .header("host", "t")
        .header("authorization", format!("Bearer {key}"))
        .header("x-provider-key", PROVIDER_KEY)
        .body(Shape::OpenAi.body().to_owned())
        .unwrap();
    let (status, text) = tokio::time::timeout(Duration::from_secs(5), request_from(real, server.addr, proxied))
        .await
        .expect("no answer within 5 s while idle connections are held");
    assert_eq!(status, 200, "{text}");
    let served_in = started.elapsed();

    let files = open_files(server.pid());
    eprintln!(
        "real client served in {served_in:?}; the server holds {files} open files ({before} before the {IDLE} connections)"
    );
    assert!(files <= before + 4 * 100 + 16, "the server holds {files} files: the per-address cap did not bound them");
    // The four held about their 400 places while the real client was served: the former total of 400
    // would have refused it.
    assert!(files >= before + 300, "the server holds {files} files: the idle connections did not hold their places");
    drop(held);
    let (status, logs) = server.stop();
    assert!(status.success(), "{status:?}");
    let caps = logs.iter().find(|l| l.contains("connection caps")).expect("the caps are logged");
    assert!(caps.contains("max_connections=480") && caps.contains("max_connections_per_ip=100"), "{caps}");
    assert!(logs.iter().any(|l| l.contains("open-file limit") && l.contains("1024")), "the open-file limit is logged");
    assert!(logs.iter().any(|l| l.contains("connection refused: over the cap")), "refusals are logged");
    // Every refusal was an address at its own cap: the four never reached the total.
    let refusals: Vec<_> = logs.iter().filter(|l| l.contains("connection refused")).collect();
    assert!(refusals.iter().all(|l| l.contains("server.max_connections_per_ip")), "{refusals:?}");
    let refusal_lines = logs.iter().filter(|l| l.contains("connection refused")).count();
    assert!(refusal_lines < 50, "{refusal_lines} refusal lines: not rate-limited");
    assert!(!logs.iter().any(|l| l.contains("accept failed")), "the accept loop ran out of files");
}

/// The worst time of `n` sequential probes of `/healthz` from a fresh connection each.
async fn worst_probe(server: &Server, n: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            try_request(http::Method::GET, &server.url("/healthz"), &[], b""),
        )
        .await
        .expect("a probe got no answer within 5 s")
        .unwrap();
        assert_eq!(reply.status, 200);
        worst = worst.max(started.elapsed());
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_floods_neither_grow_memory_nor_stall_other_clients() {
    const STREAMS: usize = 10_000;
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let key = setup.create_key("flood");
    let server = Server::spawn(&setup.config, &[]);
    let (pid, addr) = (server.pid(), server.addr);
    assert!(worst_probe(&server, 1).await < Duration::from_secs(5));
    let rss_before = rss_kib(pid);

    // Streams opened and cancelled at once, reconnecting whenever the server ends the connection.
    let flood = tokio::spawn(async move {
        let auth = format!("Bearer {key}");
        let (mut sent, mut connections, mut ended_by_server) = (0usize, 0usize, 0usize);
        while sent < STREAMS {
            let stream = TcpStream::connect(addr).await.unwrap();
            let Ok((client, conn)) = h2::client::handshake(stream).await else { break };
            connections += 1;
            let conn = tokio::spawn(conn);
            let mut client = client;
            while sent < STREAMS {
                client = match client.ready().await {
                    Ok(client) => client,
                    Err(_) => break,
                };
                let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
                    .header("authorization", &auth)
                    .header("x-provider-key", PROVIDER_KEY)
                    .body(())
                    .unwrap();
                match client.send_request(req, false) {
                    Ok((_response, mut body)) => {
                        body.send_reset(h2::Reason::CANCEL);
                        sent += 1;
                    }
                    Err(_) => break,
                }
            }
            // The client is gone (moved into a failed `ready`) or done: the connection ends either way.
            if let Ok(Ok(Err(_))) = tokio::time::timeout(Duration::from_secs(5), conn).await {
                ended_by_server += 1;
            }
        }
        (sent, connections, ended_by_server)
    });
    let worst = worst_probe(&server, 20).await;
    let (sent, connections, ended_by_server) = flood.await.unwrap();
    let rss_after = rss_kib(pid);
    eprintln!(
        "rapid reset: {sent} streams over {connections} connections ({ended_by_server} ended by the server); \
         worst probe {worst:?}; RSS {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(sent, STREAMS);
    assert!(worst < Duration::from_secs(1), "a probe took {worst:?} during the flood");
    assert!(rss_after < rss_before + 32 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    assert!(worst_probe(&server, 5).await < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_continuation_flood_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let server = Server::spawn(&setup.config, &[]);
    let pid = server.pid();
    assert!(worst_probe(&server, 1).await < Duration::from_secs(5));
    let rss_before = rss_kib(pid);

    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    // A header block of literal fields `x: <100 bytes>` that never ends (no END_HEADERS), 16 KiB a frame.
    let field: Vec<u8> = [&[0x00, 0x01, b'x', 100][..], &[b'a'; 100][..]].concat();
    let fragment: Vec<u8> = field.iter().copied().cycle().take(16 * 1024).collect();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    stream.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let mut written = 0usize;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let mut cut = false;
    let sink = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut first = true;
    while written < 64 << 20 && started.elapsed() < Duration::from_secs(10) {
        let f = if first { frame(1, 0, 1, &fragment) } else { frame(9, 0, 1, &fragment) };
        first = false;
        match tokio::time::timeout(Duration::from_secs(2), writer.write_all(&f)).await {
            Ok(Ok(())) => written += f.len(),
            // Refused (closed) or no longer read: either way the server stopped taking the flood.
            _ => {
                cut = true;
                break;
            }
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), sink).await.is_ok();
    let rss_after = rss_kib(pid);
    eprintln!(
        "CONTINUATION flood: {} KiB written before the server stopped it (closed: {closed}); RSS {rss_before} -> {rss_after} KiB",
        written / 1024
    );
    assert!(cut, "the server took {written} bytes of one header block");
    assert!(closed, "the flooding connection was not closed");
    assert!(rss_after < rss_before + 32 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    assert!(worst_probe(&server, 5).await < Duration::from_secs(1));
}

//! Resource exhaustion against the real binary, so that the memory measured is the server's own: an
//! upstream whose response head never ends, one enormous stream event, an upstream that drips a byte at a
//! time, and a flood of well-formed but unknown service keys. Each ends with the documented error within a
//! bounded time, and the server's resident memory grows by a bounded amount.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;
use crate::process::{Server, Setup, status_kib};

/// What the upstream sends at most, however long tollgate keeps reading.
const FLOOD_BYTES: u64 = 48 << 20;
/// Growth of the server's RSS allowed while one upstream misbehaves. Every upstream here would send up to
/// 48 MiB if tollgate kept reading; a server that settles after its warm-up has been seen to add up to 6 MiB
/// on its own, so the bound leaves room for that and none for the upstream's bytes.
const BOUND_KIB: u64 = 16 * 1024;
/// Completions served before the baseline is read.
const WARM_UP: usize = 20;

/// Samples the server's RSS every few milliseconds until dropped; `peak` is the highest seen.
struct RssSampler {
    pid: u32,
    before: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let before = status_kib(pid, "VmRSS:");
        let peak = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssSampler { pid, before, peak, stop, thread: Some(thread) }
    }

    /// Stops sampling; prints and returns (before, after, peak) in KiB.
    fn finish(mut self, what: &str) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let after = status_kib(self.pid, "VmRSS:");
        // The kernel's high-water mark catches a spike between two samples; the warm-up before the baseline
        // already took the server past whatever it held at start.
        let peak = self.peak.load(Ordering::Relaxed).max(after).max(status_kib(self.pid, "VmHWM:"));
        eprintln!(
            "{what}: server RSS before {} KiB, after {after} KiB, peak {peak} KiB (growth at peak {} KiB)",
            self.before,
            peak.saturating_sub(self.before),
        );
        (self.before, after, peak)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one request (head and `Content-Length` body) from `stream`: `Some(true)` for a warm-up request
/// (`x-warm-up` header), `None` if the connection ended first.
async fn read_request(stream: &mut TcpStream) -> Option<bool> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(head.contains("\r\nx-warm-up:"));
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A raw TCP upstream: for each connection, reads the request and hands the socket to `answer`, which
/// counts the bytes it writes in the returned counter. A warm-up request gets a plain completion instead.
async fn raw_upstream<F, Fut>(answer: F) -> (String, Arc<AtomicU64>)
where
    F: Fn(TcpStream, Arc<AtomicU64>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, counter) = (Arc::clone(&answer), Arc::clone(&counter));
            tokio::spawn(async move {
                match read_request(&mut stream).await {
                    Some(true) => {
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{OPENAI_JSON}",
                            OPENAI_JSON.len()
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                    }
                    Some(false) => answer(stream, counter).await,
                    None => {}
                }
            });
        }
    });
    (format!("http://{addr}"), sent)
}

/// Writes `head`, then `unit` repeatedly until `FLOOD_BYTES` or until the peer stops taking it.
async fn flood(mut stream: TcpStream, sent: Arc<AtomicU64>, head: &'static [u8], unit: Vec<u8>) {
    if stream.write_all(head).await.is_err() {
        return;
    }
    let mut total = sent.fetch_add(head.len() as u64, Ordering::Relaxed);
    while total < FLOOD_BYTES {
        if stream.write_all(&unit).await.is_err() {
            break;
        }
        total = sent.fetch_add(unit.len() as u64, Ordering::Relaxed);
    }
}

async fn start(upstream: &str, extra: &str) -> (Setup, Server, String) {
    let setup = Setup::new(upstream, extra);
    let key = setup.create_key("exhaustion");
    let server = Server::spawn(&setup.config, &[]);
    // Requests served in full first warm the server's threads, pools and allocator, so that the baseline
    // is a server that has already served: a refused key and a completion from the same upstream.
    let url = server.url("/v1/chat/completions");
    let reply = post(&url, &[("authorization", "Bearer tg_live_unknown")], "{}").await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    let auth = format!("Bearer {key}");
    for _ in 0..WARM_UP {
        let headers = [("authorization", auth.as_str()), ("x-provider-key", PROVIDER_KEY), ("x-warm-up", "1")];
        let reply = post(&url, &headers, Shape::OpenAi.body()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    (setup, server, key)
}

/// Sends a chat completion (streaming or not) and reads the whole answer within `limit`.
async fn ask(server: &Server, key: &str, body: &str, limit: Duration) -> (http::StatusCode, String, Duration) {
    let started = Instant::now();
    let keys = Keys::new(key);
    let headers = keys.headers();
    let exchange = async {
        let response =
            open(http::Method::POST, &server.url("/v1/chat/completions"), &headers, body.as_bytes()).await.unwrap();
        let status = response.status();
        // A body cut by an error still yields what arrived before it.
        let mut text = Vec::new();
        let mut body = response.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data);
            }
        }
        (status, String::from_utf8_lossy(&text).into_owned())
    };
    let (status, text) =
        tokio::time::timeout(limit, exchange).await.unwrap_or_else(|_| panic!("no complete answer within {limit:?}"));
    (status, text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_head_that_never_ends_is_a_502_with_bounded_memory() {
    let line = format!("X-Pad: {}\r\n", "a".repeat(1024)).into_bytes();
    let (upstream, sent) =
        raw_upstream(move |stream, sent| flood(stream, sent, b"HTTP/1.1 200 OK\r\n", line.clone())).await;
    let (_setup, server, key) = start(&upstream, "").await;
    let rss = RssSampler::start(server.pid());
    let (status, text, took) = ask(&server, &key, Shape::OpenAi.body(), Duration::from_secs(10)).await;
    let (before, _, peak) = rss.finish("endless upstream head");
    eprintln!(
        "endless upstream head: {status} after {took:?}; the upstream wrote {} bytes",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("Upstream provider connection failed"), "{text}");
    assert!(peak < before + BOUND_KIB, "RSS grew from {before} to {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_enormous_stream_event_ends_the_stream_with_bounded_memory() {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: ";
    let (upstream, sent) = raw_upstream(|stream, sent| flood(stream, sent, HEAD, vec![b'a'; 64 * 1024])).await;
    // 256 KiB, against the upstream's 48 MiB event.
    let (_setup, server, key) = start(&upstream, "[upstream]\nmax_event_bytes = 262144\n").await;
    let rss = RssSampler::start(server.pid());
    let (status, text, took) = ask(&server, &key, Shape::OpenAi.stream_body(), Duration::from_secs(10)).await;
    let (before, _, peak) = rss.finish("enormous event");
    eprintln!(
        "enormous event: {status}, {} bytes to the caller after {took:?}; the upstream wrote {} bytes",
        text.len(),
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(status, 200, "{text}");
    // Exactly one event reaches the caller: the terminal error (the torn event is never forwarded).
    assert!(text.starts_with("data: {\"error\":") && text.ends_with("\n\n"), "{text}");
    assert_eq!(text.matches("\n\n").count(), 1, "{text}");
    assert!(text.contains("Upstream stream event exceeded the size limit"), "{text}");
    assert!(peak < before + BOUND_KIB, "RSS grew from {before} to {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drips_ends_at_the_idle_timeout() {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
    // One byte, then one more each second, slower than the idle timeout; 14 bytes at most.
    let (upstream, sent) = raw_upstream(|mut stream, sent| async move {
        if stream.write_all(HEAD).await.is_err() {
            return;
        }
        sent.fetch_add(HEAD.len() as u64, Ordering::Relaxed);
        for byte in b"data: dripping" {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let (_setup, server, key) = start(&upstream, "[upstream]\nidle_timeout = \"300ms\"\n").await;
    let rss = RssSampler::start(server.pid());
    let (status, text, took) = ask(&server, &key, Shape::OpenAi.stream_body(), Duration::from_secs(8)).await;
    let (before, _, peak) = rss.finish("drip");
    eprintln!("drip: {status} ended after {took:?}; the upstream wrote {} bytes", sent.load(Ordering::Relaxed));
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("data: {\"error\":") && text.ends_with("\n\n"), "{text}");
    assert!(text.contains("Upstream provider timed out"), "{text}");
    // Ended by the 300 ms idle timer after the first byte, far from the 30 s total.
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    assert!(peak < before + BOUND_KIB, "RSS grew from {before} to {peak} KiB");
}

/// Sends requests with fresh random keys on one keep-alive connection until `until`; returns (sent, 401s).
async fn unknown_keys(addr: SocketAddr, until: Instant, cap: usize) -> (usize, usize) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let (mut sent, mut refused) = (0, 0);
    while sent < cap && Instant::now() < until {
        let (key, _) = tollgate::auth::keys::generate("tg", tollgate::auth::keys::KeyKind::Live).unwrap();
        let req = http::Request::post("/v1/chat/completions")
            .header("host", "t")
            .header("authorization", format!("Bearer {}", key.expose()))
            .header("x-provider-key", PROVIDER_KEY)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(Shape::OpenAi.body().as_bytes())))
            .unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(req).await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        sent += 1;
        if status == 401 {
            refused += 1;
        }
    }
    (sent, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_keys_is_refused_without_growing_memory() {
    const CONNECTIONS: usize = 4;
    const CAP: usize = 25_000;
    let mock = MockUpstream::start().await;
    let (_setup, server, _key) = start(&mock.base_url(), "").await;
    let warm_up = mock.recorded().len();
    let rss = RssSampler::start(server.pid());
    let started = Instant::now();
    let until = started + Duration::from_secs(3);
    let floods: Vec<_> =
        (0..CONNECTIONS).map(|_| tokio::spawn(unknown_keys(server.addr, until, CAP / CONNECTIONS))).collect();
    let (mut sent, mut refused) = (0, 0);
    for flood in floods {
        let (s, r) = flood.await.unwrap();
        sent += s;
        refused += r;
    }
    let took = started.elapsed();
    let (before, after, peak) = rss.finish("unknown keys");
    eprintln!(
        "unknown keys: {sent} requests over {CONNECTIONS} connections in {took:?} ({:.0}/s), {refused} answered 401",
        sent as f64 / took.as_secs_f64()
    );
    assert_eq!(refused, sent, "every unknown key is a 401");
    assert!(sent >= 500, "only {sent} requests in {took:?}");
    assert!(peak < before + 50 * 1024, "RSS grew from {before} to {peak} KiB");
    assert!(after < before + 50 * 1024, "RSS grew from {before} to {after} KiB");
    assert_eq!(mock.recorded().len(), warm_up, "an unknown key reached the upstream");
}

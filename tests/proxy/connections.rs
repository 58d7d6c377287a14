//! Connections and request bodies under pressure: the body cap counted once, keep-alive kept (or closed
//! honestly) after early refusals, deadlines on silent, idle and trickling peers, and the connection caps.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

/// Connects from the loopback address `from` (any 127.x.y.z is local on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes, or at most `limit`; returns what arrived and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

#[tokio::test]
async fn a_body_of_exactly_the_cap_in_several_chunks_is_accepted() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nmax_body_bytes = 4096\n").await;
    let (open, close) = (r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#, r#""}]}"#);
    for (size, status) in [(4096, "200"), (4097, "413")] {
        let body = format!("{open}{}{close}", "x".repeat(size - open.len() - close.len()));
        let mut request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {}\r\nx-provider-key: {PROVIDER_KEY}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            gw.key
        );
        for chunk in body.as_bytes().chunks(1024) {
            request.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), std::str::from_utf8(chunk).unwrap()));
        }
        request.push_str("0\r\n\r\n");
        let reply = raw(gw.addr, request.as_bytes()).await;
        assert!(reply.starts_with(&format!("HTTP/1.1 {status}")), "{size} bytes: {reply}");
    }
}

/// A request body sent in two parts, the second a moment later, as clients that write the head and the
/// body separately do.
struct LateBody {
    parts: Vec<Bytes>,
    len: u64,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl LateBody {
    fn new(body: &'static str) -> LateBody {
        let (a, b) = body.split_at(body.len() / 2);
        LateBody {
            parts: vec![Bytes::from_static(b.as_bytes()), Bytes::from_static(a.as_bytes())],
            len: body.len() as u64,
            delay: None,
        }
    }
}

impl hyper::body::Body for LateBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.parts.len() == 1 {
            let delay = this.delay.get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(1))));
            std::task::ready!(delay.as_mut().poll(cx));
        }
        Poll::Ready(this.parts.pop().map(|p| Ok(Frame::data(p))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}

/// A request tollgate refuses before reading its body: method, path, headers, expected status.
type Refusal = (http::Method, &'static str, Vec<(&'static str, String)>, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_leave_keep_alive_connections_usable() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let auth = format!("Bearer {}", gw.key);
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a question of some length"}]}"#;
    // Every answer tollgate gives before reading the body.
    let cases: Vec<Refusal> = vec![
        (http::Method::POST, "/v1/chat/completions", vec![], 401),
        (http::Method::POST, "/v1/chat/completions", vec![("authorization", auth.clone())], 400),
        (http::Method::POST, "/v1/files", vec![("authorization", auth.clone())], 404),
        (http::Method::PUT, "/v1/chat/completions", vec![("authorization", auth.clone())], 405),
        (http::Method::POST, "/v1/accounts", vec![], 401),
    ];
    const CONNECTIONS: usize = 10;
    const REQUESTS: usize = 1000;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let cases = cases.clone();
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            // A pool of one: reuse the connection until it says it closes or is seen closed.
            let (mut errors, mut opened) = (0usize, 0usize);
            let mut sender: Option<hyper::client::conn::http1::SendRequest<LateBody>> = None;
            for i in 0..REQUESTS {
                let (method, path, headers, status) = &cases[(c + i) % cases.len()];
                if sender.as_mut().is_none_or(|s| s.is_closed()) {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                    tokio::spawn(conn);
                    sender = Some(s);
                    opened += 1;
                }
                let s = sender.as_mut().unwrap();
                if s.ready().await.is_err() {
                    sender = None;
                    continue;
                }
                let mut req = http::Request::builder().method(method.clone()).uri(*path).header("host", "t");
                for (k, v) in headers {
                    req = req.header(*k, v);
                }
                let req = req.header("content-type", "application/json").body(LateBody::new(body)).unwrap();
                match s.send_request(req).await {
                    Ok(response) => {
                        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
                        let closes = response.headers().get("connection").is_some_and(|v| v == "close");
                        let _ = response.into_body().collect().await;
                        if closes {
                            sender = None;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        sender = None;
                    }
                }
            }
            (errors, opened)
        }));
    }
    let (mut errors, mut opened) = (0, 0);
    for task in tasks {
        let (e, o) = task.await.unwrap();
        errors += e;
        opened += o;
    }
    eprintln!(
        "{} early refusals over keep-alive: {errors} transport errors, {opened} connections",
        CONNECTIONS * REQUESTS
    );
    assert_eq!(errors, 0, "requests that met a connection closed without an answer");
    assert_eq!(opened, CONNECTIONS, "a body that arrives promptly is drained and the connection kept");
}

#[tokio::test]
async fn a_body_larger_than_the_drain_closes_the_connection_honestly() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // A 401 for a body of a megabyte that is never sent: answered, and the connection is the last.
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 1048576\r\n\r\n{\"model\"")
        .await
        .unwrap();
    let (reply, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    assert!(closed);
}

#[tokio::test]
async fn silent_half_prefaced_and_idle_keep_alive_connections_are_closed_by_the_head_deadline() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nheader_read_timeout = \"500ms\"\n").await;
    for first_bytes in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(first_bytes).await.unwrap();
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let held = started.elapsed();
        eprintln!("{first_bytes:?}: closed after {held:?}");
        assert!(closed, "{first_bytes:?}: still open after 5 s");
        assert!(held >= Duration::from_millis(450), "{held:?}");
    }
    // A keep-alive connection that has been answered waits as long for its next request head.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let (reply, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    eprintln!("idle keep-alive connection closed after {:?}", started.elapsed());
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok"), "{reply}");
    assert!(closed, "an idle keep-alive connection still open after 5 s");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_though_it_answers_pings() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nidle_timeout = \"500ms\"\n").await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    let started = Instant::now();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(gw.url("/healthz")).body(http_body_util::Empty::new()).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    eprintln!("idle HTTP/2 connection closed after {:?}", started.elapsed());
    assert!(ended.is_ok(), "the idle HTTP/2 connection was still open after 5 s");
}

/// A request over a new connection from `from`: a connection that is served keeps its place (keep-alive)
/// and is returned; a refused one hears 503 and is closed.
async fn hold(from: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let mut stream = connect_from(from, to).await;
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").await.is_err() {
        return None;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if n == 0 || text.ends_with("\r\n\r\nok") || text.ends_with("too many connections") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    if text.starts_with("HTTP/1.1 200") {
        return Some(stream);
    }
    let lower = text.to_ascii_lowercase();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(lower.contains("retry-after: 1") && lower.contains("connection: close"), "{text}");
    assert!(read_until_closed(&mut stream, Duration::from_secs(5)).await.1, "a refused connection stays open");
    None
}

/// A connection from `from` that keeps its place. A closed connection gives its place back a moment after
/// the client sees the close (the rig's readiness request too): a bounded wait.
async fn held(from: [u8; 4], to: SocketAddr) -> TcpStream {
    for _ in 0..100 {
        if let Some(stream) = hold(from, to).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no place for {from:?}");
}

#[tokio::test]
async fn one_address_cannot_hold_the_whole_total_when_its_cap_is_a_quarter_of_it() {
    let mock = MockUpstream::start().await;
    // A total of 8 and the per-address cap left to its default: a quarter of the total, 2.
    let gw = Gateway::start(
        &mock.base_url(),
        "[server]\nmax_connections = 8\nmax_connections_per_ip = \"auto\"\nheader_read_timeout = \"1m\"\n",
    )
    .await;
    let mut kept = Vec::new();
    for _ in 0..2 {
        kept.push(held([127, 0, 0, 1], gw.addr).await);
    }
    for _ in 0..6 {
        assert!(hold([127, 0, 0, 1], gw.addr).await.is_none(), "one address went past a quarter of the total");
    }
    // Three more addresses at their cap are needed to fill it; each is served until then.
    for from in [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]] {
        for _ in 0..2 {
            kept.push(held(from, gw.addr).await);
        }
        assert!(hold(from, gw.addr).await.is_none(), "{from:?} went past its cap");
    }
    assert_eq!(kept.len(), 8);
    assert!(hold([127, 0, 0, 5], gw.addr).await.is_none(), "a ninth is over the total cap");
}

#[tokio::test]
async fn connection_caps_refuse_beyond_them_and_admit_again_after_a_close() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(
        &mock.base_url(),
        "[server]\nmax_connections = 4\nmax_connections_per_ip = 2\nheader_read_timeout = \"1m\"\n",
    )
    .await;
    let a1 = held([127, 0, 0, 1], gw.addr).await;
    let _a2 = held([127, 0, 0, 1], gw.addr).await;
    assert!(hold([127, 0, 0, 1], gw.addr).await.is_none(), "a third from one address is over the per-address cap");
    let _b1 = held([127, 0, 0, 2], gw.addr).await;
    let _b2 = held([127, 0, 0, 2], gw.addr).await;
    assert!(hold([127, 0, 0, 3], gw.addr).await.is_none(), "a fifth is over the total cap");
    // Closing one (the server closes it after this request) frees a place.
    let mut a1 = a1;
    a1.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").await.unwrap();
    assert!(read_until_closed(&mut a1, Duration::from_secs(5)).await.1);
    let _c1 = held([127, 0, 0, 3], gw.addr).await;
    assert!(hold([127, 0, 0, 1], gw.addr).await.is_none(), "the total cap holds again");
}

#[tokio::test]
async fn a_management_body_that_stalls_gets_408_by_the_deadline() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nbody_timeout = \"500ms\"\n").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/accounts HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: 100\r\n\r\n{{\"email\""
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (reply, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    eprintln!("stalled management body answered after {:?}", started.elapsed());
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(reply.contains("request_timeout"), "{reply}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_trickling_request_body_gets_408_by_the_total_deadline() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nbody_timeout = \"1s\"\n").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {}\r\nx-provider-key: {PROVIDER_KEY}\r\n\
         content-length: 100\r\n\r\n",
        gw.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 100 ms, well inside the idle limit between chunks: only a total deadline stops it.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..50 {
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            reply.extend_from_slice(&buf[..n]);
            if n == 0 || reply.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    eprintln!("trickling body answered after {:?}", started.elapsed());
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

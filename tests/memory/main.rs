//! Peak heap of one large request through the real server, measured by a counting global allocator
//! (this test binary holds only this test, so nothing else allocates meanwhile). The caller and the
//! upstream are raw sockets that neither copy nor parse the body, so the figure is tollgate's own.

#[path = "../common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;

/// A chat body of about `size` bytes: many short messages, with `"stream_options": {}`.
fn chat_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{},"messages":["#.to_vec();
    let message = br#"{"role":"user","content":"a short message, as chat histories hold"},"#;
    while body.len() + message.len() < size {
        body.extend_from_slice(message);
    }
    body.pop();
    body.extend_from_slice(b"]}");
    body
}

/// An upstream that reads and drops one request's body, then answers a short OpenAI stream; it
/// reports what it saw of the body: its length and whether `include_usage` was asked for.
async fn discarding_upstream() -> (String, tokio::task::JoinHandle<(usize, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut head = Vec::new();
        let body_start = loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the head");
            head.extend_from_slice(&buf[..n]);
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
        let length: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a content-length");
        // Wherever the member is, it is found, even across reads: each read is searched with the
        // previous read's tail.
        let needle = br#""include_usage":true"#;
        let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        let mut window = head[body_start..].to_vec();
        let mut asked = contains(&window);
        let mut left = length - window.len();
        while left > 0 {
            let n = s.read(&mut buf[..left.min(64 * 1024)]).await.unwrap();
            assert!(n > 0, "closed mid-body");
            let keep = window.len().min(needle.len());
            window.drain(..window.len() - keep);
            window.extend_from_slice(&buf[..n]);
            asked |= contains(&window);
            left -= n;
        }
        let events = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
                      data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n\
                      data: [DONE]\n\n";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{events}",
            events.len()
        );
        s.write_all(response.as_bytes()).await.unwrap();
        (length, asked)
    });
    (url, task)
}

#[tokio::test]
async fn a_30_mib_body_with_stream_options_is_not_amplified() {
    let (upstream, seen) = discarding_upstream().await;
    let gw = Gateway::start(&upstream, "").await;
    let body = chat_body(30 * MIB);
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-provider-key: {PROVIDER_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        gw.key,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    drop(body);

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut caller = TcpStream::connect(gw.addr).await.unwrap();
    caller.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    caller.read_to_end(&mut response).await.unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - before;

    let (length, asked) = seen.await.unwrap();
    let mib = |n: usize| n as f64 / MIB as f64;
    println!(
        "request {:.1} MiB, upstream got {:.1} MiB, peak heap {:.1} MiB",
        mib(request.len()),
        mib(length),
        mib(peak)
    );
    // The body read once and written once with the member spliced in, plus buffers.
    assert!(peak < 3 * 30 * MIB, "peak heap {:.1} MiB for one 30 MiB request", mib(peak));
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(asked, "the upstream was asked for usage");
    assert!(!response.contains("prompt_tokens"), "the injected usage chunk reached the caller: {response}");
}

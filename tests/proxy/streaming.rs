//! Streams arrive chunk by chunk while the upstream still holds them open; a caller that leaves makes the
//! upstream see its connection closed; a stream that fails after it started ends with one terminal error
//! event in the route's format.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn chunks_arrive_while_the_upstream_holds_the_stream_open() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    for shape in SHAPES {
        let (held, mut body) = gw.open_held(&mock, shape.stream_path(), shape.stream_body()).await;

        send_event(&held, "data: {\"n\":1}\n\n").await;
        assert_eq!(next_chunk(&mut body).await.unwrap(), "data: {\"n\":1}\n\n");
        // An event split across upstream chunks arrives whole, once it is complete.
        send_event(&held, "data: {\"n\"").await;
        send_event(&held, ":2}\r\n\r\n").await;
        assert_eq!(next_chunk(&mut body).await.unwrap(), "data: {\"n\":2}\r\n\r\n");
        drop(held);
        assert_eq!(next_chunk(&mut body).await, None, "{shape:?}: stream should end with the upstream");
    }
}

#[tokio::test]
async fn a_caller_that_disconnects_closes_the_upstream_connection() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    leave_streams_and_see_the_upstream_end(&gw, &mock, "plain HTTP/1.1").await;
}

/// Opens a held stream on `path`, has the upstream send `first` and then fail its connection, and
/// returns everything the caller received.
async fn cut_after_first_event(mock: &MockUpstream, gw: &Gateway, path: &str, body: &str, first: &str) -> String {
    let (held, mut body) = gw.open_held(mock, path, body).await;
    send_event(&held, first).await;
    let mut received = String::from_utf8(next_chunk(&mut body).await.unwrap().to_vec()).unwrap();
    held.send(Err(std::io::Error::other("upstream cut"))).await.unwrap();
    while let Some(chunk) = next_chunk(&mut body).await {
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    received
}

#[tokio::test]
async fn a_stream_cut_upstream_ends_with_one_terminal_error_event_per_format() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let cases = [
        (Shape::OpenAi, OPENAI_SSE[0], "data: {\"error\":"),
        (Shape::Anthropic, ANTHROPIC_SSE[0], "event: error\ndata: {\"error\":"),
        (Shape::Gemini, GEMINI_SSE[0], "data: {\"error\":"),
    ];
    for (shape, first, error_prefix) in cases {
        let text = cut_after_first_event(&mock, &gw, shape.stream_path(), shape.stream_body(), first).await;
        let rest = text.strip_prefix(first).unwrap_or_else(|| panic!("{shape:?}: {text}"));
        assert!(rest.starts_with(error_prefix), "{shape:?}: {rest}");
        assert!(rest.ends_with("\n\n") && rest.matches("data:").count() == 1, "{shape:?}: one event: {rest}");
        let data = rest.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert!(v.to_string().contains("Upstream provider connection failed"), "{v}");
    }
}

#[tokio::test]
async fn a_torn_event_is_never_shown_before_the_terminal_error() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (held, mut body) = gw.open_held(&mock, "/v1/chat/completions", Shape::OpenAi.stream_body()).await;
    send_event(&held, OPENAI_SSE[0]).await;
    assert_eq!(next_chunk(&mut body).await.unwrap(), OPENAI_SSE[0]);
    send_event(&held, "data: {\"id\":\"chatcmpl-1\",\"choi").await;
    held.send(Err(std::io::Error::other("upstream cut"))).await.unwrap();
    let terminal = next_chunk(&mut body).await.unwrap();
    assert!(terminal.starts_with(b"data: {\"error\":"), "{terminal:?}");
    assert_eq!(next_chunk(&mut body).await, None);
}

#[tokio::test]
async fn the_responses_api_gets_an_error_event_without_done() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let first = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n";
    let text =
        cut_after_first_event(&mock, &gw, "/v1/responses", r#"{"model":"m","stream":true,"input":"hi"}"#, first).await;
    let tail = text.strip_prefix(first).unwrap();
    assert!(tail.starts_with("event: error\ndata: {"), "{text}");
    let v: serde_json::Value = serde_json::from_str(tail.split_once("data: ").unwrap().1.trim()).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "upstream_failed");
}

#[tokio::test]
async fn a_silent_stream_ends_at_the_idle_timeout_with_a_terminal_event() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[upstream]\nidle_timeout = \"1s\"").await;
    let (held, mut body) = gw.open_held(&mock, "/v1/messages", Shape::Anthropic.stream_body()).await;
    send_event(&held, ANTHROPIC_SSE[0]).await;
    assert_eq!(next_chunk(&mut body).await.unwrap(), ANTHROPIC_SSE[0]);
    let terminal = next_chunk(&mut body).await.unwrap();
    let terminal = std::str::from_utf8(&terminal).unwrap();
    assert!(terminal.starts_with("event: error\n") && terminal.contains("timeout_error"), "{terminal}");
    assert_eq!(next_chunk(&mut body).await, None);
    tokio::time::timeout(Duration::from_secs(10), held.closed()).await.expect("upstream left open after the timeout");
}

#[tokio::test]
async fn a_silent_json_body_is_cut_at_the_idle_timeout() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[upstream]\nidle_timeout = \"300ms\"").await;
    let keys = gw.auth().with("x-mock", "stall");
    let headers = keys.headers();
    let result =
        try_request(http::Method::POST, &gw.url("/v1/chat/completions"), &headers, Shape::OpenAi.body().as_bytes())
            .await;
    assert!(result.is_err(), "a cut JSON body must fail, not look complete: {result:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_an_open_stream_finish_and_refuses_new_connections() {
    let mock = MockUpstream::start().await;
    let mut gw = Gateway::start(&mock.base_url(), "").await;
    let (held, mut body) = gw.open_held(&mock, "/v1/chat/completions", Shape::OpenAi.stream_body()).await;
    send_event(&held, OPENAI_SSE[0]).await;
    assert!(next_chunk(&mut body).await.is_some());

    let drained = gw.begin_shutdown();
    // Once the listener is closed, new connections are refused.
    let addr = gw.addr;
    tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("listener still accepting after shutdown began");

    for event in &OPENAI_SSE[1..] {
        send_event(&held, event).await;
        assert_eq!(next_chunk(&mut body).await.unwrap(), event.as_bytes());
    }
    drop(held);
    assert_eq!(next_chunk(&mut body).await, None);
    tokio::time::timeout(Duration::from_secs(10), drained).await.expect("server did not finish draining").unwrap();
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let headers = keys.headers();
    for shape in SHAPES {
        for (path, body) in [(shape.path(), shape.body()), (shape.stream_path(), shape.stream_body())] {
            let reply = post(&gw.url(path), &headers, body).await;
            assert_eq!(reply.status, 200, "{shape:?} {path}: {}", reply.text());
        }
    }
    assert_eq!(mock.connections(), 1, "each response should give its connection back for the next request");
}

/// An upstream that answers one request per connection and keeps the connection open, without a
/// `Connection: close` header, until the test lets it close (`close`); each close is then reported.
struct ClosingUpstream {
    url: String,
    close: Arc<tokio::sync::Semaphore>,
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

async fn closing_upstream() -> ClosingUpstream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let close = Arc::new(tokio::sync::Semaphore::new(0));
    let may_close = Arc::clone(&close);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (closed_tx, may_close) = (closed_tx.clone(), Arc::clone(&may_close));
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as many body bytes as it announces.
                let total = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "connection closed before a whole request");
                    request.extend_from_slice(&buf[..n]);
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break end + 4 + length;
                    }
                };
                while request.len() < total {
                    let n = socket.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                let body = OPENAI_JSON.as_bytes();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await.unwrap();
                socket.write_all(body).await.unwrap();
                may_close.acquire().await.unwrap().forget();
                drop(socket);
                let _ = closed_tx.send(());
            });
        }
    });
    ClosingUpstream { url: format!("http://{addr}"), close, closed }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used_again() {
    let mut upstream = closing_upstream().await;
    let gw = Gateway::start(&upstream.url, "").await;
    let keys = gw.auth();
    let headers = keys.headers();
    for round in 0..3 {
        let reply = post(&gw.url("/v1/chat/completions"), &headers, Shape::OpenAi.body()).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
        assert_eq!(reply.text(), OPENAI_JSON);
        // Now the upstream closes the idle connection tollgate kept for the next request.
        upstream.close.add_permits(1);
        upstream.closed.recv().await.unwrap();
    }
}

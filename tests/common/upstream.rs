//! The mock upstream: a real hyper server on an ephemeral port that records everything it receives and
//! answers like each provider, steered by the request's `x-mock` header (which tollgate forwards like any
//! other), and held streams the test feeds by hand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::shapes::*;

/// What the mock upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
    /// Path and query, as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The protocol the request arrived over.
    pub version: http::Version,
}

type MockBody = BoxBody<Bytes, std::io::Error>;
/// The sending side of a held stream: push SSE bytes, or watch for the proxy dropping the connection.
pub type HeldStream = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

struct MockState {
    recorded: Mutex<Vec<Recorded>>,
    connections: std::sync::atomic::AtomicUsize,
    held_tx: mpsc::UnboundedSender<HeldStream>,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    state: Arc<MockState>,
    held_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<HeldStream>>,
}

impl MockUpstream {
    /// Starts the mock on 127.0.0.1, port 0. Steering, by the request's `x-mock` header:
    /// (none) answer like the provider of the path, JSON or SSE by `"stream": true` / the method;
    /// `hold` answer 200 SSE and hand the stream to the test ([`MockUpstream::next_held`]);
    /// `never` never answer; `stall` send the head, then nothing;
    /// `redirect <url>` answer 307 to `url`; `status <code>` answer that status with a JSON error.
    pub async fn start() -> MockUpstream {
        MockUpstream::start_on(None).await
    }

    /// Like [`MockUpstream::start`], over TLS from `tls`, serving HTTP/1.1 and HTTP/2 (whichever ALPN
    /// picked, or the client's preface shows).
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> MockUpstream {
        MockUpstream::start_on(Some(tls)).await
    }

    async fn start_on(tls: Option<tokio_rustls::TlsAcceptor>) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        let state = Arc::new(MockState { recorded: Mutex::new(Vec::new()), connections: Default::default(), held_tx });
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let state = Arc::clone(&accept_state);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| mock_answer(Arc::clone(&state), req));
                    match tls {
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(tls) => {
                            // A refused handshake (the proxy distrusting the certificate) ends here.
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        MockUpstream { addr, state, held_rx: tokio::sync::Mutex::new(held_rx) }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    pub fn only_request(&self) -> Recorded {
        let all = self.recorded();
        assert_eq!(all.len(), 1, "upstream saw {} requests: {all:?}", all.len());
        all.into_iter().next().unwrap()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next `hold` stream, once its request arrived.
    pub async fn next_held(&self) -> HeldStream {
        tokio::time::timeout(Duration::from_secs(10), self.held_rx.lock().await.recv())
            .await
            .expect("no held stream within 10s")
            .unwrap()
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-request-id", "upstream-req-1")
        .header("set-cookie", "__cf_bm=secret; domain=.api.openai.com")
        .body(Full::new(body.into()).map_err(|e: Infallible| match e {}).boxed())
        .unwrap()
}

fn sse(events: Vec<Bytes>) -> Response<MockBody> {
    let stream = futures_stream(events.into_iter().map(|e| Ok(Frame::data(e))).collect());
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// A body stream over a fixed list of frames, sent one per poll so each is its own chunk.
fn futures_stream(
    frames: Vec<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + Sync + 'static {
    let (tx, rx) = mpsc::channel(frames.len().max(1));
    for f in frames {
        tx.try_send(f).unwrap();
    }
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> + Send + Sync + 'static {
    struct Rx<T>(Mutex<mpsc::Receiver<T>>);
    impl<T> futures_core::Stream for Rx<T> {
        type Item = T;
        fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
            self.0.lock().unwrap().poll_recv(cx)
        }
    }
    Rx(Mutex::new(rx))
}

async fn mock_answer(state: Arc<MockState>, req: Request<Incoming>) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target = parts.uri.path_and_query().map(|pq| pq.to_string()).unwrap_or_default();
    state.recorded.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        version: parts.version,
    });
    let mode = parts.headers.get("x-mock").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let path = parts.uri.path();
    let streaming = path.ends_with(":streamGenerateContent")
        || serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["stream"].as_bool()) == Some(true);
    let events = |list: &[&str]| list.iter().map(|e| Bytes::copy_from_slice(e.as_bytes())).collect::<Vec<_>>();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let include_usage = json["stream_options"]["include_usage"] == true;
    let openai = |json_body: &'static str, sse: &[&str], usage: (u64, u64)| {
        let events = if include_usage {
            with_usage_chunk(sse, usage.0, usage.1).into_iter().map(Bytes::from).collect()
        } else {
            events(sse)
        };
        (json_body.to_owned(), events)
    };
    let canned = if path.contains("/messages") {
        (ANTHROPIC_JSON.to_owned(), events(ANTHROPIC_SSE))
    } else if path.contains(":") {
        (GEMINI_JSON.to_owned(), events(GEMINI_SSE))
    } else if path.ends_with("/v1/completions") {
        openai(COMPLETIONS_JSON, COMPLETIONS_SSE, (4, 6))
    } else if path.ends_with("/embeddings") {
        (EMBEDDINGS_JSON.to_owned(), Vec::new())
    } else if path.ends_with("/responses") {
        (RESPONSES_JSON.to_owned(), events(RESPONSES_SSE))
    } else {
        openai(OPENAI_JSON, OPENAI_SSE, (5, 3))
    };
    let response = match mode.split_once(' ').unwrap_or((mode.as_str(), "")) {
        ("hold", _) => {
            let (tx, rx) = mpsc::channel(16);
            state.held_tx.send(tx).unwrap();
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))))
                .unwrap()
        }
        ("never", _) => std::future::pending().await,
        ("stall", _) => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            // Keep the sender alive with the body so the stream stays open and silent.
            std::mem::forget(tx);
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))))
                .unwrap()
        }
        ("redirect", to) => Response::builder()
            .status(307)
            .header("location", to)
            .body(Full::new(Bytes::new()).map_err(|e: Infallible| match e {}).boxed())
            .unwrap(),
        ("status", code) => {
            let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
            full(
                status,
                "application/json",
                r#"{"error":{"message":"from upstream","type":"upstream_type","param":null,"code":"upstream_code"}}"#,
            )
        }
        ("usage", figures) => {
            // An OpenAI chat completion reporting the given prompt and completion tokens.
            let (p, c) = figures.split_once(' ').unwrap();
            let mut v: serde_json::Value = serde_json::from_str(OPENAI_JSON).unwrap();
            v["usage"] = serde_json::json!({"prompt_tokens": p.parse::<u64>().unwrap(), "completion_tokens": c.parse::<u64>().unwrap()});
            full(StatusCode::OK, "application/json", v.to_string())
        }
        _ if streaming => sse(canned.1),
        _ => full(StatusCode::OK, "application/json", canned.0),
    };
    Ok(response)
}

/// Has a held stream send `text` as one chunk.
pub async fn send_event(held: &HeldStream, text: &str) {
    held.send(Ok(Frame::data(Bytes::copy_from_slice(text.as_bytes())))).await.unwrap();
}

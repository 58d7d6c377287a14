//! Shared test rig: a real mock upstream (a hyper server on an ephemeral port that records everything it
//! receives and answers like each provider), the real tollgate server embedded on port 0, and small
//! clients. A request steers the mock with the `x-mock` header, which tollgate forwards like any other.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tollgate::auth::keys::KeyHasher;
use tollgate::config::Config;
pub use tollgate::store::{NewKey, SqliteStore};

pub const PROVIDER_KEY: &str = "sk-test-provider-key-0123456789";
/// The operator token every test gateway is given (as `TOLLGATE_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "operator-token-for-tests-0123456789";
/// The metrics token every test gateway is given (as `TOLLGATE_METRICS_TOKEN`), for configs that put
/// `/metrics` on the main listener.
pub const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";
/// The session secret every test gateway is given (as `TOLLGATE_SESSION_SECRET`, required beside the
/// operator token).
pub const SESSION_SECRET: &str = "session-secret-for-tests-0123456789";

pub const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from mock"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
pub const OPENAI_SSE: &[&str] = &[
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" from\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" mock\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
];
pub const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hello from mock"}],"model":"claude-sonnet-4-5","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":3}}"#;
pub const ANTHROPIC_SSE: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" from mock\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];
pub const GEMINI_JSON: &str = r#"{"candidates":[{"content":{"parts":[{"text":"Hello from mock"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#;
pub const GEMINI_SSE: &[&str] = &[
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"totalTokenCount\":5},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" from mock\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":3,\"totalTokenCount\":8},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
];

pub const COMPLETIONS_JSON: &str = r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"gpt-3.5-turbo-instruct","choices":[{"text":"Hello from mock","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}"#;
pub const COMPLETIONS_SSE: &[&str] = &[
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\"Hello\",\"index\":0,\"finish_reason\":null}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n",
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\" from mock\",\"index\":0,\"finish_reason\":\"stop\"}],\"model\":\"gpt-3.5-turbo-instruct\"}\n\n",
    "data: [DONE]\n\n",
];
pub const EMBEDDINGS_JSON: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,0.3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":7,"total_tokens":7}}"#;
pub const RESPONSES_JSON: &str = r#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hello from mock"}]}],"usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48}}"#;
pub const RESPONSES_SSE: &[&str] = &[
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"Hello from mock\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"total_tokens\":48}}}\n\n",
];

/// OpenAI's stream once `stream_options.include_usage` is set: `"usage":null` on every chunk, then a
/// usage-only chunk before `[DONE]`.
pub fn with_usage_chunk(events: &[&str], prompt: u64, completion: u64) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .filter(|e| !e.starts_with("data: [DONE]"))
        .map(|e| {
            // Drop the object's closing brace, add the member, close it again.
            let open = e.trim_end().strip_suffix('}').unwrap();
            format!("{open},\"usage\":null}}\n\n")
        })
        .collect();
    out.push(format!(
        "data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n\n",
        prompt + completion
    ));
    out.push("data: [DONE]\n\n".to_owned());
    out
}

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

/// Writes a new key with prefix `tg` straight into `store`; its secret and info.
pub fn seed_key(store: &SqliteStore, new: &NewKey) -> (tollgate::auth::keys::SecretKey, tollgate::store::KeyInfo) {
    let (secret, identity) = tollgate::admin::service::mint("tg", &KeyHasher::new(None), new.kind).unwrap();
    let key = tollgate::store::HashedKey { identity, key: new.clone() };
    (secret, store.create_keys(&[key]).unwrap().remove(0))
}

/// The real server, embedded on an ephemeral port, with a fresh store holding one key.
pub struct Gateway {
    pub addr: SocketAddr,
    pub key: String,
    /// Secrets of the keys given to [`Gateway::start_with`], in order.
    pub keys: Vec<String>,
    pub store: SqliteStore,
    pub config: Config,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Providers `openai`, `anthropic`, `gemini`, `gemhdr` (Gemini, header auth) and `groq` (OpenAI-compatible
    /// under base path /openai) all point at `upstream`. `extra` is TOML merged into the sections.
    pub async fn start(upstream: &str, extra: &str) -> Gateway {
        Gateway::start_with(upstream, extra, &[]).await
    }

    /// Like [`Gateway::start`], with `keys` also in the store before the server starts (their secrets,
    /// in order, in `keys`).
    pub async fn start_with(upstream: &str, extra: &str, keys: &[NewKey]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tollgate.db");
        let text = config_text(upstream, &db, extra);
        let env = |name: &str| match name {
            "TOLLGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
            "TOLLGATE_METRICS_TOKEN" => Some(METRICS_TOKEN.to_owned()),
            "TOLLGATE_SESSION_SECRET" => Some(SESSION_SECRET.to_owned()),
            _ => None,
        };
        let config = Config::from_toml(&text, env).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let store = SqliteStore::open(&db).unwrap();
        let (secret, _) = seed_key(&store, &NewKey::live("test", 0));
        let keys = keys.iter().map(|k| seed_key(&store, k).0.expose().to_owned()).collect();
        Gateway::serve(config, store, dir, secret.expose().to_owned(), keys).await
    }

    async fn serve(
        config: Config,
        store: SqliteStore,
        dir: tempfile::TempDir,
        key: String,
        keys: Vec<String>,
    ) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let run_config = config.clone();
        let task = tokio::spawn(async move {
            tollgate::run(run_config, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let gateway = Gateway { addr, key, keys, store, config, dir, shutdown: Some(tx), task: Some(task) };
        gateway.wait_ready().await;
        gateway
    }

    /// Shuts down gracefully (which flushes usage) and starts again on the same store.
    pub async fn restart(mut self) -> Gateway {
        self.begin_shutdown().await.unwrap();
        let (config, store, key, keys) = (self.config.clone(), self.store.clone(), self.key.clone(), self.keys.clone());
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Gateway::serve(config, store, dir, key, keys).await
    }

    /// Shuts down gracefully and returns the usage recorded for the key with `secret`:
    /// (requests, input tokens, output tokens).
    pub async fn stop_and_read_usage(mut self, secret: &str) -> (u64, u64, u64) {
        self.begin_shutdown().await.unwrap();
        let id = tollgate::auth::keys::KeyId::parse(&secret[8..20]).unwrap();
        let rows = self.store.usage_report(Some(id), 0, i64::MAX).unwrap();
        rows.iter().fold((0, 0, 0), |t, r| (t.0 + r.requests, t.1 + r.input_tokens, t.2 + r.output_tokens))
    }

    /// The listener is bound before `run` starts, so this request waits in the accept backlog until
    /// the server serves, and must then find it ready.
    async fn wait_ready(&self) {
        if self.config.server.tls.is_some() {
            return;
        }
        let r = request(http::Method::GET, &self.url("/readyz"), &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Posts `body` to `path` with this gateway's service key and the test provider key, asking the mock
    /// to hold the stream; returns the mock's sending side and the caller's streaming body.
    pub async fn open_held(&self, mock: &MockUpstream, path: &str, body: &str) -> (HeldStream, Incoming) {
        let auth = format!("Bearer {}", self.key);
        let headers = [("authorization", auth.as_str()), ("x-provider-key", PROVIDER_KEY), ("x-mock", "hold")];
        let response = open(http::Method::POST, &self.url(path), &headers, body.as_bytes()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert!(!response.headers().contains_key("content-length"));
        (mock.next_held().await, response.into_body())
    }

    /// A new key in this gateway's store (the running server sees it within `store.refresh_interval`).
    pub fn create_key(&self, new: &NewKey) -> (String, tollgate::store::KeyInfo) {
        let (secret, info) = seed_key(&self.store, new);
        (secret.expose().to_owned(), info)
    }

    /// Starts a graceful shutdown; the returned handle completes when the server has drained.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn config_text(upstream: &str, db: &std::path::Path, extra: &str) -> String {
    let mut sections: Vec<(String, String)> = vec![
        // Tests run many gateways at once, each with a metrics listener of its own, and some open many
        // connections from one address.
        (
            "server".into(),
            "listen = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\nmax_connections = 4096\nmax_connections_per_ip = 4096\n".into(),
        ),
        ("metrics".into(), "listen = \"127.0.0.1:0\"\n".into()),
        ("store".into(), format!("path = {:?}\nrefresh_interval = \"100ms\"\n", db.display().to_string())),
        ("upstream".into(), "response_timeout = \"10s\"\nidle_timeout = \"10s\"\ntotal_timeout = \"30s\"\n".into()),
        ("log".into(), String::new()),
        ("limits".into(), "requests_per_minute = 1000\nrequests_per_day = 10000\nconcurrent_requests = 1000\n".into()),
        ("providers.openai".into(), format!("kind = \"openai\"\nbase_url = \"{upstream}\"\n")),
        ("providers.anthropic".into(), format!("kind = \"anthropic\"\nbase_url = \"{upstream}\"\n")),
        ("providers.gemini".into(), format!("kind = \"gemini\"\nbase_url = \"{upstream}\"\n")),
        ("providers.gemhdr".into(), format!("kind = \"gemini\"\nbase_url = \"{upstream}\"\nauth = \"header\"\n")),
        ("providers.groq".into(), format!("kind = \"openai\"\nbase_url = \"{upstream}/openai\"\n")),
    ];
    // `extra` is "[section]\nkey = value" blocks; later keys replace earlier ones in the same section.
    let mut current = String::new();
    for line in extra.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            if !sections.iter().any(|(n, _)| *n == current) {
                sections.push((current.clone(), String::new()));
            }
            continue;
        }
        let key = line.split('=').next().unwrap().trim();
        let body = &mut sections.iter_mut().find(|(n, _)| *n == current).unwrap().1;
        let kept: String =
            body.lines().filter(|l| l.split('=').next().unwrap().trim() != key).map(|l| format!("{l}\n")).collect();
        *body = format!("{kept}{line}\n");
    }
    sections.iter().map(|(n, b)| format!("[{n}]\n{b}\n")).collect()
}

/// A finished exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Opens a fresh HTTP/1.1 connection and sends one request; the response body is left to stream.
/// Dropping the response closes the connection.
pub async fn open(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response<Incoming>, hyper::Error> {
    let uri: http::Uri = url.parse().unwrap();
    let stream = TcpStream::connect(uri.authority().unwrap().as_str()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(uri.path_and_query().unwrap().as_str());
    req = req.header("host", uri.authority().unwrap().as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender.send_request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap()).await
}

pub async fn try_request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, hyper::Error> {
    let response = open(method, url, headers, body).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply { status: parts.status, headers: parts.headers, body })
}

pub async fn request(method: http::Method, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    try_request(method, url, headers, body).await.unwrap()
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(http::Method::POST, url, headers, body.as_bytes()).await
}

/// Sends raw bytes on a new connection and reads until the server closes it (send `Connection: close`).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Has a held stream send `text` as one chunk.
pub async fn send_event(held: &HeldStream, text: &str) {
    held.send(Ok(Frame::data(Bytes::copy_from_slice(text.as_bytes())))).await.unwrap();
}

/// The next data frame of a streaming body, or `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no chunk within 10s")?
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// The provider shapes, with a path of each and how to check an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenAi,
    Anthropic,
    Gemini,
}

pub const SHAPES: [Shape; 3] = [Shape::OpenAi, Shape::Anthropic, Shape::Gemini];

impl Shape {
    pub fn path(self) -> &'static str {
        match self {
            Shape::OpenAi => "/v1/chat/completions",
            Shape::Anthropic => "/v1/messages",
            Shape::Gemini => "/v1beta/models/gemini-2.5-flash:generateContent",
        }
    }

    pub fn stream_path(self) -> &'static str {
        match self {
            Shape::Gemini => "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            _ => self.path(),
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Shape::OpenAi => r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            Shape::Anthropic => {
                r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#
            }
            Shape::Gemini => r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
        }
    }

    pub fn stream_body(self) -> &'static str {
        match self {
            Shape::OpenAi => r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            Shape::Anthropic => {
                r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            }
            Shape::Gemini => self.body(),
        }
    }

    /// Asserts `reply` is a tollgate error of `status` in this shape whose message contains `message`.
    pub fn assert_error(self, reply: &Reply, status: u16, message: &str) {
        assert_eq!(reply.status.as_u16(), status, "{self:?}: {}", reply.text());
        assert!(reply.headers.contains_key("x-request-id"), "{self:?}: no x-request-id");
        let v = reply.json();
        let got = match self {
            Shape::OpenAi => {
                let e = &v["error"];
                assert!(e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some(), "{v}");
                e["message"].as_str()
            }
            Shape::Anthropic => {
                assert_eq!(v["type"], "error", "{v}");
                assert!(v["error"]["type"].is_string(), "{v}");
                v["error"]["message"].as_str()
            }
            Shape::Gemini => {
                assert_eq!(v["error"]["code"], status, "{v}");
                assert!(v["error"]["status"].is_string(), "{v}");
                v["error"]["message"].as_str()
            }
        };
        let got = got.unwrap_or_else(|| panic!("{self:?}: no message in {v}"));
        assert!(got.contains(message), "{self:?}: message {got:?} lacks {message:?}");
    }
}

/// Leaves a held stream after 0, 1 and 3 chunks, and each time waits (at most 10 s) until the upstream's
/// side of it ends: the caller's departure must reach the provider. `what` names the case in a failure.
pub async fn leave_streams_and_see_the_upstream_end(gw: &Gateway, mock: &MockUpstream, what: &str) {
    for k in [0, 1, 3] {
        let (held, mut body) = gw.open_held(mock, "/v1/chat/completions", Shape::OpenAi.stream_body()).await;
        for i in 0..k {
            send_event(&held, &format!("data: {{\"n\":{i}}}\n\n")).await;
            assert!(next_chunk(&mut body).await.is_some());
        }
        drop(body);
        tokio::time::timeout(Duration::from_secs(10), held.closed())
            .await
            .unwrap_or_else(|_| panic!("{what}: after {k} chunks the upstream stream stayed open"));
    }
}

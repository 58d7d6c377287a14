//! The real tollgate server embedded on port 0 with a fresh store, and the config every test starts from.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tollgate::auth::keys::KeyHasher;
use tollgate::config::Config;
use tollgate::store::{NewKey, SqliteStore};

use super::clients::{Keys, Reply, key_id, next_chunk, open, post, request};
use super::shapes::Shape;
use super::upstream::{HeldStream, MockUpstream, send_event};
use super::{ADMIN_TOKEN, METRICS_TOKEN, SESSION_SECRET, SIGNING_KEY, TRIAL_SECRET};

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
        Gateway::start_with_env(upstream, extra, keys, &[]).await
    }

    /// Like [`Gateway::start_with`], with `vars` also in the environment the config is read with.
    pub async fn start_with_env(upstream: &str, extra: &str, keys: &[NewKey], vars: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tollgate.db");
        let text = config_text(upstream, &db, extra);
        let env = |name: &str| match name {
            "TOLLGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
            "TOLLGATE_METRICS_TOKEN" => Some(METRICS_TOKEN.to_owned()),
            "TOLLGATE_SESSION_SECRET" => Some(SESSION_SECRET.to_owned()),
            "TOLLGATE_SIGNING_KEY" => Some(SIGNING_KEY.to_owned()),
            "TOLLGATE_TRIAL_SECRET" => Some(TRIAL_SECRET.to_owned()),
            _ => vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()),
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

    /// Another instance of the same deployment: a second server with this one's configuration, on this
    /// one's store file (it lives as long as this gateway's directory).
    pub async fn another_instance(&self) -> Gateway {
        let (config, store, key, keys) = (self.config.clone(), self.store.clone(), self.key.clone(), self.keys.clone());
        Gateway::serve(config, store, tempfile::tempdir().unwrap(), key, keys).await
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
        let id = key_id(secret);
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

    /// The headers of a call with this gateway's key and the test provider key.
    pub fn auth(&self) -> Keys {
        Keys::new(&self.key)
    }

    /// Posts `body` to `path` with `keys`.
    pub async fn call(&self, path: &str, keys: &Keys, body: &str) -> Reply {
        post(&self.url(path), &keys.headers(), body).await
    }

    /// Posts `body` to `path` with this gateway's service key and the test provider key, asking the mock
    /// to hold the stream; returns the mock's sending side and the caller's streaming body.
    pub async fn open_held(&self, mock: &MockUpstream, path: &str, body: &str) -> (HeldStream, Incoming) {
        let keys = self.auth().with("x-mock", "hold");
        let response = open(http::Method::POST, &self.url(path), &keys.headers(), body.as_bytes()).await.unwrap();
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

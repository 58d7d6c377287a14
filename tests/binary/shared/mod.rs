//! The shared mode as deployed: three real `tollgate` processes on one PostgreSQL schema and one Redis
//! prefix, the mock upstream in the test (README, Running several instances). Quotas and request rates
//! counted once across them (`quota.rs`), key changes reaching every process (`propagation.rs`), key caps
//! under creation on all three (`caps.rs`), and a Redis killed and started again under traffic
//! (`outage.rs`). Runs when `TOLLGATE_TEST_POSTGRES` and `TOLLGATE_TEST_REDIS` are both set; otherwise each
//! test says what it skipped and passes. Each test has a schema and a prefix of its own, removed after it.

mod caps;
mod outage;
mod propagation;
mod quota;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::common::*;
use crate::process::*;

/// The PostgreSQL and Redis the tests share (each in a schema and prefix of its own).
pub struct Services {
    pub postgres: String,
    pub redis: String,
}

/// Both services from the environment, or `None` after saying which test is skipped and why.
pub fn services(test: &str) -> Option<Services> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("TOLLGATE_TEST_POSTGRES"), var("TOLLGATE_TEST_REDIS")) {
        (Some(postgres), Some(redis)) => Some(Services { postgres, redis }),
        _ => {
            eprintln!("skipped {test}: it needs both TOLLGATE_TEST_POSTGRES and TOLLGATE_TEST_REDIS");
            None
        }
    }
}

/// Twelve random hex digits, so runs and tests never share a schema or a prefix.
fn tag() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Three processes of one deployment, started one after the other on one configuration file.
pub struct Cluster {
    pub servers: Vec<Server>,
    /// Kept alive as long as the processes that call it.
    _mock: MockUpstream,
    setup: Setup,
    postgres: String,
    schema: String,
    redis: String,
    prefix: String,
}

impl Cluster {
    /// Three processes on `services`' PostgreSQL (in schema `tg_shared_<name>_<tag>`, its changes polled
    /// only every 30 s so `NOTIFY` is what carries them) and on `redis` (prefix `tg-shared-<tag>`), with
    /// `extra` added to `[counters]` (TOML; a later section header ends it).
    ///
    /// Redis calls get 1 s rather than the default 50 ms: here three debug builds, the test and Redis share
    /// two cores with other builds, and a burst of 1000 requests (3000 scripts) queues calls past 50 ms,
    /// and at times past 250 ms, which the breaker rightly takes for a Redis that is away (503s). The
    /// outage test sets 50 ms again.
    pub async fn start(services: &Services, redis: &str, name: &str, extra: &str) -> Cluster {
        let tag = tag();
        let schema = format!("tg_shared_{name}_{tag}");
        let prefix = format!("tg-shared-{tag}");
        let mock = MockUpstream::start().await;
        let config = format!(
            "[store]\nbackend = \"postgres\"\nurl = {:?}\nschema = \"{schema}\"\nrefresh_interval = \"30s\"\n\
             flush_interval = \"100ms\"\npool_size = 4\n\
             [counters]\nbackend = \"redis\"\nurl = {redis:?}\nprefix = \"{prefix}\"\ninstances = 3\ntimeout = \"1s\"\n{extra}",
            services.postgres
        );
        let setup = Setup::new(&mock.base_url(), &config);
        let env = [("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN), ("TOLLGATE_SESSION_SECRET", SESSION_SECRET)];
        let mut cluster = Cluster {
            servers: Vec::new(),
            _mock: mock,
            setup,
            postgres: services.postgres.clone(),
            schema,
            redis: redis.to_owned(),
            prefix,
        };
        for _ in 0..3 {
            let server = Server::spawn(&cluster.setup.config, &env);
            cluster.servers.push(server);
            cluster.until_ready(cluster.servers.len() - 1).await;
        }
        cluster
    }

    /// Polls `/readyz` of process `i` until it answers 200 (within 10 s).
    async fn until_ready(&self, i: usize) {
        let started = Instant::now();
        loop {
            if let Ok(r) = try_request(http::Method::GET, &self.url(i, "/readyz"), &[], b"").await {
                if r.status == 200 {
                    return;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(10), "process {i} never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        self.servers[i].url(path)
    }

    /// A management API call on process `i`: the status and the JSON body (`Null` when empty).
    pub async fn api(
        &self,
        i: usize,
        method: http::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let reply = request(method, &self.url(i, path), &headers, body.as_bytes()).await;
        let value = if reply.body.is_empty() { Value::Null } else { reply.json() };
        (reply.status.as_u16(), value)
    }

    /// A new account (made by the operator on process 0) and an access token for it, good on all three.
    pub async fn account(&self, email: &str, key_cap: u32) -> String {
        let body = json!({"email": email, "password": "correct horse battery", "key_cap": key_cap});
        let (status, account) = self.api(0, http::Method::POST, "/v1/accounts", ADMIN_TOKEN, Some(body)).await;
        assert_eq!(status, 201, "{account}");
        let login = json!({"email": email, "password": "correct horse battery"});
        let reply =
            post(&self.url(0, "/v1/auth/login"), &[("content-type", "application/json")], &login.to_string()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// A key made on process `i` with `body`: its secret and id.
    pub async fn key(&self, i: usize, token: &str, body: Value) -> (String, String) {
        let (status, created) = self.api(i, http::Method::POST, "/v1/auth/keys", token, Some(body)).await;
        assert_eq!(status, 201, "{created}");
        (created["raw_key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned())
    }

    /// Waits until every process knows `key`, asking in a way that counts against none of its limits: a
    /// call without a provider key is refused (400) after the key is recognised and before admission,
    /// while a key a process does not know yet is 401.
    pub async fn until_known_everywhere(&self, key: &str) {
        let started = Instant::now();
        for i in 0..self.servers.len() {
            loop {
                let keys = Keys::new(key).without("x-provider-key");
                let reply = post(&self.url(i, Shape::OpenAi.path()), &keys.headers(), Shape::OpenAi.body()).await;
                if reply.status == 400 {
                    break;
                }
                assert_eq!(reply.status, 401, "{}", reply.text());
                assert!(started.elapsed() < Duration::from_secs(5), "process {i} never learnt the key");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// `per_process` HTTP/2 connections to each process, for bursts of concurrent requests.
    pub async fn fleet(&self, per_process: usize) -> Fleet {
        let mut lanes = Vec::new();
        for server in &self.servers {
            let mut senders = Vec::new();
            for _ in 0..per_process {
                let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                senders.push(sender);
            }
            lanes.push((server.url(""), senders));
        }
        Fleet { lanes }
    }
}

impl Drop for Cluster {
    /// Ends the processes, then drops the schema and the prefix's Redis keys (on a thread of its own, so
    /// this works inside and outside a runtime, and after a failed assertion too).
    fn drop(&mut self) {
        self.servers.clear();
        let (postgres, schema, redis, prefix) =
            (self.postgres.clone(), self.schema.clone(), self.redis.clone(), self.prefix.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let bounded = Duration::from_secs(5);
                let _ = tokio::time::timeout(bounded, drop_schema(&postgres, &schema)).await;
                let _ = tokio::time::timeout(bounded, forget_prefix(&redis, &prefix)).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn drop_schema(url: &str, schema: &str) {
    let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else { return };
    let driver = tokio::spawn(connection);
    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    drop(client);
    let _ = driver.await;
}

async fn forget_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else { return };
    let Ok(mut con) = client.get_multiplexed_async_connection().await else { return };
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut con).await.unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut con).await;
    }
}

/// HTTP/2 connections to each process of a cluster.
pub struct Fleet {
    lanes: Vec<(String, Vec<SendRequest<Full<Bytes>>>)>,
}

/// One answer of a burst: which process it went to, its status and body.
pub struct Answer {
    pub process: usize,
    pub status: u16,
    pub body: String,
}

impl Fleet {
    /// Sends `n` requests at once, the i-th to process i mod 3 (round-robin), each built by `build` on the
    /// process's base URL; every answer, in order.
    pub async fn burst(&self, n: usize, build: impl Fn(&str) -> http::Request<Full<Bytes>>) -> Vec<Answer> {
        let processes = self.lanes.len();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let (base, senders) = &self.lanes[i % processes];
            let mut sender = senders[(i / processes) % senders.len()].clone();
            let req = build(base);
            tasks.push(tokio::spawn(async move {
                let response = sender.send_request(req).await.unwrap();
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }));
        }
        let mut answers = Vec::with_capacity(n);
        for (i, task) in tasks.into_iter().enumerate() {
            let (status, body) = task.await.unwrap();
            answers.push(Answer { process: i % processes, status, body });
        }
        answers
    }
}

/// A POST of `body` to `path` on `base` with `key`, the test provider key and `extra` headers.
pub fn provider_post(
    base: &str,
    path: &str,
    key: &str,
    extra: &[(&str, &str)],
    body: &'static str,
) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::post(format!("{base}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-provider-key", PROVIDER_KEY)
        .header("content-type", "application/json");
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
}

/// Distribution of `samples`: min, p50, p90, p99, max (nearest rank).
pub fn percentiles(samples: &mut [Duration]) -> [Duration; 5] {
    samples.sort();
    let at = |p: usize| samples[((samples.len() * p).div_ceil(100)).saturating_sub(1).min(samples.len() - 1)];
    [samples[0], at(50), at(90), at(99), samples[samples.len() - 1]]
}

//! The quick version of `benches/soak.sh`: the real binary under mixed load in rounds (JSON and streamed
//! completions on several keys, and a management client creating, using, renaming, listing and revoking
//! keys), each client on its own keep-alive connection. After a warm-up round the server's open
//! descriptors and resident memory are the baseline; every later round must end at that baseline: a
//! descriptor or a connection leaked per request, or memory kept per request or per key, shows here.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

use crate::common::*;
use crate::process::*;

const ROUNDS: usize = 6;
/// Completions per data-plane client per round.
const PER_ROUND: usize = 60;
/// Keys the management client churns through per round.
const CHURN: usize = 4;
/// Growth of RSS allowed over the baseline (the allocator keeps freed pages in its arenas for a while).
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// One keep-alive connection to the server.
struct Client {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Client {
    async fn connect(server: &Server) -> Client {
        let authority = server.addr.to_string();
        let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Client { sender, authority }
    }

    async fn send(&mut self, method: http::Method, path: &str, auth: &str, body: &str) -> (u16, Bytes) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("authorization", auth)
            .header("x-provider-key", PROVIDER_KEY)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        self.sender.ready().await.unwrap();
        let reply = self.sender.send_request(req).await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.into_body().collect().await.unwrap().to_bytes())
    }
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// `PER_ROUND` completions on `key`, streamed or not; each must be a 200 whose body is complete.
async fn completions(client: &mut Client, key: &str, stream: bool) {
    let auth = format!("Bearer {key}");
    let body = if stream { Shape::OpenAi.stream_body() } else { Shape::OpenAi.body() };
    for _ in 0..PER_ROUND {
        let (status, body) = client.send(http::Method::POST, "/v1/chat/completions", &auth, body).await;
        assert_eq!(status, 200, "{body:?}");
        let text = String::from_utf8_lossy(&body);
        assert!(if stream { text.ends_with("data: [DONE]\n\n") } else { text.contains("\"usage\"") }, "{text}");
    }
}

/// `CHURN` keys created, used once, renamed, listed, read in the usage and revoked.
async fn churn(client: &mut Client, token: &str, round: usize) {
    for n in 0..CHURN {
        let (status, body) = client
            .send(http::Method::POST, "/v1/auth/keys", token, &format!(r#"{{"name":"churn-{round}-{n}"}}"#))
            .await;
        assert_eq!(status, 201, "{body:?}");
        let created = json(&body);
        let (id, raw) = (created["id"].as_str().unwrap().to_owned(), created["raw_key"].as_str().unwrap().to_owned());
        let (status, body) = client
            .send(http::Method::POST, "/v1/chat/completions", &format!("Bearer {raw}"), Shape::OpenAi.body())
            .await;
        assert_eq!(status, 200, "{body:?}");
        let path = format!("/v1/auth/keys/{id}");
        let (status, body) = client.send(http::Method::PATCH, &path, token, r#"{"name":"renamed"}"#).await;
        assert_eq!(status, 200, "{body:?}");
        let (status, body) = client.send(http::Method::GET, "/v1/auth/keys", token, "").await;
        assert_eq!(status, 200, "{body:?}");
        let (status, body) = client.send(http::Method::GET, "/v1/usage?group_by=model", token, "").await;
        assert_eq!(status, 200, "{body:?}");
        let (status, body) = client.send(http::Method::DELETE, &path, token, "").await;
        assert_eq!(status, 200, "{body:?}");
        let (status, _) = client
            .send(http::Method::POST, "/v1/chat/completions", &format!("Bearer {raw}"), Shape::OpenAi.body())
            .await;
        assert_eq!(status, 401, "a revoked key is refused at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_in_rounds_keeps_descriptors_and_memory_flat() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let keys: Vec<String> = (0..4).map(|i| setup.create_key(&format!("soak-{i}"))).collect();
    let env = [("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN), ("TOLLGATE_SESSION_SECRET", SESSION_SECRET)];
    let server = Server::spawn(&setup.config, &env);

    let mut admin = Client::connect(&server).await;
    let operator = format!("Bearer {ADMIN_TOKEN}");
    let owner = r#"{"email":"soak@example.com","password":"the soak passphrase","key_cap":100}"#;
    let (status, body) = admin.send(http::Method::POST, "/v1/accounts", &operator, owner).await;
    assert_eq!(status, 201, "{body:?}");
    let login = r#"{"email":"soak@example.com","password":"the soak passphrase"}"#;
    let (status, body) = admin.send(http::Method::POST, "/v1/auth/login", "", login).await;
    assert_eq!(status, 200, "{body:?}");
    let token = format!("Bearer {}", json(&body)["access_token"].as_str().unwrap());

    let mut clients = Vec::new();
    for _ in &keys {
        clients.push(Client::connect(&server).await);
    }
    let pid = server.pid();
    let mut baseline = None;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for (i, mut client) in clients.drain(..).enumerate() {
            let key = keys[i].clone();
            tasks.push(tokio::spawn(async move {
                completions(&mut client, &key, i % 2 == 1).await;
                client
            }));
        }
        churn(&mut admin, &token, round).await;
        for task in tasks {
            clients.push(task.await.unwrap());
        }
        let (fds, rss) = (open_descriptors(pid), rss_kib(pid));
        eprintln!("round {round}: {fds} descriptors, RSS {rss} KiB");
        match baseline {
            None => baseline = Some((fds, rss)),
            Some((base_fds, base_rss)) => {
                // Every connection is kept alive and the upstream pool holds at most one idle connection
                // per client, so the count is exact but for a pooled connection the mock may have closed.
                assert!(fds <= base_fds + 2, "round {round}: {fds} descriptors, {base_fds} after the warm-up");
                assert!(
                    rss <= base_rss + RSS_SLACK_KIB,
                    "round {round}: RSS {rss} KiB, {base_rss} KiB after the warm-up"
                );
            }
        }
    }
    let requests = mock.recorded().len();
    assert_eq!(requests, ROUNDS * (keys.len() * PER_ROUND + CHURN), "every completion reached the upstream once");
}

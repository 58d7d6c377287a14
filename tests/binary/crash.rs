//! Crash durability: the real binary under load, killed with SIGKILL, started again on the same store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;

use crate::common::*;
use crate::process::*;

const FLUSH: Duration = Duration::from_millis(200);
const LOAD_FOR: Duration = Duration::from_millis(1500);
const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// One request on a fresh connection, within 10 s; `None` when the server is gone (or too slow).
async fn attempt(method: http::Method, url: &str, headers: &[(&str, &str)], body: &str) -> Option<(u16, Bytes)> {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().as_str().to_owned();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(uri.path_and_query().unwrap().as_str());
        req = req.header("host", &authority).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let reply = sender.send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.ok()?;
        let status = reply.status().as_u16();
        let body = reply.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.ok().flatten()
}

/// An `id` member as text, whether the API sends a string or a number.
fn id_of(v: &serde_json::Value) -> String {
    v["id"].as_str().map_or_else(|| v["id"].to_string(), str::to_owned)
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// Data-plane traffic on one key until `stop`: how many requests were sent, and when each one that was
/// answered 200 had its whole body back.
async fn data_plane(
    url: String,
    key: String,
    body: &'static str,
    stop: Arc<AtomicBool>,
    first: Arc<Notify>,
) -> (u64, Vec<Instant>) {
    let keys = Keys::new(&key);
    let headers = keys.headers();
    let (mut sent, mut done) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        sent += 1;
        match attempt(http::Method::POST, &url, &headers, body).await {
            Some((200, _)) => {
                if done.is_empty() {
                    first.notify_one();
                }
                done.push(Instant::now());
            }
            Some(_) => {}
            None => break,
        }
    }
    (sent, done)
}

/// Usage the store holds for a key: (requests, input tokens, output tokens).
fn stored_usage(store: &tollgate::store::SqliteStore, id: &str) -> (u64, u64, u64) {
    let id =
        tollgate::auth::keys::KeyId::parse(id.rsplit('_').next().unwrap()).unwrap_or_else(|| panic!("key id {id}"));
    store
        .usage_report(Some(id), 0, i64::MAX)
        .unwrap()
        .iter()
        .fold((0, 0, 0), |t, r| (t.0 + r.requests, t.1 + r.input_tokens, t.2 + r.output_tokens))
}

/// Several clients stream and send JSON chat completions while accounts and keys are created over the
/// management API; then the process is killed with SIGKILL and started again on the same store. Every
/// account and key the API acknowledged with a 201 is there afterwards (keys work on the data plane), and
/// the stored usage holds every request settled more than two flush intervals before the kill (the one
/// interval a crash may lose, plus one of margin) and never more than was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_keeps_every_acknowledged_write_and_its_settled_usage() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), &format!("[store]\nflush_interval = \"{}ms\"\n", FLUSH.as_millis()));
    let env = [("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN), ("TOLLGATE_SESSION_SECRET", SESSION_SECRET)];
    let server = Server::spawn(&setup.config, &env);
    let operator = format!("Bearer {ADMIN_TOKEN}");

    let owner = r#"{"email":"owner@example.com","password":"the owner's passphrase","key_cap":1000}"#;
    let (status, body) =
        attempt(http::Method::POST, &server.url("/v1/accounts"), &[("authorization", &operator)], owner).await.unwrap();
    assert_eq!(status, 201, "{body:?}");
    let login = r#"{"email":"owner@example.com","password":"the owner's passphrase"}"#;
    let (status, body) = attempt(http::Method::POST, &server.url("/v1/auth/login"), &[], login).await.unwrap();
    assert_eq!(status, 200, "{body:?}");
    let token = format!("Bearer {}", json(&body)["access_token"].as_str().unwrap());
    let new_key = |name: &'static str| {
        let (url, token) = (server.url("/v1/auth/keys"), token.clone());
        async move {
            let body = format!(r#"{{"name":"{name}"}}"#);
            let (status, body) = attempt(http::Method::POST, &url, &[("authorization", &token)], &body).await.unwrap();
            assert_eq!(status, 201, "{body:?}");
            let v = json(&body);
            (v["id"].as_str().unwrap().to_owned(), v["raw_key"].as_str().unwrap().to_owned())
        }
    };
    // A key per data-plane client, so none reaches the per-key limit of requests per minute.
    let mut json_keys = Vec::new();
    let mut stream_keys = Vec::new();
    for name in ["json-0", "json-1", "json-2"] {
        json_keys.push(new_key(name).await);
    }
    for name in ["stream-0", "stream-1"] {
        stream_keys.push(new_key(name).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    // Told of the first 200 or 201 of each kind of traffic.
    let firsts: [Arc<Notify>; 4] = std::array::from_fn(|_| Arc::new(Notify::new()));
    let chat = server.url("/v1/chat/completions");
    let json_clients: Vec<_> = json_keys
        .iter()
        .map(|(_, key)| {
            let body = Shape::OpenAi.body();
            tokio::spawn(data_plane(chat.clone(), key.clone(), body, stop.clone(), firsts[0].clone()))
        })
        .collect();
    let stream_clients: Vec<_> = stream_keys
        .iter()
        .map(|(_, key)| {
            tokio::spawn(data_plane(chat.clone(), key.clone(), STREAM_BODY, stop.clone(), firsts[1].clone()))
        })
        .collect();
    // Accounts, one creation at a time (each is an argon2 hash), acknowledged ones kept with their ids.
    let accounts_url = server.url("/v1/accounts");
    let accounts_stop = stop.clone();
    let accounts_op = operator.clone();
    let first_account = firsts[2].clone();
    let account_creator = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..200 {
            if accounts_stop.load(Ordering::SeqCst) {
                break;
            }
            let email = format!("load{i}@example.com");
            let body = format!(r#"{{"email":"{email}","password":"passphrase number {i}"}}"#);
            match attempt(http::Method::POST, &accounts_url, &[("authorization", &accounts_op)], &body).await {
                Some((201, body)) => {
                    first_account.notify_one();
                    acked.push((id_of(&json(&body)), email));
                }
                Some(_) => {}
                None => break,
            }
        }
        acked
    });
    // Keys, from two clients on the owner's access token.
    let mut key_creators = Vec::new();
    for c in 0..2 {
        let (url, token, stop, first) = (server.url("/v1/auth/keys"), token.clone(), stop.clone(), firsts[3].clone());
        key_creators.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..400 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let body = format!(r#"{{"name":"load-{c}-{i}"}}"#);
                match attempt(http::Method::POST, &url, &[("authorization", &token)], &body).await {
                    Some((201, body)) => {
                        first.notify_one();
                        let v = json(&body);
                        acked.push((v["id"].as_str().unwrap().to_owned(), v["raw_key"].as_str().unwrap().to_owned()));
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            acked
        }));
    }

    tokio::time::sleep(LOAD_FOR).await;
    // Each kind has had an acknowledgement, and then more than the window below, so no check is empty.
    for (first, what) in firsts.iter().zip(["JSON request", "stream", "account", "key"]) {
        let acked = tokio::time::timeout(Duration::from_secs(20), first.notified()).await;
        assert!(acked.is_ok(), "no {what} acknowledged within 20 s");
    }
    tokio::time::sleep(FLUSH * 3).await;
    let kill_time = Instant::now();
    let logs = server.kill9();
    stop.store(true, Ordering::SeqCst);

    let cutoff = kill_time - FLUSH - FLUSH;
    let tally = |results: Vec<(u64, Vec<Instant>)>| {
        let sent: u64 = results.iter().map(|r| r.0).sum();
        let settled = results.iter().flat_map(|r| &r.1).filter(|t| **t < cutoff).count() as u64;
        let answered = results.iter().map(|r| r.1.len() as u64).sum::<u64>();
        (sent, answered, settled)
    };
    let mut results = Vec::new();
    for c in json_clients {
        results.push(c.await.unwrap());
    }
    let (json_sent, json_answered, json_settled) = tally(results);
    let mut results = Vec::new();
    for c in stream_clients {
        results.push(c.await.unwrap());
    }
    let (stream_sent, stream_answered, stream_settled) = tally(results);
    let accounts = account_creator.await.unwrap();
    let mut keys = Vec::new();
    for c in key_creators {
        keys.extend(c.await.unwrap());
    }
    assert!(json_settled > 0 && stream_settled > 0 && !accounts.is_empty() && !keys.is_empty(), "{logs:?}");

    // The same store, a new process.
    let started = Instant::now();
    let server = Server::spawn(&setup.config, &env);
    let listening = started.elapsed();
    let readyz = server.url("/readyz");
    let mut ready = None;
    for _ in 0..1000 {
        if let Some((200, _)) = attempt(http::Method::GET, &readyz, &[], "").await {
            ready = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = ready.expect("/readyz never answered 200 after the restart");

    let (status, body) =
        attempt(http::Method::GET, &server.url("/v1/accounts?limit=1000"), &[("authorization", &operator)], "")
            .await
            .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let listed = json(&body);
    assert_eq!(listed["has_more"], false, "one page holds every account");
    let listed: Vec<(String, String)> = listed["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|a| (id_of(a), a["email"].as_str().unwrap_or_default().to_owned()))
        .collect();
    for (id, email) in &accounts {
        assert!(listed.contains(&(id.clone(), email.clone())), "acknowledged account {email} ({id}) lost");
    }

    let (status, body) =
        attempt(http::Method::GET, &server.url("/v1/auth/keys?limit=1000"), &[("authorization", &token)], "")
            .await
            .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let listed = json(&body);
    assert_eq!(listed["has_more"], false, "one page holds every key");
    let listed: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    let chat = server.url("/v1/chat/completions");
    for (id, raw) in &keys {
        assert!(listed.contains(&id.as_str()), "acknowledged key {id} not listed");
        let keys = Keys::new(raw);
        let headers = keys.headers();
        let reply = attempt(http::Method::POST, &chat, &headers, Shape::OpenAi.body()).await;
        assert!(matches!(reply, Some((200, _))), "acknowledged key {id} refused after the restart: {reply:?}");
    }

    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
    let store = tollgate::store::SqliteStore::open(&setup.db).unwrap();
    let total = |keys: &[(String, String)]| {
        keys.iter().map(|(id, _)| stored_usage(&store, id)).fold((0, 0, 0), |t, u| (t.0 + u.0, t.1 + u.1, t.2 + u.2))
    };
    let json_usage = total(&json_keys);
    let stream_usage = total(&stream_keys);

    println!(
        "crash: {} accounts and {} keys acknowledged; JSON {json_sent} sent, {json_answered} answered, {json_settled} \
         settled before the window, stored {json_usage:?}; streams {stream_sent} sent, {stream_answered} answered, \
         {stream_settled} settled before the window, stored {stream_usage:?}; restart: listening after {} ms, \
         ready after {} ms",
        accounts.len(),
        keys.len(),
        listening.as_millis(),
        ready.as_millis()
    );
    // Each request reports 5 prompt and 3 completion tokens.
    for (what, (requests, input, output), settled, sent) in
        [("JSON", json_usage, json_settled, json_sent), ("stream", stream_usage, stream_settled, stream_sent)]
    {
        assert!(
            requests >= settled && input >= 5 * settled && output >= 3 * settled,
            "{what}: stored {requests} requests / {input} in / {output} out, but {settled} settled before the window"
        );
        assert!(
            requests <= sent && input <= 5 * sent && output <= 3 * sent,
            "{what}: stored {requests} requests / {input} in / {output} out, more than the {sent} sent"
        );
    }
}

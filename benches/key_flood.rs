//! A flood of random service keys against the real binary: every request carries a key never seen before
//! (seven in eight well-formed with a valid checksum, so each reaches the key table's lookup; one in eight
//! cut short, so its checksum fails), each must be refused 401, and the server's resident memory must not
//! grow by 50 MiB or more over the whole flood. Prints the RSS before, at the peak and after, and the rate.
//!
//!     cargo bench --bench key_flood                      # 1,000,000 keys over 4 connections
//!     TOLLGATE_BENCH_KEYS=100000 cargo bench --bench key_flood

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 4;
const BOUND_MIB: u64 = 50;
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(field)).map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A presented key: a fresh well-formed one, or (every eighth) one cut short by 1 to 40 characters.
fn random_key(i: u64) -> String {
    let (key, _) = tollgate::auth::keys::generate("tg", tollgate::auth::keys::KeyKind::Live).expect("random key");
    if i % 8 == 7 {
        let text = key.expose();
        return text[..text.len() - 1 - (i as usize / 8) % 40].to_owned();
    }
    key.expose().to_owned()
}

/// Sends `count` requests on one keep-alive connection; returns how many were refused 401.
async fn flood(addr: std::net::SocketAddr, count: u64, first: u64) -> u64 {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut refused = 0;
    for i in first..first + count {
        let req = http::Request::post("/v1/chat/completions")
            .header("host", "tollgate")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", random_key(i)))
            .header("x-provider-key", "sk-flood-provider-key")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(req).await.expect("response");
        if response.status() == 401 {
            refused += 1;
        }
        response.into_body().collect().await.expect("body");
    }
    refused
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a test harness listing) gets nothing to run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let total: u64 = std::env::var("TOLLGATE_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 64\nmax_connections_per_ip = 64\n\
             [store]\npath = {:?}\n[limits]\nenabled = true\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
             [log]\nlevel = \"info\"\n[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n",
            dir.path().join("tollgate.db").display().to_string()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tollgate");
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("tollgate ended before listening").expect("log line");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr: String = rest.chars().take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c)).collect();
            break addr.parse().expect("listen address");
        }
    };
    // The access log (a line per refusal, as in production) is drained so that the server never blocks on a
    // full pipe.
    std::thread::spawn(move || for _ in lines {});

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    // Warm-up: the server's threads, buffers and allocator reach their working size before the baseline.
    runtime.block_on(flood(addr, 2_000, 0));
    let before = status_kib(pid, "VmRSS:");
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let per = total / CONNECTIONS as u64;
    let refused: u64 = runtime.block_on(async {
        let tasks: Vec<_> =
            (0..CONNECTIONS as u64).map(|c| tokio::spawn(flood(addr, per, 1_000_000_000 + c * per))).collect();
        let mut refused = 0;
        for t in tasks {
            refused += t.await.expect("flood task");
        }
        refused
    });
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let after = status_kib(pid, "VmRSS:");
    let peak = peak.load(Ordering::Relaxed).max(after);
    let _ = child.kill();
    let _ = child.wait();

    let sent = per * CONNECTIONS as u64;
    println!(
        "key flood: {sent} random keys in {:.1} s ({:.0} req/s), {refused} refused 401",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64()
    );
    println!(
        "server RSS: before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB; growth at peak {:.1} MiB (bound {BOUND_MIB} MiB)",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        after as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    assert_eq!(refused, sent, "every random key is refused 401");
    assert!(peak.saturating_sub(before) < BOUND_MIB * 1024, "RSS grew by {BOUND_MIB} MiB or more");
}

//! The dashboard in a real browser: `tests/dashboard/` (pytest with Playwright's Python package) drives the
//! system's headless Chromium against the real binary and a mock upstream, as a person would. Screenshots of
//! every page at desktop and phone widths land in `target/dashboard-screenshots/`.
//!
//! Chromium is Debian's (`apt-get install chromium`, at `/usr/bin/chromium` or where `TOLLGATE_CHROMIUM`
//! says); no browser is ever downloaded. Without it the browser test is skipped with a message, unless
//! `TOLLGATE_REQUIRE_BROWSER=1` (as `.ci/run` sets) makes that a failure; `TOLLGATE_SKIP_BROWSER=1` skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::process::*;

const OPERATOR_TOKEN: &str = "operator-token-dashboard-0123456789";
const SESSION_SECRET: &str = "session-secret-dashboard-0123456789abcdef";
/// Seals publishable keys' signing secrets in the store, so the dashboard has one to show.
const SIGNING_KEY: &str = "5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1ed5ea1";

fn chromium() -> Option<PathBuf> {
    if std::env::var_os("TOLLGATE_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("TOLLGATE_SKIP_BROWSER=1: the dashboard's browser tests were not run");
        return None;
    }
    let path = PathBuf::from(std::env::var_os("TOLLGATE_CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "no Chromium at {} (apt-get install chromium, or TOLLGATE_CHROMIUM=<path>): the dashboard's browser tests \
         were not run",
        path.display()
    );
    assert!(std::env::var_os("TOLLGATE_REQUIRE_BROWSER").is_none_or(|v| v != "1"), "{message}");
    eprintln!("{message}");
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    let _quiet = QUIET_CORES.lock().await;
    let python = tokio::task::spawn_blocking(crate::python::test_python).await.unwrap();
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "[trial]\nenabled = true\n[plans.pro]\ntokens_per_month = 50000000\n");
    let env = [
        ("TOLLGATE_ADMIN_TOKEN", OPERATOR_TOKEN),
        ("TOLLGATE_SESSION_SECRET", SESSION_SECRET),
        ("TOLLGATE_TRIAL_SECRET", TRIAL_SECRET),
        ("TOLLGATE_SIGNING_KEY", SIGNING_KEY),
    ];
    let server = Server::spawn(&setup.config, &env);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../dashboard-screenshots");
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(&artifacts);
    let secrets = setup.dir.path().join("secrets-shown.txt");
    let (base, provider_key) = (server.url(""), PROVIDER_KEY);
    let out = tokio::task::spawn_blocking({
        let (artifacts, secrets) = (artifacts.clone(), secrets.clone());
        move || {
            Command::new(python)
                .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/dashboard"])
                .current_dir(root)
                .env("TOLLGATE_URL", base)
                .env("TOLLGATE_OPERATOR_TOKEN", OPERATOR_TOKEN)
                .env("TOLLGATE_PROVIDER_KEY", provider_key)
                .env("TOLLGATE_CHROMIUM", chromium)
                .env("TOLLGATE_ARTIFACTS", artifacts)
                .env("TOLLGATE_SECRETS_FILE", secrets)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser tests failed:\n{report}");

    // The provider calls the tests made with the keys the dashboard showed reached the upstream with the
    // caller's provider key, and only that.
    let seen = mock.recorded();
    assert!(!seen.is_empty(), "no provider call reached the mock upstream");
    for r in &seen {
        assert_eq!(r.headers["authorization"], format!("Bearer {PROVIDER_KEY}"), "{r:?}");
    }
    // Every secret the pages showed (keys, signing secrets, passwords, access tokens) is in no log line and
    // not in the store's file.
    let shown: Vec<String> = std::fs::read_to_string(&secrets)
        .expect("the browser tests list the secrets they saw")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(shown.len() >= 5, "too few secrets listed: {}", shown.len());
    let (status, logs) = server.stop();
    assert!(status.success(), "{status:?}");
    let stored = setup.store_files();
    assert!(stored.iter().any(|(file, _)| *file == "tollgate.db"), "the store's file is there to search");
    for secret in &shown {
        let what = &secret[..secret.len().min(12)];
        assert!(!logs.iter().any(|l| l.contains(secret.as_str())), "{what}…, shown by the dashboard, is in the logs");
        for (file, bytes) in &stored {
            assert!(!holds(bytes, secret), "{what}…, shown by the dashboard, is in {file}");
        }
    }
    let pngs = std::fs::read_dir(&artifacts)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("png".as_ref()));
    assert!(pngs.count() >= 10, "screenshots of every page at two widths");
}

/// `dashboard.listen`: the dashboard and the management API on a listener of their own, and the main
/// listener without the dashboard. No browser needed.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_can_have_a_listener_of_its_own() {
    let mock = MockUpstream::start().await;
    let setup =
        Setup::new(&mock.base_url(), "[dashboard]\nlisten = \"127.0.0.1:0\"\n[metrics]\non_main_listener = true\n");
    let scrape_token = "scrape-token-dashboard-0123456789";
    let env = [
        ("TOLLGATE_ADMIN_TOKEN", OPERATOR_TOKEN),
        ("TOLLGATE_SESSION_SECRET", SESSION_SECRET),
        ("TOLLGATE_METRICS_TOKEN", scrape_token),
    ];
    let server = Server::spawn(&setup.config, &env);
    let own = format!("http://{}", server.dashboard_addr());
    let get = |url: String| async move { request(http::Method::GET, &url, &[], b"").await };

    let page = get(format!("{own}/dashboard/keys")).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let operator = [("authorization", format!("Bearer {OPERATOR_TOKEN}"))];
    let operator: Vec<(&str, &str)> = operator.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let plans = request(http::Method::GET, &format!("{own}/v1/plans"), &operator, b"").await;
    assert_eq!(plans.status, 200, "the management API is served beside the dashboard");
    assert_eq!(plans.json()["data"][0]["name"], "default");
    let root = get(format!("{own}/")).await;
    assert_eq!(root.status, 307);
    assert_eq!(root.headers["location"], "/dashboard/");
    let keys = Keys::new("tg_live_whatever");
    let provider = post(&format!("{own}{}", Shape::OpenAi.path()), &keys.headers(), Shape::OpenAi.body()).await;
    assert_eq!(provider.status, 404, "no provider route on the dashboard's listener");
    assert!(provider.headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(mock.recorded().is_empty());
    let scrape = format!("Bearer {scrape_token}");
    let scrape = [("authorization", scrape.as_str())];
    let metrics = request(http::Method::GET, &format!("{own}/metrics"), &scrape, b"").await;
    assert_eq!(metrics.status, 404, "metrics stay off the dashboard's listener");
    assert_eq!(request(http::Method::GET, &server.url("/metrics"), &scrape, b"").await.status, 200);

    let main = get(server.url("/dashboard/")).await;
    assert_eq!(main.status, 404, "the main listener serves no dashboard when it has its own");
    let plans = request(http::Method::GET, &server.url("/v1/plans"), &operator, b"").await;
    assert_eq!(plans.status, 200, "the management API stays on the main listener");
}

/// The dashboard's listener shares the process's connection caps with the main one: it adds no room.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_listener_shares_the_connection_caps() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let extra = "[server]\nmax_connections_per_ip = 2\n[dashboard]\nlisten = \"127.0.0.1:0\"\n";
    let setup = Setup::new("http://127.0.0.1:9", extra);
    let server = Server::spawn(&setup.config, &[]);
    let dashboard = server.dashboard_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        // Answered, so admitted; kept open (keep-alive).
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).ends_with("ok") {
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        held.push(stream);
    }
    let refused = raw(dashboard, b"GET /dashboard/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(held);
}

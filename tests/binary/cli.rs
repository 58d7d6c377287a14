//! The command line: configuration checks that name the bad field, and the key lifecycle against the
//! store, which a running server follows.

use crate::common::*;
use crate::process::*;

#[test]
fn check_config_accepts_the_shipped_default_and_names_bad_fields() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let out = cli(&shipped, &["check-config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("provider    anthropic"));

    let dir = tempfile::tempdir().unwrap();
    for (text, field) in [
        ("[server]\nlisten = \"127.0.0.1:8080\"\nlisten_port = 1\n", "listen_port"),
        ("[upstream]\nidle_timeout = \"forever\"\n", "upstream.idle_timeout"),
        ("[providers.x]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n", "providers.x.base_url"),
        ("[metrics]\nlisten = \"nowhere\"\n", "metrics.listen"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for args in [&["check-config"][..], &["serve"], &["keys", "list"]] {
            let out = cli(&path, args);
            assert_eq!(out.status.code(), Some(2), "{text} {args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(field), "{text}: {err}");
        }
    }
    let missing = cli(&dir.path().join("absent.toml"), &["check-config"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn environment_overrides_are_applied_and_checked() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let out = std::process::Command::new(BIN)
        .args(["--config", shipped.to_str().unwrap(), "check-config"])
        .env("TOLLGATE_LISTEN", "127.0.0.1:9911")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:9911"));
    let out = std::process::Command::new(BIN)
        .args(["--config", shipped.to_str().unwrap(), "check-config"])
        .env("TOLLGATE_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.format"));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_created_and_revoked_by_the_cli_reach_a_running_server() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let first = setup.create_key("first");
    let server = Server::spawn(&setup.config, &[]);

    let call = |key: String| {
        let url = server.url("/v1/chat/completions");
        async move { post(&url, &Keys::new(&key).headers(), Shape::OpenAi.body()).await.status }
    };
    assert_eq!(call(first.clone()).await, 200);

    // A key created while the server runs is accepted within the refresh bound (100ms here).
    let second = setup.create_key("second");
    let until = |want: u16, key: String| async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while call(key.clone()).await != want {
            assert!(tokio::time::Instant::now() < deadline, "not {want} within 2s");
            tokio::task::yield_now().await;
        }
    };
    until(200, second.clone()).await;

    let list = setup.cli(&["keys", "list"]);
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(listing.contains("first") && listing.contains("second") && listing.contains("active"), "{listing}");
    assert!(!listing.contains(&first[8..]) && !listing.contains(&second[8..]), "a secret was listed");

    let id = key_id(&second).as_str().to_owned();
    let revoked = setup.cli(&["keys", "revoke", &id]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    until(401, second.clone()).await;
    assert_eq!(call(first.clone()).await, 200);
    let again = setup.cli(&["keys", "revoke", &format!("tg_live_{id}")]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
    assert!(String::from_utf8(setup.cli(&["keys", "list"]).stdout).unwrap().contains("revoked"));

    // Keys in bulk: one per line, each distinct and each accepted.
    let bulk = setup.cli(&["keys", "create", "--name", "batch", "--count", "3", "--rpm", "5000"]);
    assert!(bulk.status.success(), "{}", String::from_utf8_lossy(&bulk.stderr));
    let bulk: Vec<String> = String::from_utf8(bulk.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(bulk.len(), 3, "{bulk:?}");
    assert!(bulk[0] != bulk[1] && bulk[1] != bulk[2] && bulk[0] != bulk[2]);
    for key in &bulk {
        until(200, key.clone()).await;
    }
    assert_eq!(setup.cli(&["keys", "create", "--name", "x", "--count", "0"]).status.code(), Some(2));

    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
    let db = std::fs::read(&setup.db).unwrap();
    for key in [&first, &second].into_iter().chain(&bulk) {
        assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()), "a key is stored in the clear");
    }
}

#[test]
fn expiring_keys_show_their_expiry() {
    let setup = Setup::new("http://127.0.0.1:9", "");
    let out = setup.cli(&["keys", "create", "--name", "short", "--expires-in", "7"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expires"));
    let bad = setup.cli(&["keys", "create", "--name", "x", "--expires-in", "0"]);
    assert!(!bad.status.success());
    let listing = String::from_utf8(setup.cli(&["keys", "list"]).stdout).unwrap();
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.lines().nth(1).unwrap().contains("Z  -"), "created and expiry shown: {listing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_set_from_the_cli_apply_and_usage_is_reported() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let out = setup.cli(&["keys", "create", "--name", "metered", "--rpm", "2", "--tokens-per-month", "5000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 rpm, 10000 per day (default)"));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let id = key_id(&key).as_str().to_owned();
    for bad in [&["--rpm", "0"][..], &["--daily", "1000000001"], &["--rpm", "10000001"], &["--concurrency", "many"]] {
        let mut args = vec!["keys", "set-limits", id.as_str()];
        args.extend_from_slice(bad);
        let out = setup.cli(&args);
        assert!(!out.status.success(), "{bad:?} accepted");
    }

    let server = Server::spawn(&setup.config, &[]);
    let url = server.url("/v1/chat/completions");
    let call = || {
        let (url, auth) = (url.clone(), format!("Bearer {key}"));
        async move { post(&url, &[("authorization", &auth), ("x-provider-key", PROVIDER_KEY)], Shape::OpenAi.body()).await }
    };
    assert_eq!(call().await.status, 200);
    assert_eq!(call().await.status, 200);
    let refused = call().await;
    Shape::OpenAi.assert_error(&refused, 429, "requests per minute");

    let out = setup.cli(&["keys", "set-limits", &id, "--rpm", "5000"]); // above an account's ceiling: the operator may
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while call().await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "new limit not applied within 2s");
        tokio::task::yield_now().await;
    }
    let (status, _) = server.stop();
    assert!(status.success());

    let report = String::from_utf8(setup.cli(&["usage", "--key", &id]).stdout).unwrap();
    let row = report.lines().find(|l| l.contains("gpt-4o-mini")).unwrap_or_else(|| panic!("{report}"));
    let figures: Vec<&str> = row.split_whitespace().collect();
    // key, day, model, requests, input, output, total: three forwarded requests of 5 + 3 tokens.
    assert_eq!(&figures[3..], ["3", "15", "9", "24"], "{report}");
    assert!(report.lines().any(|l| l.contains("total") && l.ends_with(" 24")), "{report}");
    let bad = setup.cli(&["usage", "--from", "2026-02-30"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from"));
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_and_rotation_from_the_cli() {
    use std::io::Write;
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "[plans.gold]\ntokens_per_month = 50000000");
    let mut child = std::process::Command::new(BIN)
        .args([
            "--config",
            setup.config.to_str().unwrap(),
            "accounts",
            "create",
            "--email",
            "Ops@Example.com",
            "--key-cap",
            "3",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let account = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(account.starts_with("acct_"), "{account}");

    let listing = String::from_utf8(setup.cli(&["accounts", "list"]).stdout).unwrap();
    assert!(listing.contains("ops@example.com") && listing.contains(&account), "{listing}");
    assert!(setup.cli(&["accounts", "set-plan", &account, "gold"]).status.success());
    assert!(!setup.cli(&["accounts", "set-plan", &account, "platinum"]).status.success());
    assert!(String::from_utf8(setup.cli(&["accounts", "list"]).stdout).unwrap().contains("gold"));

    let out = setup.cli(&["keys", "create", "--name", "owned", "--account", &account]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let old = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!setup.cli(&["keys", "create", "--name", "x", "--account", "acct_nobody"]).status.success());

    // The account logs in over HTTP with the password the CLI hashed, and sees its key.
    let server = Server::spawn(
        &setup.config,
        &[
            ("TOLLGATE_ADMIN_TOKEN", "operator-token-0123456789abcdef"),
            ("TOLLGATE_SESSION_SECRET", "session-secret-0123456789abcdef"),
        ],
    );
    let login = r#"{"email":"ops@example.com","password":"a long enough password"}"#;
    let reply = post(&server.url("/v1/auth/login"), &[("content-type", "application/json")], login).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = format!("Bearer {}", reply.json()["access_token"].as_str().unwrap());
    let keys = request(http::Method::GET, &server.url("/v1/auth/keys"), &[("authorization", &token)], b"").await.json();
    assert_eq!(keys["data"][0]["key_prefix"].as_str().unwrap(), key_prefix(&old));

    // Rotation from the CLI: the new key works; the old one is refused within the refresh bound.
    let out = setup.cli(&["keys", "rotate", key_id(&old).as_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let status = |key: String| {
        let url = server.url("/v1/chat/completions");
        async move { post(&url, &Keys::new(&key).headers(), Shape::OpenAi.body()).await.status }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while status(new.clone()).await != 200 || status(old.clone()).await != 401 {
        assert!(tokio::time::Instant::now() < deadline, "rotation not applied within 2s");
        tokio::task::yield_now().await;
    }

    // Disabling from the CLI ends the access token at once and the keys within the refresh bound;
    // enabling brings the keys back (not the token).
    assert!(setup.cli(&["accounts", "disable", &account]).status.success());
    assert!(!setup.cli(&["accounts", "disable", "acct_nobody"]).status.success());
    let keys_status = || async {
        request(http::Method::GET, &server.url("/v1/auth/keys"), &[("authorization", &token)], b"").await.status
    };
    assert_eq!(keys_status().await, 401);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while status(new.clone()).await != 401 {
        assert!(tokio::time::Instant::now() < deadline, "disable not applied within 2s");
        tokio::task::yield_now().await;
    }
    assert!(setup.cli(&["accounts", "enable", &account]).status.success());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while status(new.clone()).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "enable not applied within 2s");
        tokio::task::yield_now().await;
    }
    assert_eq!(keys_status().await, 401, "tokens from before the disable stay ended");
    let (exit, _) = server.stop();
    assert!(exit.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_on_a_listener_of_their_own() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let key = setup.create_key("metered");
    let server = Server::spawn(&setup.config, &[]);
    let reply = post(&server.url("/v1/chat/completions"), &Keys::new(&key).headers(), Shape::OpenAi.body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let metrics_addr = server.metrics_addr();
    let metrics = format!("http://{metrics_addr}/metrics");
    let scraped = request(http::Method::GET, &metrics, &[], b"").await;
    assert_eq!(scraped.status, 200);
    assert!(scraped.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = scraped.text();
    assert!(text.contains("tollgate_requests_total{provider=\"openai\""), "{text}");
    assert!(!text.contains(&key[8..]) && !text.contains(PROVIDER_KEY), "a key in the metrics");
    let elsewhere = format!("http://{metrics_addr}/healthz");
    assert_eq!(request(http::Method::GET, &elsewhere, &[], b"").await.status, 404, "only /metrics is served there");
    // The public port does not serve them.
    assert_eq!(request(http::Method::GET, &server.url("/metrics"), &[], b"").await.status, 404);
    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_names_are_bounded_and_printed_safely() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let key = setup.create_key("models");
    let id = key_id(&key).as_str().to_owned();
    let server = Server::spawn(&setup.config, &[]);
    let keys = Keys::new(&key);
    let headers = keys.headers();
    for i in 0..100 {
        let reply = request(http::Method::GET, &server.url(&format!("/v1/models/m{i}")), &headers, b"").await;
        assert_eq!(reply.status, 200);
    }
    let body = r#"{"model":"gpt\u001b[2J\u001b[1;1Hforged","messages":[]}"#;
    assert_eq!(post(&server.url("/v1/chat/completions"), &headers, body).await.status, 200);
    let (status, _) = server.stop();
    assert!(status.success());

    // A row written before names were checked still prints harmlessly.
    let store = tollgate::store::SqliteStore::open(&setup.db).unwrap();
    let key_id = tollgate::auth::keys::KeyId::parse(&id).unwrap();
    let old = tollgate::metering::usage::book::UsageBook::default();
    old.request(key_id, &std::sync::Arc::from("default"), 0, std::sync::Arc::from("\u{1b}]0;pwned\u{7}"));
    store.add_usage(&tollgate::app::flush::additions(&old.take())).unwrap();

    let out = setup.cli(&["usage", "--key", &id, "--from", "1970-01-01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(!report.contains('\u{1b}') && !report.contains('\u{7}'), "{report:?}");
    assert!(report.contains("\\u{1b}]0;pwned\\u{7}"), "{report}");
    let rows: Vec<&str> = report.lines().filter(|l| l.contains("tg_live_") && !l.contains("total")).collect();
    let other = rows.iter().find(|l| l.split_whitespace().nth(2) == Some("other")).expect("an `other` row");
    // 100 model ids: 32 labels of their own, 68 requests as `other`, plus the forged name as `other`.
    assert_eq!(other.split_whitespace().nth(3), Some("69"), "{report}");
    assert_eq!(rows.len(), 32 + 1 + 1, "{report}");
}

/// Projects and a key's switch from the command line: a key in a project, the project's cap, deletion refused
/// while it holds an active key, and a disabled key refused by a running server until enabled.
#[tokio::test(flavor = "multi_thread")]
async fn projects_and_disabled_keys_from_the_cli() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let out = setup.cli(&["projects", "create", "--name", "mobile", "--key-cap", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let project = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(project.starts_with("prj_"), "{project}");
    assert!(!setup.cli(&["projects", "create", "--name", "mobile"]).status.success(), "names are unique");

    let out = setup.cli(&["keys", "create", "--name", "app", "--project", &project, "--description", "the iOS app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // The operator goes past a project's cap as past an account's (an account over the API cannot).
    let second = setup.cli(&["keys", "create", "--name", "second", "--project", &project]);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let second = String::from_utf8(second.stdout).unwrap().trim().to_owned();
    let listing = String::from_utf8(setup.cli(&["projects", "list"]).stdout).unwrap();
    let row = listing.lines().find(|l| l.starts_with(&project)).unwrap_or_default();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols.get(1), cols.get(2), cols.last()), (Some(&"2"), Some(&"1"), Some(&"mobile")), "{listing}");
    let refused = setup.cli(&["projects", "delete", &project]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("2 active keys"));
    assert!(setup.cli(&["keys", "revoke", key_id(&second).as_str()]).status.success());

    let server = Server::spawn(&setup.config, &[]);
    let status = |key: String| {
        let url = server.url("/v1/chat/completions");
        async move { post(&url, &Keys::new(&key).headers(), Shape::OpenAi.body()).await.status }
    };
    assert_eq!(status(key.clone()).await, 200);
    assert!(setup.cli(&["keys", "disable", key_id(&key).as_str()]).status.success());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while status(key.clone()).await != 403 {
        assert!(tokio::time::Instant::now() < deadline, "disable not applied within 2s");
        tokio::task::yield_now().await;
    }
    assert!(setup.cli(&["keys", "enable", key_id(&key).as_str()]).status.success());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while status(key.clone()).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "enable not applied within 2s");
        tokio::task::yield_now().await;
    }
    assert!(setup.cli(&["keys", "revoke", key_id(&key).as_str()]).status.success());
    let out = setup.cli(&["projects", "delete", &project]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (exit, _) = server.stop();
    assert!(exit.success());
    // Usage reads by project, its keys' rows keeping its id after it is gone.
    let report = String::from_utf8(setup.cli(&["usage", "--project", &project]).stdout).unwrap();
    assert!(report.lines().any(|l| l.starts_with(key_prefix(&key)) && l.contains("total")), "{report}");
    let other = String::from_utf8(setup.cli(&["usage", "--project", "prj_000000000000"]).stdout).unwrap();
    assert_eq!(other.lines().count(), 1, "only the header: {other}");
}

/// The shared-mode configuration in deploy/ is valid as shipped (with its secrets from the environment), and
/// the Kubernetes ConfigMap carries it unchanged.
#[test]
fn the_shared_mode_deploy_config_is_valid_and_the_config_map_carries_it() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let text = std::fs::read_to_string(deploy.join("shared.toml")).unwrap();
    let env = |name: &str| match name {
        "TOLLGATE_DATABASE_URL" => Some("postgres://tollgate:secret@postgres:5432/tollgate".to_owned()),
        "TOLLGATE_REDIS_URL" => Some("redis://redis:6379".to_owned()),
        "TOLLGATE_ADMIN_TOKEN" => Some("operator-token-0123456789abcdef".to_owned()),
        "TOLLGATE_SESSION_SECRET" => Some("session-secret-0123456789abcdef".to_owned()),
        _ => None,
    };
    let config = tollgate::config::Config::from_toml(&text, env).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(config.store.backend, tollgate::config::StoreBackend::Postgres(_)));
    assert_eq!(config.counters.backend, tollgate::config::counters::CountersBackend::Redis);
    assert_eq!(config.counters.instances, 3);
    assert!(!format!("{config:?}").contains("secret@"), "the database password never prints");

    let map = std::fs::read_to_string(deploy.join("k8s/configmap.yaml")).unwrap();
    let embedded: String = map
        .lines()
        .skip_while(|l| l.trim() != "shared.toml: |")
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert_eq!(embedded.trim_end(), text.trim_end(), "k8s/configmap.yaml differs from deploy/shared.toml");
}

//! Trial keys provisioned, regenerated (by header and by body member), shown on a provider error and
//! claimed from the command line, with trace-level logging: each key appears in its one response and
//! nowhere else (no log line, no metric, no other response, not in the SQLite file), and neither does the
//! device-hash secret.

use crate::common::*;
use crate::process::*;

fn anonymous(user_agent: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![("x-provider-key", PROVIDER_KEY), ("user-agent", user_agent), ("x-forwarded-for", "203.0.113.50")]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provisioned_key_is_never_logged_counted_or_stored() {
    let mock = MockUpstream::start().await;
    let extra =
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[trial]\nenabled = true\nissue_per_prefix_per_hour = 100\n";
    let setup = Setup::new(&mock.base_url(), extra);
    let env = [("TOLLGATE_LOG", "trace"), ("TOLLGATE_LOG_FORMAT", "json"), ("TOLLGATE_TRIAL_SECRET", TRIAL_SECRET)];
    let server = Server::spawn(&setup.config, &env);
    let url = server.url(Shape::OpenAi.path());
    let send = |headers: Vec<(&'static str, &'static str)>, body: &'static str| {
        let url = url.clone();
        async move { request(http::Method::POST, &url, &headers, body.as_bytes()).await }
    };
    let member = r#"{"model":"gpt-4o-mini","messages":[],"tollgate":{"regenerate_key":true}}"#;
    let mut with_regenerate = anonymous("app/1");
    with_regenerate.push(("x-tollgate-regenerate-key", "true"));
    let mut failing = anonymous("app/3");
    failing.push(("x-mock", "status 500"));
    let replies = [
        send(anonymous("app/1"), Shape::OpenAi.body()).await,
        send(anonymous("app/2"), Shape::OpenAi.stream_body()).await,
        send(with_regenerate, Shape::OpenAi.body()).await,
        send(anonymous("app/1"), member).await,
        send(failing, Shape::OpenAi.body()).await,
        send(anonymous("app/1"), Shape::OpenAi.body()).await,
    ];
    let keys: Vec<String> = replies
        .iter()
        .filter_map(|r| r.headers.get("x-tollgate-key-provisioned").map(|v| v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(keys.len(), 5, "five keys issued, each shown once");
    assert_eq!(replies[4].status, 500, "a provider error still shows the key it was served with");

    // The command line reads the same configuration, so it needs the same secret in its environment.
    let claim = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&setup.config)
        .args(["keys", "claim", "--account", "default", &keys[3]])
        .env("TOLLGATE_TRIAL_SECRET", TRIAL_SECRET)
        .output()
        .unwrap();
    assert!(claim.status.success(), "{}", String::from_utf8_lossy(&claim.stderr));
    let metrics = request(http::Method::GET, &format!("http://{}/metrics", server.metrics_addr()), &[], b"").await;
    assert_eq!(metrics.status, 200);

    let (status, logs) = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(logs.iter().any(|l| l.contains("\"level\":\"TRACE\"")), "trace logging was not on");
    let secrets: Vec<&str> = keys.iter().map(|k| key_secret(k)).collect();
    for (i, reply) in replies.iter().enumerate() {
        let shown = reply.headers.get("x-tollgate-key-provisioned").map(|v| v.to_str().unwrap());
        let text = format!("{:?}{}", reply.headers, reply.text());
        for secret in secrets.iter().filter(|s| shown.is_none_or(|k| !k.ends_with(**s))) {
            assert!(!text.contains(secret), "reply {i} shows another request's key: {text}");
        }
    }
    let outputs = [String::from_utf8_lossy(&claim.stdout), String::from_utf8_lossy(&claim.stderr)];
    for text in logs.iter().map(String::as_str).chain([metrics.text().as_str()]).chain(outputs.iter().map(|o| &**o)) {
        for secret in &secrets {
            assert!(!text.contains(secret), "a trial key in: {text}");
        }
        assert!(!text.contains(TRIAL_SECRET), "the device secret in: {text}");
    }
    for (file, bytes) in setup.store_files() {
        for secret in secrets.iter().chain([&TRIAL_SECRET]) {
            assert!(!holds(&bytes, secret), "a secret in {file}");
        }
    }
    // Nothing of tollgate's reached the provider either.
    for r in mock.recorded() {
        let text = format!("{:?}{}", r.headers, String::from_utf8_lossy(&r.body));
        assert!(!text.contains("tollgate") && secrets.iter().all(|s| !text.contains(s)), "{text}");
    }
}

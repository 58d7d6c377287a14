//! A canary server-held provider credential (`key_env`), read from the process environment: it reaches
//! the upstream in each provider's form, and appears in no log line (at trace level), no response, no
//! metric and not in the SQLite file.

use crate::common::*;
use crate::process::*;

const CANARY: &str = "sk-server-canary-4c8e2a9d61f0b357";
/// Part of the canary that no other text here contains.
const MARK: &str = "4c8e2a9d61f0";

#[tokio::test(flavor = "multi_thread")]
async fn the_server_credential_is_never_logged_echoed_counted_or_stored() {
    let mock = MockUpstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let extra = format!(
        "[upstream]\nresponse_timeout = \"1s\"\n\
         [providers.openai]\nkey_env = \"CANARY_PROVIDER_KEY\"\n\
         [providers.anthropic]\nkey_env = \"CANARY_PROVIDER_KEY\"\n\
         [providers.gemini]\nkey_env = \"CANARY_PROVIDER_KEY\"\n\
         [providers.dead]\nkind = \"openai\"\nbase_url = \"http://{dead}\"\nkey_env = \"CANARY_PROVIDER_KEY\""
    );
    let setup = Setup::new(&mock.base_url(), &extra);
    let env = [("CANARY_PROVIDER_KEY", CANARY), ("TOLLGATE_LOG", "trace"), ("TOLLGATE_LOG_FORMAT", "json")];
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&setup.config)
        .args(["keys", "create", "--name", "web", "--server-credential"])
        .env("CANARY_PROVIDER_KEY", CANARY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let missing = setup.cli(&["check-config"]);
    assert!(!missing.status.success(), "a key_env that is not set is a config error");
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("providers.") && said.contains("key_env") && said.contains("CANARY_PROVIDER_KEY"), "{said}");

    let server = Server::spawn(&setup.config, &env);
    let auth = format!("Bearer {key}");
    let cases = [
        (Shape::OpenAi.path(), "", Shape::OpenAi.body(), 200),
        (Shape::Anthropic.path(), "", Shape::Anthropic.stream_body(), 200),
        (Shape::Gemini.stream_path(), "", Shape::Gemini.body(), 200),
        (Shape::OpenAi.path(), "status 401", Shape::OpenAi.body(), 401),
        (Shape::OpenAi.path(), "", "{\"stream\":", 400),
        (Shape::OpenAi.path(), "never", Shape::OpenAi.body(), 504),
        ("/dead/v1/chat/completions", "", Shape::OpenAi.body(), 502),
    ];
    let mut replies = Vec::new();
    for (path, mock_says, body, status) in cases {
        let mut h = vec![("authorization", auth.as_str())];
        if !mock_says.is_empty() {
            h.push(("x-mock", mock_says));
        }
        let reply = request(http::Method::POST, &server.url(path), &h, body.as_bytes()).await;
        assert_eq!(reply.status.as_u16(), status, "{path} {mock_says}: {}", reply.text());
        replies.push(reply);
    }
    let seen = mock.recorded();
    assert!(seen.iter().any(|r| r.headers.get("authorization").is_some_and(|v| v == &format!("Bearer {CANARY}"))));
    assert!(seen.iter().any(|r| r.headers.get("x-api-key").is_some_and(|v| v == CANARY)));
    assert!(seen.iter().any(|r| r.target.contains(&format!("key={CANARY}"))));

    let metrics = request(http::Method::GET, &format!("http://{}/metrics", server.metrics_addr()), &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(!metrics.text().contains(MARK), "canary in the metrics");
    let (status, logs) = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(logs.iter().any(|l| l.contains("\"level\":\"TRACE\"")), "trace logging was not on");
    for line in &logs {
        assert!(!line.contains(MARK), "canary in a log line: {line}");
    }
    for reply in &replies {
        assert!(!reply.text().contains(MARK), "canary in a response: {}", reply.text());
        assert!(!format!("{:?}", reply.headers).contains(MARK));
    }
    let config = ("proxy.toml", std::fs::read(&setup.config).unwrap());
    for (file, bytes) in setup.store_files().into_iter().chain([config]) {
        assert!(!holds(&bytes, MARK), "canary in {file}");
    }
}

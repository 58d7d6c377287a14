//! Signing secrets, identity tokens and end-user ids through creation, rotation, success and every identity
//! refusal, with trace-level JSON logs: no log line carries a signing secret, a token or an end user's id.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::common::*;
use crate::process::*;

const ADMIN: &str = "operator-token-5d2f9a1c7e3b8046";
const END_USER: &str = "canary-end-user-8e2b61";

async fn call(server: &Server, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(http::Method::POST, &server.url(path), headers, body.as_bytes()).await
}

async fn manage(server: &Server, path: &str, token: &str, body: Value) -> Value {
    let auth = format!("Bearer {token}");
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let reply = call(server, path, &headers, &body).await;
    assert!(reply.status.is_success(), "{path}: {}", reply.text());
    reply.json()
}

fn mint(id: &str, secret: &str, sub: &str, iat: i64, exp: i64) -> String {
    let header = Header { kid: Some(id.to_owned()), ..Header::default() };
    encode(&header, &json!({"sub": sub, "iat": iat, "exp": exp}), &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_secrets_tokens_and_end_users_are_never_logged() {
    let mock = MockUpstream::start().await;
    let setup = Setup::new(&mock.base_url(), "");
    let key = setup.create_key("server");
    let env = [
        ("TOLLGATE_ADMIN_TOKEN", ADMIN),
        ("TOLLGATE_SESSION_SECRET", "session-secret-0123456789abcdef"),
        ("TOLLGATE_SIGNING_KEY", SIGNING_KEY),
        ("TOLLGATE_LOG", "trace"),
        ("TOLLGATE_LOG_FORMAT", "json"),
    ];
    let server = Server::spawn(&setup.config, &env);
    let account = json!({"email": "canary@example.com", "password": "correct horse battery"});
    manage(&server, "/v1/accounts", ADMIN, account.clone()).await;
    let login = call(&server, "/v1/auth/login", &[("content-type", "application/json")], &account.to_string()).await;
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let body = json!({"name": "web", "kind": "publishable", "allowed_origins": ["https://app.example.com"]});
    let created = manage(&server, "/v1/auth/keys", &token, body).await;
    let (id, publishable) = (created["id"].as_str().unwrap(), created["raw_key"].as_str().unwrap());
    let first = created["signing_secret"].as_str().unwrap().to_owned();
    let rotated = manage(&server, &format!("/v1/auth/keys/{id}/signing-secret"), &token, Value::Null).await;
    let secret = rotated["signing_secret"].as_str().unwrap().to_owned();

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let tokens = [
        mint(id, &secret, END_USER, now, now + 600),
        mint(id, &secret, END_USER, now - 600, now - 100),
        mint(id, &first, END_USER, now, now + 600),
        format!("{}x", mint(id, &secret, END_USER, now, now + 600)),
    ];
    let auth = format!("Bearer {publishable}");
    for (identity, status) in tokens.iter().zip([200, 401, 401, 401]) {
        let headers = [
            ("authorization", auth.as_str()),
            ("x-provider-key", PROVIDER_KEY),
            ("origin", "https://app.example.com"),
            ("x-tollgate-identity", identity.as_str()),
        ];
        let reply = call(&server, "/v1/chat/completions", &headers, Shape::OpenAi.body()).await;
        assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
    }
    let live = format!("Bearer {key}");
    let headers =
        [("authorization", live.as_str()), ("x-provider-key", PROVIDER_KEY), ("x-tollgate-end-user", END_USER)];
    assert_eq!(call(&server, "/v1/chat/completions", &headers, Shape::OpenAi.body()).await.status, 200);

    let (status, logs) = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(logs.iter().any(|l| l.contains("\"level\":\"TRACE\"")), "trace logging was not on");
    let access = logs.iter().filter(|l| l.contains("\"target\":\"tollgate::access\"")).count();
    assert!(access >= 5, "an access line per data-plane request: {access}");
    let signatures: Vec<&str> = tokens.iter().map(|t| t.rsplit('.').next().unwrap()).collect();
    for line in &logs {
        assert!(!line.contains(&first[7..]) && !line.contains(&secret[7..]), "a signing secret logged: {line}");
        assert!(!line.contains(END_USER), "an end user's id logged: {line}");
        for signature in &signatures {
            assert!(!line.contains(signature), "an identity token logged: {line}");
        }
    }
    for (file, bytes) in setup.store_files() {
        for needle in [&first[7..], &secret[7..]] {
            assert!(!holds(&bytes, needle), "a signing secret in {file}");
        }
    }
}

/// `tollgate keys create --kind publishable` prints the key and its signing secret, `keys signing-secret`
/// a new one, and `usage --by end-user` the end users' rows; without a sealing key there is none.
#[test]
fn the_cli_issues_signing_secrets_and_reports_end_users() {
    let setup = Setup::new("http://127.0.0.1:9", "");
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&setup.config)
            .args(args)
            .env_remove("TOLLGATE_SIGNING_KEY")
            .env_remove("TOLLGATE_KEY_HASH_SECRET")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let signing = [("TOLLGATE_SIGNING_KEY", SIGNING_KEY)];
    let create = ["keys", "create", "--name", "web", "--kind", "publishable", "--allowed-origin", "https://a.example"];
    let (ok, out, err) = run(&signing, &create);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() == 2 && lines[0].starts_with("tg_pub_") && lines[1].starts_with("tg_sig_"), "{out}");
    let id = &lines[0][7..19];
    let (ok, out, err) = run(&signing, &["keys", "signing-secret", id]);
    assert!(ok, "{err}");
    assert!(out.trim().starts_with("tg_sig_") && out.trim() != lines[1], "{out}");
    assert!(!err.contains("tg_sig_"), "the secret on stderr: {err}");
    // Without a sealing key: the key is made without one, and none can be issued.
    let (ok, out, err) = run(&[], &create);
    assert!(ok && out.lines().count() == 1 && err.contains("TOLLGATE_SIGNING_KEY"), "{out}{err}");
    let (ok, _, err) = run(&[], &["keys", "signing-secret", id]);
    assert!(!ok && err.contains("TOLLGATE_SIGNING_KEY"), "{err}");

    let store = SqliteStore::open(&setup.db).unwrap();
    let row = |end_user: &str, day: i64| tollgate::store::EndUserAddition {
        key: tollgate::auth::keys::KeyId::parse(id).unwrap(),
        account: "default".into(),
        end_user: end_user.into(),
        day,
        requests: 2,
        input_tokens: 30,
        output_tokens: 12,
    };
    let today = tollgate::clock::day_of(tollgate::clock::unix_now());
    store.add_end_user_usage(&[row("ann", today), row("bob\u{1b}[2J", today)]).unwrap();
    let (ok, out, err) = run(&[], &["usage", "--by", "end-user"]);
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains("END_USER"), "{out}");
    let ann = out.lines().find(|l| l.contains(" ann ")).unwrap_or_else(|| panic!("{out}"));
    assert!(ann.contains("tg_pub_") && ann.trim_end().ends_with("42"), "{ann}");
    assert!(!out.contains('\u{1b}'), "a control character reached the terminal: {out:?}");
}

//! A canary provider key through success, every error tollgate can produce and a disconnect, with
//! trace-level logging: it appears in no log line, no response, and not in the SQLite file.

use std::time::Duration;

use crate::common::*;
use crate::process::*;

const CANARY: &str = "sk-canary-7f3a9c1e5b2d4086";
/// Part of the canary that no other text here contains.
const MARK: &str = "7f3a9c1e5b2d";

#[tokio::test(flavor = "multi_thread")]
async fn the_provider_key_is_never_logged_echoed_or_stored() {
    let mock = MockUpstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let extra = format!(
        "[upstream]\nresponse_timeout = \"1s\"\n[server]\nmax_body_bytes = 4096\n[providers.dead]\nkind = \"openai\"\nbase_url = \"http://{dead}\""
    );
    let setup = Setup::new(&mock.base_url(), &extra);
    let key = setup.create_key("sdk-app");
    let server = Server::spawn(&setup.config, &[("TOLLGATE_LOG", "trace"), ("TOLLGATE_LOG_FORMAT", "json")]);
    let auth = format!("Bearer {key}");

    let mut replies = Vec::new();
    let send = |path: &'static str, extra: Vec<(&'static str, String)>, body: String| {
        let url = server.url(path);
        let mut headers = vec![("authorization", auth.clone()), ("x-provider-key", CANARY.to_owned())];
        for (k, v) in extra {
            headers.retain(|(h, _)| *h != k);
            headers.push((k, v));
        }
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            try_request(http::Method::POST, &url, &h, body.as_bytes()).await.map(|r| (path, r))
        }
    };
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
    let gemini_stream = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let cases = vec![
        ("/v1/chat/completions", vec![], Shape::OpenAi.body().to_owned(), 200),
        ("/v1/messages", vec![], Shape::Anthropic.stream_body().to_owned(), 200),
        (gemini_stream, vec![], Shape::Gemini.body().to_owned(), 200),
        ("/v1/chat/completions", vec![("x-mock", "status 401".to_owned())], Shape::OpenAi.body().to_owned(), 401),
        ("/v1/chat/completions", vec![("authorization", "Bearer tg_live_bogus".to_owned())], "{}".to_owned(), 401),
        ("/v1/chat/completions", vec![("authorization", String::new())], "{}".to_owned(), 401),
        ("/v1/chat/completions", vec![("x-provider-key", format!("{CANARY}&x=1"))], "{}".to_owned(), 400),
        ("/v1/chat/completions", vec![], "{\"stream\":".to_owned(), 400),
        ("/v1/chat/completions", vec![], big, 413),
        ("/v1/nowhere", vec![], "{}".to_owned(), 404),
        ("/dead/v1/chat/completions", vec![], Shape::OpenAi.body().to_owned(), 502),
        ("/v1/chat/completions", vec![("x-mock", "never".to_owned())], Shape::OpenAi.body().to_owned(), 504),
        (gemini_stream, vec![("x-mock", "never".to_owned())], Shape::Gemini.body().to_owned(), 504),
        (
            "/v1/chat/completions",
            vec![("x-mock", "redirect http://127.0.0.1:9/steal".to_owned())],
            Shape::OpenAi.body().to_owned(),
            502,
        ),
    ];
    let count = cases.len();
    for (path, extra, body, status) in cases {
        let (path, reply) = send(path, extra, body).await.unwrap();
        assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text());
        replies.push(reply);
    }

    // A caller that leaves mid-stream.
    let url = server.url("/v1/chat/completions");
    let h = [("authorization", auth.as_str()), ("x-provider-key", CANARY), ("x-mock", "hold")];
    let response = open(http::Method::POST, &url, &h, Shape::OpenAi.stream_body().as_bytes()).await.unwrap();
    let held = mock.next_held().await;
    held.send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"data: {}\n\n")))).await.unwrap();
    let mut body = response.into_body();
    assert!(next_chunk(&mut body).await.is_some());
    drop(body);
    tokio::time::timeout(Duration::from_secs(10), held.closed()).await.unwrap();

    // The canary did reach the upstream, in each provider's form.
    let seen = mock.recorded();
    assert!(seen.iter().any(|r| { r.headers.get("authorization").is_some_and(|v| v == &format!("Bearer {CANARY}")) }));
    assert!(seen.iter().any(|r| r.headers.get("x-api-key").is_some_and(|v| v == CANARY)));
    assert!(seen.iter().any(|r| r.target.contains(&format!("key={CANARY}"))));

    let (status, logs) = server.stop();
    assert!(status.success(), "{status:?}");
    let access: Vec<&String> = logs.iter().filter(|l| l.contains("\"target\":\"tollgate::access\"")).collect();
    assert_eq!(access.len(), count + 1, "one access line per request: {access:#?}");
    let head_timeouts = access.iter().filter(|l| l.contains("\"outcome\":\"upstream_head_timeout\"")).count();
    assert_eq!(head_timeouts, 2, "the two silent upstreams are logged as response-head timeouts: {access:#?}");
    assert!(logs.iter().any(|l| l.contains("\"level\":\"TRACE\"")), "trace logging was not on");
    for line in &logs {
        assert!(!line.contains(MARK), "canary in a log line: {line}");
        assert!(!line.contains(&key[8..]), "service key in a log line: {line}");
        // Host and port may be logged (the pool does); a URL with its path or query may not.
        assert!(
            !line.contains(&format!("{}/", mock.addr)) && !line.contains("key="),
            "upstream URL in a log line: {line}"
        );
    }
    for reply in &replies {
        assert!(!reply.text().contains(MARK), "canary in a response: {}", reply.text());
        assert!(!format!("{:?}", reply.headers).contains(MARK));
    }
    for (file, bytes) in setup.store_files() {
        assert!(!holds(&bytes, MARK), "canary in {file}");
    }
}

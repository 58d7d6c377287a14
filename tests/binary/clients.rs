//! Real clients: `curl --no-buffer` sees a stream arrive event by event, and the official OpenAI,
//! Anthropic and google-genai Python SDKs make normal and streaming calls through tollgate.
//!
//! The SDK test uses the tests' Python (`crate::python`). A machine without Python fails it, with a message,
//! unless the run asks to skip it with `TOLLGATE_SKIP_SDK=1`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn curl_no_buffer_sees_each_event_as_it_is_sent() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let mut curl = Command::new("curl")
        .args(["-sS", "--no-buffer", "-X", "POST", &gw.url("/v1/chat/completions")])
        .args(["-H", &format!("Authorization: Bearer {}", gw.key), "-H", &format!("X-Provider-Key: {PROVIDER_KEY}")])
        .args(["-H", "x-mock: hold", "-H", "Content-Type: application/json", "-d", Shape::OpenAi.stream_body()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("this test runs curl, which could not start ({e}): apt-get install curl"));
    let mut stdout = curl.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let held = mock.next_held().await;
    let mut seen = Vec::new();
    for event in OPENAI_SSE {
        held.send(Ok(Frame::data(Bytes::from_static(event.as_bytes())))).await.unwrap();
        // This event must come out of curl before the next one is even sent.
        while !String::from_utf8_lossy(&seen).ends_with(event) {
            let chunk =
                tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("curl held the event back");
            seen.extend(chunk.expect("curl ended early"));
        }
    }
    drop(held);
    assert!(curl.wait().unwrap().success());
    reader.join().unwrap();
    assert_eq!(String::from_utf8(seen).unwrap(), OPENAI_SSE.concat());
}

#[tokio::test(flavor = "multi_thread")]
async fn official_sdks_work_unchanged_but_for_the_base_url() {
    if std::env::var_os("TOLLGATE_SKIP_SDK").is_some_and(|v| v == "1") {
        eprintln!("TOLLGATE_SKIP_SDK=1: the official SDK clients were not run");
        return;
    }
    let python = tokio::task::spawn_blocking(crate::python::test_python).await.unwrap();
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/clients.py");
    let (base, key) = (gw.url(""), gw.key.clone());
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).args([script, &base, &key, PROVIDER_KEY]).output())
            .await
            .unwrap()
            .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let texts: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for call in ["openai", "openai_stream", "anthropic", "anthropic_stream", "gemini", "gemini_stream"] {
        assert_eq!(texts[call], "Hello from mock", "{call}: {texts}");
    }
    let seen = mock.recorded();
    assert_eq!(seen.len(), 6);
    for r in &seen {
        let credential = [
            r.headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()),
            r.headers.get("x-api-key").map(|v| v.to_str().unwrap().to_owned()),
            r.headers.get("x-goog-api-key").map(|v| v.to_str().unwrap().to_owned()),
            r.target.split("key=").nth(1).map(str::to_owned),
        ];
        let present: Vec<_> = credential.iter().flatten().collect();
        assert_eq!(present.len(), 1, "{r:?}");
        assert!(present[0].ends_with(PROVIDER_KEY), "{r:?}");
    }
}

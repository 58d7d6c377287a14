//! Serving: health probes, HTTP/2 (h2c and TLS with ALPN), head and body limits in provider shape,
//! characters a header may not carry, and keys written by another process seen within the stated bound.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::*;

#[tokio::test]
async fn health_and_readiness() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let health = request(http::Method::GET, &gw.url("/healthz"), &[], b"").await;
    assert_eq!((health.status.as_u16(), health.text().as_str()), (200, "ok"));
    let ready = request(http::Method::GET, &gw.url("/readyz"), &[], b"").await;
    assert_eq!((ready.status.as_u16(), ready.text().as_str()), (200, "ready"));
    assert!(ready.headers.contains_key("x-request-id"));
}

async fn h2_request(
    io: impl hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (http::Response<()>, Bytes) {
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender.send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (http::Response::from_parts(parts, ()), body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn http2_cleartext_is_served() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let keys = gw.auth();
    let h = keys.headers();
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let uri = format!("http://{}/v1/chat/completions", gw.addr);
    let (response, body) = h2_request(TokioIo::new(stream), &uri, &h, Shape::OpenAi.body()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(body, OPENAI_JSON.as_bytes());
    assert_eq!(mock.only_request().headers["host"], mock.addr.to_string());
}

#[tokio::test]
async fn tls_offers_http2_by_alpn() {
    let mock = MockUpstream::start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let extra = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}",
        cert_path.display().to_string(),
        key_path.display().to_string()
    );
    let gw = Gateway::start(&mock.base_url(), &extra).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let keys = gw.auth();
    let h = keys.headers();
    let uri = format!("https://localhost:{}/v1/messages", gw.addr.port());
    let (response, body) = h2_request(TokioIo::new(tls), &uri, &h, Shape::Anthropic.body()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(body, ANTHROPIC_JSON.as_bytes());
}

#[tokio::test]
async fn oversized_heads_are_431_in_shape() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nmax_header_bytes = 2048").await;
    let keys = gw.auth().with("x-pad", "x".repeat(4096));
    let h = keys.headers();
    for shape in SHAPES {
        let reply = post(&gw.url(shape.path()), &h, shape.body()).await;
        shape.assert_error(&reply, 431, "Request headers too large");
    }
    assert!(mock.recorded().is_empty());
}

#[tokio::test]
async fn bad_provider_key_characters_are_400_and_reach_nothing() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let body = Shape::OpenAi.body();
    let head = |key: &[u8]| {
        let mut r = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-provider-key: ",
            gw.key
        )
        .into_bytes();
        r.extend_from_slice(key);
        r.extend_from_slice(
            format!("\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        );
        r
    };
    // Parsed by tollgate: a provider-shaped 400.
    for key in [&b"sk-a b"[..], b"sk-a&b=c", b"sk-a#b", b"sk-a%0d%0a", b"sk-a?x", b"sk-a/b", b"sk-\xc3\xa9", b"sk-a\tb"]
    {
        let response = raw(gw.addr, &head(key)).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{key:?}: {response}");
        assert!(response.contains("Invalid X-Provider-Key header"), "{key:?}: {response}");
    }
    // CR or LF cannot be part of a header value on the wire; the HTTP parser refuses the request itself.
    for key in [&b"sk-a\rb"[..], b"sk-a\nb", b"sk-a\r\n b"] {
        let response = raw(gw.addr, &head(key)).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{key:?}: {response}");
    }
    assert!(mock.recorded().is_empty(), "{:?}", mock.recorded());
}

#[tokio::test]
async fn a_slow_body_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "[server]\nbody_idle_timeout = \"300ms\"").await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\nx-provider-key: {PROVIDER_KEY}\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{{\"model\":",
        gw.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("\"type\":\"error\""), "anthropic shape: {out}");
    assert!(mock.recorded().is_empty());
}

#[tokio::test]
async fn keys_written_elsewhere_are_seen_within_the_refresh_bound() {
    let mock = MockUpstream::start().await;
    let gw = Gateway::start(&mock.base_url(), "").await;
    let (key, info) = gw.create_key(&NewKey::live("extra", 0));
    let keys = Keys::new(&key);
    let h = keys.headers();
    // Refresh interval 100ms; allow ten intervals on a loaded machine.
    let bound = Duration::from_millis(1000);
    let url = gw.url("/v1/chat/completions");
    let status_within = |want: u16| {
        let (url, h) = (&url, &h);
        async move {
            let start = tokio::time::Instant::now();
            loop {
                let status = post(url, h, Shape::OpenAi.body()).await.status;
                if status == want {
                    return start.elapsed();
                }
                assert!(start.elapsed() < bound, "still {status} after {bound:?}");
                tokio::task::yield_now().await;
            }
        }
    };
    status_within(200).await;
    assert!(gw.store.revoke_key(info.id, tollgate::clock::unix_now()).unwrap());
    status_within(401).await;
}

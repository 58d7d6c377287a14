//! `https://` providers: a local TLS upstream whose certificate a throwaway CA issued for `localhost`,
//! trusted through `[upstream] ca_file` or a provider's `ca_file`, over HTTP/2 and HTTP/1.1 by ALPN
//! (`[upstream] http2 = false` offers HTTP/1.1 alone).

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tollgate::config::Config;

use crate::common::*;

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

/// A throwaway CA and its certificate as a PEM file.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "tollgate test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        Ca { issuer, dir }
    }

    fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A TLS acceptor with a certificate for `name` issued by this CA, offering `alpn` only.
    fn acceptor(&self, name: &str, alpn: &[u8]) -> tokio_rustls::TlsAcceptor {
        self.acceptor_of(name, &[alpn])
    }

    /// A TLS acceptor offering each of `alpn`, the first the client also offers winning.
    fn acceptor_of(&self, name: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone(), self.issuer.der().clone()], key)
                .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

fn base_url(mock: &MockUpstream) -> String {
    format!("https://localhost:{}", mock.addr.port())
}

fn ca_file_line(ca: &Ca) -> String {
    format!("ca_file = {:?}\n", ca.pem_path().display().to_string())
}

fn ca_line(section: &str, ca: &Ca) -> String {
    format!("[{section}]\n{}", ca_file_line(ca))
}

async fn call(gw: &Gateway, shape: Shape, stream: bool) -> Reply {
    let keys = gw.auth();
    let headers = keys.headers();
    let (path, body) = if stream { (shape.stream_path(), shape.stream_body()) } else { (shape.path(), shape.body()) };
    post(&gw.url(path), &headers, body).await
}

fn version_of(alpn: &[u8]) -> http::Version {
    if alpn == H2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 }
}

#[tokio::test]
async fn json_and_streams_reach_an_upstream_of_a_private_ca_over_h2_and_http1() {
    let ca = Ca::new();
    for alpn in [H2, HTTP1] {
        // The CA for every provider, or for the openai and anthropic providers alone.
        for extra in [
            ca_line("upstream", &ca),
            format!("{}{}", ca_line("providers.openai", &ca), ca_line("providers.anthropic", &ca)),
        ] {
            let mock = MockUpstream::start_tls(ca.acceptor("localhost", alpn)).await;
            let gw = Gateway::start(&base_url(&mock), &extra).await;

            let r = call(&gw, Shape::OpenAi, false).await;
            assert_eq!(r.status, 200, "{extra}: {}", r.text());
            assert_eq!(r.body, OPENAI_JSON.as_bytes());
            let r = call(&gw, Shape::OpenAi, true).await;
            assert_eq!(r.status, 200, "{extra}: {}", r.text());
            assert_eq!(r.headers["content-type"], "text/event-stream");
            assert!(r.text().contains(" mock") && r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
            let r = call(&gw, Shape::Anthropic, false).await;
            assert_eq!(r.status, 200, "{extra}: {}", r.text());
            assert_eq!(r.body, ANTHROPIC_JSON.as_bytes());
            let r = call(&gw, Shape::Anthropic, true).await;
            assert_eq!(r.status, 200, "{extra}: {}", r.text());
            assert!(r.text().contains("event: message_stop"), "{}", r.text());

            let seen = mock.recorded();
            assert_eq!(seen.len(), 4, "{seen:?}");
            for (i, req) in seen.iter().enumerate() {
                assert_eq!(req.version, version_of(alpn), "request {i} with {extra}");
                // HTTP/2 names the origin in `:authority` alone: a `Host` beside it is refused by nginx.
                if alpn == H2 {
                    assert!(!req.headers.contains_key("host"), "{:?}", req.headers.keys());
                } else {
                    assert_eq!(req.headers["host"], format!("localhost:{}", mock.addr.port()));
                }
                if i < 2 {
                    assert_eq!(req.headers["authorization"], format!("Bearer {PROVIDER_KEY}"));
                    assert!(!req.headers.contains_key("x-api-key"));
                } else {
                    assert_eq!(req.headers["x-api-key"], PROVIDER_KEY);
                    assert!(!req.headers.contains_key("authorization"));
                }
                assert!(!req.headers.contains_key("x-provider-key"));
            }
        }
    }
}

#[tokio::test]
async fn http2_is_spoken_to_an_upstream_offering_it_unless_disabled() {
    let ca = Ca::new();
    // Unset is HTTP/2.
    for (http2, version) in
        [("", http::Version::HTTP_2), ("false", http::Version::HTTP_11), ("true", http::Version::HTTP_2)]
    {
        let mock = MockUpstream::start_tls(ca.acceptor_of("localhost", &[H2, HTTP1])).await;
        let setting = if http2.is_empty() { String::new() } else { format!("http2 = {http2}\n") };
        let extra = format!("[upstream]\n{setting}{}", ca_file_line(&ca));
        let gw = Gateway::start(&base_url(&mock), &extra).await;
        for (shape, stream) in [(Shape::OpenAi, false), (Shape::OpenAi, true), (Shape::Anthropic, true)] {
            let r = call(&gw, shape, stream).await;
            assert_eq!(r.status, 200, "{extra}: {}", r.text());
        }
        let seen = mock.recorded();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(
            seen.iter().all(|r| r.version == version),
            "{extra}: {:?}",
            seen.iter().map(|r| r.version).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_502_and_nothing_is_sent() {
    let ca = Ca::new();
    for alpn in [H2, HTTP1] {
        let mock = MockUpstream::start_tls(ca.acceptor("localhost", alpn)).await;
        // Default trust: the webpki roots alone.
        let gw = Gateway::start(&base_url(&mock), "").await;
        for shape in SHAPES {
            shape.assert_error(&call(&gw, shape, false).await, 502, "");
            shape.assert_error(&call(&gw, shape, true).await, 502, "");
        }
        drop(gw);
        // A provider's ca_file is that provider's alone.
        let gw = Gateway::start(&base_url(&mock), &ca_line("providers.openai", &ca)).await;
        Shape::Anthropic.assert_error(&call(&gw, Shape::Anthropic, false).await, 502, "");
        Shape::Gemini.assert_error(&call(&gw, Shape::Gemini, false).await, 502, "");
        assert!(mock.recorded().is_empty(), "the upstream received {:?}", mock.recorded());
        assert_eq!(call(&gw, Shape::OpenAi, false).await.status, 200);
        assert_eq!(mock.recorded().len(), 1);
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_is_502_and_nothing_is_sent() {
    let ca = Ca::new();
    for alpn in [H2, HTTP1] {
        let mock = MockUpstream::start_tls(ca.acceptor("other.example", alpn)).await;
        let gw = Gateway::start(&base_url(&mock), &ca_line("upstream", &ca)).await;
        for shape in SHAPES {
            shape.assert_error(&call(&gw, shape, false).await, 502, "");
            shape.assert_error(&call(&gw, shape, true).await, 502, "");
        }
        assert!(mock.recorded().is_empty(), "the upstream received {:?}", mock.recorded());
    }
}

#[tokio::test]
async fn a_caller_that_disconnects_ends_the_upstream_stream() {
    let ca = Ca::new();
    for alpn in [H2, HTTP1] {
        let mock = MockUpstream::start_tls(ca.acceptor("localhost", alpn)).await;
        let gw = Gateway::start(&base_url(&mock), &ca_line("upstream", &ca)).await;
        // HTTP/2: the stream is reset; HTTP/1.1: the connection is closed.
        leave_streams_and_see_the_upstream_end(&gw, &mock, &format!("{alpn:?}")).await;
        assert!(mock.recorded().iter().all(|r| r.version == version_of(alpn)));
    }
}

#[tokio::test]
async fn a_bad_ca_file_is_a_config_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let no_cert = dir.path().join("no-cert.pem");
    std::fs::write(&no_cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    for path in [&missing, &no_cert] {
        for (section, field) in [("upstream", "upstream.ca_file"), ("providers.openai", "providers.openai.ca_file")] {
            let extra = format!("[{section}]\nca_file = {:?}\n", path.display().to_string());
            let text = config_text("https://localhost:1", &dir.path().join("db"), &extra);
            let e = Config::from_toml(&text, |_| None).unwrap_err();
            assert!(e.0.starts_with(field), "{extra}: {e}");
        }
    }
}

#[test]
fn http2_is_a_boolean() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["\"yes\"", "1"] {
        let text =
            config_text("https://localhost:1", &dir.path().join("db"), &format!("[upstream]\nhttp2 = {value}\n"));
        let e = Config::from_toml(&text, |_| None).unwrap_err();
        assert!(e.0.contains("http2"), "{value}: {e}");
    }
    let text = config_text("https://localhost:1", &dir.path().join("db"), "[upstream]\nhttp2 = false\n");
    assert!(!Config::from_toml(&text, |_| None).unwrap().upstream.http2);
    let text = config_text("https://localhost:1", &dir.path().join("db"), "");
    assert!(Config::from_toml(&text, |_| None).unwrap().upstream.http2);
}

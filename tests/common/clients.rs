//! Small HTTP clients for tests: one request per fresh connection, whole or streamed, and raw bytes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A finished exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Opens a fresh HTTP/1.1 connection and sends one request; the response body is left to stream.
/// Dropping the response closes the connection.
pub async fn open(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response<Incoming>, hyper::Error> {
    let uri: http::Uri = url.parse().unwrap();
    let stream = TcpStream::connect(uri.authority().unwrap().as_str()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(uri.path_and_query().unwrap().as_str());
    req = req.header("host", uri.authority().unwrap().as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender.send_request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap()).await
}

pub async fn try_request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, hyper::Error> {
    let response = open(method, url, headers, body).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply { status: parts.status, headers: parts.headers, body })
}

pub async fn request(method: http::Method, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    try_request(method, url, headers, body).await.unwrap()
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(http::Method::POST, url, headers, body.as_bytes()).await
}

/// Sends raw bytes on a new connection and reads until the server closes it (send `Connection: close`).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The next data frame of a streaming body, or `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no chunk within 10s")?
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// The headers of a provider call: a service key as a bearer token, the test provider key, and any
/// others added with [`Keys::with`].
#[derive(Debug, Clone)]
pub struct Keys {
    headers: Vec<(&'static str, String)>,
}

impl Keys {
    pub fn new(service_key: &str) -> Keys {
        Keys {
            headers: vec![
                ("authorization", format!("Bearer {service_key}")),
                ("x-provider-key", super::PROVIDER_KEY.to_owned()),
            ],
        }
    }

    /// Sets header `name` to `value`, replacing the one of that name if there is one.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Keys {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// Leaves header `name` out.
    pub fn without(mut self, name: &str) -> Keys {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    /// The headers, as the request functions take them.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }
}

/// The id of a service key, as the store and the management API know it.
pub fn key_id(key: &str) -> tollgate::auth::keys::KeyId {
    tollgate::auth::keys::parse("tg", key).unwrap_or_else(|| panic!("not a well-formed key: {key}")).id
}

/// A service key's public prefix, `tg_live_<id>`: what lists and logs show.
pub fn key_prefix(key: &str) -> &str {
    &key[..20]
}

/// A service key's secret part, past its public prefix: what must never be shown again.
pub fn key_secret(key: &str) -> &str {
    &key[20..]
}

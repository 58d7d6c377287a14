//! Reading management request bodies: a bounded JSON object, members that may or may not be null,
//! integers as JSON Schema reads them. What the values may be is the control plane's to check.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::ApiError;

/// Largest management request body.
const MAX_BODY: usize = 64 * 1024;

/// Ends the path inside a member in the errors of [`object`], ahead of the message.
const INNER_PATH: char = '\u{1f}';

/// A management request body, to be read whole by its deadline (`server.body_timeout` after the head).
pub(super) struct RequestBody<'a> {
    pub(super) body: &'a mut Incoming,
    pub(super) deadline: tokio::time::Instant,
}

pub(super) async fn json_body<T: DeserializeOwned>(body: RequestBody<'_>) -> Result<T, ApiError> {
    let limited = http_body_util::Limited::new(body.body, MAX_BODY);
    let bytes: Bytes = tokio::time::timeout_at(body.deadline, limited.collect())
        .await
        .map_err(|_| {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "Request body not received in time")
        })?
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "Request body over 64 KiB"))?
        .to_bytes();
    // serde would read a struct from an array too; a request body is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid(".", "the request body must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let (inner, path) = (e.inner().to_string(), e.path().to_string());
        // A member read as a whole object (`object`) reports the path inside it ahead of its message.
        let (path, inner) = match inner.split_once(INNER_PATH) {
            Some((".", rest)) => (path, rest.to_owned()),
            Some((within, rest)) => (format!("{path}.{within}"), rest.to_owned()),
            None => (path, inner),
        };
        // The path usually ends at an unknown field already; not at the top level, nor inside a member
        // read as a whole object.
        let field = match inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            Some(name) if path == "." => name.to_owned(),
            Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
            _ => path,
        };
        let message = inner.split(" at line").next().unwrap_or(&inner).to_owned();
        ApiError::invalid(&field, message)
    })
}

/// An optional member that, when present, may not be null.
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A JSON integer, also written with a zero fraction (`88.0`), as JSON Schema's `integer` allows.
struct Int<T>(T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Int<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Int<T>, D::Error> {
        use serde::de::Error;
        let n = serde_json::Number::deserialize(d)?;
        // The largest integer JSON carries exactly; the OpenAPI document states it as the maximum.
        const MAX: u64 = 9_007_199_254_740_991;
        let whole = n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
        whole
            .filter(|w| *w <= MAX)
            .and_then(|w| T::try_from(w).ok())
            .map(Int)
            .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number in range")))
    }
}

/// An optional integer member that, when present, may not be null.
pub(super) fn present_int<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    Int::<T>::deserialize(d).map(|i| Some(i.0))
}

/// An integer member that may be null: present-and-null as `Some(None)`, absent as `None`.
pub(super) fn nullable_int<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<Int<T>>::deserialize(d).map(|o| Some(o.map(|i| i.0)))
}

/// A member that must be a JSON object (serde alone would also read a struct from an array).
pub(super) fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let map = serde_json::Map::<String, Value>::deserialize(d)?;
    serde_path_to_error::deserialize(Value::Object(map))
        .map_err(|e| D::Error::custom(format!("{}{INNER_PATH}{}", e.path(), e.inner())))
}

/// Present-and-null as `Some(None)`, absent as `None`.
pub(super) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

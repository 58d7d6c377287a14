//! The one error exit of the data plane: renders an error's row of the table in `crate::error` through
//! the route's provider shape, counts it, and writes its log line.

use http::{HeaderValue, Response, header};

use super::body::ProxyBody;
use super::with_request_id;
use crate::error::ProxyError;
use crate::providers::ProviderKind;
use crate::telemetry::access_log::AccessLog;

/// A provider-shaped body, the right status and headers, and the log line.
pub fn error_response(shape: ProviderKind, error: &ProxyError, log: &AccessLog) -> Response<ProxyBody> {
    let spec = error.spec();
    log.emit(spec.status.as_u16(), spec.label, 0, spec.level);
    if let Some(reason) = spec.refusal {
        log.metrics.refusal(reason);
    }
    let mut response = Response::new(ProxyBody::full(shape.error_body(spec.parts())));
    *response.status_mut() = spec.status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    spec.headers.write_to(h);
    with_request_id(response, log.request_id)
}

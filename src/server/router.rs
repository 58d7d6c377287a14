//! The router: owns the whole path namespace of the main listener. Probes first (`/healthz`, `/readyz`,
//! `/metrics` where the operator put it here), then the management API, then the provider routes.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::proxy::body::ProxyBody;
use crate::proxy::{self, with_request_id};

/// Serves one request. Never fails: every error becomes a response in the shape of the path's owner.
pub async fn handle(app: Arc<App>, req: Request<&mut Incoming>) -> Response<ProxyBody> {
    let request_id = app.request_ids.next();
    if let Some(response) = probe(&app, &req) {
        return with_request_id(response, request_id);
    }
    if crate::admin::is_management(req.uri().path()) {
        return with_request_id(crate::admin::handle(&app, req).await, request_id);
    }
    proxy::handle(app, req, request_id).await
}

/// `/healthz`, `/readyz`, and `/metrics` where the operator put it on the main listener, answered before
/// routing.
fn probe<B>(app: &App, req: &Request<B>) -> Option<Response<ProxyBody>> {
    if req.method() != Method::GET {
        return None;
    }
    let (status, text) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok"),
        "/readyz" if app.readiness.is_ready() => (StatusCode::OK, "ready"),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable"),
        "/metrics" if app.config.metrics.enabled => {
            let token = app.config.metrics.main_listener_token?;
            if !crate::telemetry::metrics::presents_token(req.headers(), &token) {
                (StatusCode::UNAUTHORIZED, "a bearer token is required\n")
            } else {
                let mut response = Response::new(ProxyBody::full(app.metrics.render()));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
                return Some(response);
            }
        }
        _ => return None,
    };
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Some(response)
}

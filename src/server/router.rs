//! The router: owns the whole path namespace of the main listener. Probes first (`/healthz`, `/readyz`,
//! `/metrics` where the operator put it here), then the management API, the dashboard's files, then the
//! provider routes. A listener of the dashboard's own (`dashboard.listen`) serves the probes, the management
//! API and the dashboard, and nothing else.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::app::App;
use crate::config::OnStale;
use crate::proxy::body::ProxyBody;
use crate::proxy::{self, with_request_id};
use crate::telemetry::access_log::{ManagementLog, RequestId};

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `server.listen`: everything, the dashboard unless it has a listener of its own.
    Main,
    /// `dashboard.listen`: the probes, the management API and the dashboard; no provider route.
    Dashboard,
}

/// Serves one request. Never fails: every error becomes a response in the shape of the path's owner.
pub async fn handle(app: Arc<App>, req: Request<&mut Incoming>, role: Role) -> Response<ProxyBody> {
    let request_id = app.request_ids.next();
    if let Some(response) = probe(&app, &req, role) {
        return with_request_id(response, request_id);
    }
    let path = req.uri().path();
    if crate::admin::is_management(path) {
        return with_request_id(management(&app, req, request_id).await, request_id);
    }
    let dashboard = &app.config.dashboard;
    let dashboard_here = dashboard.enabled && (dashboard.listen.is_some() == (role == Role::Dashboard));
    if dashboard_here && crate::dashboard::is_dashboard(path) {
        let response = crate::dashboard::handle(req.method(), path, req.uri().query(), req.headers());
        return with_request_id(response, request_id);
    }
    if role == Role::Dashboard {
        return with_request_id(dashboard_listener_other(path), request_id);
    }
    proxy::handle(app, req, request_id).await
}

/// Anything but the dashboard and the management API on the dashboard's own listener: its root leads to
/// the dashboard; the rest is not served there. Both with the dashboard's security headers.
fn dashboard_listener_other(path: &str) -> Response<ProxyBody> {
    let body = ProxyBody::full(if path == "/" { "" } else { "not found\n" });
    let mut response = crate::dashboard::secured(Response::new(body));
    if path == "/" {
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/dashboard/"));
    } else {
        *response.status_mut() = StatusCode::NOT_FOUND;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

/// A management request, logged and counted by operation once it is answered. A caller that leaves
/// before the answer leaves no line, as the handler's work is dropped with it.
async fn management(app: &App, req: Request<&mut Incoming>, request_id: RequestId) -> Response<ProxyBody> {
    let log = ManagementLog {
        request_id,
        method: req.method().clone(),
        operation: crate::admin::operation(req.uri().path()),
        started: Instant::now(),
    };
    let response = crate::admin::handle(app, req).await;
    log.emit(response.status().as_u16(), &app.metrics);
    response
}

/// `/healthz`, `/readyz`, and `/metrics` where the operator put it on the main listener, answered before
/// routing.
fn probe<B>(app: &App, req: &Request<B>, role: Role) -> Option<Response<ProxyBody>> {
    if req.method() != Method::GET {
        return None;
    }
    let (status, text) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok".into()),
        "/readyz" => readiness(app),
        "/metrics" if app.config.metrics.enabled && role == Role::Main => {
            let token = app.config.metrics.main_listener_token?;
            if !crate::telemetry::metrics::presents_token(req.headers(), &token) {
                (StatusCode::UNAUTHORIZED, "a bearer token is required\n".into())
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

/// `/readyz`: ready once the store has been read and while it keeps answering within
/// `store.max_staleness`; still ready while Redis is away (limits go on locally), but saying so.
fn readiness(app: &App) -> (StatusCode, String) {
    if let Some(age) = app.readiness.stale_for() {
        let then = match app.config.store.on_stale {
            OnStale::Refuse => "key requests are refused until it answers",
            OnStale::Serve => "serving the keys last read (store.on_stale = serve)",
        };
        let text =
            format!("store unreachable for {} s: keys revoked or changed since are not seen; {then}", age.as_secs());
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    if app.counters.degraded() {
        return (StatusCode::OK, "ready; counters degraded: redis unreachable, limits checked locally".into());
    }
    (StatusCode::OK, "ready".into())
}

#[cfg(test)]
mod tests {
    use crate::admin::{OPERATIONS, operation};

    #[test]
    fn management_paths_are_named_by_their_template() {
        assert_eq!(operation("/v1/auth/keys"), "/v1/auth/keys");
        assert_eq!(operation("/v1/auth/keys/tg_live_abcdefghijkl"), "/v1/auth/keys/{id}");
        assert_eq!(operation("/v1/auth/keys/abc/rotate"), "/v1/auth/keys/{id}/rotate");
        assert_eq!(operation("/v1/accounts/acct_1"), "/v1/accounts/{id}");
        assert_eq!(operation("/openapi.json"), "/openapi.json");
        for unknown in ["/v1/auth/keys/", "/v1/auth/keys/a/b", "/v1/accounts/a/rotate", "/v1/auth", "/", ""] {
            assert_eq!(operation(unknown), "unmatched", "{unknown}");
        }
        for (_, template) in OPERATIONS {
            assert_eq!(operation(&template.replace("{id}", "x1")), *template);
        }
    }
}

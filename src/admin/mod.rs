//! The management API (docs/ARCHITECTURE.md, Management): accounts (operator token), login (account access tokens), the
//! key lifecycle under `/v1/auth/keys`, usage under `/v1/usage`, and the OpenAPI document. Every error has one shape,
//! `{"error": {"code", "message", "field"}}`. Writes go to the store first and then straight into this instance's key
//! table, so a revocation holds on the next request here.

mod accounts;
mod body;
mod claim;
mod end_user_usage;
mod key_body;
mod keys;
mod login;
pub mod openapi;
mod page;
mod projects;
pub mod service;
mod usage;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::keys::KeyId;
use crate::auth::sessions::Caller;
use crate::clock;
use crate::proxy::body::ProxyBody;
use crate::store::StoreError;
use accounts::{create_account, list_accounts, list_plans, patch_account};
use body::RequestBody;
use keys::{create_key, get_key, list_keys, patch_key, revoke_key, rotate_key, rotate_signing_secret};
use login::{change_password, login, logout};
use projects::{create_project, delete_project, get_project, list_projects, patch_project};
use usage::usage;

/// Every operation, as the OpenAPI document names it: (method, path template).
pub const OPERATIONS: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts"),
    ("patch", "/v1/accounts/{id}"),
    ("get", "/v1/plans"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/password"),
    ("post", "/v1/auth/keys"),
    ("get", "/v1/auth/keys"),
    // Before `{id}`, which would match it too.
    ("post", "/v1/auth/keys/claim"),
    ("get", "/v1/auth/keys/{id}"),
    ("patch", "/v1/auth/keys/{id}"),
    ("delete", "/v1/auth/keys/{id}"),
    ("post", "/v1/auth/keys/{id}/signing-secret"),
    ("post", "/v1/auth/keys/{id}/rotate"),
    ("post", "/v1/projects"),
    ("get", "/v1/projects"),
    ("get", "/v1/projects/{id}"),
    ("patch", "/v1/projects/{id}"),
    ("delete", "/v1/projects/{id}"),
    ("get", "/v1/usage"),
    ("get", "/openapi.json"),
];

/// Whether a path belongs to the management API rather than a provider route.
pub fn is_management(path: &str) -> bool {
    path == "/openapi.json"
        || path == "/v1/usage"
        || path == "/v1/accounts"
        || path == "/v1/plans"
        || path == "/v1/projects"
        || path.starts_with("/v1/projects/")
        || path.starts_with("/v1/accounts/")
        || path == "/v1/auth/login"
        || path == "/v1/auth/logout"
        || path == "/v1/auth/password"
        || path == "/v1/auth/keys"
        || path.starts_with("/v1/auth/keys/")
}

/// The operation a management path belongs to, as its template in [`OPERATIONS`] (`/v1/auth/keys/{id}`),
/// whatever the method; `unmatched` for a path no operation has. Logs and metrics name requests by this,
/// never by the path, which holds ids.
pub fn operation(path: &str) -> &'static str {
    let fits = |template: &str| {
        let (mut want, mut got) = (template.split('/'), path.split('/'));
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w == g || (w.starts_with('{') && !g.is_empty()) => {}
                _ => return false,
            }
        }
    };
    OPERATIONS.iter().map(|(_, template)| *template).find(|t| fits(t)).unwrap_or("unmatched")
}

/// A management error: status, stable code, message, and the request field it is about.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// For 405: the methods the path takes.
    allow: Option<String>,
    /// For 429: seconds to wait.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None, allow: None, retry_after: None }
    }

    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError { field: Some(field.to_owned()), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message) }
    }

    fn method_not_allowed(methods: &str) -> ApiError {
        ApiError {
            allow: Some(methods.to_owned()),
            ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("Allowed: {methods}"))
        }
    }

    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such resource")
    }

    fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Missing or invalid access token")
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "management request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict(what) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("{what} already exists"))
            }
            StoreError::KeyCapReached(_) => ApiError::new(StatusCode::CONFLICT, "key_cap_reached", capitalized(&e)),
            StoreError::ProjectKeyCapReached(_) => {
                ApiError::new(StatusCode::CONFLICT, "project_key_cap_reached", capitalized(&e))
            }
            StoreError::ProjectHasKeys(_) => ApiError::new(StatusCode::CONFLICT, "project_has_keys", capitalized(&e)),
            StoreError::UnknownProject => ApiError {
                field: Some("project_id".to_owned()),
                ..ApiError::new(StatusCode::NOT_FOUND, "not_found", capitalized(&e))
            },
            StoreError::KeyNotActive => ApiError::new(StatusCode::CONFLICT, "not_active", capitalized(&e)),
            StoreError::RotationPending(_) => ApiError::new(StatusCode::CONFLICT, "rotation_pending", capitalized(&e)),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "management request failed: the store is unavailable");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "The store could not be reached; the change may not have been made. Retry shortly",
                    )
                }
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<service::ServiceError> for ApiError {
    fn from(e: service::ServiceError) -> ApiError {
        match e {
            service::ServiceError::Invalid { field, message } => ApiError::invalid(&field, message),
            service::ServiceError::NotFound(_) => ApiError::not_found(),
            service::ServiceError::Store(e) => ApiError::from(e),
            service::ServiceError::Random(e) => ApiError::internal(e),
            service::ServiceError::Conflict { code, field, message } => {
                ApiError { field, ..ApiError::new(StatusCode::CONFLICT, code, message) }
            }
        }
    }
}

/// A store refusal as a message: its text with a capital first letter.
fn capitalized(e: &StoreError) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

type ApiResult = Result<(StatusCode, Value), ApiError>;

/// Serves one management request.
pub async fn handle(app: &App, req: Request<&mut Incoming>) -> Response<ProxyBody> {
    let result = route(app, req).await;
    let (mut allow, mut retry_after) = (None, None);
    let (status, value) = match result {
        Ok(ok) => ok,
        Err(e) => {
            allow = e.allow;
            retry_after = e.retry_after;
            (e.status, json!({"error": {"code": e.code, "message": e.message, "field": e.field}}))
        }
    };
    let mut response = Response::new(ProxyBody::full(value.to_string()));
    if let Some(allow) = allow.and_then(|a| HeaderValue::try_from(a).ok()) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn route(app: &App, req: Request<&mut Incoming>) -> ApiResult {
    let (parts, body) = req.into_parts();
    let body = RequestBody { body, deadline: tokio::time::Instant::now() + app.config.server.body_timeout };
    let client = client_ip(app, &parts);
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = parts.method.clone();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let allowed = |methods: &str| Err(ApiError::method_not_allowed(methods));
    match segments.as_slice() {
        ["openapi.json"] if method == Method::GET => Ok((StatusCode::OK, openapi::document(&app.config))),
        ["v1", "auth", "login"] if method == Method::POST => login(app, client, body).await,
        ["v1", "auth", "logout"] if method == Method::POST => {
            let account = account(app, &parts.headers).await?;
            logout(app, &account).await
        }
        ["v1", "auth", "password"] if method == Method::POST => {
            let account = account(app, &parts.headers).await?;
            change_password(app, client, &account, body).await
        }
        ["v1", "accounts"] => {
            operator(app, &parts.headers)?;
            match method {
                Method::POST => create_account(app, body).await,
                Method::GET => list_accounts(app, &query).await,
                _ => allowed("GET, POST"),
            }
        }
        ["v1", "accounts", id] => {
            operator(app, &parts.headers)?;
            match method {
                Method::PATCH => patch_account(app, id, body).await,
                _ => allowed("PATCH"),
            }
        }
        ["v1", "plans"] => {
            operator(app, &parts.headers)?;
            match method {
                Method::GET => list_plans(app),
                _ => allowed("GET"),
            }
        }
        ["v1", "usage"] if method != Method::GET => allowed("GET"),
        ["v1", "auth", "keys", ..] | ["v1", "projects", ..] | ["v1", "usage"] => {
            let account = account(app, &parts.headers).await?;
            account_route(app, &account, &segments, &method, &query, body).await
        }
        ["openapi.json"] => allowed("GET"),
        ["v1", "auth", "login" | "logout" | "password"] => allowed("POST"),
        _ => Err(ApiError::not_found()),
    }
}

/// The routes of an account's own keys, projects and usage, for the account `account` speaks for.
async fn account_route(
    app: &App,
    account: &str,
    segments: &[&str],
    method: &Method,
    query: &str,
    body: RequestBody<'_>,
) -> ApiResult {
    let allowed = |methods: &str| Err(ApiError::method_not_allowed(methods));
    match segments {
        ["v1", "auth", "keys"] => match *method {
            Method::POST => create_key(app, account, body).await,
            Method::GET => list_keys(app, account, query).await,
            _ => allowed("GET, POST"),
        },
        ["v1", "auth", "keys", "claim"] => match *method {
            Method::POST => claim::claim(app, account, body).await,
            _ => allowed("POST"),
        },
        ["v1", "auth", "keys", id] => {
            let id = owned_key(app, account, id).await?;
            match *method {
                Method::GET => get_key(app, id).await,
                Method::PATCH => patch_key(app, account, id, body).await,
                Method::DELETE => revoke_key(app, id).await,
                _ => allowed("GET, PATCH, DELETE"),
            }
        }
        ["v1", "auth", "keys", id, "rotate"] => {
            let id = owned_key(app, account, id).await?;
            match *method {
                Method::POST => rotate_key(app, account, id, body).await,
                _ => allowed("POST"),
            }
        }
        ["v1", "projects"] => match *method {
            Method::POST => create_project(app, account, body).await,
            Method::GET => list_projects(app, account).await,
            _ => allowed("GET, POST"),
        },
        ["v1", "projects", id] => match *method {
            Method::GET => get_project(app, account, id).await,
            Method::PATCH => patch_project(app, account, id, body).await,
            Method::DELETE => delete_project(app, account, id).await,
            _ => allowed("GET, PATCH, DELETE"),
        },
        ["v1", "auth", "keys", id, "signing-secret"] => {
            let id = owned_key(app, account, id).await?;
            match *method {
                Method::POST => rotate_signing_secret(app, id).await,
                _ => allowed("POST"),
            }
        }
        ["v1", "usage"] => usage(app, account, query).await,
        _ => Err(ApiError::not_found()),
    }
}

// ---------------------------------------------------------------- callers

/// The client's address, through `server.trusted_proxies` (for the login throttles).
fn client_ip(app: &App, parts: &http::request::Parts) -> Option<std::net::IpAddr> {
    crate::auth::client::of_request(&parts.extensions, &parts.headers, &app.config.server.trusted_proxies)
}

fn caller(app: &App, headers: &http::HeaderMap) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(ApiError::unauthorized)?;
    app.credentials.caller(token, clock::unix_now()).ok_or_else(ApiError::unauthorized)
}

fn operator(app: &App, headers: &http::HeaderMap) -> Result<(), ApiError> {
    match caller(app, headers)? {
        Caller::Operator => Ok(()),
        Caller::Account { .. } => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Only the operator token manages accounts"))
        }
    }
}

/// The account a token speaks for. Its epoch must still be the account's (no logout, password change or
/// disable since it was issued): read from the store, so every instance ends a token at once.
async fn account(app: &App, headers: &http::HeaderMap) -> Result<String, ApiError> {
    match caller(app, headers)? {
        Caller::Account { id, epoch } => {
            let current = app.store.account(id.clone()).await?;
            match current {
                Some(a) if a.token_epoch == epoch && !a.disabled => Ok(id),
                _ => Err(ApiError::unauthorized()),
            }
        }
        Caller::Operator => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Keys and usage belong to accounts: log in as one"))
        }
    }
}

/// The control plane over this server's store and configuration.
fn control(app: &App) -> service::ControlPlane<'_> {
    service::ControlPlane::new(std::sync::Arc::clone(&app.store), &app.config)
}

/// A new password hash, made on the bounded pool (for new accounts and new passwords alike).
async fn new_hash(app: &App, password: String) -> Result<String, ApiError> {
    app.logins.hash(password).await?.map_err(ApiError::internal)
}

/// A key id that exists and belongs to `account`; anything else is 404, so no account learns of
/// another's keys.
async fn owned_key(app: &App, account: &str, id: &str) -> Result<KeyId, ApiError> {
    let id = service::parse_key_id(id).ok_or_else(ApiError::not_found)?;
    let info = app.store.key_info(id).await?;
    match info {
        Some(info) if info.account == account => Ok(id),
        _ => Err(ApiError::not_found()),
    }
}

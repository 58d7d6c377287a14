//! The management API (DESIGN §5): accounts (operator token), login (account access tokens), the key
//! lifecycle under `/v1/auth/keys`, usage under `/v1/usage`, and the OpenAPI document. Every error has
//! one shape, `{"error": {"code", "message", "field"}}`. Writes go to the store first and then straight
//! into this instance's key table, so a revocation holds on the next request here.

pub mod openapi;
pub mod tokens;

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::access::{KeyAccess, Scopes};
use crate::body::ProxyBody;
use crate::clock::{self, rfc3339};
use crate::config::{CONCURRENCY_RANGE, RPD_RANGE, RPM_RANGE};
use crate::keys::{KeyHasher, KeyId, KeyKind, KeyLimits};
use crate::pipeline::App;
use crate::store::{AccountInfo, KeyInfo, NewKey, StoreError};
use tokens::Caller;

/// Largest management request body.
const MAX_BODY: usize = 64 * 1024;
const MAX_NAME: usize = 128;
const MAX_LIST: usize = 64;

/// Every operation, as the OpenAPI document names it: (method, path template).
pub const OPERATIONS: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts"),
    ("patch", "/v1/accounts/{id}"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/keys"),
    ("get", "/v1/auth/keys"),
    ("get", "/v1/auth/keys/{id}"),
    ("patch", "/v1/auth/keys/{id}"),
    ("delete", "/v1/auth/keys/{id}"),
    ("post", "/v1/auth/keys/{id}/rotate"),
    ("get", "/v1/usage"),
    ("get", "/openapi.json"),
];

/// Whether a path belongs to the management API rather than a provider route.
pub fn is_management(path: &str) -> bool {
    path == "/openapi.json"
        || path == "/v1/usage"
        || path == "/v1/accounts"
        || path.starts_with("/v1/accounts/")
        || path == "/v1/auth/login"
        || path == "/v1/auth/keys"
        || path.starts_with("/v1/auth/keys/")
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
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None, allow: None }
    }

    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError { field: Some(field.to_owned()), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message) }
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
            other => ApiError::internal(other),
        }
    }
}

type ApiResult = Result<(StatusCode, Value), ApiError>;

/// Serves one management request.
pub async fn handle(app: &App, req: Request<&mut Incoming>) -> Response<ProxyBody> {
    let result = route(app, req).await;
    let mut allow = None;
    let (status, value) = match result {
        Ok(ok) => ok,
        Err(e) => {
            allow = e.allow;
            (e.status, json!({"error": {"code": e.code, "message": e.message, "field": e.field}}))
        }
    };
    let mut response = Response::new(ProxyBody::full(value.to_string()));
    if let Some(allow) = allow.and_then(|a| HeaderValue::try_from(a).ok()) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn route(app: &App, req: Request<&mut Incoming>) -> ApiResult {
    let (parts, body) = req.into_parts();
    let body = RequestBody { body, deadline: tokio::time::Instant::now() + app.config.server.body_timeout };
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = parts.method.clone();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let allowed = |methods: &str| {
        Err(ApiError {
            allow: Some(methods.to_owned()),
            ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("Allowed: {methods}"))
        })
    };
    match segments.as_slice() {
        ["openapi.json"] if method == Method::GET => Ok((StatusCode::OK, openapi::document(&app.config))),
        ["v1", "auth", "login"] if method == Method::POST => login(app, body).await,
        ["v1", "accounts"] => {
            operator(app, &parts.headers)?;
            match method {
                Method::POST => create_account(app, body).await,
                Method::GET => list_accounts(app).await,
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
        ["v1", "auth", "keys"] => {
            let account = account(app, &parts.headers)?;
            match method {
                Method::POST => create_key(app, &account, body).await,
                Method::GET => list_keys(app, &account).await,
                _ => allowed("GET, POST"),
            }
        }
        ["v1", "auth", "keys", id] => {
            let account = account(app, &parts.headers)?;
            let id = owned_key(app, &account, id).await?;
            match method {
                Method::GET => get_key(app, id).await,
                Method::PATCH => patch_key(app, id, body).await,
                Method::DELETE => revoke_key(app, id).await,
                _ => allowed("GET, PATCH, DELETE"),
            }
        }
        ["v1", "auth", "keys", id, "rotate"] => {
            let account = account(app, &parts.headers)?;
            let id = owned_key(app, &account, id).await?;
            match method {
                Method::POST => rotate_key(app, id, body).await,
                _ => allowed("POST"),
            }
        }
        ["v1", "usage"] if method == Method::GET => {
            let account = account(app, &parts.headers)?;
            usage(app, &account, &query).await
        }
        ["v1", "usage"] | ["openapi.json"] | ["v1", "auth", "login"] => {
            allowed(if path == "/v1/auth/login" { "POST" } else { "GET" })
        }
        _ => Err(ApiError::not_found()),
    }
}

// ---------------------------------------------------------------- callers

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
        Caller::Account(_) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Only the operator token manages accounts"))
        }
    }
}

fn account(app: &App, headers: &http::HeaderMap) -> Result<String, ApiError> {
    match caller(app, headers)? {
        Caller::Account(id) => Ok(id),
        Caller::Operator => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Keys and usage belong to accounts: log in as one"))
        }
    }
}

/// A key id that exists and belongs to `account`; anything else is 404, so no account learns of
/// another's keys.
async fn owned_key(app: &App, account: &str, id: &str) -> Result<KeyId, ApiError> {
    let id = KeyId::parse(id.rsplit('_').next().unwrap_or_default()).ok_or_else(ApiError::not_found)?;
    let info = blocking(app, move |store| store.key_info(id)).await?;
    match info {
        Some(info) if info.account == account => Ok(id),
        _ => Err(ApiError::not_found()),
    }
}

async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(crate::store::SqliteStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || f(store)).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

// ---------------------------------------------------------------- bodies

/// A management request body, to be read whole by its deadline (`server.body_timeout` after the head).
struct RequestBody<'a> {
    body: &'a mut Incoming,
    deadline: tokio::time::Instant,
}

async fn json_body<T: DeserializeOwned>(body: RequestBody<'_>) -> Result<T, ApiError> {
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
        let inner = e.inner().to_string();
        let path = e.path().to_string();
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
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
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
fn present_int<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    Int::<T>::deserialize(d).map(|i| Some(i.0))
}

/// An integer member that may be null: present-and-null as `Some(None)`, absent as `None`.
fn nullable_int<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<Int<T>>::deserialize(d).map(|o| Some(o.map(|i| i.0)))
}

/// A member that must be a JSON object (serde alone would also read a struct from an array).
fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let map = serde_json::Map::<String, Value>::deserialize(d)?;
    T::deserialize(Value::Object(map)).map_err(D::Error::custom)
}

/// Present-and-null as `Some(None)`, absent as `None`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    #[serde(default, deserialize_with = "nullable_int")]
    requests_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable_int")]
    requests_per_day: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable_int")]
    concurrent_requests: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable_int")]
    tokens_per_month: Option<Option<u64>>,
}

impl LimitsBody {
    /// Applies the given fields over `limits` (null: back to the default), checking ranges.
    fn apply(&self, mut limits: KeyLimits) -> Result<KeyLimits, ApiError> {
        fn set(field: &str, v: Option<Option<u32>>, range: (u32, u32), slot: &mut Option<u32>) -> Result<(), ApiError> {
            crate::keys::change_limit(v.map(|n| n.map(u64::from)), range, slot).map_err(|e| ApiError::invalid(field, e))
        }
        set("limits.requests_per_minute", self.requests_per_minute, RPM_RANGE, &mut limits.requests_per_minute)?;
        set("limits.requests_per_day", self.requests_per_day, RPD_RANGE, &mut limits.requests_per_day)?;
        set(
            "limits.concurrent_requests",
            self.concurrent_requests,
            CONCURRENCY_RANGE,
            &mut limits.concurrent_requests,
        )?;
        if let Some(t) = self.tokens_per_month {
            limits.tokens_per_month = t;
        }
        Ok(limits)
    }
}

/// Names and project labels: 1-128 characters, none of them a control character (they are printed in
/// terminals). The OpenAPI document states the same rule.
fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("must be 1-{MAX_NAME} characters, none of them control characters"),
        ));
    }
    Ok(name.to_owned())
}

fn check_list(
    app: &App,
    field: &str,
    list: Option<Vec<String>>,
    providers: bool,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() || list.len() > MAX_LIST {
        return Err(ApiError::invalid(field, format!("must hold 1-{MAX_LIST} entries, or be null for any")));
    }
    for item in &list {
        let ok = if providers {
            app.config.providers.iter().any(|p| &p.name == item)
        } else {
            !item.is_empty() && item.len() <= 128 && item.bytes().all(|b| b.is_ascii_graphic())
        };
        if !ok {
            let what = if providers { "is not a configured provider" } else { "is not a model name or glob" };
            return Err(ApiError::invalid(field, format!("`{item}` {what}")));
        }
    }
    Ok(Some(list))
}

fn check_scopes(scopes: Option<Vec<String>>) -> Result<Option<Scopes>, ApiError> {
    scopes
        .map(|names| {
            if names.is_empty() {
                return Err(ApiError::invalid("scopes", "must name at least one scope"));
            }
            Scopes::from_names(names.iter().map(String::as_str)).map_err(|bad| {
                ApiError::invalid(
                    "scopes",
                    format!("`{bad}` is not one of chat, embeddings, models:read, count_tokens"),
                )
            })
        })
        .transpose()
}

// ---------------------------------------------------------------- accounts and login

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    email: String,
    password: String,
    #[serde(default, deserialize_with = "present")]
    plan: Option<String>,
    #[serde(default, deserialize_with = "present_int")]
    key_cap: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchAccount {
    #[serde(default, deserialize_with = "present")]
    plan: Option<String>,
    #[serde(default, deserialize_with = "present_int")]
    key_cap: Option<u32>,
}

fn account_view(a: &AccountInfo) -> Value {
    json!({"id": a.id, "email": a.email, "plan": a.plan, "key_cap": a.key_cap, "created_at": rfc3339(a.created_at)})
}

fn check_plan(app: &App, plan: Option<String>) -> Result<Option<String>, ApiError> {
    match plan {
        Some(p) if !app.config.plans.contains_key(&p) => {
            Err(ApiError::invalid("plan", format!("`{p}` is not a plan in proxy.toml")))
        }
        other => Ok(other),
    }
}

fn check_key_cap(cap: Option<u32>) -> Result<Option<u32>, ApiError> {
    match cap {
        Some(n) if !(1..=1000).contains(&n) => Err(ApiError::invalid("key_cap", format!("{n} is outside 1..=1000"))),
        other => Ok(other),
    }
}

async fn create_account(app: &App, body: RequestBody<'_>) -> ApiResult {
    let req: CreateAccount = json_body(body).await?;
    if !openapi::is_email(&req.email) {
        return Err(ApiError::invalid("email", "is not an email address"));
    }
    let email = req.email.to_ascii_lowercase();
    if !(8..=256).contains(&req.password.chars().count()) {
        return Err(ApiError::invalid("password", "must be 8-256 characters"));
    }
    let plan = check_plan(app, req.plan)?.unwrap_or_else(|| "default".to_owned());
    let key_cap = check_key_cap(req.key_cap)?.unwrap_or(10);
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || crate::passwords::hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let now = clock::unix_now();
    let account = blocking(app, move |s| s.create_account(&email, &hash, &plan, key_cap, now)).await?;
    app.plans.set(&[(account.id.clone(), account.plan.clone())]);
    Ok((StatusCode::CREATED, account_view(&account)))
}

async fn list_accounts(app: &App) -> ApiResult {
    let accounts = blocking(app, |s| s.list_accounts()).await?;
    Ok((StatusCode::OK, json!({"object": "list", "data": accounts.iter().map(account_view).collect::<Vec<_>>()})))
}

async fn patch_account(app: &App, id: &str, body: RequestBody<'_>) -> ApiResult {
    let req: PatchAccount = json_body(body).await?;
    let plan = check_plan(app, req.plan)?;
    let key_cap = check_key_cap(req.key_cap)?;
    let id = id.to_owned();
    let lookup = id.clone();
    let current = blocking(app, move |s| s.account(&lookup)).await?.ok_or_else(ApiError::not_found)?;
    let updated = AccountInfo {
        plan: plan.unwrap_or(current.plan.clone()),
        key_cap: key_cap.unwrap_or(current.key_cap),
        ..current
    };
    let (plan, cap) = (updated.plan.clone(), updated.key_cap);
    blocking(app, move |s| s.update_account(&id, &plan, cap)).await?;
    app.plans.set(&[(updated.id.clone(), updated.plan.clone())]);
    Ok((StatusCode::OK, account_view(&updated)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

async fn login(app: &App, body: RequestBody<'_>) -> ApiResult {
    let req: Login = json_body(body).await?;
    let email = req.email.to_ascii_lowercase();
    let found = blocking(app, move |s| s.account_for_login(&email)).await?;
    let password = req.password;
    let (account, ok) = tokio::task::spawn_blocking(move || match found {
        Some((account, hash)) => {
            let ok = crate::passwords::verify(&password, &hash);
            (Some(account), ok)
        }
        None => {
            // Same work for an unknown email, so timing tells nothing.
            crate::passwords::verify_nothing(&password);
            (None, false)
        }
    })
    .await
    .map_err(ApiError::internal)?;
    let account = account
        .filter(|_| ok)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "Invalid email or password"))?;
    let ttl = app.credentials.token_ttl.as_secs() as i64;
    let expires_at = clock::unix_now() + ttl;
    let token = app.credentials.issue(&account.id, expires_at);
    Ok((
        StatusCode::OK,
        json!({"access_token": token, "token_type": "bearer", "expires_in": ttl, "expires_at": rfc3339(expires_at), "account_id": account.id}),
    ))
}

// ---------------------------------------------------------------- keys

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default, deserialize_with = "present")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    providers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "object")]
    limits: LimitsBody,
    #[serde(default, deserialize_with = "present_int")]
    expires_in_days: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    project: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchKey {
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    providers: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "object")]
    limits: LimitsBody,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    #[serde(default, deserialize_with = "present_int")]
    grace_seconds: Option<u64>,
}

/// A key as the API shows it: never its secret or hash.
fn key_view(app: &App, k: &KeyInfo, usage: (u64, u64, u64)) -> Value {
    let now = clock::unix_now();
    let d = &app.config.limits;
    let last_used = app.last_used.get(&k.id).map(|t| *t).max(k.last_used_at);
    json!({
        "id": k.id.as_str(),
        "key_prefix": k.key_prefix,
        "name": k.name,
        "project": k.project,
        "status": k.status_at(now),
        "scopes": k.access.scopes.names(),
        "providers": k.access.providers,
        "models": k.access.models,
        "limits": {
            "requests_per_minute": k.limits.requests_per_minute.unwrap_or(d.requests_per_minute),
            "requests_per_day": k.limits.requests_per_day.unwrap_or(d.requests_per_day),
            "concurrent_requests": k.limits.concurrent_requests.unwrap_or(d.concurrent_requests),
            "tokens_per_month": k.limits.tokens_per_month.or(d.tokens_per_month),
        },
        "created_at": rfc3339(k.created_at),
        "expires_at": k.expires_at.map(rfc3339),
        "revoked_at": k.revoked_at.map(rfc3339),
        "last_used_at": last_used.map(rfc3339),
        "usage_this_month": {"requests": usage.0, "input_tokens": usage.1, "output_tokens": usage.2},
    })
}

/// This month's usage of an account's keys, by key.
async fn month_usage(app: &App, account: &str) -> Result<BTreeMap<KeyId, (u64, u64, u64)>, ApiError> {
    let now = clock::unix_now();
    let account = account.to_owned();
    let rows = blocking(app, move |s| s.account_usage(&account, None, clock::month_first_day(now), clock::day_of(now)))
        .await?;
    let mut by_key = BTreeMap::new();
    for r in rows {
        let t: &mut (u64, u64, u64) = by_key.entry(r.key).or_default();
        *t = (t.0 + r.requests, t.1 + r.input_tokens, t.2 + r.output_tokens);
    }
    Ok(by_key)
}

/// Loads a key into this instance's table straight after a write, so the change holds here at once.
async fn refresh_key(app: &App, id: KeyId) -> Result<KeyInfo, ApiError> {
    let (info, record) = blocking(app, move |s| Ok((s.key_info(id)?, s.key_record(id)?))).await?;
    if let Some(record) = record {
        app.keys.upsert(record);
    }
    info.ok_or_else(ApiError::not_found)
}

async fn create_key(app: &App, account: &str, body: RequestBody<'_>) -> ApiResult {
    let req: CreateKey = json_body(body).await?;
    let name = check_name("name", &req.name)?;
    let access = KeyAccess {
        scopes: check_scopes(req.scopes)?.unwrap_or_default(),
        providers: check_list(app, "providers", req.providers, true)?,
        models: check_list(app, "models", req.models, false)?,
    };
    let limits = req.limits.apply(KeyLimits::default())?;
    let project = req.project.map(|p| check_name("project", &p)).transpose()?;
    let now = clock::unix_now();
    let expires_at = match req.expires_in_days {
        Some(d) if !(1..=36_500).contains(&d) => return Err(ApiError::invalid("expires_in_days", "must be 1-36500")),
        Some(d) => Some(now + i64::from(d) * 86_400),
        None => None,
    };
    let account_id = account.to_owned();
    let cap_account = account_id.clone();
    let (cap, active) = blocking(app, move |s| {
        let cap = s.account(&cap_account)?.map_or(10, |a| a.key_cap);
        Ok((cap, s.active_keys(&cap_account, now)?))
    })
    .await?;
    if active >= cap as usize {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "key_cap_reached",
            format!("This account already has {active} active keys, its cap; revoke one first"),
        ));
    }
    let new =
        NewKey { kind: KeyKind::Live, name, account: account_id, limits, access, project, created_at: now, expires_at };
    created(app, new, StatusCode::CREATED, None).await
}

/// Creates `new` and answers with its secret, shown this once.
async fn created(app: &App, new: NewKey, status: StatusCode, replaces: Option<(KeyId, i64)>) -> ApiResult {
    let prefix = app.config.keys.prefix.clone();
    let hasher = KeyHasher::new(app.config.keys.hash_secret);
    let (secret, info) = blocking(app, move |s| s.create_key(&prefix, &hasher, &new)).await?;
    let info = refresh_key(app, info.id).await?;
    let mut view = key_view(app, &info, (0, 0, 0));
    view["raw_key"] = Value::String(secret.expose().to_owned());
    if let Some((old, at)) = replaces {
        view["replaces"] = json!({"id": old.as_str(), "revoked_at": rfc3339(at)});
    }
    Ok((status, view))
}

async fn list_keys(app: &App, account: &str) -> ApiResult {
    let owner = account.to_owned();
    let keys = blocking(app, move |s| s.keys_of(&owner)).await?;
    let usage = month_usage(app, account).await?;
    let data: Vec<Value> =
        keys.iter().map(|k| key_view(app, k, usage.get(&k.id).copied().unwrap_or_default())).collect();
    Ok((StatusCode::OK, json!({"object": "list", "data": data})))
}

async fn get_key(app: &App, id: KeyId) -> ApiResult {
    let info = blocking(app, move |s| s.key_info(id)).await?.ok_or_else(ApiError::not_found)?;
    let usage = month_usage(app, &info.account).await?;
    Ok((StatusCode::OK, key_view(app, &info, usage.get(&id).copied().unwrap_or_default())))
}

async fn patch_key(app: &App, id: KeyId, body: RequestBody<'_>) -> ApiResult {
    let req: PatchKey = json_body(body).await?;
    let current = blocking(app, move |s| s.key_info(id)).await?.ok_or_else(ApiError::not_found)?;
    let name = req.name.map(|n| check_name("name", &n)).transpose()?.unwrap_or(current.name.clone());
    let access = KeyAccess {
        scopes: check_scopes(req.scopes)?.unwrap_or(current.access.scopes),
        providers: match req.providers {
            None => current.access.providers.clone(),
            Some(list) => check_list(app, "providers", list, true)?,
        },
        models: match req.models {
            None => current.access.models.clone(),
            Some(list) => check_list(app, "models", list, false)?,
        },
    };
    let limits = req.limits.apply(current.limits)?;
    blocking(app, move |s| s.update_key(id, &name, limits, &access)).await?;
    let info = refresh_key(app, id).await?;
    get_key_view(app, info).await
}

async fn get_key_view(app: &App, info: KeyInfo) -> ApiResult {
    let usage = month_usage(app, &info.account).await?;
    Ok((StatusCode::OK, key_view(app, &info, usage.get(&info.id).copied().unwrap_or_default())))
}

async fn revoke_key(app: &App, id: KeyId) -> ApiResult {
    let now = clock::unix_now();
    blocking(app, move |s| s.revoke_key(id, now)).await?;
    let info = refresh_key(app, id).await?;
    get_key_view(app, info).await
}

async fn rotate_key(app: &App, id: KeyId, body: RequestBody<'_>) -> ApiResult {
    let req: Rotate = json_body(body).await?;
    let grace = req.grace_seconds.unwrap_or(0);
    if grace > 30 * 86_400 {
        return Err(ApiError::invalid("grace_seconds", "must be at most 2592000 (30 days)"));
    }
    let old = blocking(app, move |s| s.key_info(id)).await?.ok_or_else(ApiError::not_found)?;
    let now = clock::unix_now();
    if old.status_at(now) != "active" {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_active", "Only an active key can be rotated"));
    }
    // The new key first: a failure in between leaves both keys working, never neither.
    let revoke_at = now + grace as i64;
    let answer = created(app, NewKey::replacing(&old, now), StatusCode::CREATED, Some((id, revoke_at))).await?;
    blocking(app, move |s| s.revoke_key(id, revoke_at)).await?;
    refresh_key(app, id).await?;
    Ok(answer)
}

// ---------------------------------------------------------------- usage

async fn usage(app: &App, account: &str, query: &str) -> ApiResult {
    let mut key = None;
    let mut from = None;
    let mut to = None;
    let mut group_by = "day".to_owned();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "key_id" => key = Some(owned_key(app, account, value).await?),
            "from" => {
                from = Some(
                    clock::parse_date(value)
                        .ok_or_else(|| ApiError::invalid("from", "must be a date like 2026-11-01"))?,
                )
            }
            "to" => {
                to = Some(
                    clock::parse_date(value)
                        .ok_or_else(|| ApiError::invalid("to", "must be a date like 2026-11-30"))?,
                )
            }
            "group_by" if value == "day" || value == "model" => group_by = value.to_owned(),
            "group_by" => return Err(ApiError::invalid("group_by", "must be day or model")),
            other => return Err(ApiError::invalid(other, "is not a query parameter of this endpoint")),
        }
    }
    let now = clock::unix_now();
    let from = from.unwrap_or_else(|| clock::month_first_day(now));
    let to = to.unwrap_or_else(|| clock::day_of(now));
    let owner = account.to_owned();
    let rows = blocking(app, move |s| s.account_usage(&owner, key, from, to)).await?;
    let mut groups: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in rows {
        let label = if group_by == "day" { clock::date_of_day(r.day) } else { r.model };
        let t = groups.entry(label).or_default();
        *t = (t.0 + r.requests, t.1 + r.input_tokens, t.2 + r.output_tokens);
    }
    let data: Vec<Value> = groups
        .into_iter()
        .map(|(label, (requests, input, output))| {
            json!({group_by.as_str(): label, "requests": requests, "input_tokens": input, "output_tokens": output, "total_tokens": input + output})
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({"object": "usage", "from": clock::date_of_day(from), "to": clock::date_of_day(to), "group_by": group_by, "data": data}),
    ))
}

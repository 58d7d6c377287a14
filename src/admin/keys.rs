//! The key lifecycle under `/v1/auth/keys`: create, list, get, change, revoke and rotate an account's
//! keys. The control plane checks and writes; this file reads the JSON, then loads every write
//! straight into this instance's key table and answers with the key's view.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{RequestBody, json_body, present_int};
use super::key_body::KeyBody;
use super::page::Page;
use super::service::Actor;
use super::{ApiError, ApiResult, control};
use crate::app::App;
use crate::auth::keys::{KeyId, KeyKind, SecretKey};
use crate::clock::{self, rfc3339};
use crate::store::KeyInfo;

/// An account acting on its own keys. A key's own token quota may only be at most the account's plan
/// quota, and the operator's default per-key quota when one is set: an account lowers what it was
/// given, and only the operator (the CLI) grants a key more.
fn account_actor<'a>(app: &App, account: &'a str) -> Actor<'a> {
    let plan = app.plans.quota(account);
    let tokens_ceiling = app.config.limits.tokens_per_month.map_or(plan, |default| default.min(plan));
    Actor::Account { id: account, tokens_ceiling }
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
    let limits = control(app).effective_limits(&k.limits);
    let last_used = app.last_used.get(&k.id).map(|t| *t).max(k.last_used_at);
    let mut view = json!({
        "id": k.id.as_str(),
        "key_prefix": k.key_prefix,
        "kind": k.kind.name(),
        "name": k.name,
        "description": k.description,
        "metadata": k.metadata,
        "project_id": k.project,
        "status": k.status_at(now),
        "enabled": !k.policy.disabled,
        "scopes": k.access.scopes.names(),
        "providers": k.access.providers,
        "models": k.access.models,
        "limits": {
            "requests_per_minute": limits.requests_per_minute.value,
            "requests_per_day": limits.requests_per_day.value,
            "concurrent_requests": limits.concurrent_requests.value,
            "tokens_per_month": limits.tokens_per_month.value,
        },
        "ip_allowlist": k.policy.ip_allowlist.as_ref().map(|nets| nets.iter().map(ToString::to_string).collect::<Vec<_>>()),
        "allowed_origins": k.policy.allowed_origins,
        "allow_browser": k.policy.allow_browser,
        "provider_credential": k.policy.provider_credential.as_str(),
        "require_identity": k.policy.require_identity,
        "end_user_limits": k.policy.end_user_limits,
        "max_output_tokens": k.policy.max_output_tokens,
        "created_at": rfc3339(k.created_at),
        "expires_at": k.expires_at.map(rfc3339),
        "revoked_at": k.revoked_at.map(rfc3339),
        "last_used_at": last_used.map(rfc3339),
        "usage_this_month": {"requests": usage.0, "input_tokens": usage.1, "output_tokens": usage.2},
    });
    // A publishable key is not secret: its whole text is shown on every view, for browser code.
    if let Some(public) = k.public_key.as_deref().filter(|_| k.kind == KeyKind::Publishable) {
        view["key"] = Value::String(public.to_owned());
    }
    view
}

/// Loads a key into this instance's table straight after a write, so the change holds here at once.
pub(super) async fn refresh_key(app: &App, id: KeyId) -> Result<KeyInfo, ApiError> {
    let (info, record) = (app.store.key_info(id).await?, app.store.key_record(id).await?);
    if let Some(record) = record {
        app.keys.upsert(record);
    }
    info.ok_or_else(ApiError::not_found)
}

pub(super) async fn create_key(app: &App, account: &str, body: RequestBody<'_>) -> ApiResult {
    let request = json_body::<KeyBody>(body).await?.into_request(account)?;
    let now = clock::unix_now();
    let mut created = control(app).create_keys(account_actor(app, account), request, 1, now).await?;
    let (secret, info) = created.pop().ok_or_else(|| ApiError::internal("no key created"))?;
    let signing = control(app).signing_for_new(&info, now).await?;
    shown_once(app, secret, signing, info.id, None).await
}

/// Answers with a key just written, with its secret (and a publishable key's signing secret) shown this
/// once, and the key it replaces.
async fn shown_once(
    app: &App,
    secret: SecretKey,
    signing: Option<crate::auth::signing::SigningSecret>,
    id: KeyId,
    replaces: Option<(KeyId, i64)>,
) -> ApiResult {
    let info = refresh_key(app, id).await?;
    let mut view = key_view(app, &info, (0, 0, 0));
    view["raw_key"] = Value::String(secret.expose().to_owned());
    if info.kind == crate::auth::keys::KeyKind::Publishable {
        view["signing_secret"] = signing.map_or(Value::Null, |s| Value::String(s.expose().to_owned()));
    }
    if let Some((old, at)) = replaces {
        view["replaces"] = json!({"id": old.as_str(), "revoked_at": rfc3339(at)});
    }
    Ok((StatusCode::CREATED, view))
}

pub(super) async fn list_keys(app: &App, account: &str, query: &str) -> ApiResult {
    let page = Page::from_query(query)?;
    let keys = app
        .store
        .keys_page(account.to_owned(), page.after.clone(), page.limit + 1)
        .await?
        .ok_or_else(Page::unknown_cursor)?;
    let usage = control(app).month_usage(account, clock::unix_now()).await?;
    let body = page.body(
        keys,
        |k| k.id.as_str().to_owned(),
        |k| key_view(app, k, usage.get(&k.id).copied().unwrap_or_default()),
    );
    Ok((StatusCode::OK, body))
}

pub(super) async fn get_key(app: &App, id: KeyId) -> ApiResult {
    let info = control(app).key(id).await?;
    get_key_view(app, info).await
}

pub(super) async fn patch_key(app: &App, account: &str, id: KeyId, body: RequestBody<'_>) -> ApiResult {
    let change = json_body::<KeyBody>(body).await?.into_change()?;
    control(app).update_key(account_actor(app, account), id, change).await?;
    let info = refresh_key(app, id).await?;
    get_key_view(app, info).await
}

async fn get_key_view(app: &App, info: KeyInfo) -> ApiResult {
    let usage = control(app).month_usage(&info.account, clock::unix_now()).await?;
    Ok((StatusCode::OK, key_view(app, &info, usage.get(&info.id).copied().unwrap_or_default())))
}

pub(super) async fn revoke_key(app: &App, id: KeyId) -> ApiResult {
    control(app).revoke_key(id, clock::unix_now()).await?;
    let info = refresh_key(app, id).await?;
    get_key_view(app, info).await
}

pub(super) async fn rotate_key(app: &App, account: &str, id: KeyId, body: RequestBody<'_>) -> ApiResult {
    let req: Rotate = json_body(body).await?;
    let grace = req.grace_seconds.unwrap_or(0);
    let actor = account_actor(app, account);
    let now = clock::unix_now();
    let (secret, rotated) = control(app).rotate_key(actor, id, grace, now).await?;
    refresh_key(app, id).await?;
    let signing = control(app).signing_for_new(&rotated.info, now).await?;
    shown_once(app, secret, signing, rotated.info.id, Some((id, rotated.old_revoked_at))).await
}

/// A publishable key's new signing secret, shown this once; the old one stops verifying here at once
/// and on every other server within one key refresh.
pub(super) async fn rotate_signing_secret(app: &App, id: KeyId) -> ApiResult {
    let now = clock::unix_now();
    let secret = control(app).issue_signing_secret(id, now).await?;
    refresh_key(app, id).await?;
    Ok((StatusCode::OK, json!({"id": id.as_str(), "signing_secret": secret.expose(), "created_at": rfc3339(now)})))
}

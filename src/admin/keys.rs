//! The key lifecycle under `/v1/auth/keys`: create, list, get, change, revoke and rotate an account's
//! keys. Every write goes to the store, then straight into this instance's key table.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{
    RequestBody, check_list, check_name, check_scopes, json_body, nullable, nullable_int, object, present, present_int,
};
use super::page::Page;
use super::service::mint;
use super::{ApiError, ApiResult};
use crate::app::App;
use crate::auth::access::KeyAccess;
use crate::auth::keys::{KeyHasher, KeyId, KeyKind, KeyLimits, SecretKey};
use crate::clock::{self, rfc3339};
use crate::config::{CONCURRENCY_RANGE, RPD_RANGE, RPM_RANGE};
use crate::store::{HashedKey, KeyInfo, NewKey};

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
    /// Applies the given fields over `limits` (null: back to the default), checking ranges. A key's own
    /// token quota may only be at most `tokens_ceiling`: an account lowers what it was given, and only
    /// the operator (the CLI) grants a key more.
    fn apply(&self, mut limits: KeyLimits, tokens_ceiling: u64) -> Result<KeyLimits, ApiError> {
        fn set(field: &str, v: Option<Option<u32>>, range: (u32, u32), slot: &mut Option<u32>) -> Result<(), ApiError> {
            crate::auth::keys::change_limit(v.map(|n| n.map(u64::from)), range, slot)
                .map_err(|e| ApiError::invalid(field, e))
        }
        set("limits.requests_per_minute", self.requests_per_minute, RPM_RANGE, &mut limits.requests_per_minute)?;
        set("limits.requests_per_day", self.requests_per_day, RPD_RANGE, &mut limits.requests_per_day)?;
        set(
            "limits.concurrent_requests",
            self.concurrent_requests,
            CONCURRENCY_RANGE,
            &mut limits.concurrent_requests,
        )?;
        match self.tokens_per_month {
            Some(Some(t)) if t > tokens_ceiling => {
                return Err(ApiError::invalid(
                    "limits.tokens_per_month",
                    format!(
                        "{t} is above {tokens_ceiling}, what this account's plan and the default per-key quota allow"
                    ),
                ));
            }
            Some(t) => limits.tokens_per_month = t,
            None => {}
        }
        Ok(limits)
    }
}

/// The most tokens a month an account may give one of its keys: its plan's quota, and the operator's
/// default per-key quota when one is set.
fn tokens_ceiling(app: &App, account: &str) -> u64 {
    let plan = app.plans.quota(account);
    app.config.limits.tokens_per_month.map_or(plan, |default| default.min(plan))
}

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
pub(super) async fn month_usage(app: &App, account: &str) -> Result<BTreeMap<KeyId, (u64, u64, u64)>, ApiError> {
    let now = clock::unix_now();
    let rows =
        app.store.usage_report(Some(account.to_owned()), None, clock::month_first_day(now), clock::day_of(now)).await?;
    let mut by_key = BTreeMap::new();
    for r in rows {
        let t: &mut (u64, u64, u64) = by_key.entry(r.key).or_default();
        *t = (t.0.saturating_add(r.requests), t.1.saturating_add(r.input_tokens), t.2.saturating_add(r.output_tokens));
    }
    Ok(by_key)
}

/// Loads a key into this instance's table straight after a write, so the change holds here at once.
async fn refresh_key(app: &App, id: KeyId) -> Result<KeyInfo, ApiError> {
    let (info, record) = (app.store.key_info(id).await?, app.store.key_record(id).await?);
    if let Some(record) = record {
        app.keys.upsert(record);
    }
    info.ok_or_else(ApiError::not_found)
}

pub(super) async fn create_key(app: &App, account: &str, body: RequestBody<'_>) -> ApiResult {
    let req: CreateKey = json_body(body).await?;
    let name = check_name("name", &req.name)?;
    let access = KeyAccess {
        scopes: check_scopes(req.scopes)?.unwrap_or_default(),
        providers: check_list(app, "providers", req.providers, true)?,
        models: check_list(app, "models", req.models, false)?,
    };
    let limits = req.limits.apply(KeyLimits::default(), tokens_ceiling(app, account))?;
    let project = req.project.map(|p| check_name("project", &p)).transpose()?;
    let now = clock::unix_now();
    let expires_at = match req.expires_in_days {
        Some(d) if !(1..=36_500).contains(&d) => return Err(ApiError::invalid("expires_in_days", "must be 1-36500")),
        Some(d) => Some(now + i64::from(d) * 86_400),
        None => None,
    };
    let new = NewKey {
        kind: KeyKind::Live,
        name,
        account: account.to_owned(),
        limits,
        access,
        project,
        created_at: now,
        expires_at,
    };
    let hasher = KeyHasher::new(app.config.keys.hash_secret);
    let (secret, identity) = mint(&app.config.keys.prefix, &hasher, new.kind)?;
    let info = app.store.create_key_within_cap(HashedKey { identity, key: new }, now).await?;
    shown_once(app, secret, info.id, None).await
}

/// Answers with a key just written, with its secret shown this once (and the key it replaces).
async fn shown_once(app: &App, secret: SecretKey, id: KeyId, replaces: Option<(KeyId, i64)>) -> ApiResult {
    let info = refresh_key(app, id).await?;
    let mut view = key_view(app, &info, (0, 0, 0));
    view["raw_key"] = Value::String(secret.expose().to_owned());
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
    let usage = month_usage(app, account).await?;
    let body = page.body(
        keys,
        |k| k.id.as_str().to_owned(),
        |k| key_view(app, k, usage.get(&k.id).copied().unwrap_or_default()),
    );
    Ok((StatusCode::OK, body))
}

pub(super) async fn get_key(app: &App, id: KeyId) -> ApiResult {
    let info = app.store.key_info(id).await?.ok_or_else(ApiError::not_found)?;
    let usage = month_usage(app, &info.account).await?;
    Ok((StatusCode::OK, key_view(app, &info, usage.get(&id).copied().unwrap_or_default())))
}

pub(super) async fn patch_key(app: &App, id: KeyId, body: RequestBody<'_>) -> ApiResult {
    let req: PatchKey = json_body(body).await?;
    let current = app.store.key_info(id).await?.ok_or_else(ApiError::not_found)?;
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
    let limits = req.limits.apply(current.limits, tokens_ceiling(app, &current.account))?;
    app.store.update_key(id, name, limits, access).await?;
    let info = refresh_key(app, id).await?;
    get_key_view(app, info).await
}

async fn get_key_view(app: &App, info: KeyInfo) -> ApiResult {
    let usage = month_usage(app, &info.account).await?;
    Ok((StatusCode::OK, key_view(app, &info, usage.get(&info.id).copied().unwrap_or_default())))
}

pub(super) async fn revoke_key(app: &App, id: KeyId) -> ApiResult {
    let now = clock::unix_now();
    app.store.revoke_key(id, now).await?;
    let info = refresh_key(app, id).await?;
    get_key_view(app, info).await
}

pub(super) async fn rotate_key(app: &App, id: KeyId, body: RequestBody<'_>) -> ApiResult {
    let req: Rotate = json_body(body).await?;
    let grace = req.grace_seconds.unwrap_or(0);
    if grace > 30 * 86_400 {
        return Err(ApiError::invalid("grace_seconds", "must be at most 2592000 (30 days)"));
    }
    let now = clock::unix_now();
    let old = app.store.key_info(id).await?.ok_or_else(ApiError::not_found)?;
    let hasher = KeyHasher::new(app.config.keys.hash_secret);
    let (secret, identity) = mint(&app.config.keys.prefix, &hasher, old.kind)?;
    // Insert and revoke are one transaction, so the cap and the one-pending-replacement rule hold.
    let rotated = app.store.rotate_key(id, identity, now, grace, true).await?;
    refresh_key(app, id).await?;
    shown_once(app, secret, rotated.info.id, Some((id, rotated.old_revoked_at))).await
}

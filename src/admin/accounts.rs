//! Accounts, managed with the operator token: create, list, and change plan and key cap.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{RequestBody, json_body, present, present_int};
use super::page::Page;
use super::{ApiError, ApiResult, openapi};
use crate::app::App;
use crate::clock::{self, rfc3339};
use crate::store::{AccountInfo, NewAccount};

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
    #[serde(default, deserialize_with = "present")]
    disabled: Option<bool>,
}

fn account_view(a: &AccountInfo) -> Value {
    json!({"id": a.id, "email": a.email, "plan": a.plan, "key_cap": a.key_cap, "disabled": a.disabled, "created_at": rfc3339(a.created_at)})
}

/// A password: 8-256 characters.
pub(super) fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    if !(8..=256).contains(&password.chars().count()) {
        return Err(ApiError::invalid(field, "must be 8-256 characters"));
    }
    Ok(())
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

pub(super) async fn create_account(app: &App, body: RequestBody<'_>) -> ApiResult {
    let req: CreateAccount = json_body(body).await?;
    if !openapi::is_email(&req.email) {
        return Err(ApiError::invalid("email", "is not an email address"));
    }
    let email = req.email.to_ascii_lowercase();
    check_password("password", &req.password)?;
    let plan = check_plan(app, req.plan)?.unwrap_or_else(|| "default".to_owned());
    let key_cap = check_key_cap(req.key_cap)?.unwrap_or(10);
    let password = req.password;
    let hash = super::login::new_hash(app, password).await?;
    let now = clock::unix_now();
    let new = NewAccount { email, password_hash: hash, plan, key_cap, created_at: now };
    let account = app.store.create_account(new).await?;
    app.plans.set(&[(account.id.clone(), account.plan.clone())]);
    Ok((StatusCode::CREATED, account_view(&account)))
}

pub(super) async fn list_accounts(app: &App, query: &str) -> ApiResult {
    let page = Page::from_query(query)?;
    let accounts =
        app.store.accounts_page(page.after.clone(), page.limit + 1).await?.ok_or_else(Page::unknown_cursor)?;
    Ok((StatusCode::OK, page.body(accounts, |a| a.id.clone(), account_view)))
}

pub(super) async fn patch_account(app: &App, id: &str, body: RequestBody<'_>) -> ApiResult {
    let req: PatchAccount = json_body(body).await?;
    let plan = check_plan(app, req.plan)?;
    let key_cap = check_key_cap(req.key_cap)?;
    let id = id.to_owned();
    let current = app.store.account(id.clone()).await?.ok_or_else(ApiError::not_found)?;
    let updated = AccountInfo {
        plan: plan.unwrap_or(current.plan.clone()),
        key_cap: key_cap.unwrap_or(current.key_cap),
        ..current
    };
    let (plan, cap) = (updated.plan.clone(), updated.key_cap);
    app.store.update_account(id.clone(), plan, cap).await?;
    app.plans.set(&[(updated.id.clone(), updated.plan.clone())]);
    let mut updated = updated;
    if let Some(disabled) = req.disabled.filter(|d| *d != updated.disabled) {
        // Disabling ends the account's access tokens (a new epoch) and its keys here at once; other
        // instances follow at their next key refresh.
        let epoch = app.store.set_disabled(id.clone(), disabled).await?.ok_or_else(ApiError::not_found)?;
        app.keys.set_account_disabled(&id, disabled);
        updated.disabled = disabled;
        updated.token_epoch = epoch;
    }
    Ok((StatusCode::OK, account_view(&updated)))
}

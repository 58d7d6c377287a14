//! Accounts, managed with the operator token: create, list, and change plan, key cap and whether the
//! account is disabled; and the plans `proxy.toml` defines, which accounts are put on. The control plane checks and writes; this file reads the JSON and applies
//! each change to this instance's tables at once.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{RequestBody, json_body, present, present_int};
use super::page::Page;
use super::{ApiResult, control, new_hash};
use crate::app::App;
use crate::clock::{self, rfc3339};
use crate::store::AccountInfo;

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

pub(super) async fn create_account(app: &App, body: RequestBody<'_>) -> ApiResult {
    let req: CreateAccount = json_body(body).await?;
    let draft = control(app).check_account(&req.email, &req.password, req.plan, req.key_cap)?;
    let hash = new_hash(app, req.password).await?;
    let account = control(app).create_account(draft, hash, clock::unix_now()).await?;
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
    let updated = control(app).update_account(id, req.plan, req.key_cap, req.disabled).await?;
    app.plans.set(&[(updated.id.clone(), updated.plan.clone())]);
    if req.disabled.is_some() {
        // Disabling ends the account's access tokens (a new epoch) and its keys here at once; other
        // instances follow at their next key refresh.
        app.keys.set_account_disabled(id, updated.disabled);
    }
    Ok((StatusCode::OK, account_view(&updated)))
}

/// The plans of `proxy.toml` (`[plans.<name>]`), by name, with their monthly token quotas.
pub(super) fn list_plans(app: &App) -> ApiResult {
    let data: Vec<Value> = app
        .config
        .plans
        .iter()
        .map(|(name, tokens)| json!({"object": "plan", "name": name, "tokens_per_month": tokens}))
        .collect();
    Ok((StatusCode::OK, json!({"object": "list", "data": data})))
}

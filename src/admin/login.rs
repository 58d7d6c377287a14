//! Access tokens for accounts: logging in with an email and password, logging out, and changing the
//! password. Logging out, a new password and the operator disabling an account each bump the account's
//! token epoch, which ends every access token issued before.

use std::net::IpAddr;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{RequestBody, json_body};
use super::service::check_password;
use super::{ApiError, ApiResult, new_hash};
use crate::app::App;
use crate::auth::throttle::Throttled;
use crate::clock::{self, rfc3339};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    old_password: String,
    new_password: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "Invalid email or password")
}

impl From<Throttled> for ApiError {
    fn from(t: Throttled) -> ApiError {
        let Throttled::RetryAfter(wait) = t;
        // Whole seconds, rounded up: a client that waits what it is told is not refused again.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(seconds.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Too many password attempts; retry later",
            )
        }
    }
}

/// A fresh access token for `account` in token epoch `epoch`, as login answers it.
fn token_answer(app: &App, account: &str, epoch: u64) -> Value {
    let ttl = app.credentials.token_ttl.as_secs() as i64;
    let expires_at = clock::unix_now().saturating_add(ttl);
    let token = app.credentials.issue(account, epoch, expires_at);
    json!({"access_token": token, "token_type": "bearer", "expires_in": ttl, "expires_at": rfc3339(expires_at), "account_id": account})
}

pub(super) async fn login(app: &App, client: Option<IpAddr>, body: RequestBody<'_>) -> ApiResult {
    let req: Login = json_body(body).await?;
    let email = req.email.to_ascii_lowercase();
    let found = app.store.account_for_login(email.clone()).await?;
    let (account, hash) = found.map_or((None, None), |(a, h)| (Some(a), Some(h)));
    let ok = app.logins.check(client, &email, req.password, hash).await?;
    let account = account.filter(|_| ok).ok_or_else(invalid_credentials)?;
    // Only after the password: a wrong one learns nothing about the account.
    if account.disabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "account_disabled", "This account is disabled"));
    }
    Ok((StatusCode::OK, token_answer(app, &account.id, account.token_epoch)))
}

/// Ends every access token of the account, this one included.
pub(super) async fn logout(app: &App, account: &str) -> ApiResult {
    app.store.end_tokens(account.to_owned()).await?.ok_or_else(ApiError::unauthorized)?;
    Ok((StatusCode::OK, json!({"account_id": account, "logged_out": true})))
}

/// Replaces the password (the old one is required), ends every earlier access token, and answers with
/// a new one so the caller stays signed in.
pub(super) async fn change_password(
    app: &App,
    client: Option<IpAddr>,
    account: &str,
    body: RequestBody<'_>,
) -> ApiResult {
    let req: ChangePassword = json_body(body).await?;
    check_password("new_password", &req.new_password)?;
    let stored = app.store.password_hash(account.to_owned()).await?;
    if !app.logins.check(client, account, req.old_password, stored).await? {
        return Err(ApiError {
            field: Some("old_password".to_owned()),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "The old password is not right")
        });
    }
    let hash = new_hash(app, req.new_password).await?;
    let epoch = app.store.set_password(account.to_owned(), hash).await?.ok_or_else(ApiError::unauthorized)?;
    Ok((StatusCode::OK, token_answer(app, account, epoch)))
}

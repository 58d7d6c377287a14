//! Access tokens for accounts: logging in with an email and password, logging out, and changing the
//! password. Logging out, a new password and the operator disabling an account each bump the account's
//! token epoch, which ends every access token issued before.

use http::StatusCode;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::json_body;
use super::{ApiError, ApiResult, blocking};
use crate::clock::{self, rfc3339};
use crate::pipeline::App;

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

/// Whether `password` matches `stored` (a PHC string); with no hash, the same work is done for nothing,
/// so timing does not reveal whether an account exists.
async fn verify(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || match stored {
        Some(hash) => crate::passwords::verify(&password, &hash),
        None => {
            crate::passwords::verify_nothing(&password);
            false
        }
    })
    .await
    .map_err(ApiError::internal)
}

/// A fresh access token for `account` in token epoch `epoch`, as login answers it.
fn token_answer(app: &App, account: &str, epoch: u64) -> Value {
    let ttl = app.credentials.token_ttl.as_secs() as i64;
    let expires_at = clock::unix_now().saturating_add(ttl);
    let token = app.credentials.issue(account, epoch, expires_at);
    json!({"access_token": token, "token_type": "bearer", "expires_in": ttl, "expires_at": rfc3339(expires_at), "account_id": account})
}

pub(super) async fn login(app: &App, body: Incoming) -> ApiResult {
    let req: Login = json_body(body).await?;
    let email = req.email.to_ascii_lowercase();
    let found = blocking(app, move |s| s.account_for_login(&email)).await?;
    let (account, hash) = found.map_or((None, None), |(a, h)| (Some(a), Some(h)));
    let ok = verify(req.password, hash).await?;
    let account = account.filter(|_| ok).ok_or_else(invalid_credentials)?;
    // Only after the password: a wrong one learns nothing about the account.
    if account.disabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "account_disabled", "This account is disabled"));
    }
    Ok((StatusCode::OK, token_answer(app, &account.id, account.token_epoch)))
}

/// Ends every access token of the account, this one included.
pub(super) async fn logout(app: &App, account: &str) -> ApiResult {
    let id = account.to_owned();
    blocking(app, move |s| s.end_tokens(&id)).await?.ok_or_else(ApiError::unauthorized)?;
    Ok((StatusCode::OK, json!({"account_id": account, "logged_out": true})))
}

/// Replaces the password (the old one is required), ends every earlier access token, and answers with
/// a new one so the caller stays signed in.
pub(super) async fn change_password(app: &App, account: &str, body: Incoming) -> ApiResult {
    let req: ChangePassword = json_body(body).await?;
    super::accounts::check_password("new_password", &req.new_password)?;
    let id = account.to_owned();
    let stored = blocking(app, move |s| s.password_hash(&id)).await?;
    if !verify(req.old_password, stored).await? {
        return Err(ApiError {
            field: Some("old_password".to_owned()),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "The old password is not right")
        });
    }
    let password = req.new_password;
    let hash = tokio::task::spawn_blocking(move || crate::passwords::hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let id = account.to_owned();
    let epoch = blocking(app, move |s| s.set_password(&id, &hash)).await?.ok_or_else(ApiError::unauthorized)?;
    Ok((StatusCode::OK, token_answer(app, account, epoch)))
}

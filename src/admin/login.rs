//! Logging in: an email and password for a signed access token.

use http::StatusCode;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

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

pub(super) async fn login(app: &App, body: Incoming) -> ApiResult {
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

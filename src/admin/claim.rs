//! `POST /v1/auth/keys/claim`: an account takes a trial key it holds (`{"trial_key": "tg_trial_…"}`).
//! 200 with the key's view; 400 for text that is not a trial key, 404 (naming `trial_key`) for an unknown,
//! revoked or expired one, 409 when it was claimed already or the account's key cap is reached.

use http::StatusCode;
use serde::Deserialize;

use super::body::{RequestBody, json_body};
use super::service::ServiceError;
use super::{ApiError, ApiResult, control, keys};
use crate::app::App;
use crate::clock;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    trial_key: String,
}

pub(super) async fn claim(app: &App, account: &str, body: RequestBody<'_>) -> ApiResult {
    let request: ClaimBody = json_body(body).await?;
    // Usage still waiting for the flush is written first, so the move takes all of it along.
    if let Err(e) = crate::app::flush::flush_usage(&app.usage, &app.unflushed, &*app.store).await {
        tracing::warn!(error = %e, "usage flush before a claim failed; the next flush writes it");
    }
    let info =
        control(app).claim_trial_key(account, &request.trial_key, clock::unix_now()).await.map_err(|e| match e {
            // Named, so a form can show it beside the key it was given.
            ServiceError::NotFound(what) if what == "trial key" => ApiError {
                field: Some("trial_key".to_owned()),
                ..ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such trial key: unknown, revoked or expired")
            },
            other => ApiError::from(other),
        })?;
    app.trials.forget_key(info.id);
    keys::refresh_key(app, info.id).await?;
    let (_, view) = keys::get_key(app, info.id).await?;
    Ok((StatusCode::OK, view))
}

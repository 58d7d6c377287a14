//! `POST /v1/auth/keys/claim`: an account takes a trial key it holds (`{"trial_key": "tg_trial_…"}`).
//! 200 with the key's view; 400 for text that is not a trial key, 404 for an unknown, revoked or expired
//! one, 409 when it was claimed already or the account's key cap is reached.

use http::StatusCode;
use serde::Deserialize;

use super::body::{RequestBody, json_body};
use super::{ApiResult, control, keys};
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
    let info = control(app).claim_trial_key(account, &request.trial_key, clock::unix_now()).await?;
    app.trials.forget_key(info.id);
    keys::refresh_key(app, info.id).await?;
    let (_, view) = keys::get_key(app, info.id).await?;
    Ok((StatusCode::OK, view))
}

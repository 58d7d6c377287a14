//! Projects under `/v1/projects`: create, list, get, rename or re-cap, delete an account's projects.
//! The control plane checks and writes; this file reads the JSON and shapes the answer.

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{RequestBody, json_body, present, present_int};
use super::{ApiResult, control};
use crate::app::App;
use crate::clock::{self, rfc3339};
use crate::store::ProjectInfo;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectBody {
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present_int")]
    key_cap: Option<u32>,
}

fn view(p: &ProjectInfo) -> Value {
    json!({
        "id": p.id,
        "object": "project",
        "name": p.name,
        "key_cap": p.key_cap,
        "active_keys": p.active_keys,
        "created_at": rfc3339(p.created_at),
    })
}

pub(super) async fn create_project(app: &App, account: &str, body: RequestBody<'_>) -> ApiResult {
    let req: ProjectBody = json_body(body).await?;
    let name = req.name.ok_or_else(|| super::ApiError::invalid("name", "missing field `name`"))?;
    let project = control(app).create_project(account, &name, req.key_cap, clock::unix_now()).await?;
    Ok((StatusCode::CREATED, view(&project)))
}

pub(super) async fn list_projects(app: &App, account: &str) -> ApiResult {
    let projects = control(app).projects(account, clock::unix_now()).await?;
    let data: Vec<Value> = projects.iter().map(view).collect();
    Ok((StatusCode::OK, json!({"object": "list", "data": data})))
}

pub(super) async fn get_project(app: &App, account: &str, id: &str) -> ApiResult {
    let project = control(app).project(account, id, clock::unix_now()).await?;
    Ok((StatusCode::OK, view(&project)))
}

pub(super) async fn patch_project(app: &App, account: &str, id: &str, body: RequestBody<'_>) -> ApiResult {
    let req: ProjectBody = json_body(body).await?;
    let project = control(app).update_project(account, id, req.name, req.key_cap, clock::unix_now()).await?;
    Ok((StatusCode::OK, view(&project)))
}

pub(super) async fn delete_project(app: &App, account: &str, id: &str) -> ApiResult {
    control(app).delete_project(account, id, clock::unix_now()).await?;
    Ok((StatusCode::OK, json!({"id": id, "object": "project", "deleted": true})))
}

//! Usage of an account's keys under `/v1/usage`, by day, model, key or project, optionally of one key or
//! one project.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, control, owned_key};
use crate::app::App;
use crate::clock;

/// What a report may be grouped by.
const GROUPS: [&str; 4] = ["day", "model", "key", "project"];

pub(super) async fn usage(app: &App, account: &str, query: &str) -> ApiResult {
    if query.split('&').any(|pair| pair == "group_by=end_user") {
        return super::end_user_usage::usage_by_end_user(app, account, query).await;
    }
    let mut key = None;
    let mut project = None;
    let mut from = None;
    let mut to = None;
    let mut group_by = "day".to_owned();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "key_id" => key = Some(owned_key(app, account, value).await?),
            "project_id" => {
                project = Some(control(app).project(account, value, clock::unix_now()).await?.id);
            }
            "from" => {
                from = Some(
                    clock::parse_date(value)
                        .ok_or_else(|| ApiError::invalid("from", "must be a date like 2026-11-01"))?,
                )
            }
            "to" => {
                to = Some(
                    clock::parse_date(value)
                        .ok_or_else(|| ApiError::invalid("to", "must be a date like 2026-11-30"))?,
                )
            }
            "group_by" if GROUPS.contains(&value) => group_by = value.to_owned(),
            "group_by" => return Err(ApiError::invalid("group_by", "must be one of day, model, key, project")),
            other => return Err(ApiError::invalid(other, "is not a query parameter of this endpoint")),
        }
    }
    let report = control(app).usage(Some(account), key, from, to, clock::unix_now()).await?;
    let (from, to, rows) = (report.from, report.to, report.rows);
    let mut groups: BTreeMap<Option<String>, (u64, u64, u64)> = BTreeMap::new();
    for r in rows.into_iter().filter(|r| project.is_none() || r.project == project) {
        let label = match group_by.as_str() {
            "day" => Some(clock::date_of_day(r.day)),
            "model" => Some(r.model),
            "key" => Some(r.key_prefix),
            _ => r.project,
        };
        let t = groups.entry(label).or_default();
        *t = (t.0.saturating_add(r.requests), t.1.saturating_add(r.input_tokens), t.2.saturating_add(r.output_tokens));
    }
    let data: Vec<Value> = groups
        .into_iter()
        .map(|(label, (requests, input, output))| {
            json!({group_by.as_str(): label, "requests": requests, "input_tokens": input, "output_tokens": output, "total_tokens": input.saturating_add(output)})
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({"object": "usage", "from": clock::date_of_day(from), "to": clock::date_of_day(to), "group_by": group_by, "data": data}),
    ))
}

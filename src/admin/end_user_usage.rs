//! `GET /v1/usage?group_by=end_user`: an account's usage per end user (identity tokens, `X-Tollgate-End-User`),
//! over its keys, one `key_id` or the keys of one `project_id`, between `from` and `to` (default: this month so far).

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, control, owned_key};
use crate::app::App;
use crate::clock;

pub(super) async fn usage_by_end_user(app: &App, account: &str, query: &str) -> ApiResult {
    let (mut key, mut project, mut from, mut to) = (None, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let date = |field: &str, example: &str| {
            clock::parse_date(value).ok_or_else(|| ApiError::invalid(field, format!("must be a date like {example}")))
        };
        match name {
            "key_id" => key = Some(owned_key(app, account, value).await?),
            "project_id" => project = Some(control(app).project(account, value, clock::unix_now()).await?.id),
            "from" => from = Some(date("from", "2026-11-01")?),
            "to" => to = Some(date("to", "2026-11-30")?),
            "group_by" => {}
            other => return Err(ApiError::invalid(other, "is not a query parameter of a report by end user")),
        }
    }
    let (from, to, rows) = control(app).end_user_usage(Some(account), key, from, to, clock::unix_now()).await?;
    let mut groups: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in rows.into_iter().filter(|r| project.is_none() || r.project == project) {
        let t = groups.entry(r.end_user).or_default();
        *t = (t.0.saturating_add(r.requests), t.1.saturating_add(r.input_tokens), t.2.saturating_add(r.output_tokens));
    }
    let data: Vec<Value> = groups
        .into_iter()
        .map(|(end_user, (requests, input, output))| {
            json!({"end_user": end_user, "requests": requests, "input_tokens": input, "output_tokens": output, "total_tokens": input.saturating_add(output)})
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({"object": "usage", "from": clock::date_of_day(from), "to": clock::date_of_day(to), "group_by": "end_user", "data": data}),
    ))
}

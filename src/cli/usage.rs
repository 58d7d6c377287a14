//! `tollgate usage`: tokens and requests per key, day and model, with a total per key; or, with
//! `--by end-user`, per key, end user and day.

use std::process::ExitCode;

use tollgate::clock::{self, unix_now};
use tollgate::config::Config;

use super::{CliResult, control_plane, key_id, printable, refused};

/// `tollgate usage`'s flags.
#[derive(clap::Args)]
pub struct UsageArgs {
    /// Only this key (id or key prefix)
    #[arg(long)]
    key: Option<String>,
    /// Only the keys of this project (its id)
    #[arg(long)]
    project: Option<String>,
    /// First day, YYYY-MM-DD (UTC)
    #[arg(long)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD (UTC)
    #[arg(long)]
    to: Option<String>,
    /// Rows per key, day and model (the default), or per key, end user and day
    #[arg(long, default_value = "model", value_parser = ["model", "end-user"])]
    by: String,
}

pub async fn run(config: &Config, args: UsageArgs) -> CliResult {
    let (key, from, to) = (args.key.as_deref(), args.from.as_deref(), args.to.as_deref());
    let by_end_user = args.by == "end-user";
    let in_project = |p: &Option<String>| args.project.is_none() || *p == args.project;
    let control = control_plane(config).await?;
    let day = |flag: &str, text: Option<&str>| match text {
        None => Ok(None),
        Some(t) => {
            clock::parse_date(t).map(Some).ok_or_else(|| format!("--{flag} {t:?} is not a date like 2026-11-23"))
        }
    };
    let (from, to) = (day("from", from)?, day("to", to)?);
    let key = key.map(key_id).transpose()?;
    if by_end_user {
        let (_, _, mut rows) = control.end_user_usage(None, key, from, to, unix_now()).await.map_err(refused)?;
        rows.retain(|r| in_project(&r.project));
        println!(
            "{:<28}  {:<32}  {:<10}  {:>9}  {:>12}  {:>12}  {:>12}",
            "KEY", "END_USER", "DAY", "REQUESTS", "INPUT", "OUTPUT", "TOTAL"
        );
        for r in &rows {
            println!(
                "{:<28}  {:<32}  {:<10}  {:>9}  {:>12}  {:>12}  {:>12}",
                r.key_prefix,
                printable(&r.end_user),
                clock::date_of_day(r.day),
                r.requests,
                r.input_tokens,
                r.output_tokens,
                r.input_tokens.saturating_add(r.output_tokens)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = control.usage(None, key, from, to, unix_now()).await.map_err(refused)?;
    report.rows.retain(|r| in_project(&r.project));
    println!(
        "{:<28}  {:<10}  {:<32}  {:>9}  {:>12}  {:>12}  {:>12}",
        "KEY", "DAY", "MODEL", "REQUESTS", "INPUT", "OUTPUT", "TOTAL"
    );
    let mut totals: Vec<(String, u64, u64, u64)> = Vec::new();
    for r in &report.rows {
        println!(
            "{:<28}  {:<10}  {:<32}  {:>9}  {:>12}  {:>12}  {:>12}",
            r.key_prefix,
            clock::date_of_day(r.day),
            printable(&r.model),
            r.requests,
            r.input_tokens,
            r.output_tokens,
            r.input_tokens.saturating_add(r.output_tokens)
        );
        match totals.last_mut() {
            Some(t) if t.0 == r.key_prefix => {
                t.1 = t.1.saturating_add(r.requests);
                t.2 = t.2.saturating_add(r.input_tokens);
                t.3 = t.3.saturating_add(r.output_tokens);
            }
            _ => totals.push((r.key_prefix.clone(), r.requests, r.input_tokens, r.output_tokens)),
        }
    }
    for (prefix, requests, input, output) in totals {
        println!(
            "{:<28}  {:<10}  {:<32}  {:>9}  {:>12}  {:>12}  {:>12}",
            prefix,
            "total",
            "",
            requests,
            input,
            output,
            input.saturating_add(output)
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! The operator's commands against the configured store: keys, accounts, projects and usage. Each parses its
//! flags, asks the control plane (the same checks as the management API, as the operator) and prints.
//! Secrets go to standard output, once; everything else to standard error or as a table.

pub mod accounts;
mod key_args;
pub mod keys;
pub mod projects;
pub mod store;
pub mod usage;

use std::process::ExitCode;

use tollgate::admin::service::{ControlPlane, ServiceError};
use tollgate::config::Config;

pub type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// Runs one command: a small current-thread runtime drives the same async store the server uses.
pub fn block_on(command: impl std::future::Future<Output = CliResult>) -> CliResult {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(command)
}

/// The control plane over the configured store.
async fn control_plane(config: &Config) -> Result<ControlPlane<'_>, Box<dyn std::error::Error>> {
    let store = tollgate::store::open(&config.store).await?;
    Ok(ControlPlane::new(store, config))
}

/// A refusal as the operator reads it: the field named by its flag.
fn refused(e: ServiceError) -> Box<dyn std::error::Error> {
    match e {
        ServiceError::Invalid { field, message } => format!("{} {message}", flag(&field)).into(),
        other => other.to_string().into(),
    }
}

/// The flag (or input) that sets a field the control plane names as the management API does.
fn flag(field: &str) -> &str {
    match field {
        "name" => "--name",
        "email" => "--email",
        "plan" => "plan",
        "key_cap" => "--key-cap",
        "password" => "the password (first line of standard input)",
        "expires_in_days" => "--expires-in",
        "grace_seconds" => "--grace-seconds",
        "trial_key" => "TRIAL_KEY",
        "limits.requests_per_minute" => "--rpm",
        "limits.requests_per_day" => "--daily",
        "limits.concurrent_requests" => "--concurrency",
        "limits.tokens_per_month" => "--tokens-per-month",
        other => other,
    }
}

/// Text from the store as a terminal shows it safely: control and bidirectional-override characters
/// escaped (`\u{1b}`), so a stored name can neither move the cursor nor forge a row.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A key id from the bare id or the whole key prefix (`tg_live_<id>`).
fn key_id(text: &str) -> Result<tollgate::auth::keys::KeyId, String> {
    tollgate::admin::service::parse_key_id(text).ok_or_else(|| format!("{text:?} is not a key id"))
}

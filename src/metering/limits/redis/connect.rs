//! Reaching Redis: the connection (plain or TLS through rustls, with `counters.ca_file`), whether a
//! failure may pass (Redis not answering yet) or must stop the start (Redis refusing us), the check
//! `tollgate check-config` runs, and the clock the scripts read.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ConnectError, Now};
use crate::config::counters::{CountersConfig, redact_url};

/// The offset from the clock's monotonic nanoseconds to the wall clock in nanoseconds: the system
/// clock's own reading when `now` agrees with it to the second, else `now.unix` (a test's manual clock).
pub fn wall_offset(now: Now) -> i128 {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
    let wall = if (wall / 1_000_000_000 - i128::from(now.unix)).abs() <= 1 {
        wall
    } else {
        i128::from(now.unix) * 1_000_000_000
    };
    wall - i128::from(now.mono_ns)
}

/// Why [`open`] failed: Redis did not answer (it may later), or the configuration is wrong.
pub(super) enum OpenError {
    Unreachable(String),
    Refused(String),
}

impl OpenError {
    pub(super) fn text(self) -> String {
        match self {
            OpenError::Unreachable(text) | OpenError::Refused(text) => text,
        }
    }
}

pub(super) async fn open(config: &CountersConfig, url: &str) -> Result<ConnectionManager, OpenError> {
    let refused = |text: String| OpenError::Refused(text);
    let client = match &config.ca_file {
        Some(path) => {
            let root = std::fs::read(path).map_err(|e| refused(format!("counters.ca_file: {e}")))?;
            let certs = ::redis::TlsCertificates { client_tls: None, root_cert: Some(root) };
            ::redis::Client::build_with_tls(url, certs)
        }
        None => ::redis::Client::open(url),
    }
    .map_err(|e| refused(format!("counters.url ({}): {e}", redact_url(url))))?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(config.timeout.max(Duration::from_millis(500)))
        // The calls keep their own time (`Shared::call`): the crate only bounds the longest wait.
        .set_response_timeout(config.timeout.saturating_mul(super::SLOW_CALL_LIMIT))
        // No retries of its own (each waits a second or more): the breaker's probes are the retries.
        .set_number_of_retries(0)
        .set_max_delay(1_000);
    let connect = ConnectionManager::new_with_config(client, manager);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) if e.is_connection_refusal() || e.is_timeout() => {
            Err(OpenError::Unreachable(format!("counters.url ({}): {e}", redact_url(url))))
        }
        Ok(Err(e)) => Err(refused(format!("counters.url ({}): {e}", redact_url(url)))),
        Err(_) => Err(OpenError::Unreachable(format!("counters.url ({}): no connection within 5s", redact_url(url)))),
    }
}

/// Connects to `config.url` as the server would and says what answered (for `tollgate check-config`).
pub async fn check(config: &CountersConfig) -> Result<String, ConnectError> {
    let url = config.url.as_deref().ok_or_else(|| ConnectError("counters.url: not set".into()))?;
    let mut conn = open(config, url).await.map_err(|e| ConnectError(e.text()))?;
    let info: String = ::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .map_err(|e| ConnectError(format!("counters.url ({}): {e}", redact_url(url))))?;
    let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("unknown version");
    Ok(format!("{} answered: Redis {}", redact_url(url), version.trim()))
}

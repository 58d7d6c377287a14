//! `[counters]`: where the limits' counters live (docs/ARCHITECTURE.md, The seams, Counters): this process's
//! memory (the default) or a Redis shared by every instance, with what to do when that Redis cannot answer.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::parse_duration;
use super::{ConfigError, invalid};

/// The environment variable that overrides `counters.url` (it may carry a password).
pub const ENV_REDIS_URL: &str = "TOLLGATE_REDIS_URL";

/// `[counters]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCounters {
    backend: Option<String>,
    url: Option<String>,
    timeout: Option<String>,
    instances: Option<u32>,
    on_unavailable: Option<String>,
    prefix: Option<String>,
    ca_file: Option<PathBuf>,
    breaker_failures: Option<u32>,
    breaker_cooldown: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountersBackend {
    Memory,
    Redis,
}

/// What token quotas do while Redis cannot answer (request-rate limits always fall back to local ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Refuse requests that need a token reservation (503 with `Retry-After`).
    FailClosed,
    /// Reserve against this instance's own counters, each quota divided by `instances`.
    Local,
}

#[derive(Clone)]
pub struct CountersConfig {
    pub backend: CountersBackend,
    /// `redis://` or `rediss://` (TLS through rustls); may hold a password, so never printed whole.
    pub url: Option<String>,
    /// The most one Redis call may take before it counts as a failure.
    pub timeout: Duration,
    /// How many instances share the Redis: each one's local fallback limits are the key's divided by it.
    pub instances: u32,
    pub on_unavailable: OnUnavailable,
    /// Every Redis key starts with this (several deployments, or tests, can share one Redis).
    pub prefix: String,
    /// Roots to trust for `rediss://` instead of the bundled web PKI roots (PEM).
    pub ca_file: Option<PathBuf>,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker refuses every call before one call may try again.
    pub breaker_cooldown: Duration,
}

impl Default for CountersConfig {
    fn default() -> CountersConfig {
        CountersConfig {
            backend: CountersBackend::Memory,
            url: None,
            timeout: Duration::from_millis(50),
            instances: 1,
            on_unavailable: OnUnavailable::FailClosed,
            prefix: "tollgate".into(),
            ca_file: None,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
        }
    }
}

impl std::fmt::Debug for CountersConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountersConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("timeout", &self.timeout)
            .field("instances", &self.instances)
            .field("on_unavailable", &self.on_unavailable)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .finish()
    }
}

/// The URL with any user and password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "[unparsable url]".into();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://[redacted]@{host}"),
        None => format!("{scheme}://{rest}"),
    }
}

fn duration(field: &str, v: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = v else { return Ok(default) };
    let d = parse_duration(text)
        .ok_or_else(|| invalid(field, format!("`{text}` is not a duration like 50ms, 1s or 1m")))?;
    if d.is_zero() || d > Duration::from_secs(60) {
        return Err(invalid(field, format!("`{text}` must be more than 0 and at most 60s")));
    }
    Ok(d)
}

/// [`ENV_REDIS_URL`], when set, replaces `url`.
pub(super) fn apply_env(raw: &mut RawCounters, env: &impl Fn(&str) -> Option<String>) {
    if let Some(url) = env(ENV_REDIS_URL) {
        raw.url = Some(url);
    }
}

/// Validates `[counters]` (after [`apply_env`]).
pub(super) fn counters(raw: RawCounters) -> Result<CountersConfig, ConfigError> {
    let d = CountersConfig::default();
    let backend = match raw.backend.as_deref() {
        None | Some("memory") => CountersBackend::Memory,
        Some("redis") => CountersBackend::Redis,
        Some(other) => return Err(invalid("counters.backend", format!("`{other}` is not \"memory\" or \"redis\""))),
    };
    let url = raw.url;
    if let Some(url) = &url
        && !(url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        return Err(invalid("counters.url", format!("`{}` must start with redis:// or rediss://", redact_url(url))));
    }
    if backend == CountersBackend::Redis && url.is_none() {
        return Err(invalid("counters.url", format!("is required with backend = \"redis\" (or set {ENV_REDIS_URL})")));
    }
    let on_unavailable = match raw.on_unavailable.as_deref() {
        None | Some("fail_closed") => OnUnavailable::FailClosed,
        Some("local") => OnUnavailable::Local,
        Some(other) => {
            return Err(invalid("counters.on_unavailable", format!("`{other}` is not \"fail_closed\" or \"local\"")));
        }
    };
    let instances = raw.instances.unwrap_or(d.instances);
    if !(1..=1000).contains(&instances) {
        return Err(invalid("counters.instances", format!("{instances} is outside 1..=1000")));
    }
    let prefix = raw.prefix.unwrap_or(d.prefix);
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
    {
        return Err(invalid("counters.prefix", "must be 1-64 characters of letters, digits, _ - . :"));
    }
    let breaker_failures = raw.breaker_failures.unwrap_or(d.breaker_failures);
    if !(1..=1000).contains(&breaker_failures) {
        return Err(invalid("counters.breaker_failures", format!("{breaker_failures} is outside 1..=1000")));
    }
    if let Some(path) = &raw.ca_file
        && !path.is_file()
    {
        return Err(invalid("counters.ca_file", format!("{} is not a readable file", path.display())));
    }
    Ok(CountersConfig {
        backend,
        url,
        timeout: duration("counters.timeout", raw.timeout.as_deref(), d.timeout)?,
        instances,
        on_unavailable,
        prefix,
        ca_file: raw.ca_file,
        breaker_failures,
        breaker_cooldown: duration("counters.breaker_cooldown", raw.breaker_cooldown.as_deref(), d.breaker_cooldown)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<CountersConfig, ConfigError> {
        let mut raw: RawCounters = toml::from_str(text).unwrap();
        apply_env(&mut raw, &|name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
        counters(raw)
    }

    #[test]
    fn redis_needs_a_url_and_errors_name_their_field() {
        assert_eq!(parse("", &[]).unwrap().backend, CountersBackend::Memory);
        let e = parse("backend = \"redis\"", &[]).unwrap_err().0;
        assert!(e.starts_with("counters.url:"), "{e}");
        let e = parse("backend = \"etcd\"", &[]).unwrap_err().0;
        assert!(e.starts_with("counters.backend:"), "{e}");
        let e = parse("backend = \"redis\"\nurl = \"http://x\"", &[]).unwrap_err().0;
        assert!(e.starts_with("counters.url:"), "{e}");
        let e = parse("on_unavailable = \"open\"", &[]).unwrap_err().0;
        assert!(e.starts_with("counters.on_unavailable:"), "{e}");
        let e = parse("timeout = \"0ms\"", &[]).unwrap_err().0;
        assert!(e.starts_with("counters.timeout:"), "{e}");
        let e = parse("instances = 0", &[]).unwrap_err().0;
        assert!(e.starts_with("counters.instances:"), "{e}");
        let e = parse("prefix = \"a{b}\"", &[]).unwrap_err().0;
        assert!(e.starts_with("counters.prefix:"), "{e}");
        let c = parse(
            "backend = \"redis\"\nurl = \"redis://file\"\ntimeout = \"20ms\"\ninstances = 3\non_unavailable = \"local\"",
            &[(ENV_REDIS_URL, "rediss://u:pw@h:6380")],
        )
        .unwrap();
        assert_eq!(c.url.as_deref(), Some("rediss://u:pw@h:6380"), "the environment wins");
        assert_eq!((c.timeout, c.instances, c.on_unavailable), (Duration::from_millis(20), 3, OnUnavailable::Local));
    }

    /// canary: the password of the Redis URL appears in no Debug output or error.
    #[test]
    fn the_redis_password_is_never_printed() {
        let c = parse("backend = \"redis\"", &[(ENV_REDIS_URL, "redis://user:canary-pw-123@h:6379/0")]).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("canary-pw-123") && debug.contains("redis://[redacted]@h:6379/0"), "{debug}");
        let e = parse("", &[(ENV_REDIS_URL, "http://user:canary-pw-123@h")]).unwrap_err().0;
        assert!(!e.contains("canary-pw-123"), "{e}");
    }
}

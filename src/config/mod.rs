//! Configuration: `proxy.toml` parsed into raw serde structs that refuse unknown fields, then validated
//! into [`Config`], whose values are known good. Environment variables override the file; secrets come
//! only from the environment. Every error names the field (or variable) it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod counters;
mod raw;
mod store;
mod trial;
mod validate;
mod values;

pub use crate::providers::{ExtraRoots, GeminiAuth, ProviderConfig, ProviderKind};
use raw::{RawConfig, apply_env, toml_error};
pub use store::{DatabaseUrl, OnStale, PostgresConfig, SCHEMA_NAME_RULE, StoreBackend, StoreConfig, schema_name_ok};
pub use trial::TrialConfig;
use validate::validate;
pub use values::parse_duration;

/// Environment variables that override fields of the file.
const ENV_LISTEN: &str = "TOLLGATE_LISTEN";
const ENV_STORE: &str = "TOLLGATE_STORE";
/// Overrides `store.url`; the URL may hold a password, so it is never printed.
const ENV_DATABASE_URL: &str = "TOLLGATE_DATABASE_URL";
const ENV_LOG: &str = "TOLLGATE_LOG";
const ENV_LOG_FORMAT: &str = "TOLLGATE_LOG_FORMAT";
/// Secret used to key the blake3 hashes of service keys. Never read from the file.
pub const ENV_KEY_HASH_SECRET: &str = "TOLLGATE_KEY_HASH_SECRET";
/// 32 bytes (64 hex digits, or base64) sealing publishable keys' signing secrets in the store.
pub const ENV_SIGNING_KEY: &str = "TOLLGATE_SIGNING_KEY";
/// The operator token of the management API. Never read from the file.
pub const ENV_ADMIN_TOKEN: &str = "TOLLGATE_ADMIN_TOKEN";
/// Signs account access tokens; without it they last only as long as the process.
pub const ENV_SESSION_SECRET: &str = "TOLLGATE_SESSION_SECRET";
/// The bearer token `/metrics` asks for on the main listener (`metrics.on_main_listener`).
pub const ENV_METRICS_TOKEN: &str = "TOLLGATE_METRICS_TOKEN";
/// Keys the device hash of trial keys when [`ENV_KEY_HASH_SECRET`] is not set. Never read from the file.
pub const ENV_TRIAL_SECRET: &str = "TOLLGATE_TRIAL_SECRET";

/// First path segments that a named provider may not take, because top-level routes use them.
const RESERVED_PROVIDER_NAMES: &[&str] = &["v1", "v1beta", "healthz", "readyz", "metrics", "openapi.json", "dashboard"];

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub dashboard: DashboardConfig,
    pub management: ManagementConfig,
    pub limits: LimitsConfig,
    /// Monthly token quota of each plan, by name; always has `default`.
    pub plans: BTreeMap<String, u64>,
    pub store: StoreConfig,
    pub keys: KeysConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub providers: Vec<ProviderConfig>,
    pub trial: TrialConfig,
    pub counters: counters::CountersConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// From connect (or the end of the previous response) to the end of the next request head.
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    /// The most a whole request body may take, however steadily it trickles.
    pub body_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/2: GOAWAY, even if it
    /// answers PINGs).
    pub idle_timeout: Duration,
    /// Connections held at once, in total and from one client address; beyond them new ones are refused.
    /// `None` (unset or `auto`): derived at start, see [`ServerConfig::connection_limits`].
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub http2_max_concurrent_streams: u32,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    /// Threads serving requests; `None`: one per CPU.
    pub worker_threads: Option<usize>,
    /// Peers whose `X-Forwarded-For` is believed (see `auth::client`); empty: the socket peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Open files kept aside from client connections when `server.max_connections` is derived from the
/// open-file limit: the store, log files, listeners, the runtime's own.
pub const OPEN_FILES_RESERVE: u64 = 64;
/// The range a derived `server.max_connections` is kept within.
pub const AUTO_MAX_CONNECTIONS_RANGE: (usize, usize) = (64, 100_000);
/// `server.max_connections_per_ip` when unset or `auto`, unless a quarter of the total is less.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 100;

/// The connections the open-file limit `open_files` allows: each client connection may hold a second
/// descriptor towards a provider, so half of what is left after [`OPEN_FILES_RESERVE`]. `u64::MAX` stands
/// for no limit.
pub fn connections_allowed_by(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(OPEN_FILES_RESERVE) / 2).unwrap_or(usize::MAX)
}

/// `server.max_connections` when unset or `auto`: what the open-file limit allows, kept within
/// [`AUTO_MAX_CONNECTIONS_RANGE`].
pub fn auto_max_connections(open_files: u64) -> usize {
    let (min, max) = AUTO_MAX_CONNECTIONS_RANGE;
    connections_allowed_by(open_files).clamp(min, max)
}

/// `server.max_connections_per_ip` when unset or `auto`: [`DEFAULT_MAX_CONNECTIONS_PER_IP`], but never more than a
/// quarter of the total, so that it takes at least four addresses to hold every place.
pub fn default_max_connections_per_ip(total: usize) -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_IP.min(total / 4).max(1)
}

/// The connection caps a server runs with, settled at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub total: usize,
    pub per_ip: usize,
}

impl ServerConfig {
    /// The caps under the open-file limit `open_files` (`u64::MAX`: none): a number set in the file
    /// wins; unset or `auto` ones are derived (see [`auto_max_connections`], [`default_max_connections_per_ip`]).
    pub fn connection_limits(&self, open_files: u64) -> ConnectionLimits {
        let total = self.max_connections.unwrap_or_else(|| auto_max_connections(open_files));
        let per_ip = self.max_connections_per_ip.unwrap_or_else(|| default_max_connections_per_ip(total));
        ConnectionLimits { total, per_ip }
    }
}

/// Prometheus metrics at `/metrics`: on a listener of their own (loopback by default), and on the main
/// listener only when asked for, behind a bearer token.
#[derive(Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// The plain-HTTP listener serving only `/metrics` (`None`: `listen = "off"`).
    pub listen: Option<SocketAddr>,
    /// Set when `on_main_listener = true`: the hash of [`ENV_METRICS_TOKEN`], which a scrape of the main
    /// listener must present.
    pub main_listener_token: Option<blake3::Hash>,
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("main_listener_token", &self.main_listener_token.map(|_| "[redacted]"))
            .finish()
    }
}

/// The browser dashboard at `/dashboard/` (README, Dashboard).
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub enabled: bool,
    /// A listener of its own, serving the dashboard and the management API it calls and nothing else; the
    /// main listener then serves no dashboard. `None`: the dashboard is on the main listener.
    pub listen: Option<SocketAddr>,
}

/// The management API's credentials (from the environment) and token lifetime.
#[derive(Clone)]
pub struct ManagementConfig {
    pub admin_token: Option<String>,
    pub session_secret: Option<String>,
    pub access_token_ttl: Duration,
}

impl std::fmt::Debug for ManagementConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementConfig")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "[redacted]"))
            .field("session_secret", &self.session_secret.as_ref().map(|_| "[redacted]"))
            .field("access_token_ttl", &self.access_token_ttl)
            .finish()
    }
}

/// Default per-key limits (each overridable per key) and the token reservation rule.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Off: no limits, no reservations, no metering (for measuring what they cost).
    pub enabled: bool,
    pub requests_per_minute: u32,
    pub requests_per_day: u32,
    pub concurrent_requests: u32,
    /// Per-key monthly token quota when a key sets none (`None`: only the account's plan applies).
    pub tokens_per_month: Option<u64>,
    /// Output tokens reserved per choice for a request that names no maximum.
    pub default_max_output_tokens: u64,
    /// The most end users a key's limits count at once (each holds memory until it is idle: for a
    /// monthly token quota, until the month ends); a new end user beyond it is refused 429.
    pub end_users_per_key: u32,
}

/// Ranges for `proxy.toml` defaults and for the limits an account sets on its own keys.
pub const RPM_RANGE: (u32, u32) = (1, 1000);
pub const RPD_RANGE: (u32, u32) = (1, 10_000);
/// An account's own keys stay far below the process-wide `server.max_in_flight` (10,000 by default), so
/// no single key can hold most of it.
pub const CONCURRENCY_RANGE: (u32, u32) = (1, 100);
/// Wider ranges the operator may grant one key from the command line (an internal batch service, a load test):
/// the same limiter runs, with a higher ceiling.
pub const OPERATOR_RPM_RANGE: (u32, u32) = (1, 10_000_000);
pub const OPERATOR_RPD_RANGE: (u32, u32) = (1, 1_000_000_000);
pub const OPERATOR_CONCURRENCY_RANGE: (u32, u32) = (1, 100_000);

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
pub struct KeysConfig {
    pub prefix: String,
    /// From [`ENV_KEY_HASH_SECRET`], derived into a blake3 key.
    pub hash_secret: Option<[u8; 32]>,
    /// Seals signing secrets (`auth::signing`): from [`ENV_SIGNING_KEY`], else derived from
    /// [`ENV_KEY_HASH_SECRET`]; `None` when neither is set (publishable keys then get no signing secret).
    pub signing_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for KeysConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysConfig")
            .field("prefix", &self.prefix)
            .field("hash_secret", &self.hash_secret.map(|_| "[redacted]"))
            .field("signing_key", &self.signing_key.map(|_| "[redacted]"))
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub total_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub max_event_bytes: usize,
    /// CA certificates (PEM) trusted for every `https://` provider besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// `https://` providers are offered HTTP/2 by ALPN besides HTTP/1.1 (the default); when false, HTTP/1.1
    /// alone.
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration problem, naming the field or variable it is about.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{field}: {why}"))
}

// ---------------------------------------------------------------- loading

impl Config {
    /// Reads `path`, applies the process environment and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text, |name| std::env::var(name).ok())
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and validates `text`, taking overrides from `env` (a lookup, so tests need no process env).
    pub fn from_toml(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(toml_error(&e)))?;
        apply_env(&mut raw, &env);
        let hash_secret = env(ENV_KEY_HASH_SECRET)
            .map(|s| {
                if s.len() < 16 {
                    Err(invalid(ENV_KEY_HASH_SECRET, "must be at least 16 bytes"))
                } else {
                    Ok(blake3::derive_key("tollgate service key hash v1", s.as_bytes()))
                }
            })
            .transpose()?;
        let secret = |name: &str| -> Result<Option<String>, ConfigError> {
            match env(name) {
                Some(v) if v.len() < 16 => Err(invalid(name, "must be at least 16 bytes")),
                other => Ok(other),
            }
        };
        let (admin_token, session_secret) = (secret(ENV_ADMIN_TOKEN)?, secret(ENV_SESSION_SECRET)?);
        let metrics_token = secret(ENV_METRICS_TOKEN)?;
        // With an operator there are accounts; without a shared secret each process would sign their
        // access tokens with its own random key, and every other instance (or a restart) would refuse them
        // without a word.
        if admin_token.is_some() && session_secret.is_none() {
            return Err(invalid(
                ENV_SESSION_SECRET,
                "must be set when TOLLGATE_ADMIN_TOKEN is (at least 16 bytes, the same on every instance), \
                 so access tokens outlive a restart and hold on every instance",
            ));
        }
        let signing_key = signing_key(&env)?;
        let mut config = validate(raw, hash_secret)?;
        validate::server_keys(&mut config.providers, &env)?;
        if config.trial.server_credential && !config.providers.iter().any(|p| p.server_key.is_some()) {
            return Err(invalid(
                "trial.provider_credential",
                "is \"server\" but no provider holds a server credential (set key_env on one)",
            ));
        }
        config.trial.device_secret = trial::device_secret(&env, config.trial.enabled)?;
        config.management.admin_token = admin_token;
        config.management.session_secret = session_secret;
        config.keys.signing_key = signing_key;
        if config.metrics.enabled && config.metrics.main_listener_token.is_some() {
            let token = metrics_token.ok_or_else(|| {
                invalid("metrics.on_main_listener", format!("needs a bearer token in {ENV_METRICS_TOKEN}"))
            })?;
            config.metrics.main_listener_token = Some(blake3::hash(token.as_bytes()));
        }
        Ok(config)
    }
}

/// The key sealing signing secrets: [`ENV_SIGNING_KEY`] (32 bytes as 64 hex digits or base64), else one
/// derived from [`ENV_KEY_HASH_SECRET`] under a context of its own, else none.
fn signing_key(env: &impl Fn(&str) -> Option<String>) -> Result<Option<[u8; 32]>, ConfigError> {
    use base64::Engine;
    let Some(text) = env(ENV_SIGNING_KEY) else {
        let derived = env(ENV_KEY_HASH_SECRET).filter(|s| s.len() >= 16);
        return Ok(derived.map(|s| blake3::derive_key("tollgate signing secret seal v1", s.as_bytes())));
    };
    let text = text.trim();
    let hex = |pair: &[u8]| {
        let digits = pair.iter().all(u8::is_ascii_hexdigit);
        digits.then(|| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).flatten()
    };
    let bytes: Option<Vec<u8>> = if text.len() == 64 {
        text.as_bytes().chunks(2).map(hex).collect()
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(Some)
        .ok_or_else(|| invalid(ENV_SIGNING_KEY, "must be 32 bytes, as 64 hex digits or base64"))
}

#[cfg(test)]
mod tests;

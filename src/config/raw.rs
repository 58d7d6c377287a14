//! The file as written: serde structs that refuse unknown fields, and the environment's overrides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ENV_DATABASE_URL, ENV_LISTEN, ENV_LOG, ENV_LOG_FORMAT, ENV_STORE};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) keys: RawKeys,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) management: RawManagement,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) dashboard: RawDashboard,
    #[serde(default)]
    pub(super) plans: BTreeMap<String, RawPlan>,
    #[serde(default)]
    pub(super) providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub(super) trial: RawTrial,
    #[serde(default)]
    pub(super) counters: super::counters::RawCounters,
}

/// `[trial]`: keys for anonymous devices (see `config::TrialConfig`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrial {
    pub(super) enabled: Option<bool>,
    pub(super) requests_per_minute: Option<u32>,
    pub(super) requests_per_day: Option<u32>,
    pub(super) concurrent_requests: Option<u32>,
    pub(super) tokens_per_month: Option<u64>,
    pub(super) ttl: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) models: Option<Vec<String>>,
    pub(super) claim_url: Option<String>,
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) provider_credential: Option<String>,
    pub(super) max_output_tokens: Option<u32>,
    pub(super) issue_per_prefix_per_hour: Option<u32>,
    pub(super) issue_per_ipv6_48_per_hour: Option<u32>,
    pub(super) issue_per_hour: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) enabled: Option<bool>,
    pub(super) requests_per_minute: Option<u32>,
    pub(super) requests_per_day: Option<u32>,
    pub(super) concurrent_requests: Option<u32>,
    pub(super) tokens_per_month: Option<u64>,
    pub(super) default_max_output_tokens: Option<u64>,
    pub(super) end_users_per_key: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDashboard {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<String>,
    pub(super) on_main_listener: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManagement {
    pub(super) access_token_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) tokens_per_month: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) body_idle_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connections: Option<RawCount>,
    pub(super) max_connections_per_ip: Option<RawCount>,
    pub(super) http2_max_concurrent_streams: Option<usize>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) worker_threads: Option<usize>,
    pub(super) trusted_proxies: Option<Vec<String>>,
}

/// A number, or a word such as `auto` for a value derived at start.
#[derive(Debug)]
pub(super) enum RawCount {
    Number(usize),
    Word(String),
}

impl<'de> Deserialize<'de> for RawCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawCount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawCount, E> {
                usize::try_from(v)
                    .map(RawCount::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawCount, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCount, E> {
                Ok(RawCount::Word(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<PathBuf>,
    pub(super) backend: Option<String>,
    pub(super) url: Option<String>,
    pub(super) pool_size: Option<usize>,
    pub(super) statement_timeout: Option<String>,
    pub(super) schema: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) refresh_interval: Option<String>,
    pub(super) flush_interval: Option<String>,
    pub(super) max_staleness: Option<String>,
    pub(super) on_stale: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    pub(super) prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) total_timeout: Option<String>,
    pub(super) pool_idle_timeout: Option<String>,
    pub(super) pool_max_idle_per_host: Option<usize>,
    pub(super) max_event_bytes: Option<usize>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) http2: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) kind: String,
    pub(super) base_url: String,
    pub(super) auth: Option<String>,
    pub(super) anthropic_version: Option<String>,
    pub(super) inject_stream_usage: Option<bool>,
    pub(super) ca_file: Option<PathBuf>,
    /// The environment variable holding the server's own credential for this provider.
    pub(super) key_env: Option<String>,
}

pub(super) fn toml_error(e: &toml::de::Error) -> String {
    // toml's message already names the unknown field or the bad value and where it is.
    e.to_string().trim_end().replace('\n', " | ")
}

pub(super) fn apply_env(raw: &mut RawConfig, env: &impl Fn(&str) -> Option<String>) {
    if let Some(v) = env(ENV_LISTEN) {
        raw.server.listen = Some(v);
    }
    if let Some(v) = env(ENV_STORE) {
        raw.store.path = Some(PathBuf::from(v));
    }
    if let Some(v) = env(ENV_DATABASE_URL) {
        raw.store.url = Some(v);
    }
    if let Some(v) = env(ENV_LOG) {
        raw.log.level = Some(v);
    }
    if let Some(v) = env(ENV_LOG_FORMAT) {
        raw.log.format = Some(v);
    }
    super::counters::apply_env(&mut raw.counters, env);
}

//! From the raw file to a [`Config`] whose values are known good: one check per field, each naming it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::raw::*;
use super::values::{in_range, parse_duration};
use super::*;

pub(super) fn validate(raw: RawConfig, hash_secret: Option<[u8; 32]>) -> Result<Config, ConfigError> {
    let server = server(raw.server)?;
    let store = store(raw.store)?;
    let keys = keys(raw.keys, hash_secret)?;
    let (upstream, shared_roots) = upstream(raw.upstream)?;
    let log = log(raw.log)?;
    let management = management(raw.management)?;
    let limits = limits(raw.limits)?;
    let mut plans: BTreeMap<String, u64> = raw.plans.into_iter().map(|(name, p)| (name, p.tokens_per_month)).collect();
    plans.entry("default".to_owned()).or_insert(10_000_000);
    let providers = if raw.providers.is_empty() {
        default_providers(&shared_roots)?
    } else {
        raw.providers.into_iter().map(|(name, p)| provider(name, p, &shared_roots)).collect::<Result<Vec<_>, _>>()?
    };
    let metrics = metrics(raw.metrics)?;
    let dashboard = dashboard(raw.dashboard)?;
    let trial = super::trial::trial(raw.trial)?;
    if trial.enabled && !limits.enabled {
        // Trial keys are bounded by nothing but their limits.
        return Err(invalid("trial.enabled", "needs [limits] enabled: trial keys are bounded only by their limits"));
    }
    let counters = super::counters::counters(raw.counters)?;
    Ok(Config {
        server,
        metrics,
        dashboard,
        management,
        limits,
        plans,
        store,
        keys,
        upstream,
        log,
        providers,
        trial,
        counters,
    })
}

fn server(s: RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = s.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen: SocketAddr =
        listen.parse().map_err(|_| invalid("server.listen", format!("`{listen}` is not an address:port")))?;
    let tls = match (s.tls_cert, s.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (Some(_), None) => return Err(invalid("server.tls_key", "required when tls_cert is set")),
        (None, Some(_)) => return Err(invalid("server.tls_cert", "required when tls_key is set")),
    };
    let server = ServerConfig {
        listen,
        tls,
        header_read_timeout: duration("server.header_read_timeout", s.header_read_timeout, "10s")?,
        body_idle_timeout: duration("server.body_idle_timeout", s.body_idle_timeout, "30s")?,
        body_timeout: duration("server.body_timeout", s.body_timeout, "2m")?,
        idle_timeout: duration("server.idle_timeout", s.idle_timeout, "1m")?,
        // Unset or `auto`: derived at start (see `ServerConfig::connection_limits`).
        max_connections: count_or_auto("server.max_connections", s.max_connections, 1, 1_000_000)?,
        max_connections_per_ip: count_or_auto("server.max_connections_per_ip", s.max_connections_per_ip, 1, 1_000_000)?,
        http2_max_concurrent_streams: in_range(
            "server.http2_max_concurrent_streams",
            s.http2_max_concurrent_streams,
            100,
            1,
            10_000,
        )? as u32,
        max_body_bytes: in_range("server.max_body_bytes", s.max_body_bytes, 32 << 20, 1024, 1 << 30)?,
        max_header_bytes: in_range("server.max_header_bytes", s.max_header_bytes, 32 << 10, 1024, 1 << 20)?,
        max_in_flight: in_range("server.max_in_flight", s.max_in_flight, 10_000, 1, 1_000_000)?,
        shutdown_grace: duration("server.shutdown_grace", s.shutdown_grace, "10m")?,
        worker_threads: Some(in_range("server.worker_threads", s.worker_threads, 0, 0, 1024)?).filter(|&n| n > 0),
        trusted_proxies: trusted_proxies(s.trusted_proxies)?,
    };
    nonzero(&[
        ("server.header_read_timeout", server.header_read_timeout),
        ("server.body_idle_timeout", server.body_idle_timeout),
        ("server.body_timeout", server.body_timeout),
        ("server.idle_timeout", server.idle_timeout),
    ])?;
    Ok(server)
}

/// `server.trusted_proxies`: CIDRs (a bare address is its /32 or /128), at most 64 of them.
fn trusted_proxies(raw: Option<Vec<String>>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > 64 {
        return Err(invalid("server.trusted_proxies", "at most 64 entries"));
    }
    raw.iter()
        .map(|text| {
            let net =
                text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            net.map(|n| n.trunc()).map_err(|_| invalid("server.trusted_proxies", format!("`{text}` is not a CIDR")))
        })
        .collect()
}

fn store(raw: RawStore) -> Result<StoreConfig, ConfigError> {
    let statement_timeout = duration("store.statement_timeout", raw.statement_timeout.clone(), "5s")?;
    let ca_certs = raw.ca_file.as_deref().map(|path| ca_certs("store.ca_file", path)).transpose()?.unwrap_or_default();
    let refresh_interval = duration("store.refresh_interval", raw.refresh_interval.clone(), "1s")?;
    if refresh_interval.is_zero() {
        return Err(invalid("store.refresh_interval", "must be greater than zero"));
    }
    let store = StoreConfig {
        path: raw.path.clone().unwrap_or_else(|| PathBuf::from("tollgate.db")),
        backend: super::store::backend(&raw, statement_timeout, ca_certs)?,
        refresh_interval,
        flush_interval: duration("store.flush_interval", raw.flush_interval.clone(), "1s")?,
        max_staleness: super::store::max_staleness(
            raw.max_staleness.clone().map(|t| duration("store.max_staleness", Some(t), "10s")).transpose()?,
            refresh_interval,
        )?,
        on_stale: super::store::on_stale(raw.on_stale.as_deref())?,
    };
    if store.flush_interval.is_zero() || store.flush_interval > Duration::from_secs(1) {
        return Err(invalid("store.flush_interval", "must be more than zero and at most 1s"));
    }
    Ok(store)
}

fn keys(raw: RawKeys, hash_secret: Option<[u8; 32]>) -> Result<KeysConfig, ConfigError> {
    let prefix = raw.prefix.unwrap_or_else(|| "tg".to_owned());
    if prefix.is_empty() || prefix.len() > 16 || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(invalid("keys.prefix", "must be 1-16 characters of a-z and 0-9"));
    }
    Ok(KeysConfig { prefix, hash_secret, signing_key: None })
}

/// The upstream section, and the trust roots its `ca_file` adds for every provider.
fn upstream(u: RawUpstream) -> Result<(UpstreamConfig, ExtraRoots), ConfigError> {
    let upstream = UpstreamConfig {
        connect_timeout: duration("upstream.connect_timeout", u.connect_timeout, "5s")?,
        response_timeout: duration("upstream.response_timeout", u.response_timeout, "10m")?,
        idle_timeout: duration("upstream.idle_timeout", u.idle_timeout, "5m")?,
        total_timeout: duration("upstream.total_timeout", u.total_timeout, "15m")?,
        pool_idle_timeout: duration("upstream.pool_idle_timeout", u.pool_idle_timeout, "90s")?,
        pool_max_idle_per_host: in_range("upstream.pool_max_idle_per_host", u.pool_max_idle_per_host, 256, 0, 100_000)?,
        max_event_bytes: in_range("upstream.max_event_bytes", u.max_event_bytes, 16 << 20, 1024, 1 << 30)?,
        ca_file: u.ca_file,
        http2: u.http2.unwrap_or(true),
    };
    let mut shared_roots = ExtraRoots::default();
    if let Some(path) = &upstream.ca_file {
        shared_roots.files.push(path.clone());
        shared_roots.certs = ca_certs("upstream.ca_file", path)?;
    }
    nonzero(&[
        ("upstream.connect_timeout", upstream.connect_timeout),
        ("upstream.response_timeout", upstream.response_timeout),
        ("upstream.idle_timeout", upstream.idle_timeout),
        ("upstream.total_timeout", upstream.total_timeout),
    ])?;
    Ok((upstream, shared_roots))
}

fn nonzero(durations: &[(&str, Duration)]) -> Result<(), ConfigError> {
    match durations.iter().find(|(_, d)| d.is_zero()) {
        Some((field, _)) => Err(invalid(field, "must be greater than zero")),
        None => Ok(()),
    }
}

fn log(raw: RawLog) -> Result<LogConfig, ConfigError> {
    let log = LogConfig {
        level: raw.level.unwrap_or_else(|| "info".to_owned()),
        format: match raw.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid("log.format", format!("`{other}` is not one of text, json")));
            }
        },
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        return Err(invalid("log.level", format!("`{}` is not a log filter", log.level)));
    }
    Ok(log)
}

fn management(raw: RawManagement) -> Result<ManagementConfig, ConfigError> {
    let management = ManagementConfig {
        admin_token: None,
        session_secret: None,
        access_token_ttl: duration("management.access_token_ttl", raw.access_token_ttl, "1h")?,
    };
    if management.access_token_ttl.is_zero() || management.access_token_ttl > Duration::from_secs(86_400) {
        return Err(invalid("management.access_token_ttl", "must be more than zero and at most 24h"));
    }
    Ok(management)
}

fn limits(l: RawLimits) -> Result<LimitsConfig, ConfigError> {
    let range = |field: &str, v: Option<u32>, default: u32, (min, max): (u32, u32)| {
        in_range(field, v.map(|v| v as usize), default as usize, min as usize, max as usize).map(|v| v as u32)
    };
    let limits = LimitsConfig {
        enabled: l.enabled.unwrap_or(true),
        requests_per_minute: range("limits.requests_per_minute", l.requests_per_minute, 60, RPM_RANGE)?,
        requests_per_day: range("limits.requests_per_day", l.requests_per_day, 1000, RPD_RANGE)?,
        concurrent_requests: range(
            "limits.concurrent_requests",
            l.concurrent_requests,
            10,
            OPERATOR_CONCURRENCY_RANGE,
        )?,
        tokens_per_month: l.tokens_per_month,
        default_max_output_tokens: l.default_max_output_tokens.unwrap_or(4096),
        end_users_per_key: range("limits.end_users_per_key", l.end_users_per_key, 100_000, (1, 100_000_000))?,
    };
    if limits.default_max_output_tokens == 0 {
        return Err(invalid("limits.default_max_output_tokens", "must be greater than zero"));
    }
    Ok(limits)
}

fn dashboard(raw: RawDashboard) -> Result<DashboardConfig, ConfigError> {
    Ok(DashboardConfig {
        enabled: raw.enabled.unwrap_or(true),
        listen: match raw.listen.as_deref().unwrap_or("main") {
            "main" => None,
            addr => Some(
                addr.parse()
                    .map_err(|_| invalid("dashboard.listen", format!("`{addr}` is not an address:port or main")))?,
            ),
        },
    })
}

fn metrics(raw: RawMetrics) -> Result<MetricsConfig, ConfigError> {
    Ok(MetricsConfig {
        enabled: raw.enabled.unwrap_or(true),
        listen: match raw.listen.as_deref().unwrap_or("127.0.0.1:9464") {
            "off" => None,
            addr => Some(
                addr.parse()
                    .map_err(|_| invalid("metrics.listen", format!("`{addr}` is not an address:port or off")))?,
            ),
        },
        // A placeholder until the token is read from the environment (see `Config::from_toml`).
        main_listener_token: raw.on_main_listener.unwrap_or(false).then(|| blake3::hash(b"")),
    })
}

fn default_providers(shared_roots: &ExtraRoots) -> Result<Vec<ProviderConfig>, ConfigError> {
    [
        ("openai", "openai", "https://api.openai.com"),
        ("anthropic", "anthropic", "https://api.anthropic.com"),
        ("gemini", "gemini", "https://generativelanguage.googleapis.com"),
    ]
    .into_iter()
    .map(|(name, kind, url)| {
        let raw = RawProvider {
            kind: kind.to_owned(),
            base_url: url.to_owned(),
            auth: None,
            anthropic_version: None,
            inject_stream_usage: None,
            ca_file: None,
            key_env: None,
        };
        provider(name.to_owned(), raw, shared_roots)
    })
    .collect()
}

fn provider(name: String, p: RawProvider, shared_roots: &ExtraRoots) -> Result<ProviderConfig, ConfigError> {
    let field = |f: &str| format!("providers.{name}.{f}");
    provider_name(&name)?;
    let kind = match p.kind.as_str() {
        "openai" => ProviderKind::OpenAi,
        "anthropic" => ProviderKind::Anthropic,
        "gemini" => ProviderKind::Gemini,
        other => {
            return Err(invalid(&field("kind"), format!("`{other}` is not one of openai, anthropic, gemini")));
        }
    };
    // The top-level routes go to the providers named after their kind.
    if matches!(name.as_str(), "openai" | "anthropic" | "gemini") && name != kind.as_str() {
        return Err(invalid(
            &field("kind"),
            format!("the provider named {name} serves {name}'s top-level routes, so its kind must be {name}"),
        ));
    }
    let (scheme, authority, base_path) = base_url(&field("base_url"), &p.base_url)?;

    let gemini_auth = match (kind, p.auth.as_deref()) {
        (ProviderKind::Gemini, None | Some("query")) => GeminiAuth::Query,
        (ProviderKind::Gemini, Some("header")) => GeminiAuth::Header,
        (ProviderKind::Gemini, Some(other)) => {
            return Err(invalid(&field("auth"), format!("`{other}` is not one of query, header")));
        }
        (_, None) => GeminiAuth::Query,
        (_, Some(_)) => return Err(invalid(&field("auth"), "only applies to gemini providers")),
    };
    let anthropic_version = match (kind, p.anthropic_version) {
        (ProviderKind::Anthropic, Some(v)) => {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(invalid(&field("anthropic_version"), "must look like 2023-06-01"));
            }
            v
        }
        (_, None) => "2023-06-01".to_owned(),
        (_, Some(_)) => {
            return Err(invalid(&field("anthropic_version"), "only applies to anthropic providers"));
        }
    };
    let inject_stream_usage = match (kind, p.inject_stream_usage) {
        (ProviderKind::OpenAi, v) => v.unwrap_or(true),
        (_, None) => false,
        (_, Some(_)) => {
            return Err(invalid(&field("inject_stream_usage"), "only applies to openai providers"));
        }
    };
    if let Some(name) = &p.key_env {
        env_name(&field("key_env"), name)?;
    }
    let mut extra_roots = shared_roots.clone();
    if let Some(path) = &p.ca_file {
        extra_roots.certs.extend(ca_certs(&field("ca_file"), path)?);
        extra_roots.files.push(path.clone());
    }
    Ok(ProviderConfig {
        name,
        kind,
        scheme,
        authority,
        base_path,
        gemini_auth,
        anthropic_version,
        inject_stream_usage,
        extra_roots,
        key_env: p.key_env,
        server_key: None,
    })
}

/// The name of an environment variable: letters, digits and `_`, not starting with a digit.
fn env_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = name.len() <= 128
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(invalid(field, format!("`{name}` is not an environment variable name (A-Z, 0-9, _)")));
    }
    Ok(())
}

/// Reads each provider's `key_env` credential from `env`, once, at start. A missing or malformed
/// value is an error naming the field and the variable, never the value.
pub(super) fn server_keys(
    providers: &mut [ProviderConfig],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for provider in providers {
        let Some(name) = &provider.key_env else { continue };
        let field = format!("providers.{}.key_env", provider.name);
        let value = env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            invalid(&field, format!("the environment variable {name} is not set (it holds the provider credential)"))
        })?;
        let key = http::HeaderValue::from_str(&value)
            .ok()
            .and_then(|v| crate::providers::key::ProviderKey::parse(&v))
            .ok_or_else(|| {
                invalid(
                    &field,
                    format!(
                        "the value of {name} is not a provider key (printable ASCII without space, &, #, %, ? or /, \
                         at most {} bytes)",
                        crate::providers::key::MAX_PROVIDER_KEY_LEN
                    ),
                )
            })?;
        provider.server_key = Some(std::sync::Arc::new(key));
    }
    Ok(())
}

fn provider_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 32
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(invalid(&format!("providers.{name}"), "names are 1-32 characters of a-z, 0-9, - and _"));
    }
    if RESERVED_PROVIDER_NAMES.contains(&name) {
        return Err(invalid(&format!("providers.{name}"), "this name is reserved for top-level routes"));
    }
    Ok(())
}

/// A provider's origin and base path: http or https, a host without credentials, no query or fragment.
fn base_url(field: &str, text: &str) -> Result<(http::uri::Scheme, http::uri::Authority, String), ConfigError> {
    let uri: http::Uri = text.parse().map_err(|_| invalid(field, format!("`{text}` is not a URL")))?;
    let scheme = match uri.scheme_str() {
        Some("http") => http::uri::Scheme::HTTP,
        Some("https") => http::uri::Scheme::HTTPS,
        _ => return Err(invalid(field, "must start with http:// or https://")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| invalid(field, "has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid(field, "must not carry credentials"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(invalid(field, "must not have a query or fragment"));
    }
    Ok((scheme, authority, uri.path().trim_end_matches('/').to_owned()))
}

/// The certificates of a PEM file of one or more CA certificates.
fn ca_certs(field: &str, path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, format!("{} is not a PEM file of certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(field, format!("{} holds no PEM certificate", path.display())));
    }
    // Each must be usable as a trust anchor.
    let mut roots = rustls::RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| invalid(field, format!("{} holds a certificate that is not usable: {e}", path.display())))?;
    }
    Ok(certs)
}

/// A number within `min..=max`, or `None` when unset or `auto`.
fn count_or_auto(field: &str, v: Option<RawCount>, min: usize, max: usize) -> Result<Option<usize>, ConfigError> {
    match v {
        None => Ok(None),
        Some(RawCount::Word(word)) if word == "auto" => Ok(None),
        Some(RawCount::Word(word)) => Err(invalid(field, format!("`{word}` is not a number or auto"))),
        Some(RawCount::Number(n)) => in_range(field, Some(n), 0, min, max).map(Some),
    }
}

/// The longest duration a setting may name: every deadline is added to an instant on the request path,
/// and a sum past what the clock can hold would panic.
const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// A duration setting: more than zero (a zero deadline would refuse everything) and at most 30 days.
fn duration(field: &str, v: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let text = v.as_deref().unwrap_or(default);
    let d = parse_duration(text)
        .ok_or_else(|| invalid(field, format!("`{text}` is not a duration like 500ms, 30s, 10m or 1h")))?;
    if d.is_zero() || d > MAX_DURATION {
        return Err(invalid(field, format!("`{text}` must be more than 0 and at most 30 days (720h)")));
    }
    Ok(d)
}

//! `[trial]`: keys for anonymous devices (README, Trial keys for first-time users), validated, and the
//! device-hash secret they need from the environment.

use std::time::Duration;

use super::raw::RawTrial;
use super::values::{in_range, parse_duration};
use super::{CONCURRENCY_RANGE, ConfigError, ENV_KEY_HASH_SECRET, ENV_TRIAL_SECRET, RPD_RANGE, RPM_RANGE, invalid};

/// `[trial]`: a request without a service key is served under its device's trial key (README, Trial keys).
#[derive(Clone)]
pub struct TrialConfig {
    pub enabled: bool,
    pub requests_per_minute: u32,
    pub requests_per_day: u32,
    pub concurrent_requests: u32,
    /// The monthly token quota of one device, carried over when its key is regenerated.
    pub tokens_per_month: u64,
    /// A trial key's lifetime; `None`: it does not expire.
    pub ttl: Option<Duration>,
    /// Scope names (checked against the known ones).
    pub scopes: Vec<String>,
    /// Model globs a trial key may call; `None`: any.
    pub models: Option<Vec<String>>,
    /// Where a provisioned key can be claimed into an account, shown beside it.
    pub claim_url: String,
    /// The browser origins trial requests are served to (patterns as a publishable key's); a request
    /// with an `Origin` from anywhere else is refused, so no other site can use a visitor's trial key.
    pub allowed_origins: Vec<String>,
    /// Trial keys call with the provider credential the server holds (`key_env`) rather than the
    /// caller's `X-Provider-Key`.
    pub server_credential: bool,
    /// The most output tokens one trial request may ask for; `None`: what the provider allows.
    pub max_output_tokens: Option<u32>,
    /// New keys per client address prefix (IPv4 /32, IPv6 /64) per hour.
    pub issue_per_prefix_per_hour: u32,
    /// New keys per IPv6 /48 per hour.
    pub issue_per_ipv6_48_per_hour: u32,
    /// New keys per hour on this instance, all devices together.
    pub issue_per_hour: u32,
    /// Keys the device hash: derived from [`ENV_KEY_HASH_SECRET`], else [`ENV_TRIAL_SECRET`]; always set
    /// when `enabled`.
    pub device_secret: Option<[u8; 32]>,
}

impl std::fmt::Debug for TrialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrialConfig")
            .field("enabled", &self.enabled)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("requests_per_day", &self.requests_per_day)
            .field("tokens_per_month", &self.tokens_per_month)
            .field("ttl", &self.ttl)
            .field("scopes", &self.scopes)
            .field("models", &self.models)
            .field("claim_url", &self.claim_url)
            .field("allowed_origins", &self.allowed_origins)
            .field("server_credential", &self.server_credential)
            .field("max_output_tokens", &self.max_output_tokens)
            .field("device_secret", &self.device_secret.map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// The scopes a trial key may be given (`auth::access::Scopes` names).
const TRIAL_SCOPES: [&str; 4] = ["chat", "embeddings", "models:read", "count_tokens"];

/// The longest `trial.ttl`.
const MAX_TRIAL_TTL: Duration = Duration::from_secs(365 * 86_400);

pub(super) fn trial(t: RawTrial) -> Result<TrialConfig, ConfigError> {
    let count = |field: &str, v: Option<u32>, default: u32, max: usize| {
        in_range(field, v.map(|v| v as usize), default as usize, 1, max).map(|v| v as u32)
    };
    let ttl = match t.ttl {
        None => None,
        Some(text) => match parse_duration(&text) {
            Some(d) if !d.is_zero() && d <= MAX_TRIAL_TTL => Some(d),
            _ => {
                return Err(invalid(
                    "trial.ttl",
                    format!("`{text}` is not a duration of more than 0 and at most 8760h"),
                ));
            }
        },
    };
    let (scopes, models) = access(t.scopes, t.models)?;
    let claim_url = t.claim_url.unwrap_or_else(|| "/dashboard/claim".to_owned());
    if claim_url.is_empty() || claim_url.len() > 512 || http::HeaderValue::from_str(&claim_url).is_err() {
        return Err(invalid("trial.claim_url", "must be a URL or path of at most 512 visible characters"));
    }
    let allowed_origins = t.allowed_origins.unwrap_or_default();
    for origin in &allowed_origins {
        crate::auth::origin::OriginPattern::parse(origin)
            .map_err(|why| invalid("trial.allowed_origins", format!("`{origin}` {why}")))?;
    }
    let server_credential = match t.provider_credential.as_deref() {
        None | Some("caller") => false,
        Some("server") => true,
        Some(_) => return Err(invalid("trial.provider_credential", "must be \"caller\" or \"server\"")),
    };
    if t.max_output_tokens.is_some_and(|n| n == 0 || n > 10_000_000) {
        return Err(invalid("trial.max_output_tokens", "must be 1-10000000"));
    }
    Ok(TrialConfig {
        enabled: t.enabled.unwrap_or(false),
        requests_per_minute: count("trial.requests_per_minute", t.requests_per_minute, 10, RPM_RANGE.1 as usize)?,
        requests_per_day: count("trial.requests_per_day", t.requests_per_day, 100, RPD_RANGE.1 as usize)?,
        concurrent_requests: count(
            "trial.concurrent_requests",
            t.concurrent_requests,
            2,
            CONCURRENCY_RANGE.1 as usize,
        )?,
        tokens_per_month: match t.tokens_per_month {
            Some(0) => return Err(invalid("trial.tokens_per_month", "must be greater than zero")),
            other => other.unwrap_or(20_000),
        },
        ttl,
        scopes,
        models,
        claim_url,
        allowed_origins,
        server_credential,
        max_output_tokens: t.max_output_tokens,
        issue_per_prefix_per_hour: count("trial.issue_per_prefix_per_hour", t.issue_per_prefix_per_hour, 3, 1_000_000)?,
        issue_per_ipv6_48_per_hour: count(
            "trial.issue_per_ipv6_48_per_hour",
            t.issue_per_ipv6_48_per_hour,
            10,
            1_000_000,
        )?,
        issue_per_hour: count("trial.issue_per_hour", t.issue_per_hour, 1000, 10_000_000)?,
        device_secret: None,
    })
}

/// The scopes (default `chat`) and model globs of trial keys, checked.
fn access(
    scopes: Option<Vec<String>>,
    models: Option<Vec<String>>,
) -> Result<(Vec<String>, Option<Vec<String>>), ConfigError> {
    let scopes = scopes.unwrap_or_else(|| vec!["chat".to_owned()]);
    if scopes.is_empty() {
        return Err(invalid("trial.scopes", "must name at least one scope"));
    }
    if let Some(bad) = scopes.iter().find(|s| !TRIAL_SCOPES.contains(&s.as_str())) {
        return Err(invalid("trial.scopes", format!("`{bad}` is not one of {}", TRIAL_SCOPES.join(", "))));
    }
    if let Some(models) = &models {
        let fine = |m: &String| !m.is_empty() && m.len() <= 128 && m.bytes().all(|b| b.is_ascii_graphic());
        if models.is_empty() || models.len() > 100 {
            return Err(invalid("trial.models", "must hold 1-100 model names or globs (leave it out for any)"));
        }
        if let Some(bad) = models.iter().find(|m| !fine(m)) {
            return Err(invalid("trial.models", format!("`{bad}` is not a model name or glob")));
        }
    }
    Ok((scopes, models))
}

/// The device-hash secret of trial keys: [`ENV_KEY_HASH_SECRET`] when set (under its own derivation
/// context), else [`ENV_TRIAL_SECRET`]. An enabled `[trial]` without either is refused: a secret kept in
/// the store would let a copy of the store map device hashes back to addresses.
pub(super) fn device_secret(
    env: &impl Fn(&str) -> Option<String>,
    enabled: bool,
) -> Result<Option<[u8; 32]>, ConfigError> {
    let from = |name: &str| -> Result<Option<[u8; 32]>, ConfigError> {
        match env(name) {
            Some(v) if v.len() < 16 => Err(invalid(name, "must be at least 16 bytes")),
            Some(v) => Ok(Some(blake3::derive_key("tollgate trial device hash v1", v.as_bytes()))),
            None => Ok(None),
        }
    };
    let secret = match from(ENV_KEY_HASH_SECRET)? {
        Some(secret) => Some(secret),
        None => from(ENV_TRIAL_SECRET)?,
    };
    if enabled && secret.is_none() {
        return Err(invalid(
            ENV_TRIAL_SECRET,
            format!("must be set (at least 16 bytes) when trial.enabled = true, unless {ENV_KEY_HASH_SECRET} is"),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn trial_is_off_by_default_and_needs_a_secret_when_on() {
        let c = Config::from_toml("", no_env).unwrap();
        assert!(!c.trial.enabled && c.trial.device_secret.is_none() && c.server.trusted_proxies.is_empty());
        assert_eq!(
            (c.trial.requests_per_minute, c.trial.requests_per_day, c.trial.tokens_per_month),
            (10, 100, 20_000)
        );
        assert_eq!(
            (c.trial.scopes.clone(), c.trial.claim_url.as_str(), c.trial.ttl),
            (vec!["chat".into()], "/dashboard/claim", None)
        );
        let e = Config::from_toml("[trial]\nenabled = true\n", no_env).unwrap_err();
        assert!(e.0.starts_with(ENV_TRIAL_SECRET) && e.0.contains(ENV_KEY_HASH_SECRET), "{e}");
        let own = |name: &str| (name == ENV_TRIAL_SECRET).then(|| "trial-secret-0123456789".to_owned());
        let c = Config::from_toml("[trial]\nenabled = true\nttl = \"720h\"\n", own).unwrap();
        assert_eq!(c.trial.ttl, Some(Duration::from_secs(720 * 3600)));
        let from_own = c.trial.device_secret.unwrap();
        let shared = |name: &str| (name == ENV_KEY_HASH_SECRET).then(|| "trial-secret-0123456789".to_owned());
        let c = Config::from_toml("[trial]\nenabled = true\n", shared).unwrap();
        assert_eq!(c.trial.device_secret, Some(from_own), "one derivation, whichever variable holds it");
        assert_ne!(c.keys.hash_secret, c.trial.device_secret, "not the key hash secret itself");
        assert!(!format!("{:?}", c.trial).contains(&format!("{from_own:?}")));
        let short = |name: &str| (name == ENV_TRIAL_SECRET).then(|| "short".to_owned());
        assert!(Config::from_toml("", short).unwrap_err().0.starts_with(ENV_TRIAL_SECRET));
    }

    #[test]
    fn trial_and_trusted_proxy_values_name_their_field() {
        let c =
            Config::from_toml("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"192.168.1.7/16\"]\n", no_env)
                .unwrap();
        let nets: Vec<String> = c.server.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.168.0.0/16"]);
        let cases = [
            ("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "server.trusted_proxies"),
            ("[server]\ntrusted_proxies = [\"proxy.internal\"]\n", "server.trusted_proxies"),
            ("[trial]\nrequests_per_minute = 0\n", "trial.requests_per_minute"),
            ("[trial]\ntokens_per_month = 0\n", "trial.tokens_per_month"),
            ("[trial]\nttl = \"forever\"\n", "trial.ttl"),
            ("[trial]\nttl = \"9000h\"\n", "trial.ttl"),
            ("[trial]\nscopes = [\"admin\"]\n", "trial.scopes"),
            ("[trial]\nscopes = []\n", "trial.scopes"),
            ("[trial]\nmodels = [\"gpt 4\"]\n", "trial.models"),
            ("[trial]\nclaim_url = \"\"\n", "trial.claim_url"),
            ("[trial]\nallowed_origins = [\"https://*.com\"]\n", "trial.allowed_origins"),
            ("[trial]\nprovider_credential = \"both\"\n", "trial.provider_credential"),
            ("[trial]\nprovider_credential = \"server\"\n", "trial.provider_credential"),
            ("[trial]\nmax_output_tokens = 0\n", "trial.max_output_tokens"),
            ("[limits]\nenabled = false\n[trial]\nenabled = true\n", "trial.enabled"),
            ("[trial]\nallowed_origins = [\"https://app.example.com/\"]\n", "trial.allowed_origins"),
            ("[trial]\nissue_per_hour = 0\n", "trial.issue_per_hour"),
            ("[trial]\nissue_per_prefix_per_hour = 0\n", "trial.issue_per_prefix_per_hour"),
            ("[trial]\nsecret = \"x\"\n", "secret"),
        ];
        for (text, field) in cases {
            let e = Config::from_toml(text, no_env).unwrap_err();
            assert!(e.0.contains(field), "{text:?} gave {e}");
        }
    }
}

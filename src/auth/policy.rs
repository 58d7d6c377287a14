//! What a key allows beyond its scopes and limits (docs/ARCHITECTURE.md, Key kinds): whether it is
//! switched on, where it may be used from (addresses, browser origins), whether it may call with the
//! server's own provider credential, whether its requests must name an end user, and the limits each
//! end user runs under. Held in the key table, so every check here is a read of memory.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The per-end-user limits a key sets (`None`: no such limit per end user).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndUserLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
}

impl EndUserLimits {
    pub fn is_none(&self) -> bool {
        *self == EndUserLimits::default()
    }
}

/// Where a key's provider credential comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderCredential {
    /// The caller sends its own in `X-Provider-Key` (the default).
    #[default]
    Caller,
    /// The key may call a provider that holds a credential of the server's (`key_env`) without
    /// sending one.
    Server,
}

impl ProviderCredential {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderCredential::Caller => "caller",
            ProviderCredential::Server => "server",
        }
    }

    pub fn parse(text: &str) -> Option<ProviderCredential> {
        match text {
            "caller" => Some(ProviderCredential::Caller),
            "server" => Some(ProviderCredential::Server),
            _ => None,
        }
    }
}

/// A key's policy. The default is a live key as it always was: enabled, usable from anywhere but a
/// browser, with the caller's provider key, no end user required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyPolicy {
    /// Switched off (reversibly): refused 403 "API key disabled" until enabled again.
    #[serde(skip_serializing_if = "is_false")]
    pub disabled: bool,
    /// The client addresses the key may be used from; `None`: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<IpNet>>,
    /// The browser origins a publishable key is accepted from (exact, or one leading `*.` label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// A secret key that may be used with an `Origin` header.
    #[serde(skip_serializing_if = "is_false")]
    pub allow_browser: bool,
    #[serde(skip_serializing_if = "is_caller")]
    pub provider_credential: ProviderCredential,
    /// Every request must carry an identity token naming its end user.
    #[serde(skip_serializing_if = "is_false")]
    pub require_identity: bool,
    #[serde(skip_serializing_if = "EndUserLimits::is_none")]
    pub end_user_limits: EndUserLimits,
    /// The most output tokens one request may ask for; `None`: what the provider allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_caller(c: &ProviderCredential) -> bool {
    *c == ProviderCredential::Caller
}

impl KeyPolicy {
    /// The stored form: `None` for the default, so most keys store nothing.
    pub fn to_stored(&self) -> Option<String> {
        (*self != KeyPolicy::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads the stored form; `Err` names what is wrong.
    pub fn from_stored(text: Option<&str>) -> Result<KeyPolicy, String> {
        match text {
            None | Some("") => Ok(KeyPolicy::default()),
            Some(text) => serde_json::from_str(text).map_err(|e| e.to_string()),
        }
    }

    /// Whether `ip` may use the key.
    pub fn allows_ip(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical(ip);
        self.ip_allowlist.as_ref().is_none_or(|nets| nets.iter().any(|net| net.contains(&ip)))
    }
}

/// An IPv4 address carried in IPv6 (`::ffff:a.b.c.d`, as a dual-stack socket reports it) as IPv4.
pub fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_stores_nothing_and_others_round_trip() {
        assert_eq!(KeyPolicy::default().to_stored(), None);
        assert_eq!(KeyPolicy::from_stored(None).unwrap(), KeyPolicy::default());
        let policy = KeyPolicy {
            disabled: true,
            ip_allowlist: Some(vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()]),
            allowed_origins: Some(vec!["https://*.example.com".into()]),
            allow_browser: true,
            provider_credential: ProviderCredential::Server,
            require_identity: true,
            end_user_limits: EndUserLimits { tokens_per_month: Some(5), ..EndUserLimits::default() },
            max_output_tokens: Some(100),
        };
        let stored = policy.to_stored().unwrap();
        assert_eq!(KeyPolicy::from_stored(Some(&stored)).unwrap(), policy);
        assert!(KeyPolicy::from_stored(Some("{\"surprise\":1}")).is_err());
    }

    #[test]
    fn the_ip_allowlist_matches_by_network_and_mapped_v4() {
        let policy = KeyPolicy { ip_allowlist: Some(vec!["10.1.0.0/16".parse().unwrap()]), ..KeyPolicy::default() };
        assert!(policy.allows_ip("10.1.2.3".parse().unwrap()));
        assert!(policy.allows_ip("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!policy.allows_ip("10.2.0.1".parse().unwrap()));
        assert!(KeyPolicy::default().allows_ip("192.0.2.1".parse().unwrap()));
    }
}

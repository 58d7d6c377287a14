//! The checks of a key's policy, its description and its metadata, whoever asks (the management API or
//! the CLI). A change is applied over the key's current policy (or the default, at creation), field by
//! field: absent keeps a setting, `null` clears it.

use serde_json::Value;

use super::ServiceError;
use super::rules::Actor;
use crate::auth::keys::{KeyKind, change_limit};
use crate::auth::origin::{MAX_ORIGIN_LEN, OriginPattern};
use crate::auth::policy::{KeyPolicy, ProviderCredential};
use crate::config::{OPERATOR_RPD_RANGE, OPERATOR_RPM_RANGE, RPD_RANGE, RPM_RANGE};

/// The longest description, in characters.
pub const MAX_DESCRIPTION: usize = 1024;
/// The most members of a key's metadata.
pub const MAX_METADATA_MEMBERS: usize = 32;
/// The longest metadata member name, in characters.
pub const MAX_METADATA_NAME: usize = 40;
/// The longest metadata value, in characters.
pub const MAX_METADATA_VALUE: usize = 500;
/// The most entries of an IP allowlist or of a list of origins.
pub const MAX_NETWORKS: usize = 64;

fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { field: field.to_owned(), message: message.into() }
}

/// Changes to a key's policy: per field, absent (`None`), cleared (`Some(None)`) or a value.
#[derive(Debug, Clone, Default)]
pub struct PolicyChanges {
    pub enabled: Option<bool>,
    pub ip_allowlist: Option<Option<Vec<String>>>,
    pub allowed_origins: Option<Option<Vec<String>>>,
    pub allow_browser: Option<bool>,
    pub provider_credential: Option<String>,
    pub require_identity: Option<bool>,
    pub end_user_limits: EndUserLimitChanges,
    pub max_output_tokens: Option<Option<u64>>,
}

/// Changes to a key's per-end-user limits, as [`super::LimitChanges`] are to its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndUserLimitChanges {
    pub requests_per_minute: Option<Option<u64>>,
    pub requests_per_day: Option<Option<u64>>,
    pub tokens_per_month: Option<Option<u64>>,
}

impl PolicyChanges {
    /// Applies the changes over `policy`; [`check_kind`] then says whether the result suits the key.
    pub fn apply(&self, actor: Actor<'_>, mut policy: KeyPolicy) -> Result<KeyPolicy, ServiceError> {
        if let Some(enabled) = self.enabled {
            policy.disabled = !enabled;
        }
        if let Some(list) = &self.ip_allowlist {
            policy.ip_allowlist = list.as_deref().map(check_networks).transpose()?;
        }
        if let Some(list) = &self.allowed_origins {
            policy.allowed_origins = list.as_deref().map(check_origins).transpose()?;
        }
        if let Some(allow) = self.allow_browser {
            policy.allow_browser = allow;
        }
        if let Some(credential) = &self.provider_credential {
            policy.provider_credential = ProviderCredential::parse(credential)
                .ok_or_else(|| invalid("provider_credential", "must be \"caller\" or \"server\""))?;
        }
        if let Some(require) = self.require_identity {
            policy.require_identity = require;
        }
        self.end_user_limits.apply(actor, &mut policy)?;
        change_limit(self.max_output_tokens, (1, 10_000_000), &mut policy.max_output_tokens)
            .map_err(|e| invalid("max_output_tokens", e))?;
        Ok(policy)
    }
}

impl EndUserLimitChanges {
    fn apply(&self, actor: Actor<'_>, policy: &mut KeyPolicy) -> Result<(), ServiceError> {
        let (rpm, rpd) = match actor {
            Actor::Operator => (OPERATOR_RPM_RANGE, OPERATOR_RPD_RANGE),
            Actor::Account { .. } => (RPM_RANGE, RPD_RANGE),
        };
        let limits = &mut policy.end_user_limits;
        change_limit(self.requests_per_minute, rpm, &mut limits.requests_per_minute)
            .map_err(|e| invalid("end_user_limits.requests_per_minute", e))?;
        change_limit(self.requests_per_day, rpd, &mut limits.requests_per_day)
            .map_err(|e| invalid("end_user_limits.requests_per_day", e))?;
        match self.tokens_per_month {
            Some(Some(0)) => return Err(invalid("end_user_limits.tokens_per_month", "must be at least 1")),
            Some(t) => limits.tokens_per_month = t,
            None => {}
        }
        Ok(())
    }
}

/// What each kind of key requires of its policy.
pub fn check_kind(kind: KeyKind, policy: &KeyPolicy) -> Result<(), ServiceError> {
    match kind {
        KeyKind::Publishable if policy.allowed_origins.is_none() => {
            Err(invalid("allowed_origins", "is required for a publishable key"))
        }
        KeyKind::Publishable if policy.allow_browser => {
            Err(invalid("allow_browser", "applies to secret keys; a publishable key is for browsers already"))
        }
        KeyKind::Live | KeyKind::Trial if policy.allowed_origins.is_some() => {
            Err(invalid("allowed_origins", "applies to publishable keys only"))
        }
        _ => Ok(()),
    }
}

/// An IP allowlist: CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
pub fn check_networks(list: &[String]) -> Result<Vec<ipnet::IpNet>, ServiceError> {
    if list.is_empty() || list.len() > MAX_NETWORKS {
        return Err(invalid("ip_allowlist", format!("must hold 1-{MAX_NETWORKS} entries, or be null for any")));
    }
    list.iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| invalid("ip_allowlist", format!("`{text}` is not an IP network (CIDR) or address")))
        })
        .collect()
}

/// Allowed browser origins: exact origins, or one leading wildcard label (`crate::auth::origin`), kept
/// in their canonical form (lowercase, the default port left out) without duplicates.
pub fn check_origins(list: &[String]) -> Result<Vec<String>, ServiceError> {
    if list.is_empty() || list.len() > MAX_NETWORKS {
        return Err(invalid("allowed_origins", format!("must hold 1-{MAX_NETWORKS} origins")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for text in list {
        let pattern = OriginPattern::parse(text).map_err(|why| {
            let shown: String = text.chars().take(MAX_ORIGIN_LEN).collect();
            invalid("allowed_origins", format!("`{}` {why}", shown.escape_debug()))
        })?;
        let canonical = pattern.to_string();
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

/// A key's description: free text up to [`MAX_DESCRIPTION`] characters (line breaks allowed).
pub fn check_description(text: Option<String>) -> Result<Option<String>, ServiceError> {
    let Some(text) = text else { return Ok(None) };
    let bad_control = |c: char| c.is_control() && c != '\n' && c != '\t';
    if text.chars().count() > MAX_DESCRIPTION || text.chars().any(bad_control) {
        return Err(invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters, without control characters but tab and newline"),
        ));
    }
    Ok(Some(text).filter(|t| !t.is_empty()))
}

/// A key's metadata: a JSON object of at most [`MAX_METADATA_MEMBERS`] string values, as Stripe keeps
/// it: names of 1-[`MAX_METADATA_NAME`] characters, values of at most [`MAX_METADATA_VALUE`].
pub fn check_metadata(value: Option<Value>) -> Result<Option<Value>, ServiceError> {
    let Some(value) = value else { return Ok(None) };
    let Some(members) = value.as_object() else {
        return Err(invalid("metadata", "must be a JSON object"));
    };
    if members.len() > MAX_METADATA_MEMBERS {
        return Err(invalid("metadata", format!("must have at most {MAX_METADATA_MEMBERS} members")));
    }
    for (name, v) in members {
        if name.is_empty() || name.chars().count() > MAX_METADATA_NAME {
            return Err(invalid("metadata", format!("member names must be 1-{MAX_METADATA_NAME} characters")));
        }
        if v.as_str().is_none_or(|text| text.chars().count() > MAX_METADATA_VALUE) {
            return Err(invalid(
                "metadata",
                format!("member `{name}` must be a string of at most {MAX_METADATA_VALUE} characters"),
            ));
        }
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ServiceError) -> String {
        match e {
            ServiceError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn changes_apply_field_by_field_and_null_clears() {
        let set = PolicyChanges {
            enabled: Some(false),
            ip_allowlist: Some(Some(vec!["10.1.2.3/16".into(), "::1".into()])),
            provider_credential: Some("server".into()),
            end_user_limits: EndUserLimitChanges { tokens_per_month: Some(Some(500)), ..Default::default() },
            ..PolicyChanges::default()
        };
        let policy = set.apply(Actor::Operator, KeyPolicy::default()).unwrap();
        assert!(policy.disabled);
        let nets: Vec<String> = policy.ip_allowlist.iter().flatten().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.1.0.0/16", "::1/128"]);
        assert_eq!(policy.provider_credential, ProviderCredential::Server);
        assert_eq!(policy.end_user_limits.tokens_per_month, Some(500));

        let clear = PolicyChanges { enabled: Some(true), ip_allowlist: Some(None), ..PolicyChanges::default() };
        let policy = clear.apply(Actor::Operator, policy).unwrap();
        assert!(!policy.disabled && policy.ip_allowlist.is_none());
        assert_eq!(policy.provider_credential, ProviderCredential::Server, "untouched fields stay");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                PolicyChanges { ip_allowlist: Some(Some(vec!["10.0.0.0/33".into()])), ..Default::default() },
                "ip_allowlist",
            ),
            (PolicyChanges { ip_allowlist: Some(Some(vec![])), ..Default::default() }, "ip_allowlist"),
            (PolicyChanges { provider_credential: Some("both".into()), ..Default::default() }, "provider_credential"),
            (PolicyChanges { max_output_tokens: Some(Some(0)), ..Default::default() }, "max_output_tokens"),
            (
                PolicyChanges {
                    end_user_limits: EndUserLimitChanges { requests_per_minute: Some(Some(0)), ..Default::default() },
                    ..Default::default()
                },
                "end_user_limits.requests_per_minute",
            ),
        ];
        for (change, expected) in cases {
            let refused = change.apply(Actor::Operator, KeyPolicy::default()).unwrap_err();
            assert_eq!(field(refused), expected);
        }
        let refused = check_kind(KeyKind::Publishable, &KeyPolicy::default());
        assert_eq!(field(refused.unwrap_err()), "allowed_origins", "a publishable key needs its origins");
        let origins = KeyPolicy { allowed_origins: Some(vec!["https://a.example".into()]), ..KeyPolicy::default() };
        assert_eq!(
            field(check_kind(KeyKind::Live, &origins).unwrap_err()),
            "allowed_origins",
            "only for publishable keys"
        );
    }

    #[test]
    fn origins_are_checked_and_kept_canonical() {
        let list = [
            "https://App.example.com:443".to_owned(),
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ];
        assert_eq!(check_origins(&list).unwrap(), ["https://app.example.com", "https://*.example.org"]);
        for bad in ["https://app.example.com/", "https://*.com", "https://a.*.example.com", "https://*.co.uk"] {
            match check_origins(&[bad.to_owned()]).unwrap_err() {
                ServiceError::Invalid { field, message } => {
                    assert_eq!(field, "allowed_origins");
                    assert!(message.contains(bad), "{message}");
                }
                other => panic!("{other}"),
            }
        }
        assert!(check_origins(&[]).is_err());
    }

    #[test]
    fn descriptions_and_metadata_are_bounded() {
        assert_eq!(
            check_description(Some("line one\nline two".into())).unwrap().as_deref(),
            Some("line one\nline two")
        );
        assert_eq!(field(check_description(Some("x".repeat(1025))).unwrap_err()), "description");
        assert_eq!(field(check_description(Some("bell\u{7}".into())).unwrap_err()), "description");
        assert!(check_metadata(Some(serde_json::json!({"team": "web", "é".repeat(40): "ü".repeat(500)}))).is_ok());
        for bad in [
            serde_json::json!([1]),
            serde_json::json!({"tier": 2}),
            serde_json::json!({"": "x"}),
            serde_json::json!({"x".repeat(41): "x"}),
            serde_json::json!({"x": "y".repeat(501)}),
            Value::Object((0..33).map(|i| (i.to_string(), Value::from("v"))).collect()),
        ] {
            assert_eq!(field(check_metadata(Some(bad.clone())).unwrap_err()), "metadata", "{bad}");
        }
    }
}

//! The checks every control-plane write goes through, whoever asks: names, emails, passwords, key ids,
//! key caps, limit changes and the limits a key ends up with. Errors name the field as the management
//! API does (`limits.requests_per_minute`); the CLI maps those names to its flags.

use super::ServiceError;
use crate::auth::access::Scopes;
use crate::auth::keys::{KeyId, KeyLimits};
use crate::config::{CONCURRENCY_RANGE, LimitsConfig, RPD_RANGE, RPM_RANGE};
use crate::config::{OPERATOR_CONCURRENCY_RANGE, OPERATOR_RPD_RANGE, OPERATOR_RPM_RANGE};
use crate::metering::limits;

const MAX_NAME: usize = 128;
const MAX_LIST: usize = 64;
/// The range of an account's key cap.
pub const KEY_CAP_RANGE: (u32, u32) = (1, 1000);
/// The longest grace period of a rotation: 30 days.
pub const MAX_GRACE_SECONDS: u64 = 30 * 86_400;
/// The range of a key's lifetime in days.
pub const EXPIRES_IN_DAYS_RANGE: (u32, u32) = (1, 36_500);

/// Who asks. The operator (admin token or CLI) may grant limits beyond an account's ranges and rotate
/// past a key cap; an account may only lower its keys' token quota below what its plan gives it.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Operator,
    Account {
        id: &'a str,
        /// The most tokens a month one of its keys may have: its plan's quota, capped by the default.
        tokens_ceiling: u64,
    },
}

fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { field: field.to_owned(), message: message.into() }
}

/// Names and project labels: 1-128 characters (not bytes), none of them a control character (they are
/// printed in terminals). The OpenAPI document states the same rule.
pub fn check_name(field: &str, name: &str) -> Result<String, ServiceError> {
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(invalid(field, format!("must be 1-{MAX_NAME} characters, none of them control characters")));
    }
    Ok(name.to_owned())
}

/// An email address as accounts are keyed by it: the OpenAPI document's rule, stored in lower case.
pub fn check_email(email: &str) -> Result<String, ServiceError> {
    if !super::super::openapi::is_email(email) {
        return Err(invalid("email", "is not an email address"));
    }
    Ok(email.to_ascii_lowercase())
}

/// A password: 8-256 characters.
pub fn check_password(field: &str, password: &str) -> Result<(), ServiceError> {
    if !(8..=256).contains(&password.chars().count()) {
        return Err(invalid(field, "must be 8-256 characters"));
    }
    Ok(())
}

pub fn check_key_cap(cap: u32) -> Result<u32, ServiceError> {
    let (min, max) = KEY_CAP_RANGE;
    if !(min..=max).contains(&cap) {
        return Err(invalid("key_cap", format!("{cap} is outside {min}..={max}")));
    }
    Ok(cap)
}

/// A key id, given bare (`AbC123...`) or as the whole key prefix (`tg_live_AbC123...`).
pub fn parse_key_id(text: &str) -> Option<KeyId> {
    KeyId::parse(text.rsplit('_').next().unwrap_or_default())
}

/// A list of providers (each one `configured`) or, without `configured`, of model names and globs;
/// `None` allows any.
pub fn check_list(
    field: &str,
    list: Option<Vec<String>>,
    configured: Option<&dyn Fn(&str) -> bool>,
) -> Result<Option<Vec<String>>, ServiceError> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() || list.len() > MAX_LIST {
        return Err(invalid(field, format!("must hold 1-{MAX_LIST} entries, or be null for any")));
    }
    for item in &list {
        let ok = match configured {
            Some(is_provider) => is_provider(item),
            None => !item.is_empty() && item.len() <= 128 && item.bytes().all(|b| b.is_ascii_graphic()),
        };
        if !ok {
            let what =
                if configured.is_some() { "is not a configured provider" } else { "is not a model name or glob" };
            return Err(invalid(field, format!("`{item}` {what}")));
        }
    }
    Ok(Some(list))
}

pub fn check_scopes(scopes: Option<Vec<String>>) -> Result<Option<Scopes>, ServiceError> {
    scopes
        .map(|names| {
            if names.is_empty() {
                return Err(invalid("scopes", "must name at least one scope"));
            }
            Scopes::from_names(names.iter().map(String::as_str)).map_err(|bad| {
                invalid("scopes", format!("`{bad}` is not one of chat, embeddings, models:read, count_tokens"))
            })
        })
        .transpose()
}

/// Changes to a key's limits: per field, absent (`None`), back to the default (`Some(None)`) or a value.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitChanges {
    pub requests_per_minute: Option<Option<u64>>,
    pub requests_per_day: Option<Option<u64>>,
    pub concurrent_requests: Option<Option<u64>>,
    pub tokens_per_month: Option<Option<u64>>,
}

impl LimitChanges {
    /// Applies the changes over `limits`, each checked against the range `actor` may grant.
    pub fn apply(&self, actor: Actor<'_>, mut limits: KeyLimits) -> Result<KeyLimits, ServiceError> {
        let (rpm, rpd, concurrency) = match actor {
            Actor::Operator => (OPERATOR_RPM_RANGE, OPERATOR_RPD_RANGE, OPERATOR_CONCURRENCY_RANGE),
            Actor::Account { .. } => (RPM_RANGE, RPD_RANGE, CONCURRENCY_RANGE),
        };
        let set = |field: &str, change, range, slot: &mut Option<u32>| {
            crate::auth::keys::change_limit(change, range, slot).map_err(|e| invalid(field, e))
        };
        set("limits.requests_per_minute", self.requests_per_minute, rpm, &mut limits.requests_per_minute)?;
        set("limits.requests_per_day", self.requests_per_day, rpd, &mut limits.requests_per_day)?;
        set("limits.concurrent_requests", self.concurrent_requests, concurrency, &mut limits.concurrent_requests)?;
        match (self.tokens_per_month, actor) {
            (Some(Some(t)), Actor::Account { tokens_ceiling, .. }) if t > tokens_ceiling => {
                return Err(invalid(
                    "limits.tokens_per_month",
                    format!(
                        "{t} is above {tokens_ceiling}, what this account's plan and the default per-key quota allow"
                    ),
                ));
            }
            (Some(t), _) => limits.tokens_per_month = t,
            (None, _) => {}
        }
        Ok(limits)
    }
}

/// One limit as it applies to a key: its own value, or the configured default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective<T> {
    pub value: T,
    /// Set on the key itself rather than taken from the default.
    pub own: bool,
}

/// The limits a key runs under: its own where it sets them, the configured defaults elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub requests_per_minute: Effective<u32>,
    pub requests_per_day: Effective<u32>,
    pub concurrent_requests: Effective<u32>,
    /// `None`: no per-key token quota (only the account's plan applies).
    pub tokens_per_month: Effective<Option<u64>>,
}

impl EffectiveLimits {
    /// The limits admission applies ([`limits::effective`]), each marked where the key sets its own.
    pub fn of(own: &KeyLimits, defaults: &LimitsConfig) -> EffectiveLimits {
        let applied = limits::effective(own, defaults);
        EffectiveLimits {
            requests_per_minute: Effective { own: own.requests_per_minute.is_some(), value: applied.per_minute },
            requests_per_day: Effective { own: own.requests_per_day.is_some(), value: applied.per_day },
            concurrent_requests: Effective { own: own.concurrent_requests.is_some(), value: applied.concurrency },
            tokens_per_month: Effective { own: own.tokens_per_month.is_some(), value: applied.key_tokens },
        }
    }
}

impl std::fmt::Display for EffectiveLimits {
    /// `2 rpm, 10000 per day (default), ...`: each limit marked when it is the default.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = |own: bool| if own { "" } else { " (default)" };
        let tokens =
            self.tokens_per_month.value.map_or("no key token quota".to_owned(), |t| format!("{t} tokens per month"));
        write!(
            f,
            "{} rpm{}, {} per day{}, {} concurrent{}, {tokens}{}",
            self.requests_per_minute.value,
            mark(self.requests_per_minute.own),
            self.requests_per_day.value,
            mark(self.requests_per_day.own),
            self.concurrent_requests.value,
            mark(self.concurrent_requests.own),
            mark(self.tokens_per_month.own),
        )
    }
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
    fn names_are_counted_in_characters() {
        assert!(check_name("name", &"é".repeat(128)).is_ok(), "128 characters of 256 bytes fit");
        assert_eq!(field(check_name("name", &"é".repeat(129)).unwrap_err()), "name");
        assert!(check_name("project", "").is_err());
        assert!(check_name("name", "tab\there").is_err());
        assert!(check_name("name", "bell\u{7}").is_err());
        assert!(check_name("name", "c1\u{85}").is_err(), "C1 controls too");
        assert_eq!(check_name("name", "CI runner 3").unwrap(), "CI runner 3");
    }

    #[test]
    fn emails_follow_one_rule_and_are_lowered() {
        assert_eq!(check_email("Ops@Example.COM").unwrap(), "ops@example.com");
        for bad in ["ops", "@example.com", "ops@", "a b@c", &format!("{}@b", "a".repeat(253))] {
            assert_eq!(field(check_email(bad).unwrap_err()), "email", "{bad}");
        }
    }

    #[test]
    fn key_ids_are_read_bare_or_from_the_key_prefix() {
        let id = KeyId::parse("AbCdEf123456").unwrap();
        assert_eq!(parse_key_id("AbCdEf123456"), Some(id));
        assert_eq!(parse_key_id("tg_live_AbCdEf123456"), Some(id));
        assert_eq!(parse_key_id("acme_trial_AbCdEf123456"), Some(id));
        for bad in ["", "tg_live_", "AbCdEf12345", "AbCdEf1234567", "tg_live_AbCdEf12345!"] {
            assert_eq!(parse_key_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_default_key_cap_is_one_an_account_may_have() {
        assert_eq!(check_key_cap(crate::store::DEFAULT_KEY_CAP).unwrap(), 10);
        assert!(check_key_cap(0).is_err() && check_key_cap(1001).is_err());
    }

    #[test]
    fn the_operator_grants_more_than_an_account_may() {
        let change = LimitChanges { requests_per_minute: Some(Some(5000)), ..LimitChanges::default() };
        let account = Actor::Account { id: "acct", tokens_ceiling: 100 };
        assert_eq!(field(change.apply(account, KeyLimits::default()).unwrap_err()), "limits.requests_per_minute");
        assert_eq!(change.apply(Actor::Operator, KeyLimits::default()).unwrap().requests_per_minute, Some(5000));
        let tokens = LimitChanges { tokens_per_month: Some(Some(101)), ..LimitChanges::default() };
        assert_eq!(field(tokens.apply(account, KeyLimits::default()).unwrap_err()), "limits.tokens_per_month");
        assert_eq!(tokens.apply(Actor::Operator, KeyLimits::default()).unwrap().tokens_per_month, Some(101));
    }

    #[test]
    fn effective_limits_mark_the_defaults() {
        let defaults = LimitsConfig {
            enabled: true,
            requests_per_minute: 60,
            requests_per_day: 10_000,
            concurrent_requests: 4,
            tokens_per_month: None,
            default_max_output_tokens: 4096,
            end_users_per_key: 100_000,
        };
        let own = KeyLimits { requests_per_minute: Some(2), ..KeyLimits::default() };
        let effective = EffectiveLimits::of(&own, &defaults);
        assert_eq!(effective.requests_per_minute, Effective { value: 2, own: true });
        assert_eq!(
            effective.to_string(),
            "2 rpm, 10000 per day (default), 4 concurrent (default), no key token quota (default)"
        );
    }
}

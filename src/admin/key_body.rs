//! The members of a key's JSON body, read alike on creation (`POST /v1/auth/keys`) and on change
//! (`PATCH /v1/auth/keys/{id}`): one struct, so the two cannot drift. Members that only creation takes
//! are refused on a change by name. What the values may be is the control plane's to check.

use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use super::body::{nullable, nullable_int, object, present, present_int};
use super::service::{EndUserLimitChanges, KeyChange, KeyRequest, LimitChanges, PolicyChanges};
use crate::auth::keys::KeyKind;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsBody {
    #[serde(default, deserialize_with = "nullable_int")]
    requests_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable_int")]
    requests_per_day: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable_int")]
    concurrent_requests: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable_int")]
    tokens_per_month: Option<Option<u64>>,
}

fn wide(v: Option<Option<u32>>) -> Option<Option<u64>> {
    v.map(|n| n.map(u64::from))
}

impl LimitsBody {
    /// The fields given (null: back to the default).
    fn changes(&self) -> LimitChanges {
        LimitChanges {
            requests_per_minute: wide(self.requests_per_minute),
            requests_per_day: wide(self.requests_per_day),
            concurrent_requests: wide(self.concurrent_requests),
            tokens_per_month: self.tokens_per_month,
        }
    }

    /// As per-end-user limits, which have no concurrency of their own.
    fn end_user_changes(&self) -> Result<EndUserLimitChanges, ApiError> {
        if self.concurrent_requests.is_some() {
            return Err(ApiError::invalid(
                "end_user_limits.concurrent_requests",
                "end users share their key's concurrency; set it on the key",
            ));
        }
        Ok(EndUserLimitChanges {
            requests_per_minute: wide(self.requests_per_minute),
            requests_per_day: wide(self.requests_per_day),
            tokens_per_month: self.tokens_per_month,
        })
    }
}

/// Every member a key body may carry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyBody {
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    project_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    providers: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "object")]
    limits: LimitsBody,
    #[serde(default, deserialize_with = "present_int")]
    expires_in_days: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    ip_allowlist: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    allowed_origins: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    allow_browser: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    provider_credential: Option<String>,
    #[serde(default, deserialize_with = "present")]
    require_identity: Option<bool>,
    #[serde(default, deserialize_with = "object")]
    end_user_limits: LimitsBody,
    #[serde(default, deserialize_with = "nullable_int")]
    max_output_tokens: Option<Option<u64>>,
}

impl KeyBody {
    fn policy(&self) -> Result<PolicyChanges, ApiError> {
        Ok(PolicyChanges {
            enabled: self.enabled,
            ip_allowlist: self.ip_allowlist.clone(),
            allowed_origins: self.allowed_origins.clone(),
            allow_browser: self.allow_browser,
            provider_credential: self.provider_credential.clone(),
            require_identity: self.require_identity,
            end_user_limits: self.end_user_limits.end_user_changes()?,
            max_output_tokens: self.max_output_tokens,
        })
    }

    /// A creation request for `account`: `name` is required; a key is `live` unless it says
    /// `publishable` (trial keys are only ever provisioned).
    pub(super) fn into_request(self, account: &str) -> Result<KeyRequest, ApiError> {
        let policy = self.policy()?;
        let kind = match self.kind.as_deref() {
            None | Some("live") => KeyKind::Live,
            Some("publishable") => KeyKind::Publishable,
            Some(_) => return Err(ApiError::invalid("kind", "must be \"live\" or \"publishable\"")),
        };
        let name = self.name.ok_or_else(|| ApiError::invalid("name", "missing field `name`"))?;
        // On creation a missing list already allows any; null is a change's way to say so.
        let list = |field: &str, list: Option<Option<Vec<String>>>| match list {
            Some(None) => Err(ApiError::invalid(field, "must be a list; leave it out to allow any")),
            other => Ok(other.flatten()),
        };
        let (providers, models) = (list("providers", self.providers)?, list("models", self.models)?);
        Ok(KeyRequest {
            kind,
            name,
            account: account.to_owned(),
            scopes: self.scopes,
            providers,
            models,
            limits: self.limits.changes(),
            expires_in_days: self.expires_in_days,
            project: self.project_id,
            description: self.description.flatten(),
            metadata: self.metadata.flatten(),
            policy,
        })
    }

    /// A change: every member but those fixed at creation.
    pub(super) fn into_change(self) -> Result<KeyChange, ApiError> {
        let fixed = [
            ("kind", self.kind.is_some()),
            ("project_id", self.project_id.is_some()),
            ("expires_in_days", self.expires_in_days.is_some()),
        ];
        if let Some((field, _)) = fixed.iter().find(|(_, given)| *given) {
            return Err(ApiError::invalid(field, "is set when a key is created and cannot be changed"));
        }
        Ok(KeyChange {
            policy: self.policy()?,
            name: self.name,
            scopes: self.scopes,
            providers: self.providers,
            models: self.models,
            limits: self.limits.changes(),
            description: self.description,
            metadata: self.metadata,
        })
    }
}

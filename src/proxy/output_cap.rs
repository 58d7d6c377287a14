//! A key's output-token cap (`max_output_tokens` in its policy): a request asking for more is refused
//! before anything is reserved, and one naming no cap is reserved at the key's cap instead of the
//! configured default.

use super::request_body::Inspected;
use crate::auth::Principal;
use crate::error::ProxyError;

/// Phase (after the body is read): the request's own output cap is within its key's.
pub fn check(principal: &Principal, facts: &Inspected) -> Result<(), ProxyError> {
    let Some(cap) = principal.key.policy.max_output_tokens else { return Ok(()) };
    match (facts.max_output, facts.max_output_member) {
        (Some(asked), Some(member)) if asked > u64::from(cap) => Err(ProxyError::OutputCapExceeded(format!(
            "`{}` is {asked}, over this key's output cap of {cap} tokens (max_output_tokens)",
            member.name()
        ))),
        _ => Ok(()),
    }
}

/// The output cap reserved for a request that names none: the key's cap, else `default`.
pub fn default_for(principal: &Principal, default: u64) -> u64 {
    principal.key.policy.max_output_tokens.map_or(default, u64::from)
}

//! A key's output-token cap (`max_output_tokens` in its policy): a request asking for more in any of
//! its output members is refused before anything is reserved; one naming none has the cap written into
//! its body, so the upstream stops there, and is reserved at the cap.

use bytes::Bytes;

use super::request_body::{Inspected, inspect_body, with_output_cap};
use crate::auth::Principal;
use crate::error::ProxyError;
use crate::providers::routes::Route;

/// Phase (after the body is read): the request's own output cap is within its key's. The largest of
/// its output members is compared, so every one of them is within the cap.
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

/// Phase (after the check): a request of a capped key naming no output member gets the key's cap in
/// the member its endpoint reads (the provider's table says which), spliced into the body; the body
/// is then inspected again, so the phases after this read the body the upstream will see.
pub fn write(
    principal: &Principal,
    route: &Route,
    (body, facts): (Bytes, Inspected),
) -> Result<(Bytes, Inspected), ProxyError> {
    let (Some(cap), Some(slot)) = (principal.key.policy.max_output_tokens, facts.cap_slot.as_ref()) else {
        return Ok((body, facts));
    };
    let body = with_output_cap(body, slot, u64::from(cap));
    let facts = inspect_body(route.provider.kind, route.endpoint, &body)?;
    Ok((body, facts))
}

/// The output cap reserved for a request that names none: the key's cap, else `default`.
pub fn default_for(principal: &Principal, default: u64) -> u64 {
    principal.key.policy.max_output_tokens.map_or(default, u64::from)
}

//! Trial keys on the data plane (README, Trial keys for first-time users). With `[trial]` on, a request to a
//! provider route that carries no service key at all is served under its device's trial key, issued on
//! first sight (`app::trial`); `X-Tollgate-Regenerate-Key: true` or the body member
//! `"tollgate": {"regenerate_key": true}` replaces it. A key issued by a request is shown once, in that
//! request's response: `X-Tollgate-Key-Provisioned` and `X-Tollgate-Claim-Url`, and for a non-streaming
//! JSON success a `"tollgate"` member added to the body. It appears nowhere else: not in the log line
//! (which names keys by prefix), not in metrics, not in errors.
//!
//! A regeneration asked for in the body is known only once the body is read, after the request was
//! admitted under the device's current key: that request is served and counted under the old key, and
//! its response shows the new one.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, header, request};

use crate::app::App;
use crate::app::trial::{DeviceKey, Issuer, TRIAL_ACCOUNT};
use crate::auth::keys::{KeyHasher, KeyKind, KeyRecord, SecretKey};
use crate::auth::trial::DeviceId;
use crate::auth::{self, Principal};
use crate::clock;
use crate::error::ProxyError;
use crate::providers::routes::Route;
use crate::proxy::body::ProxyBody;
use crate::proxy::request_body::{Inspected, inspect_body};
use crate::proxy::trial_body::{TollgateMember, read_member, without_member};

pub const X_KEY_PROVISIONED: &str = "x-tollgate-key-provisioned";
pub const X_CLAIM_URL: &str = "x-tollgate-claim-url";
pub const X_REGENERATE_KEY: &str = "x-tollgate-regenerate-key";

/// The device a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Device {
    id: DeviceId,
    ip: IpAddr,
}

/// A request served under (or regenerating) its device's trial key.
#[derive(Debug)]
pub struct TrialServed {
    device: Device,
    /// The key this request issued, to be shown once in its response.
    provisioned: Option<SecretKey>,
}

/// The device of a request from `client`: its address prefix and `User-Agent`, hashed.
fn device(app: &App, parts: &request::Parts, client: Option<IpAddr>) -> Option<Device> {
    let secret = app.config.trial.device_secret.as_ref()?;
    let ip = client?;
    let user_agent = parts.headers.get(header::USER_AGENT).map_or(&b""[..], HeaderValue::as_bytes);
    Some(Device { id: DeviceId::of(secret, ip, user_agent), ip })
}

fn issuer(app: &App) -> Issuer<'_> {
    Issuer {
        trials: &app.trials,
        store: &*app.store,
        keys: &app.keys,
        config: &app.config.trial,
        hasher: KeyHasher::new(app.config.keys.hash_secret),
        now: clock::unix_now(),
        mono_now: std::time::Instant::now(),
    }
}

fn regenerate_asked(headers: &http::HeaderMap) -> bool {
    headers.get(X_REGENERATE_KEY).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// Phase authenticate, trial on, no service key: the device's key (issued now if it has none, or
/// replaced when the request asks), as the principal.
pub async fn serve_device(
    app: &App,
    parts: &request::Parts,
    client: Option<IpAddr>,
    served: &mut Option<TrialServed>,
) -> Result<Principal, ProxyError> {
    // The operator switched trial serving off by disabling its account: a keyless request is then what it
    // is without trial.
    if app.keys.is_disabled(TRIAL_ACCOUNT) {
        return Err(ProxyError::MissingServiceKey);
    }
    // A request that would be refused for want of a provider key issues nothing.
    if !app.config.trial.server_credential {
        crate::proxy::credentials::provider_key(&parts.headers)?;
    }
    let device = device(app, parts, client).ok_or(ProxyError::MissingServiceKey)?;
    let issuer = issuer(app);
    let key = if regenerate_asked(&parts.headers) {
        issuer.regenerate(device.id, device.ip).await?
    } else {
        issuer.device_key(device.id, device.ip).await?
    };
    continue_limits(app, &key);
    if key.record.policy.disabled {
        return Err(ProxyError::KeyDisabled);
    }
    *served = Some(TrialServed { device, provisioned: key.provisioned });
    Ok(Principal::of_key(&app.keys, key.record))
}

/// Phase authenticate, a key presented: a device's own trial key sent with `X-Tollgate-Regenerate-Key:
/// true` is replaced, and the request served under the new one; any other key is left as it is.
pub async fn regenerate_presented(
    app: &App,
    parts: &request::Parts,
    client: Option<IpAddr>,
    principal: Principal,
    served: &mut Option<TrialServed>,
) -> Result<Principal, ProxyError> {
    if !regenerate_asked(&parts.headers) {
        return Ok(principal);
    }
    let Some(device) = own_device(app, parts, client, &principal.key) else {
        return Ok(principal);
    };
    let key = issuer(app).regenerate(device.id, device.ip).await?;
    continue_limits(app, &key);
    *served = Some(TrialServed { device, provisioned: key.provisioned });
    Ok(Principal::of_key(&app.keys, key.record))
}

/// A regenerated key continues its device's request limits where the old key left them, as its monthly
/// tokens do: regenerating buys no new budget.
fn continue_limits(app: &App, key: &DeviceKey) {
    if let Some(old) = key.replaced {
        crate::metering::limits::CounterBackend::inherit(&app.counters, old, key.record.id);
    }
}

/// The request's device, if trial is on and `key` is that device's trial key.
fn own_device(app: &App, parts: &request::Parts, client: Option<IpAddr>, key: &KeyRecord) -> Option<Device> {
    if !app.config.trial.enabled || key.kind != KeyKind::Trial || &*key.account != TRIAL_ACCOUNT {
        return None;
    }
    device(app, parts, client).filter(|d| app.trials.serves(d.id, key.id))
}

/// Phase read body: a `"tollgate"` member is removed (whether or not trial is on: it is tollgate's, never
/// the provider's) and the body inspected again without it; with trial on, `regenerate_key: true`
/// replaces the device's key.
pub async fn take_member(
    app: &App,
    route: &Route,
    parts: &request::Parts,
    (body, facts): (Bytes, Inspected),
    principal: &Principal,
    served: &mut Option<TrialServed>,
) -> Result<(Bytes, Inspected), ProxyError> {
    let Some(value) = facts.tollgate.clone() else {
        return Ok((body, facts));
    };
    let member = if app.config.trial.enabled { read_member(&body, &value)? } else { TollgateMember::default() };
    let body = without_member(&body, &value)
        .ok_or_else(|| ProxyError::InvalidJson("Request body has a `tollgate` member tollgate cannot remove".into()))?;
    let facts = inspect_body(route.provider.kind, route.endpoint, &body)?;
    if member.regenerate_key {
        regenerate_by_member(app, parts, principal, served).await?;
    }
    Ok((body, facts))
}

async fn regenerate_by_member(
    app: &App,
    parts: &request::Parts,
    principal: &Principal,
    served: &mut Option<TrialServed>,
) -> Result<(), ProxyError> {
    let device = match served {
        // Issued by this very request: already new.
        Some(s) if s.provisioned.is_some() => return Ok(()),
        Some(s) => s.device,
        None => {
            let client =
                auth::client::of_request(&parts.extensions, &parts.headers, &app.config.server.trusted_proxies);
            match own_device(app, parts, client, &principal.key) {
                Some(device) => device,
                None => return Ok(()),
            }
        }
    };
    let key = issuer(app).regenerate(device.id, device.ip).await?;
    continue_limits(app, &key);
    *served = Some(TrialServed { device, provisioned: key.provisioned });
    Ok(())
}

/// How a key's monthly tokens are counted: a device's trial key under its device, with the `[trial]`
/// quota; every other key under its account and plan.
pub fn counted_as(app: &App, key: &KeyRecord) -> (Arc<str>, u64) {
    match app.trials.quota_account(key) {
        Some(device) => (device, app.config.trial.tokens_per_month),
        None => (Arc::clone(&key.account), app.plans.quota(&key.account)),
    }
}

/// Shows a key this request issued, once: the headers on any response, and the body member on a
/// non-streaming JSON success. The secret leaves `served` here, so nothing after can show it again.
pub fn show_provisioned(
    app: &App,
    served: &mut Option<TrialServed>,
    streaming: bool,
    response: &mut Response<ProxyBody>,
) {
    let Some(secret) = served.as_mut().and_then(|s| s.provisioned.take()) else {
        return;
    };
    let claim_url = &app.config.trial.claim_url;
    let headers = response.headers_mut();
    if let (Ok(key), Ok(url)) = (HeaderValue::from_str(secret.expose()), HeaderValue::from_str(claim_url)) {
        headers.insert(X_KEY_PROVISIONED, key);
        headers.insert(X_CLAIM_URL, url);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    // An encoded body (an upstream that ignored the caller's encodings) cannot take a member spliced in
    // as text: the headers carry the key alone.
    let encoded = headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity");
    if streaming || !response.status().is_success() || !is_json || encoded {
        return;
    }
    if let ProxyBody::Upstream(body) = response.body_mut() {
        let member = serde_json::json!({"provisioned_key": secret.expose(), "claim_url": claim_url});
        body.add_member(Bytes::from(format!("\"tollgate\":{member}")));
        // The length grows by the member; the body goes out chunked (HTTP/1.1) or framed (HTTP/2).
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
}

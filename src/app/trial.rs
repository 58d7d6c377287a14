//! Trial keys of anonymous devices (README, Trial keys for first-time users): which key serves each device,
//! the issuance throttle, and issuing and regenerating keys. Every active device link is loaded at start
//! and kept here, so serving a known device costs a map lookup; only issuance writes to the store (the one
//! store write the data plane makes, rare and throttled), and the store's unique index keeps a device at
//! one key however many of its first requests race.
//!
//! A device's monthly token quota is counted under a name of its own (`DeviceId::quota_account`) rather
//! than per key, so regenerating a key does not reset it; the key's usage rows carry that name until the
//! key is claimed into an account.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::auth::access::{KeyAccess, Scopes};
use crate::auth::keys::{self, KeyHasher, KeyId, KeyKind, KeyLimits, KeyRecord, KeyTable, SecretKey};
use crate::auth::policy::{KeyPolicy, ProviderCredential};
use crate::auth::trial::{DeviceId, IssuanceThrottle, IssueLimits};
use crate::config::TrialConfig;
use crate::error::ProxyError;
pub use crate::store::TRIAL_ACCOUNT;
use crate::store::{HashedKey, KeyIdentity, NewKey, Store, StoreError, TrialIssue};

/// The trial keys this instance knows of, and the issuance throttle.
pub struct Trials {
    throttle: IssuanceThrottle,
    /// Each device's active trial key.
    devices: DashMap<DeviceId, KeyId>,
    /// Each unclaimed trial key's device, and the name its quota is counted under.
    quota_accounts: DashMap<KeyId, (DeviceId, Arc<str>)>,
    /// Devices being issued a key right now, one request at a time each.
    issuing: DashMap<DeviceId, Arc<tokio::sync::Mutex<()>>>,
}

/// A device's key as this instance knows it.
enum Current {
    Serving(Arc<KeyRecord>),
    /// Past its `ttl`: replaced on its next use.
    Expired,
    None,
}

/// A device's key for one request: the key, and its secret when it was issued by this request.
pub struct DeviceKey {
    pub record: Arc<KeyRecord>,
    /// Shown once, in this request's response.
    pub provisioned: Option<SecretKey>,
    /// The device's key this one replaced, whose limits it continues.
    pub replaced: Option<KeyId>,
}

impl Trials {
    /// Loads every device link from the store.
    pub async fn load(store: &dyn Store, config: &TrialConfig) -> Result<Trials, StoreError> {
        let trials = Trials {
            throttle: IssuanceThrottle::new(IssueLimits {
                per_prefix: config.issue_per_prefix_per_hour,
                per_ipv6_48: config.issue_per_ipv6_48_per_hour,
                total: config.issue_per_hour,
            }),
            devices: DashMap::new(),
            quota_accounts: DashMap::new(),
            issuing: DashMap::new(),
        };
        if config.enabled {
            for (key, device) in store.trial_devices().await? {
                trials.link(DeviceId(device), key);
            }
        }
        Ok(trials)
    }

    fn link(&self, device: DeviceId, key: KeyId) {
        self.devices.insert(device, key);
        self.quota_accounts.insert(key, (device, Arc::from(device.quota_account())));
    }

    /// The name a trial key's monthly tokens are counted under while it serves a device, `None` for
    /// every other key (a claimed trial key counts under its account like any key).
    pub fn quota_account(&self, key: &KeyRecord) -> Option<Arc<str>> {
        if key.kind != KeyKind::Trial || &*key.account != TRIAL_ACCOUNT {
            return None;
        }
        self.quota_accounts.get(&key.id).map(|a| Arc::clone(&a.value().1))
    }

    /// Whether `key` is the active trial key of `device`.
    pub fn serves(&self, device: DeviceId, key: KeyId) -> bool {
        self.devices.get(&device).is_some_and(|k| *k == key)
    }

    /// Forgets a key that left trial (claimed into an account): its device gets a new key next time.
    pub fn forget_key(&self, key: KeyId) {
        if let Some((_, (device, _))) = self.quota_accounts.remove(&key) {
            self.devices.remove_if(&device, |_, k| *k == key);
        }
    }
}

/// What issuing needs of the app.
pub struct Issuer<'a> {
    pub trials: &'a Trials,
    pub store: &'a dyn Store,
    pub keys: &'a KeyTable,
    pub config: &'a TrialConfig,
    pub hasher: KeyHasher,
    /// Unix seconds.
    pub now: i64,
    /// For the throttle.
    pub mono_now: std::time::Instant,
}

impl Issuer<'_> {
    /// The key that serves `device` from `ip`: its active key, or a new one (throttled) when it has
    /// none, or its key expired, was revoked or was claimed. Concurrent first requests of one device take
    /// turns, so only the first issues (and spends the throttle); the others find its key.
    pub async fn device_key(&self, device: DeviceId, ip: std::net::IpAddr) -> Result<DeviceKey, ProxyError> {
        if let Current::Serving(record) = self.current(device) {
            return Ok(DeviceKey { record, provisioned: None, replaced: None });
        }
        self.in_turn(device, async {
            match self.current(device) {
                Current::Serving(record) => Ok(DeviceKey { record, provisioned: None, replaced: None }),
                Current::Expired => self.replace(device, ip).await,
                Current::None => self.issue(device, ip).await,
            }
        })
        .await
    }

    /// Revokes the device's key and issues a new one (throttled like any issuance).
    pub async fn regenerate(&self, device: DeviceId, ip: std::net::IpAddr) -> Result<DeviceKey, ProxyError> {
        self.in_turn(device, self.replace(device, ip)).await
    }

    /// Runs `work` while no other issuance for `device` runs on this instance.
    async fn in_turn<T>(&self, device: DeviceId, work: impl std::future::Future<Output = T>) -> T {
        let gate = Arc::clone(self.trials.issuing.entry(device).or_default().value());
        let result = {
            let _turn = gate.lock().await;
            work.await
        };
        drop(gate);
        self.trials.issuing.remove_if(&device, |_, g| Arc::strong_count(g) == 1);
        result
    }

    /// The device's key as this instance knows it.
    fn current(&self, device: DeviceId) -> Current {
        let known = self.trials.devices.get(&device).map(|k| *k);
        match known.and_then(|id| self.keys.get(id)).filter(|r| &*r.account == TRIAL_ACCOUNT) {
            Some(record) if record.expires_at.is_none_or(|at| self.now < at) => Current::Serving(record),
            Some(_) => Current::Expired,
            None => Current::None,
        }
    }

    /// A first key for the device (or one after its last was revoked or claimed elsewhere).
    async fn issue(&self, device: DeviceId, ip: std::net::IpAddr) -> Result<DeviceKey, ProxyError> {
        if let Some(stale) = self.trials.devices.get(&device).map(|k| *k) {
            self.trials.forget_key(stale);
        }
        self.trials
            .throttle
            .take(ip, self.mono_now)
            .map_err(|r| ProxyError::TrialIssuanceLimited(r.retry_after_secs))?;
        let (secret, key) = self.mint()?;
        let issue = self.store.create_trial_key(device.0, key).await.map_err(unavailable)?;
        Ok(self.installed(device, issue, secret))
    }

    /// The device's key revoked and a new one written in its place (throttled like any issuance).
    async fn replace(&self, device: DeviceId, ip: std::net::IpAddr) -> Result<DeviceKey, ProxyError> {
        self.trials
            .throttle
            .take(ip, self.mono_now)
            .map_err(|r| ProxyError::TrialIssuanceLimited(r.retry_after_secs))?;
        let (secret, key) = self.mint()?;
        let issue = self.store.replace_trial_key(device.0, key, self.now).await.map_err(unavailable)?;
        let mut replaced = None;
        if let Some(old) = self.trials.devices.get(&device).map(|k| *k) {
            // Only a key still in trial was revoked with the device's; one claimed elsewhere since (the
            // link here not yet followed) is its account's now and stays.
            if let Some(record) = self.keys.get(old).filter(|r| &*r.account == TRIAL_ACCOUNT) {
                // The revoked key leaves this instance's table at once.
                self.keys.upsert(KeyRecord { revoked_at: Some(self.now), ..(*record).clone() });
                replaced = Some(old);
            }
            self.trials.forget_key(old);
        }
        Ok(DeviceKey { replaced, ..self.installed(device, issue, secret) })
    }

    /// Puts the device's key into the key table and the device links; its secret goes with it only if
    /// this request wrote it.
    fn installed(&self, device: DeviceId, issue: TrialIssue, secret: SecretKey) -> DeviceKey {
        let record = Arc::new(issue.record.clone());
        self.keys.upsert(issue.record);
        self.trials.link(device, record.id);
        DeviceKey { record, provisioned: issue.created.then_some(secret), replaced: None }
    }

    /// A new trial key under the `[trial]` settings.
    fn mint(&self) -> Result<(SecretKey, HashedKey), ProxyError> {
        let prefix = self.keys.prefix();
        let (secret, parsed) = keys::generate(prefix, KeyKind::Trial).map_err(|_| ProxyError::TrialUnavailable)?;
        let identity = KeyIdentity {
            id: parsed.id,
            key_prefix: keys::key_prefix(prefix, KeyKind::Trial, parsed.id),
            hash: self.hasher.hash(secret.expose()),
            public_key: None,
        };
        Ok((secret, HashedKey { identity, key: trial_key(self.config, self.now) }))
    }
}

/// The settings of a new trial key: the `[trial]` limits, scopes and models, and its lifetime.
pub fn trial_key(config: &TrialConfig, now: i64) -> NewKey {
    let limits = KeyLimits {
        requests_per_minute: Some(config.requests_per_minute),
        requests_per_day: Some(config.requests_per_day),
        concurrent_requests: Some(config.concurrent_requests),
        tokens_per_month: Some(config.tokens_per_month),
    };
    let access = KeyAccess {
        // The names were checked with the configuration.
        scopes: Scopes::from_names(config.scopes.iter().map(String::as_str)).unwrap_or_default(),
        providers: None,
        models: config.models.clone(),
    };
    let ttl = config.ttl.map(|d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    NewKey {
        kind: KeyKind::Trial,
        name: "trial".to_owned(),
        account: TRIAL_ACCOUNT.to_owned(),
        limits,
        access,
        policy: KeyPolicy {
            provider_credential: if config.server_credential {
                ProviderCredential::Server
            } else {
                ProviderCredential::Caller
            },
            max_output_tokens: config.max_output_tokens,
            ..KeyPolicy::default()
        },
        project: None,
        description: None,
        metadata: None,
        created_at: now,
        expires_at: ttl.map(|t| now.saturating_add(t)),
    }
}

fn unavailable(e: StoreError) -> ProxyError {
    tracing::error!(error = %e, "trial key issuance failed");
    ProxyError::TrialUnavailable
}

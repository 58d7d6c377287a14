//! The Redis counter backend: the counters of every instance in one Redis, so a key's limits hold across
//! instances as they hold in one (docs/ARCHITECTURE.md, The seams, Counters).
//!
//! Each step is one Lua script run atomically by Redis (EVALSHA; loaded at start, reloaded on NOSCRIPT),
//! one round trip each. The admission (`admission.lua`, see `admission`) runs once the request's cost is
//! known, after its body: it checks and records every request limit (the key's end users, concurrency,
//! GCRA per minute, per UTC day, the end user's per minute and per day) all or nothing, then reserves the
//! key's, the end user's and the account's monthly tokens all or nothing. A request refused for tokens
//! still counts against the per-minute and per-day limits, as in the memory backend, but holds no slot. A
//! settle or release ends the reservation and frees the concurrency slot.
//!
//! Before the body, [`CounterBackend::admit_request`] asks nothing of Redis: the request takes one of its
//! key's places on this instance (at most the key's concurrency here), so one key's slow or oversized
//! bodies still hold at most its concurrency per instance, and a request dropped before its reservation
//! (a body too large, a model it may not use) costs no call. Such a request is not counted against the
//! per-minute and per-day limits, which the memory backend counts before the body; those it would refuse
//! are refused after the body instead, at the admission.
//!
//! Keys, all under `<prefix>:{a:<account tag>}` (the tag is a hash of the account name), so every script
//! touches one Redis Cluster slot: `:k:<key>` (hash: `tat`, `day`, `dayreq`, `month`, `used`,
//! `reserved`), `:k:<key>:fl` (zset of in-flight slots scored by their lease's end), `:k:<key>:eu` (zset
//! of the key's end users, scored by when each stops counting), `:u:<key>:<end user>` (hash, as the
//! key's), `:a` (the account's hash: `month`, `used`, `reserved`), `:res` (zset of the
//! account's reservations scored by their lease's end) and `:resd` (hash: reservation → `amount|key
//! hash|end-user hash`). Putting a whole account in one slot is what lets one script check the key and
//! the plan together; the cost is that one account's counters live on one shard. A reservation whose
//! holder vanished (a crashed instance) ends when its lease runs out, at the next script that touches its
//! account; the scripts that end such reservations write the key and end-user hashes the detail names,
//! which are in the same slot but not declared in `KEYS`.
//!
//! Time: rates and leases read the instances' wall clocks in microseconds (the monotonic clock moved onto
//! the wall clock once, at start), so the instances' clocks must agree (NTP): a skew of `d` lets a key's
//! GCRA admit about `d × rate` more. Days and months are the UTC ones of [`Now::unix`].
//!
//! When Redis fails or takes longer than `counters.timeout`, the call counts as a failure of the
//! [`Breaker`], which after a few opens and sends nothing for a while. Meanwhile request limits are
//! checked by this instance's own [`MemoryCounters`], with each limit divided by `counters.instances`;
//! token reservations are refused ([`LimitKind::CountersUnavailable`], a 503) unless
//! `counters.on_unavailable = "local"`, which reserves against local quotas divided the same way; a
//! reservation of no tokens (a free route) is always taken locally.
//!
//! Settles and releases never wait: a ticket spawns its ending on the runtime, retried a few times; if
//! Redis stays away, the lease ends the reservation, charging all of it.
//!
//! The per-key cap of end users (`limits.end_users_per_key`) is counted by the admission script in the
//! key's end-users zset: an end user stops counting when its limits count nothing more, as the memory
//! backend's sweep forgets it (its rate back to a full burst, and the day when it has a day limit, the
//! month when it has a token quota), and a new one beyond the cap is refused ([`LimitKind::EndUsers`]).
//! Unlike the memory backend it does not wait for the end user's requests in flight to end, and end
//! users carried from the store are counted at their first admission.

mod admission;
mod breaker;
mod connect;
mod ending;
#[cfg(test)]
mod tests;
mod tickets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use dashmap::DashMap;

use super::gcra::Rate;
use super::memory::{self, MemoryCounters};
use super::{
    Carried, CounterBackend, EffectiveLimits, EndUser, EndUserLimits, LimitKind, Now, RateHeaders, Refusal,
    ReservationTicket, Subject, end_users,
};
use crate::auth::keys::KeyId;
use crate::config::counters::{CountersConfig, OnUnavailable, redact_url};
pub use breaker::Breaker;
use connect::{OpenError, open};
pub use connect::{check, wall_offset};
use ending::Ending;
pub use tickets::{LocalPlace, PendingPermit, Permit, RemoteTicket, Ticket};

/// The most timeouts a call waits while Redis is alive but its answer is late (see `Shared::call`).
pub(super) const SLOW_CALL_LIMIT: u32 = 20;

/// Counters outlive their month by a few days, then Redis forgets them.
const TTL_SECS: u64 = 35 * 86_400;

const COMMON: &str = include_str!("common.lua");

struct Scripts {
    admission: Script,
    settle: Script,
    seed: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// Why Redis did not answer.
#[derive(Debug, PartialEq, Eq)]
enum Down {
    /// Nothing was sent: the breaker is open, or there is no connection yet.
    Unsent,
    /// Sent, and no answer came (an error or the timeout): Redis may still have run the script.
    Unanswered,
}

/// The Redis keys of one subject (see the module doc).
#[derive(Debug, Default)]
struct Keys {
    key: String,
    flight: String,
    users: String,
    end_user: String,
    account: String,
    res: String,
    resd: String,
}

pub struct RedisCounters {
    shared: Arc<Shared>,
}

struct Shared {
    /// Set once Redis has answered (at start, or later when it was unreachable then).
    conn: std::sync::OnceLock<ConnectionManager>,
    scripts: Scripts,
    prefix: String,
    timeout: Duration,
    breaker: Breaker,
    /// The fallback while Redis is away.
    local: MemoryCounters,
    instances: u32,
    on_unavailable: OnUnavailable,
    lease_us: u64,
    /// Added to [`Now::mono_ns`] to read the wall clock.
    offset_ns: i128,
    /// Reservation and slot ids: this instance's random high half, a counter in the low half.
    next_id: AtomicU64,
    runtime: tokio::runtime::Handle,
    /// Endings spawned and not finished, for [`RedisCounters::settled`].
    pending: AtomicUsize,
    drained: tokio::sync::Notify,
    /// Admissions checked locally because Redis was away.
    fallbacks: AtomicU64,
    /// Reservations refused because Redis was away.
    refused_unavailable: AtomicU64,
    /// Each key's account, as last seen (end users' seeds and inheritance need it).
    accounts: DashMap<KeyId, Arc<str>>,
    /// The places each key holds on this instance (see `admission`); a key holding none has no entry.
    places: DashMap<KeyId, admission::Places>,
    /// `limits.end_users_per_key`, or `None` for no cap.
    end_user_cap: Option<u32>,
}

/// Why [`RedisCounters::connect`] failed; the URL in it has no password.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl RedisCounters {
    /// Connects to `config.url` and loads the scripts. `lease`: how long a reservation or a concurrency
    /// slot may stay open; `offset_ns`: see [`wall_offset`]. Must be called on a Tokio runtime. A Redis
    /// that refuses (a wrong password, a certificate not trusted) is an error; one that does not answer
    /// yet is not: the counters start degraded and connect in the background.
    pub async fn connect(
        config: &CountersConfig,
        lease: Duration,
        end_user_cap: u32,
        offset_ns: i128,
    ) -> Result<RedisCounters, ConnectError> {
        let url = config.url.as_deref().ok_or_else(|| ConnectError("counters.url: not set".into()))?;
        let scripts = Scripts {
            admission: script(include_str!("admission.lua")),
            settle: script(include_str!("settle.lua")),
            seed: script(include_str!("seed.lua")),
        };
        let conn = std::sync::OnceLock::new();
        match open(config, url).await {
            Ok(mut opened) => {
                for s in [&scripts.admission, &scripts.settle, &scripts.seed] {
                    s.prepare_invoke().load_async(&mut opened).await.map_err(|e| {
                        ConnectError(format!("counters.url ({}): loading a script: {e}", redact_url(url)))
                    })?;
                }
                let _ = conn.set(opened);
            }
            Err(OpenError::Refused(text)) => return Err(ConnectError(text)),
            Err(OpenError::Unreachable(text)) => {
                tracing::warn!(error = %text, "redis counters unreachable at start; limits are checked locally until it answers");
            }
        }
        let mut high = [0u8; 4];
        getrandom::fill(&mut high).map_err(|e| ConnectError(format!("no randomness: {e}")))?;
        let shared = Shared {
            conn,
            scripts,
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            local: MemoryCounters::new(lease).with_end_user_cap(end_user_cap),
            instances: config.instances.max(1),
            on_unavailable: config.on_unavailable,
            lease_us: u64::try_from(lease.as_micros()).unwrap_or(u64::MAX / 4),
            offset_ns,
            next_id: AtomicU64::new(u64::from(u32::from_le_bytes(high)) << 32),
            runtime: tokio::runtime::Handle::current(),
            pending: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            fallbacks: AtomicU64::new(0),
            refused_unavailable: AtomicU64::new(0),
            accounts: DashMap::new(),
            places: DashMap::new(),
            end_user_cap: (end_user_cap != u32::MAX).then_some(end_user_cap),
        };
        let shared = Arc::new(shared);
        if shared.conn.get().is_none() {
            for _ in 0..config.breaker_failures {
                shared.breaker.failure();
            }
            let (later, config, url) = (Arc::clone(&shared), config.clone(), url.to_owned());
            shared.runtime.spawn(async move {
                // Scripts are loaded by their first call (NOSCRIPT).
                loop {
                    tokio::time::sleep(config.breaker_cooldown).await;
                    if let Ok(opened) = open(&config, &url).await {
                        let _ = later.conn.set(opened);
                        return;
                    }
                }
            });
        }
        Ok(RedisCounters { shared })
    }

    /// Redis failed its last calls: the breaker is open (or probing), limits are checked locally.
    pub fn degraded(&self) -> bool {
        self.shared.breaker.is_open()
    }

    /// Reads (degraded, admissions checked locally) at any time, for the metrics.
    pub fn watch(&self) -> impl Fn() -> (bool, u64) + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || (shared.breaker.is_open(), shared.fallbacks.load(Ordering::Relaxed))
    }

    /// Admissions checked locally and reservations refused, both because Redis was away.
    pub fn unavailable_counts(&self) -> (u64, u64) {
        (self.shared.fallbacks.load(Ordering::Relaxed), self.shared.refused_unavailable.load(Ordering::Relaxed))
    }

    /// Waits until every settle, release and seed spawned so far has finished (or given up).
    pub async fn settled(&self) {
        loop {
            let notified = self.shared.drained.notified();
            if self.shared.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Shared {
    fn keys(&self, key: KeyId, account: &str, end_user: Option<&str>) -> Keys {
        let tag = blake3::hash(account.as_bytes()).to_hex();
        let base = format!("{}:{{a:{}}}", self.prefix, &tag[..16]);
        Keys {
            key: format!("{base}:k:{key}"),
            flight: format!("{base}:k:{key}:fl"),
            users: format!("{base}:k:{key}:eu"),
            end_user: end_user.map_or_else(|| format!("{base}:u:-"), |u| format!("{base}:u:{key}:{u}")),
            account: format!("{base}:a"),
            res: format!("{base}:res"),
            resd: format!("{base}:resd"),
        }
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn micros(&self, now: Now) -> u64 {
        u64::try_from((i128::from(now.mono_ns) + self.offset_ns) / 1000).unwrap_or(0)
    }

    /// One script call, through the breaker and within the timeout. A call past its timeout while Redis
    /// answers others, or while this instance's own runtime is too busy to have looked in time (its timer
    /// fired late), is not Redis failing: its answer is queued behind others, so it waits on, a timeout at
    /// a time, up to [`SLOW_CALL_LIMIT`] timeouts in all. A Redis that answers nothing fails the call at
    /// its timeout, as does any error.
    async fn call<T: ::redis::FromRedisValue>(&self, inv: &::redis::ScriptInvocation<'_>) -> Result<T, Down> {
        if !self.breaker.allow() {
            return Err(Down::Unsent);
        }
        let Some(mut conn) = self.conn.get().cloned() else {
            self.breaker.failure();
            return Err(Down::Unsent);
        };
        let sent = tokio::time::Instant::now();
        let call = inv.invoke_async(&mut conn);
        tokio::pin!(call);
        let mut deadline = sent + self.timeout;
        let limit = sent + self.timeout.saturating_mul(SLOW_CALL_LIMIT);
        loop {
            match tokio::time::timeout_at(deadline, &mut call).await {
                Ok(Ok(value)) => {
                    self.breaker.success();
                    return Ok(value);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "redis counters call failed");
                    break;
                }
                Err(_) => {
                    let late = tokio::time::Instant::now().saturating_duration_since(deadline) > self.timeout / 2;
                    if deadline < limit && (late || self.breaker.succeeded_since(sent.into_std())) {
                        deadline = (deadline + self.timeout).min(limit);
                        continue;
                    }
                    break;
                }
            }
        }
        self.breaker.failure();
        Err(Down::Unanswered)
    }

    /// The subject as this instance's share of its limits: each divided by the instance count.
    fn local_subject(&self, s: &Subject) -> Subject {
        let n = self.instances;
        let div = |v: u32| (v / n).max(1);
        let per_minute = div(s.limits.per_minute);
        let end_user = s.end_user.as_ref().map(|e| EndUser {
            id: Arc::clone(&e.id),
            limits: EndUserLimits {
                requests_per_minute: e.limits.requests_per_minute.map(div),
                requests_per_day: e.limits.requests_per_day.map(div),
                tokens_per_month: e.limits.tokens_per_month.map(|t| t / u64::from(n)),
            },
        });
        Subject {
            key: s.key,
            account: Arc::clone(&s.account),
            limits: EffectiveLimits {
                rate: Rate::per_minute(per_minute),
                per_minute,
                per_day: div(s.limits.per_day),
                concurrency: div(s.limits.concurrency),
                key_tokens: s.limits.key_tokens.map(|t| t / u64::from(n)),
            },
            plan_tokens: s.plan_tokens / u64::from(n),
            end_user,
        }
    }

    async fn admit_locally(&self, subject: &Subject, now: Now) -> Result<memory::Permit, Refusal> {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        let local = self.local_subject(subject);
        self.local.admit_request(&local, now).await
    }

    fn unavailable(&self) -> Refusal {
        self.refused_unavailable.fetch_add(1, Ordering::Relaxed);
        Refusal {
            limit: LimitKind::CountersUnavailable,
            retry_after_secs: 1,
            headers: RateHeaders {
                limit_requests: 0,
                remaining_requests: 0,
                reset_requests_ns: 0,
                limit_tokens: 0,
                remaining_tokens: 0,
                reset_tokens_secs: 0,
            },
        }
    }
}

impl CounterBackend for RedisCounters {
    type Permit = Permit;
    type Ticket = Ticket;

    /// No call: a place among the key's requests on this instance (see `admission`), or, while the
    /// breaker keeps Redis away, the local fallback's request limits.
    async fn admit_request(&self, subject: &Subject, now: Now) -> Result<Permit, Refusal> {
        let s = &self.shared;
        if s.accounts.get(&subject.key).is_none_or(|a| *a.value() != subject.account) {
            s.accounts.insert(subject.key, Arc::clone(&subject.account));
        }
        if s.breaker.cooling() {
            return s.admit_locally(subject, now).await.map(Permit::Local);
        }
        self.take_place(subject).map(Permit::Pending)
    }

    /// The one Redis call of an admission (see `admission`).
    async fn reserve(&self, permit: Permit, cost: u64, now: Now) -> Result<Ticket, Refusal> {
        match permit {
            Permit::Pending(p) => self.admit_and_reserve(p, cost, now).await,
            Permit::Local(p) => match self.shared.on_unavailable {
                OnUnavailable::FailClosed if cost > 0 => Err(self.shared.unavailable()),
                _ => self.shared.local.reserve(p, cost, now).await.map(Ticket::Local),
            },
        }
    }

    /// Seeds the key's counters where Redis holds none yet (a fresh Redis); spawned, not awaited.
    fn carry(&self, key: KeyId, account: &Arc<str>, carried: Carried, now: Now) {
        self.shared.accounts.insert(key, Arc::clone(account));
        let keys = self.shared.keys(key, account, None);
        ending::spawn(&self.shared, Ending::Seed { hash: keys.key, account: Some(keys.account), carried, now });
    }

    fn carry_end_user(&self, key: KeyId, end_user: &str, carried: Carried, now: Now) {
        let Some(account) = self.shared.accounts.get(&key).map(|a| Arc::clone(a.value())) else {
            return;
        };
        let keys = self.shared.keys(key, &account, Some(end_user));
        ending::spawn(&self.shared, Ending::Seed { hash: keys.end_user, account: None, carried, now });
    }

    /// Ends the local fallback's expired reservations; Redis's end inside the scripts (see the module doc).
    fn sweep(&self, now: Now) -> usize {
        self.shared.local.sweep(now)
    }

    /// Redis forgets a key's counters when they expire; this forgets what the instance holds.
    fn forget(&self, known: impl Fn(KeyId) -> bool) -> usize {
        self.shared.accounts.retain(|id, _| known(*id));
        self.shared.local.forget(known)
    }

    /// Moves `from`'s counters to `to` (same account, so same slot): its hash, its in-flight slots and its
    /// end users.
    fn inherit(&self, from: KeyId, to: KeyId) {
        self.shared.local.inherit(from, to);
        let Some(account) = self.shared.accounts.get(&from).map(|a| Arc::clone(a.value())) else {
            return;
        };
        self.shared.accounts.insert(to, Arc::clone(&account));
        let (from, to) = (self.shared.keys(from, &account, None), self.shared.keys(to, &account, None));
        ending::spawn(&self.shared, Ending::Inherit { from: from.key, to: to.key });
        ending::spawn(&self.shared, Ending::Inherit { from: from.flight, to: to.flight });
        ending::spawn(&self.shared, Ending::Inherit { from: from.users, to: to.users });
    }
}

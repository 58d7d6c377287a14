//! The Redis counter backend: the counters of every instance in one Redis, so a key's limits hold across
//! instances as they hold in one (docs/ARCHITECTURE.md, The seams, Counters).
//!
//! Each step is one Lua script run atomically by Redis (EVALSHA; loaded at start, reloaded on NOSCRIPT):
//! admission checks and records every request limit (concurrency, GCRA per minute, per UTC day, the end
//! user's per minute and per day) all or nothing; a reservation checks and reserves the key's, the end
//! user's and the account's monthly tokens all or nothing; a settle or release ends the reservation and
//! frees the concurrency slot. One round trip each.
//!
//! Keys, all under `<prefix>:{a:<account tag>}` (the tag is a hash of the account name), so every script
//! touches one Redis Cluster slot: `:k:<key>` (hash: `tat`, `day`, `dayreq`, `month`, `used`,
//! `reserved`), `:k:<key>:fl` (zset of in-flight slots scored by their lease's end), `:u:<key>:<end user>`
//! (hash, as the key's), `:a` (the account's hash: `month`, `used`, `reserved`), `:res` (zset of the
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
//! Settles and releases never wait: a ticket (or a permit dropped before its reservation) spawns its
//! ending on the runtime, retried a few times; if Redis stays away, the lease ends the reservation,
//! charging all of it. The per-key cap of end users (`limits.end_users_per_key`) is not counted here:
//! an end user's hash expires with its month instead.

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
use crate::clock;
use crate::config::counters::{CountersConfig, OnUnavailable, redact_url};
pub use breaker::Breaker;
use connect::{OpenError, open};
pub use connect::{check, wall_offset};
use ending::Ending;
pub use tickets::{Permit, RemotePermit, RemoteTicket, Ticket};

/// Counters outlive their month by a few days, then Redis forgets them.
const TTL_SECS: u64 = 35 * 86_400;

const COMMON: &str = include_str!("common.lua");

struct Scripts {
    admit: Script,
    reserve: Script,
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
#[derive(Debug)]
struct Keys {
    key: String,
    flight: String,
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
            admit: script(include_str!("admit.lua")),
            reserve: script(include_str!("reserve.lua")),
            settle: script(include_str!("settle.lua")),
            seed: script(include_str!("seed.lua")),
        };
        let conn = std::sync::OnceLock::new();
        match open(config, url).await {
            Ok(mut opened) => {
                for s in [&scripts.admit, &scripts.reserve, &scripts.settle, &scripts.seed] {
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

    /// One script call, through the breaker and within the timeout.
    async fn call<T: ::redis::FromRedisValue>(&self, inv: &::redis::ScriptInvocation<'_>) -> Result<T, Down> {
        if !self.breaker.allow() {
            return Err(Down::Unsent);
        }
        let Some(mut conn) = self.conn.get().cloned() else {
            self.breaker.failure();
            return Err(Down::Unsent);
        };
        match tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await {
            Ok(Ok(value)) => {
                self.breaker.success();
                Ok(value)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis counters call failed");
                self.breaker.failure();
                Err(Down::Unanswered)
            }
            Err(_) => {
                self.breaker.failure();
                Err(Down::Unanswered)
            }
        }
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

/// What the admission script answered, as numbers.
struct Admitted {
    code: i64,
    wait_us: u64,
    tat: u64,
    key: (u64, u64),
    account: (u64, u64),
}

fn n(v: &[i64], i: usize) -> u64 {
    v.get(i).map_or(0, |x| u64::try_from(*x).unwrap_or(0))
}

fn headers(limits: &EffectiveLimits, plan_tokens: u64, a: &Admitted, now_us: u64, now: Now) -> RateHeaders {
    let remaining = |quota: u64, (used, reserved): (u64, u64)| quota.saturating_sub(used.saturating_add(reserved));
    let account_remaining = remaining(plan_tokens, a.account);
    let (limit_tokens, remaining_tokens) = match limits.key_tokens {
        Some(quota) if remaining(quota, a.key) < account_remaining => (quota, remaining(quota, a.key)),
        _ => (plan_tokens, account_remaining),
    };
    let backlog_us = a.tat.saturating_sub(now_us);
    let interval_us = (limits.rate.interval_ns / 1000).max(1);
    RateHeaders {
        limit_requests: u64::from(limits.per_minute),
        remaining_requests: limits.rate.burst.saturating_sub(backlog_us.div_ceil(interval_us)),
        reset_requests_ns: backlog_us.saturating_mul(1000),
        limit_tokens,
        remaining_tokens,
        reset_tokens_secs: u64::try_from(clock::next_month_start(now.unix) - now.unix).unwrap_or(0),
    }
}

fn until(next: i64, now: Now) -> u64 {
    u64::try_from(next.saturating_sub(now.unix)).unwrap_or(0)
}

fn refusal_of(code: i64) -> LimitKind {
    match code {
        1 => LimitKind::Concurrency,
        2 => LimitKind::RequestsPerMinute,
        3 => LimitKind::RequestsPerDay,
        4 => LimitKind::EndUserRequestsPerMinute,
        5 => LimitKind::EndUserRequestsPerDay,
        6 => LimitKind::KeyTokens,
        7 => LimitKind::EndUserTokens,
        _ => LimitKind::AccountTokens,
    }
}

impl RedisCounters {
    async fn admit(&self, subject: &Subject, now: Now) -> Result<Permit, Refusal> {
        let s = &self.shared;
        let end_user = end_users::limited(subject.end_user.as_ref());
        let keys = s.keys(subject.key, &subject.account, end_user.map(|e| &*e.id));
        if s.accounts.get(&subject.key).is_none_or(|a| *a.value() != subject.account) {
            s.accounts.insert(subject.key, Arc::clone(&subject.account));
        }
        let (slot, now_us, l) = (s.id(), s.micros(now), subject.limits);
        let eu_rate = end_user.and_then(|e| e.limits.requests_per_minute).map(Rate::per_minute);
        let eu_per_day = end_user.and_then(|e| e.limits.requests_per_day).map_or(-1, i64::from);
        let mut inv = s.scripts.admit.prepare_invoke();
        inv.key(&keys.key).key(&keys.flight).key(&keys.end_user).key(&keys.account).key(&keys.res).key(&keys.resd);
        inv.arg(now_us).arg(clock::day_of(now.unix)).arg(clock::month_of(now.unix));
        inv.arg((l.rate.interval_ns / 1000).max(1)).arg(l.rate.burst).arg(l.per_day).arg(l.concurrency);
        inv.arg(slot).arg(s.lease_us).arg(TTL_SECS).arg(u8::from(end_user.is_some()));
        inv.arg(eu_rate.map_or(0, |r| (r.interval_ns / 1000).max(1)))
            .arg(eu_rate.map_or(1, |r| r.burst))
            .arg(eu_per_day);
        let v = match s.call::<Vec<i64>>(&inv).await {
            Ok(v) if v.len() == 7 && (0..=5).contains(&v[0]) => v,
            failed => {
                // A script that ran after its caller stopped waiting holds a slot no permit will free
                // (until its lease, minutes away): free it, which does nothing if it never ran.
                if failed.is_err_and(|down| down == Down::Unanswered) {
                    ending::spawn(&self.shared, Ending::Slot { keys: Arc::new(keys), slot });
                }
                return s.admit_locally(subject, now).await.map(Permit::Local);
            }
        };
        let a = Admitted {
            code: v.first().copied().unwrap_or(-1),
            wait_us: n(&v, 1),
            tat: n(&v, 2),
            key: (n(&v, 3), n(&v, 4)),
            account: (n(&v, 5), n(&v, 6)),
        };
        let headers = headers(&l, subject.plan_tokens, &a, now_us, now);
        if a.code == 0 {
            return Ok(Permit::Remote(RemotePermit {
                shared: Arc::clone(&self.shared),
                keys: Arc::new(keys),
                slot,
                subject: subject.clone(),
                headers,
                ended: false,
            }));
        }
        let limit = refusal_of(a.code);
        let retry_after_secs = match limit {
            LimitKind::RequestsPerDay | LimitKind::EndUserRequestsPerDay => until(clock::next_day_start(now.unix), now),
            LimitKind::Concurrency => 1,
            _ => a.wait_us.div_ceil(1_000_000),
        };
        Err(Refusal { limit, retry_after_secs: retry_after_secs.max(1), headers })
    }

    async fn reserve_remote(&self, mut p: RemotePermit, cost: u64, now: Now) -> Result<Ticket, Refusal> {
        let s = &self.shared;
        let (id, now_us, month) = (s.id(), s.micros(now), clock::month_of(now.unix));
        let quota = |q: Option<u64>| q.map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX));
        let end_user = end_users::limited(p.subject.end_user.as_ref());
        let keys = &p.keys;
        let mut inv = s.scripts.reserve.prepare_invoke();
        inv.key(&keys.key).key(&keys.flight).key(&keys.end_user).key(&keys.account).key(&keys.res).key(&keys.resd);
        inv.arg(now_us).arg(month).arg(cost).arg(quota(p.subject.limits.key_tokens));
        inv.arg(quota(end_user.and_then(|e| e.limits.tokens_per_month))).arg(quota(Some(p.subject.plan_tokens)));
        inv.arg(id).arg(s.lease_us).arg(p.slot).arg(u8::from(end_user.is_some())).arg(TTL_SECS);
        let v = match s.call::<Vec<i64>>(&inv).await {
            Ok(v) if v.len() == 5 && matches!(v[0], 0 | 6..=8) => v,
            // `p` drops here: its slot's release is spawned, retried, and ends with its lease at worst.
            // A reservation the script made after its caller stopped waiting would otherwise be charged
            // whole when its lease ends, to a request that was refused: it is ended uncharged instead
            // (with the slot), which does nothing to a reservation that was never made.
            failed => {
                if failed.is_err_and(|down| down == Down::Unanswered) {
                    p.ended = true;
                    let (keys, slot) = (Arc::clone(&p.keys), p.slot);
                    ending::spawn(&self.shared, Ending::Settle { keys, slot, id, actual: 0, month });
                }
                if s.on_unavailable == OnUnavailable::FailClosed && cost > 0 {
                    return Err(s.unavailable());
                }
                let local = s.admit_locally(&p.subject, now).await?;
                return s.local.reserve(local, cost, now).await.map(Ticket::Local);
            }
        };
        let a = Admitted {
            code: v.first().copied().unwrap_or(-1),
            wait_us: 0,
            tat: 0,
            key: (n(&v, 1), n(&v, 2)),
            account: (n(&v, 3), n(&v, 4)),
        };
        let mut headers = headers(&p.subject.limits, p.subject.plan_tokens, &a, now_us, now);
        (headers.limit_requests, headers.remaining_requests, headers.reset_requests_ns) =
            (p.headers.limit_requests, p.headers.remaining_requests, p.headers.reset_requests_ns);
        if a.code != 0 {
            p.ended = true; // the script freed the slot
            let retry = until(clock::next_month_start(now.unix), now).max(1);
            return Err(Refusal { limit: refusal_of(a.code), retry_after_secs: retry, headers });
        }
        p.ended = true;
        Ok(Ticket::Remote(RemoteTicket {
            shared: Arc::clone(&self.shared),
            keys: Arc::clone(&p.keys),
            slot: p.slot,
            id,
            month,
            reserved: cost,
            headers,
            ended: false,
        }))
    }
}

impl CounterBackend for RedisCounters {
    type Permit = Permit;
    type Ticket = Ticket;

    async fn admit_request(&self, subject: &Subject, now: Now) -> Result<Permit, Refusal> {
        self.admit(subject, now).await
    }

    async fn reserve(&self, permit: Permit, cost: u64, now: Now) -> Result<Ticket, Refusal> {
        match permit {
            Permit::Remote(p) => self.reserve_remote(p, cost, now).await,
            // A reservation of nothing (a free route, such as listing models) checks no quota, so it
            // is taken locally even when token quotas fail closed.
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

    /// Moves `from`'s counters to `to` (same account, so same slot): its hash and its in-flight slots.
    fn inherit(&self, from: KeyId, to: KeyId) {
        self.shared.local.inherit(from, to);
        let Some(account) = self.shared.accounts.get(&from).map(|a| Arc::clone(a.value())) else {
            return;
        };
        self.shared.accounts.insert(to, Arc::clone(&account));
        let (from, to) = (self.shared.keys(from, &account, None), self.shared.keys(to, &account, None));
        ending::spawn(&self.shared, Ending::Inherit { from: from.key, to: to.key });
        ending::spawn(&self.shared, Ending::Inherit { from: from.flight, to: to.flight });
    }
}

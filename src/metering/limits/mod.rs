//! Admission against every limit of a key and its account (docs/ARCHITECTURE.md, Limits and charges): requests per
//! minute (GCRA), requests per UTC day, concurrent requests, the key's optional monthly token quota and the account
//! plan's monthly token quota. Admission has two steps: [`CounterBackend::admit_request`] checks the request limits as
//! soon as the key is known, before the body is read; [`CounterBackend::reserve`] then reserves the request's tokens
//! all or nothing. The [`Ticket`] it returns holds the reservation and the concurrency place until the data plane
//! settles or releases it.
//!
//! Who is limited arrives as a [`Subject`] (key, account, effective limits, plan quota), built by the
//! caller from the principal, so the counters know nothing of key records or how a caller proved who it
//! is. Where the counts live is a [`CounterBackend`]: [`memory::MemoryCounters`], one process's
//! counters behind `DashMap`s, or [`redis::RedisCounters`], every instance's counters in one Redis. The
//! server holds the backend as the [`Counters`] enum rather than a `dyn` trait object: admission runs on
//! every request, and an enum is matched in place, its
//! futures live on the request's own stack (no box per admission) and the memory backend's are ready at
//! once.
//!
//! Settling is synchronous on purpose: a response body ends inside a `poll`, and a dropped request ends
//! in `Drop`, where nothing can be awaited. The memory backend settles under its locks at once; a network
//! backend answers admission over the network but queues settlements and releases (a dropped ticket
//! included) for its own background task.

mod end_users;
pub mod gcra;
pub mod ledger;
pub mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;

use crate::auth::keys::{KeyId, KeyLimits};
pub use crate::auth::policy::EndUserLimits;
pub use crate::clock::Now;
use crate::config::LimitsConfig;
use gcra::Rate;
pub use memory::MemoryCounters;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    RequestsPerMinute,
    RequestsPerDay,
    Concurrency,
    KeyTokens,
    AccountTokens,
    /// The key's per-end-user limits, held per (key, end user).
    EndUserRequestsPerMinute,
    EndUserRequestsPerDay,
    EndUserTokens,
    /// The key counts as many end users as `limits.end_users_per_key` allows; a new one must wait.
    EndUsers,
    /// The shared counters (Redis) cannot answer and token quotas fail closed: a 503, never a 429.
    CountersUnavailable,
}

impl LimitKind {
    /// A bounded label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::RequestsPerDay => "requests_per_day",
            LimitKind::Concurrency => "concurrency",
            LimitKind::KeyTokens => "key_tokens_per_month",
            LimitKind::AccountTokens => "account_tokens_per_month",
            LimitKind::EndUserRequestsPerMinute => "end_user_requests_per_minute",
            LimitKind::EndUserRequestsPerDay => "end_user_requests_per_day",
            LimitKind::EndUserTokens => "end_user_tokens_per_month",
            LimitKind::EndUsers => "end_users_per_key",
            LimitKind::CountersUnavailable => "counters_unavailable",
        }
    }

    /// Whether retrying soon cannot help (the SDKs are told not to retry).
    pub fn is_exhaustion(self) -> bool {
        matches!(
            self,
            LimitKind::RequestsPerDay
                | LimitKind::KeyTokens
                | LimitKind::AccountTokens
                | LimitKind::EndUserRequestsPerDay
                | LimitKind::EndUserTokens
        )
    }

    pub fn is_tokens(self) -> bool {
        matches!(self, LimitKind::KeyTokens | LimitKind::AccountTokens | LimitKind::EndUserTokens)
    }
}

/// A refusal: which limit, when to retry, and the state to report in headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub limit: LimitKind,
    pub retry_after_secs: u64,
    pub headers: RateHeaders,
}

/// The six `x-ratelimit-*` values (OpenAI's names): the request side is the per-minute limit, the token
/// side the tighter of the key's and the account's monthly quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit_requests: u64,
    pub remaining_requests: u64,
    pub reset_requests_ns: u64,
    pub limit_tokens: u64,
    pub remaining_tokens: u64,
    pub reset_tokens_secs: u64,
}

impl RateHeaders {
    /// Writes the six headers, replacing any the provider sent.
    pub fn write_to(&self, headers: &mut http::HeaderMap) {
        use http::{HeaderName, HeaderValue};
        const NAMES: [HeaderName; 6] = [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ];
        let values = [
            HeaderValue::from(self.limit_requests),
            HeaderValue::from(self.remaining_requests),
            duration_value(self.reset_requests_ns),
            HeaderValue::from(self.limit_tokens),
            HeaderValue::from(self.remaining_tokens),
            duration_value(self.reset_tokens_secs.saturating_mul(1_000_000_000)),
        ];
        let pairs = NAMES.into_iter().zip(values);
        for (name, value) in pairs {
            headers.insert(name, value);
        }
    }
}

fn duration_value(ns: u64) -> http::HeaderValue {
    http::HeaderValue::try_from(go_duration(ns)).unwrap_or_else(|_| http::HeaderValue::from_static("0s"))
}

/// Each account's monthly token quota, from its plan.
pub struct Plans {
    quotas: BTreeMap<String, u64>,
    by_account: DashMap<Arc<str>, u64>,
}

impl Plans {
    /// `quotas` holds every plan by name and always has `default`.
    pub fn new(quotas: BTreeMap<String, u64>) -> Plans {
        Plans { quotas, by_account: DashMap::new() }
    }

    /// Records each account's plan (from the store).
    pub fn set(&self, account_plans: &[(String, String)]) {
        for (account, plan) in account_plans {
            let quota = self.quotas.get(plan).or_else(|| self.quotas.get("default")).copied().unwrap_or(0);
            if !self.quotas.contains_key(plan) {
                tracing::warn!(
                    account,
                    plan,
                    "account names a plan that proxy.toml does not define; using the default plan"
                );
            }
            self.by_account.insert(Arc::from(account.as_str()), quota);
        }
    }

    pub fn quota(&self, account: &str) -> u64 {
        self.by_account.get(account).map(|q| *q).or_else(|| self.quotas.get("default").copied()).unwrap_or(0)
    }
}

/// A key's limits after defaults are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub rate: Rate,
    pub per_minute: u32,
    pub per_day: u32,
    pub concurrency: u32,
    pub key_tokens: Option<u64>,
}

/// A key's limits: its own overrides where it has them, the configured defaults elsewhere. The one
/// place defaults are applied, for admission and for every report of a key's limits.
pub fn effective(overrides: &KeyLimits, defaults: &LimitsConfig) -> EffectiveLimits {
    let per_minute = overrides.requests_per_minute.unwrap_or(defaults.requests_per_minute);
    EffectiveLimits {
        rate: Rate::per_minute(per_minute),
        per_minute,
        per_day: overrides.requests_per_day.unwrap_or(defaults.requests_per_day),
        concurrency: overrides.concurrent_requests.unwrap_or(defaults.concurrent_requests),
        key_tokens: overrides.tokens_per_month.or(defaults.tokens_per_month),
    }
}

/// Who a request is counted against: its key (request limits, the key's token quota) and the key's
/// account (the plan's token quota).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub key: KeyId,
    pub account: Arc<str>,
    pub limits: EffectiveLimits,
    /// The monthly token quota of the account's plan.
    pub plan_tokens: u64,
    /// The end user the request acts for, when the key limits its end users.
    pub end_user: Option<EndUser>,
}

/// An end user of a key and the limits it runs under (the key's `end_user_limits`, narrowed by its
/// identity token), counted per (key, end user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUser {
    pub id: Arc<str>,
    pub limits: EndUserLimits,
}

/// Totals carried over a restart, from the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried {
    pub day_requests: u64,
    pub month_tokens: u64,
}

/// Where the limits' counters live, and the chores that keep them.
pub trait CounterBackend: Send + Sync {
    /// A request admitted against its request limits, holding one of its key's concurrency places until
    /// it is reserved or dropped (a request whose body fails drops it; the place must come back).
    type Permit: Send;
    type Ticket: ReservationTicket;

    /// Admits a request against its request limits (concurrency, per minute, per day) before anything
    /// else is spent on it: its body is not read yet, so one key's slow or oversized bodies can hold at
    /// most its own concurrency. The request counts against the per-minute and per-day limits from
    /// here, even if its token reservation is refused later.
    fn admit_request(&self, subject: &Subject, now: Now) -> impl Future<Output = Result<Self::Permit, Refusal>> + Send;

    /// Reserves `cost` tokens against the key's and the account's monthly quotas, all or nothing. A
    /// refusal ends the permit (its concurrency place is freed).
    fn reserve(
        &self,
        permit: Self::Permit,
        cost: u64,
        now: Now,
    ) -> impl Future<Output = Result<Self::Ticket, Refusal>> + Send;

    /// Seeds a key's day requests and month tokens, and adds its month tokens to its account (at start,
    /// from the store). A backend whose counters outlive the process has nothing to seed.
    fn carry(&self, key: KeyId, account: &Arc<str>, carried: Carried, now: Now);

    /// Seeds an end user's day requests and month tokens under a key (at start, from the store).
    fn carry_end_user(&self, key: KeyId, end_user: &str, carried: Carried, now: Now);

    /// Ends reservations whose lease ran out (their holders vanished), charging each its whole amount;
    /// returns how many. Also forgets idle end users (see the backend for what idle means).
    fn sweep(&self, now: Now) -> usize;

    /// Forgets the counters of keys that `known` no longer lists (revoked or deleted), except those a
    /// request in flight still holds; returns how many went. Their tokens stay counted in their account.
    fn forget(&self, known: impl Fn(KeyId) -> bool) -> usize;

    /// Moves `from`'s counters (request windows, day, concurrency, month tokens) to `to`, a key that
    /// replaces it and continues its budget (a device's regenerated trial key).
    fn inherit(&self, from: KeyId, to: KeyId);
}

/// A token reservation with its concurrency place, ended exactly once: settled to what the request
/// used, or released. Dropping it unsettled releases it, so no path can leak a reservation; the lease
/// (see [`CounterBackend::sweep`]) covers a holder that never ends at all. A ticket carries what it
/// needs to end itself, so the response body can settle it where the stream ends without a handle on
/// the backend; none of these may block, so a remote backend's ticket queues its settlement (or, from
/// `Drop`, its release) for the backend's background task.
pub trait ReservationTicket: Send + 'static {
    /// The rate-limit state after the reservation, for the response headers.
    fn headers(&self) -> &RateHeaders;
    /// The tokens reserved.
    fn reserved(&self) -> u64;
    /// Ends the reservation, charging `actual` tokens.
    fn settle(self, actual: u64);
    /// Ends the reservation, charging all of it: what a request is charged when its usage is unknown
    /// (see the charge rules in `metering`).
    fn release(self);
}

/// The counter backend the server runs (see the module doc for why an enum).
pub enum Counters {
    Memory(MemoryCounters),
    Redis(redis::RedisCounters),
}

impl Counters {
    /// The shared counters cannot answer now: limits are checked locally (see `redis`).
    pub fn degraded(&self) -> bool {
        match self {
            Counters::Memory(_) => false,
            Counters::Redis(r) => r.degraded(),
        }
    }
}

/// A [`Counters`] permit.
pub enum Permit {
    Memory(memory::Permit),
    Redis(redis::Permit),
}

/// A [`Counters`] reservation ticket.
pub enum Ticket {
    Memory(memory::Ticket),
    Redis(redis::Ticket),
}

impl CounterBackend for Counters {
    type Permit = Permit;
    type Ticket = Ticket;

    async fn admit_request(&self, subject: &Subject, now: Now) -> Result<Permit, Refusal> {
        match self {
            Counters::Memory(m) => m.admit_request(subject, now).await.map(Permit::Memory),
            Counters::Redis(r) => r.admit_request(subject, now).await.map(Permit::Redis),
        }
    }

    async fn reserve(&self, permit: Permit, cost: u64, now: Now) -> Result<Ticket, Refusal> {
        match (self, permit) {
            (Counters::Memory(m), Permit::Memory(p)) => m.reserve(p, cost, now).await.map(Ticket::Memory),
            (Counters::Redis(r), Permit::Redis(p)) => r.reserve(p, cost, now).await.map(Ticket::Redis),
            _ => unreachable!("a permit is reserved by the backend that admitted it"),
        }
    }

    fn carry(&self, key: KeyId, account: &Arc<str>, carried: Carried, now: Now) {
        match self {
            Counters::Memory(m) => m.carry(key, account, carried, now),
            Counters::Redis(r) => r.carry(key, account, carried, now),
        }
    }

    fn carry_end_user(&self, key: KeyId, end_user: &str, carried: Carried, now: Now) {
        match self {
            Counters::Memory(m) => m.carry_end_user(key, end_user, carried, now),
            Counters::Redis(r) => r.carry_end_user(key, end_user, carried, now),
        }
    }

    fn sweep(&self, now: Now) -> usize {
        match self {
            Counters::Memory(m) => m.sweep(now),
            Counters::Redis(r) => r.sweep(now),
        }
    }

    fn forget(&self, known: impl Fn(KeyId) -> bool) -> usize {
        match self {
            Counters::Memory(m) => m.forget(known),
            Counters::Redis(r) => r.forget(known),
        }
    }

    fn inherit(&self, from: KeyId, to: KeyId) {
        match self {
            Counters::Memory(m) => m.inherit(from, to),
            Counters::Redis(r) => r.inherit(from, to),
        }
    }
}

impl ReservationTicket for Ticket {
    fn headers(&self) -> &RateHeaders {
        match self {
            Ticket::Memory(t) => t.headers(),
            Ticket::Redis(t) => t.headers(),
        }
    }

    fn reserved(&self) -> u64 {
        match self {
            Ticket::Memory(t) => t.reserved(),
            Ticket::Redis(t) => t.reserved(),
        }
    }

    fn settle(self, actual: u64) {
        match self {
            Ticket::Memory(t) => t.settle(actual),
            Ticket::Redis(t) => t.settle(actual),
        }
    }

    fn release(self) {
        match self {
            Ticket::Memory(t) => t.release(),
            Ticket::Redis(t) => t.release(),
        }
    }
}

/// A duration in OpenAI's header style: `12ms`, `1s`, `1.5s`, `6m0s`, `412h5m3s`.
pub fn go_duration(ns: u64) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(16);
    if ns < 1_000_000_000 {
        let _ = write!(out, "{}ms", ns.div_ceil(1_000_000));
        return out;
    }
    let secs = ns / 1_000_000_000;
    let millis = (ns % 1_000_000_000) / 1_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let _ = match (h, m) {
        (0, 0) => write!(out, "{s}"),
        (0, m) => write!(out, "{m}m{s}"),
        (h, m) => write!(out, "{h}h{m}m{s}"),
    };
    if millis > 0 {
        let _ = write!(out, ".{millis:03}");
        while out.ends_with('0') {
            out.pop();
        }
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests;

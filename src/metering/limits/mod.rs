//! Admission against every limit of a key and its account (DESIGN §3): requests per minute (GCRA),
//! requests per UTC day, concurrent requests, the key's optional monthly token quota and the account
//! plan's monthly token quota. Admission has two steps, each under the key's lock then the account's
//! (always in that order): [`Limiter::admit_request`] checks the request limits as soon as the key is
//! known, before the body is read; [`Permit::reserve`] then reserves the request's tokens all or
//! nothing. The [`Admission`] it returns holds the reservation and the concurrency place until it is
//! settled or dropped.

pub mod gcra;
pub mod ledger;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use crate::auth::keys::{KeyId, KeyRecord};
use crate::clock;
use crate::config::LimitsConfig;
use gcra::{Decision, Gcra, Rate};
use ledger::Ledger;

/// An instant on both clocks the limits need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic nanoseconds (rates, leases).
    pub mono_ns: u64,
    /// Unix seconds (UTC days and months).
    pub unix: i64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    RequestsPerMinute,
    RequestsPerDay,
    Concurrency,
    KeyTokens,
    AccountTokens,
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
        }
    }

    /// Whether retrying soon cannot help (the SDKs are told not to retry).
    pub fn is_exhaustion(self) -> bool {
        matches!(self, LimitKind::RequestsPerDay | LimitKind::KeyTokens | LimitKind::AccountTokens)
    }

    pub fn is_tokens(self) -> bool {
        matches!(self, LimitKind::KeyTokens | LimitKind::AccountTokens)
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

struct KeyCounters {
    gcra: Gcra,
    day: i64,
    day_requests: u64,
    in_flight: u32,
    month: i64,
    tokens: Ledger,
}

struct AccountCounters {
    month: i64,
    tokens: Ledger,
}

/// Totals carried over a restart, from the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried {
    pub day_requests: u64,
    pub month_tokens: u64,
}

pub struct Limiter {
    defaults: LimitsConfig,
    /// How long a reservation may stay open before a sweep ends it.
    lease_ns: u64,
    keys: DashMap<KeyId, Arc<Mutex<KeyCounters>>>,
    accounts: DashMap<Arc<str>, Arc<Mutex<AccountCounters>>>,
    next_reservation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay consistent under a panic elsewhere: every update completes under one lock.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Limiter {
    pub fn new(defaults: LimitsConfig, lease: std::time::Duration) -> Limiter {
        Limiter {
            defaults,
            lease_ns: lease.as_nanos() as u64,
            keys: DashMap::new(),
            accounts: DashMap::new(),
            next_reservation: AtomicU64::new(1),
        }
    }

    pub fn effective(&self, key: &KeyRecord) -> EffectiveLimits {
        let per_minute = key.limits.requests_per_minute.unwrap_or(self.defaults.requests_per_minute);
        EffectiveLimits {
            rate: Rate::per_minute(per_minute),
            per_minute,
            per_day: key.limits.requests_per_day.unwrap_or(self.defaults.requests_per_day),
            concurrency: key.limits.concurrent_requests.unwrap_or(self.defaults.concurrent_requests),
            key_tokens: key.limits.tokens_per_month.or(self.defaults.tokens_per_month),
        }
    }

    /// Seeds a key's day requests and month tokens, and adds its month tokens to its account (at start,
    /// from the store).
    pub fn carry(&self, key: KeyId, account: Arc<str>, carried: Carried, now: Now) {
        let counters = KeyCounters {
            gcra: Gcra::default(),
            day: clock::day_of(now.unix),
            day_requests: carried.day_requests,
            in_flight: 0,
            month: clock::month_of(now.unix),
            tokens: Ledger::with_used(carried.month_tokens),
        };
        self.keys.insert(key, Arc::new(Mutex::new(counters)));
        let account = self.account(&account, now);
        let mut account = lock(&account);
        account.tokens.used = account.tokens.used.saturating_add(carried.month_tokens);
    }

    fn account(&self, account: &Arc<str>, now: Now) -> Arc<Mutex<AccountCounters>> {
        if let Some(a) = self.accounts.get(account) {
            return Arc::clone(a.value());
        }
        let fresh = AccountCounters { month: clock::month_of(now.unix), tokens: Ledger::default() };
        Arc::clone(self.accounts.entry(Arc::clone(account)).or_insert_with(|| Arc::new(Mutex::new(fresh))).value())
    }

    fn key(&self, key: KeyId, now: Now) -> Arc<Mutex<KeyCounters>> {
        if let Some(k) = self.keys.get(&key) {
            return Arc::clone(k.value());
        }
        let fresh = KeyCounters {
            gcra: Gcra::default(),
            day: clock::day_of(now.unix),
            day_requests: 0,
            in_flight: 0,
            month: clock::month_of(now.unix),
            tokens: Ledger::default(),
        };
        Arc::clone(self.keys.entry(key).or_insert_with(|| Arc::new(Mutex::new(fresh))).value())
    }

    /// Admits a request of an authenticated key that may cost up to `cost` tokens, against every limit
    /// at once: [`Limiter::admit_request`] then [`Permit::reserve`].
    pub fn admit(&self, key: &KeyRecord, plan_tokens: u64, cost: u64, now: Now) -> Result<Admission, Refusal> {
        self.admit_request(key, plan_tokens, now)?.reserve(cost, now)
    }

    /// Admits a request of an authenticated key against its request limits (concurrency, per minute,
    /// per day) before anything else is spent on it: its body is not read yet, so one key's slow or
    /// oversized bodies can hold at most its own concurrency. `plan_tokens` is the monthly quota of
    /// the key's account. The request counts against the per-minute and per-day limits from here, even
    /// if its token reservation is refused later.
    pub fn admit_request(&self, key: &KeyRecord, plan_tokens: u64, now: Now) -> Result<Permit<'_>, Refusal> {
        let limits = self.effective(key);
        let key_counters = self.key(key.id, now);
        let account_counters = self.account(&key.account, now);
        let mut k = lock(&key_counters);
        let mut a = lock(&account_counters);
        roll(&mut k, &mut a, now);

        let refuse = |limit, retry_after_secs: u64| Refusal {
            limit,
            retry_after_secs: retry_after_secs.max(1),
            headers: headers(&limits, plan_tokens, &k, &a, now),
        };
        if k.in_flight >= limits.concurrency {
            return Err(refuse(LimitKind::Concurrency, 1));
        }
        if let Decision::Wait(ns) = k.gcra.check(limits.rate, now.mono_ns) {
            return Err(refuse(LimitKind::RequestsPerMinute, ns.div_ceil(1_000_000_000)));
        }
        if k.day_requests >= u64::from(limits.per_day) {
            let wait = clock::next_day_start(now.unix).saturating_sub(now.unix);
            return Err(refuse(LimitKind::RequestsPerDay, u64::try_from(wait).unwrap_or(0)));
        }
        k.gcra.record(limits.rate, now.mono_ns);
        k.day_requests = k.day_requests.saturating_add(1);
        k.in_flight = k.in_flight.saturating_add(1);
        drop(a);
        drop(k);
        Ok(Permit {
            slot: InFlightSlot(Arc::clone(&key_counters)),
            key: key_counters,
            account: account_counters,
            limits,
            plan_tokens,
            next_reservation: &self.next_reservation,
            lease_ns: self.lease_ns,
        })
    }

    /// Ends reservations whose lease ran out (their holders vanished); returns how many.
    pub fn expire(&self, now: Now) -> usize {
        let mut ended = 0;
        for entry in &self.keys {
            ended += lock(entry.value()).tokens.expire(now.mono_ns).len();
        }
        for entry in &self.accounts {
            lock(entry.value()).tokens.expire(now.mono_ns);
        }
        ended
    }

    /// Forgets the counters of keys that `known` no longer lists (revoked or deleted), except those a
    /// request in flight still holds; returns how many went. Their tokens stay counted in their account,
    /// so keys created and revoked in a loop cost the limiter nothing once they are gone.
    pub fn forget_keys(&self, known: impl Fn(KeyId) -> bool) -> usize {
        let mut gone = 0;
        self.keys.retain(|id, counters| {
            let keep = known(*id) || Arc::strong_count(counters) > 1;
            gone += usize::from(!keep);
            keep
        });
        gone
    }

    /// Counters held, one per key seen since start (for tests).
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Tokens used and reserved this month by a key (for tests and reports of the live state).
    pub fn key_tokens(&self, key: KeyId) -> Option<(u64, u64)> {
        self.keys.get(&key).map(|k| {
            let k = lock(k.value());
            (k.tokens.used, k.tokens.reserved)
        })
    }

    /// Requests in flight for a key.
    pub fn in_flight(&self, key: KeyId) -> u32 {
        self.keys.get(&key).map_or(0, |k| lock(k.value()).in_flight)
    }
}

/// Starts a new day or month where `now` has crossed into one.
fn roll(k: &mut KeyCounters, a: &mut AccountCounters, now: Now) {
    let day = clock::day_of(now.unix);
    if k.day != day {
        k.day = day;
        k.day_requests = 0;
    }
    let month = clock::month_of(now.unix);
    if k.month != month {
        k.month = month;
        k.tokens.roll();
    }
    if a.month != month {
        a.month = month;
        a.tokens.roll();
    }
}

fn headers(limits: &EffectiveLimits, plan_tokens: u64, k: &KeyCounters, a: &AccountCounters, now: Now) -> RateHeaders {
    let account_remaining = a.tokens.remaining(plan_tokens);
    let (limit_tokens, remaining_tokens) = match limits.key_tokens {
        Some(quota) if k.tokens.remaining(quota) < account_remaining => (quota, k.tokens.remaining(quota)),
        _ => (plan_tokens, account_remaining),
    };
    RateHeaders {
        limit_requests: u64::from(limits.per_minute),
        remaining_requests: k.gcra.remaining(limits.rate, now.mono_ns),
        reset_requests_ns: k.gcra.reset_ns(now.mono_ns),
        limit_tokens,
        remaining_tokens,
        reset_tokens_secs: (clock::next_month_start(now.unix) - now.unix) as u64,
    }
}

/// A request admitted against its key's request limits, holding one of the key's concurrency places
/// until it is dropped. [`Permit::reserve`] turns it into an [`Admission`] with its token reservation.
pub struct Permit<'a> {
    slot: InFlightSlot,
    key: Arc<Mutex<KeyCounters>>,
    account: Arc<Mutex<AccountCounters>>,
    limits: EffectiveLimits,
    plan_tokens: u64,
    next_reservation: &'a AtomicU64,
    lease_ns: u64,
}

impl Permit<'_> {
    /// Reserves `cost` tokens against the key's and the account's monthly quotas, all or nothing. A
    /// refusal ends the permit (its concurrency place is freed).
    pub fn reserve(self, cost: u64, now: Now) -> Result<Admission, Refusal> {
        let mut k = lock(&self.key);
        let mut a = lock(&self.account);
        roll(&mut k, &mut a, now);
        let to_month_end = u64::try_from(clock::next_month_start(now.unix).saturating_sub(now.unix)).unwrap_or(0);
        let refused = if self.limits.key_tokens.is_some_and(|quota| !k.tokens.fits(quota, cost)) {
            Some(LimitKind::KeyTokens)
        } else if !a.tokens.fits(self.plan_tokens, cost) {
            Some(LimitKind::AccountTokens)
        } else {
            None
        };
        if let Some(limit) = refused {
            return Err(Refusal {
                limit,
                retry_after_secs: to_month_end.max(1),
                headers: headers(&self.limits, self.plan_tokens, &k, &a, now),
            });
        }
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        let lease_until = now.mono_ns.saturating_add(self.lease_ns);
        k.tokens.reserve(id, cost, lease_until);
        a.tokens.reserve(id, cost, lease_until);
        let headers = headers(&self.limits, self.plan_tokens, &k, &a, now);
        drop(a);
        drop(k);
        Ok(Admission {
            _slot: self.slot,
            key: self.key,
            account: self.account,
            id,
            reserved: cost,
            headers,
            ended: false,
        })
    }
}

/// One of a key's concurrency places; freed when dropped.
struct InFlightSlot(Arc<Mutex<KeyCounters>>);

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut k = lock(&self.0);
        k.in_flight = k.in_flight.saturating_sub(1);
    }
}

/// An admitted request: its token reservation and concurrency place. Settle it with the tokens the
/// request used; dropping it unsettled charges the whole reservation.
pub struct Admission {
    key: Arc<Mutex<KeyCounters>>,
    account: Arc<Mutex<AccountCounters>>,
    /// Held for its `Drop`, which frees the place after the reservation ended.
    _slot: InFlightSlot,
    id: u64,
    pub reserved: u64,
    pub headers: RateHeaders,
    ended: bool,
}

impl Admission {
    pub fn settle(mut self, actual: u64) {
        self.end(actual);
    }

    fn end(&mut self, actual: u64) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut k = lock(&self.key);
        let mut a = lock(&self.account);
        k.tokens.settle(self.id, actual);
        a.tokens.settle(self.id, actual);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.end(self.reserved);
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

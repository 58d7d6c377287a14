//! The in-memory counter backend: one process's counters, a `DashMap` entry per key, per (key, end user) and
//! per account, each behind its own lock. Admission takes the key's lock, then the end user's, then the
//! account's (always in that order), so it is atomic across every limit without a global lock. Tickets hold their counters and settle under the
//! same locks, at once, even from `Drop`.

use std::future::{Future, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use super::end_users::{self, EndUserCounters, Shared};
use super::gcra::{Decision, Gcra};
use super::ledger::Ledger;
use super::{
    Carried, CounterBackend, EffectiveLimits, EndUser, LimitKind, Now, RateHeaders, Refusal, ReservationTicket, Subject,
};
use crate::auth::keys::KeyId;
use crate::clock;

struct KeyCounters {
    gcra: Gcra,
    day: i64,
    day_requests: u64,
    in_flight: u32,
    month: i64,
    tokens: Ledger,
}

impl KeyCounters {
    fn fresh(carried: Carried, now: Now) -> KeyCounters {
        KeyCounters {
            gcra: Gcra::default(),
            day: clock::day_of(now.unix),
            day_requests: carried.day_requests,
            in_flight: 0,
            month: clock::month_of(now.unix),
            tokens: Ledger::with_used(carried.month_tokens),
        }
    }
}

struct AccountCounters {
    month: i64,
    tokens: Ledger,
}

pub struct MemoryCounters {
    /// How long a reservation may stay open before a sweep ends it.
    lease_ns: u64,
    keys: DashMap<KeyId, Arc<Mutex<KeyCounters>>>,
    accounts: DashMap<Arc<str>, Arc<Mutex<AccountCounters>>>,
    /// Per (key, end user), for keys that limit their end users; idle ones are swept.
    end_users: DashMap<(KeyId, Arc<str>), Shared>,
    /// How many end users each key counts, and the most it may (`limits.end_users_per_key`). Taken
    /// under an `end_users` shard lock, never the other way round.
    end_user_counts: DashMap<KeyId, usize>,
    end_user_cap: usize,
    next_reservation: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay consistent under a panic elsewhere: every update completes under one lock.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryCounters {
    /// `lease`: how long a reservation may stay open before [`CounterBackend::sweep`] ends it.
    pub fn new(lease: std::time::Duration) -> MemoryCounters {
        MemoryCounters {
            lease_ns: u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX),
            keys: DashMap::new(),
            accounts: DashMap::new(),
            end_users: DashMap::new(),
            end_user_counts: DashMap::new(),
            end_user_cap: usize::MAX,
            next_reservation: AtomicU64::new(1),
        }
    }

    /// At most `cap` end users counted per key at once.
    pub fn with_end_user_cap(mut self, cap: u32) -> MemoryCounters {
        self.end_user_cap = cap as usize;
        self
    }

    /// One fewer end user counted under `key` (its state was dropped).
    fn uncount(&self, key: KeyId) {
        self.end_user_counts.remove_if_mut(&key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
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
        let fresh = KeyCounters::fresh(Carried::default(), now);
        Arc::clone(self.keys.entry(key).or_insert_with(|| Arc::new(Mutex::new(fresh))).value())
    }

    /// The state of an end user of `key`, made at its first admission: the map's entry is taken under
    /// its shard's lock, so concurrent first requests all get the one state.
    /// `None` when the key counts its most end users already and this one is new.
    fn end_user(&self, key: KeyId, end_user: &EndUser, now: Now) -> Option<Shared> {
        let id = (key, Arc::clone(&end_user.id));
        if let Some(u) = self.end_users.get(&id) {
            return Some(Arc::clone(u.value()));
        }
        match self.end_users.entry(id) {
            dashmap::Entry::Occupied(found) => Some(Arc::clone(found.get())),
            dashmap::Entry::Vacant(slot) => {
                let mut count = self.end_user_counts.entry(key).or_insert(0);
                if *count >= self.end_user_cap {
                    return None;
                }
                *count += 1;
                let fresh = Arc::new(Mutex::new(EndUserCounters::fresh(Carried::default(), now)));
                Some(Arc::clone(slot.insert(fresh).value()))
            }
        }
    }

    fn admit_now(&self, subject: &Subject, now: Now) -> Result<Permit, Refusal> {
        let limits = subject.limits;
        let key_counters = self.key(subject.key, now);
        let limited = end_users::limited(subject.end_user.as_ref());
        let end_user = limited.and_then(|e| self.end_user(subject.key, e, now).map(|state| (state, e)));
        let over_end_user_cap = limited.is_some() && end_user.is_none();
        let account_counters = self.account(&subject.account, now);
        let mut k = lock(&key_counters);
        let mut u = end_user.as_ref().map(|(state, _)| lock(state));
        let mut a = lock(&account_counters);
        roll(&mut k, &mut a, now);
        if let Some(u) = u.as_mut() {
            u.roll(now);
        }

        let refuse = |limit, retry_after_secs: u64| Refusal {
            limit,
            retry_after_secs: retry_after_secs.max(1),
            headers: headers(&limits, subject.plan_tokens, &k, &a, now),
        };
        if over_end_user_cap {
            // Idle end users are forgotten by the sweep, which runs every few seconds.
            return Err(refuse(LimitKind::EndUsers, 60));
        }
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
        if let (Some(u), Some((_, e))) = (u.as_mut(), end_user.as_ref()) {
            if let Err((limit, wait)) = u.check(&e.limits, now) {
                return Err(refuse(limit, wait));
            }
            u.record(&e.limits, now);
        }
        k.gcra.record(limits.rate, now.mono_ns);
        k.day_requests = k.day_requests.saturating_add(1);
        k.in_flight = k.in_flight.saturating_add(1);
        drop(a);
        drop(u);
        drop(k);
        let end_user_tokens = end_user.as_ref().and_then(|(_, e)| e.limits.tokens_per_month);
        Ok(Permit {
            slot: InFlightSlot(Arc::clone(&key_counters)),
            key: key_counters,
            end_user: end_user.map(|(state, _)| state),
            end_user_tokens,
            account: account_counters,
            limits,
            plan_tokens: subject.plan_tokens,
        })
    }

    fn reserve_now(&self, permit: Permit, cost: u64, now: Now) -> Result<Ticket, Refusal> {
        let mut k = lock(&permit.key);
        let mut u = permit.end_user.as_ref().map(|state| lock(state));
        let mut a = lock(&permit.account);
        roll(&mut k, &mut a, now);
        if let Some(u) = u.as_mut() {
            u.roll(now);
        }
        let to_month_end = u64::try_from(clock::next_month_start(now.unix).saturating_sub(now.unix)).unwrap_or(0);
        let end_user_short = match (u.as_ref(), permit.end_user_tokens) {
            (Some(u), Some(quota)) => !u.tokens.fits(quota, cost),
            _ => false,
        };
        let refused = if permit.limits.key_tokens.is_some_and(|quota| !k.tokens.fits(quota, cost)) {
            Some(LimitKind::KeyTokens)
        } else if end_user_short {
            Some(LimitKind::EndUserTokens)
        } else if !a.tokens.fits(permit.plan_tokens, cost) {
            Some(LimitKind::AccountTokens)
        } else {
            None
        };
        if let Some(limit) = refused {
            return Err(Refusal {
                limit,
                retry_after_secs: to_month_end.max(1),
                headers: headers(&permit.limits, permit.plan_tokens, &k, &a, now),
            });
        }
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        let lease_until = now.mono_ns.saturating_add(self.lease_ns);
        k.tokens.reserve(id, cost, lease_until);
        if let Some(u) = u.as_mut() {
            u.tokens.reserve(id, cost, lease_until);
        }
        a.tokens.reserve(id, cost, lease_until);
        let headers = headers(&permit.limits, permit.plan_tokens, &k, &a, now);
        drop(a);
        drop(u);
        drop(k);
        Ok(Ticket {
            _slot: permit.slot,
            key: permit.key,
            end_user: permit.end_user,
            account: permit.account,
            id,
            reserved: cost,
            headers,
            ended: false,
        })
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

    /// End-user states held (for tests of the bound).
    pub fn tracked_end_users(&self) -> usize {
        self.end_users.len()
    }

    /// Tokens used and reserved this month by an end user of a key.
    pub fn end_user_tokens(&self, key: KeyId, end_user: &str) -> Option<(u64, u64)> {
        self.end_users.get(&(key, Arc::from(end_user))).map(|u| {
            let u = lock(u.value());
            (u.tokens.used, u.tokens.reserved)
        })
    }

    /// Requests in flight for a key.
    pub fn in_flight(&self, key: KeyId) -> u32 {
        self.keys.get(&key).map_or(0, |k| lock(k.value()).in_flight)
    }
}

impl CounterBackend for MemoryCounters {
    type Permit = Permit;
    type Ticket = Ticket;

    fn admit_request(&self, subject: &Subject, now: Now) -> impl Future<Output = Result<Permit, Refusal>> + Send {
        // Answered under the locks before the future exists: it is ready on its first poll.
        ready(self.admit_now(subject, now))
    }

    fn reserve(&self, permit: Permit, cost: u64, now: Now) -> impl Future<Output = Result<Ticket, Refusal>> + Send {
        ready(self.reserve_now(permit, cost, now))
    }

    fn carry(&self, key: KeyId, account: &Arc<str>, carried: Carried, now: Now) {
        self.keys.insert(key, Arc::new(Mutex::new(KeyCounters::fresh(carried, now))));
        let account = self.account(account, now);
        let mut account = lock(&account);
        account.tokens.used = account.tokens.used.saturating_add(carried.month_tokens);
    }

    fn carry_end_user(&self, key: KeyId, end_user: &str, carried: Carried, now: Now) {
        // Carried usage is counted whatever the cap: it was spent.
        let state = Arc::new(Mutex::new(EndUserCounters::fresh(carried, now)));
        let id = (key, Arc::from(end_user));
        if let dashmap::Entry::Vacant(slot) = self.end_users.entry(id) {
            *self.end_user_counts.entry(key).or_insert(0) += 1;
            slot.insert(state);
        }
    }

    /// Also forgets idle end-user states (`end_users` says what idle means and what that bounds). A state
    /// is removed under its shard's write lock only when nothing else holds it, so no admission can be
    /// taking it at that moment.
    fn sweep(&self, now: Now) -> usize {
        let mut ended = 0;
        for entry in &self.keys {
            ended += lock(entry.value()).tokens.expire(now.mono_ns).len();
        }
        self.end_users.retain(|(key, _), state| {
            let mut u = lock(state);
            u.tokens.expire(now.mono_ns);
            u.roll(now);
            let keep = Arc::strong_count(state) > 1 || !u.is_idle(now);
            if !keep {
                self.uncount(*key);
            }
            keep
        });
        for entry in &self.accounts {
            lock(entry.value()).tokens.expire(now.mono_ns);
        }
        ended
    }

    /// Keys created and revoked in a loop cost these counters nothing once they are gone.
    fn forget(&self, known: impl Fn(KeyId) -> bool) -> usize {
        let mut gone = 0;
        self.keys.retain(|id, counters| {
            let keep = known(*id) || Arc::strong_count(counters) > 1;
            gone += usize::from(!keep);
            keep
        });
        self.end_users.retain(|(id, _), state| {
            let keep = known(*id) || Arc::strong_count(state) > 1;
            if !keep {
                self.uncount(*id);
            }
            keep
        });
        gone
    }

    fn inherit(&self, from: KeyId, to: KeyId) {
        // Requests in flight under `from` keep their own handle on the same counters and end into them.
        if let Some((_, counters)) = self.keys.remove(&from) {
            self.keys.insert(to, counters);
        }
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
/// until it is reserved or dropped.
pub struct Permit {
    slot: InFlightSlot,
    key: Arc<Mutex<KeyCounters>>,
    end_user: Option<Shared>,
    /// The end user's monthly token quota, when it has one.
    end_user_tokens: Option<u64>,
    account: Arc<Mutex<AccountCounters>>,
    limits: EffectiveLimits,
    plan_tokens: u64,
}

/// One of a key's concurrency places; freed when dropped.
struct InFlightSlot(Arc<Mutex<KeyCounters>>);

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut k = lock(&self.0);
        k.in_flight = k.in_flight.saturating_sub(1);
    }
}

/// An admitted request's token reservation and concurrency place. Dropped unsettled, it charges the
/// whole reservation, under the counters' locks, at once.
pub struct Ticket {
    key: Arc<Mutex<KeyCounters>>,
    end_user: Option<Shared>,
    account: Arc<Mutex<AccountCounters>>,
    /// Held for its `Drop`, which frees the place after the reservation ended.
    _slot: InFlightSlot,
    id: u64,
    reserved: u64,
    headers: RateHeaders,
    ended: bool,
}

impl Ticket {
    fn end(&mut self, actual: u64) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut k = lock(&self.key);
        let mut u = self.end_user.as_ref().map(|state| lock(state));
        let mut a = lock(&self.account);
        k.tokens.settle(self.id, actual);
        if let Some(u) = u.as_mut() {
            u.tokens.settle(self.id, actual);
        }
        a.tokens.settle(self.id, actual);
    }
}

impl ReservationTicket for Ticket {
    fn headers(&self) -> &RateHeaders {
        &self.headers
    }

    fn reserved(&self) -> u64 {
        self.reserved
    }

    fn settle(mut self, actual: u64) {
        self.end(actual);
    }

    fn release(mut self) {
        self.end(self.reserved);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.end(self.reserved);
    }
}

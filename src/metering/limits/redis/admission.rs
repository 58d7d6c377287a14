//! An admission in one Redis round trip: before the body, the request takes one of its key's places on
//! this instance ([`RedisCounters::take_place`], no call); once its cost is known, one script
//! (`admission.lua`) checks and records every request limit and reserves its tokens
//! ([`RedisCounters::admit_and_reserve`]).

use std::sync::Arc;

use super::ending::{self, Ending};
use super::tickets::{LocalPlace, PendingPermit, RemoteTicket, Ticket};
use super::{Down, Keys, end_users};
use super::{EffectiveLimits, LimitKind, Now, RateHeaders, RedisCounters, Refusal, Shared, Subject, TTL_SECS};
use crate::clock;
use crate::config::counters::OnUnavailable;
use crate::metering::limits::CounterBackend;
use crate::metering::limits::gcra::Rate;

/// A key's requests on this instance, from admission to the end of their reservation.
#[derive(Default)]
pub(super) struct Places {
    pub(super) held: u32,
    /// The rate-limit state of the key's last reservation here, for the headers of a refusal.
    pub(super) last: Option<RateHeaders>,
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
        reset_tokens_secs: until(clock::next_month_start(now.unix), now),
    }
}

fn until(next: i64, now: Now) -> u64 {
    u64::try_from(next.saturating_sub(now.unix)).unwrap_or(0)
}

/// The limit a script's code names, and the seconds to wait before retrying.
fn refusal_of(code: i64, wait_us: u64, now: Now) -> (LimitKind, u64) {
    let (limit, retry) = match code {
        1 => (LimitKind::Concurrency, 1),
        2 => (LimitKind::RequestsPerMinute, wait_us.div_ceil(1_000_000)),
        3 => (LimitKind::RequestsPerDay, until(clock::next_day_start(now.unix), now)),
        4 => (LimitKind::EndUserRequestsPerMinute, wait_us.div_ceil(1_000_000)),
        5 => (LimitKind::EndUserRequestsPerDay, until(clock::next_day_start(now.unix), now)),
        6 => (LimitKind::KeyTokens, until(clock::next_month_start(now.unix), now)),
        7 => (LimitKind::EndUserTokens, until(clock::next_month_start(now.unix), now)),
        8 => (LimitKind::AccountTokens, until(clock::next_month_start(now.unix), now)),
        // As the memory backend: its sweep forgets idle end users within seconds to minutes.
        _ => (LimitKind::EndUsers, 60),
    };
    (limit, retry.max(1))
}

impl RedisCounters {
    /// One of the key's places on this instance, or a concurrency refusal when the key holds as many here
    /// as its limit allows (then it holds at least that many in Redis too).
    pub(super) fn take_place(&self, subject: &Subject) -> Result<PendingPermit, Refusal> {
        let s = &self.shared;
        let mut places = s.places.entry(subject.key).or_default();
        if places.held >= subject.limits.concurrency {
            let headers = places.last.unwrap_or_else(|| unknown(&subject.limits, subject.plan_tokens));
            return Err(Refusal { limit: LimitKind::Concurrency, retry_after_secs: 1, headers });
        }
        places.held = places.held.saturating_add(1);
        drop(places);
        let place = LocalPlace { shared: Arc::clone(&self.shared), key: subject.key };
        Ok(PendingPermit { subject: subject.clone(), place })
    }

    /// The admission script: every request limit checked and recorded, the tokens reserved. While Redis
    /// cannot answer, the request limits are checked locally and the tokens refused as unavailable (or,
    /// with `on_unavailable = "local"`, reserved locally).
    pub(super) async fn admit_and_reserve(&self, p: PendingPermit, cost: u64, now: Now) -> Result<Ticket, Refusal> {
        let s = &self.shared;
        let subject = &p.subject;
        let end_user = end_users::limited(subject.end_user.as_ref());
        let keys = s.keys(subject.key, &subject.account, end_user.map(|e| &*e.id));
        let (id, now_us) = (s.id(), s.micros(now));
        let month = clock::month_of(now.unix);
        let keys = match s.call::<Vec<i64>>(&s.admission(subject, &keys, (id, now_us, cost), now)).await {
            Ok(v) if v.len() == 7 && (0..=9).contains(&v[0]) => (keys, v),
            failed => {
                // A script Redis ran after its caller stopped waiting holds a reservation and a slot no
                // ticket will end: the reservation would be charged whole when its lease ends, to a
                // request answered 503. It is ended uncharged instead, which does nothing if it never ran.
                if failed.is_err_and(|down| down == Down::Unanswered) {
                    ending::spawn(&self.shared, Ending::Settle { keys, id, actual: 0, month });
                }
                return self.admit_without_redis(subject, cost, now).await;
            }
        };
        let (keys, reply) = keys;
        let a = Admitted {
            code: reply.first().copied().unwrap_or(-1),
            wait_us: n(&reply, 1),
            tat: n(&reply, 2),
            key: (n(&reply, 3), n(&reply, 4)),
            account: (n(&reply, 5), n(&reply, 6)),
        };
        let headers = headers(&subject.limits, subject.plan_tokens, &a, now_us, now);
        if a.code != 0 {
            let (limit, retry_after_secs) = refusal_of(a.code, a.wait_us, now);
            return Err(Refusal { limit, retry_after_secs, headers });
        }
        if let Some(mut places) = s.places.get_mut(&subject.key) {
            places.last = Some(headers);
        }
        Ok(Ticket::Remote(RemoteTicket {
            shared: Arc::clone(&self.shared),
            keys,
            id,
            month,
            reserved: cost,
            headers,
            ended: false,
            _place: p.place,
        }))
    }

    async fn admit_without_redis(&self, subject: &Subject, cost: u64, now: Now) -> Result<Ticket, Refusal> {
        let s = &self.shared;
        let local = s.admit_locally(subject, now).await?;
        match s.on_unavailable {
            // A reservation of nothing (a free route, such as listing models) checks no quota, so it is
            // taken locally even when token quotas fail closed.
            OnUnavailable::FailClosed if cost > 0 => Err(s.unavailable()),
            _ => s.local.reserve(local, cost, now).await.map(Ticket::Local),
        }
    }
}

/// The headers of a refusal made before Redis was asked, when no reservation of the key's here has told
/// its state yet: the limits, no request left, and the token side as its whole limit.
fn unknown(limits: &EffectiveLimits, plan_tokens: u64) -> RateHeaders {
    let limit_tokens = limits.key_tokens.map_or(plan_tokens, |k| k.min(plan_tokens));
    RateHeaders {
        limit_requests: u64::from(limits.per_minute),
        remaining_requests: 0,
        reset_requests_ns: 0,
        limit_tokens,
        remaining_tokens: limit_tokens,
        reset_tokens_secs: 0,
    }
}

impl Shared {
    /// The admission script's call (see `admission.lua` for its arguments). `(id, now_us, cost)`: the
    /// reservation's id, the wall clock in microseconds, the tokens to reserve.
    fn admission<'a>(
        &'a self,
        subject: &Subject,
        keys: &'a Keys,
        (id, now_us, cost): (u64, u64, u64),
        now: Now,
    ) -> ::redis::ScriptInvocation<'a> {
        let l = subject.limits;
        let end_user = end_users::limited(subject.end_user.as_ref());
        let eu_rate = end_user.and_then(|e| e.limits.requests_per_minute).map(Rate::per_minute);
        let eu_per_day = end_user.and_then(|e| e.limits.requests_per_day).map_or(-1, i64::from);
        let quota = |q: Option<u64>| q.map_or(-1, |q| i64::try_from(q).unwrap_or(i64::MAX));
        let start_us = |unix: i64| unix.saturating_mul(1_000_000);
        let mut inv = self.scripts.admission.prepare_invoke();
        inv.key(&keys.key).key(&keys.flight).key(&keys.end_user).key(&keys.account);
        inv.key(&keys.res).key(&keys.resd).key(&keys.users);
        inv.arg(now_us).arg(clock::day_of(now.unix)).arg(clock::month_of(now.unix));
        inv.arg((l.rate.interval_ns / 1000).max(1)).arg(l.rate.burst).arg(l.per_day).arg(l.concurrency);
        inv.arg(id).arg(self.lease_us).arg(TTL_SECS).arg(u8::from(end_user.is_some()));
        inv.arg(eu_rate.map_or(0, |r| (r.interval_ns / 1000).max(1)))
            .arg(eu_rate.map_or(1, |r| r.burst))
            .arg(eu_per_day);
        inv.arg(cost).arg(quota(l.key_tokens)).arg(quota(end_user.and_then(|e| e.limits.tokens_per_month)));
        inv.arg(quota(Some(subject.plan_tokens))).arg(self.end_user_cap.map_or(-1, i64::from));
        inv.arg(start_us(clock::next_day_start(now.unix))).arg(start_us(clock::next_month_start(now.unix)));
        inv
    }
}

#[cfg(test)]
mod tests;

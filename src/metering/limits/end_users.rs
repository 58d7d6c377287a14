//! The in-memory counters of a key's end users (docs/ARCHITECTURE.md, Limits and charges): per (key, end user),
//! requests per minute (GCRA), per UTC day and tokens per month, checked and charged under the same locks as the
//! key's own, all or nothing. A state is made at the first admission of its end user, atomically (the map's
//! entry), so concurrent first requests share one state and one budget.
//!
//! Bound: a state is forgotten by the sweep once it is idle: nothing holds it (no permit or ticket), it has no
//! open reservation, and each limit it ran under has an empty window (the rate limiter back to its full burst,
//! no request today when a day limit applies, no token this month when a token quota applies). So a key holds
//! at most one state per end user with something still counting against a limit: under a flood of distinct
//! end users with only a per-minute limit, those seen in the last minute; with a monthly token quota, those that
//! used tokens this month, which a quota per end user cannot forget without giving their budget back. And a key
//! counts at most `limits.end_users_per_key` end users at once: a new one beyond is refused (`EndUsers`) until
//! the sweep forgets an idle one.

use std::sync::{Arc, Mutex};

use super::gcra::{Decision, Gcra, Rate};
use super::ledger::Ledger;
use super::{Carried, EndUser, EndUserLimits, LimitKind, Now};
use crate::clock;

pub(super) struct EndUserCounters {
    gcra: Gcra,
    day: i64,
    day_requests: u64,
    month: i64,
    pub(super) tokens: Ledger,
    /// The limits of its last admission, for the idleness test of the sweep.
    limits: EndUserLimits,
}

/// What refuses an end user's request: the limit and seconds to wait.
pub(super) type EndUserRefusal = (LimitKind, u64);

impl EndUserCounters {
    pub(super) fn fresh(carried: Carried, now: Now) -> EndUserCounters {
        EndUserCounters {
            gcra: Gcra::default(),
            day: clock::day_of(now.unix),
            day_requests: carried.day_requests,
            month: clock::month_of(now.unix),
            tokens: Ledger::with_used(carried.month_tokens),
            // Carried totals count until their windows end, whatever limits the key sets.
            limits: EndUserLimits {
                requests_per_minute: None,
                requests_per_day: Some(u32::MAX),
                tokens_per_month: Some(u64::MAX),
            },
        }
    }

    /// Starts a new day or month where `now` has crossed into one.
    pub(super) fn roll(&mut self, now: Now) {
        let day = clock::day_of(now.unix);
        if self.day != day {
            self.day = day;
            self.day_requests = 0;
        }
        let month = clock::month_of(now.unix);
        if self.month != month {
            self.month = month;
            self.tokens.roll();
        }
    }

    /// Whether the end user's request limits admit a request now; changes nothing.
    pub(super) fn check(&self, limits: &EndUserLimits, now: Now) -> Result<(), EndUserRefusal> {
        let rate = limits.requests_per_minute.map(Rate::per_minute);
        if let Some(Decision::Wait(ns)) = rate.map(|rate| self.gcra.check(rate, now.mono_ns)) {
            return Err((LimitKind::EndUserRequestsPerMinute, ns.div_ceil(1_000_000_000)));
        }
        if limits.requests_per_day.is_some_and(|per_day| self.day_requests >= u64::from(per_day)) {
            let wait = clock::next_day_start(now.unix).saturating_sub(now.unix);
            return Err((LimitKind::EndUserRequestsPerDay, u64::try_from(wait).unwrap_or(0)));
        }
        Ok(())
    }

    /// Counts an admitted request (after [`EndUserCounters::check`] passed, under the same lock).
    pub(super) fn record(&mut self, limits: &EndUserLimits, now: Now) {
        if let Some(per_minute) = limits.requests_per_minute {
            self.gcra.record(Rate::per_minute(per_minute), now.mono_ns);
        }
        self.day_requests = self.day_requests.saturating_add(1);
        self.limits = *limits;
    }

    /// Nothing left that a limit counts (see the module doc).
    pub(super) fn is_idle(&self, now: Now) -> bool {
        let today = self.day == clock::day_of(now.unix);
        let this_month = self.month == clock::month_of(now.unix);
        self.tokens.open_reservations() == 0
            && self.gcra.reset_ns(now.mono_ns) == 0
            && (self.limits.requests_per_day.is_none() || !today || self.day_requests == 0)
            && (self.limits.tokens_per_month.is_none() || !this_month || self.tokens.used == 0)
    }
}

/// The end user of a subject whose key limits end users: the state to count it in is made or found by
/// the caller.
pub(super) fn limited(end_user: Option<&EndUser>) -> Option<&EndUser> {
    end_user.filter(|e| !e.limits.is_none())
}

/// A state shared by the requests of one end user.
pub(super) type Shared = Arc<Mutex<EndUserCounters>>;

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::super::{CounterBackend, EffectiveLimits, MemoryCounters, ReservationTicket, Subject, memory::Ticket};
    use super::*;
    use crate::auth::keys::KeyId;

    const T0: Now = Now { mono_ns: 10_000_000_000, unix: 1_795_422_645 };
    const MINUTE: u64 = 60_000_000_000;

    fn at_once<T>(future: impl Future<Output = T>) -> T {
        match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the memory backend never waits"),
        }
    }

    fn subject(key_tokens: Option<u64>, end_user: &str, limits: EndUserLimits) -> Subject {
        Subject {
            key: KeyId::parse("AAAAAAAAAAAA").unwrap(),
            account: "acct".into(),
            limits: EffectiveLimits {
                rate: Rate::per_minute(1000),
                per_minute: 1000,
                per_day: 3,
                concurrency: 100,
                key_tokens,
            },
            plan_tokens: 1_000_000,
            end_user: Some(EndUser { id: end_user.into(), limits }),
        }
    }

    fn admit(l: &MemoryCounters, s: &Subject, cost: u64, now: Now) -> Result<Ticket, LimitKind> {
        let permit = at_once(l.admit_request(s, now)).map_err(|r| r.limit)?;
        at_once(l.reserve(permit, cost, now)).map_err(|r| r.limit)
    }

    fn tokens(n: u64) -> EndUserLimits {
        EndUserLimits { tokens_per_month: Some(n), ..EndUserLimits::default() }
    }

    /// A refusal by either side charges neither: an end user refused leaves the key's budget, a key
    /// refused leaves the end user's.
    #[test]
    fn the_key_and_its_end_users_are_charged_all_or_nothing() {
        let l = MemoryCounters::new(std::time::Duration::from_secs(60));
        let (ann, bob) = (subject(Some(150), "ann", tokens(100)), subject(Some(150), "bob", tokens(100)));
        let key = ann.key;
        let held = admit(&l, &ann, 80, T0).unwrap();
        assert_eq!(admit(&l, &ann, 30, T0).err(), Some(LimitKind::EndUserTokens));
        assert_eq!(l.key_tokens(key), Some((0, 80)), "the end user's refusal reserved nothing of the key's");
        let bobs = admit(&l, &bob, 70, T0).unwrap();
        assert_eq!(admit(&l, &bob, 1, T0).err(), Some(LimitKind::RequestsPerDay), "the key's third request today");
        assert_eq!(l.end_user_tokens(key, "bob"), Some((0, 70)), "the key's refusal charged bob nothing");
        held.settle(50);
        bobs.release();
        assert_eq!((l.end_user_tokens(key, "ann"), l.end_user_tokens(key, "bob")), (Some((50, 0)), Some((70, 0))));
        assert_eq!(l.key_tokens(key), Some((120, 0)));
        // A per-minute refusal of an end user counts no request of the key's.
        let l = MemoryCounters::new(std::time::Duration::from_secs(60));
        let one = EndUserLimits { requests_per_minute: Some(1), ..EndUserLimits::default() };
        let cy = subject(None, "cy", one);
        admit(&l, &cy, 0, T0).unwrap().settle(0);
        assert_eq!(admit(&l, &cy, 0, T0).err(), Some(LimitKind::EndUserRequestsPerMinute));
        assert_eq!(admit(&l, &cy, 0, T0).err(), Some(LimitKind::EndUserRequestsPerMinute));
        admit(&l, &subject(None, "di", one), 0, T0).unwrap().settle(0);
        admit(&l, &subject(None, "ed", one), 0, T0).unwrap().settle(0);
        assert_eq!(admit(&l, &subject(None, "fy", one), 0, T0).err(), Some(LimitKind::RequestsPerDay));
    }

    /// Threads racing the first requests of one new end user share one state and one budget.
    #[test]
    fn concurrent_first_requests_share_one_state() {
        let l = MemoryCounters::new(std::time::Duration::from_secs(60));
        let mut s = subject(None, "new", tokens(1000));
        s.limits.per_day = u32::MAX;
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        if let Ok(ticket) = admit(&l, &s, 30, T0) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            ticket.settle(30);
                        }
                    }
                });
            }
        });
        assert_eq!(l.tracked_end_users(), 1);
        assert_eq!(admitted.into_inner(), 1000 / 30);
        assert_eq!(l.end_user_tokens(s.key, "new"), Some((990, 0)));
    }

    /// A flood of distinct end users leaves only those with something still counting.
    #[test]
    fn idle_end_users_are_swept() {
        let l = MemoryCounters::new(std::time::Duration::from_secs(60));
        let rate = EndUserLimits { requests_per_minute: Some(10), ..EndUserLimits::default() };
        for i in 0..1000 {
            let mut s = subject(None, &format!("u{i}"), rate);
            s.limits.per_day = u32::MAX;
            admit(&l, &s, 0, T0).unwrap().settle(0);
        }
        assert_eq!(l.tracked_end_users(), 1000);
        l.sweep(T0);
        assert_eq!(l.tracked_end_users(), 1000, "their minute is not over");
        l.sweep(Now { mono_ns: T0.mono_ns + MINUTE, unix: T0.unix + 60 });
        assert_eq!(l.tracked_end_users(), 0);

        // Tokens used this month keep a state (its quota must not start again); a held one stays too.
        let t1 = Now { mono_ns: T0.mono_ns + 2 * MINUTE, unix: T0.unix + 120 };
        let mut quota = subject(None, "spender", tokens(100));
        quota.limits.per_day = u32::MAX;
        admit(&l, &quota, 10, t1).unwrap().settle(10);
        let mut holder = subject(None, "holder", rate);
        holder.limits.per_day = u32::MAX;
        let held = admit(&l, &holder, 5, t1).unwrap();
        let later = Now { mono_ns: t1.mono_ns + 2 * MINUTE, unix: t1.unix + 120 };
        l.sweep(later);
        assert_eq!(l.tracked_end_users(), 2);
        drop(held);
        l.sweep(later);
        assert_eq!(l.tracked_end_users(), 1, "the holder went once it ended");
        let next_month = Now { mono_ns: later.mono_ns, unix: clock::next_month_start(later.unix) };
        l.sweep(next_month);
        assert_eq!(l.tracked_end_users(), 0);
        // Keys without end-user limits make no state at all.
        admit(&l, &subject(None, "free", EndUserLimits::default()), 1, next_month).unwrap().settle(1);
        assert_eq!(l.tracked_end_users(), 0);
    }

    /// A key counts at most its cap of end users at once: a new one beyond it is refused, charging
    /// nothing; once the sweep forgets an idle one, a new one may come.
    #[test]
    fn a_key_counts_at_most_its_cap_of_end_users() {
        let l = MemoryCounters::new(std::time::Duration::from_secs(60)).with_end_user_cap(2);
        let rate = EndUserLimits { requests_per_minute: Some(10), ..EndUserLimits::default() };
        let user = |name: &str| {
            let mut s = subject(None, name, rate);
            s.limits.per_day = u32::MAX;
            s
        };
        admit(&l, &user("a"), 0, T0).unwrap().settle(0);
        admit(&l, &user("b"), 0, T0).unwrap().settle(0);
        assert_eq!(admit(&l, &user("c"), 0, T0).err(), Some(LimitKind::EndUsers));
        admit(&l, &user("a"), 0, T0).unwrap().settle(0);
        assert_eq!(l.tracked_end_users(), 2, "the refused one made no state");
        l.sweep(Now { mono_ns: T0.mono_ns + MINUTE, unix: T0.unix + 60 });
        let later = Now { mono_ns: T0.mono_ns + MINUTE, unix: T0.unix + 60 };
        admit(&l, &user("c"), 0, later).unwrap().settle(0);
        admit(&l, &user("d"), 0, later).unwrap().settle(0);
        assert_eq!(admit(&l, &user("e"), 0, later).err(), Some(LimitKind::EndUsers));
    }
}

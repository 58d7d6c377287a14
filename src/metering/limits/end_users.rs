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
//! used tokens this month, which a quota per end user cannot forget without giving their budget back.

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

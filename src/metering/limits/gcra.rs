//! The requests-per-minute limiter: GCRA (generic cell rate algorithm) over a theoretical arrival time.
//! With rate r and burst b it admits at most `b + r·t` requests in any window of length t, keeps one
//! integer of state, and knows exactly when the next request would conform (for `Retry-After`).
//! Time is passed in (nanoseconds on any monotonic clock), so tests drive it with a clock of their own.

/// A rate: one request per `interval_ns`, with `burst` requests allowed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub interval_ns: u64,
    pub burst: u64,
}

impl Rate {
    /// `per_minute` requests per minute, all of which may arrive at once.
    pub fn per_minute(per_minute: u32) -> Rate {
        let per_minute = u64::from(per_minute.max(1));
        Rate { interval_ns: 60_000_000_000 / per_minute, burst: per_minute }
    }

    fn tolerance_ns(self) -> u64 {
        self.interval_ns * (self.burst - 1)
    }
}

/// What a check says: admitted, or how long until a request would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Nanoseconds until the next request conforms.
    Wait(u64),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    /// Theoretical arrival time of the next request.
    tat: u64,
}

impl Gcra {
    /// Whether a request at `now` conforms; does not change the state.
    pub fn check(&self, rate: Rate, now: u64) -> Decision {
        let allow_at = self.tat.max(now).saturating_sub(rate.tolerance_ns());
        if now < allow_at { Decision::Wait(allow_at - now) } else { Decision::Admit }
    }

    /// Records an admitted request (call only after `check` said `Admit`).
    pub fn record(&mut self, rate: Rate, now: u64) {
        self.tat = self.tat.max(now) + rate.interval_ns;
    }

    /// Requests that would be admitted right now, one after another.
    pub fn remaining(&self, rate: Rate, now: u64) -> u64 {
        let backlog = self.tat.saturating_sub(now);
        let used = backlog.div_ceil(rate.interval_ns);
        rate.burst.saturating_sub(used)
    }

    /// Nanoseconds until the limiter is back to its full burst.
    pub fn reset_ns(&self, now: u64) -> u64 {
        self.tat.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// Drives the limiter far above its rate on a controllable clock.
    #[test]
    fn never_admits_more_than_burst_plus_rate_times_elapsed() {
        for per_minute in [1, 7, 60, 600, 1000] {
            let rate = Rate::per_minute(per_minute);
            let mut g = Gcra::default();
            let start = 5 * SECOND;
            let mut admitted = 0u64;
            // A request every 10ms for three minutes: far above every rate here.
            for step in 0..18_000u64 {
                let now = start + step * 10_000_000;
                if g.check(rate, now) == Decision::Admit {
                    g.record(rate, now);
                    admitted += 1;
                }
                let elapsed = now - start;
                let bound = rate.burst + elapsed / rate.interval_ns;
                assert!(admitted <= bound, "{per_minute}/min: {admitted} admitted after {elapsed}ns, bound {bound}");
            }
            // And it is not stingy: over three minutes it admits the burst plus three minutes of rate.
            assert!(
                admitted + 1 >= rate.burst + 3 * u64::from(per_minute),
                "{per_minute}/min admitted only {admitted}"
            );
        }
    }

    #[test]
    fn the_wait_is_exact_and_retry_after_rounds_up_to_the_second() {
        let rate = Rate::per_minute(60); // one a second, 60 at once
        let mut g = Gcra::default();
        let now = 100 * SECOND;
        for _ in 0..60 {
            assert_eq!(g.check(rate, now), Decision::Admit);
            g.record(rate, now);
        }
        assert_eq!(g.remaining(rate, now), 0);
        assert_eq!(g.check(rate, now), Decision::Wait(SECOND));
        let later = now + 300_000_000;
        assert_eq!(g.check(rate, later), Decision::Wait(700_000_000));
        // At exactly the promised instant, a request conforms.
        assert_eq!(g.check(rate, now + SECOND), Decision::Admit);
        assert_eq!(g.reset_ns(now), 60 * SECOND);
    }

    #[test]
    fn remaining_counts_down_and_refills() {
        let rate = Rate::per_minute(6); // one per 10s, burst 6
        let mut g = Gcra::default();
        let now = 1_000 * SECOND;
        assert_eq!(g.remaining(rate, now), 6);
        g.record(rate, now);
        g.record(rate, now);
        assert_eq!(g.remaining(rate, now), 4);
        assert_eq!(g.remaining(rate, now + 10 * SECOND), 5);
        assert_eq!(g.remaining(rate, now + 20 * SECOND), 6);
    }
}

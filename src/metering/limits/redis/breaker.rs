//! The circuit breaker in front of Redis: after `threshold` consecutive failures (errors or timeouts) it
//! opens and every call fails at once, without touching the network, for `cooldown`; then one call may
//! try (half-open): its success closes the breaker, its failure opens it for another `cooldown`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Breaker {
    threshold: u32,
    cooldown_ms: u64,
    origin: Instant,
    failures: AtomicU32,
    /// Milliseconds since `origin` until which the breaker is open; 0 when closed.
    open_until_ms: AtomicU64,
    /// A half-open trial call is under way.
    probing: AtomicBool,
    /// Milliseconds since `origin` of the last success.
    last_success_ms: AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown_ms: u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX).max(1),
            origin: Instant::now(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            last_success_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether a call may go to Redis now.
    pub fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        self.now_ms() >= until
            && self.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub fn success(&self) {
        self.last_success_ms.fetch_max(self.now_ms(), Ordering::AcqRel);
        self.failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    pub fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if n >= self.threshold {
            self.open_until_ms.store(self.now_ms().saturating_add(self.cooldown_ms), Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Open and within its cooldown: a call now would fail at once (not the half-open probe's turn).
    pub fn cooling(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    /// Whether a call succeeded at `since` (an instant of this process) or later.
    pub fn succeeded_since(&self, since: Instant) -> bool {
        let since_ms = u64::try_from(since.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX);
        self.last_success_ms.load(Ordering::Acquire) >= since_ms.max(1)
    }

    /// Open or half-open: Redis failed its last calls.
    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(30));
        b.failure();
        b.failure();
        assert!(b.allow() && !b.is_open());
        b.failure();
        assert!(b.is_open() && !b.allow(), "open: no call goes out");
        assert!(b.cooling());
        std::thread::sleep(Duration::from_millis(35));
        assert!(!b.cooling() && b.allow(), "half-open: one probe");
        assert!(!b.allow(), "only one probe at a time");
        b.failure();
        assert!(!b.allow(), "the failed probe opened it again");
        b.success();
        assert!(b.allow() && b.allow() && !b.is_open());
    }
}

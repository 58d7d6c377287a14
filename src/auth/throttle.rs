//! Throttles on password checks (login, password change), beside the bounded [`PasswordPool`].
//!
//! An attempt that passes the gates below is counted as a failure of its address and of its account
//! before argon2 runs, so attempts running side by side see each other; if it turns out right, or is never
//! checked (the pool is busy, or the account's turn is taken), its count is taken back.
//!
//! - Per client address (IPv6 by /64): after 5 failures, the next attempt from it waits 2^(failures − 5) s
//!   after the last failure, at most 60 s, and is refused with 429 and `Retry-After` until then (before
//!   any argon2 work). So a burst from one address gets its free attempts and then one per wait. A success
//!   does not reset the address (it takes back only its own count): its failures expire on their own, so
//!   logging into one's own account does not wipe the guesses made at another.
//! - Per account (by email): after 3 failures, each attempt is delayed 250 ms × 2^(failures − 3), at most
//!   4 s, and then checked, and the account is checked one attempt at a time: an attempt that finds a check
//!   of it in flight (delay included) gets 429 with the account's delay as `Retry-After`. An attempt from
//!   an address with no recent failures is only delayed, never refused here, so a guesser cannot lock the
//!   real user out: their right password from such an address gets through after at most 4 s plus its
//!   argon2 run (and the pool's queue). An attacker gains one attempt beside the turn per fresh address:
//!   the attempt itself counts, so an address is fresh again only once its failures are forgotten.
//!
//! A success clears the account's failures. Failures are forgotten 15 minutes after the last one. Both
//! tables have a fixed number of slots, indexed by a keyed hash; a key that lands on a taken slot replaces
//! it, so a flood of random emails or addresses costs no memory (and can only make the table forget, never
//! lock anyone out).

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::auth::passwords::{Busy, PasswordPool};

const SLOTS: usize = 4096;
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const ADDRESS_FREE_FAILURES: u32 = 5;
const ADDRESS_MAX_WAIT: Duration = Duration::from_secs(60);
const ACCOUNT_FREE_FAILURES: u32 = 3;
const ACCOUNT_STEP: Duration = Duration::from_millis(250);
const ACCOUNT_MAX_DELAY: Duration = Duration::from_secs(4);
/// What a caller told the pool is busy should wait.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    failures: u32,
    last_failure: Option<Instant>,
    /// A check of this key holds the key's one turn (only the account table uses it).
    in_flight: bool,
}

impl Slot {
    /// Whether the slot holds `hash`'s failures, and they are recent at `now`.
    fn holds(&self, hash: u64, now: Instant) -> bool {
        self.key == hash && self.last_failure.is_some_and(|at| now.saturating_duration_since(at) < FORGET_AFTER)
    }

    /// Recent failures of `hash` at `now`.
    fn failures(&self, hash: u64, now: Instant) -> u32 {
        if self.holds(hash, now) { self.failures } else { 0 }
    }

    /// Counts one more failure of `hash` at `now` (a slot of another key, or a forgotten one, starts
    /// over), and says what to take back if it was not one.
    fn fail(&mut self, hash: u64, now: Instant) -> Counted {
        let before = if self.holds(hash, now) { self.last_failure } else { None };
        let failures = self.failures(hash, now).saturating_add(1);
        let in_flight = self.key == hash && self.in_flight;
        *self = Slot { key: hash, failures, last_failure: Some(now), in_flight };
        Counted { hash, at: now, before }
    }
}

/// One failure counted ahead of its check.
#[derive(Clone, Copy)]
struct Counted {
    hash: u64,
    at: Instant,
    /// The key's last failure before this one.
    before: Option<Instant>,
}

/// Failure counts by key in a fixed number of slots.
struct FailureTable {
    slots: Box<[Mutex<Slot>]>,
    /// Keys the slot hash, so nobody can aim keys at one slot.
    seed: [u8; 32],
}

impl FailureTable {
    fn new() -> FailureTable {
        let mut seed = [0u8; 32];
        // Without the OS source the table still works; only its slots become predictable.
        let _ = getrandom::fill(&mut seed);
        FailureTable { slots: (0..SLOTS).map(|_| Mutex::new(Slot::default())).collect(), seed }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        let hash = blake3::keyed_hash(&self.seed, key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }

    /// `hash`'s slot, locked.
    fn lock(&self, hash: u64) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[(hash % SLOTS as u64) as usize].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recent failures of `key`, and when the last one was.
    #[cfg(test)]
    fn get(&self, key: &[u8], now: Instant) -> (u32, Option<Instant>) {
        let hash = self.hash(key);
        let slot = *self.lock(hash);
        if slot.holds(hash, now) { (slot.failures, slot.last_failure) } else { (0, None) }
    }

    #[cfg(test)]
    fn fail(&self, key: &[u8], now: Instant) {
        let hash = self.hash(key);
        self.lock(hash).fail(hash, now);
    }

    /// Takes back a failure counted for an attempt that turned out not to be one (it succeeded, or was
    /// never checked), with its time when no later failure replaced it.
    fn take_back(&self, counted: Counted) {
        let mut slot = self.lock(counted.hash);
        if slot.key == counted.hash && slot.failures > 0 {
            slot.failures -= 1;
            if slot.last_failure == Some(counted.at) && (counted.before.is_some() || slot.failures == 0) {
                slot.last_failure = counted.before;
            }
        }
    }

    /// Forgets `hash`'s failures (its turn, if a check holds it, stays held).
    fn clear(&self, hash: u64) {
        let mut slot = self.lock(hash);
        if slot.key == hash {
            *slot = Slot { key: hash, in_flight: slot.in_flight, ..Slot::default() };
        }
    }

    /// Gives back the turn taken for `hash`.
    fn end_turn(&self, hash: u64) {
        let mut slot = self.lock(hash);
        if slot.key == hash {
            slot.in_flight = false;
        }
    }
}

/// Why a password check did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Too many failures from this address, a check of this account in flight, or the pool's queue is
    /// full: retry after this long.
    RetryAfter(Duration),
}

/// The password pool and the throttles in front of it.
pub struct LoginGuard {
    pool: PasswordPool,
    by_address: FailureTable,
    by_account: FailureTable,
    /// Password checks handed to the pool so far.
    checks: AtomicU64,
}

/// What one attempt counted before its check, to settle once the answer is known. Dropped unsettled (the
/// request went away mid-check), the failures stay counted and only the account's turn is given back.
struct Attempt<'a> {
    guard: &'a LoginGuard,
    address: Option<Counted>,
    account: Counted,
    holds_turn: bool,
}

impl Attempt<'_> {
    /// The attempt was not a failure: its counts are taken back, and a success clears the account.
    fn settle(self, ok: Option<bool>) {
        match ok {
            Some(false) => {}
            Some(true) => self.guard.by_account.clear(self.account.hash),
            None => self.guard.by_account.take_back(self.account),
        }
        if ok != Some(false)
            && let Some(address) = self.address
        {
            self.guard.by_address.take_back(address);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.holds_turn {
            self.guard.by_account.end_turn(self.account.hash);
        }
    }
}

impl LoginGuard {
    pub fn new(pool: PasswordPool) -> LoginGuard {
        LoginGuard { pool, by_address: FailureTable::new(), by_account: FailureTable::new(), checks: AtomicU64::new(0) }
    }

    /// Checks `password` for `account_key` (the email as typed, lowercased) from `address`, against
    /// `stored` (none: an unknown account, the same work is done). `Ok(true)` only for the right password.
    pub async fn check(
        &self,
        address: Option<IpAddr>,
        account_key: &str,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, Throttled> {
        let now = Instant::now();
        // The address: refused while it must wait, else the attempt counts as a failure at once, so
        // attempts running beside it see it.
        let mut clean = false;
        let address = match address {
            None => None,
            Some(ip) => {
                let hash = self.by_address.hash(&address_key(ip));
                let mut slot = self.by_address.lock(hash);
                let (failures, last) = (slot.failures(hash, now), slot.last_failure);
                if let (Some(wait), Some(last)) = (address_wait(failures), last) {
                    let left = (last + wait).saturating_duration_since(now);
                    if !left.is_zero() {
                        return Err(Throttled::RetryAfter(left));
                    }
                }
                clean = failures == 0;
                Some(slot.fail(hash, now))
            }
        };
        // The account: counted the same way; once it has been failing, one check at a time, except for
        // an address with no recent failures (the real user's usual case), which is never refused here.
        let account = self.by_account.hash(account_key.as_bytes());
        let (attempt, delay) = {
            let mut slot = self.by_account.lock(account);
            let delay = account_delay(slot.failures(account, now));
            let takes_turn = delay.is_some() && !clean;
            if let Some(delay) = delay
                && takes_turn
                && slot.key == account
                && slot.in_flight
            {
                drop(slot);
                if let Some(address) = address {
                    self.by_address.take_back(address);
                }
                return Err(Throttled::RetryAfter(delay));
            }
            let counted = slot.fail(account, now);
            slot.in_flight |= takes_turn;
            (Attempt { guard: self, address, account: counted, holds_turn: takes_turn }, delay)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.checks.fetch_add(1, Ordering::Relaxed);
        match self.pool.verify(password, stored).await {
            Ok(ok) => {
                attempt.settle(Some(ok));
                Ok(ok)
            }
            Err(Busy) => {
                attempt.settle(None);
                Err(Throttled::RetryAfter(BUSY_RETRY_AFTER))
            }
        }
    }

    /// A new password hash, made on the pool.
    pub async fn hash(&self, password: String) -> Result<Result<String, String>, Throttled> {
        self.pool.hash(password).await.map_err(|Busy| Throttled::RetryAfter(BUSY_RETRY_AFTER))
    }
}

/// An address as the throttle counts it: IPv4 whole, IPv6 by its /64 (one host's usual allocation).
fn address_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
    }
}

/// How long after its last failure an address must wait, once it has failed `failures` times.
fn address_wait(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(ADDRESS_FREE_FAILURES)?;
    let secs = 1u64.checked_shl(over).unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(ADDRESS_MAX_WAIT))
}

/// How long an attempt on an account that failed `failures` times waits before it is checked.
fn account_delay(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(ACCOUNT_FREE_FAILURES)?;
    let factor = 1u32.checked_shl(over).unwrap_or(u32::MAX);
    Some(ACCOUNT_STEP.saturating_mul(factor).min(ACCOUNT_MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_offs_start_late_and_stay_bounded() {
        assert_eq!(address_wait(4), None);
        assert_eq!(address_wait(5), Some(Duration::from_secs(1)));
        assert_eq!(address_wait(7), Some(Duration::from_secs(4)));
        assert_eq!(address_wait(u32::MAX), Some(ADDRESS_MAX_WAIT));
        assert_eq!(account_delay(2), None);
        assert_eq!(account_delay(3), Some(Duration::from_millis(250)));
        assert_eq!(account_delay(5), Some(Duration::from_secs(1)));
        assert_eq!(account_delay(u32::MAX), Some(ACCOUNT_MAX_DELAY));
    }

    #[test]
    fn the_table_counts_forgets_and_never_grows() {
        let t = FailureTable::new();
        let now = Instant::now();
        for _ in 0..3 {
            t.fail(b"a", now);
        }
        assert_eq!(t.get(b"a", now).0, 3);
        assert_eq!(t.get(b"a", now + FORGET_AFTER).0, 0, "forgotten");
        t.clear(t.hash(b"a"));
        assert_eq!(t.get(b"a", now).0, 0);
        for i in 0..100_000u32 {
            t.fail(&i.to_le_bytes(), now);
        }
        assert_eq!(t.slots.len(), SLOTS);
        assert_eq!(address_key("2001:db8::1".parse().unwrap()), address_key("2001:db8::ffff".parse().unwrap()));
    }

    fn guard() -> std::sync::Arc<LoginGuard> {
        // One worker, and a queue long enough that no test here is told the pool is busy.
        std::sync::Arc::new(LoginGuard::new(PasswordPool::new(1, 64)))
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    /// Starts `attempts` (address, account) wrong guesses at once and gathers their answers.
    async fn burst(
        guard: &std::sync::Arc<LoginGuard>,
        attempts: Vec<(Option<IpAddr>, String)>,
    ) -> Vec<Result<bool, Throttled>> {
        let mut tasks = tokio::task::JoinSet::new();
        for (address, account) in attempts {
            let guard = std::sync::Arc::clone(guard);
            tasks.spawn(async move { guard.check(address, &account, "a wrong guess".into(), None).await });
        }
        tasks.join_all().await
    }

    fn checked(results: &[Result<bool, Throttled>]) -> usize {
        results.iter().filter(|r| **r == Ok(false)).count()
    }

    #[tokio::test]
    async fn own_account_successes_do_not_reset_guesses_at_another() {
        let guard = guard();
        let own = crate::auth::passwords::hash("my own passphrase").unwrap();
        let victim = crate::auth::passwords::hash("the victim's passphrase").unwrap();
        let mut refused = 0;
        for round in 0..2 {
            // Four guesses at the victim, then a login to the guesser's own account.
            for _ in 0..4 {
                match guard.check(ip(1), "victim@example.com", "a guess".into(), Some(victim.clone())).await {
                    Ok(ok) => assert!(!ok),
                    Err(Throttled::RetryAfter(_)) => refused += 1,
                }
            }
            let own = guard.check(ip(1), "attacker@example.com", "my own passphrase".into(), Some(own.clone())).await;
            if round == 0 {
                assert_eq!(own, Ok(true));
            } else {
                assert!(matches!(own, Err(Throttled::RetryAfter(_))), "{own:?}: the address is waiting");
            }
        }
        // 5 free failures, then one more after its wait: the other 2 of the second round are refused.
        assert_eq!(refused, 3);
        assert_eq!(guard.checks.load(Ordering::Relaxed), 5 + 1);
        let address = address_key(ip(1).unwrap());
        assert_eq!(guard.by_address.get(&address, Instant::now()).0, 5, "the successes took back only their own count");
    }

    #[tokio::test]
    async fn a_parallel_burst_from_one_address_gets_only_the_allowed_checks() {
        let guard = guard();
        // An address that used its free failures and whose 1 s wait is over: one attempt now, not a burst.
        let now = Instant::now();
        let past = now.checked_sub(Duration::from_secs(2)).unwrap_or(now);
        let tired = ip(1);
        for _ in 0..ADDRESS_FREE_FAILURES {
            guard.by_address.fail(&address_key(tired.unwrap()), past);
        }
        let attempts = (0..16).map(|i| (tired, format!("user{i}@example.com"))).collect();
        let results = burst(&guard, attempts).await;
        assert_eq!(checked(&results), 1, "{results:?}");
        assert!(results.iter().all(|r| matches!(r, Ok(false) | Err(Throttled::RetryAfter(_)))), "{results:?}");
        assert_eq!(guard.checks.load(Ordering::Relaxed), 1);
        // A fresh address: its free failures, no more.
        let attempts = (0..16).map(|i| (ip(2), format!("other{i}@example.com"))).collect();
        let results = burst(&guard, attempts).await;
        assert_eq!(checked(&results), ADDRESS_FREE_FAILURES as usize, "{results:?}");
        assert_eq!(guard.checks.load(Ordering::Relaxed), 1 + u64::from(ADDRESS_FREE_FAILURES));
    }

    #[tokio::test]
    async fn parallel_guesses_at_one_failing_account_are_checked_one_at_a_time() {
        let guard = guard();
        let now = Instant::now();
        for _ in 0..ACCOUNT_FREE_FAILURES {
            guard.by_account.fail(b"victim@example.com", now);
        }
        // Eight addresses, each with one failure elsewhere (so none is clean), guess at once.
        for i in 1..=8 {
            guard.by_address.fail(&address_key(ip(i).unwrap()), now);
        }
        let attempts = (1..=8).map(|i| (ip(i), "victim@example.com".to_owned())).collect();
        let results = burst(&guard, attempts).await;
        assert_eq!(checked(&results), 1, "{results:?}");
        assert_eq!(guard.checks.load(Ordering::Relaxed), 1);
        // The refused ones were not counted; the turn is free again once the check is done.
        assert_eq!(guard.by_account.get(b"victim@example.com", Instant::now()).0, ACCOUNT_FREE_FAILURES + 1);
        let counted: u32 = (1..=8).map(|i| guard.by_address.get(&address_key(ip(i).unwrap()), Instant::now()).0).sum();
        assert_eq!(counted, 8 + 1, "only the checked guess counts against its address");
        let next = guard.check(ip(2), "victim@example.com", "another guess".into(), None).await;
        assert_eq!(next, Ok(false));
        // A request that goes away while it holds the turn gives it back.
        let gone = guard.check(ip(3), "victim@example.com", "given up".into(), None);
        assert!(tokio::time::timeout(Duration::from_millis(20), gone).await.is_err());
        let after = guard.check(ip(4), "victim@example.com", "one more".into(), None).await;
        assert_eq!(after, Ok(false));
    }

    #[tokio::test]
    async fn the_right_password_from_a_clean_address_is_not_refused_while_the_account_is_busy() {
        let guard = guard();
        let stored = crate::auth::passwords::hash("the real passphrase").unwrap();
        let now = Instant::now();
        // Failing hard enough for the longest delay.
        for _ in 0..10 {
            guard.by_account.fail(b"victim@example.com", now);
        }
        guard.by_address.fail(&address_key(ip(1).unwrap()), now);
        let holder = {
            let (guard, stored) = (std::sync::Arc::clone(&guard), stored.clone());
            tokio::spawn(async move { guard.check(ip(1), "victim@example.com", "a guess".into(), Some(stored)).await })
        };
        tokio::task::yield_now().await;
        guard.by_address.fail(&address_key(ip(2).unwrap()), now);
        let suspect = guard.check(ip(2), "victim@example.com", "a guess".into(), Some(stored.clone())).await;
        assert_eq!(suspect, Err(Throttled::RetryAfter(ACCOUNT_MAX_DELAY)));
        let started = Instant::now();
        let real = guard.check(ip(3), "victim@example.com", "the real passphrase".into(), Some(stored)).await;
        assert_eq!(real, Ok(true));
        // The account's longest delay and one argon2 run (slow in a debug build), not a wait behind others.
        assert!(started.elapsed() < ACCOUNT_MAX_DELAY + Duration::from_secs(3), "{:?}", started.elapsed());
        assert!(matches!(holder.await.unwrap(), Ok(false)));
    }
}

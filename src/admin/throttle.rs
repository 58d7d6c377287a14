//! Throttles on password checks (login, password change), beside the bounded [`PasswordPool`]:
//!
//! - per client address (IPv6 by /64): after 5 failures in a row, the next attempt from it waits
//!   2^(failures − 5) s after the last failure, at most 60 s, and is refused with 429 and `Retry-After`
//!   until then (before any argon2 work);
//! - per account (by email): after 3 failures, each attempt is delayed 250 ms × 2^(failures − 3), at most
//!   4 s, and then checked. It only delays: a guesser elsewhere can slow a real user by a few seconds but
//!   never lock them out, and the right password from an address that has not been failing gets through.
//!
//! A success clears both. Failures are forgotten 15 minutes after the last one. Both tables have a fixed
//! number of slots, indexed by a keyed hash; a key that lands on a taken slot replaces it, so a flood of
//! random emails or addresses costs no memory (and can only make the table forget, never lock anyone out).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::passwords::{Busy, PasswordPool};

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

    fn slot(&self, key: &[u8]) -> (u64, &Mutex<Slot>) {
        let hash = blake3::keyed_hash(&self.seed, key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        let hash = u64::from_le_bytes(first);
        (hash, &self.slots[(hash % SLOTS as u64) as usize])
    }

    /// Recent failures of `key`, and when the last one was.
    fn get(&self, key: &[u8], now: Instant) -> (u32, Option<Instant>) {
        let (hash, slot) = self.slot(key);
        let slot = *slot.lock().unwrap_or_else(|p| p.into_inner());
        match slot.last_failure {
            Some(at) if slot.key == hash && now.saturating_duration_since(at) < FORGET_AFTER => {
                (slot.failures, Some(at))
            }
            _ => (0, None),
        }
    }

    fn fail(&self, key: &[u8], now: Instant) {
        let (hash, slot) = self.slot(key);
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        let fresh =
            slot.key != hash || slot.last_failure.is_none_or(|at| now.saturating_duration_since(at) >= FORGET_AFTER);
        let failures = if fresh { 1 } else { slot.failures.saturating_add(1) };
        *slot = Slot { key: hash, failures, last_failure: Some(now) };
    }

    fn clear(&self, key: &[u8]) {
        let (hash, slot) = self.slot(key);
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.key == hash {
            *slot = Slot::default();
        }
    }
}

/// Why a password check did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Too many failures from this address, or the pool's queue is full: retry after this long.
    RetryAfter(Duration),
}

/// The password pool and the throttles in front of it.
pub struct LoginGuard {
    pool: PasswordPool,
    by_address: FailureTable,
    by_account: FailureTable,
}

impl LoginGuard {
    pub fn new(pool: PasswordPool) -> LoginGuard {
        LoginGuard { pool, by_address: FailureTable::new(), by_account: FailureTable::new() }
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
        let address = address.map(address_key);
        let now = Instant::now();
        if let Some(address) = &address {
            let (failures, last) = self.by_address.get(address, now);
            if let (Some(wait), Some(last)) = (address_wait(failures), last) {
                let left = (last + wait).saturating_duration_since(now);
                if !left.is_zero() {
                    return Err(Throttled::RetryAfter(left));
                }
            }
        }
        let (failures, _) = self.by_account.get(account_key.as_bytes(), now);
        if let Some(delay) = account_delay(failures) {
            tokio::time::sleep(delay).await;
        }
        let ok = self.pool.verify(password, stored).await.map_err(|Busy| Throttled::RetryAfter(BUSY_RETRY_AFTER))?;
        let now = Instant::now();
        if ok {
            self.by_account.clear(account_key.as_bytes());
            if let Some(address) = &address {
                self.by_address.clear(address);
            }
        } else {
            self.by_account.fail(account_key.as_bytes(), now);
            if let Some(address) = &address {
                self.by_address.fail(address, now);
            }
        }
        Ok(ok)
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
        t.clear(b"a");
        assert_eq!(t.get(b"a", now).0, 0);
        for i in 0..100_000u32 {
            t.fail(&i.to_le_bytes(), now);
        }
        assert_eq!(t.slots.len(), SLOTS);
        assert_eq!(address_key("2001:db8::1".parse().unwrap()), address_key("2001:db8::ffff".parse().unwrap()));
    }
}

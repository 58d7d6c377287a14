//! A token budget for one period (a calendar month): tokens used, tokens reserved by requests in flight,
//! and the reservations themselves. Reserving is all-or-nothing against the quota; each reservation ends
//! exactly once, by settling to actual usage, by release, or by its lease running out. Amounts come from
//! request bodies and upstream reports, so nothing here may overflow: a reservation that would take
//! `used + reserved` past `u64::MAX` does not fit any quota, and usage saturates.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    amount: u64,
    /// After this instant (any monotonic clock, ns) the reservation is ended by `expire`.
    lease_until: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub used: u64,
    pub reserved: u64,
    holds: HashMap<u64, Hold>,
}

impl Ledger {
    /// A ledger starting at `used` tokens (from the store after a restart).
    pub fn with_used(used: u64) -> Ledger {
        Ledger { used, ..Ledger::default() }
    }

    pub fn fits(&self, quota: u64, amount: u64) -> bool {
        self.used.checked_add(self.reserved).and_then(|held| held.checked_add(amount)).is_some_and(|t| t <= quota)
    }

    pub fn remaining(&self, quota: u64) -> u64 {
        quota.saturating_sub(self.used.saturating_add(self.reserved))
    }

    /// Records a reservation the caller has checked with [`Ledger::fits`] (on this ledger, or on one
    /// whose reservations include this one's, as an account's include its keys'), so `reserved` stays
    /// the exact sum of the holds; saturating only guards that contract.
    pub fn reserve(&mut self, id: u64, amount: u64, lease_until: u64) {
        self.reserved = self.reserved.saturating_add(amount);
        self.holds.insert(id, Hold { amount, lease_until });
    }

    /// Ends reservation `id`, charging `actual` tokens. `false` if it had already ended.
    pub fn settle(&mut self, id: u64, actual: u64) -> bool {
        let Some(hold) = self.holds.remove(&id) else {
            return false;
        };
        self.reserved = self.reserved.saturating_sub(hold.amount);
        self.used = self.used.saturating_add(actual);
        true
    }

    /// Ends every reservation whose lease ran out before `now`, charging each its whole amount (its
    /// holder vanished; what it used is unknown). Returns the ids ended.
    pub fn expire(&mut self, now: u64) -> Vec<u64> {
        let ended: Vec<(u64, u64)> =
            self.holds.iter().filter(|(_, h)| h.lease_until <= now).map(|(id, h)| (*id, h.amount)).collect();
        for &(id, amount) in &ended {
            self.settle(id, amount);
        }
        ended.into_iter().map(|(id, _)| id).collect()
    }

    /// Starts a new period: usage back to zero, reservations carried over.
    pub fn roll(&mut self) {
        self.used = 0;
    }

    pub fn open_reservations(&self) -> usize {
        self.holds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Reserve { amount: u64, lease: u64 },
        Settle { pick: usize, fraction: u8 },
        Release { pick: usize },
        Expire { advance: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..400, 1u64..50).prop_map(|(amount, lease)| Op::Reserve { amount, lease }),
            (any::<usize>(), any::<u8>()).prop_map(|(pick, fraction)| Op::Settle { pick, fraction }),
            any::<usize>().prop_map(|pick| Op::Release { pick }),
            (0u64..20).prop_map(|advance| Op::Expire { advance }),
        ]
    }

    proptest! {
        /// Random reserve / settle / release / expire sequences: used + reserved never exceeds the quota
        /// (actual usage never exceeds its reservation here), and every reservation ends exactly once.
        #[test]
        fn the_budget_holds_and_every_reservation_ends_once(quota in 0u64..3000, ops in prop::collection::vec(op(), 1..200)) {
            let mut ledger = Ledger::default();
            let mut now = 0u64;
            let mut next_id = 0u64;
            let mut open: Vec<(u64, u64)> = Vec::new(); // (id, amount), in the model
            let mut ended = std::collections::HashSet::new();
            for op in ops {
                match op {
                    Op::Reserve { amount, lease } => {
                        let fits = ledger.fits(quota, amount);
                        prop_assert_eq!(fits, ledger.used + ledger.reserved + amount <= quota);
                        if fits {
                            next_id += 1;
                            ledger.reserve(next_id, amount, now + lease);
                            open.push((next_id, amount));
                        }
                    }
                    Op::Settle { pick, fraction } if !open.is_empty() => {
                        let (id, amount) = open.remove(pick % open.len());
                        prop_assert!(ledger.settle(id, amount * u64::from(fraction) / 255));
                        prop_assert!(ended.insert(id));
                        prop_assert!(!ledger.settle(id, 1), "settled twice");
                    }
                    Op::Release { pick } if !open.is_empty() => {
                        let (id, _) = open.remove(pick % open.len());
                        prop_assert!(ledger.settle(id, 0));
                        prop_assert!(ended.insert(id));
                    }
                    Op::Expire { advance } => {
                        now += advance;
                        for id in ledger.expire(now) {
                            prop_assert!(ended.insert(id), "expired an ended reservation");
                            open.retain(|(o, _)| *o != id);
                        }
                    }
                    _ => {}
                }
                prop_assert!(ledger.used + ledger.reserved <= quota);
                prop_assert_eq!(ledger.reserved, open.iter().map(|(_, a)| a).sum::<u64>());
                prop_assert_eq!(ledger.open_reservations(), open.len());
            }
            // Draining ends every open reservation once.
            for id in ledger.expire(u64::MAX) {
                prop_assert!(ended.insert(id));
            }
            prop_assert_eq!(ended.len() as u64, next_id);
            prop_assert_eq!(ledger.reserved, 0);
        }
    }

    #[test]
    fn amounts_near_u64_max_never_wrap() {
        let mut l = Ledger::with_used(10);
        assert!(!l.fits(1000, u64::MAX), "used + amount would wrap to 9");
        assert!(!l.fits(u64::MAX, u64::MAX));
        assert!(l.fits(u64::MAX, u64::MAX - 10));
        l.reserve(1, u64::MAX - 10, 5);
        assert!(!l.fits(u64::MAX, 1));
        assert!(l.settle(1, u64::MAX));
        assert_eq!((l.used, l.reserved), (u64::MAX, 0));
        assert!(!l.fits(u64::MAX, 1));
    }

    #[test]
    fn overshoot_is_bounded_by_one_requests_excess() {
        let mut l = Ledger::default();
        l.reserve(1, 100, 10);
        assert!(!l.fits(150, 100));
        assert!(l.settle(1, 130));
        assert_eq!(l.used, 130);
        assert!(!l.fits(150, 21) && l.fits(150, 20));
    }
}

//! What the Redis backend hands the data plane: a permit (a place among the key's requests on this
//! instance, or a local admission while Redis is away) and a reservation ticket. Neither waits on Redis
//! when it ends: a permit has nothing there yet, a ticket's ending is spawned (see `ending`).

use std::sync::Arc;

use super::ending::{self, Ending};
use super::memory;
use super::{Keys, RateHeaders, ReservationTicket, Shared, Subject};
use crate::auth::keys::KeyId;

/// A request let in before its body is read: by this instance's own count of the key's requests (Redis
/// is asked once, at [`CounterBackend::reserve`](super::CounterBackend::reserve)), or, while the breaker
/// keeps Redis away, by the local fallback's request limits.
pub enum Permit {
    Pending(PendingPermit),
    Local(memory::Permit),
}

/// A request holding one of its key's places on this instance; Redis has not seen it yet, so dropping it
/// costs no call.
pub struct PendingPermit {
    pub(super) subject: Subject,
    pub(super) place: LocalPlace,
}

/// One of a key's places on this instance (at most the key's concurrency), from its admission until its
/// reservation ends; freed when dropped. It bounds how many of a key's bodies one instance reads at once,
/// which Redis's count of the key's requests in flight, taken at the reservation, cannot.
pub struct LocalPlace {
    pub(super) shared: Arc<Shared>,
    pub(super) key: KeyId,
}

impl Drop for LocalPlace {
    fn drop(&mut self) {
        self.shared.places.remove_if_mut(&self.key, |_, p| {
            p.held = p.held.saturating_sub(1);
            p.held == 0
        });
    }
}

pub enum Ticket {
    Remote(RemoteTicket),
    Local(memory::Ticket),
}

/// A reservation held in Redis; its ending is spawned, never awaited.
pub struct RemoteTicket {
    pub(super) shared: Arc<Shared>,
    pub(super) keys: Keys,
    /// The reservation's id, also its concurrency slot's.
    pub(super) id: u64,
    pub(super) month: i64,
    pub(super) reserved: u64,
    pub(super) headers: RateHeaders,
    pub(super) ended: bool,
    /// Held for its `Drop`.
    pub(super) _place: LocalPlace,
}

impl RemoteTicket {
    fn end(&mut self, actual: u64) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        ending::spawn(&self.shared, Ending::Settle { keys, id: self.id, actual, month: self.month });
    }
}

impl Drop for RemoteTicket {
    fn drop(&mut self) {
        self.end(self.reserved);
    }
}

impl ReservationTicket for Ticket {
    fn headers(&self) -> &RateHeaders {
        match self {
            Ticket::Remote(t) => &t.headers,
            Ticket::Local(t) => t.headers(),
        }
    }

    fn reserved(&self) -> u64 {
        match self {
            Ticket::Remote(t) => t.reserved,
            Ticket::Local(t) => t.reserved(),
        }
    }

    fn settle(self, actual: u64) {
        match self {
            Ticket::Remote(mut t) => t.end(actual),
            Ticket::Local(t) => t.settle(actual),
        }
    }

    fn release(self) {
        match self {
            Ticket::Remote(mut t) => {
                let reserved = t.reserved;
                t.end(reserved);
            }
            Ticket::Local(t) => t.release(),
        }
    }
}

//! What the Redis backend hands the data plane: a permit (a concurrency slot held in Redis, or a local
//! one while Redis is away) and a reservation ticket. Neither waits on Redis when it ends: the ending is
//! spawned (see `ending`).

use std::sync::Arc;

use super::ending::{self, Ending};
use super::memory;
use super::{Keys, RateHeaders, ReservationTicket, Shared, Subject};

/// A request admitted by Redis (holding a concurrency slot there) or, while Redis is away, locally.
pub enum Permit {
    Remote(RemotePermit),
    Local(memory::Permit),
}

/// A request admitted by Redis: its slot is freed by its reservation's end, by a refused reservation,
/// or (dropped) by a spawned release.
pub struct RemotePermit {
    pub(super) shared: Arc<Shared>,
    pub(super) keys: Arc<Keys>,
    pub(super) slot: u64,
    pub(super) subject: Subject,
    pub(super) headers: RateHeaders,
    pub(super) ended: bool,
}

impl Drop for RemotePermit {
    fn drop(&mut self) {
        if !self.ended {
            ending::spawn(&self.shared, Ending::Slot { keys: Arc::clone(&self.keys), slot: self.slot });
        }
    }
}

pub enum Ticket {
    Remote(RemoteTicket),
    Local(memory::Ticket),
}

/// A reservation held in Redis; its ending is spawned, never awaited.
pub struct RemoteTicket {
    pub(super) shared: Arc<Shared>,
    pub(super) keys: Arc<Keys>,
    pub(super) slot: u64,
    pub(super) id: u64,
    pub(super) month: i64,
    pub(super) reserved: u64,
    pub(super) headers: RateHeaders,
    pub(super) ended: bool,
}

impl RemoteTicket {
    fn end(&mut self, actual: u64) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let keys = Arc::clone(&self.keys);
        ending::spawn(&self.shared, Ending::Settle { keys, slot: self.slot, id: self.id, actual, month: self.month });
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

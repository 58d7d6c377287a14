//! Admission: whether tollgate takes a request at all. For now a process-wide cap on requests in flight
//! (503 with `Retry-After` beyond it), held by a slot that lives as long as the response body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::ProxyError;

pub struct InFlight {
    count: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted request; releases its place when dropped.
pub struct InFlightSlot(Arc<AtomicUsize>);

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight { count: Arc::new(AtomicUsize::new(0)), max }
    }

    pub fn admit(&self) -> Result<InFlightSlot, ProxyError> {
        let admitted =
            self.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).is_ok();
        if !admitted {
            return Err(ProxyError::Overloaded);
        }
        Ok(InFlightSlot(Arc::clone(&self.count)))
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_and_slots_free_on_drop() {
        let f = InFlight::new(2);
        let a = f.admit().unwrap();
        let _b = f.admit().unwrap();
        assert_eq!(f.admit().err(), Some(ProxyError::Overloaded));
        drop(a);
        assert!(f.admit().is_ok());
        assert_eq!(f.current(), 1);
    }
}

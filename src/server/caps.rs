//! Caps on the connections held at once, in total and per client address, so idle or slow sockets
//! cannot take every file descriptor. A connection beyond a cap is refused at once (plain HTTP: a bare
//! `503` with `Retry-After` and `Connection: close`; TLS: closed), and the refusals are logged at most
//! once a second.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// What a refused plain-HTTP connection is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\ntoo many connections";

pub struct ConnectionCaps {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    /// Held connections per address; an address leaves the map with its last connection.
    per_ip: DashMap<IpAddr, usize>,
    /// Woken when the last connection closes (the shutdown drain waits for it).
    drained: Notify,
    refusals: ThrottledLog,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

impl ConnectionCaps {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionCaps> {
        Arc::new(ConnectionCaps {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            drained: Notify::new(),
            refusals: ThrottledLog::default(),
        })
    }

    /// A place for one more connection from `ip`, if both caps allow it.
    pub fn admit(self: &Arc<ConnectionCaps>, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        let ip = client_of(ip);
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.release_total();
            return Err(Refused::Total);
        }
        let admitted = match self.per_ip.entry(ip) {
            Entry::Occupied(held) if *held.get() >= self.max_per_ip => false,
            Entry::Occupied(mut held) => {
                *held.get_mut() += 1;
                true
            }
            Entry::Vacant(slot) => {
                slot.insert(1);
                true
            }
        };
        if !admitted {
            self.release_total();
            return Err(Refused::PerIp);
        }
        Ok(ConnectionPermit { caps: Arc::clone(self), ip })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Resolves once no connection is held.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.held() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Tells a refused connection why (plain HTTP only, without waiting on the peer), then closes it.
    pub fn refuse(&self, stream: TcpStream, peer: std::net::SocketAddr, why: Refused, tell: bool) {
        if tell {
            // A fresh socket's send buffer takes these few bytes at once; reading what already arrived
            // lets the close be a FIN rather than a reset that could destroy the answer in flight.
            let _ = stream.try_write(REFUSAL);
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
                    break;
                }
            }
        }
        drop(stream);
        self.refusals.note(|suppressed| {
            tracing::warn!(
                %peer,
                cap = match why {
                    Refused::Total => "server.max_connections",
                    Refused::PerIp => "server.max_connections_per_ip",
                },
                refused_in_last_second = suppressed,
                "connection refused: over the cap",
            );
        });
    }

    fn release_total(&self) {
        if self.total.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }
}

/// The client an address counts for: IPv4 as itself (also when mapped into IPv6), IPv6 by its /64, the
/// block one subscriber is usually given, so that a single host cannot pass the per-address cap by
/// rotating through its own addresses.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// A held connection's place under the caps, given back when dropped.
pub struct ConnectionPermit {
    caps: Arc<ConnectionCaps>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Entry::Occupied(mut held) = self.caps.per_ip.entry(self.ip) {
            let count = held.get_mut();
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove();
            }
        }
        self.caps.release_total();
    }
}

/// A warning written at most once a second, with the number of occurrences it stood for.
#[derive(Default)]
pub struct ThrottledLog {
    /// Milliseconds since `origin` of the last line written (0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
    origin: std::sync::OnceLock<std::time::Instant>,
}

impl ThrottledLog {
    const EVERY: Duration = Duration::from_secs(1);

    /// Counts one occurrence, and calls `write` with the count since the last line if a second has passed.
    pub fn note(&self, write: impl FnOnce(u64)) {
        let origin = *self.origin.get_or_init(std::time::Instant::now);
        // Offset by the period so the first occurrence is always written.
        let now = u64::try_from(origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(Self::EVERY.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        let count = self.suppressed.fetch_add(1, Ordering::Relaxed) + 1;
        if now.saturating_sub(last) >= Self::EVERY.as_millis() as u64
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.suppressed.store(0, Ordering::Relaxed);
            write(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_total_and_per_address_and_give_places_back() {
        let caps = ConnectionCaps::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let a1 = caps.admit(a).unwrap();
        let _a2 = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).err(), Some(Refused::PerIp));
        let _b1 = caps.admit(b).unwrap();
        assert_eq!(caps.admit(b).err(), Some(Refused::Total));
        assert_eq!(caps.held(), 3);
        drop(a1);
        assert_eq!(caps.held(), 2);
        let _a3 = caps.admit(a).unwrap();
        assert_eq!(caps.held(), 3);
    }

    #[test]
    fn an_address_leaves_the_map_with_its_last_connection() {
        let caps = ConnectionCaps::new(10, 10);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let permits: Vec<_> = (0..3).map(|_| caps.admit(ip).unwrap()).collect();
        assert_eq!(caps.per_ip.len(), 1);
        drop(permits);
        assert!(caps.per_ip.is_empty());
        assert_eq!(caps.held(), 0);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_block_and_mapped_ipv4_as_ipv4() {
        let caps = ConnectionCaps::new(10, 1);
        let _first = caps.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(caps.admit("2001:db8::ffff:2".parse().unwrap()).err(), Some(Refused::PerIp));
        let _other = caps.admit("2001:db8:0:1::1".parse().unwrap()).unwrap();
        let _v4 = caps.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(caps.admit("::ffff:192.0.2.1".parse().unwrap()).err(), Some(Refused::PerIp));
    }

    #[test]
    fn the_throttled_log_writes_the_first_and_then_at_most_once_a_second() {
        let log = ThrottledLog::default();
        let mut written = Vec::new();
        for _ in 0..1000 {
            log.note(|n| written.push(n));
        }
        assert_eq!(written, vec![1]);
    }
}

//! Trial keys' devices and the throttle on issuing them. A device is a keyed blake3 hash of the client
//! address prefix (IPv4 /32, IPv6 /64) and the `User-Agent`: only the hash is ever stored, and without the
//! server secret it cannot be mapped back to an address. Issuance is throttled per address prefix (and per
//! IPv6 /48) and by a ceiling for all devices together, each a GCRA over one hour; serving a device's
//! existing key is not throttled here (its key's own limits apply).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::policy::canonical;

/// The longest `User-Agent` taken into the device hash; the rest is ignored.
const MAX_USER_AGENT: usize = 512;

/// A device: the keyed hash of its address prefix and user agent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(pub [u8; 32]);

impl std::fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceId([hash])")
    }
}

impl DeviceId {
    /// The device of a request from `ip` with `user_agent`, hashed under `secret`.
    pub fn of(secret: &[u8; 32], ip: IpAddr, user_agent: &[u8]) -> DeviceId {
        let mut hasher = blake3::Hasher::new_keyed(secret);
        match Prefix::of(ip) {
            Prefix::V4(a) => hasher.update(&[4]).update(&a),
            Prefix::V6(p) => hasher.update(&[6]).update(&p),
        };
        let ua = &user_agent[..user_agent.len().min(MAX_USER_AGENT)];
        hasher.update(&(ua.len() as u64).to_le_bytes()).update(ua);
        DeviceId(*hasher.finalize().as_bytes())
    }

    /// The name the limits count this device's monthly tokens under (its quota outlives a regenerated
    /// key); the first half of the hash, in hex.
    pub fn quota_account(&self) -> String {
        let mut out = String::with_capacity(6 + 32);
        out.push_str("trial:");
        for b in &self.0[..16] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// The part of an address a device is: all of IPv4, the /64 of IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Prefix {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Prefix {
    fn of(ip: IpAddr) -> Prefix {
        match canonical(ip) {
            IpAddr::V4(v4) => Prefix::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&v6.octets()[..8]);
                Prefix::V6(p)
            }
        }
    }
}

/// What one issuance is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    Prefix(Prefix),
    Ipv6Slash48([u8; 6]),
}

/// The issuance limits, per hour.
#[derive(Debug, Clone, Copy)]
pub struct IssueLimits {
    pub per_prefix: u32,
    pub per_ipv6_48: u32,
    pub total: u32,
}

/// Why an issuance was refused: which throttle, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueRefusal {
    pub retry_after_secs: u64,
}

/// A GCRA cell: the theoretical arrival time of the next issuance.
#[derive(Debug, Clone, Copy)]
struct Cell {
    tat: Instant,
}

const HOUR: Duration = Duration::from_secs(3600);

/// How long `cell` makes an issuance at `now` wait under `per_hour` (zero: it may go now).
fn wait(cell: Option<Cell>, per_hour: u32, now: Instant) -> Duration {
    let interval = HOUR / per_hour.max(1);
    let tolerance = HOUR.saturating_sub(interval);
    let tat = cell.map_or(now, |c| c.tat.max(now));
    tat.saturating_duration_since(now).saturating_sub(tolerance)
}

fn advance(cell: Option<Cell>, per_hour: u32, now: Instant) -> Cell {
    let interval = HOUR / per_hour.max(1);
    let tat = cell.map_or(now, |c| c.tat.max(now));
    Cell { tat: tat + interval }
}

/// The issuance throttle: a cell per bucket that issued in the last hour, and one for everything. A
/// refused attempt writes nothing, so the table holds at most two buckets per key issued in an hour.
pub struct IssuanceThrottle {
    limits: IssueLimits,
    state: Mutex<Cells>,
}

#[derive(Default)]
struct Cells {
    total: Option<Cell>,
    buckets: HashMap<Bucket, Cell>,
}

impl IssuanceThrottle {
    pub fn new(limits: IssueLimits) -> IssuanceThrottle {
        IssuanceThrottle { limits, state: Mutex::new(Cells::default()) }
    }

    /// Takes one issuance for a client at `ip` at `now`, or says how long to wait. All throttles are
    /// checked before any is counted.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), IssueRefusal> {
        let mut buckets = vec![(Bucket::Prefix(Prefix::of(ip)), self.limits.per_prefix)];
        if let IpAddr::V6(v6) = canonical(ip) {
            let mut p = [0u8; 6];
            p.copy_from_slice(&v6.octets()[..6]);
            buckets.push((Bucket::Ipv6Slash48(p), self.limits.per_ipv6_48));
        }
        let mut cells = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut longest = wait(cells.total, self.limits.total, now);
        for (bucket, per_hour) in &buckets {
            longest = longest.max(wait(cells.buckets.get(bucket).copied(), *per_hour, now));
        }
        if !longest.is_zero() {
            return Err(IssueRefusal { retry_after_secs: longest.as_secs_f64().ceil().max(1.0) as u64 });
        }
        cells.total = Some(advance(cells.total, self.limits.total, now));
        for (bucket, per_hour) in buckets {
            let next = advance(cells.buckets.get(&bucket).copied(), per_hour, now);
            cells.buckets.insert(bucket, next);
        }
        // Buckets whose hour has passed hold nothing a new one would not.
        if cells.buckets.len() > 1024 {
            cells.buckets.retain(|_, c| c.tat > now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_device_is_its_prefix_and_user_agent_under_the_secret() {
        let s = [7u8; 32];
        let d = |a: &str, ua: &[u8]| DeviceId::of(&s, ip(a), ua);
        assert_eq!(d("1.2.3.4", b"sdk/1"), d("::ffff:1.2.3.4", b"sdk/1"));
        assert_ne!(d("1.2.3.4", b"sdk/1"), d("1.2.3.5", b"sdk/1"));
        assert_ne!(d("1.2.3.4", b"sdk/1"), d("1.2.3.4", b"sdk/2"));
        assert_eq!(d("2001:db8:1:2::1", b"x"), d("2001:db8:1:2:ffff::9", b"x"), "one /64");
        assert_ne!(d("2001:db8:1:2::1", b"x"), d("2001:db8:1:3::1", b"x"));
        assert_ne!(DeviceId::of(&[8; 32], ip("1.2.3.4"), b"sdk/1"), d("1.2.3.4", b"sdk/1"), "keyed");
        let account = d("1.2.3.4", b"sdk/1").quota_account();
        assert!(account.starts_with("trial:") && account.len() == 38, "{account}");
        assert_eq!(format!("{:?}", d("1.2.3.4", b"a")), "DeviceId([hash])");
    }

    #[test]
    fn issuance_is_throttled_per_prefix_per_48_and_in_total() {
        let t = IssuanceThrottle::new(IssueLimits { per_prefix: 2, per_ipv6_48: 3, total: 5 });
        let now = Instant::now();
        assert!(t.take(ip("1.1.1.1"), now).is_ok());
        assert!(t.take(ip("1.1.1.1"), now).is_ok());
        let refused = t.take(ip("1.1.1.1"), now).unwrap_err();
        assert!((1..=1800).contains(&refused.retry_after_secs), "{refused:?}");

        // Two /64s of one /48: each /64 allows 2, the /48 only 3 between them.
        assert!(t.take(ip("2001:db8:0:1::1"), now).is_ok());
        assert!(t.take(ip("2001:db8:0:1::2"), now).is_ok());
        assert!(t.take(ip("2001:db8:0:1::3"), now).is_err(), "the /64 is spent");
        assert!(t.take(ip("2001:db8:0:2::1"), now).is_ok());
        assert!(t.take(ip("2001:db8:0:3::1"), now).is_err(), "the /48 is spent");
        // Five went through: the ceiling.
        assert!(t.take(ip("9.9.9.9"), now).is_err(), "the ceiling of 5 per hour");
        // Half an hour later one more is allowed (2 per hour: one per 30 minutes).
        assert!(t.take(ip("1.1.1.1"), now + Duration::from_secs(1801)).is_ok());
    }

    #[test]
    fn a_refused_attempt_counts_nothing() {
        let t = IssuanceThrottle::new(IssueLimits { per_prefix: 1, per_ipv6_48: 10, total: 100 });
        let now = Instant::now();
        assert!(t.take(ip("1.1.1.1"), now).is_ok());
        for _ in 0..50 {
            assert!(t.take(ip("1.1.1.1"), now).is_err());
        }
        assert!(t.take(ip("2.2.2.2"), now).is_ok(), "refusals spent none of the ceiling");
    }
}

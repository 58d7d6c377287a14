//! Time as tollgate reads it: the [`Clock`] the limits read (monotonic for rates and leases, unix seconds
//! for UTC days and months), behind a trait so tests can drive it by hand; and the calendar arithmetic on
//! unix seconds, with the RFC 3339 form for people (UTC, no time-zone database).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// An instant on both clocks the limits need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic nanoseconds (rates, leases).
    pub mono_ns: u64,
    /// Unix seconds (UTC days and months).
    pub unix: i64,
}

/// Where the limits read the time. The server reads [`SystemClock`]; tests hold a [`ManualClock`] and
/// move it across minutes, days and months without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> Now;
}

/// A shared clock: a test keeps one handle to move it and gives the server another.
impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Now {
        (**self).now()
    }
}

/// The machine's clocks: monotonic nanoseconds since the clock was made, and the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: std::time::Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock { origin: std::time::Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        let mono_ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Now { mono_ns, unix: unix_now() }
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    mono_ns: AtomicU64,
    unix: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Now) -> ManualClock {
        ManualClock { mono_ns: AtomicU64::new(start.mono_ns), unix: AtomicI64::new(start.unix) }
    }

    /// Moves both clocks forward by `by` (whole seconds on the unix clock).
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.mono_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_add(ns)));
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        let _ = self.unix.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_add(secs)));
    }

    /// Moves both clocks forward to the unix second `unix` (never back).
    pub fn advance_to(&self, unix: i64) {
        let now = self.now();
        if unix > now.unix {
            self.advance(Duration::from_secs((unix - now.unix) as u64));
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        Now { mono_ns: self.mono_ns.load(Ordering::Relaxed), unix: self.unix.load(Ordering::Relaxed) }
    }
}

/// `2026-11-23T08:30:00Z`.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since the epoch of a unix time (the UTC day).
pub fn day_of(unix: i64) -> i64 {
    unix.div_euclid(86_400)
}

/// The UTC calendar month of a unix time, as `year * 12 + month - 1`.
pub fn month_of(unix: i64) -> i64 {
    let (y, m, _) = civil_from_days(day_of(unix));
    y * 12 + i64::from(m) - 1
}

/// Unix time of the next UTC midnight after `unix`.
pub fn next_day_start(unix: i64) -> i64 {
    (day_of(unix) + 1) * 86_400
}

/// Unix time at which the UTC month after the one holding `unix` begins.
pub fn next_month_start(unix: i64) -> i64 {
    let next = month_of(unix) + 1;
    days_from_civil(next.div_euclid(12), (next.rem_euclid(12) + 1) as u32, 1) * 86_400
}

/// Day number of the first day of the UTC month holding `unix`.
pub fn month_first_day(unix: i64) -> i64 {
    let (y, m, _) = civil_from_days(day_of(unix));
    days_from_civil(y, m, 1)
}

/// `YYYY-MM-DD` of a UTC day number.
pub fn date_of_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day number of `YYYY-MM-DD`, if it is a date.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if text.len() != 10 || !(1..=12).contains(&m) || d == 0 || d > 31 {
        return None;
    }
    let day = days_from_civil(y, m, d);
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// Howard Hinnant's civil-to-days algorithm (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_422_645), "2026-11-23T08:30:45Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn a_manual_clock_moves_both_clocks_only_forward() {
        let clock = ManualClock::new(Now { mono_ns: 5, unix: 1_795_422_645 });
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Now { mono_ns: 1_500_000_005, unix: 1_795_422_646 });
        clock.advance_to(next_day_start(1_795_422_645));
        assert_eq!(rfc3339(clock.now().unix), "2026-11-24T00:00:00Z");
        clock.advance_to(0);
        assert_eq!(rfc3339(clock.now().unix), "2026-11-24T00:00:00Z");
        let shared = std::sync::Arc::new(clock);
        let handed_out: Box<dyn Clock> = Box::new(std::sync::Arc::clone(&shared));
        shared.advance(Duration::from_secs(1));
        assert_eq!(rfc3339(handed_out.now().unix), "2026-11-24T00:00:01Z");
        let system = SystemClock::new();
        let (a, b) = (system.now(), system.now());
        assert!(b.mono_ns >= a.mono_ns && b.unix >= a.unix);
    }

    #[test]
    fn day_and_month_boundaries() {
        let t = 1_795_422_645; // 2026-11-23T08:30:45Z
        assert_eq!(rfc3339(next_day_start(t)), "2026-11-24T00:00:00Z");
        assert_eq!(rfc3339(next_month_start(t)), "2026-12-01T00:00:00Z");
        let dec = 1_798_675_200; // 2026-12-31T00:00:00Z
        assert_eq!(rfc3339(dec), "2026-12-31T00:00:00Z");
        assert_eq!(rfc3339(next_month_start(dec)), "2027-01-01T00:00:00Z");
        assert_eq!(month_of(dec) + 1, month_of(next_month_start(dec)));
        assert_eq!(parse_date("2026-11-23"), Some(day_of(t)));
        assert_eq!(date_of_day(day_of(t)), "2026-11-23");
        assert_eq!(date_of_day(month_first_day(t)), "2026-11-01");
        for bad in ["2026-02-30", "2026-13-01", "26-11-23", "2026-11-3", "x"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}

//! Points in time as the API shows them: RFC 3339 in UTC, to the millisecond.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch: what the database stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(ms as i64)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }

    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.as_millis() as i64))
    }

    /// The minute this instant falls in, as a count since the epoch.
    pub fn minute(self) -> i64 {
        self.0.div_euclid(60_000)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

/// Where the server reads the time for every decision that depends on it: expiry, grace,
/// rate limits, cache lifetimes, last use. The system clock in production; a clock that
/// stands still until it is moved forward in tests, so that they wait for nothing and
/// their windows are exact.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Manual>>);

struct Manual {
    /// Milliseconds since the Unix epoch.
    now: AtomicI64,
    start: i64,
    /// The monotonic instant that stands for `start`.
    origin: Instant,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(None)
    }

    /// A clock that shows `start` until it is moved with [`advance`](Clock::advance).
    pub fn manual(start: Timestamp) -> Self {
        Clock(Some(Arc::new(Manual {
            now: AtomicI64::new(start.0),
            start: start.0,
            origin: Instant::now(),
        })))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => Timestamp::now(),
            Some(m) => Timestamp(m.now.load(Ordering::Acquire)),
        }
    }

    /// A monotonic instant on the same time line as [`now`](Clock::now), for measuring
    /// how long something has lasted.
    pub fn instant(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(m) => {
                let moved = m.now.load(Ordering::Acquire) - m.start;
                m.origin + Duration::from_millis(moved.max(0) as u64)
            }
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved.
    ///
    /// # Panics
    /// On the system clock: a test that means to control time must hold a manual one.
    pub fn advance(&self, by: Duration) {
        let m = self.0.as_ref().expect("only a manual clock can be moved");
        m.now.fetch_add(by.as_millis() as i64, Ordering::AcqRel);
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::System"),
            Some(m) => write!(
                f,
                "Clock::Manual({})",
                Timestamp(m.now.load(Ordering::Acquire))
            ),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .examples([serde_json::json!("2026-11-28T09:30:00.000Z")])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_rfc3339_to_the_millisecond() {
        let t = Timestamp(1_795_000_000_123);
        let s = t.to_string();
        assert_eq!(s, "2026-11-18T11:06:40.123Z");
        assert_eq!(Timestamp::parse(&s), Some(t));
        assert_eq!(Timestamp::parse("2026-11-18T12:06:40.123+01:00"), Some(t));
    }

    #[test]
    fn a_manual_clock_stands_still_until_it_is_moved_and_its_instants_move_with_it() {
        let start = Timestamp(1_795_000_000_123);
        let clock = Clock::manual(start);
        let first = clock.instant();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), start);
        assert_eq!(clock.instant(), first);
        let copy = clock.clone();
        copy.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Timestamp(1_795_000_001_623));
        assert_eq!(clock.instant() - first, Duration::from_millis(1500));
        assert_eq!(
            format!("{clock:?}"),
            "Clock::Manual(2026-11-18T11:06:41.623Z)"
        );
    }

    #[test]
    fn the_system_clock_follows_the_system_time() {
        let clock = Clock::system();
        let before = Timestamp::now();
        let now = clock.now();
        assert!(now >= before && now <= Timestamp::now());
        let a = clock.instant();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.instant() > a);
        assert_eq!(format!("{clock:?}"), "Clock::System");
    }
}

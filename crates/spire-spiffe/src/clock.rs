//! The clock abstraction every expiry and rotation decision goes through.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time. Logic takes a `Clock` instead of calling
/// `SystemTime::now()` so tests can control time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as whole seconds since the Unix epoch (negative before 1970).
    fn now_unix(&self) -> i64 {
        to_unix_secs(self.now())
    }

    /// The current time as an `OffsetDateTime` in UTC.
    fn now_utc(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::from(self.now())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share the same time, so a test can keep a
/// handle and advance the clock seen by the code under test.
#[derive(Clone)]
pub struct FakeClock {
    now: Arc<Mutex<SystemTime>>,
}

impl FakeClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        FakeClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock stopped at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: i64) -> Self {
        Self::new(from_unix_secs(secs))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.lock();
        *now += d;
    }

    /// Moves the clock backward by `d` (saturating at the epoch's representable minimum).
    pub fn rewind(&self, d: Duration) {
        let mut now = self.lock();
        if let Some(t) = now.checked_sub(d) {
            *now = t;
        }
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: SystemTime) {
        *self.lock() = t;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A poisoned lock still holds a valid SystemTime.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for FakeClock {
    /// A clock stopped at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self::at_unix(1_767_225_600)
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }
}

impl fmt::Debug for FakeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeClock")
            .field("now_unix", &to_unix_secs(*self.lock()))
            .finish()
    }
}

/// Whole seconds since the Unix epoch (rounded toward negative infinity before 1970).
pub fn to_unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                secs.saturating_neg().saturating_sub(1)
            } else {
                secs.saturating_neg()
            }
        }
    }
}

/// The time `secs` seconds after the Unix epoch (before it when negative). Saturates instead of
/// overflowing.
pub fn from_unix_secs(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// Converts to `time::OffsetDateTime` (UTC).
pub fn to_offset_date_time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_advances_shared() {
        let c = FakeClock::at_unix(1000);
        let handle = c.clone();
        let dynclock: Arc<dyn Clock> = Arc::new(c);
        assert_eq!(dynclock.now_unix(), 1000);
        handle.advance(Duration::from_secs(60));
        assert_eq!(dynclock.now_unix(), 1060);
        handle.rewind(Duration::from_secs(10));
        assert_eq!(dynclock.now_unix(), 1050);
        handle.set(from_unix_secs(5));
        assert_eq!(dynclock.now(), UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(dynclock.now_utc().unix_timestamp(), 5);
    }

    #[test]
    fn unix_secs_round_trip() {
        for s in [-86_400i64, -1, 0, 1, 1_767_225_600] {
            assert_eq!(to_unix_secs(from_unix_secs(s)), s);
        }
        let t = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(to_unix_secs(t), -2);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_unix() > 1_577_836_800);
    }
}

//! Where the layer gets the current time; tests swap in a clock they control.
//!
//! [`ManualClock`] is public through `cloakroom::test_suite` (feature
//! `test-suite`), which has an example.

use std::fmt;
#[cfg(any(test, feature = "test-suite"))]
use std::sync::{Arc, Mutex, PoisonError};
#[cfg(any(test, feature = "test-suite"))]
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current time.
///
/// Every expiry decision the layer makes uses this clock, and passes its
/// reading to the store, so idle and absolute timeouts can be tested without
/// sleeping.
// Public through `test_suite`; without that feature only the layer uses it.
#[cfg_attr(not(feature = "test-suite"), allow(unreachable_pub))]
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock. The default.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

#[cfg(any(test, feature = "test-suite"))]
/// A clock that moves only when told to. Clones share one time.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

#[cfg(any(test, feature = "test-suite"))]
impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock stopped at the current wall-clock time (whole seconds).
    pub fn starting_now() -> Self {
        Self::new(truncate_to_seconds(OffsetDateTime::now_utc()))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: OffsetDateTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

#[cfg(any(test, feature = "test-suite"))]
impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(any(test, feature = "test-suite"))]
impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

/// Session timestamps have whole-second precision in every store.
pub(crate) fn truncate_to_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t - time::Duration::nanoseconds(i64::from(t.nanosecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        let b = a.clone();
        a.advance(Duration::from_secs(5));
        assert_eq!(b.now().unix_timestamp(), 5);
        b.set(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(a.now().unix_timestamp(), 0);
    }

    #[test]
    fn truncation_drops_sub_second_part() {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(2_750);
        assert_eq!(truncate_to_seconds(t).unix_timestamp_nanos(), 2_000_000_000);
    }
}

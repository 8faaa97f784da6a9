//! What a store keeps for one session ([`SessionRecord`]), what one request
//! changed in it ([`Patch`]), and the expiry rules every store applies.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use cloakroom::store::time::OffsetDateTime;
//! use cloakroom::store::{Patch, SessionRecord};
//!
//! let now = OffsetDateTime::UNIX_EPOCH;
//! let (idle, absolute) = (Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600));
//! let mut record = SessionRecord::new(now, idle, absolute);
//! assert!(!record.is_expired(now + Duration::from_secs(29 * 60)));
//! assert!(record.is_expired(now + Duration::from_secs(30 * 60)));
//!
//! let mut patch = Patch::default();
//! patch.set.insert("theme".into(), "dark".into());
//! record.apply(&patch);
//! assert_eq!(record.data["theme"], "dark");
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::device::Device;
use crate::id::SessionHandle;

/// Everything the server keeps about one session.
///
/// Timestamps have whole-second precision. A record expires at
/// [`SessionRecord::expires_at`]: the earlier of its idle deadline
/// (`last_seen + idle_timeout`) and its absolute deadline. Stores decide
/// expiry from these fields and the time the layer passes in; their own TTLs
/// are only a second line of defence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Application data: string keys to JSON values.
    pub data: Map<String, Value>,
    /// The logged-in user, if any. Stores index sessions by it.
    pub user_id: Option<String>,
    /// When the session was created (or last logged in).
    #[serde(with = "time::serde::timestamp")]
    pub created_at: OffsetDateTime,
    /// The last recorded activity, to within the touch threshold
    /// ([`Touch::after`] of the idle window); the idle deadline runs from
    /// here.
    #[serde(with = "time::serde::timestamp")]
    pub last_seen: OffsetDateTime,
    /// Inactivity allowed before the session expires. The stores keep
    /// whole seconds: a fraction of a second is dropped when the record is
    /// stored.
    #[serde(with = "whole_seconds")]
    pub idle_timeout: Duration,
    /// The session expires at this time however active it is.
    #[serde(with = "time::serde::timestamp")]
    pub absolute_deadline: OffsetDateTime,
    /// Whether the cookie outlives the browser session ("remember me").
    pub persistent: bool,
    /// Where the session was logged in from (empty until a login).
    #[serde(default)]
    pub device: Device,
}

impl SessionRecord {
    /// An empty record created at `now`, whose absolute deadline is
    /// `now + absolute_timeout` (saturating at the largest representable
    /// time).
    pub fn new(now: OffsetDateTime, idle_timeout: Duration, absolute_timeout: Duration) -> Self {
        Self {
            data: Map::new(),
            user_id: None,
            created_at: now,
            last_seen: now,
            idle_timeout,
            absolute_deadline: saturating_add(now, absolute_timeout),
            persistent: false,
            device: Device::default(),
        }
    }

    /// `last_seen + idle_timeout`, saturating at the largest representable
    /// time rather than panicking on an absurd stored record.
    pub fn idle_deadline(&self) -> OffsetDateTime {
        saturating_add(self.last_seen, self.idle_timeout)
    }

    /// The earlier of the idle and the absolute deadline.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.idle_deadline().min(self.absolute_deadline)
    }

    /// Whether the session is over at `now` (a deadline equal to `now` has
    /// passed).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at() <= now
    }

    /// Whether a load (or save) at `touch.now` must record activity: set
    /// `last_seen` to `touch.now`, which also extends the idle deadline.
    ///
    /// True when at least `touch.after` of the idle window has passed since
    /// `last_seen`. This holds near the absolute deadline too, where the
    /// touch no longer moves [`SessionRecord::expires_at`]: `last_seen`
    /// always tells the last activity, to within `touch.after` of the idle
    /// window. Whole seconds are compared, so every store reaches the same
    /// answer.
    pub fn touch_due(&self, touch: &Touch) -> bool {
        touch.due(self.last_seen, self.idle_timeout)
    }

    /// Extends the idle deadline: `last_seen = now`.
    pub fn touch(&mut self, now: OffsetDateTime) {
        self.last_seen = now;
    }

    /// Applies `patch`: clear (if asked), then removals, then insertions,
    /// then the new lifetime.
    pub fn apply(&mut self, patch: &Patch) {
        patch.apply_to_data(&mut self.data);
        if let Some(lifetime) = &patch.lifetime {
            self.idle_timeout = lifetime.idle_timeout;
            self.absolute_deadline = lifetime.absolute_deadline;
            self.persistent = lifetime.persistent;
        }
    }

    /// The listing entry for this record.
    pub fn info(&self, key: crate::id::StoreKey) -> SessionInfo {
        SessionInfo {
            key,
            created_at: self.created_at,
            last_seen: self.last_seen,
            expires_at: self.expires_at(),
            persistent: self.persistent,
            current: false,
            device: self.device.clone(),
        }
    }
}

/// The rolling-expiry rule a store applies while loading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Touch {
    /// The time of the load, from the layer's clock, whole seconds.
    pub now: OffsetDateTime,
    /// Fraction of the idle window (0.0 up to, not including, 1.0 from the
    /// layer) that must pass before activity is recorded again. 0.0 records
    /// every load.
    pub after: f64,
}

impl Touch {
    /// [`SessionRecord::touch_due`] on a record's `last_seen` and
    /// `idle_timeout` alone, for stores that keep a record in another form.
    pub(crate) fn due(&self, last_seen: OffsetDateTime, idle_timeout: Duration) -> bool {
        let elapsed = (self.now - last_seen).whole_seconds();
        let threshold = idle_timeout.as_secs() as f64 * self.after;
        elapsed as f64 >= threshold
    }
}

/// What one request changed in a session: only this is written back, so
/// concurrent requests that change different keys do not undo each other.
///
/// `set` and `remove` never name the same key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    /// Remove every data key before applying `remove` and `set`.
    pub clear: bool,
    /// Keys to insert or overwrite.
    pub set: Map<String, Value>,
    /// Keys to remove.
    pub remove: BTreeSet<String>,
    /// A new lifetime ("remember me"), if it changed.
    pub lifetime: Option<Lifetime>,
}

impl Patch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.clear && self.set.is_empty() && self.remove.is_empty() && self.lifetime.is_none()
    }

    /// Whether the patch changes the data (rather than only the lifetime).
    #[cfg(feature = "memory")]
    pub(crate) fn changes_data(&self) -> bool {
        self.clear || !self.set.is_empty() || !self.remove.is_empty()
    }

    /// The data part of [`SessionRecord::apply`]: clear, removals, insertions.
    pub(crate) fn apply_to_data(&self, data: &mut Map<String, Value>) {
        if self.clear {
            data.clear();
        }
        for key in &self.remove {
            data.remove(key);
        }
        for (key, value) in &self.set {
            data.insert(key.clone(), value.clone());
        }
    }

    pub(crate) fn insert(&mut self, key: &str, value: Value) {
        self.remove.remove(key);
        self.set.insert(key.to_owned(), value);
    }

    pub(crate) fn delete(&mut self, key: &str) {
        self.set.remove(key);
        if !self.clear {
            self.remove.insert(key.to_owned());
        }
    }

    pub(crate) fn clear_data(&mut self) {
        self.clear = true;
        self.set.clear();
        self.remove.clear();
    }
}

/// A session's own timeouts and cookie persistence, stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Inactivity allowed before the session expires (whole seconds once
    /// stored).
    pub idle_timeout: Duration,
    /// The session expires at this time however active it is.
    pub absolute_deadline: OffsetDateTime,
    /// Whether the cookie outlives the browser session.
    pub persistent: bool,
}

/// One session of a user, as listed by [`crate::SessionAdmin::list_sessions`]
/// and [`crate::Session::list_sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's store key: identifies it, but cannot be turned into a
    /// cookie. Pages show [`SessionInfo::handle`] instead.
    pub key: crate::id::StoreKey,
    /// When the session was created or last logged in.
    pub created_at: OffsetDateTime,
    /// When its idle deadline was last extended (stores move it at most
    /// once per touch interval). In [`crate::Session::list_sessions`], the
    /// current session's is the listing request's time.
    pub last_seen: OffsetDateTime,
    /// When it will expire unless used again.
    pub expires_at: OffsetDateTime,
    /// Whether its cookie outlives the browser session.
    pub persistent: bool,
    /// Whether this is the session of the request that listed it. Stores
    /// always report `false`; [`crate::Session::list_sessions`] sets it.
    pub current: bool,
    /// Where the session was logged in from.
    pub device: Device,
}

impl SessionInfo {
    /// The handle to show a client for this session (e.g. in a "sign out
    /// this device" form), for [`crate::Session::logout_device`].
    pub fn handle(&self) -> SessionHandle {
        SessionHandle::from(self.key)
    }
}

/// `t + d`, saturating at the largest representable time (a `d` beyond
/// what `time` can add at all saturates too).
pub(crate) fn saturating_add(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

/// `t + d`, or `None` past the largest representable time.
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) fn checked_add(t: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    t.checked_add(time::Duration::try_from(d).ok()?)
}

/// The whole seconds of `d` as the stores write them: an `i64`,
/// saturating at `i64::MAX` (a record that long is refused when read
/// back, its idle deadline being out of range).
pub(crate) fn whole_seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The idle timeout a store read back as whole seconds, or `None` when it
/// is negative or its idle deadline from `last_seen` is past the largest
/// representable time (the layer adds the two).
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) fn stored_idle_timeout(secs: i64, last_seen: OffsetDateTime) -> Option<Duration> {
    let idle_timeout = Duration::from_secs(u64::try_from(secs).ok()?);
    checked_add(last_seen, idle_timeout).map(|_| idle_timeout)
}

/// The serde form of a timeout: whole seconds, as a signed integer.
mod whole_seconds {
    use std::time::Duration;

    use serde::de::{Error as _, Unexpected};
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(super::whole_seconds(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = i64::deserialize(d)?;
        u64::try_from(secs).map(Duration::from_secs).map_err(|_| {
            D::Error::invalid_value(
                Unexpected::Signed(secs),
                &"a timeout in seconds, not negative",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    fn record() -> SessionRecord {
        SessionRecord::new(at(0), Duration::from_secs(100), Duration::from_secs(1000))
    }

    #[test]
    fn info_describes_the_record_under_its_key() {
        let key = crate::id::StoreKey::from_bytes([5; 32]);
        for persistent in [false, true] {
            let mut r = record();
            r.touch(at(40));
            r.persistent = persistent;
            let info = r.info(key);
            assert_eq!(info.key, key);
            assert_eq!(info.created_at, at(0));
            assert_eq!(info.last_seen, at(40));
            assert_eq!(info.expires_at, at(140));
            assert_eq!(info.persistent, persistent);
            assert!(!info.current, "a store never marks a session current");
            assert_eq!(info.device, r.device);
        }
    }

    #[test]
    fn idle_deadline_is_reached_exactly_at_the_timeout() {
        let r = record();
        assert!(!r.is_expired(at(99)));
        assert!(r.is_expired(at(100)));
    }

    #[test]
    fn absolute_deadline_wins_over_touches() {
        let mut r = record();
        r.touch(at(950));
        assert_eq!(r.expires_at(), at(1000));
        assert!(r.is_expired(at(1000)));
    }

    #[test]
    fn touch_is_due_only_after_the_fraction_has_passed() {
        let r = record();
        let due = |now, after| {
            r.touch_due(&Touch {
                now: at(now),
                after,
            })
        };
        assert!(!due(24, 0.25));
        assert!(due(25, 0.25));
        assert!(due(0, 0.0));
    }

    #[test]
    fn touch_is_due_near_the_absolute_deadline_so_last_seen_tracks_activity() {
        let mut r = record();
        r.last_seen = at(920);
        assert!(r.touch_due(&Touch {
            now: at(990),
            after: 0.1
        }));
        assert!(!r.touch_due(&Touch {
            now: at(929),
            after: 0.1
        }));
    }

    #[test]
    fn absurd_timeouts_saturate_instead_of_panicking() {
        let mut r = record();
        let latest = OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT);
        r.idle_timeout = Duration::MAX;
        r.absolute_deadline = latest;
        assert!(!r.is_expired(at(0)));
        r.last_seen = OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT);
        r.idle_timeout = Duration::ZERO;
        assert!(r.is_expired(at(0)));

        // Beyond what `time` adds (more than i64::MAX seconds), and within
        // it but past the last representable time.
        for timeout in [Duration::MAX, Duration::from_secs(i64::MAX as u64)] {
            let r = SessionRecord::new(at(0), timeout, timeout);
            assert!(r.absolute_deadline > latest);
            assert_eq!(r.idle_deadline(), r.absolute_deadline);
            assert!(!r.is_expired(at(0)));
        }
    }

    #[test]
    fn stored_idle_timeouts_out_of_range_are_refused() {
        assert_eq!(
            stored_idle_timeout(100, at(0)),
            Some(Duration::from_secs(100))
        );
        assert_eq!(stored_idle_timeout(0, at(0)), Some(Duration::ZERO));
        assert_eq!(stored_idle_timeout(-1, at(0)), None);
        assert_eq!(stored_idle_timeout(i64::MIN, at(0)), None);
        assert_eq!(stored_idle_timeout(i64::MAX, at(0)), None);
        assert_eq!(whole_seconds(Duration::from_millis(1999)), 1);
        assert_eq!(whole_seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn patch_applies_clear_then_removals_then_insertions() {
        let mut r = record();
        r.data.insert("a".into(), 1.into());
        r.data.insert("b".into(), 2.into());
        let mut p = Patch::default();
        p.delete("a");
        p.insert("c", 3.into());
        r.apply(&p);
        assert_eq!(
            Value::Object(r.data.clone()),
            serde_json::json!({"b": 2, "c": 3})
        );

        let mut p = Patch::default();
        p.insert("x", 1.into());
        p.clear_data();
        p.insert("d", 4.into());
        r.apply(&p);
        assert_eq!(Value::Object(r.data), serde_json::json!({"d": 4}));
    }

    #[test]
    fn patch_keeps_set_and_remove_disjoint() {
        let mut p = Patch::default();
        p.insert("k", 1.into());
        p.delete("k");
        assert!(p.set.is_empty());
        assert!(p.remove.contains("k"));
        p.insert("k", 2.into());
        assert!(p.remove.is_empty());
        assert!(!p.is_empty());
    }

    #[test]
    fn record_serializes_with_whole_second_fields() {
        let r = record();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["idle_timeout"], 100);
        assert_eq!(json["absolute_deadline"], 1000);
        let back: SessionRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, r);

        let mut negative = json;
        negative["idle_timeout"] = (-1).into();
        assert!(serde_json::from_value::<SessionRecord>(negative).is_err());
    }
}

//! The storage contract: [`SessionStore`], its error type, and the stores
//! this crate ships.
//!
//! Stores know nothing of HTTP or cookies. They are handed a [`StoreKey`]
//! (SHA-256 of the session ID, never the ID itself), records, patches and the
//! current time from the layer's clock.
//!
//! # Example
//!
//! ```
//! use cloakroom::{MemoryStore, SessionId, SessionRecord, SessionStore, Touch};
//! use time::{Duration, OffsetDateTime};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let key = SessionId::generate()?.store_key();
//! let now = OffsetDateTime::now_utc().replace_nanosecond(0)?; // stores keep whole seconds
//! let record = SessionRecord::new(now, Duration::minutes(30), Duration::hours(12));
//!
//! assert!(store.create(&key, &record, now).await?);
//! let loaded = store.load(&key, Touch { now, after: 0.1 }).await?;
//! assert_eq!(loaded, Some(record));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Writing a store
//!
//! Implement [`SessionStore`] with plain `async fn`s and run the conformance
//! suite against it (feature `test-suite`; see `cloakroom::test_suite`).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use time::OffsetDateTime;

use crate::id::StoreKey;
use crate::record::{Patch, SessionInfo, SessionRecord, Touch};

#[cfg(feature = "memory")]
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;

#[cfg(feature = "test-suite")]
pub(crate) mod conformance;
#[cfg(feature = "test-suite")]
pub(crate) mod counting;

/// A place to keep session records.
///
/// Every method receives the time it should act at (from the layer's
/// [`Clock`](crate::Clock)), and decides expiry with
/// [`SessionRecord::is_expired`] against that time, so that the layer, the
/// tests and every store agree. A store may also let its backend expire
/// records on its own (a TTL set to [`SessionRecord::expires_at`]); that is a
/// second line of defence and a way to bound storage, never the rule.
///
/// Rolling expiry has no method of its own: touching is part of
/// [`SessionStore::load`], so that a read with a due extension is still one
/// round-trip.
///
/// Implementations must be safe to call concurrently from many requests.
/// The layer's guarantees (no lost updates between requests that change
/// different keys, no resurrection after logout) rest on the atomicity each
/// method promises below.
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session, only if nothing is stored under `key` yet
    /// (insert-if-absent). A record under `key` that is expired at `now`
    /// counts as absent and may be replaced.
    ///
    /// Returns `Ok(true)` when stored and `Ok(false)` when a live record
    /// already exists (an ID collision; the layer retries with a new ID).
    /// When `record.user_id` is set, the session must become visible to
    /// [`SessionStore::delete_user`] and [`SessionStore::list_user`] by the
    /// time this returns.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails; nothing may be half-written.
    fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Loads a session and rolls its idle deadline, in one atomic step.
    ///
    /// Returns `Ok(None)` when nothing is stored under `key` or the record
    /// is expired at `touch.now` (the store may delete it then). Otherwise
    /// returns the record **as it was stored before this call**, and, when
    /// [`SessionRecord::touch_due`] holds for it, also sets its `last_seen`
    /// to `touch.now` in the store (extending any backend TTL to the new
    /// [`SessionRecord::expires_at`]). The layer applies the same rule to the
    /// returned copy, which is why the pre-touch record is returned.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails or a stored record cannot be
    /// decoded.
    fn load(
        &self,
        key: &StoreKey,
        touch: Touch,
    ) -> impl Future<Output = Result<Option<SessionRecord>, StoreError>> + Send;

    /// Applies `patch` to an existing, live session, atomically, and rolls
    /// its idle deadline like `load` does.
    ///
    /// Update-only: if nothing live is stored under `key` at `touch.now`
    /// (deleted by a logout, expired, swept), nothing is written and the
    /// result is `Ok(false)`. A session must never be re-created by a save.
    /// Only the keys named in the patch change; keys another request changed
    /// in the meantime are left as they are. After the patch (its lifetime
    /// included) is applied, if [`SessionRecord::touch_due`] holds for the
    /// result, `last_seen` becomes `touch.now` too, so a request that writes
    /// without reading still counts as activity. Returns `Ok(true)` when
    /// applied.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails; the patch is then either
    /// applied whole or not at all.
    fn save(
        &self,
        key: &StoreKey,
        patch: &Patch,
        touch: Touch,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes a session. Returns whether a record was there.
    ///
    /// The record is gone for good: later `load`s return `None` and later
    /// `save`s return `false`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails.
    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes every session of `user_id` except the one under `keep`, if
    /// given ("log out everywhere", "log out other devices"). Returns how
    /// many were deleted.
    ///
    /// Every session of the user whose `create` completed before this call
    /// began must be gone when it returns.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails; sessions already deleted stay
    /// deleted.
    fn delete_user(
        &self,
        user_id: &str,
        keep: Option<&StoreKey>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Lists the live sessions of `user_id` at `now`, oldest first. Index
    /// entries of sessions that are gone may be pruned on the way.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails.
    fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, StoreError>> + Send;

    /// Removes sessions expired at `now`, and index entries pointing at
    /// them. Returns how many records were removed (a store whose backend
    /// expires records by itself may report only what it removed here).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails.
    fn sweep_expired(
        &self,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// A store failed. The layer turns this into a `503` response (through the
/// axum integration, or on commit) and never into an anonymous or
/// logged-in answer.
///
/// The backend's own error is kept as [`std::error::Error::source`]. No
/// variant carries a session ID.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time.
    Unavailable(Box<dyn StdError + Send + Sync>),
    /// The backend answered with an error.
    Backend(Box<dyn StdError + Send + Sync>),
    /// A stored record could not be decoded.
    Corrupt(Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// An [`StoreError::Unavailable`] wrapping `source`.
    pub fn unavailable(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Unavailable(source.into())
    }

    /// A [`StoreError::Backend`] wrapping `source`.
    pub fn backend(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Backend(source.into())
    }

    /// A [`StoreError::Corrupt`] wrapping `source`.
    pub fn corrupt(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Corrupt(source.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable(_) => "session store unavailable",
            Self::Backend(_) => "session store error",
            Self::Corrupt(_) => "stored session record is corrupt",
        })
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Unavailable(e) | Self::Backend(e) | Self::Corrupt(e) => Some(&**e),
        }
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe mirror of [`SessionStore`], so that `Session` and the layer
/// are not generic over the store.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn create<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a SessionRecord,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
        touch: Touch,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>>;
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        patch: &'a Patch,
        touch: Touch,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn delete_user<'a>(
        &'a self,
        user_id: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    fn list_user<'a>(
        &'a self,
        user_id: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>>;
    fn sweep_expired(&self, now: OffsetDateTime) -> BoxFuture<'_, Result<u64, StoreError>>;
}

impl<S: SessionStore> DynStore for S {
    fn create<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a SessionRecord,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::create(self, key, record, now))
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
        touch: Touch,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        Box::pin(SessionStore::load(self, key, touch))
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        patch: &'a Patch,
        touch: Touch,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::save(self, key, patch, touch))
    }

    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::delete(self, key))
    }

    fn delete_user<'a>(
        &'a self,
        user_id: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(SessionStore::delete_user(self, user_id, keep))
    }

    fn list_user<'a>(
        &'a self,
        user_id: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        Box::pin(SessionStore::list_user(self, user_id, now))
    }

    fn sweep_expired(&self, now: OffsetDateTime) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(SessionStore::sweep_expired(self, now))
    }
}

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
//! use std::time::Duration;
//!
//! use cloakroom::id::SessionId;
//! use cloakroom::store::time::OffsetDateTime;
//! use cloakroom::store::{SessionRecord, SessionStore, Touch};
//! use cloakroom::MemoryStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let key = SessionId::generate()?.store_key();
//! let now = OffsetDateTime::now_utc().replace_nanosecond(0)?; // stores keep whole seconds
//! let (idle, absolute) = (Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600));
//! let record = SessionRecord::new(now, idle, absolute);
//!
//! assert!(store.create(&key, &record, now).await?);
//! let loaded = store.load(&key, Touch { now, after: 0.1 }).await?;
//! assert_eq!(loaded, Some(record));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # The stores
//!
//! [`MemoryStore`](crate::MemoryStore) (feature `memory`, on by default),
//! [`RedisStore`] (feature `redis`), [`PostgresStore`] (feature `postgres`)
//! and [`SqliteStore`] (feature `sqlite`). The crate docs' [Choosing and
//! configuring a store](crate#choosing-and-configuring-a-store) compares
//! them; each type's page has its set-up, layout and failure modes.
//!
//! # Writing a store
//!
//! Implement [`SessionStore`] with plain `async fn`s. Each method's docs
//! state its contract; the layer's guarantees rest on a few of them:
//! [`create`](SessionStore::create) inserts only if the key is absent,
//! [`load`](SessionStore::load) reads and touches in one step,
//! [`save`](SessionStore::save) applies a [`Patch`] to a live session and
//! never re-creates a deleted one, [`retire`](SessionStore::retire) leaves a
//! forward, and the user index behind [`delete_user`](SessionStore::delete_user),
//! [`count_user`](SessionStore::count_user) and
//! [`list_user`](SessionStore::list_user) sees every session of a user.
//! Decide expiry with the time each method is given, never the backend's
//! clock.
//!
//! Then run the conformance suite against the store: one
//! `cloakroom::store_conformance_tests!(my_crate::MyStore::new());` line
//! in a test file (feature `test-suite`), as the [`test_suite`](crate::test_suite)
//! module shows. Each of its checks exercises one part of the contract
//! on the store itself.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use time::OffsetDateTime;

pub use self::changes::{Change, ChangeNotifier, Changes};
pub use self::config_error::ConfigError;
#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use self::redis::{RedisConnection, RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use self::sqlite::{SqliteStore, SqliteStoreBuilder};
pub use crate::id::store_key::{ParseStoreKeyError, StoreKey};
pub use crate::record::{Lifetime, Patch, SessionInfo, SessionRecord, Touch};
/// The `time` crate, whose `OffsetDateTime` records use for their
/// timestamps (their timeouts are `std::time::Duration`s).
pub use time;

mod changes;
mod config_error;
#[cfg(feature = "memory")]
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql_common;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// A place to keep session records.
///
/// Every method receives the time it should act at (from the layer's
/// clock, which tests may replace), and decides expiry with
/// [`SessionRecord::is_expired`] against that time, so that the layer, the
/// tests and every store agree. A store may also let its backend expire
/// records on its own (a TTL set to [`SessionRecord::expires_at`]); that is a
/// second line of defence and a way to bound storage, never the rule.
///
/// Rolling expiry has no method of its own: touching is part of
/// [`SessionStore::load`], so that each store records activity as cheaply
/// as its backend allows: in the read's own round trip (`MemoryStore`,
/// `PostgresStore`), or with a conditional write that follows the read
/// only when a touch is due, at most once per touch interval per session
/// (`SqliteStore`, `RedisStore`).
///
/// Besides session records a store keeps *forwards*: when the layer moves a
/// session to a new ID (login, regenerate), [`SessionStore::retire`]
/// replaces the old record with a short-lived note naming the new key. A
/// forward never loads or saves as a session; it only lets a logout that
/// raced the move end the new session too (see [`SessionStore::delete`]).
///
/// Implementations must be safe to call concurrently from many requests.
/// The layer's guarantees (no lost updates between requests that change
/// different keys, no resurrection after logout, no session escaping a
/// logout-everywhere) rest on the atomicity each method promises below.
pub trait SessionStore: Send + Sync + 'static {
    /// Whether every call completes in process, without I/O, its future
    /// finishing when first polled (as in
    /// [`MemoryStore`](crate::MemoryStore)). The layer bounds each call of
    /// any other store with its store timeout, which needs a tokio runtime
    /// with its timer enabled (as `#[tokio::main]` sets up), and sweeps an
    /// in-process store in the background from a plain thread.
    const IN_PROCESS: bool = false;

    /// Stores a new session, only if nothing is stored under `key` yet
    /// (insert-if-absent). A record under `key` that is expired at `now`
    /// counts as absent and may be replaced, whole: nothing of it (its
    /// data, its [`device`](SessionRecord::device)) outlives the
    /// replacement. A forward whose `until` has not passed counts as
    /// present.
    ///
    /// Returns `Ok(true)` when stored and `Ok(false)` when the key is taken
    /// (an ID collision; the layer retries with a new ID). When
    /// `record.user_id` is set, the session must become visible to
    /// [`SessionStore::delete_user`], [`SessionStore::count_user`] and
    /// [`SessionStore::list_user`] by the time this returns.
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
    /// Returns `Ok(None)` when nothing is stored under `key`, the record is
    /// expired at `touch.now` (the store may delete it then), or `key` holds
    /// a forward. Otherwise returns the record **as it was stored before
    /// this call**, and, when [`SessionRecord::touch_due`] holds for it, also
    /// sets its `last_seen` to `touch.now` in the store (extending any
    /// backend TTL to the new [`SessionRecord::expires_at`]). The layer
    /// applies the same rule to the returned copy, which is why the
    /// pre-touch record is returned.
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
    /// (deleted by a logout, retired, expired, swept), nothing is written
    /// and the result is `Ok(false)`. A session must never be re-created by
    /// a save, and a forward is never written through. Only the keys named
    /// in the patch change; keys another request changed in the meantime
    /// are left as they are, and so is the record's
    /// [`device`](SessionRecord::device), which only `create` writes. After
    /// the patch (its lifetime included) is applied, if
    /// [`SessionRecord::touch_due`] holds for the result, `last_seen`
    /// becomes `touch.now` too, so a request that writes without reading
    /// still counts as activity. Returns `Ok(true)` when applied.
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

    /// Retires the session under `key` because it moved to `successor`
    /// (login, regenerate), atomically: if a live record is stored under
    /// `key` at `now`, it is replaced by a forward to `successor` that lasts
    /// until `until`, the old session leaves its user's index, and the
    /// result is `Ok(true)`.
    ///
    /// Retrying is safe: when `key` already holds a forward to the same
    /// `successor`, the result is `Ok(true)` again. Otherwise (nothing
    /// stored, an expired record, a forward elsewhere) nothing is written
    /// and the result is `Ok(false)`: the session ended while the request
    /// that moved it ran, and the layer deletes `successor`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails; the record is then either
    /// retired whole or left as it was.
    fn retire(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes back a [`SessionStore::retire`] whose new cookie never reached
    /// the browser (the request was dropped, or the store could not say
    /// whether the retire landed), atomically: if `key` holds a forward to
    /// `successor` whose `until` is after `now`, the forward is replaced
    /// by `record`, which joins its user's index as `create` would put it
    /// there, and the result is `Ok(true)`. Otherwise (a live record, a
    /// forward elsewhere or lapsed, nothing) nothing is written and the
    /// result is `Ok(false)`.
    ///
    /// `record` is the session as it was before the move, so the old ID
    /// gets back its own session, never the one under `successor` (no
    /// fixation). The layer deletes `successor` next, and ends `key` again
    /// if `successor` turns out to have ended meanwhile: a logout that
    /// raced the take-back still ends the session.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails; nothing may be half-written.
    fn restore(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes the session record stored under `key`, and says what the
    /// key held at `now`.
    ///
    /// A session record live at `now` is deleted, leaves its user's index,
    /// and gives [`Deleted::Session`]. A forward whose `until` is after
    /// `now` is *left in place* (it lapses by itself) and gives
    /// [`Deleted::Forward`] with its successor, which the layer deletes
    /// next: a logout that loaded the session before another request moved
    /// it to a new ID ends the new session too, and a logout that fails
    /// halfway can be retried. Anything else (nothing, an expired record,
    /// a lapsed forward) is removed and gives [`Deleted::Nothing`].
    /// Afterwards `load` returns `None` and `save` returns `false` for
    /// `key`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails.
    fn delete(
        &self,
        key: &StoreKey,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Deleted, StoreError>> + Send;

    /// [`SessionStore::delete`] for a session that must belong to
    /// `user_id`: whose it is and the deletion are decided in one atomic
    /// step ("sign out this device", where the key comes from the client).
    ///
    /// A session record live at `now` whose user is `user_id` is deleted,
    /// leaves that user's index, and gives [`Deleted::Session`]. A live
    /// record of any other user, or of none (anonymous), is *left as it
    /// is* and gives [`Deleted::Nothing`], exactly as if nothing were
    /// stored. A forward whose `until` is after `now` belongs to nobody: it
    /// is left in place and gives [`Deleted::Forward`] with its successor,
    /// as `delete` does, and the layer calls this again on the successor,
    /// whose own user is then checked. Anything else (nothing, an expired
    /// record, a lapsed forward) gives [`Deleted::Nothing`] and may be
    /// removed, as `delete` removes it.
    ///
    /// Checking the owner first (with [`SessionStore::list_user`] or
    /// [`SessionStore::load`]) and then calling `delete` is not enough: in
    /// between, the session may move to a new ID (its device logging in as
    /// another user), and `delete` would follow the forward into the other
    /// user's session. The check must hold at the moment of the deletion.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails; the record is then either
    /// deleted whole or left as it was.
    fn delete_owned(
        &self,
        key: &StoreKey,
        user_id: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Deleted, StoreError>> + Send;

    /// Deletes every session of `user_id` except the one under `keep`, if
    /// given ("log out everywhere", "log out other devices"). Returns how
    /// many were deleted.
    ///
    /// Every session of the user whose `create` completed before this call
    /// began must be gone when it returns. Sessions created while it runs
    /// must not slip through either: the store repeats its pass (or holds a
    /// lock that `create` and `retire` respect) until a pass finds no
    /// session of the user left, so that a session created by a login or
    /// regenerate that retired one of the user's sessions during the call
    /// is deleted too. A store that gives up repeating (a user logging in
    /// faster than they are logged out) reports
    /// [`StoreError::Unavailable`], never success.
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

    /// Deletes every session record whose
    /// [`created_at`](SessionRecord::created_at) is at or before
    /// `created_until`, whoever its user (anonymous sessions too), every
    /// forward (live or lapsed, whatever its age), and every user-index
    /// entry of the sessions it deleted: one pass of "end all sessions"
    /// ([`SessionAdmin::end_all_sessions`](crate::SessionAdmin::end_all_sessions)).
    /// Returns how many of the session records it deleted were live at
    /// `now`; forwards, and records that had expired but were not swept
    /// yet, are deleted without being counted, so every store reports the
    /// same number whatever its backend expires by itself.
    ///
    /// Sessions created after `created_until` are left alone, with their
    /// index entries: a login that happens while the pass runs is a new
    /// sign-in. A session that a regenerate moves to a new key keeps its
    /// `created_at`, so its new record must go too, and the caller repeats
    /// passes until one returns 0. For that to be safe, a pass that returns
    /// 0 must leave no live session created up to `created_until`, even one
    /// that a regenerate moved while the pass ran, creating the new record
    /// where the pass had already been and retiring the old one before the
    /// pass got there. So a store whose pass is not one atomic step follows
    /// each forward it deletes that is live at `now` to its successor, and
    /// deletes that by the same rule (and so on along the chain), as
    /// [`SessionStore::delete`]'s caller follows forwards: a regenerate's
    /// successor goes, a login's (created later) stays. A record whose old
    /// key is already gone when the regenerate retires it needs nothing:
    /// the retire fails and the layer deletes the new record itself.
    ///
    /// The work must be bounded however large the store is: records are
    /// visited and deleted in batches (a `DELETE ... WHERE key IN (SELECT
    /// ... LIMIT n)` repeated, a cursor-based scan with a small count, a
    /// lock held on one shard at a time), never by loading every key into
    /// memory or sending one statement or command that blocks the backend
    /// until the whole store is done. A store with a cache of its own (or
    /// on other instances) must leave no cache able to serve a deleted
    /// session.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails; what was deleted before the
    /// failure stays deleted, and a later call deletes the rest.
    fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many live sessions `user_id` has at `now`, without reading their
    /// data: what an "N active sessions" display needs. Index entries of
    /// sessions that are gone may be pruned on the way.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails.
    fn count_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Lists the live sessions of `user_id` at `now`, oldest first, each
    /// with its [`device`](SessionInfo::device): at most `limit` of them,
    /// the most recently created ones when the user has more. Index entries
    /// of sessions that are gone may be pruned on the way. The work done is
    /// bounded by the user's number of sessions; a store that reads records
    /// over the network reads them in batches, keeping no more than `limit`
    /// of them.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails.
    fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, StoreError>> + Send;

    /// Removes sessions expired at `now`, forwards whose `until` has
    /// passed, and index entries pointing at removed sessions. Returns how
    /// many records and forwards were removed (a store whose backend
    /// expires them by itself may report only what it removed here).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend fails.
    fn sweep_expired(
        &self,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How often the layer should call [`SessionStore::sweep_expired`] on
    /// its own: from a plain thread for an [`IN_PROCESS`](Self::IN_PROCESS)
    /// store, otherwise from a task on the tokio runtime the layer is built
    /// in (none without one). The sweep stops within one period after the
    /// layer and everything made from it are dropped. `None`, the default,
    /// leaves sweeping to the store's backend or to
    /// [`SessionAdmin::spawn_sweeper`](crate::SessionAdmin::spawn_sweeper).
    fn background_sweep(&self) -> Option<std::time::Duration> {
        None
    }

    /// A subscription to the store's announcements of changed and ended
    /// sessions, which [session watches](crate::watch) listen to so that
    /// an open stream closes when its session ends, on every instance.
    /// Called once per layer, when its first watch is made.
    ///
    /// `None`, the default, means the store announces nothing: watches
    /// then re-check their sessions every
    /// [`POLL_INTERVAL`](crate::watch::POLL_INTERVAL). A store that
    /// announces must announce at least every session it ends or moves
    /// (`delete*`, `retire`; expiry need not be), and report
    /// [`Change::Lost`] whenever it may miss some.
    fn changes(&self) -> Option<Changes> {
        None
    }
}

/// What [`SessionStore::delete`] (or [`SessionStore::delete_owned`]) found
/// under the key it emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deleted {
    /// Nothing live: the session had already ended (or never existed).
    Nothing,
    /// A session record, now deleted.
    Session,
    /// A forward left by [`SessionStore::retire`], kept until it lapses.
    /// The session moved to this key, which the layer deletes next.
    Forward(StoreKey),
}

/// A store failed. The layer turns this into a `503` response (through the
/// axum integration, or on commit) and never into an anonymous or
/// logged-in answer; [`StoreError::Rejected`] becomes a client error
/// instead.
///
/// The backend's own error is kept as [`std::error::Error::source`]. No
/// variant carries a session ID. The layer logs this error and the
/// `Display` text of its source, so a store's source errors must not put
/// session data or query parameters into their `Display` (the PostgreSQL
/// store shows the SQLSTATE and the error class only).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time.
    Unavailable(Box<dyn StdError + Send + Sync>),
    /// The backend answered with an error.
    Backend(Box<dyn StdError + Send + Sync>),
    /// A stored record could not be decoded.
    Corrupt(Box<dyn StdError + Send + Sync>),
    /// The backend refused the data it was given (a value it cannot
    /// represent): the client's fault, not an outage. The layer checks
    /// session data before writing it (see
    /// [`SessionError::Unstorable`](crate::SessionError::Unstorable)), so
    /// this is a second line.
    Rejected(Box<dyn StdError + Send + Sync>),
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

    /// A [`StoreError::Rejected`] wrapping `source`.
    pub fn rejected(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Rejected(source.into())
    }

    /// Whether the store could not be reached or did not answer in time
    /// (including the layer's store timeout).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Whether the store refused the data as such (a client error).
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable(_) => "session store unavailable",
            Self::Backend(_) => "session store error",
            Self::Corrupt(_) => "stored session record is corrupt",
            Self::Rejected(_) => "the session store cannot hold this data",
        })
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Unavailable(e) | Self::Backend(e) | Self::Corrupt(e) | Self::Rejected(e) => {
                Some(&**e)
            }
        }
    }
}

/// A user kept getting new sessions through every pass of a store's
/// `delete_user`: reported as [`StoreError::Unavailable`] (retryable), never
/// as a logout that reached every session.
#[cfg(any(feature = "redis", feature = "postgres"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct StillLoggingIn {
    pub(crate) passes: usize,
}

#[cfg(any(feature = "redis", feature = "postgres"))]
impl fmt::Display for StillLoggingIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "new sessions of the user kept appearing through {} passes of logout-everywhere",
            self.passes
        )
    }
}

#[cfg(any(feature = "redis", feature = "postgres"))]
impl StdError for StillLoggingIn {}

/// The layer's store timeout ran out: the call was abandoned, and may still
/// have taken effect in the backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimedOut(pub(crate) std::time::Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no answer within the store timeout of {} ms",
            self.0.as_millis()
        )
    }
}

impl StdError for TimedOut {}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe mirror of [`SessionStore`], so that `Session` and the layer
/// are not generic over the store. Implemented by [`Bounded`], which also
/// applies the layer's store timeout.
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
    fn retire<'a>(
        &'a self,
        key: &'a StoreKey,
        successor: &'a StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn restore<'a>(
        &'a self,
        key: &'a StoreKey,
        successor: &'a StoreKey,
        record: &'a SessionRecord,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn delete<'a>(
        &'a self,
        key: &'a StoreKey,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Deleted, StoreError>>;
    fn delete_owned<'a>(
        &'a self,
        key: &'a StoreKey,
        user_id: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Deleted, StoreError>>;
    fn delete_user<'a>(
        &'a self,
        user_id: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// [`SessionStore::delete_all`]; for [`Bounded`], without the store
    /// timeout (see there).
    fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn count_user<'a>(
        &'a self,
        user_id: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    fn list_user<'a>(
        &'a self,
        user_id: &'a str,
        now: OffsetDateTime,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>>;
    fn sweep_expired(&self, now: OffsetDateTime) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Whether the store wants the layer to sweep it in the background.
    fn sweeps_in_background(&self) -> Option<std::time::Duration>;
    /// [`SessionStore::IN_PROCESS`] of the store.
    fn in_process(&self) -> bool;
    fn changes(&self) -> Option<Changes>;
}

/// A store with the layer's time limit on each call (none for in-process
/// stores, which cannot hang and may run without a tokio timer).
///
/// [`SessionStore::delete_all`] is the exception: one call is a pass over
/// the whole store, which on a large one takes longer than any limit meant
/// for a single request's call, and cutting it off at that limit would make
/// "end all sessions" fail exactly where it is needed most. It runs without
/// the layer's limit. Each of its batches is bounded by the backend's own
/// time-outs instead (2 s per Redis command on a connection opened by
/// `RedisConnection::connect`; the pool's acquire time-out and the
/// database's statement or busy time-out for the SQL stores), and a
/// caller who wants an overall limit wraps
/// [`SessionAdmin::end_all_sessions`](crate::SessionAdmin::end_all_sessions)
/// in `tokio::time::timeout` (what was deleted stays deleted).
pub(crate) struct Bounded<S> {
    pub(crate) store: S,
    pub(crate) timeout: std::time::Duration,
}

impl<S: SessionStore> Bounded<S> {
    fn bound<'a, T: 'a>(
        &self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        if S::IN_PROCESS {
            return Box::pin(call);
        }
        let limit = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::unavailable(TimedOut(limit))),
            }
        })
    }
}

impl<S: SessionStore> DynStore for Bounded<S> {
    fn create<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a SessionRecord,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.bound(self.store.create(key, record, now))
    }

    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
        touch: Touch,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, StoreError>> {
        self.bound(self.store.load(key, touch))
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        patch: &'a Patch,
        touch: Touch,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.bound(self.store.save(key, patch, touch))
    }

    fn retire<'a>(
        &'a self,
        key: &'a StoreKey,
        successor: &'a StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.bound(self.store.retire(key, successor, until, now))
    }

    fn restore<'a>(
        &'a self,
        key: &'a StoreKey,
        successor: &'a StoreKey,
        record: &'a SessionRecord,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.bound(self.store.restore(key, successor, record, now))
    }

    fn delete<'a>(
        &'a self,
        key: &'a StoreKey,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Deleted, StoreError>> {
        self.bound(self.store.delete(key, now))
    }

    fn delete_owned<'a>(
        &'a self,
        key: &'a StoreKey,
        user_id: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<Deleted, StoreError>> {
        self.bound(self.store.delete_owned(key, user_id, now))
    }

    fn delete_user<'a>(
        &'a self,
        user_id: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.bound(self.store.delete_user(user_id, keep))
    }

    /// Not bounded by the store timeout: see [`Bounded`].
    fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.store.delete_all(created_until, now))
    }

    fn count_user<'a>(
        &'a self,
        user_id: &'a str,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.bound(self.store.count_user(user_id, now))
    }

    fn list_user<'a>(
        &'a self,
        user_id: &'a str,
        now: OffsetDateTime,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        self.bound(self.store.list_user(user_id, now, limit))
    }

    fn sweep_expired(&self, now: OffsetDateTime) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.bound(self.store.sweep_expired(now))
    }

    fn sweeps_in_background(&self) -> Option<std::time::Duration> {
        self.store.background_sweep()
    }

    fn in_process(&self) -> bool {
        S::IN_PROCESS
    }

    fn changes(&self) -> Option<Changes> {
        self.store.changes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose calls never finish, like a backend that stopped
    /// answering.
    struct Hung;

    impl SessionStore for Hung {
        async fn create(
            &self,
            _: &StoreKey,
            _: &SessionRecord,
            _: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            std::future::pending().await
        }
        async fn load(&self, _: &StoreKey, _: Touch) -> Result<Option<SessionRecord>, StoreError> {
            std::future::pending().await
        }
        async fn save(&self, _: &StoreKey, _: &Patch, _: Touch) -> Result<bool, StoreError> {
            std::future::pending().await
        }
        async fn retire(
            &self,
            _: &StoreKey,
            _: &StoreKey,
            _: OffsetDateTime,
            _: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            std::future::pending().await
        }
        async fn restore(
            &self,
            _: &StoreKey,
            _: &StoreKey,
            _: &SessionRecord,
            _: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &StoreKey, _: OffsetDateTime) -> Result<Deleted, StoreError> {
            std::future::pending().await
        }
        async fn delete_owned(
            &self,
            _: &StoreKey,
            _: &str,
            _: OffsetDateTime,
        ) -> Result<Deleted, StoreError> {
            std::future::pending().await
        }
        async fn delete_user(&self, _: &str, _: Option<&StoreKey>) -> Result<u64, StoreError> {
            std::future::pending().await
        }
        async fn delete_all(
            &self,
            _: OffsetDateTime,
            _: OffsetDateTime,
        ) -> Result<u64, StoreError> {
            std::future::pending().await
        }
        async fn count_user(&self, _: &str, _: OffsetDateTime) -> Result<u64, StoreError> {
            std::future::pending().await
        }
        async fn list_user(
            &self,
            _: &str,
            _: OffsetDateTime,
            _: usize,
        ) -> Result<Vec<SessionInfo>, StoreError> {
            std::future::pending().await
        }
        async fn sweep_expired(&self, _: OffsetDateTime) -> Result<u64, StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_of_a_hung_store_ends_unavailable_at_the_timeout() {
        let limit = std::time::Duration::from_millis(1500);
        let store = Bounded {
            store: Hung,
            timeout: limit,
        };
        let key = crate::id::SessionId::generate().unwrap().store_key();
        let now = OffsetDateTime::UNIX_EPOCH;
        let record = SessionRecord::new(
            now,
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(3600),
        );
        let touch = Touch { now, after: 0.1 };
        let started = tokio::time::Instant::now();
        let unavailable = |name: &str, error: StoreError| {
            assert!(error.is_unavailable(), "{name}: {error:?}");
            let cause = StdError::source(&error).map(ToString::to_string);
            assert_eq!(
                cause.as_deref(),
                Some("no answer within the store timeout of 1500 ms")
            );
        };
        unavailable(
            "create",
            store.create(&key, &record, now).await.unwrap_err(),
        );
        unavailable("load", store.load(&key, touch).await.unwrap_err());
        unavailable(
            "save",
            store
                .save(&key, &Patch::default(), touch)
                .await
                .unwrap_err(),
        );
        unavailable(
            "retire",
            store.retire(&key, &key, now, now).await.unwrap_err(),
        );
        unavailable(
            "restore",
            store.restore(&key, &key, &record, now).await.unwrap_err(),
        );
        unavailable("delete", store.delete(&key, now).await.unwrap_err());
        unavailable(
            "delete_owned",
            store.delete_owned(&key, "u", now).await.unwrap_err(),
        );
        unavailable(
            "delete_user",
            store.delete_user("u", None).await.unwrap_err(),
        );
        unavailable("count_user", store.count_user("u", now).await.unwrap_err());
        unavailable(
            "list_user",
            store.list_user("u", now, 10).await.unwrap_err(),
        );
        unavailable("sweep_expired", store.sweep_expired(now).await.unwrap_err());
        assert_eq!(
            started.elapsed(),
            limit * 11,
            "each call waited exactly the limit"
        );
    }

    /// A pass over the whole store is not cut off at the per-call limit (a
    /// large store takes longer): it waits for the backend, whose own
    /// time-outs bound each batch, or for the caller's own limit.
    #[tokio::test(start_paused = true)]
    async fn a_pass_over_the_whole_store_is_not_cut_off_at_the_store_timeout() {
        let limit = std::time::Duration::from_millis(1500);
        let store = Bounded {
            store: Hung,
            timeout: limit,
        };
        let now = OffsetDateTime::UNIX_EPOCH;
        let waited = limit * 100;
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(waited, store.delete_all(now, now)).await;
        assert!(
            outcome.is_err(),
            "still running after 100 store timeouts: {outcome:?}"
        );
        assert_eq!(started.elapsed(), waited);
    }

    #[test]
    fn errors_say_what_kind_of_failure_they_are() {
        assert!(StoreError::unavailable("x").is_unavailable());
        assert!(!StoreError::backend("x").is_unavailable());
        assert!(StoreError::rejected("x").is_rejected());
        assert!(!StoreError::corrupt("x").is_rejected());
        assert_eq!(
            StoreError::rejected("x").to_string(),
            "the session store cannot hold this data"
        );
    }
}

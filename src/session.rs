//! [`Session`]: the handle handlers use to read and change their session.
//!
//! # Example
//!
//! ```
//! use cloakroom::{Session, SessionError};
//!
//! async fn visit(session: Session) -> Result<String, SessionError> {
//!     let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", visits).await?;
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! async fn login(session: Session, user_id: String) -> Result<(), SessionError> {
//!     // A fresh ID; the old one is deleted (session fixation).
//!     session.login(user_id).await
//! }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::id::{RandomnessError, SessionId, StoreKey};
use crate::layer::Core;
use crate::record::{Lifetime, Patch, SessionInfo, SessionRecord, Touch};
use crate::store::StoreError;
#[cfg(feature = "csrf")]
use rand::TryRngCore as _;

/// The data key under which [`crate::CsrfLayer`] keeps a session's CSRF
/// secret. Login and regenerate drop it, so tokens rotate with the ID.
pub(crate) const CSRF_SECRET_KEY: &str = "__cloakroom_csrf";

/// How many fresh IDs are tried when `create` reports a collision. With
/// 128-bit random IDs a single collision is already astronomically
/// unlikely; repeated ones mean a broken store or RNG.
const MAX_CREATE_ATTEMPTS: usize = 3;

/// The session of one request.
///
/// Get it as an axum extractor (`Session` or `Option<Session>`), or from the
/// request extensions in plain tower/hyper code. Clones share one state.
///
/// Nothing is read from the store until a method needs it, and nothing is
/// written until the response is on its way out: then the layer writes only
/// what this request changed (a [`Patch`]), and sets or clears the cookie
/// when needed. A new session that never receives data or a user is never
/// stored and sets no cookie.
///
/// Every method that may reach the store is `async` and returns
/// `Result<_, SessionError>`. When the store fails, the request's changes
/// are not written at all (never half of them), and the axum integration
/// answers `503`.
///
/// Changes made after the response has been produced (from a task spawned
/// by the handler, say) fail with [`SessionError::Finished`].
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    core: Arc<Core>,
    /// The verified ID from the request's cookie.
    cookie_id: Option<SessionId>,
    /// A store call failed: this request writes nothing back.
    poisoned: AtomicBool,
    state: Mutex<Phase>,
}

// `Active` is kept inline: the whole state then lives in the one allocation
// each request makes for its session, and loading allocates no box.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Nothing asked yet; no store call made.
    Unloaded,
    /// Only written to, never read, with a cookie: the writes wait in a
    /// patch, sent as one update-only save at commit, with no load.
    Blind(Patch),
    Active(Active),
    /// The response has been committed.
    Finished,
}

struct Active {
    /// The stored session this request works on, if any.
    stored: Option<(SessionId, StoreKey)>,
    /// The session as this request sees it, its own changes included.
    record: SessionRecord,
    /// This request's changes to a stored session.
    patch: Patch,
    /// Loading extended the idle deadline.
    touched: bool,
    /// The ID a not-yet-stored session will get (set by login/regenerate).
    new_id: Option<SessionId>,
    /// The browser holds a cookie that names no live session any more.
    clear_cookie: bool,
}

/// Where a request's CSRF secret comes from.
#[cfg(feature = "csrf")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CsrfBinding {
    /// The session holds this secret.
    Session([u8; 32]),
    /// The session exists but was never given a secret; `logged_in` says
    /// whether a user is logged in to it.
    SessionWithoutSecret {
        /// A user is logged in.
        logged_in: bool,
    },
    /// There is no session (and asking for a token does not create one).
    NoSession,
}

/// A commit that must not let the handler's response through: an earlier
/// store failure in the request dropped changes the response depends on,
/// or the commit's own store call failed. Already logged; answered `503`.
#[derive(Debug)]
pub(crate) struct Abort;

/// What the layer must add to the response.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) set_cookie: Option<HeaderValue>,
    /// The session was read, so the response depends on the cookie.
    pub(crate) vary: bool,
}

impl Active {
    fn fresh(core: &Core, now: OffsetDateTime, clear_cookie: bool) -> Self {
        let config = &core.config;
        let mut record = SessionRecord::new(now, config.idle_timeout, config.absolute_timeout);
        record.persistent = config.cookie.persistent;
        Self {
            stored: None,
            record,
            patch: Patch::default(),
            touched: false,
            new_id: None,
            clear_cookie,
        }
    }

    fn has_content(&self) -> bool {
        !self.record.data.is_empty() || self.record.user_id.is_some()
    }

    /// Whether committing would write anything (a patch, or a new session).
    fn has_pending_writes(&self) -> bool {
        match self.stored {
            Some(_) => !self.patch.is_empty(),
            None => self.has_content(),
        }
    }

    /// Applies writes made before the session was loaded, in their order.
    fn overlay(&mut self, pending: &Patch) {
        self.record.apply(pending);
        if self.stored.is_some() {
            if pending.clear {
                self.patch.clear_data();
            }
            for key in &pending.remove {
                self.patch.delete(key);
            }
            for (key, value) in &pending.set {
                self.patch.insert(key, value.clone());
            }
        }
    }
}

impl Session {
    pub(crate) fn new(core: Arc<Core>, cookie_id: Option<SessionId>) -> Self {
        Self {
            shared: Arc::new(Shared {
                core,
                cookie_id,
                poisoned: AtomicBool::new(false),
                state: Mutex::new(Phase::Unloaded),
            }),
        }
    }

    fn core(&self) -> &Core {
        &self.shared.core
    }

    /// Records a store failure: the request will write nothing back.
    fn store_failed(&self, operation: &'static str, error: StoreError) -> SessionError {
        self.shared.poisoned.store(true, Ordering::Relaxed);
        tracing::error!(
            target: "cloakroom",
            event = "store_error",
            operation,
            error = %error,
            source = ?std::error::Error::source(&error),
            "session store failed; this request's session changes are dropped"
        );
        SessionError::Store(error)
    }

    /// The loaded session, loading it on first use.
    async fn active(&self) -> Result<MappedMutexGuard<'_, Active>, SessionError> {
        let mut phase = self.shared.state.lock().await;
        match &*phase {
            Phase::Unloaded => {
                let active = self.load().await?;
                *phase = Phase::Active(active);
            }
            Phase::Blind(_) => {
                let mut active = self.load().await?;
                if let Phase::Blind(pending) = std::mem::replace(&mut *phase, Phase::Unloaded) {
                    active.overlay(&pending);
                }
                *phase = Phase::Active(active);
            }
            Phase::Active(_) | Phase::Finished => {}
        }
        MutexGuard::try_map(phase, |phase| match phase {
            Phase::Active(active) => Some(active),
            _ => None,
        })
        .map_err(|_| SessionError::Finished)
    }

    async fn load(&self) -> Result<Active, SessionError> {
        let core = self.core();
        let now = core.now();
        let Some(id) = &self.shared.cookie_id else {
            return Ok(Active::fresh(core, now, false));
        };
        let key = id.store_key();
        let touch = Touch {
            now,
            after: core.config.touch_after,
        };
        let loaded = core
            .store
            .load(&key, touch)
            .await
            .map_err(|e| self.store_failed("load", e))?;
        let Some(mut record) = loaded else {
            tracing::debug!(
                target: "cloakroom::security",
                event = "session_not_found",
                session = %key.short(),
                "the cookie names no live session (expired or ended); continuing without one"
            );
            // No removal cookie: the session may have ended because this
            // browser just logged in again in another request, and clearing
            // "the" cookie now would clear the new one.
            return Ok(Active::fresh(core, now, false));
        };
        // The store applied the same rule to its copy in the same trip.
        let touched = record.touch_due(&touch);
        if touched {
            record.touch(now);
        }
        Ok(Active {
            stored: Some((id.clone(), key)),
            record,
            patch: Patch::default(),
            touched,
            new_id: None,
            clear_cookie: false,
        })
    }

    /// Records a write without loading, when the session has not been read
    /// and the request carries a cookie (blind write). Returns `None` when
    /// the write was recorded, or gives `value` back for the loaded path.
    async fn write_blind<V>(&self, write: impl FnOnce(&mut Patch, V), value: V) -> Option<V> {
        let mut phase = self.shared.state.lock().await;
        match &mut *phase {
            Phase::Unloaded if self.shared.cookie_id.is_some() => {
                let mut patch = Patch::default();
                write(&mut patch, value);
                *phase = Phase::Blind(patch);
                None
            }
            Phase::Blind(patch) => {
                write(patch, value);
                None
            }
            _ => Some(value),
        }
    }

    /// The value under `key`, deserialized as `T`.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded, and
    /// [`SessionError::Deserialize`] when the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let active = self.active().await?;
        match active.record.data.get(key) {
            None => Ok(None),
            Some(value) => {
                T::deserialize(value)
                    .map(Some)
                    .map_err(|source| SessionError::Deserialize {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
    }

    /// The raw JSON value under `key`.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>, SessionError> {
        Ok(self.active().await?.record.data.get(key).cloned())
    }

    /// Stores `value` under `key`.
    ///
    /// The first insert into a new session creates it (and sets the cookie)
    /// when the response goes out. On a session the request has not read
    /// yet, the insert is a *blind write*: nothing is loaded, and the
    /// response sends it as one update-only save (which also rolls the idle
    /// deadline); if the session turns out to be gone, a new one is created
    /// with the write. On a session already read, inserting the value that
    /// is already there writes nothing.
    ///
    /// # Errors
    ///
    /// [`SessionError::Serialize`] when `value` cannot be turned into JSON,
    /// and [`SessionError::Store`] when the session cannot be loaded.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|source| SessionError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        let value = match self
            .write_blind(|patch, value| patch.insert(key, value), value)
            .await
        {
            None => return Ok(()),
            Some(value) => value,
        };
        let mut active = self.active().await?;
        if active.record.data.get(key) == Some(&value) {
            return Ok(());
        }
        if active.stored.is_some() {
            active.patch.insert(key, value.clone());
        }
        active.record.data.insert(key.to_owned(), value);
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn remove(&self, key: &str) -> Result<bool, SessionError> {
        let mut active = self.active().await?;
        if active.record.data.remove(key).is_none() {
            return Ok(false);
        }
        if active.stored.is_some() {
            active.patch.delete(key);
        }
        Ok(true)
    }

    /// Removes `key` and returns its value as a `T`. If the value is not a
    /// `T`, nothing is removed.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the value is not a `T`, and
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut active = self.active().await?;
        let value = match active.record.data.get(key) {
            None => return Ok(None),
            Some(value) => T::deserialize(value).map_err(|source| SessionError::Deserialize {
                key: key.to_owned(),
                source,
            })?,
        };
        active.record.data.remove(key);
        if active.stored.is_some() {
            active.patch.delete(key);
        }
        Ok(Some(value))
    }

    /// Removes every data key. The user stays logged in; to log out, use
    /// [`Session::invalidate`]. Like [`Session::insert`], a blind write on a
    /// session not read yet.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn clear(&self) -> Result<(), SessionError> {
        if self
            .write_blind(|patch, ()| patch.clear_data(), ())
            .await
            .is_none()
        {
            return Ok(());
        }
        let mut active = self.active().await?;
        if active.record.data.is_empty() && active.patch.set.is_empty() {
            return Ok(());
        }
        active.record.data.clear();
        if active.stored.is_some() {
            active.patch.clear_data();
        }
        Ok(())
    }

    /// The data keys, in sorted order.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        Ok(self.active().await?.record.data.keys().cloned().collect())
    }

    /// The logged-in user, if any.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        Ok(self.active().await?.record.user_id.clone())
    }

    /// When the session expires unless used again; `None` for a session
    /// that is not stored and will not be.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn expires_at(&self) -> Result<Option<OffsetDateTime>, SessionError> {
        let active = self.active().await?;
        Ok((active.stored.is_some() || active.has_content()).then(|| active.record.expires_at()))
    }

    /// Logs `user_id` in, under a fresh session ID.
    ///
    /// The old session (if stored) is deleted now, so a session ID planted
    /// before login (session fixation) is worthless after it. Data carries
    /// over from an anonymous session or one of the same user, and is
    /// dropped when another user was logged in. The new session starts a
    /// full lifetime with the configured timeouts and is indexed under
    /// `user_id` for [`Session::logout_everywhere`]. Call
    /// [`Session::remember_me`] afterwards for a long-lived session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the old session cannot be loaded or
    /// deleted (the session is then left as it was), and
    /// [`SessionError::Randomness`] when no ID can be drawn.
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let user_id = user_id.into();
        let mut active = self.active().await?;
        let new_id = SessionId::generate()?;
        let was_stored = active.stored.is_some();
        let deleted = self.delete_stored(&active, "login").await?;
        let now = self.core().now();
        // Data carries over only from a session that was still alive: one
        // ended by another request meanwhile (logout everywhere, an admin)
        // leaves nothing behind.
        let alive = deleted || !was_stored;
        let same_user = alive
            && active
                .record
                .user_id
                .as_ref()
                .is_none_or(|previous| *previous == user_id);
        let mut data = if same_user {
            std::mem::take(&mut active.record.data)
        } else {
            Map::new()
        };
        data.remove(CSRF_SECRET_KEY);
        let clear_cookie = active.clear_cookie || active.stored.is_some();
        *active = Active::fresh(self.core(), now, clear_cookie);
        active.record.data = data;
        active.record.user_id = Some(user_id);
        active.new_id = Some(new_id);
        Ok(())
    }

    /// Moves the session to a fresh ID, keeping its data, user and
    /// deadlines; the old ID stops working now. Use it when privileges
    /// change without a login (e.g. after re-entering a password). If
    /// another request ended the session after this one loaded it, nothing
    /// is moved and the handle holds a new anonymous session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded or the old
    /// ID cannot be deleted, and [`SessionError::Randomness`] when no ID can
    /// be drawn.
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        let mut active = self.active().await?;
        let new_id = SessionId::generate()?;
        let was_stored = active.stored.is_some();
        if was_stored && !self.delete_stored(&active, "regenerate").await? {
            // Ended by another request (logout everywhere, an admin) after
            // this one loaded it: moving it to a new ID would bring it
            // back. The request goes on without a session.
            self.reset(&mut active);
            return Ok(());
        }
        if active.stored.take().is_some() {
            active.clear_cookie = true;
        }
        active.record.data.remove(CSRF_SECRET_KEY);
        active.patch = Patch::default();
        active.touched = false;
        active.new_id = Some(new_id);
        Ok(())
    }

    /// Ends the session: the record is deleted now and the cookie expired
    /// (`Max-Age=0`) on the response. The handle then holds a new, empty
    /// anonymous session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded or deleted.
    pub async fn invalidate(&self) -> Result<(), SessionError> {
        let mut active = self.active().await?;
        self.delete_stored(&active, "invalidate").await?;
        self.reset(&mut active);
        Ok(())
    }

    /// Ends every session of the logged-in user, this one included, on
    /// every device. Returns how many sessions ended. For an anonymous
    /// session this ends just this one.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails; sessions already ended
    /// stay ended.
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let mut active = self.active().await?;
        let Some(user_id) = active.record.user_id.clone() else {
            let ended = self.delete_stored(&active, "invalidate").await?;
            self.reset(&mut active);
            return Ok(u64::from(ended));
        };
        let ended = self
            .core()
            .store
            .delete_user(&user_id, None)
            .await
            .map_err(|e| self.store_failed("delete_user", e))?;
        tracing::info!(
            target: "cloakroom::security",
            event = "logged_out_everywhere",
            ended,
            kept_current = false,
            "every session of the user ended"
        );
        self.reset(&mut active);
        Ok(ended)
    }

    /// Ends every other session of the logged-in user ("log out other
    /// devices"), keeping this one. Returns how many ended; 0 when
    /// anonymous.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails.
    pub async fn logout_other_devices(&self) -> Result<u64, SessionError> {
        let active = self.active().await?;
        let Some(user_id) = active.record.user_id.as_deref() else {
            return Ok(0);
        };
        let keep = active.stored.as_ref().map(|(_, key)| key);
        let ended = self
            .core()
            .store
            .delete_user(user_id, keep)
            .await
            .map_err(|e| self.store_failed("delete_user", e))?;
        tracing::info!(
            target: "cloakroom::security",
            event = "logged_out_everywhere",
            ended,
            kept_current = true,
            session = keep.map(StoreKey::short),
            "every other session of the user ended"
        );
        Ok(ended)
    }

    /// The logged-in user's live sessions, oldest first, with this one
    /// marked [`SessionInfo::current`]. Empty when anonymous.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let active = self.active().await?;
        let Some(user_id) = active.record.user_id.as_deref() else {
            return Ok(Vec::new());
        };
        let now = self.core().now();
        let mut sessions = self
            .core()
            .store
            .list_user(user_id, now, crate::admin::LIST_LIMIT)
            .await
            .map_err(|e| self.store_failed("list_user", e))?;
        if let Some((_, current)) = &active.stored {
            for session in &mut sessions {
                session.current = session.key == *current;
            }
        }
        Ok(sessions)
    }

    /// Gives this session its own lifetime ("remember me"): it may now go
    /// unused for `lifetime` and lives at most `lifetime` from now, and its
    /// cookie becomes persistent (`Max-Age`) so it survives a browser
    /// restart. Stored with the session, so later requests keep it.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidLifetime`] when `lifetime` is under one second
    /// or over ten years, and [`SessionError::Store`] when the session
    /// cannot be loaded.
    pub async fn remember_me(&self, lifetime: Duration) -> Result<(), SessionError> {
        let lifetime =
            crate::config::whole_seconds_in_range(lifetime).ok_or(SessionError::InvalidLifetime)?;
        let mut active = self.active().await?;
        let now = self.core().now();
        let new = Lifetime {
            idle_timeout: lifetime,
            absolute_deadline: now + lifetime,
            persistent: true,
        };
        active.record.idle_timeout = new.idle_timeout;
        active.record.absolute_deadline = new.absolute_deadline;
        active.record.persistent = true;
        if active.stored.is_some() {
            active.patch.lifetime = Some(new);
        }
        Ok(())
    }

    /// The session's CSRF secret, if it has one. With `issue`, a session
    /// that is stored (or is about to be) gets a fresh secret when it has
    /// none; a session that would exist only for the secret does not.
    #[cfg(feature = "csrf")]
    pub(crate) async fn csrf_secret(&self, issue: bool) -> Result<CsrfBinding, SessionError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;

        let mut active = self.active().await?;
        if let Some(Value::String(encoded)) = active.record.data.get(CSRF_SECRET_KEY) {
            let mut secret = [0u8; 32];
            if let Ok(32) = URL_SAFE_NO_PAD.decode_slice(encoded, &mut secret) {
                return Ok(CsrfBinding::Session(secret));
            }
        }
        let exists = active.stored.is_some() || active.has_content();
        if !exists {
            return Ok(CsrfBinding::NoSession);
        }
        if !issue {
            return Ok(CsrfBinding::SessionWithoutSecret {
                logged_in: active.record.user_id.is_some(),
            });
        }
        let mut secret = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|_| SessionError::Randomness(RandomnessError::new()))?;
        let value = Value::String(URL_SAFE_NO_PAD.encode(secret));
        if active.stored.is_some() {
            active.patch.insert(CSRF_SECRET_KEY, value.clone());
        }
        active.record.data.insert(CSRF_SECRET_KEY.to_owned(), value);
        Ok(CsrfBinding::Session(secret))
    }

    /// The layer's signing keys and clock, for tokens derived from them.
    #[cfg(feature = "csrf")]
    pub(crate) fn keys_and_now(&self) -> (&crate::key::KeyRing, OffsetDateTime) {
        (&self.core().config.keys, self.core().now())
    }

    /// Deletes the stored session behind `active`, if any; returns whether
    /// one was deleted. `active` itself is left for the caller to reset.
    async fn delete_stored(
        &self,
        active: &Active,
        reason: &'static str,
    ) -> Result<bool, SessionError> {
        let Some((_, key)) = &active.stored else {
            return Ok(false);
        };
        let deleted = self
            .core()
            .store
            .delete(key, self.core().now())
            .await
            .map_err(|e| self.store_failed("delete", e))?
            == crate::store::Deleted::Session;
        if deleted {
            tracing::info!(
                target: "cloakroom::security",
                event = if reason == "invalidate" { "session_invalidated" } else { "session_rotated" },
                reason,
                session = %key.short(),
                "session ID retired"
            );
        } else {
            tracing::info!(
                target: "cloakroom::security",
                event = "session_vanished",
                reason,
                session = %key.short(),
                "session ended by another request while this one ran"
            );
        }
        Ok(deleted)
    }

    /// Replaces the session with a new empty one, and expires the cookie if
    /// the browser holds one.
    fn reset(&self, active: &mut Active) {
        let clear_cookie = self.shared.cookie_id.is_some() || active.clear_cookie;
        *active = Active::fresh(self.core(), self.core().now(), clear_cookie);
    }

    /// Finishes the session without the store when nothing is left to
    /// write (untouched, only read, or a new session that stays empty), so
    /// that such responses skip the asynchronous commit. `None` means the
    /// store is needed (or another clone holds the lock): use
    /// [`Session::commit`].
    pub(crate) fn finish_without_store(&self) -> Option<Outcome> {
        let mut phase = self.shared.state.try_lock().ok()?;
        let poisoned = self.shared.poisoned.load(Ordering::Relaxed);
        let outcome = match &*phase {
            Phase::Unloaded | Phase::Finished => Outcome::default(),
            Phase::Blind(_) => return None,
            // Pending writes after a store failure: `commit` aborts.
            Phase::Active(active) if poisoned && active.has_pending_writes() => return None,
            Phase::Active(active) if poisoned || !active.has_pending_writes() => {
                if active.stored.is_some()
                    && active.touched
                    && active.record.persistent
                    && !poisoned
                {
                    // A persistent cookie's Max-Age follows the touch.
                    return None;
                }
                Outcome {
                    set_cookie: active
                        .clear_cookie
                        .then(|| self.core().config.cookie.removal())
                        .flatten(),
                    vary: true,
                }
            }
            Phase::Active(_) => return None,
        };
        *phase = Phase::Finished;
        Some(outcome)
    }

    /// Writes this request's changes and says what the response needs.
    /// Afterwards the handle is finished.
    pub(crate) async fn commit(&self) -> Result<Outcome, Abort> {
        let phase = std::mem::replace(&mut *self.shared.state.lock().await, Phase::Finished);
        let poisoned = self.shared.poisoned.load(Ordering::Relaxed);
        let active = match phase {
            // Writes recorded before a store failure are never applied: the
            // request writes all of its changes or none.
            Phase::Blind(_) if poisoned => return Err(Abort),
            Phase::Blind(patch) => return self.commit_blind(&patch).await.map_err(|_| Abort),
            Phase::Active(active) => active,
            Phase::Unloaded | Phase::Finished => return Ok(Outcome::default()),
        };
        if poisoned {
            if active.has_pending_writes() {
                return Err(Abort);
            }
            let cookie = &self.core().config.cookie;
            return Ok(Outcome {
                set_cookie: active.clear_cookie.then(|| cookie.removal()).flatten(),
                vary: true,
            });
        }
        self.commit_active(active).await.map_err(|_| Abort)
    }

    async fn commit_active(&self, active: Active) -> Result<Outcome, SessionError> {
        let core = self.core();
        let cookie = &core.config.cookie;
        let keys = &core.config.keys;
        let now = core.now();
        let max_age = |record: &SessionRecord| record.persistent.then(|| record.expires_at() - now);
        let set_cookie = match &active.stored {
            Some((id, key)) => {
                let saved = active.patch.is_empty()
                    || core
                        .store
                        .save(key, &active.patch, self.touch(now))
                        .await
                        .map_err(|e| self.store_failed("save", e))?;
                if !saved {
                    // Ended by another request (logout, logout-everywhere,
                    // a login that rotated the ID) while this one ran: its
                    // changes must not bring it back. The cookie is left
                    // alone, since it may already be a newer one.
                    tracing::info!(
                        target: "cloakroom::security",
                        event = "session_vanished",
                        session = %key.short(),
                        "session ended while the request ran; changes dropped"
                    );
                    None
                } else if active.patch.lifetime.is_some()
                    || (active.touched && active.record.persistent)
                {
                    cookie.set_cookie(keys, id, max_age(&active.record))
                } else {
                    None
                }
            }
            None if active.has_content() => {
                let id = self.create(active.new_id, &active.record, now).await?;
                cookie.set_cookie(keys, &id, max_age(&active.record))
            }
            None if active.clear_cookie => cookie.removal(),
            None => None,
        };
        Ok(Outcome {
            set_cookie,
            vary: true,
        })
    }

    fn touch(&self, now: OffsetDateTime) -> Touch {
        Touch {
            now,
            after: self.core().config.touch_after,
        }
    }

    /// Commits writes made without reading: one update-only save. If the
    /// session is gone (expired, logged out), the writes start a new
    /// session under a new ID instead, as they would have after a load
    /// that found nothing; the old ID is never revived.
    async fn commit_blind(&self, patch: &Patch) -> Result<Outcome, SessionError> {
        let Some(id) = &self.shared.cookie_id else {
            // Blind writes are only recorded for requests with a cookie.
            return Ok(Outcome::default());
        };
        let core = self.core();
        let now = core.now();
        let saved = core
            .store
            .save(&id.store_key(), patch, self.touch(now))
            .await
            .map_err(|e| self.store_failed("save", e))?;
        if saved {
            return Ok(Outcome {
                set_cookie: None,
                vary: true,
            });
        }
        let mut fresh = Active::fresh(core, now, true);
        fresh.overlay(patch);
        let set_cookie = if fresh.has_content() {
            let new_id = self.create(None, &fresh.record, now).await?;
            let max_age = fresh
                .record
                .persistent
                .then(|| fresh.record.expires_at() - now);
            core.config
                .cookie
                .set_cookie(&core.config.keys, &new_id, max_age)
        } else {
            core.config.cookie.removal()
        };
        Ok(Outcome {
            set_cookie,
            vary: true,
        })
    }

    /// Stores a new session under a fresh ID, retrying on collision.
    async fn create(
        &self,
        id: Option<SessionId>,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<SessionId, SessionError> {
        let store = &self.core().store;
        let mut id = match id {
            Some(id) => id,
            None => SessionId::generate()?,
        };
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let key = id.store_key();
            let created = store
                .create(&key, record, now)
                .await
                .map_err(|e| self.store_failed("create", e))?;
            if created {
                tracing::info!(
                    target: "cloakroom::security",
                    event = "session_created",
                    session = %key.short(),
                    authenticated = record.user_id.is_some(),
                    "session created"
                );
                return Ok(id);
            }
            tracing::warn!(
                target: "cloakroom::security",
                event = "id_collision",
                session = %key.short(),
                "a new session ID was already in use; drawing another"
            );
            id = SessionId::generate()?;
        }
        Err(SessionError::IdCollision)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.shared.state.try_lock() {
            Err(_) => "busy".to_owned(),
            Ok(phase) => match &*phase {
                Phase::Unloaded => "unloaded".to_owned(),
                Phase::Blind(_) => "written, not read".to_owned(),
                Phase::Finished => "finished".to_owned(),
                Phase::Active(a) => match &a.stored {
                    Some((_, key)) => format!("stored {}", key.short()),
                    None => "new".to_owned(),
                },
            },
        };
        f.debug_struct("Session")
            .field("state", &state)
            .field("has_cookie", &self.shared.cookie_id.is_some())
            .finish()
    }
}

/// A session operation failed.
///
/// Through the axum integration, store failures become `503 Service
/// Unavailable` and everything else `500`, with bodies that name no session,
/// key or backend detail. No variant carries a session ID.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed. The request's session changes are not written.
    Store(StoreError),
    /// A value could not be serialized to JSON.
    Serialize {
        /// The data key being written.
        key: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A stored value is not of the requested type.
    Deserialize {
        /// The data key being read.
        key: String,
        /// The deserializer's error.
        source: serde_json::Error,
    },
    /// The operating system's random number generator failed.
    Randomness(RandomnessError),
    /// Several freshly drawn IDs were all taken: the store or the RNG is
    /// broken.
    IdCollision,
    /// A "remember me" lifetime under one second or over ten years.
    InvalidLifetime,
    /// The response was already produced; later changes cannot be saved.
    Finished,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(e) => write!(f, "{e}"),
            Self::Serialize { key, .. } => write!(f, "cannot serialize session value {key:?}"),
            Self::Deserialize { key, .. } => {
                write!(f, "session value {key:?} is not of the requested type")
            }
            Self::Randomness(e) => write!(f, "{e}"),
            Self::IdCollision => f.write_str("could not find a free session ID"),
            Self::InvalidLifetime => {
                f.write_str("session lifetimes must be between one second and ten years")
            }
            Self::Finished => f.write_str("the session was already committed with the response"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Serialize { source, .. } | Self::Deserialize { source, .. } => Some(source),
            Self::Randomness(e) => Some(e),
            Self::IdCollision | Self::InvalidLifetime | Self::Finished => None,
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<RandomnessError> for SessionError {
    fn from(e: RandomnessError) -> Self {
        Self::Randomness(e)
    }
}

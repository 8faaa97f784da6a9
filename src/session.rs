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
//!     // A fresh ID when the response goes out; the old one stops working.
//!     session.login(user_id).await
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::error::SessionError;
use crate::events::{self, EndReason, Orphan, Vanished};
use crate::id::{SessionId, StoreKey};
use crate::layer::Core;
use crate::record::{Lifetime, Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{Deleted, StoreError};

/// How many fresh IDs are tried when `create` reports a collision. With
/// 128-bit random IDs a single collision is already astronomically
/// unlikely; repeated ones mean a broken store or RNG.
const MAX_CREATE_ATTEMPTS: usize = 3;

/// How long a retired ID keeps pointing at its successor: a logout sent
/// with the old cookie within this time (a request that started before the
/// rotation) ends the new session too.
const FORWARD_GRACE: time::Duration = time::Duration::minutes(5);

/// How many forwards a logout follows (a session rotated several times
/// within the grace time).
const MAX_FORWARD_HOPS: usize = 8;

/// Deepest nesting of arrays and objects in a stored value. Deeper values
/// could be written but not read back (JSON parsers cap their recursion),
/// which would lock the session's owner out with errors.
const MAX_VALUE_DEPTH: usize = 64;

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
    /// The response is out; the commit still has store work to do.
    Planned(Plan),
    /// The response has been committed.
    Finished,
}

struct Active {
    /// The stored session this request loaded, if any.
    stored: Option<(SessionId, StoreKey)>,
    /// The session as this request sees it, its own changes included.
    record: SessionRecord,
    /// This request's changes to the stored session.
    patch: Patch,
    /// Loading recorded activity (moved `last_seen`).
    touched: bool,
    /// The ID the session gets at commit: set by login and regenerate
    /// (the stored session then moves to it), or drawn early for a new
    /// session that a CSRF token was bound to.
    new_id: Option<SessionId>,
    /// `remember_me` was called in this request: a login keeps it.
    remember: bool,
    /// A login happened in this request: the commit enforces the
    /// per-user session limit.
    logged_in: bool,
    /// The browser holds a cookie that names no live session any more.
    clear_cookie: bool,
    /// An ending operation (logout, logout-everywhere) has begun and not
    /// finished: if its store call failed and the handler went on anyway,
    /// the response must not pass for a logout.
    ending: bool,
}

/// A commit that must not let the handler's response through: an earlier
/// store failure in the request dropped changes the response depends on,
/// or the commit's own store call failed. Already logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abort {
    /// The store failed or timed out: `503`.
    Unavailable,
    /// The store refused the data: `400`.
    Rejected,
}

/// What the layer must add to the response.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) set_cookie: Option<HeaderValue>,
    /// The session was read, so the response depends on the cookie.
    pub(crate) vary: bool,
}

/// What the browser's cookie must become.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CookieChange {
    /// Leave it as it is.
    Keep,
    /// Send this ID, persistent for `max_age` if given.
    Set {
        id: SessionId,
        max_age: Option<time::Duration>,
    },
    /// Expire it.
    Remove,
}

/// What a commit must do, decided from the request's end state alone by
/// [`plan`]; the async code only carries it out.
#[derive(Debug)]
enum Plan {
    /// No store call: change the cookie (or not) and finish.
    Cookie { change: CookieChange, vary: bool },
    /// Save the changes of a stored session (update-only). When saved,
    /// refresh the cookie if `refresh` says so; when the session turned out
    /// to be gone, leave the cookie alone (it may already be a newer one).
    Save {
        id: SessionId,
        key: StoreKey,
        patch: Patch,
        refresh: Option<Option<time::Duration>>,
    },
    /// Writes recorded without a load: an update-only save, or a new
    /// session with them if the old one is gone.
    SaveBlind { key: StoreKey, patch: Patch },
    /// Store a new session; `login` says whether a user logged in (the
    /// per-user limit then applies).
    Create {
        id: Option<SessionId>,
        record: SessionRecord,
        login: bool,
    },
    /// Move the stored session under `old` to `id`.
    Rotate {
        old: StoreKey,
        id: SessionId,
        record: SessionRecord,
        login: bool,
    },
    /// A store failure earlier in the request dropped changes: answer 503.
    Abort,
}

/// The whole commit decision: the request's end state in, a plan out.
/// `cookie_id` is the ID the request's cookie carries, if any; `now` reads
/// the clock, which only some plans need (the common ones read nothing).
fn plan(
    phase: Phase,
    cookie_id: Option<&SessionId>,
    poisoned: bool,
    now: impl FnOnce() -> OffsetDateTime,
) -> Plan {
    let active = match phase {
        Phase::Unloaded | Phase::Finished => {
            return Plan::Cookie {
                change: CookieChange::Keep,
                vary: false,
            }
        }
        Phase::Planned(plan) => return plan,
        // Writes recorded before a store failure are never applied: the
        // request writes all of its changes or none.
        Phase::Blind(_) if poisoned => return Plan::Abort,
        Phase::Blind(patch) => {
            return match cookie_id {
                Some(id) => Plan::SaveBlind {
                    key: id.store_key(),
                    patch,
                },
                // Blind writes are only recorded for requests with a cookie.
                None => Plan::Cookie {
                    change: CookieChange::Keep,
                    vary: false,
                },
            };
        }
        Phase::Active(active) => active,
    };
    if poisoned {
        if active.has_pending_writes() {
            return Plan::Abort;
        }
        return Plan::Cookie {
            change: removal_if(active.clear_cookie),
            vary: true,
        };
    }
    let has_content = active.has_content();
    let max_age = active
        .record
        .persistent
        .then(|| active.record.expires_at() - now());
    match (active.stored, active.new_id) {
        (Some((_, old)), Some(id)) => Plan::Rotate {
            old,
            id,
            record: active.record,
            login: active.logged_in,
        },
        (Some((id, key)), None) => {
            // A persistent cookie's `Max-Age` follows the deadline.
            let refresh = (active.patch.lifetime.is_some()
                || (active.touched && active.record.persistent))
                .then_some(max_age);
            if active.patch.is_empty() {
                let change = match refresh {
                    Some(max_age) => CookieChange::Set { id, max_age },
                    None => CookieChange::Keep,
                };
                return Plan::Cookie { change, vary: true };
            }
            Plan::Save {
                id,
                key,
                patch: active.patch,
                refresh,
            }
        }
        (None, id) if has_content => Plan::Create {
            id,
            record: active.record,
            login: active.logged_in,
        },
        (None, _) => Plan::Cookie {
            change: removal_if(active.clear_cookie),
            vary: true,
        },
    }
}

fn removal_if(clear: bool) -> CookieChange {
    if clear {
        CookieChange::Remove
    } else {
        CookieChange::Keep
    }
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
            remember: false,
            logged_in: false,
            clear_cookie,
            ending: false,
        }
    }

    fn has_content(&self) -> bool {
        !self.record.data.is_empty() || self.record.user_id.is_some()
    }

    /// Whether committing would write anything (a patch, a move or a new
    /// session).
    fn has_pending_writes(&self) -> bool {
        self.ending
            || match self.stored {
                Some(_) => !self.patch.is_empty() || self.new_id.is_some(),
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

    /// Records a data write, in the record and (for a stored session) in
    /// the patch.
    fn set(&mut self, key: &str, value: Value) {
        if self.stored.is_some() {
            self.patch.insert(key, value.clone());
        }
        self.record.data.insert(key.to_owned(), value);
    }

    fn unset(&mut self, key: &str) -> Option<Value> {
        let value = self.record.data.remove(key)?;
        if self.stored.is_some() {
            self.patch.delete(key);
        }
        Some(value)
    }

    /// Gives the record the remember-me lifetime: its own idle window, and
    /// an absolute deadline counted from the session's creation, so that
    /// asking again never extends it.
    fn remember(&mut self, core: &Core) {
        let config = &core.config;
        let lifetime = Lifetime {
            idle_timeout: config.remember_idle_timeout,
            // Saturating: a stored record may hold any date.
            absolute_deadline: self
                .record
                .created_at
                .saturating_add(config.remember_absolute_timeout),
            persistent: true,
        };
        self.record.idle_timeout = lifetime.idle_timeout;
        self.record.absolute_deadline = lifetime.absolute_deadline;
        self.record.persistent = true;
        if self.stored.is_some() && self.new_id.is_none() {
            self.patch.lifetime = Some(lifetime);
        }
    }

    /// Whether the record carries the remember-me lifetime.
    fn is_remembered(&self, core: &Core) -> bool {
        self.record.persistent && self.record.idle_timeout == core.config.remember_idle_timeout
    }
}

/// Checks that every store can hold `value` under `key`: no NUL characters
/// (PostgreSQL's `text` and `jsonb` cannot hold them) and no nesting deeper
/// than JSON parsers read back.
fn check_storable(key: &str, value: &Value) -> Result<(), SessionError> {
    if key.contains('\0') {
        return Err(SessionError::Unstorable {
            what: "data key",
            reason: "contains a NUL character",
        });
    }
    check_value(value, 0)
}

fn check_value(value: &Value, depth: usize) -> Result<(), SessionError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(SessionError::Unstorable {
            what: "value",
            reason: "is nested more than 64 levels deep",
        });
    }
    let nul = || SessionError::Unstorable {
        what: "value",
        reason: "contains a NUL character",
    };
    match value {
        Value::String(text) if text.contains('\0') => Err(nul()),
        Value::Array(items) => items.iter().try_for_each(|v| check_value(v, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                return Err(nul());
            }
            check_value(v, depth + 1)
        }),
        _ => Ok(()),
    }
}

fn check_user_id(user_id: &str) -> Result<(), SessionError> {
    if user_id.contains('\0') {
        return Err(SessionError::Unstorable {
            what: "user id",
            reason: "contains a NUL character",
        });
    }
    Ok(())
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
        events::store_error(operation, &error);
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
            Phase::Active(_) | Phase::Planned(_) | Phase::Finished => {}
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
        let touch = self.touch(now);
        let loaded = core
            .store
            .load(&key, touch)
            .await
            .map_err(|e| self.store_failed("load", e))?;
        let Some(mut record) = loaded else {
            events::session_not_found(&key);
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
            remember: false,
            logged_in: false,
            clear_cookie: false,
            ending: false,
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
            Some(value) => deserialize(key, value).map(Some),
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
    /// [`SessionError::Unstorable`] when the key or value holds what no
    /// store can keep (a NUL character, nesting deeper than 64 levels), and
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|source| SessionError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        check_storable(key, &value)?;
        let value = match self
            .write_blind(|patch, value| patch.insert(key, value), value)
            .await
        {
            None => return Ok(()),
            Some(value) => value,
        };
        let mut active = self.active().await?;
        if active.record.data.get(key) != Some(&value) {
            active.set(key, value);
        }
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn remove(&self, key: &str) -> Result<bool, SessionError> {
        Ok(self.active().await?.unset(key).is_some())
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
            Some(value) => deserialize(key, value)?,
        };
        active.unset(key);
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
    /// The session moves to a new ID when the response goes out, and the
    /// ID the request came with stops working then, so a session ID planted
    /// before login (session fixation) is worthless after it. The new
    /// session is created before the old one is retired, so a store failure
    /// or a dropped request leaves the user with one session, never none;
    /// and if the old session ends while this request runs (a logout in
    /// another tab, logout everywhere), the new one is deleted as well and
    /// the response leaves the browser without a session.
    ///
    /// The new session starts a full lifetime with the configured timeouts
    /// (kept as "remember me" if [`Session::remember_me`] was called in this
    /// request, or the old session was remembered) and is indexed under
    /// `user_id` for [`Session::logout_everywhere`]. When the user then has
    /// more sessions than the layer allows, their least recently active
    /// ones end.
    ///
    /// # Security
    ///
    /// Data carries over from an anonymous session or one of the same
    /// user, and is dropped when another user was logged in. An anonymous
    /// session may have been planted by an attacker (a cookie set by a
    /// sibling subdomain, say) and filled with values of their choosing,
    /// such as a page to return to after login. Use
    /// [`Session::login_keeping`] to carry over only the keys you expect,
    /// or nothing at all.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded,
    /// [`SessionError::Unstorable`] for a user id no store can hold (one
    /// with a NUL character), and [`SessionError::Randomness`] when no ID
    /// can be drawn.
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        self.log_in(user_id.into(), None).await
    }

    /// Logs `user_id` in like [`Session::login`], carrying over only the
    /// data keys listed in `keep` (from an anonymous session or one of the
    /// same user). `login_keeping(user, &[])` starts from a clean slate.
    ///
    /// # Errors
    ///
    /// As for [`Session::login`].
    pub async fn login_keeping(
        &self,
        user_id: impl Into<String>,
        keep: &[&str],
    ) -> Result<(), SessionError> {
        self.log_in(user_id.into(), Some(keep)).await
    }

    async fn log_in(&self, user_id: String, keep: Option<&[&str]>) -> Result<(), SessionError> {
        check_user_id(&user_id)?;
        let mut active = self.active().await?;
        let new_id = SessionId::generate()?;
        let core = self.core();
        let same_user = active
            .record
            .user_id
            .as_ref()
            .is_none_or(|previous| *previous == user_id);
        let mut data = if same_user {
            std::mem::take(&mut active.record.data)
        } else {
            Map::new()
        };
        if let Some(keep) = keep {
            data.retain(|key, _| keep.contains(&key.as_str()));
        }
        // Remember-me asked for in this request, or kept from the user's
        // own remembered session (never from another user's).
        let remember = active.remember || (same_user && active.is_remembered(core));
        let now = core.now();
        let mut record =
            SessionRecord::new(now, core.config.idle_timeout, core.config.absolute_timeout);
        record.persistent = core.config.cookie.persistent;
        record.data = data;
        record.user_id = Some(user_id);
        active.record = record;
        // The whole record is written under the new ID at commit.
        active.patch = Patch::default();
        active.touched = false;
        active.new_id = Some(new_id);
        active.logged_in = true;
        if remember {
            active.remember(core);
        }
        Ok(())
    }

    /// Moves the session to a fresh ID, keeping its data, user and
    /// deadlines, when the response goes out; the old ID stops working
    /// then. Use it when privileges change without a login (e.g. after
    /// re-entering a password). As with [`Session::login`], a session that
    /// ends while the request runs is not brought back under the new ID.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded, and
    /// [`SessionError::Randomness`] when no ID can be drawn.
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        let mut active = self.active().await?;
        let new_id = SessionId::generate()?;
        // The whole record is written under the new ID at commit.
        active.patch = Patch::default();
        active.new_id = Some(new_id);
        Ok(())
    }

    /// Ends the session: the record is deleted now and the cookie expired
    /// (`Max-Age=0`) on the response. The handle then holds a new, empty
    /// anonymous session. If another request moved the session to a new ID
    /// (a login or regenerate in another tab) shortly before or while this
    /// one ran, the new session ends too.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded or deleted.
    pub async fn invalidate(&self) -> Result<(), SessionError> {
        let mut active = self.active().await?;
        active.ending = true;
        if let Some(key) = self.key_to_end(&active) {
            self.end(key, EndReason::Logout).await?;
        }
        self.reset(&mut active);
        Ok(())
    }

    /// Ends every session of the logged-in user, this one included, on
    /// every device. Returns how many sessions ended. For an anonymous
    /// session this ends just this one. A cookie whose session another
    /// request moved to a new ID moments ago still reaches the user's
    /// sessions.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails; sessions already ended
    /// stay ended.
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let mut active = self.active().await?;
        active.ending = true;
        let mut ended = 0;
        if let Some(user_id) = active.record.user_id.clone() {
            ended = self
                .core()
                .store
                .delete_user(&user_id, None)
                .await
                .map_err(|e| self.store_failed("delete_user", e))?;
            events::logged_out_everywhere(ended, None, false);
        }
        // The session the request came with, wherever it went: it may be
        // anonymous, another user's before a login in this request, or have
        // moved (by a login as another user, or before this request loaded
        // it). A cookie whose session moved has authority over that session
        // only, never over the user's others.
        if let Some(key) = self.key_to_end(&active) {
            let surely_ended = active.stored.is_some() && active.record.user_id.is_some();
            ended += u64::from(
                end_chain(self.core(), key, EndReason::Logout, !surely_ended)
                    .await
                    .map_err(|e| self.store_failed("delete", e))?,
            );
        }
        self.reset(&mut active);
        Ok(ended)
    }

    /// The store key an ending operation starts from: the loaded session's,
    /// or, when the load found nothing, the cookie's (whose session may
    /// have moved to a new ID; deleting follows the forward).
    fn key_to_end(&self, active: &Active) -> Option<StoreKey> {
        match (&active.stored, &self.shared.cookie_id) {
            (Some((_, key)), _) => Some(*key),
            // Not after a reset in this request: the cookie's session was
            // ended (or left) then already.
            (None, Some(id)) if !active.clear_cookie => Some(id.store_key()),
            (None, _) => None,
        }
    }

    /// Ends every other session of the logged-in user ("log out other
    /// devices"), keeping this one. Returns how many ended; 0 when
    /// anonymous.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails.
    pub async fn logout_other_devices(&self) -> Result<u64, SessionError> {
        let mut active = self.active().await?;
        let Some(user_id) = active.record.user_id.clone() else {
            return Ok(0);
        };
        active.ending = true;
        let keep = active.stored.as_ref().map(|(_, key)| *key);
        let ended = self
            .core()
            .store
            .delete_user(&user_id, keep.as_ref())
            .await
            .map_err(|e| self.store_failed("delete_user", e))?;
        active.ending = false;
        events::logged_out_everywhere(ended, keep.as_ref(), false);
        Ok(ended)
    }

    /// The logged-in user's live sessions, oldest first (at most the 1,000
    /// most recent), with this one marked [`SessionInfo::current`]. Empty
    /// when anonymous. A session this request logs in or moves is stored
    /// only when the response goes out, so it is listed from the next
    /// request on.
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

    /// How many live sessions the logged-in user has (0 when anonymous),
    /// without reading them: for "signed in on N devices" displays.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails.
    pub async fn count_sessions(&self) -> Result<u64, SessionError> {
        let active = self.active().await?;
        let Some(user_id) = active.record.user_id.as_deref() else {
            return Ok(0);
        };
        self.core()
            .store
            .count_user(user_id, self.core().now())
            .await
            .map_err(|e| self.store_failed("count_user", e))
    }

    /// Makes this a "remember me" session: its cookie becomes persistent
    /// (`Max-Age`) so that it survives a browser restart, it may go unused
    /// for the layer's remember-me idle timeout (7 days by default; it
    /// keeps rolling with activity), and it lives at most the remember-me
    /// absolute timeout (30 days by default) counted from its creation or
    /// login, however often this is called. Stored with the session, so
    /// later requests keep it; called before [`Session::login`] in the same
    /// request, the login keeps it.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn remember_me(&self) -> Result<(), SessionError> {
        let mut active = self.active().await?;
        active.remember = true;
        active.remember(self.core());
        Ok(())
    }

    /// The ID the browser holds after this response, if it holds one: what
    /// a CSRF token is bound to. A new session that has content gets its
    /// ID drawn now, so that a token rendered in the same response is
    /// bound to it; an empty one has none (and asking creates nothing).
    #[cfg(feature = "csrf")]
    pub(crate) async fn token_binding(&self) -> Result<Option<SessionId>, SessionError> {
        let mut active = self.active().await?;
        if let Some(id) = &active.new_id {
            return Ok(Some(id.clone()));
        }
        if let Some((id, _)) = &active.stored {
            return Ok(Some(id.clone()));
        }
        if !active.has_content() {
            return Ok(None);
        }
        let id = SessionId::generate()?;
        active.new_id = Some(id.clone());
        Ok(Some(id))
    }

    /// The verified ID the request's cookie carries.
    #[cfg(feature = "csrf")]
    pub(crate) fn cookie_id(&self) -> Option<&SessionId> {
        self.shared.cookie_id.as_ref()
    }

    /// Whether the request's cookie names a live session (loads it).
    #[cfg(feature = "csrf")]
    pub(crate) async fn is_stored(&self) -> Result<bool, SessionError> {
        Ok(self.active().await?.stored.is_some())
    }

    /// The layer's signing keys and clock, for tokens derived from them.
    #[cfg(feature = "csrf")]
    pub(crate) fn keys_and_now(&self) -> (&crate::key::KeyRing, OffsetDateTime) {
        (&self.core().config.keys, self.core().now())
    }

    /// Ends the session under `key`, following forwards: a session another
    /// request moved to a new ID after this one loaded it ends under its
    /// new ID. Returns whether a live session ended.
    async fn end(&self, key: StoreKey, reason: EndReason) -> Result<bool, SessionError> {
        let ended = end_session(self.core(), key, reason)
            .await
            .map_err(|e| self.store_failed("delete", e))?;
        Ok(ended)
    }

    /// Replaces the session with a new empty one, and expires the cookie if
    /// the browser holds one.
    fn reset(&self, active: &mut Active) {
        let clear_cookie = self.shared.cookie_id.is_some() || active.clear_cookie;
        *active = Active::fresh(self.core(), self.core().now(), clear_cookie);
    }

    /// Decides what the response needs. Most requests (untouched, only
    /// read, or a new session that stays empty) need no store call, and
    /// get their outcome here, synchronously. `None` means there is store
    /// work (or another clone holds the lock): run [`Session::commit`].
    pub(crate) fn finish_without_store(&self) -> Option<Outcome> {
        let mut phase = self.shared.state.try_lock().ok()?;
        let ended = std::mem::replace(&mut *phase, Phase::Finished);
        let poisoned = self.shared.poisoned.load(Ordering::Relaxed);
        let cookie_id = self.shared.cookie_id.as_ref();
        match plan(ended, cookie_id, poisoned, || self.core().now()) {
            Plan::Cookie { change, vary } => Some(self.outcome(change, vary)),
            other => {
                *phase = Phase::Planned(other);
                None
            }
        }
    }

    fn outcome(&self, change: CookieChange, vary: bool) -> Outcome {
        let config = &self.core().config;
        let set_cookie = match change {
            CookieChange::Keep => None,
            CookieChange::Set { id, max_age } => {
                config.cookie.set_cookie(&config.keys, &id, max_age)
            }
            CookieChange::Remove => config.cookie.removal(),
        };
        Outcome { set_cookie, vary }
    }

    /// Writes this request's changes and says what the response needs.
    /// Afterwards the handle is finished.
    pub(crate) async fn commit(&self) -> Result<Outcome, Abort> {
        let ended = std::mem::replace(&mut *self.shared.state.lock().await, Phase::Finished);
        let poisoned = self.shared.poisoned.load(Ordering::Relaxed);
        let now = self.core().now();
        let plan = plan(ended, self.shared.cookie_id.as_ref(), poisoned, || now);
        self.execute(plan, now).await
    }

    /// Carries out a plan.
    async fn execute(&self, plan: Plan, now: OffsetDateTime) -> Result<Outcome, Abort> {
        let core = self.core();
        let max_age = |record: &SessionRecord| record.persistent.then(|| record.expires_at() - now);
        let change = match plan {
            Plan::Abort => return Err(Abort::Unavailable),
            Plan::Cookie { change, vary } => return Ok(self.outcome(change, vary)),
            Plan::Save {
                id,
                key,
                patch,
                refresh,
            } => {
                let saved = core
                    .store
                    .save(&key, &patch, self.touch(now))
                    .await
                    .map_err(|e| abort(self.store_failed("save", e)))?;
                if !saved {
                    // Ended by another request (logout, logout-everywhere,
                    // a login that moved it) while this one ran: its
                    // changes must not bring it back. The cookie is left
                    // alone, since it may already be a newer one.
                    events::session_vanished(&key, Vanished::BeforeSave);
                }
                match refresh {
                    Some(max_age) if saved => CookieChange::Set { id, max_age },
                    _ => CookieChange::Keep,
                }
            }
            Plan::SaveBlind { key, patch } => {
                let saved = core
                    .store
                    .save(&key, &patch, self.touch(now))
                    .await
                    .map_err(|e| abort(self.store_failed("save", e)))?;
                if saved {
                    return Ok(self.outcome(CookieChange::Keep, true));
                }
                // Moved to a new ID by a login or regenerate in another tab
                // (the key holds a forward): the browser has, or is about to
                // get, the new cookie; replacing or clearing it would log
                // that login out. The writes are dropped, as for any
                // session ended while the request ran.
                let moved = core
                    .store
                    .delete(&key, now)
                    .await
                    .map_err(|e| abort(self.store_failed("delete", e)))?;
                if let Deleted::Forward(_) = moved {
                    events::session_vanished(&key, Vanished::MovedBeforeSave);
                    return Ok(self.outcome(CookieChange::Keep, true));
                }
                // The session is gone (expired, logged out): the writes
                // start a new session under a new ID, as they would have
                // after a load that found nothing; the old ID is never
                // revived.
                let mut fresh = Active::fresh(core, now, true);
                fresh.overlay(&patch);
                if !fresh.has_content() {
                    return Ok(self.outcome(CookieChange::Remove, true));
                }
                let id = create(core, None, &fresh.record, now)
                    .await
                    .map_err(|e| abort(self.session_failed(e)))?;
                CookieChange::Set {
                    id,
                    max_age: max_age(&fresh.record),
                }
            }
            Plan::Create { id, record, login } => {
                let id = create(core, id, &record, now)
                    .await
                    .map_err(|e| abort(self.session_failed(e)))?;
                if let (true, Some(user_id)) = (login, &record.user_id) {
                    enforce_session_limit(core, user_id, &id.store_key()).await;
                }
                CookieChange::Set {
                    id,
                    max_age: max_age(&record),
                }
            }
            Plan::Rotate {
                old,
                id,
                record,
                login,
            } => {
                let max_age = max_age(&record);
                let user_id = record.user_id.clone().filter(|_| login);
                let moved = run_to_completion(self.shared.core.clone(), move |core, abandoned| {
                    rotate(core, old, id, record, abandoned)
                })
                .await
                .map_err(|e| abort(self.session_failed(e)))?;
                match moved {
                    Some(id) => {
                        if let Some(user_id) = &user_id {
                            enforce_session_limit(core, user_id, &id.store_key()).await;
                        }
                        CookieChange::Set { id, max_age }
                    }
                    // The session ended while the request ran: the request
                    // ends without one. The cookie is left alone, since the
                    // request that ended it may have set a newer one.
                    None => CookieChange::Keep,
                }
            }
        };
        Ok(self.outcome(change, true))
    }

    /// Marks the request as failed (nothing more is written) and passes
    /// `error` on; store errors were logged where they happened.
    fn session_failed(&self, error: SessionError) -> SessionError {
        self.shared.poisoned.store(true, Ordering::Relaxed);
        error
    }

    fn touch(&self, now: OffsetDateTime) -> Touch {
        Touch {
            now,
            after: self.core().config.touch_after,
        }
    }
}

fn deserialize<T: DeserializeOwned>(key: &str, value: &Value) -> Result<T, SessionError> {
    T::deserialize(value).map_err(|source| SessionError::Deserialize {
        key: key.to_owned(),
        source,
    })
}

fn abort(error: SessionError) -> Abort {
    match error {
        SessionError::Store(e) if e.is_rejected() => Abort::Rejected,
        SessionError::Unstorable { .. } => Abort::Rejected,
        _ => Abort::Unavailable,
    }
}

/// Ends the session under `key`, following forwards left by logins and
/// regenerates to the session they lead to. Returns whether a live session
/// ended. Forwards stay in place (they lapse by themselves), so a logout
/// that fails halfway can be retried with the same old ID.
pub(crate) async fn end_session(
    core: &Core,
    key: StoreKey,
    reason: EndReason,
) -> Result<bool, StoreError> {
    end_chain(core, key, reason, true).await
}

/// [`end_session`]; `report_gone` says whether finding nothing is worth a
/// `session_vanished` event (not when the caller only checks for a move).
async fn end_chain(
    core: &Core,
    mut key: StoreKey,
    reason: EndReason,
    report_gone: bool,
) -> Result<bool, StoreError> {
    let now = core.now();
    for _ in 0..MAX_FORWARD_HOPS {
        match core.store.delete(&key, now).await? {
            Deleted::Session => {
                events::session_invalidated(&key, reason);
                return Ok(true);
            }
            Deleted::Forward(successor) => {
                events::session_forwarded(&key, &successor, reason);
                key = successor;
            }
            _ => break,
        }
    }
    if report_gone {
        events::session_vanished(&key, Vanished::BeforeEnd(reason));
    }
    Ok(false)
}

/// Stores `record` under `id` (or a freshly drawn ID), drawing a new ID on
/// collision.
async fn create(
    core: &Core,
    id: Option<SessionId>,
    record: &SessionRecord,
    now: OffsetDateTime,
) -> Result<SessionId, SessionError> {
    let mut id = match id {
        Some(id) => id,
        None => SessionId::generate()?,
    };
    for _ in 0..MAX_CREATE_ATTEMPTS {
        let key = id.store_key();
        let created = match core.store.create(&key, record, now).await {
            Ok(created) => created,
            Err(error) => {
                events::store_error("create", &error);
                // A create given up on (a timeout) may still land, and on
                // Redis may land without its user-index entry: take it back.
                // Nobody holds this ID yet, so deleting it loses nothing.
                discard(core, &key, Orphan::Failed).await;
                return Err(SessionError::Store(error));
            }
        };
        if created {
            events::session_created(&key, record.user_id.is_some());
            return Ok(id);
        }
        events::id_collision(&key);
        id = SessionId::generate()?;
    }
    Err(SessionError::IdCollision)
}

/// Moves the session under `old` to `id`: the new record first, then the
/// old one retired with a forward. Returns the ID the session now has, or
/// `None` when the old session had ended meanwhile (the new record is then
/// deleted again). On a failure, or when the request was abandoned before
/// the old record was retired, the new record is deleted again and the old
/// session stays as it was.
async fn rotate(
    core: Arc<Core>,
    old: StoreKey,
    id: SessionId,
    record: SessionRecord,
    abandoned: Arc<AtomicBool>,
) -> Result<Option<SessionId>, SessionError> {
    let now = core.now();
    let id = create(&core, Some(id), &record, now).await?;
    let new = id.store_key();
    // Nobody will receive the new cookie: keep the old session, which the
    // browser still holds, and take the new one back.
    if abandoned.load(Ordering::Acquire) {
        discard(&core, &new, Orphan::Abandoned).await;
        return Err(SessionError::Finished);
    }
    let until = now + FORWARD_GRACE;
    let mut retired = core.store.retire(&old, &new, until, now).await;
    if let Err(error) = &retired {
        // A retire given up on may still have landed: ask again. A retry
        // is answered as the first attempt was (`retire` is idempotent).
        events::store_error("retire", error);
        retired = core.store.retire(&old, &new, until, now).await;
    }
    match retired {
        Ok(true) => {
            events::session_rotated(&old, &new);
            Ok(Some(id))
        }
        Ok(false) => {
            // Ended by another request (a logout, logout-everywhere) after
            // this one loaded it: the new session must not outlive it.
            events::session_vanished(&old, Vanished::BeforeMove);
            discard(&core, &new, Orphan::Ended).await;
            Ok(None)
        }
        Err(error) => {
            // Unknown whether the old record was retired: the new one stays
            // (indexed, so logout-everywhere reaches it), lest the user be
            // left with no session at all.
            events::store_error("retire", &error);
            events::session_orphaned(&new, Orphan::RetireUnknown);
            Err(SessionError::Store(error))
        }
    }
}

/// Deletes a just-created session nobody holds a cookie for. If that fails
/// too, it stays (indexed, so logout-everywhere reaches it) until its idle
/// timeout.
async fn discard(core: &Core, key: &StoreKey, why: Orphan) {
    if let Err(error) = core.store.delete(key, core.now()).await {
        events::store_error("delete", &error);
        events::session_orphaned(key, why);
    }
}

/// Ends the least recently active sessions of `user_id` beyond the layer's
/// per-user limit. Only sessions created before `current` are candidates:
/// logins running at the same moment never end each other's new sessions
/// (they may overshoot the limit by their number until the next login).
/// Failures are logged, not reported: the login itself succeeded.
async fn enforce_session_limit(core: &Core, user_id: &str, current: &StoreKey) {
    let Some(limit) = core.config.max_sessions_per_user else {
        return;
    };
    let now = core.now();
    let result = async {
        let sessions = core.store.list_user(user_id, now, usize::MAX).await?;
        if sessions.len() <= limit {
            return Ok(0);
        }
        let excess = sessions.len() - limit;
        let newest = sessions
            .iter()
            .find(|s| s.key == *current)
            .map_or(now, |s| s.created_at);
        let mut older: Vec<_> = sessions
            .iter()
            .filter(|s| s.key != *current && s.created_at < newest)
            .collect();
        older.sort_by_key(|s| (s.last_seen, s.created_at, s.key));
        let mut ended = 0u64;
        for session in older.into_iter().take(excess) {
            if core.store.delete(&session.key, now).await? == Deleted::Session {
                ended += 1;
            }
        }
        Ok::<_, StoreError>(ended)
    }
    .await;
    match result {
        Ok(0) => {}
        Ok(ended) => events::sessions_evicted(ended, limit),
        Err(error) => events::store_error("evict", &error),
    }
}

/// Runs a multi-step store operation so that dropping the request future
/// cannot stop it halfway: on a tokio runtime it runs as its own task, and
/// the flag it is given tells it whether the request was abandoned.
async fn run_to_completion<F, Fut, T>(core: Arc<Core>, operation: F) -> Result<T, SessionError>
where
    F: FnOnce(Arc<Core>, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = Result<T, SessionError>> + Send + 'static,
    T: Send + 'static,
{
    let abandoned = Arc::new(AtomicBool::new(false));
    let task = operation(core, abandoned.clone());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return task.await;
    };
    let mut guard = AbandonOnDrop(Some(abandoned));
    let result = runtime.spawn(task).await;
    guard.0 = None;
    match result {
        Ok(result) => result,
        // The task panicked or the runtime is shutting down: the outcome is
        // unknown, so the request fails closed.
        Err(_) => Err(SessionError::Finished),
    }
}

/// Sets the flag when dropped while still armed: the future awaiting the
/// task was dropped.
struct AbandonOnDrop(Option<Arc<AtomicBool>>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.shared.state.try_lock() {
            Err(_) => "busy".to_owned(),
            Ok(phase) => match &*phase {
                Phase::Unloaded => "unloaded".to_owned(),
                Phase::Blind(_) => "written, not read".to_owned(),
                Phase::Finished | Phase::Planned(_) => "finished".to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    fn id() -> SessionId {
        SessionId::generate().unwrap()
    }

    /// A session loaded from the store, unchanged.
    fn stored() -> Active {
        let id = id();
        let key = id.store_key();
        Active {
            stored: Some((id, key)),
            record: SessionRecord::new(
                at(0),
                time::Duration::seconds(100),
                time::Duration::seconds(1000),
            ),
            patch: Patch::default(),
            touched: false,
            new_id: None,
            remember: false,
            logged_in: false,
            clear_cookie: false,
            ending: false,
        }
    }

    fn new_session() -> Active {
        Active {
            stored: None,
            ..stored()
        }
    }

    fn plan_of(active: Active) -> Plan {
        plan(Phase::Active(active), None, false, || at(10))
    }

    #[test]
    fn an_untouched_session_needs_nothing_and_no_vary() {
        for phase in [Phase::Unloaded, Phase::Finished] {
            assert!(matches!(
                plan(phase, None, false, || at(10)),
                Plan::Cookie {
                    change: CookieChange::Keep,
                    vary: false
                }
            ));
        }
    }

    #[test]
    fn a_read_needs_no_store_call_and_keeps_the_cookie() {
        assert!(matches!(
            plan_of(stored()),
            Plan::Cookie {
                change: CookieChange::Keep,
                vary: true
            }
        ));
    }

    #[test]
    fn a_touched_persistent_session_refreshes_its_cookie_without_a_store_call() {
        let mut active = stored();
        active.touched = true;
        active.record.persistent = true;
        let expected = active.stored.as_ref().unwrap().0.clone();
        match plan_of(active) {
            Plan::Cookie {
                change: CookieChange::Set { id, max_age },
                vary: true,
            } => {
                assert_eq!(id, expected);
                assert_eq!(max_age, Some(time::Duration::seconds(90)));
            }
            other => panic!("{other:?}"),
        }
        let mut not_persistent = stored();
        not_persistent.touched = true;
        assert!(matches!(
            plan_of(not_persistent),
            Plan::Cookie {
                change: CookieChange::Keep,
                ..
            }
        ));
    }

    #[test]
    fn changes_to_a_stored_session_are_saved_and_refresh_only_with_a_new_lifetime() {
        let mut active = stored();
        active.patch.insert("k", Value::from(1));
        assert!(matches!(plan_of(active), Plan::Save { refresh: None, .. }));
        let mut active = stored();
        active.patch.lifetime = Some(Lifetime {
            idle_timeout: time::Duration::seconds(500),
            absolute_deadline: at(2000),
            persistent: true,
        });
        active.record.persistent = true;
        assert!(matches!(
            plan_of(active),
            Plan::Save {
                refresh: Some(Some(_)),
                ..
            }
        ));
    }

    #[test]
    fn a_new_id_for_a_stored_session_moves_it_whole() {
        let mut active = stored();
        let new = id();
        active.new_id = Some(new.clone());
        active.logged_in = true;
        active.patch.insert("ignored", Value::from(1));
        let old = active.stored.as_ref().unwrap().1;
        match plan_of(active) {
            Plan::Rotate {
                old: from,
                id,
                login: true,
                ..
            } => {
                assert_eq!(from, old);
                assert_eq!(id, new);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_session_with_content_is_created_under_its_drawn_id() {
        let mut active = new_session();
        active.record.data.insert("k".into(), Value::from(1));
        let drawn = id();
        active.new_id = Some(drawn.clone());
        match plan_of(active) {
            Plan::Create {
                id: Some(id),
                login: false,
                ..
            } => assert_eq!(id, drawn),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_new_session_stores_nothing_and_clears_a_dead_cookie_only_when_asked() {
        assert!(matches!(
            plan_of(new_session()),
            Plan::Cookie {
                change: CookieChange::Keep,
                vary: true
            }
        ));
        let mut ended = new_session();
        ended.clear_cookie = true;
        assert!(matches!(
            plan_of(ended),
            Plan::Cookie {
                change: CookieChange::Remove,
                ..
            }
        ));
    }

    #[test]
    fn after_a_store_failure_pending_writes_abort_and_nothing_else_does() {
        let mut writes = stored();
        writes.patch.insert("k", Value::from(1));
        assert!(matches!(
            plan(Phase::Active(writes), None, true, || at(10)),
            Plan::Abort
        ));
        let mut moves = stored();
        moves.new_id = Some(id());
        assert!(matches!(
            plan(Phase::Active(moves), None, true, || at(10)),
            Plan::Abort
        ));
        let mut reads = stored();
        reads.clear_cookie = true;
        assert!(matches!(
            plan(Phase::Active(reads), None, true, || at(10)),
            Plan::Cookie {
                change: CookieChange::Remove,
                ..
            }
        ));
        let blind = Phase::Blind(Patch::default());
        assert!(matches!(
            plan(blind, Some(&id()), true, || at(10)),
            Plan::Abort
        ));
    }

    #[test]
    fn blind_writes_are_saved_under_the_cookies_key() {
        let cookie = id();
        match plan(Phase::Blind(Patch::default()), Some(&cookie), false, || {
            at(10)
        }) {
            Plan::SaveBlind { key: saved, .. } => assert_eq!(saved, cookie.store_key()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_no_store_can_hold_is_refused() {
        struct Test {
            name: &'static str,
            key: &'static str,
            value: Value,
            ok: bool,
        }
        let mut deep = Value::from(1);
        for _ in 0..=MAX_VALUE_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let mut shallow = Value::from(1);
        for _ in 0..MAX_VALUE_DEPTH {
            shallow = Value::Array(vec![shallow]);
        }
        let tests = [
            Test {
                name: "plain",
                key: "k",
                value: Value::from("v"),
                ok: true,
            },
            Test {
                name: "control characters",
                key: "k\u{1}",
                value: Value::from("\u{1f}\u{7f}"),
                ok: true,
            },
            Test {
                name: "NUL in the key",
                key: "a\0b",
                value: Value::from(1),
                ok: false,
            },
            Test {
                name: "NUL in a string",
                key: "k",
                value: Value::from("a\0b"),
                ok: false,
            },
            Test {
                name: "NUL deep inside",
                key: "k",
                value: serde_json::json!({"a": [{"b": "\u{0}"}]}),
                ok: false,
            },
            Test {
                name: "NUL in a nested key",
                key: "k",
                value: serde_json::json!({"a\u{0}": 1}),
                ok: false,
            },
            Test {
                name: "64 levels",
                key: "k",
                value: shallow,
                ok: true,
            },
            Test {
                name: "65 levels",
                key: "k",
                value: deep,
                ok: false,
            },
        ];
        for test in tests {
            let result = check_storable(test.key, &test.value);
            assert_eq!(result.is_ok(), test.ok, "{}: {result:?}", test.name);
            if let Err(error) = result {
                assert_eq!(
                    error.status(),
                    http::StatusCode::BAD_REQUEST,
                    "{}",
                    test.name
                );
            }
        }
        assert!(check_user_id("alice").is_ok());
        assert!(check_user_id("a\0b").is_err());
    }

    #[test]
    fn errors_stand_for_their_status() {
        let unavailable = SessionError::Store(StoreError::unavailable("down"));
        assert_eq!(unavailable.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let rejected = SessionError::Store(StoreError::rejected("NUL"));
        assert_eq!(rejected.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(abort(rejected), Abort::Rejected);
        assert_eq!(abort(unavailable), Abort::Unavailable);
        assert_eq!(
            SessionError::Finished.status(),
            http::StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

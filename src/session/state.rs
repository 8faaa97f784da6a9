//! The lazy-load state machine of a [`Session`]: what the request has
//! done with its session so far (nothing, blind writes, a loaded session),
//! loading on first use, and the checks on data before it is written.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::context::RequestContext;
use crate::core::Core;
use crate::error::SessionError;
use crate::events;
use crate::id::{SessionId, StoreKey};
use crate::store::{Lifetime, Patch, SessionRecord, StoreError, Touch};

/// The session of one request.
///
/// Get it as an axum extractor (`Session` or `Option<Session>`), or from the
/// request extensions in plain tower/hyper code. Clones share one state.
///
/// Nothing is read from the store until a method needs it, and nothing is
/// written until the response is on its way out: then the layer writes only
/// what this request changed (a [`Patch`](crate::store::Patch)), and sets or clears the cookie
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
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    /// The request as the layer saw it; other modules reach the layer's
    /// settings through it, never through `core`.
    pub(super) context: RequestContext,
    /// The verified ID from the request's cookie.
    pub(super) cookie_id: Option<SessionId>,
    /// A store call failed: this request writes nothing back.
    pub(super) poisoned: AtomicBool,
    pub(super) state: Mutex<Phase>,
}

impl Session {
    pub(crate) fn new(context: RequestContext, cookie_id: Option<SessionId>) -> Self {
        Self {
            shared: Arc::new(Shared {
                context,
                cookie_id,
                poisoned: AtomicBool::new(false),
                state: Mutex::new(Phase::Unloaded),
            }),
        }
    }

    /// The request as the layer saw it: the door through which the
    /// service, CSRF and the login extractors reach the layer's settings.
    pub(crate) fn context(&self) -> &RequestContext {
        &self.shared.context
    }

    /// What the layer shares with this request's session: for `session/`
    /// only (others go through [`Session::context`]).
    pub(super) fn core(&self) -> &Core {
        self.shared.context.core()
    }

    /// Records a store failure: the request will write nothing back.
    pub(super) fn store_failed(&self, operation: &'static str, error: StoreError) -> SessionError {
        self.shared.poisoned.store(true, Ordering::Relaxed);
        events::store_error(operation, &error);
        SessionError::Store(error)
    }

    pub(super) fn touch(&self, now: OffsetDateTime) -> Touch {
        Touch {
            now,
            after: self.core().config.touch_after,
        }
    }
}

/// Deepest nesting of arrays and objects in a stored value. Deeper values
/// could be written but not read back (JSON parsers cap their recursion),
/// which would lock the session's owner out with errors.
const MAX_VALUE_DEPTH: usize = 64;

// `Active` is kept inline: the whole state then lives in the one allocation
// each request makes for its session, and loading allocates no box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Phase {
    /// Nothing asked yet; no store call made.
    Unloaded,
    /// Only written to, never read, with a cookie: the writes wait in a
    /// patch, sent as one update-only save at commit, with no load.
    Blind(Patch),
    Active(Active),
    /// The response has been committed.
    Finished,
}

pub(super) struct Active {
    /// The stored session this request loaded, if any.
    pub(super) stored: Option<(SessionId, StoreKey)>,
    /// The session as this request sees it, its own changes included.
    pub(super) record: SessionRecord,
    /// This request's changes to the stored session.
    pub(super) patch: Patch,
    /// Loading recorded activity (moved `last_seen`).
    pub(super) touched: bool,
    /// The ID the session gets at commit: set by login and regenerate
    /// (the stored session then moves to it), or drawn early for a new
    /// session that a CSRF token was bound to.
    pub(super) new_id: Option<SessionId>,
    /// The stored session as it was when this request first asked to move
    /// it (login, regenerate): what its old ID gets back if the move is
    /// taken back (the new cookie never reached the browser).
    pub(super) before_move: Option<Box<SessionRecord>>,
    /// `remember_me` was called in this request: a login keeps it.
    pub(super) remember: bool,
    /// A login happened in this request: the commit enforces the
    /// per-user session limit.
    pub(super) logged_in: bool,
    /// The browser holds a cookie that names no live session any more.
    pub(super) clear_cookie: bool,
    /// An ending operation (logout, logout-everywhere) has begun and not
    /// finished: if its store call failed and the handler went on anyway,
    /// the response must not pass for a logout.
    pub(super) ending: bool,
    /// The latest absolute deadline this request allows
    /// ([`Session::expire_login_at`]): a login or remember-me later in the
    /// request never sets a later one.
    pub(super) deadline_cap: Option<OffsetDateTime>,
}

impl Active {
    pub(super) fn fresh(core: &Core, now: OffsetDateTime, clear_cookie: bool) -> Self {
        let config = &core.config;
        let mut record = SessionRecord::new(now, config.idle_timeout, config.absolute_timeout);
        record.persistent = config.persistent;
        Self {
            stored: None,
            record,
            patch: Patch::default(),
            touched: false,
            new_id: None,
            before_move: None,
            remember: false,
            logged_in: false,
            clear_cookie,
            ending: false,
            deadline_cap: None,
        }
    }

    /// Keeps the stored session as it is now, before a first move changes
    /// it: see [`Active::before_move`].
    pub(super) fn keep_before_move(&mut self) {
        if self.stored.is_some() && self.before_move.is_none() {
            self.before_move = Some(Box::new(self.record.clone()));
        }
    }

    pub(super) fn has_content(&self) -> bool {
        !self.record.data.is_empty() || self.record.user_id.is_some()
    }

    /// Whether committing would write anything (a patch, a move or a new
    /// session).
    pub(super) fn has_pending_writes(&self) -> bool {
        self.ending
            || match self.stored {
                Some(_) => !self.patch.is_empty() || self.new_id.is_some(),
                None => self.has_content(),
            }
    }

    /// Applies writes made before the session was loaded, in their order.
    pub(super) fn overlay(&mut self, pending: &Patch) {
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
    pub(super) fn set(&mut self, key: &str, value: Value) {
        if self.stored.is_some() {
            self.patch.insert(key, value.clone());
        }
        self.record.data.insert(key.to_owned(), value);
    }

    pub(super) fn unset(&mut self, key: &str) -> Option<Value> {
        let value = self.record.data.remove(key)?;
        if self.stored.is_some() {
            self.patch.delete(key);
        }
        Some(value)
    }

    /// Gives the record the remember-me lifetime: its own idle window, and
    /// an absolute deadline counted from the session's creation, so that
    /// asking again never extends it.
    pub(super) fn remember(&mut self, core: &Core) {
        let config = &core.config;
        let lifetime = Lifetime {
            idle_timeout: config.remember_idle_timeout,
            // Saturating: a stored record may hold any date.
            absolute_deadline: crate::record::saturating_add(
                self.record.created_at,
                config.remember_absolute_timeout,
            ),
            persistent: true,
        };
        self.record.idle_timeout = lifetime.idle_timeout;
        self.record.absolute_deadline = lifetime.absolute_deadline;
        self.record.persistent = true;
        if self.stored.is_some() && self.new_id.is_none() {
            self.patch.lifetime = Some(lifetime);
        }
        self.apply_deadline_cap();
    }

    /// Brings the record's absolute deadline down to this request's cap
    /// ([`Active::deadline_cap`]), if it lies beyond it; never moves it
    /// later. A stored session that stays at its ID gets the new lifetime
    /// in its patch; a moved or new one is written whole at commit.
    pub(super) fn apply_deadline_cap(&mut self) {
        let Some(cap) = self.deadline_cap else {
            return;
        };
        if self.record.absolute_deadline <= cap {
            return;
        }
        self.record.absolute_deadline = cap;
        if self.stored.is_some() && self.new_id.is_none() {
            self.patch.lifetime = Some(Lifetime {
                idle_timeout: self.record.idle_timeout,
                absolute_deadline: cap,
                persistent: self.record.persistent,
            });
        }
    }

    /// Whether the record carries the remember-me lifetime.
    pub(super) fn is_remembered(&self, core: &Core) -> bool {
        self.record.persistent && self.record.idle_timeout == core.config.remember_idle_timeout
    }
}

/// Checks that every store can hold `value` under `key`: no NUL characters
/// (PostgreSQL's `text` and `jsonb` cannot hold them) and no nesting deeper
/// than JSON parsers read back.
pub(super) fn check_storable(key: &str, value: &Value) -> Result<(), SessionError> {
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

pub(super) fn check_user_id(user_id: &str) -> Result<(), SessionError> {
    if user_id.contains('\0') {
        return Err(SessionError::Unstorable {
            what: "user id",
            reason: "contains a NUL character",
        });
    }
    Ok(())
}

impl Session {
    /// The loaded session, loading it on first use.
    pub(super) async fn active(&self) -> Result<MappedMutexGuard<'_, Active>, SessionError> {
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

    pub(super) async fn load(&self) -> Result<Active, SessionError> {
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
            before_move: None,
            remember: false,
            logged_in: false,
            clear_cookie: false,
            ending: false,
            deadline_cap: None,
        })
    }

    /// Records a write without loading, when the session has not been read
    /// and the request carries a cookie (blind write). Returns `None` when
    /// the write was recorded, or gives `value` back for the loaded path.
    pub(super) async fn write_blind<V>(
        &self,
        write: impl FnOnce(&mut Patch, V),
        value: V,
    ) -> Option<V> {
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

    /// Replaces the session with a new empty one, and expires the cookie if
    /// the browser holds one.
    pub(super) fn reset(&self, active: &mut Active) {
        let clear_cookie = self.shared.cookie_id.is_some() || active.clear_cookie;
        *active = Active::fresh(self.core(), self.core().now(), clear_cookie);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let nest_objects = |levels: usize| {
            let mut value = Value::from(1);
            for _ in 0..levels {
                value = serde_json::json!({ "a": value });
            }
            value
        };
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
            Test {
                name: "64 levels of objects",
                key: "k",
                value: nest_objects(MAX_VALUE_DEPTH),
                ok: true,
            },
            Test {
                name: "65 levels of objects",
                key: "k",
                value: nest_objects(MAX_VALUE_DEPTH + 1),
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
}

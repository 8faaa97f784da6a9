//! The end of a request: what its session's end state needs (a [`Plan`],
//! decided by the pure function [`plan`]), and carrying that out in the
//! store. The plan is made once: the synchronous fast path and the async
//! commit both use it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

use super::state::{Active, Phase};
use super::Session;
use crate::core::Core;
use crate::error::SessionError;
use crate::events::{self, Orphan, Vanished};
use crate::id::{SessionId, StoreKey};
use crate::store::{Deleted, Patch, SessionInfo, SessionRecord, StoreError};

/// How many fresh IDs are tried when `create` reports a collision. With
/// 128-bit random IDs a single collision is already astronomically
/// unlikely; repeated ones mean a broken store or RNG.
const MAX_CREATE_ATTEMPTS: usize = 3;

/// How long a retired ID keeps pointing at its successor: a logout sent
/// with the old cookie within this time (a request that started before the
/// rotation) ends the new session too.
const FORWARD_GRACE: time::Duration = time::Duration::minutes(5);

/// How many times a move asks the store to retire the old record before
/// it gives up: a retire given up on (a timeout) may have landed, and each
/// attempt that gets an answer settles it.
const RETIRE_ATTEMPTS: usize = 3;

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

/// What the layer must add to the response: the session knows what the
/// cookie must become; `cookie.rs` turns that into a header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) cookie: CookieAction,
    /// The session was read, so the response depends on the cookie.
    pub(crate) vary: bool,
}

/// What the browser's cookie must become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieAction {
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

/// How a request's session ends: with what the response needs, or with
/// store work to do first.
#[derive(Debug)]
pub(crate) enum Finish {
    /// No store call: the response needs only this.
    Done(Outcome),
    /// Store work: run [`Session::commit`] with this plan (`None` when the
    /// session was busy and the plan is made there).
    Commit(Option<Plan>),
}

/// What a commit must do, decided from the request's end state alone by
/// [`plan`]; the async code only carries it out.
#[derive(Debug)]
pub(crate) enum Plan {
    /// No store call: change the cookie (or not) and finish.
    Cookie { change: CookieAction, vary: bool },
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
    /// Move the stored session under `old` to `id`; `previous` is what
    /// `old` gets back if the move is taken back.
    Rotate {
        old: StoreKey,
        id: SessionId,
        record: SessionRecord,
        previous: Option<Box<SessionRecord>>,
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
                change: CookieAction::Keep,
                vary: false,
            }
        }
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
                    change: CookieAction::Keep,
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
            previous: active.before_move,
            login: active.logged_in,
        },
        (Some((id, key)), None) => {
            // A persistent cookie's `Max-Age` follows the deadline.
            let refresh = (active.patch.lifetime.is_some()
                || (active.touched && active.record.persistent))
                .then_some(max_age);
            if active.patch.is_empty() {
                let change = match refresh {
                    Some(max_age) => CookieAction::Set { id, max_age },
                    None => CookieAction::Keep,
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

fn removal_if(clear: bool) -> CookieAction {
    if clear {
        CookieAction::Remove
    } else {
        CookieAction::Keep
    }
}

impl Session {
    /// Decides what the response needs. Most requests (untouched, only
    /// read, or a new session that stays empty) need no store call and are
    /// [`Finish::Done`] here, synchronously; the rest hand their plan to
    /// [`Session::commit`]. The plan is made once.
    pub(crate) fn finish(&self) -> Finish {
        let Ok(mut phase) = self.shared.state.try_lock() else {
            // A clone still works on the session (a task the handler
            // spawned): the commit waits for it.
            return Finish::Commit(None);
        };
        let ended = std::mem::replace(&mut *phase, Phase::Finished);
        let poisoned = self.shared.poisoned.load(Ordering::Relaxed);
        let cookie_id = self.shared.cookie_id.as_ref();
        match plan(ended, cookie_id, poisoned, || self.core().now()) {
            Plan::Cookie { change, vary } => Finish::Done(Outcome {
                cookie: change,
                vary,
            }),
            other => Finish::Commit(Some(other)),
        }
    }

    /// Writes this request's changes (the plan [`Session::finish`] made,
    /// or, without one, a plan made now) and says what the response needs.
    /// Afterwards the handle is finished.
    pub(crate) async fn commit(&self, planned: Option<Plan>) -> Result<Outcome, Abort> {
        let now = self.core().now();
        let plan = match planned {
            Some(plan) => plan,
            None => {
                let ended =
                    std::mem::replace(&mut *self.shared.state.lock().await, Phase::Finished);
                let poisoned = self.shared.poisoned.load(Ordering::Relaxed);
                plan(ended, self.shared.cookie_id.as_ref(), poisoned, || now)
            }
        };
        self.execute(plan, now).await
    }

    /// Carries out a plan.
    async fn execute(&self, plan: Plan, now: OffsetDateTime) -> Result<Outcome, Abort> {
        let core = self.core();
        let max_age = |record: &SessionRecord| record.persistent.then(|| record.expires_at() - now);
        let change = match plan {
            Plan::Abort => return Err(Abort::Unavailable),
            Plan::Cookie { change, vary } => {
                return Ok(Outcome {
                    cookie: change,
                    vary,
                })
            }
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
                    Some(max_age) if saved => CookieAction::Set { id, max_age },
                    _ => CookieAction::Keep,
                }
            }
            Plan::SaveBlind { key, patch } => {
                let saved = core
                    .store
                    .save(&key, &patch, self.touch(now))
                    .await
                    .map_err(|e| abort(self.store_failed("save", e)))?;
                if saved {
                    return Ok(Outcome {
                        cookie: CookieAction::Keep,
                        vary: true,
                    });
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
                    return Ok(Outcome {
                        cookie: CookieAction::Keep,
                        vary: true,
                    });
                }
                // The session is gone (expired, logged out): the writes
                // start a new session under a new ID, as they would have
                // after a load that found nothing; the old ID is never
                // revived.
                let mut fresh = Active::fresh(core, now, true);
                fresh.overlay(&patch);
                if !fresh.has_content() {
                    return Ok(Outcome {
                        cookie: CookieAction::Remove,
                        vary: true,
                    });
                }
                let id = create(core, None, &fresh.record, now)
                    .await
                    .map_err(|e| abort(self.session_failed(e)))?;
                CookieAction::Set {
                    id,
                    max_age: max_age(&fresh.record),
                }
            }
            Plan::Create { id, record, login } => {
                let id = create(core, id, &record, now)
                    .await
                    .map_err(|e| abort(self.session_failed(e)))?;
                let user_id = record.user_id.as_deref().filter(|_| login);
                logged_in_cookie(core, user_id, id, max_age(&record)).await
            }
            Plan::Rotate {
                old,
                id,
                record,
                previous,
                login,
            } => {
                let max_age = max_age(&record);
                let user_id = record.user_id.clone().filter(|_| login);
                let moved = run_to_completion(
                    self.shared.context.core().clone(),
                    move |core, abandoned| rotate(core, old, id, record, previous, abandoned),
                )
                .await
                .map_err(|e| abort(self.session_failed(e)))?;
                match moved {
                    Some((id, take_back)) => {
                        let cookie = logged_in_cookie(core, user_id.as_deref(), id, max_age).await;
                        // From here the response carries the new cookie
                        // (or, outranked by the limit, ends without one).
                        take_back.disarm();
                        cookie
                    }
                    // The session ended while the request ran: the request
                    // ends without one. The cookie is left alone, since the
                    // request that ended it may have set a newer one.
                    None => CookieAction::Keep,
                }
            }
        };
        Ok(Outcome {
            cookie: change,
            vary: true,
        })
    }

    /// Marks the request as failed (nothing more is written) and passes
    /// `error` on; store errors were logged where they happened.
    fn session_failed(&self, error: SessionError) -> SessionError {
        self.shared.poisoned.store(true, Ordering::Relaxed);
        error
    }
}

fn abort(error: SessionError) -> Abort {
    match error {
        SessionError::Store(e) if e.is_rejected() => Abort::Rejected,
        SessionError::Unstorable { .. } => Abort::Rejected,
        _ => Abort::Unavailable,
    }
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
/// old one retired with a forward. Returns the ID the session now has, with
/// the [`TakeBack`] that undoes the move if the response never carries the
/// new cookie; or `None` when the old session had ended meanwhile (the new
/// record is then deleted again). On a failure, or when the request was
/// abandoned, the new record is deleted again and `old` keeps its session
/// (see [`take_back`]).
async fn rotate(
    core: Arc<Core>,
    old: StoreKey,
    id: SessionId,
    record: SessionRecord,
    previous: Option<Box<SessionRecord>>,
    abandoned: Arc<AtomicBool>,
) -> Result<Option<(SessionId, TakeBack)>, SessionError> {
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
    for _ in 1..RETIRE_ATTEMPTS {
        let Err(error) = &retired else { break };
        // A retire given up on may still have landed: ask again. A retry
        // is answered as the first attempt was (`retire` is idempotent),
        // and only an answer tells a move that landed from a session that
        // ended meanwhile.
        events::store_error("retire", error);
        retired = core.store.retire(&old, &new, until, now).await;
    }
    let take_back = TakeBack {
        core: core.clone(),
        old,
        new,
        previous,
    };
    match retired {
        Ok(true) => {
            events::session_rotated(&old, &new);
            if abandoned.load(Ordering::Acquire) {
                // Dropped while the retire was in flight.
                take_back.now().await;
                return Err(SessionError::Finished);
            }
            Ok(Some((id, take_back)))
        }
        Ok(false) => {
            // Ended by another request (a logout, logout-everywhere) after
            // this one loaded it: the new session must not outlive it.
            take_back.disarm();
            events::session_vanished(&old, Vanished::BeforeMove);
            discard(&core, &new, Orphan::Ended).await;
            Ok(None)
        }
        Err(error) => {
            // Unknown whether the old record was retired: the take-back
            // finds out. A retire that landed is undone (the browser keeps
            // the old cookie, so it keeps its session); one that did not
            // leaves the old session as it was. Either way no new cookie
            // goes out, and the new record goes.
            events::store_error("retire", &error);
            take_back.now().await;
            Err(SessionError::Store(error))
        }
    }
}

/// A move whose new cookie is not yet in the response. Dropped while armed
/// (the request was dropped after the retire), it takes the move back in
/// a task of its own: the browser still holds the old cookie.
struct TakeBack {
    core: Arc<Core>,
    old: StoreKey,
    new: StoreKey,
    /// `None` once disarmed, or for a move with no record to give back.
    previous: Option<Box<SessionRecord>>,
}

impl TakeBack {
    /// The response carries the outcome: nothing to take back.
    fn disarm(mut self) {
        self.previous = None;
    }

    /// Takes the move back now.
    async fn now(mut self) {
        match self.previous.take() {
            Some(previous) => take_back(&self.core, &self.old, &self.new, &previous).await,
            None => events::session_orphaned(&self.new, Orphan::RetireUnknown),
        }
    }
}

impl Drop for TakeBack {
    fn drop(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            events::session_orphaned(&self.new, Orphan::Abandoned);
            return;
        };
        let (core, old, new) = (self.core.clone(), self.old, self.new);
        runtime.spawn(async move { take_back(&core, &old, &new, &previous).await });
    }
}

/// Undoes a move whose new cookie never reached the browser, so that the
/// old ID, which the browser still holds, keeps a session: `old` gets
/// `previous` back if it still holds the forward to `new`, then `new` is
/// deleted. If `new` had ended meanwhile (a logout, logout-everywhere,
/// the per-user limit), `old` ends again too: what ended stays ended. The
/// old ID never reaches `new`'s data, only its own.
async fn take_back(core: &Core, old: &StoreKey, new: &StoreKey, previous: &SessionRecord) {
    let now = core.now();
    match core.store.restore(old, new, previous, now).await {
        Ok(true) => {}
        // The retire never landed (the old session is as it was), or the
        // old session ended since: the new one goes either way.
        Ok(false) => return discard(core, new, Orphan::Abandoned).await,
        Err(error) => {
            events::store_error("restore", &error);
            return events::session_orphaned(new, Orphan::RetireUnknown);
        }
    }
    match core.store.delete(new, now).await {
        Ok(Deleted::Session) => events::rotation_taken_back(old, new),
        Ok(_) => {
            events::session_vanished(new, Vanished::BeforeTakeBack);
            if let Err(error) = core.store.delete(old, now).await {
                events::store_error("delete", &error);
            }
        }
        Err(error) => {
            events::store_error("delete", &error);
            events::session_orphaned(new, Orphan::Abandoned);
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

/// The cookie for the session a request stored under `id`: after a login
/// (`user_id`), once the per-user limit is applied, and none when logins
/// at the same moment outranked it (the request ends without a session).
async fn logged_in_cookie(
    core: &Core,
    user_id: Option<&str>,
    id: SessionId,
    max_age: Option<time::Duration>,
) -> CookieAction {
    if let Some(user_id) = user_id {
        if !enforce_session_limit(core, user_id, &id.store_key()).await {
            return CookieAction::Keep;
        }
    }
    CookieAction::Set { id, max_age }
}

/// Ends the least recently active sessions of `user_id` beyond the layer's
/// per-user limit, after the login that stored `current`. Which ones go is
/// decided by [`beyond_the_limit`]. Returns whether `current` is still
/// live: `false` when logins at the same moment outranked it. Failures are
/// logged, not reported: the login itself succeeded (the next login trims).
async fn enforce_session_limit(core: &Core, user_id: &str, current: &StoreKey) -> bool {
    let Some(limit) = core.config.max_sessions_per_user else {
        return true;
    };
    let now = core.now();
    let mut kept = true;
    let result = async {
        let sessions = core.store.list_user(user_id, now, usize::MAX).await?;
        let (beyond, listed) = beyond_the_limit(&sessions, current, limit);
        // Listed after it was stored, so missing means ended meanwhile.
        kept = listed;
        let mut ended = 0u64;
        for key in beyond {
            if core.store.delete(&key, now).await? == Deleted::Session {
                ended += 1;
            }
            if key == *current {
                kept = false;
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
    kept
}

/// The sessions a login's limit check ends: all but the first `limit` in
/// one total order, most recent activity first, then most recently
/// created, then by store key (whole seconds tie often; the key is
/// arbitrary but the same for every request). Also says whether `current`
/// (the session the login stored) was listed at all.
///
/// Every check agrees on the order, so checks that run at once end the
/// same sessions, and once a burst of logins has finished the user has
/// exactly the first `limit` of all their sessions (the check that lists
/// last sees every session of the burst, since each login stores its
/// session before it lists). A login's own session ranks first unless
/// another was active in the same second, so only logins within one second
/// of each other can outrank one another.
fn beyond_the_limit(
    sessions: &[SessionInfo],
    current: &StoreKey,
    limit: usize,
) -> (Vec<StoreKey>, bool) {
    let listed = sessions.iter().any(|s| s.key == *current);
    if sessions.len() <= limit {
        return (Vec::new(), listed);
    }
    let mut ranked: Vec<&SessionInfo> = sessions.iter().collect();
    ranked.sort_by(|a, b| {
        (b.last_seen, b.created_at, b.key).cmp(&(a.last_seen, a.created_at, a.key))
    });
    (ranked[limit..].iter().map(|s| s.key).collect(), listed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Lifetime;
    use serde_json::Value;

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
                std::time::Duration::from_secs(100),
                std::time::Duration::from_secs(1000),
            ),
            patch: Patch::default(),
            touched: false,
            new_id: None,
            before_move: None,
            remember: false,
            logged_in: false,
            clear_cookie: false,
            ending: false,
            deadline_cap: None,
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
                    change: CookieAction::Keep,
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
                change: CookieAction::Keep,
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
                change: CookieAction::Set { id, max_age },
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
                change: CookieAction::Keep,
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
            idle_timeout: std::time::Duration::from_secs(500),
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
                change: CookieAction::Keep,
                vary: true
            }
        ));
        let mut ended = new_session();
        ended.clear_cookie = true;
        assert!(matches!(
            plan_of(ended),
            Plan::Cookie {
                change: CookieAction::Remove,
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
                change: CookieAction::Remove,
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

    /// A listed session of one user: its key byte, when it was created and
    /// last seen (seconds).
    fn listed(byte: u8, created: i64, seen: i64) -> SessionInfo {
        let mut record = SessionRecord::new(
            at(created),
            std::time::Duration::from_secs(1000),
            std::time::Duration::from_secs(10_000),
        );
        record.last_seen = at(seen);
        record.user_id = Some("alice".into());
        record.info(StoreKey::from_bytes([byte; 32]))
    }

    #[test]
    fn the_limit_keeps_the_first_sessions_in_one_order_every_login_agrees_on() {
        struct Case {
            name: &'static str,
            sessions: Vec<SessionInfo>,
            current: u8,
            limit: usize,
            ended: Vec<u8>,
            listed: bool,
        }
        let cases = [
            Case {
                name: "within the limit",
                sessions: vec![listed(1, 0, 0), listed(2, 1, 1)],
                current: 2,
                limit: 2,
                ended: vec![],
                listed: true,
            },
            Case {
                name: "least recently active first, then least recently created",
                sessions: vec![
                    listed(1, 0, 50),
                    listed(2, 5, 10),
                    listed(3, 3, 10),
                    listed(4, 60, 60),
                ],
                current: 4,
                limit: 2,
                ended: vec![2, 3],
                listed: true,
            },
            Case {
                name: "a burst within one second: ties go by key, never all exempt",
                sessions: (1..=6).map(|b| listed(b, 7, 7)).collect(),
                current: 2,
                limit: 3,
                ended: vec![1, 2, 3],
                listed: true,
            },
            Case {
                name: "the same answer for every login of the burst",
                sessions: (1..=6).map(|b| listed(b, 7, 7)).collect(),
                current: 6,
                limit: 3,
                ended: vec![1, 2, 3],
                listed: true,
            },
            Case {
                name: "a login a second later ranks first",
                sessions: vec![listed(9, 7, 7), listed(8, 7, 7), listed(1, 8, 8)],
                current: 1,
                limit: 1,
                ended: vec![9, 8],
                listed: true,
            },
            Case {
                name: "a current session missing from the listing ended meanwhile",
                sessions: vec![listed(1, 0, 0), listed(2, 1, 1), listed(3, 2, 2)],
                current: 7,
                limit: 2,
                ended: vec![1],
                listed: false,
            },
        ];
        for case in cases {
            let (ended, listed) = beyond_the_limit(
                &case.sessions,
                &StoreKey::from_bytes([case.current; 32]),
                case.limit,
            );
            let mut ended: Vec<u8> = ended.iter().map(|k| k.as_bytes()[0]).collect();
            let mut expected = case.ended.clone();
            ended.sort_unstable();
            expected.sort_unstable();
            assert_eq!(ended, expected, "{}", case.name);
            assert_eq!(listed, case.listed, "{}", case.name);
        }
    }

    #[test]
    fn store_failures_abort_by_their_kind() {
        let rejected = SessionError::Store(StoreError::rejected("NUL"));
        let unavailable = SessionError::Store(StoreError::unavailable("down"));
        assert_eq!(abort(rejected), Abort::Rejected);
        assert_eq!(abort(unavailable), Abort::Unavailable);
        let unstorable = SessionError::Unstorable {
            what: "value",
            reason: "contains a NUL character",
        };
        assert_eq!(abort(unstorable), Abort::Rejected);
    }
}

//! The session lifecycle: login, regenerate, logout, logout-everywhere,
//! listing and counting a user's sessions, remember-me, and the one hook
//! CSRF protection uses.

use serde_json::Map;

use super::state::{check_user_id, Active, Phase};
use super::Session;
use crate::core::LIST_LIMIT;
use crate::error::SessionError;
use crate::events::{self, EndReason, Vanished};
use crate::id::{RandomnessError, SessionHandle, SessionId, StoreKey};
use crate::store::{Deleted, DynStore, Patch, SessionInfo, SessionRecord, StoreError};
use time::OffsetDateTime;

/// What a CSRF token is wanted for (see [`Session::token_id`]).
#[cfg(feature = "csrf")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenPurpose {
    /// A token to render: bound to the ID the browser holds after this
    /// response (the new one after a login or regenerate in this request;
    /// for a new session with content, drawn now). `None` for a visitor
    /// without a session, and asking creates none.
    Render,
    /// Checking a token against the request's cookie, without a store
    /// call: the ID it carries, live or not.
    Cookie,
    /// The ID the request's cookie carries, only if it names a live
    /// session (loads it).
    LiveCookie,
}

/// How many forwards a logout follows (a session rotated several times
/// within the grace time).
const MAX_FORWARD_HOPS: usize = 8;

impl Session {
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
    /// request, or the session it replaces was a remembered session of the
    /// same user) and is indexed under `user_id` for
    /// [`Session::logout_everywhere`]. When the user then has more sessions
    /// than the layer allows, their least recently active ones end.
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
        active.keep_before_move();
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
        // Remember-me asked for in this request, or kept from the same
        // user's remembered session: never from an anonymous session (which
        // may have been planted) nor from another user's.
        let relogin = active.record.user_id.as_deref() == Some(user_id.as_str());
        let remember = active.remember || (relogin && active.is_remembered(core));
        let now = core.now();
        let mut record =
            SessionRecord::new(now, core.config.idle_timeout, core.config.absolute_timeout);
        record.persistent = core.config.persistent;
        record.data = data;
        record.user_id = Some(user_id);
        record.device = self.shared.context.origin().device();
        active.record = record;
        // The whole record is written under the new ID at commit.
        active.patch = Patch::default();
        active.touched = false;
        active.new_id = Some(new_id);
        active.logged_in = true;
        if remember {
            active.remember(core);
        }
        active.apply_deadline_cap();
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
        active.keep_before_move();
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
    #[doc(alias = "logout")]
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
                end_chain(
                    &*self.core().store,
                    self.core().now(),
                    key,
                    None,
                    EndReason::Logout,
                    !surely_ended,
                )
                .await
                .map_err(|e| self.store_failed("delete", e))?
                .is_some(),
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

    /// The logged-in user's live sessions, most recently active first (at
    /// most the 1,000 most recently created), with this one marked
    /// [`SessionInfo::current`]: the list for a "your devices" page, each
    /// entry with its [`handle`](SessionInfo::handle) for
    /// [`Session::logout_device`] and its [`device`](SessionInfo::device).
    /// Empty when anonymous. A session this request logs in or moves is
    /// stored only when the response goes out, so it is listed from the
    /// next request on.
    ///
    /// The current session's [`last_seen`](SessionInfo::last_seen) is this
    /// request's time (the layer's clock), and it comes first: stores move
    /// `last_seen` only once per touch interval
    /// ([`touch_after`](crate::SessionLayerBuilder::touch_after)), and a
    /// device page would otherwise show the device in hand as last seen
    /// minutes ago. The others show what the store recorded, in the same
    /// total order as [`SessionAdmin::list_sessions`](crate::SessionAdmin::list_sessions)
    /// (latest activity, then latest creation, then store key).
    ///
    /// Every call reads the store, also a
    /// [`RedisStore`](crate::store::RedisStore) with a local cache (which
    /// serves only reads of one session).
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
            .list_user(user_id, now, LIST_LIMIT)
            .await
            .map_err(|e| self.store_failed("list_user", e))?;
        if let Some((_, current)) = &active.stored {
            for session in &mut sessions {
                session.current = session.key == *current;
                // The store moves `last_seen` once per touch interval, but
                // this device is active now: this very request.
                if session.current {
                    session.last_seen = session.last_seen.max(now);
                }
            }
        }
        most_recent_first(&mut sessions);
        // This request is the latest activity there is: a session active in
        // the same whole second ties with it on time and must not rank
        // above it.
        if let Some(at) = sessions.iter().position(|s| s.current) {
            sessions[..=at].rotate_right(1);
        }
        Ok(sessions)
    }

    /// Ends one of the logged-in user's own sessions, named by the
    /// [`handle`](SessionInfo::handle) of its [`list_sessions`](Self::list_sessions)
    /// entry: "sign out this device". The device's next request is
    /// anonymous. Ending the current session is the same as
    /// [`Session::invalidate`].
    ///
    /// A handle names a session at one ID. When the device logged in again
    /// as the same user, or regenerated, after the page listed it (or does
    /// so while this call runs), the end follows it to its new ID, for as
    /// long as the old ID leads there (five minutes after the move): the
    /// device is signed out all the same. If the handle leads to this very
    /// session, that is a logout here. When the device logged in as
    /// *another* user instead, the session the handle led to now belongs
    /// to them: nothing ends, and the handle is refused as unknown.
    ///
    /// # Security
    ///
    /// The handle comes from the client, so the store ends the session
    /// only if it is the user's own, checking whose it is in the same
    /// atomic step that deletes it
    /// ([`SessionStore::delete_owned`](crate::store::SessionStore::delete_owned)),
    /// at every ID it follows. No check made beforehand can be outrun: a
    /// device that logs in as another user while this call runs keeps that
    /// user's new session. A handle of another user's session, an ended
    /// one or one never issued is refused the same way, so the answer
    /// tells nothing about sessions that are not the user's.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoggedIn`] for an anonymous session,
    /// [`SessionError::UnknownSession`] for a handle that leads to none of
    /// the user's live sessions (nothing is ended then), and
    /// [`SessionError::Store`] when the store fails.
    pub async fn logout_device(&self, handle: &SessionHandle) -> Result<(), SessionError> {
        let key = *handle.store_key();
        let mut active = self.active().await?;
        let Some(user_id) = active.record.user_id.clone() else {
            return Err(SessionError::NotLoggedIn);
        };
        let current = active.stored.as_ref().map(|(_, key)| *key);
        if current == Some(key) {
            drop(active);
            return self.invalidate().await;
        }
        // The store checks the owner as it deletes, at every hop: a
        // forward names no user, the session it leads to does.
        let ended = end_chain(
            &*self.core().store,
            self.core().now(),
            key,
            Some(&user_id),
            EndReason::Device,
            false,
        )
        .await
        .map_err(|e| self.store_failed("delete", e))?;
        match ended {
            None => Err(SessionError::UnknownSession),
            // A handle of this session from before it moved to its current
            // ID: the session is gone, so this request logs out.
            Some(ended) if Some(ended) == current => {
                self.reset(&mut active);
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// How many live sessions the logged-in user has (0 when anonymous),
    /// without reading their data: for "signed in on N devices" displays.
    ///
    /// Every call asks the store, also on a
    /// [`RedisStore`](crate::store::RedisStore) with a local cache, which
    /// serves only reads of one session: the count (like
    /// [`list_sessions`](Self::list_sessions)) always reads Redis, so it
    /// is exact after a logout or a revocation on any instance. A page that
    /// shows it on every view pays that store call on every view; keep it
    /// to the pages that need it.
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

    /// Makes the login of this request a "remember me" login: its cookie
    /// becomes persistent (`Max-Age`) so that it survives a browser
    /// restart, it may go unused for the layer's remember-me idle timeout
    /// (7 days by default; it keeps rolling with activity), and it lives at
    /// most the remember-me absolute timeout (30 days by default) counted
    /// from the login. Call it in the request that logs in, before or after
    /// [`Session::login`]; later logins of the same user keep it.
    ///
    /// # Security
    ///
    /// In a request without a login it changes nothing: only the act of
    /// logging in (entering a password) may give a session the longer
    /// lifetime, so whoever holds a session cookie cannot stretch it (ASVS
    /// 7.3.2). An anonymous session is never remembered, and its lifetime is
    /// not carried into a login.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn remember_me(&self) -> Result<(), SessionError> {
        let mut active = self.active().await?;
        active.remember = true;
        // Before a login, the login applies it; without one, nothing does.
        if active.logged_in {
            active.remember(self.core());
        }
        Ok(())
    }

    /// The session ID a CSRF token is bound to, for `purpose`: the one
    /// hook CSRF protection (`csrf/`) has into the session.
    #[cfg(feature = "csrf")]
    pub(crate) async fn token_id(
        &self,
        purpose: TokenPurpose,
    ) -> Result<Option<SessionId>, SessionError> {
        match purpose {
            TokenPurpose::Cookie => Ok(self.shared.cookie_id.clone()),
            TokenPurpose::LiveCookie => {
                let live = self.active().await?.stored.is_some();
                Ok(self.shared.cookie_id.clone().filter(|_| live))
            }
            TokenPurpose::Render => {
                let mut active = self.active().await?;
                Ok(render_binding(&mut active)?)
            }
        }
    }

    /// [`TokenPurpose::Render`] without waiting, for a token rendered from
    /// the handler's own thread (its `Display`): `None` when that cannot
    /// be told now (the session is busy in another task, or was never
    /// loaded), else the binding, as the async form gives it.
    #[cfg_attr(not(feature = "csrf"), allow(dead_code))]
    pub(crate) fn render_binding_now(&self) -> Option<Result<Option<SessionId>, SessionError>> {
        let mut phase = self.shared.state.try_lock().ok()?;
        match &mut *phase {
            Phase::Active(active) => Some(render_binding(active).map_err(SessionError::from)),
            _ => None,
        }
    }

    /// Ends the session under `key`, following forwards: a session another
    /// request moved to a new ID after this one loaded it ends under its
    /// new ID. Returns whether a live session ended.
    async fn end(&self, key: StoreKey, reason: EndReason) -> Result<bool, SessionError> {
        let ended = end_following_forwards(&*self.core().store, self.core().now(), key, reason)
            .await
            .map_err(|e| self.store_failed("delete", e))?;
        Ok(ended)
    }
}

/// The ID a token rendered now is bound to: the one the browser holds
/// after this response (the new one after a login or regenerate in this
/// request; for a new session with content, drawn now and kept as the ID
/// it will be stored under), or `None` for a visitor without a session
/// (asking creates none).
#[cfg_attr(not(feature = "csrf"), allow(dead_code))]
fn render_binding(active: &mut Active) -> Result<Option<SessionId>, RandomnessError> {
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

/// Sorts a listing for display: most recent activity first, then the most
/// recently created, then by key so that the order is stable.
pub(crate) fn most_recent_first(sessions: &mut [SessionInfo]) {
    sessions.sort_by(|a, b| {
        (b.last_seen, b.created_at)
            .cmp(&(a.last_seen, a.created_at))
            .then(a.key.cmp(&b.key))
    });
}

/// Ends the session under `key`, following forwards left by logins and
/// regenerates to the session they lead to. Returns whether a live session
/// ended. Forwards stay in place (they lapse by themselves), so a logout
/// that fails halfway can be retried with the same old ID.
pub(crate) async fn end_following_forwards(
    store: &dyn DynStore,
    now: OffsetDateTime,
    key: StoreKey,
    reason: EndReason,
) -> Result<bool, StoreError> {
    Ok(end_chain(store, now, key, None, reason, true)
        .await?
        .is_some())
}

/// [`end_following_forwards`], returning the key of the session that ended, if one
/// did. With `owner`, only a session of that user ends: each hop is a
/// [`DynStore::delete_owned`], so the owner is checked by the store in the
/// step that deletes, at the key the chain ends on (forwards belong to
/// nobody). `report_gone` says whether finding nothing is worth a
/// `session_vanished` event (not when the caller only checks for a move,
/// nor when nothing ending is an answer of its own).
async fn end_chain(
    store: &dyn DynStore,
    now: OffsetDateTime,
    key: StoreKey,
    owner: Option<&str>,
    reason: EndReason,
    report_gone: bool,
) -> Result<Option<StoreKey>, StoreError> {
    let delete = |key: StoreKey| async move {
        match owner {
            Some(user_id) => store.delete_owned(&key, user_id, now).await,
            None => store.delete(&key, now).await,
        }
    };
    let origin = key;
    let mut key = key;
    let mut ended = None;
    for _ in 0..MAX_FORWARD_HOPS {
        match delete(key).await? {
            Deleted::Session => {
                events::session_invalidated(&key, reason);
                ended = Some(key);
                break;
            }
            Deleted::Forward(successor) => {
                events::session_forwarded(&key, &successor, reason);
                key = successor;
            }
            _ => break,
        }
    }
    if key != origin {
        // The move this forward recorded may have been taken back while
        // the chain was followed (its request was dropped, so the old ID
        // got its session back): the origin then holds a session again,
        // and it ends too.
        if delete(origin).await? == Deleted::Session {
            events::session_invalidated(&origin, reason);
            ended = ended.or(Some(origin));
        }
    }
    if ended.is_none() && report_gone {
        events::session_vanished(&key, Vanished::BeforeEnd(reason));
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SessionRecord;
    use std::time::Duration as StdDuration;
    use time::Duration;

    #[test]
    fn listings_put_the_latest_activity_first_then_the_latest_created_then_by_key() {
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let at = |secs: i64| t0 + Duration::seconds(secs);
        let info = |byte: u8, created: i64, seen: i64| {
            let mut record = SessionRecord::new(
                at(created),
                StdDuration::from_secs(60),
                StdDuration::from_secs(600),
            );
            record.last_seen = at(seen);
            record.info(StoreKey::from_bytes([byte; 32]))
        };
        // Oldest activity first, ties in the wrong order.
        let mut listed = vec![
            info(1, 0, 5),
            info(4, 2, 9),
            info(3, 3, 9),
            info(2, 1, 30),
            info(5, 3, 9),
        ];
        most_recent_first(&mut listed);
        let order: Vec<u8> = listed.iter().map(|s| s.key.as_bytes()[0]).collect();
        assert_eq!(order, [2, 3, 5, 4, 1]);
    }
}

//! [`SessionAdmin`]: session management from outside a request.
//!
//! # Example
//!
//! ```
//! use cloakroom::{Key, MemoryStore, SessionAdmin, SessionLayer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let layer = SessionLayer::builder(MemoryStore::new()).key(Key::generate()?).build()?;
//! let admin = layer.admin();
//!
//! // After a password change, or when an administrator locks an account:
//! let ended = admin.logout_everywhere("user-42").await?;
//! assert_eq!(ended, 0);
//!
//! // An operations tool that runs outside the web app needs only the
//! // store: no signing key.
//! let admin = SessionAdmin::new(MemoryStore::new());
//! assert!(admin.list_sessions("user-42").await?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::clock::{truncate_to_seconds, Clock, SystemClock};
use crate::config::DEFAULT_STORE_TIMEOUT;
use crate::core::LIST_LIMIT;
use crate::id::StoreKey;
use crate::record::SessionInfo;
use crate::store::{Bounded, DynStore, SessionStore, StoreError, Touch};

/// A cloneable handle to a session store, for use anywhere in the app
/// (background jobs, admin endpoints, password-change handlers) and in
/// tools that run outside it.
///
/// In the app, get one with [`SessionLayer::admin`](crate::SessionLayer::admin):
/// it shares the layer's store, clock and store timeout. An operations
/// tool (a CLI that ends a user's sessions, say) makes one from the store
/// alone with [`SessionAdmin::new`]: no signing key is involved, since no
/// cookie is read or written.
#[derive(Clone)]
pub struct SessionAdmin {
    store: Arc<dyn DynStore>,
    clock: Arc<dyn Clock>,
}

impl SessionAdmin {
    /// A handle on `store` alone, with the system clock and the layer's
    /// default 3-second limit on each store call.
    pub fn new<S: SessionStore>(store: S) -> Self {
        Self::from_parts(
            Arc::new(Bounded {
                store,
                timeout: DEFAULT_STORE_TIMEOUT,
            }),
            Arc::new(SystemClock),
        )
    }

    pub(crate) fn from_parts(store: Arc<dyn DynStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The clock's time in whole seconds, the precision every store keeps.
    fn now(&self) -> OffsetDateTime {
        truncate_to_seconds(self.clock.now())
    }

    /// Ends every session of `user_id` on every device. Returns how many
    /// ended. Takes effect on each device's next request.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; sessions already ended stay
    /// ended.
    pub async fn logout_everywhere(&self, user_id: &str) -> Result<u64, StoreError> {
        let ended = self.store.delete_user(user_id, None).await?;
        crate::events::logged_out_everywhere(ended, None, true);
        Ok(ended)
    }

    /// Ends every session in the store, of every user and anonymous ones
    /// too, on every device. Returns how many live sessions ended. Takes
    /// effect on each device's next request, on every instance of the app
    /// (a [`RedisStore`](crate::store::RedisStore)'s local caches are flushed).
    ///
    /// The store is gone over in bounded batches (see
    /// [`SessionStore::delete_all`]), in passes: the cutoff is this
    /// handle's clock at the start, in whole seconds, and every session
    /// created at or before it ends. A session that a regenerate moves to
    /// a new ID while a pass runs keeps its creation time, so it ends too:
    /// the pass follows the forward the move leaves, or the next pass finds
    /// the new record; passes repeat until one ends nothing. A login that
    /// completes after the cutoff's second is a new sign-in and stays.
    /// Forwards left by earlier moves are deleted too, and users' listings
    /// and counts come back empty. The cutoff is this handle's clock, and
    /// creation times the clocks of the instances that logged sessions in:
    /// keep them in sync (NTP), since a session created on an instance
    /// whose clock runs ahead looks newer than the cutoff and stays.
    ///
    /// A pass over a large store takes longer than the store timeout
    /// ([`SessionLayerBuilder::store_timeout`](crate::SessionLayerBuilder::store_timeout),
    /// 3 s by default), so it is not bounded by it: each batch is bounded by
    /// the backend's own time-outs. Wrap the call in `tokio::time::timeout`
    /// for an overall limit. Logged as the security event
    /// `all_sessions_ended`.
    ///
    /// # Security
    ///
    /// For a breach: after the signing key, session cookies or the session
    /// store may have been exposed, or whenever every user must sign in
    /// again (ASVS 5.0 7.4.5). Deploy a new signing key first, a fresh
    /// [`Key`](crate::Key) without the old one as `previous_key`: while the
    /// old key is accepted, whoever holds it can turn any session ID they
    /// learn into a valid cookie, for sessions created after this call too;
    /// and replacing the key alone leaves every record in the store. This
    /// ends sessions only: it does not change passwords, revoke tokens or
    /// API keys the application issued, or stop a request already in
    /// flight from finishing; and a login that completes after the cutoff
    /// (an attacker's too, with a stolen password) is kept.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails: sessions already ended stay
    /// ended, and calling again ends the rest. If sessions created before
    /// the cutoff keep appearing through every pass (a regenerate loop
    /// racing it), [`StoreError::Unavailable`]: never a success that left
    /// one of them live.
    ///
    /// # Example
    ///
    /// ```
    /// use cloakroom::{Key, MemoryStore, SessionLayer};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// // Started with a new signing key, and no `previous_key`:
    /// let layer = SessionLayer::builder(MemoryStore::new())
    ///     .key(Key::generate()?)
    ///     .build()?;
    /// let ended = layer.admin().end_all_sessions().await?;
    /// println!("{ended} sessions ended; everyone signs in again");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn end_all_sessions(&self) -> Result<u64, StoreError> {
        let cutoff = self.now();
        let mut ended = 0;
        for pass in 1..=MAX_END_ALL_PASSES {
            let deleted = self.store.delete_all(cutoff, self.now()).await?;
            ended += deleted;
            if deleted == 0 {
                crate::events::all_sessions_ended(ended, pass);
                return Ok(ended);
            }
        }
        // Every pass found sessions from before the cutoff: success could
        // leave one of them live.
        Err(StoreError::unavailable(StillAppearing {
            passes: MAX_END_ALL_PASSES,
            sessions: "sessions created before the cutoff",
            what: "end-all-sessions",
        }))
    }

    /// How many live sessions `user_id` has, without reading them.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn count_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        self.store.count_user(user_id, self.now()).await
    }

    /// The live sessions of `user_id`, most recently active first: at
    /// most the 1,000 most recently created.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn list_sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let mut sessions = self
            .store
            .list_user(user_id, self.now(), LIST_LIMIT)
            .await?;
        crate::session::most_recent_first(&mut sessions);
        Ok(sessions)
    }

    /// Ends the one session stored under `key` (the [`SessionInfo::key`]
    /// of an entry of [`list_sessions`](Self::list_sessions), or
    /// [`SessionHandle::store_key`](crate::device::SessionHandle::store_key)), for
    /// operators. Returns whether it existed.
    ///
    /// # Security
    ///
    /// This ends any session, whoever it belongs to. For a handle that came
    /// from a user ("sign out this device"), use
    /// [`Session::logout_device`](crate::Session::logout_device), which checks
    /// that the session is the user's own.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn end_session(&self, key: &StoreKey) -> Result<bool, StoreError> {
        crate::session::end_following_forwards(
            &*self.store,
            self.now(),
            *key,
            crate::events::EndReason::Admin,
        )
        .await
    }

    /// Ends every session of `user_id` that is linked to the identity
    /// provider's session `external_id`
    /// ([`Session::link_external_session`](crate::Session::link_external_session)):
    /// an OpenID Connect back-channel logout. Returns how many ended; each
    /// is logged as `session_invalidated` with `reason` =
    /// `external_logout`. Takes effect on each device's next request, on
    /// every instance of the app (a
    /// [`RedisStore`](crate::store::RedisStore)'s local caches hear of it).
    ///
    /// `user_id` is the id the app logged the user in with: the logout
    /// token's `sub`, mapped to the app's user id as the login mapped the ID
    /// token's `sub`. The user's sessions are listed and each is read to
    /// compare its link (at most the 1,000 most recently created, as
    /// [`list_sessions`](Self::list_sessions) gives them; with the default
    /// per-user limit of 100 that is all of them). Sessions of other users
    /// are never read or ended, even if linked to the same `external_id`:
    /// the user is part of the match.
    ///
    /// A session that moves to a new ID while this runs (a login of the
    /// same user, a regenerate) ends under its new ID too: the end follows
    /// the move, as [`end_session`](Self::end_session) does, and a move
    /// that finds its session ended hands out no cookie.
    ///
    /// A logout token names the `sub`, the `sid` or both. With both, call
    /// this. With the `sub` alone, every session of the user at the
    /// provider ended: [`logout_everywhere`](Self::logout_everywhere)
    /// (which also ends the user's sessions that did not come from the
    /// provider). With the `sid` alone, this call cannot serve it, since
    /// sessions are indexed by user only and never by external ID: keep
    /// your own table from `sid` to user id, filled at login, and look the
    /// user up there first; a token whose `sid` the table does not know
    /// ends nothing.
    ///
    /// The user's sessions are listed again until a listing shows none
    /// that was not read yet. If new ones keep appearing through 16
    /// listings (a regenerate loop, a burst of logins), the call fails
    /// rather than report success.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails: sessions already ended stay
    /// ended, and calling again ends the rest. [`StoreError::Unavailable`]
    /// when new sessions of the user keep appearing through every listing.
    ///
    /// # Example
    ///
    /// The shape of a back-channel logout endpoint; the app verifies the
    /// logout token (signature, issuer, audience, the `events` claim) with
    /// its OpenID Connect library first.
    ///
    /// ```
    /// use cloakroom::SessionAdmin;
    /// use cloakroom::store::StoreError;
    ///
    /// /// The claims of a logout token the app's OIDC library verified.
    /// struct LogoutToken {
    ///     sub: String,
    ///     sid: Option<String>,
    /// }
    ///
    /// async fn backchannel_logout(admin: &SessionAdmin, token: LogoutToken) -> Result<u64, StoreError> {
    ///     // The app's user id for this subject (here: the subject itself).
    ///     let user_id = token.sub;
    ///     match token.sid {
    ///         // One of the user's sessions at the provider ended.
    ///         Some(sid) => admin.end_external_session(&user_id, &sid).await,
    ///         // Every session of the user at the provider ended.
    ///         None => admin.logout_everywhere(&user_id).await,
    ///     }
    /// }
    /// ```
    pub async fn end_external_session(
        &self,
        user_id: &str,
        external_id: &str,
    ) -> Result<u64, StoreError> {
        // A session that moves between the listing and its read (a
        // regenerate, a login of the same user) is read as gone at its old
        // key; its new record was created before the old one was retired,
        // so the next listing shows it. Passes repeat until one lists no
        // session not read before.
        let mut read = HashSet::new();
        let mut ended = 0;
        for _ in 0..MAX_EXTERNAL_LOGOUT_PASSES {
            let now = self.now();
            let listed = self.store.list_user(user_id, now, LIST_LIMIT).await?;
            let unread: Vec<StoreKey> = listed
                .into_iter()
                .map(|session| session.key)
                .filter(|key| read.insert(*key))
                .collect();
            if unread.is_empty() {
                return Ok(ended);
            }
            // Reading records no activity: a touch is due only once the
            // whole idle window has passed, when the session has expired
            // anyway.
            let touch = Touch { now, after: 1.0 };
            for key in unread {
                let Some(record) = self.store.load(&key, touch).await? else {
                    continue;
                };
                if record.user_id.as_deref() != Some(user_id)
                    || !crate::session::is_linked_to(&record, external_id)
                {
                    continue;
                }
                // Following forwards: a move after the read ends under its
                // new ID too.
                let live = crate::session::end_following_forwards(
                    &*self.store,
                    self.now(),
                    key,
                    crate::events::EndReason::ExternalLogout,
                )
                .await?;
                ended += u64::from(live);
            }
        }
        Err(StoreError::unavailable(StillAppearing {
            passes: MAX_EXTERNAL_LOGOUT_PASSES,
            sessions: "sessions of the user not read before",
            what: "an external logout",
        }))
    }

    /// Removes sessions that have expired, and index entries pointing at
    /// them. Returns how many records were removed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        self.store.sweep_expired(self.now()).await
    }

    /// Spawns a tokio task that calls [`sweep_expired`](Self::sweep_expired)
    /// every `period` until the handle is aborted. Failures are logged and
    /// retried at the next tick.
    ///
    /// Must be called from within a tokio runtime.
    pub fn spawn_sweeper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let admin = self.clone();
        let period = period.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                crate::events::sweep(admin.sweep_expired().await);
            }
        })
    }
}

/// How many passes [`SessionAdmin::end_all_sessions`] makes at most before
/// it gives up on sessions from before its cutoff that keep appearing.
const MAX_END_ALL_PASSES: usize = 16;

/// How many listings [`SessionAdmin::end_external_session`] reads at most
/// before it gives up on a user's sessions that keep moving.
const MAX_EXTERNAL_LOGOUT_PASSES: usize = 16;

/// Sessions were still appearing after every pass of
/// [`SessionAdmin::end_all_sessions`] (sessions created before the cutoff)
/// or [`SessionAdmin::end_external_session`] (sessions of the user not read
/// yet): reported as [`StoreError::Unavailable`] (retryable), never as
/// every session ended.
#[derive(Debug, Clone, Copy)]
struct StillAppearing {
    passes: usize,
    /// Which sessions, as the message names them.
    sessions: &'static str,
    /// The operation, as the message names it.
    what: &'static str,
}

impl fmt::Display for StillAppearing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} kept appearing through {} passes of {}",
            self.sessions, self.passes, self.what
        )
    }
}

impl std::error::Error for StillAppearing {}

impl fmt::Debug for SessionAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionAdmin").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use time::OffsetDateTime;

    use super::*;
    use crate::clock::ManualClock;
    use crate::record::{Patch, SessionRecord, Touch};
    use crate::store::Deleted;

    /// A store whose passes of `delete_all` answer as scripted, recording
    /// what they were asked; each pass takes 1.5 s of the clock's time.
    /// Nothing else is called.
    struct Passes {
        answers: Mutex<VecDeque<Result<u64, StoreError>>>,
        asked: Mutex<Vec<(OffsetDateTime, OffsetDateTime)>>,
        clock: ManualClock,
    }

    impl Passes {
        fn admin(answers: Vec<Result<u64, StoreError>>) -> (SessionAdmin, Arc<Passes>) {
            let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1));
            let passes = Arc::new(Passes {
                answers: Mutex::new(answers.into()),
                asked: Mutex::default(),
                clock: clock.clone(),
            });
            let store = Bounded {
                store: Arc::clone(&passes),
                timeout: DEFAULT_STORE_TIMEOUT,
            };
            (
                SessionAdmin::from_parts(Arc::new(store), Arc::new(clock)),
                passes,
            )
        }
    }

    impl SessionStore for Arc<Passes> {
        async fn create(
            &self,
            _: &StoreKey,
            _: &SessionRecord,
            _: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            unreachable!()
        }
        async fn load(&self, _: &StoreKey, _: Touch) -> Result<Option<SessionRecord>, StoreError> {
            unreachable!()
        }
        async fn save(&self, _: &StoreKey, _: &Patch, _: Touch) -> Result<bool, StoreError> {
            unreachable!()
        }
        async fn retire(
            &self,
            _: &StoreKey,
            _: &StoreKey,
            _: OffsetDateTime,
            _: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            unreachable!()
        }
        async fn restore(
            &self,
            _: &StoreKey,
            _: &StoreKey,
            _: &SessionRecord,
            _: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            unreachable!()
        }
        async fn delete(&self, _: &StoreKey, _: OffsetDateTime) -> Result<Deleted, StoreError> {
            unreachable!()
        }
        async fn delete_owned(
            &self,
            _: &StoreKey,
            _: &str,
            _: OffsetDateTime,
        ) -> Result<Deleted, StoreError> {
            unreachable!()
        }
        async fn delete_user(&self, _: &str, _: Option<&StoreKey>) -> Result<u64, StoreError> {
            unreachable!()
        }
        async fn delete_all(
            &self,
            created_until: OffsetDateTime,
            now: OffsetDateTime,
        ) -> Result<u64, StoreError> {
            self.asked.lock().unwrap().push((created_until, now));
            self.clock.advance(Duration::from_millis(1500));
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .expect("no more passes scripted")
        }
        async fn count_user(&self, _: &str, _: OffsetDateTime) -> Result<u64, StoreError> {
            unreachable!()
        }
        async fn list_user(
            &self,
            _: &str,
            _: OffsetDateTime,
            _: usize,
        ) -> Result<Vec<SessionInfo>, StoreError> {
            unreachable!()
        }
        async fn sweep_expired(&self, _: OffsetDateTime) -> Result<u64, StoreError> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn passes_repeat_with_one_cutoff_until_one_ends_nothing() {
        let (admin, passes) = Passes::admin(vec![Ok(5), Ok(2), Ok(0)]);
        assert_eq!(admin.end_all_sessions().await.unwrap(), 7);
        let asked = passes.asked.lock().unwrap().clone();
        let start = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1);
        let cutoffs: Vec<_> = asked.iter().map(|(cutoff, _)| *cutoff).collect();
        assert_eq!(cutoffs, [start; 3], "the cutoff stays the first reading");
        let nows: Vec<i64> = asked
            .iter()
            .map(|(_, now)| (*now - start).whole_seconds())
            .collect();
        assert_eq!(
            nows,
            [0, 1, 3],
            "each pass is told the time, in whole seconds"
        );
    }

    #[tokio::test]
    async fn sessions_that_keep_appearing_are_an_error_never_a_success() {
        let (admin, passes) = Passes::admin((0..MAX_END_ALL_PASSES).map(|_| Ok(1)).collect());
        let error = admin.end_all_sessions().await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string).as_deref(),
            Some("sessions created before the cutoff kept appearing through 16 passes of end-all-sessions")
        );
        assert_eq!(passes.asked.lock().unwrap().len(), MAX_END_ALL_PASSES);

        // One pass short of the limit, the last finding nothing: a success.
        let mut answers: Vec<_> = (1..MAX_END_ALL_PASSES).map(|_| Ok(1)).collect();
        answers.push(Ok(0));
        let (admin, _) = Passes::admin(answers);
        assert_eq!(
            admin.end_all_sessions().await.unwrap(),
            MAX_END_ALL_PASSES as u64 - 1
        );
    }

    #[tokio::test]
    async fn a_failed_pass_is_reported_and_no_later_pass_runs() {
        let (admin, passes) = Passes::admin(vec![Ok(3), Err(StoreError::backend("down"))]);
        assert!(matches!(
            admin.end_all_sessions().await,
            Err(StoreError::Backend(_))
        ));
        assert_eq!(passes.asked.lock().unwrap().len(), 2);
    }
}

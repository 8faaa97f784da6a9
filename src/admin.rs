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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::clock::{truncate_to_seconds, Clock, SystemClock};
use crate::config::DEFAULT_STORE_TIMEOUT;
use crate::core::LIST_LIMIT;
use crate::id::StoreKey;
use crate::record::SessionInfo;
use crate::store::{Bounded, DynStore, SessionStore, StoreError};

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
    /// [`SessionHandle::store_key`](crate::SessionHandle::store_key)), for
    /// operators. Returns whether it existed.
    ///
    /// # Security
    ///
    /// This ends any session, whoever it belongs to. For a handle that came
    /// from a user ("sign out this device"), use
    /// [`Session::end_session`](crate::Session::end_session), which checks
    /// that the session is the user's own.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn end_session(&self, key: &StoreKey) -> Result<bool, StoreError> {
        crate::session::end_session(
            &*self.store,
            self.now(),
            *key,
            crate::events::EndReason::Admin,
        )
        .await
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

impl fmt::Debug for SessionAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionAdmin").finish_non_exhaustive()
    }
}

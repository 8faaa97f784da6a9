//! [`SessionAdmin`]: session management from outside a request.
//!
//! # Example
//!
//! ```
//! use cloakroom::{Key, MemoryStore, SessionLayer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let layer = SessionLayer::builder(MemoryStore::new()).key(Key::generate()?).build()?;
//! let admin = layer.admin();
//!
//! // After a password change, or when an administrator locks an account:
//! let ended = admin.logout_everywhere("user-42").await?;
//! assert_eq!(ended, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::core::{Core, LIST_LIMIT};
use crate::id::StoreKey;
use crate::record::SessionInfo;
use crate::store::StoreError;

/// A cloneable handle to the layer's store and clock, for use anywhere in
/// the app: background jobs, admin endpoints, password-change handlers.
///
/// Get one with [`SessionLayer::admin`](crate::SessionLayer::admin).
#[derive(Clone)]
pub struct SessionAdmin {
    core: Arc<Core>,
}

impl SessionAdmin {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Ends every session of `user_id` on every device. Returns how many
    /// ended. Takes effect on each device's next request.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; sessions already ended stay
    /// ended.
    pub async fn logout_everywhere(&self, user_id: &str) -> Result<u64, StoreError> {
        let ended = self.core.store.delete_user(user_id, None).await?;
        crate::events::logged_out_everywhere(ended, None, true);
        Ok(ended)
    }

    /// How many live sessions `user_id` has, without reading them.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn count_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        self.core.store.count_user(user_id, self.core.now()).await
    }

    /// The live sessions of `user_id`, oldest first: at most the 1,000
    /// most recently created.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn list_sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.core
            .store
            .list_user(user_id, self.core.now(), LIST_LIMIT)
            .await
    }

    /// Ends the one session stored under `key` (e.g. "sign out this
    /// device" next to an entry of [`list_sessions`](Self::list_sessions)).
    /// Returns whether it existed.
    ///
    /// # Security
    ///
    /// Before acting on a key that came from a client, check that it is one
    /// of the current user's sessions (it is in their `list_sessions`).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn end_session(&self, key: &StoreKey) -> Result<bool, StoreError> {
        crate::session::end_session(&self.core, *key, crate::events::EndReason::Admin).await
    }

    /// Removes sessions that have expired, and index entries pointing at
    /// them. Returns how many records were removed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        self.core.store.sweep_expired(self.core.now()).await
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

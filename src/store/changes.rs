//! What a store tells session watches: which sessions may have changed or
//! ended ([`Change`]), through a [`ChangeNotifier`] the store owns and the
//! [`Changes`] each subscriber reads.
//!
//! A change is only a hint to look again: a watch that hears of its
//! session reads it back from the store (without recording activity) and
//! ends if it is gone. So a store may announce more than it must (every
//! write, say), never less: a session that ends unannounced is seen only
//! at its deadline, or by the periodic re-check of a feed that reports
//! itself [lost](Change::Lost).
//!
//! # Example
//!
//! ```
//! use cloakroom::store::{Change, ChangeNotifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let notifier = ChangeNotifier::new();
//! let mut changes = notifier.subscribe();
//! notifier.notify(Change::User("alice".into()));
//! assert_eq!(changes.next().await, Some(Change::User("alice".into())));
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::id::StoreKey;

/// How many announcements a slow subscriber may fall behind before it is
/// told to look at everything again ([`Change::All`]).
const BACKLOG: usize = 1024;

/// One announcement of a store's change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The session under this key may have changed or ended (a logout, a
    /// move to a new ID, a write).
    Session(StoreKey),
    /// Sessions of this user may have ended (logout-everywhere).
    User(String),
    /// Any session may have changed: every session ended, or the feed
    /// cannot say which (a subscriber fell behind, an unknown message).
    All,
    /// The feed stopped hearing the store (a dropped subscription, a
    /// restarted server): changes may be missed until [`Change::Resumed`].
    /// Watches then re-check their sessions on a timer.
    Lost,
    /// The feed hears every change again.
    Resumed,
}

/// The sending side of a store's change feed. Clones share one feed.
///
/// Announcing costs one atomic load while nobody listens, so a store can
/// announce on every call without slowing apps that never watch.
#[derive(Clone)]
pub struct ChangeNotifier {
    shared: Arc<Shared>,
}

struct Shared {
    sender: broadcast::Sender<Change>,
    /// Open [`Changes`]; `notify` does nothing while there are none.
    listeners: AtomicUsize,
    /// Whether the feed hears every change now (see [`Change::Lost`]).
    live: std::sync::atomic::AtomicBool,
}

impl ChangeNotifier {
    /// A feed with nobody listening yet, hearing every change (an
    /// in-process store announcing its own calls).
    pub fn new() -> Self {
        Self::starting(true)
    }

    /// A feed that starts `live` or not: a feed that must first subscribe
    /// somewhere starts lost and announces [`Change::Resumed`] once it
    /// hears the store.
    pub fn starting(live: bool) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        Self {
            shared: Arc::new(Shared {
                sender,
                listeners: AtomicUsize::new(0),
                live: std::sync::atomic::AtomicBool::new(live),
            }),
        }
    }

    /// Announces `change` to every open [`Changes`]. [`Change::Lost`] and
    /// [`Change::Resumed`] also set what [`Changes::is_live`] answers.
    pub fn notify(&self, change: Change) {
        match change {
            Change::Lost => self.shared.live.store(false, Ordering::SeqCst),
            Change::Resumed => self.shared.live.store(true, Ordering::SeqCst),
            _ => {}
        }
        if self.shared.listeners.load(Ordering::Acquire) == 0 {
            return;
        }
        // An error only means the last listener left meanwhile.
        let _ = self.shared.sender.send(change);
    }

    /// Whether anyone listens: a store may skip work that only feeds
    /// listeners.
    pub fn is_heard(&self) -> bool {
        self.shared.listeners.load(Ordering::Acquire) > 0
    }

    /// A new subscriber, which hears every announcement made from now on.
    pub fn subscribe(&self) -> Changes {
        self.shared.listeners.fetch_add(1, Ordering::AcqRel);
        Changes {
            receiver: self.shared.sender.subscribe(),
            shared: Arc::clone(&self.shared),
            recheck_every: None,
        }
    }

    /// A subscriber for a feed that hears only some of the changes (a
    /// store that hears its own writes but not those of other processes
    /// sharing its database): watches listening to it also re-check their
    /// sessions every `recheck_every`.
    pub fn subscribe_partial(&self, recheck_every: std::time::Duration) -> Changes {
        let mut changes = self.subscribe();
        changes.recheck_every = Some(recheck_every);
        changes
    }
}

impl Default for ChangeNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ChangeNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeNotifier")
            .field("listeners", &self.shared.listeners.load(Ordering::Relaxed))
            .field("live", &self.shared.live.load(Ordering::Relaxed))
            .finish()
    }
}

/// The receiving side of a store's change feed
/// ([`SessionStore::changes`](super::SessionStore::changes)).
pub struct Changes {
    receiver: broadcast::Receiver<Change>,
    shared: Arc<Shared>,
    recheck_every: Option<std::time::Duration>,
}

impl Changes {
    /// The next announcement; `None` once the store is gone. A subscriber
    /// that fell too far behind gets [`Change::All`] for what it missed.
    pub async fn next(&mut self) -> Option<Change> {
        match self.receiver.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::All),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Whether the feed hears every change now, or has [lost](Change::Lost)
    /// the store and not yet [resumed](Change::Resumed).
    pub fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// For a feed that hears only some changes, how often watches should
    /// re-check their sessions even while it is live.
    pub fn recheck_every(&self) -> Option<std::time::Duration> {
        self.recheck_every
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.shared.listeners.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("live", &self.is_live())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_queued_while_nobody_listens() {
        let notifier = ChangeNotifier::new();
        notifier.notify(Change::All);
        let mut changes = notifier.subscribe();
        notifier.notify(Change::User("bob".into()));
        assert_eq!(changes.next().await, Some(Change::User("bob".into())));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_look_at_everything() {
        let notifier = ChangeNotifier::new();
        let mut changes = notifier.subscribe();
        for _ in 0..BACKLOG + 10 {
            notifier.notify(Change::User("bob".into()));
        }
        assert_eq!(changes.next().await, Some(Change::All));
    }

    #[tokio::test]
    async fn lost_and_resumed_set_liveness() {
        let notifier = ChangeNotifier::starting(false);
        let changes = notifier.subscribe();
        assert!(!changes.is_live());
        notifier.notify(Change::Resumed);
        assert!(changes.is_live());
        notifier.notify(Change::Lost);
        assert!(!changes.is_live());
        drop(changes);
        assert!(!notifier.is_heard());
    }
}

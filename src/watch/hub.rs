//! The layer's register of open watches, and the task that ends them.
//!
//! One [`Hub`] per layer, made with the layer's first watch (a layer whose
//! handlers never watch has none and pays nothing). Its task listens to
//! the store's change feed and, for each announcement, reads back the
//! sessions it names that are watched, without recording activity; a
//! session that is gone ends its watches. It also ends watches at their
//! session's deadline (read back first: another request of the session
//! may have moved it), and re-checks every watched session on a timer
//! while the feed is lost or partial.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{oneshot, Notify};

use super::{Ended, SessionWatch, POLL_INTERVAL};
use crate::clock::{truncate_to_seconds, Clock};
use crate::id::StoreKey;
use crate::store::{Change, Changes, DynStore, SessionRecord, StoreError, Touch};

/// How often the task compares the watched sessions' deadlines with the
/// clock, while any watch is open.
const DEADLINE_TICK: Duration = Duration::from_millis(250);

/// A touch fraction that is never due for a live session (due means a
/// whole idle window has passed, which is expiry): a re-check never
/// counts as activity.
const NEVER_TOUCH: f64 = 1.0;

pub(crate) struct Hub {
    store: Arc<dyn DynStore>,
    clock: Arc<dyn Clock>,
    /// The layer's touch fraction, for [`Hub::touch`].
    touch_after: f64,
    state: Mutex<State>,
    /// Wakes the task when a watch opens (it may be idle), and when the
    /// hub is dropped (so that it ends).
    wake: Arc<Notify>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

#[derive(Default)]
struct State {
    watches: HashMap<StoreKey, Vec<Watcher>>,
    next_id: u64,
    task_started: bool,
}

struct Watcher {
    id: u64,
    /// The session's user when the watch opened: logout-everywhere of that
    /// user re-checks it.
    user: Option<Box<str>>,
    /// When the session expires unless it is active meanwhile.
    deadline: OffsetDateTime,
    sender: oneshot::Sender<Ended>,
}

impl Hub {
    pub(crate) fn new(store: Arc<dyn DynStore>, clock: Arc<dyn Clock>, touch_after: f64) -> Self {
        Self {
            store,
            clock,
            touch_after,
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // What the lock guards is changed in single steps: still whole
        // after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> OffsetDateTime {
        truncate_to_seconds(self.clock.now())
    }

    /// Opens a watch on the session under `key`, which the caller just
    /// read live. The session is read once more after the watch is
    /// registered, so that an end announced in between is not missed.
    pub(crate) async fn watch(
        self: &Arc<Self>,
        key: StoreKey,
        user: Option<String>,
        deadline: OffsetDateTime,
    ) -> SessionWatch {
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut state = self.state();
            if !state.task_started {
                state.task_started = true;
                // The feed is subscribed here, before the first watch is
                // registered: nothing announced after it is missed.
                let changes = self.store.changes();
                tokio::spawn(run(Arc::downgrade(self), Arc::clone(&self.wake), changes));
            }
            state.next_id += 1;
            let id = state.next_id;
            state.watches.entry(key).or_default().push(Watcher {
                id,
                user: user.map(String::into_boxed_str),
                deadline,
                sender,
            });
            id
        };
        self.wake.notify_one();
        let watch = SessionWatch::open(Arc::clone(self), key, id, receiver);
        // An error leaves the watch open: the task re-checks it on its
        // timer while the store fails.
        let _ = self.recheck(&[key]).await;
        watch
    }

    /// Forgets a watch its owner dropped.
    pub(crate) fn close(&self, key: &StoreKey, id: u64) {
        let mut state = self.state();
        if let Some(watchers) = state.watches.get_mut(key) {
            watchers.retain(|w| w.id != id);
            if watchers.is_empty() {
                state.watches.remove(key);
            }
        }
    }

    /// Records activity on the watched session as a request would (rolling
    /// its idle deadline when a touch is due), and ends its watches if it
    /// is gone. Returns whether it is live.
    pub(crate) async fn touch(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let now = self.now();
        let touch = Touch {
            now,
            after: self.touch_after,
        };
        let found = self.store.load(key, touch).await?;
        let live = found.is_some();
        self.settle(
            key,
            found.map(|mut record| {
                if record.touch_due(&touch) {
                    record.touch(now);
                }
                record
            }),
            now,
        );
        Ok(live)
    }

    /// The number of open watches, for tests and metrics.
    pub(crate) fn open_watches(&self) -> usize {
        self.state().watches.values().map(Vec::len).sum()
    }

    fn keys_where(&self, pick: impl Fn(&StoreKey, &Watcher) -> bool) -> Vec<StoreKey> {
        self.state()
            .watches
            .iter()
            .filter(|(key, watchers)| watchers.iter().any(|w| pick(key, w)))
            .map(|(key, _)| *key)
            .collect()
    }

    fn all_keys(&self) -> Vec<StoreKey> {
        self.state().watches.keys().copied().collect()
    }

    /// Reads back each of `keys` that is watched and ends the watches of
    /// those that are gone. Stops at the first store error (the caller
    /// re-checks on its timer).
    async fn recheck(&self, keys: &[StoreKey]) -> Result<(), StoreError> {
        for key in keys {
            if !self.state().watches.contains_key(key) {
                continue;
            }
            let now = self.now();
            let touch = Touch {
                now,
                after: NEVER_TOUCH,
            };
            let found = self.store.load(key, touch).await?;
            self.settle(key, found, now);
        }
        Ok(())
    }

    /// Acts on what a read of `key` found: a live session moves its
    /// watches' deadline, a gone one ends them.
    fn settle(&self, key: &StoreKey, found: Option<SessionRecord>, now: OffsetDateTime) {
        let mut state = self.state();
        let Some(watchers) = state.watches.get_mut(key) else {
            return;
        };
        match found {
            Some(record) => {
                let deadline = record.expires_at();
                for watcher in watchers.iter_mut() {
                    watcher.deadline = deadline;
                }
            }
            None => {
                for watcher in state.watches.remove(key).unwrap_or_default() {
                    let ended = if watcher.deadline <= now {
                        Ended::Expired
                    } else {
                        Ended::Revoked
                    };
                    // The owner may have dropped its watch meanwhile.
                    let _ = watcher.sender.send(ended);
                }
            }
        }
    }
}

/// What the task waits for next.
enum Wake {
    Change(Option<Change>),
    Deadline,
    Poll,
    Opened,
}

/// The hub's task: runs until the hub (its layer) is dropped.
async fn run(hub: Weak<Hub>, wake: Arc<Notify>, mut changes: Option<Changes>) {
    // Without a feed, or until it hears the store, every watch is
    // re-checked on the timer.
    let mut polling = changes.as_ref().is_none_or(|c| !c.is_live());
    let mut poll = interval(POLL_INTERVAL);
    // A feed that hears only part of the changes: re-check on its own
    // (slower) timer even while it is live.
    let partial = changes.as_ref().and_then(Changes::recheck_every);
    let mut partial_poll = interval(partial.unwrap_or(POLL_INTERVAL));
    let mut deadlines = interval(DEADLINE_TICK);
    let mut feed_open = changes.is_some();
    loop {
        let idle = match hub.upgrade() {
            Some(hub) => hub.state().watches.is_empty(),
            None => return,
        };
        let woke = tokio::select! {
            change = next_change(&mut changes), if feed_open => Wake::Change(change),
            _ = deadlines.tick(), if !idle => Wake::Deadline,
            _ = poll.tick(), if !idle && polling => Wake::Poll,
            _ = partial_poll.tick(), if !idle && partial.is_some() => Wake::Poll,
            () = wake.notified() => Wake::Opened,
        };
        let Some(hub) = hub.upgrade() else { return };
        let polled = matches!(woke, Wake::Poll);
        let result = match woke {
            Wake::Opened => Ok(()),
            Wake::Change(None) => {
                // The store dropped its feed: poll from now on.
                feed_open = false;
                polling = true;
                hub.recheck(&hub.all_keys()).await
            }
            Wake::Change(Some(change)) => match change {
                Change::Session(key) => hub.recheck(&[key]).await,
                Change::User(user) => {
                    let keys = hub.keys_where(|_, w| w.user.as_deref() == Some(user.as_str()));
                    hub.recheck(&keys).await
                }
                Change::Lost => {
                    polling = true;
                    hub.recheck(&hub.all_keys()).await
                }
                Change::Resumed => {
                    polling = false;
                    // What ended while the feed was lost, since the last
                    // poll.
                    hub.recheck(&hub.all_keys()).await
                }
                // `All`, and whatever a newer store announces.
                _ => hub.recheck(&hub.all_keys()).await,
            },
            Wake::Deadline => {
                let now = hub.now();
                let keys = hub.keys_where(|_, w| w.deadline <= now);
                hub.recheck(&keys).await
            }
            Wake::Poll => hub.recheck(&hub.all_keys()).await,
        };
        match result {
            // Nothing is ended on a store error: the session may well be
            // live. Poll until a pass goes through.
            Err(error) => {
                // Logged when polling starts, not at every failed pass.
                if !polling {
                    crate::events::watch_recheck_failed(&error);
                }
                polling = true;
            }
            Ok(()) if polled => {
                polling = !changes.as_ref().is_some_and(Changes::is_live) || !feed_open;
            }
            Ok(()) => {}
        }
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

async fn next_change(changes: &mut Option<Changes>) -> Option<Change> {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}

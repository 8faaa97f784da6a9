//! [`CountingStore`]: a wrapper that counts store calls and injects
//! failures and pauses, for tests and benchmarks of code above the store.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::id::StoreKey;
use crate::record::{Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{Deleted, SessionStore, StoreError};

/// One kind of store call, for [`CountingStore`]'s fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOp {
    /// [`SessionStore::create`].
    Create,
    /// [`SessionStore::load`].
    Load,
    /// [`SessionStore::save`].
    Save,
    /// [`SessionStore::retire`].
    Retire,
    /// [`SessionStore::delete`].
    Delete,
    /// [`SessionStore::delete_user`].
    DeleteUser,
    /// [`SessionStore::count_user`].
    CountUser,
    /// [`SessionStore::list_user`].
    ListUser,
    /// [`SessionStore::sweep_expired`].
    SweepExpired,
}

const OPS: usize = 9;

impl StoreOp {
    fn index(self) -> usize {
        self as usize
    }
}

/// Wraps a store, counting every call by kind. It can also make calls fail
/// (every call, or the next call of one kind), hold the next call of one
/// kind until the test releases it, and report ID collisions on `create`.
///
/// It is a test double for the layer, not a store to test: the wrapped
/// store does the real work. Clones share counters and switches.
///
/// ```
/// use cloakroom::test_suite::CountingStore;
/// use cloakroom::MemoryStore;
///
/// let store = CountingStore::new(MemoryStore::new());
/// assert_eq!(store.calls().total(), 0);
/// ```
#[derive(Clone)]
pub struct CountingStore<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    calls: [AtomicU64; OPS],
    failing: AtomicBool,
    collisions: AtomicUsize,
    /// Calls still to fail, per kind.
    fail_next: Mutex<HashMap<StoreOp, usize>>,
    /// The next call of a kind waits here.
    pauses: Mutex<HashMap<StoreOp, Held>>,
}

/// The store's side of a [`Pause`].
struct Held {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The test's side of a paused call (see [`CountingStore::pause_next`]).
#[derive(Debug)]
pub struct Pause {
    reached: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl Pause {
    /// Waits until the paused call has been made (and is waiting).
    ///
    /// # Panics
    ///
    /// When the store was dropped before the call was made.
    pub async fn reached(&mut self) {
        if let Some(reached) = self.reached.take() {
            reached.await.expect("the paused call was never made");
        }
    }

    /// Lets the paused call go on to the wrapped store. Dropping the
    /// `Pause` does the same.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// How many calls of each kind a [`CountingStore`] has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCalls {
    /// `create` calls.
    pub create: u64,
    /// `load` calls.
    pub load: u64,
    /// `save` calls.
    pub save: u64,
    /// `retire` calls.
    pub retire: u64,
    /// `delete` calls.
    pub delete: u64,
    /// `delete_user` calls.
    pub delete_user: u64,
    /// `count_user` calls.
    pub count_user: u64,
    /// `list_user` calls.
    pub list_user: u64,
    /// `sweep_expired` calls.
    pub sweep_expired: u64,
}

impl StoreCalls {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.create
            + self.load
            + self.save
            + self.retire
            + self.delete
            + self.delete_user
            + self.count_user
            + self.list_user
            + self.sweep_expired
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S> CountingStore<S> {
    /// Wraps `inner` with all counters at zero.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            shared: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The calls so far.
    pub fn calls(&self) -> StoreCalls {
        let n = |op: StoreOp| self.shared.calls[op.index()].load(Ordering::Relaxed);
        StoreCalls {
            create: n(StoreOp::Create),
            load: n(StoreOp::Load),
            save: n(StoreOp::Save),
            retire: n(StoreOp::Retire),
            delete: n(StoreOp::Delete),
            delete_user: n(StoreOp::DeleteUser),
            count_user: n(StoreOp::CountUser),
            list_user: n(StoreOp::ListUser),
            sweep_expired: n(StoreOp::SweepExpired),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        for counter in &self.shared.calls {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// While `true`, every call fails with [`StoreError::Unavailable`]
    /// without reaching the wrapped store (counted all the same).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::Relaxed);
    }

    /// The next call of kind `op` fails with [`StoreError::Unavailable`]
    /// without reaching the wrapped store; calls after it go through.
    /// Calling this `n` times fails the next `n` calls of that kind.
    pub fn fail_next(&self, op: StoreOp) {
        *lock(&self.shared.fail_next).entry(op).or_default() += 1;
    }

    /// The next call of kind `op` waits, before it reaches the wrapped
    /// store, until the returned [`Pause`] is released or dropped.
    pub fn pause_next(&self, op: StoreOp) -> Pause {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        lock(&self.shared.pauses).insert(
            op,
            Held {
                reached: reached_tx,
                release: release_rx,
            },
        );
        Pause {
            reached: Some(reached_rx),
            release: release_tx,
        }
    }

    /// The next `n` creates report a collision (`Ok(false)`) without
    /// reaching the wrapped store.
    pub fn collide_next_creates(&self, n: usize) {
        self.shared.collisions.store(n, Ordering::Relaxed);
    }

    /// Counts a call, then holds or fails it as the switches say.
    async fn enter(&self, op: StoreOp) -> Result<(), StoreError> {
        self.shared.calls[op.index()].fetch_add(1, Ordering::Relaxed);
        let held = lock(&self.shared.pauses).remove(&op);
        if let Some(held) = held {
            let _ = held.reached.send(());
            let _ = held.release.await;
        }
        let fail_once = {
            let mut fail_next = lock(&self.shared.fail_next);
            match fail_next.get_mut(&op) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if fail_once || self.shared.failing.load(Ordering::Relaxed) {
            return Err(StoreError::unavailable(InjectedFailure));
        }
        Ok(())
    }
}

/// The error a failing [`CountingStore`] reports as its source.
#[derive(Debug, Clone, Copy)]
struct InjectedFailure;

impl fmt::Display for InjectedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("injected store failure")
    }
}

impl std::error::Error for InjectedFailure {}

impl<S> fmt::Debug for CountingStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingStore")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl<S: SessionStore> SessionStore for CountingStore<S> {
    const IN_PROCESS: bool = S::IN_PROCESS;

    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.enter(StoreOp::Create).await?;
        let collide = self
            .shared
            .collisions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if collide {
            return Ok(false);
        }
        self.inner.create(key, record, now).await
    }

    async fn load(
        &self,
        key: &StoreKey,
        touch: Touch,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.enter(StoreOp::Load).await?;
        self.inner.load(key, touch).await
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        self.enter(StoreOp::Save).await?;
        self.inner.save(key, patch, touch).await
    }

    async fn retire(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.enter(StoreOp::Retire).await?;
        self.inner.retire(key, successor, until, now).await
    }

    async fn delete(&self, key: &StoreKey, now: OffsetDateTime) -> Result<Deleted, StoreError> {
        self.enter(StoreOp::Delete).await?;
        self.inner.delete(key, now).await
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        self.enter(StoreOp::DeleteUser).await?;
        self.inner.delete_user(user_id, keep).await
    }

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.enter(StoreOp::CountUser).await?;
        self.inner.count_user(user_id, now).await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.enter(StoreOp::ListUser).await?;
        self.inner.list_user(user_id, now, limit).await
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.enter(StoreOp::SweepExpired).await?;
        self.inner.sweep_expired(now).await
    }

    fn background_sweep(&self) -> Option<std::time::Duration> {
        self.inner.background_sweep()
    }
}

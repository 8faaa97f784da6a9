//! [`CountingStore`]: a wrapper that counts store calls and injects
//! failures and pauses, for tests and benchmarks of code above the store.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
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
    /// [`SessionStore::restore`].
    Restore,
    /// [`SessionStore::delete`], and [`SessionStore::delete_owned`] too:
    /// both end a session by its key, so a test that holds or fails the
    /// next `Delete` reaches the end of a device by its handle as well.
    Delete,
    /// [`SessionStore::delete_user`].
    DeleteUser,
    /// [`SessionStore::count_user`].
    CountUser,
    /// [`SessionStore::list_user`].
    ListUser,
    /// [`SessionStore::sweep_expired`].
    SweepExpired,
    /// [`SessionStore::delete_all`]: each pass of
    /// [`SessionAdmin::end_all_sessions`](crate::SessionAdmin::end_all_sessions)
    /// is one call.
    DeleteAll,
}

const OPS: usize = 11;

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
    /// What the next calls of each kind do, in order.
    faults: Mutex<HashMap<StoreOp, VecDeque<Fault>>>,
    /// The next call of a kind waits here.
    pauses: Mutex<HashMap<StoreOp, Held>>,
}

/// What one injected call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Reaches the wrapped store as usual.
    Pass,
    /// Fails without reaching the wrapped store.
    Before,
    /// Reaches the wrapped store, then reports a failure all the same.
    After,
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
    /// `restore` calls.
    pub restore: u64,
    /// `delete` and `delete_owned` calls, together.
    pub delete: u64,
    /// `delete_user` calls.
    pub delete_user: u64,
    /// `count_user` calls.
    pub count_user: u64,
    /// `list_user` calls.
    pub list_user: u64,
    /// `sweep_expired` calls.
    pub sweep_expired: u64,
    /// `delete_all` calls.
    pub delete_all: u64,
}

impl StoreCalls {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.create
            + self.load
            + self.save
            + self.retire
            + self.restore
            + self.delete
            + self.delete_user
            + self.count_user
            + self.list_user
            + self.sweep_expired
            + self.delete_all
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
            restore: n(StoreOp::Restore),
            delete: n(StoreOp::Delete),
            delete_user: n(StoreOp::DeleteUser),
            count_user: n(StoreOp::CountUser),
            list_user: n(StoreOp::ListUser),
            sweep_expired: n(StoreOp::SweepExpired),
            delete_all: n(StoreOp::DeleteAll),
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

    /// The next call of kind `op` (after those already scripted) fails
    /// with [`StoreError::Unavailable`] without reaching the wrapped store;
    /// calls after it go through.
    pub fn fail_next(&self, op: StoreOp) {
        self.script(op, Fault::Before);
    }

    /// The next call of kind `op` (after those already scripted) reaches
    /// the wrapped store, which carries it out, and then reports
    /// [`StoreError::Unavailable`] all the same: a timeout that lands.
    pub fn fail_after_next(&self, op: StoreOp) {
        self.script(op, Fault::After);
    }

    /// The next call of kind `op` (after those already scripted) goes
    /// through as usual; a way to aim a later `fail_next` at the second
    /// call.
    pub fn pass_next(&self, op: StoreOp) {
        self.script(op, Fault::Pass);
    }

    fn script(&self, op: StoreOp, fault: Fault) {
        lock(&self.shared.faults)
            .entry(op)
            .or_default()
            .push_back(fault);
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

    /// Counts a call, holds it if asked, then runs it as the script says.
    async fn run<T>(
        &self,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.shared.calls[op.index()].fetch_add(1, Ordering::Relaxed);
        let held = lock(&self.shared.pauses).remove(&op);
        if let Some(held) = held {
            let _ = held.reached.send(());
            let _ = held.release.await;
        }
        let fault = lock(&self.shared.faults)
            .get_mut(&op)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Fault::Pass);
        if fault == Fault::Before || self.shared.failing.load(Ordering::Relaxed) {
            return Err(StoreError::unavailable(InjectedFailure));
        }
        let result = call.await;
        if fault == Fault::After {
            return Err(StoreError::unavailable(InjectedFailure));
        }
        result
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
        let collide = || {
            self.shared
                .collisions
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        };
        self.run(StoreOp::Create, async {
            if collide() {
                return Ok(false);
            }
            self.inner.create(key, record, now).await
        })
        .await
    }

    async fn load(
        &self,
        key: &StoreKey,
        touch: Touch,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.run(StoreOp::Load, self.inner.load(key, touch)).await
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        self.run(StoreOp::Save, self.inner.save(key, patch, touch))
            .await
    }

    async fn retire(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.run(
            StoreOp::Retire,
            self.inner.retire(key, successor, until, now),
        )
        .await
    }

    async fn restore(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.run(
            StoreOp::Restore,
            self.inner.restore(key, successor, record, now),
        )
        .await
    }

    async fn delete(&self, key: &StoreKey, now: OffsetDateTime) -> Result<Deleted, StoreError> {
        self.run(StoreOp::Delete, self.inner.delete(key, now)).await
    }

    /// Counted, held and failed as a [`StoreOp::Delete`].
    async fn delete_owned(
        &self,
        key: &StoreKey,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Deleted, StoreError> {
        self.run(StoreOp::Delete, self.inner.delete_owned(key, user_id, now))
            .await
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        self.run(StoreOp::DeleteUser, self.inner.delete_user(user_id, keep))
            .await
    }

    async fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.run(
            StoreOp::DeleteAll,
            self.inner.delete_all(created_until, now),
        )
        .await
    }

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.run(StoreOp::CountUser, self.inner.count_user(user_id, now))
            .await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.run(StoreOp::ListUser, self.inner.list_user(user_id, now, limit))
            .await
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.run(StoreOp::SweepExpired, self.inner.sweep_expired(now))
            .await
    }

    fn background_sweep(&self) -> Option<std::time::Duration> {
        self.inner.background_sweep()
    }

    fn changes(&self) -> Option<crate::store::Changes> {
        self.inner.changes()
    }
}

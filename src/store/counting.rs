//! [`CountingStore`]: a wrapper that counts store calls and can inject
//! failures, for tests and benchmarks of code above the store.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::id::StoreKey;
use crate::record::{Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{SessionStore, StoreError};

/// Wraps a store, counting every call by kind. It can also make every call
/// fail (to test the failure path) and report ID collisions on `create`
/// (to test the retry).
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
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    create: AtomicU64,
    load: AtomicU64,
    save: AtomicU64,
    delete: AtomicU64,
    delete_user: AtomicU64,
    list_user: AtomicU64,
    sweep_expired: AtomicU64,
    failing: AtomicBool,
    collisions: AtomicUsize,
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
    /// `delete` calls.
    pub delete: u64,
    /// `delete_user` calls.
    pub delete_user: u64,
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
            + self.delete
            + self.delete_user
            + self.list_user
            + self.sweep_expired
    }
}

impl<S> CountingStore<S> {
    /// Wraps `inner` with all counters at zero.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counters: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The calls so far.
    pub fn calls(&self) -> StoreCalls {
        let c = &self.counters;
        StoreCalls {
            create: c.create.load(Ordering::Relaxed),
            load: c.load.load(Ordering::Relaxed),
            save: c.save.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
            delete_user: c.delete_user.load(Ordering::Relaxed),
            list_user: c.list_user.load(Ordering::Relaxed),
            sweep_expired: c.sweep_expired.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        let c = &self.counters;
        for counter in [
            &c.create,
            &c.load,
            &c.save,
            &c.delete,
            &c.delete_user,
            &c.list_user,
            &c.sweep_expired,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// While `true`, every call fails with [`StoreError::Unavailable`]
    /// without reaching the wrapped store (counted all the same).
    pub fn set_failing(&self, failing: bool) {
        self.counters.failing.store(failing, Ordering::Relaxed);
    }

    /// The next `n` creates report a collision (`Ok(false)`) without
    /// reaching the wrapped store.
    pub fn collide_next_creates(&self, n: usize) {
        self.counters.collisions.store(n, Ordering::Relaxed);
    }

    fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64) -> Result<(), StoreError> {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
        if self.counters.failing.load(Ordering::Relaxed) {
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
    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.count(|c| &c.create)?;
        let collide = self
            .counters
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
        self.count(|c| &c.load)?;
        self.inner.load(key, touch).await
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        self.count(|c| &c.save)?;
        self.inner.save(key, patch, touch).await
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.count(|c| &c.delete)?;
        self.inner.delete(key).await
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        self.count(|c| &c.delete_user)?;
        self.inner.delete_user(user_id, keep).await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.count(|c| &c.list_user)?;
        self.inner.list_user(user_id, now).await
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.count(|c| &c.sweep_expired)?;
        self.inner.sweep_expired(now).await
    }
}

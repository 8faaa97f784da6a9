//! [`MemoryStore`]: sessions in a sharded in-process map.
//!
//! # Example
//!
//! ```
//! use cloakroom::{Key, MemoryStore, SessionLayer};
//!
//! let store = MemoryStore::new();
//! let layer = SessionLayer::builder(store.clone())
//!     .key(Key::generate()?)
//!     .build()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Map;
use time::OffsetDateTime;

use crate::id::StoreKey;
use crate::record::{Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{SessionStore, StoreError};

const RECORD_SHARDS: usize = 64;
const USER_SHARDS: usize = 16;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Sessions in process memory: for single-process apps, development and
/// tests.
///
/// Records live in 64 independently locked shards, so concurrent requests
/// rarely wait on each other. Memory is bounded by the live sessions: a
/// record is dropped when it is found expired on access, and each shard
/// drops all its expired records at most once per sweep interval (60 s by
/// default), the next time a session is created in it. No background task is
/// needed for that; [`SessionAdmin::spawn_sweeper`](crate::SessionAdmin::spawn_sweeper)
/// adds one for apps that also want memory back while idle.
///
/// Data is kept as compact JSON text (about the size of the JSON plus ~200
/// bytes of bookkeeping per session), and a user index serves
/// logout-everywhere and listing. Everything is lost when the process exits,
/// and each process has its own sessions: use Redis or PostgreSQL behind a
/// load balancer.
///
/// Clones share the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    users: Box<[Mutex<UserIndex>]>,
    user_hasher: RandomState,
    sweep_interval_secs: i64,
}

/// User ID to the keys of that user's sessions.
type UserIndex = HashMap<Box<str>, HashSet<StoreKey>>;

#[derive(Default)]
struct Shard {
    entries: HashMap<StoreKey, Entry>,
    /// Unix time after which the next `create` in this shard sweeps it.
    next_sweep: i64,
}

/// A stored session, compact: times as whole seconds since 1970 in `u32`
/// (enough until 2106; a record beyond that is refused with an error), and
/// the data as JSON text (empty when there is no data). Every byte here is
/// paid a million times over, and again for the spare room of the map.
struct Entry {
    data: Box<str>,
    user_id: Option<Box<str>>,
    created_at: u32,
    last_seen: u32,
    idle_timeout: u32,
    absolute_deadline: u32,
    persistent: bool,
}

/// Seconds as stored in an [`Entry`].
fn seconds(value: i64, what: &'static str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::backend(OutOfRange(what)))
}

/// A time or timeout MemoryStore cannot hold (before 1970 or after 2106).
#[derive(Debug)]
struct OutOfRange(&'static str);

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryStore keeps {} between 1970 and 2106 only", self.0)
    }
}

impl std::error::Error for OutOfRange {}

impl Entry {
    fn from_record(record: &SessionRecord) -> Result<Self, StoreError> {
        let data = if record.data.is_empty() {
            Box::from("")
        } else {
            serde_json::to_string(&record.data)
                .map_err(StoreError::backend)?
                .into_boxed_str()
        };
        Ok(Self {
            data,
            user_id: record.user_id.as_deref().map(Box::from),
            created_at: seconds(record.created_at.unix_timestamp(), "times")?,
            last_seen: seconds(record.last_seen.unix_timestamp(), "times")?,
            idle_timeout: seconds(record.idle_timeout.whole_seconds(), "timeouts")?,
            absolute_deadline: seconds(record.absolute_deadline.unix_timestamp(), "times")?,
            persistent: record.persistent,
        })
    }

    fn to_record(&self) -> Result<SessionRecord, StoreError> {
        let data = if self.data.is_empty() {
            Map::new()
        } else {
            serde_json::from_str(&self.data).map_err(StoreError::corrupt)?
        };
        Ok(SessionRecord {
            data,
            user_id: self.user_id.as_deref().map(String::from),
            created_at: timestamp(self.created_at)?,
            last_seen: timestamp(self.last_seen)?,
            idle_timeout: time::Duration::seconds(i64::from(self.idle_timeout)),
            absolute_deadline: timestamp(self.absolute_deadline)?,
            persistent: self.persistent,
        })
    }

    /// [`SessionRecord::is_expired`] on the compact form, so that sweeping
    /// does not decode every record.
    fn is_expired(&self, now: i64) -> bool {
        let idle_deadline = i64::from(self.last_seen) + i64::from(self.idle_timeout);
        idle_deadline.min(i64::from(self.absolute_deadline)) <= now
    }

    fn info(&self, key: StoreKey) -> Result<SessionInfo, StoreError> {
        let last_seen = timestamp(self.last_seen)?;
        let absolute = timestamp(self.absolute_deadline)?;
        Ok(SessionInfo {
            key,
            created_at: timestamp(self.created_at)?,
            last_seen,
            expires_at: (last_seen + time::Duration::seconds(i64::from(self.idle_timeout)))
                .min(absolute),
            persistent: self.persistent,
            current: false,
        })
    }
}

fn timestamp(secs: u32) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(i64::from(secs)).map_err(StoreError::corrupt)
}

/// Locks without propagating poison: no code below panics while holding a
/// lock, and a poisoned shard would otherwise take sessions down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_sweep_interval(DEFAULT_SWEEP_INTERVAL)
    }

    /// An empty store whose shards drop expired records at most once per
    /// `interval` (rounded up to whole seconds). Shorter intervals bound
    /// memory more tightly at the cost of more frequent scans.
    pub fn with_sweep_interval(interval: Duration) -> Self {
        let secs = i64::try_from(interval.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(i64::from(interval.subsec_nanos() > 0))
            .max(1);
        Self {
            inner: Arc::new(Inner {
                shards: (0..RECORD_SHARDS).map(|_| Mutex::default()).collect(),
                users: (0..USER_SHARDS).map(|_| Mutex::default()).collect(),
                user_hasher: RandomState::new(),
                sweep_interval_secs: secs,
            }),
        }
    }

    /// How many records are held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).entries.len())
            .sum()
    }

    /// Whether no records are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &StoreKey) -> &Mutex<Shard> {
        // Store keys are SHA-256 outputs, so any byte is uniformly spread.
        &self.inner.shards[usize::from(key.as_bytes()[0]) % RECORD_SHARDS]
    }

    fn users(&self, user_id: &str) -> &Mutex<UserIndex> {
        let hash = self.inner.user_hasher.hash_one(user_id);
        // The modulo keeps the index below USER_SHARDS, so it fits a usize.
        &self.inner.users[(hash % USER_SHARDS as u64) as usize]
    }

    fn index_user(&self, user_id: &str, key: StoreKey) {
        lock(self.users(user_id))
            .entry(Box::from(user_id))
            .or_default()
            .insert(key);
    }

    fn unindex_user(&self, user_id: &str, key: &StoreKey) {
        let mut users = lock(self.users(user_id));
        if let Some(keys) = users.get_mut(user_id) {
            keys.remove(key);
            if keys.is_empty() {
                users.remove(user_id);
            }
        }
    }

    /// Drops every expired record of one shard; returns the owners of the
    /// dropped records so their index entries can go too.
    fn sweep_shard(shard: &mut Shard, now: i64) -> Vec<(StoreKey, Box<str>)> {
        let mut owned = Vec::new();
        shard.entries.retain(|key, entry| {
            if !entry.is_expired(now) {
                return true;
            }
            if let Some(user) = entry.user_id.take() {
                owned.push((*key, user));
            }
            false
        });
        owned
    }

    fn sweep_all(&self, now: i64) -> u64 {
        let mut removed = 0u64;
        for shard in self.inner.shards.iter() {
            let owned = {
                let mut shard = lock(shard);
                let before = shard.entries.len();
                let owned = Self::sweep_shard(&mut shard, now);
                removed += (before - shard.entries.len()) as u64;
                shard.next_sweep = now.saturating_add(self.inner.sweep_interval_secs);
                owned
            };
            for (key, user) in owned {
                self.unindex_user(&user, &key);
            }
        }
        removed
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.len())
            .field("sweep_interval_secs", &self.inner.sweep_interval_secs)
            .finish()
    }
}

impl SessionStore for MemoryStore {
    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let entry = Entry::from_record(record)?;
        let now = now.unix_timestamp();
        let (swept, inserted) = {
            let mut shard = lock(self.shard(key));
            let swept = if now >= shard.next_sweep {
                shard.next_sweep = now.saturating_add(self.inner.sweep_interval_secs);
                Self::sweep_shard(&mut shard, now)
            } else {
                Vec::new()
            };
            // `None`: a live record holds the key. `Some(owner)`: stored,
            // replacing an expired record of `owner`, if any.
            let inserted = match shard.entries.entry(*key) {
                MapEntry::Occupied(existing) if !existing.get().is_expired(now) => None,
                MapEntry::Occupied(mut expired) => {
                    Some(std::mem::replace(expired.get_mut(), entry).user_id)
                }
                MapEntry::Vacant(vacant) => {
                    vacant.insert(entry);
                    Some(None)
                }
            };
            (swept, inserted)
        };
        for (key, user) in swept {
            self.unindex_user(&user, &key);
        }
        let Some(replaced_owner) = inserted else {
            return Ok(false);
        };
        if let Some(user) = replaced_owner {
            self.unindex_user(&user, key);
        }
        // Indexed before returning, as the trait requires, so a
        // logout-everywhere that starts after this create sees it.
        if let Some(user) = &record.user_id {
            self.index_user(user, *key);
        }
        Ok(true)
    }

    async fn load(
        &self,
        key: &StoreKey,
        touch: Touch,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let now = touch.now.unix_timestamp();
        let mut shard = lock(self.shard(key));
        let Some(entry) = shard.entries.get_mut(key) else {
            return Ok(None);
        };
        if entry.is_expired(now) {
            let owner = shard.entries.remove(key).and_then(|e| e.user_id);
            drop(shard);
            if let Some(user) = owner {
                self.unindex_user(&user, key);
            }
            return Ok(None);
        }
        let record = entry.to_record()?;
        if record.touch_due(&touch) {
            entry.last_seen = seconds(now, "times")?;
        }
        Ok(Some(record))
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        let now = touch.now.unix_timestamp();
        let mut shard = lock(self.shard(key));
        let Some(entry) = shard.entries.get_mut(key) else {
            return Ok(false);
        };
        if entry.is_expired(now) {
            return Ok(false);
        }
        // Decode, patch and re-encode under the shard lock, so that two
        // patches to one session apply one after the other.
        let mut record = entry.to_record()?;
        record.apply(patch);
        if record.touch_due(&touch) {
            record.touch(touch.now);
        }
        *entry = Entry::from_record(&record)?;
        Ok(true)
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let removed = lock(self.shard(key)).entries.remove(key);
        let Some(entry) = removed else {
            return Ok(false);
        };
        if let Some(user) = entry.user_id {
            self.unindex_user(&user, key);
        }
        Ok(true)
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        let keys = {
            let mut users = lock(self.users(user_id));
            let Some(mut keys) = users.remove(user_id) else {
                return Ok(0);
            };
            if let Some(keep) = keep {
                if keys.remove(keep) {
                    users.insert(Box::from(user_id), HashSet::from([*keep]));
                }
            }
            keys
        };
        let mut deleted = 0;
        for key in keys {
            let mut shard = lock(self.shard(&key));
            // The index may lag behind a record that was replaced; only the
            // user's own records go.
            if shard
                .entries
                .get(&key)
                .is_some_and(|e| e.user_id.as_deref() == Some(user_id))
            {
                shard.entries.remove(&key);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let now = now.unix_timestamp();
        let keys: Vec<StoreKey> = match lock(self.users(user_id)).get(user_id) {
            Some(keys) => keys.iter().copied().collect(),
            None => return Ok(Vec::new()),
        };
        let mut sessions = Vec::with_capacity(keys.len());
        let mut stale = Vec::new();
        for key in keys {
            let shard = lock(self.shard(&key));
            match shard.entries.get(&key) {
                Some(e) if e.user_id.as_deref() == Some(user_id) && !e.is_expired(now) => {
                    sessions.push(e.info(key)?);
                }
                _ => stale.push(key),
            }
        }
        for key in stale {
            self.unindex_user(user_id, &key);
        }
        sessions.sort_by_key(|s| (s.created_at, s.key));
        Ok(sessions)
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(self.sweep_all(now.unix_timestamp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;
    use serde_json::Value;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    fn record(now: i64, user: Option<&str>) -> SessionRecord {
        let mut r = SessionRecord::new(
            at(now),
            time::Duration::seconds(100),
            time::Duration::seconds(1000),
        );
        r.user_id = user.map(String::from);
        r
    }

    fn key() -> StoreKey {
        SessionId::generate().unwrap().store_key()
    }

    #[tokio::test]
    async fn memory_is_bounded_by_live_sessions_without_a_sweeper() {
        let store = MemoryStore::with_sweep_interval(Duration::from_secs(10));
        for _ in 0..2_000 {
            assert!(store
                .create(&key(), &record(0, Some("u")), at(0))
                .await
                .unwrap());
        }
        assert_eq!(store.len(), 2_000);
        // Long after they expired, creating sessions sweeps the shards they
        // land in; enough creations reach every shard.
        for _ in 0..2_000 {
            store
                .create(&key(), &record(500, None), at(500))
                .await
                .unwrap();
        }
        assert_eq!(store.len(), 2_000, "only the 2,000 live sessions remain");
        assert!(store.list_user("u", at(500)).await.unwrap().is_empty());
        assert!(lock(store.users("u")).get("u").is_none(), "index pruned");
    }

    #[tokio::test]
    async fn expired_record_is_dropped_when_loaded() {
        let store = MemoryStore::new();
        let k = key();
        store
            .create(&k, &record(0, Some("u")), at(0))
            .await
            .unwrap();
        let touch = Touch {
            now: at(100),
            after: 0.1,
        };
        assert_eq!(store.load(&k, touch).await.unwrap(), None);
        assert_eq!(store.len(), 0);
        assert!(lock(store.users("u")).get("u").is_none());
    }

    #[tokio::test]
    async fn sweep_reports_how_many_records_it_removed() {
        let store = MemoryStore::new();
        store
            .create(&key(), &record(0, Some("u")), at(0))
            .await
            .unwrap();
        store.create(&key(), &record(0, None), at(0)).await.unwrap();
        store
            .create(&key(), &record(50, None), at(50))
            .await
            .unwrap();
        assert_eq!(store.sweep_expired(at(120)).await.unwrap(), 2);
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn empty_data_takes_no_json() {
        let store = MemoryStore::new();
        let k = key();
        store.create(&k, &record(0, None), at(0)).await.unwrap();
        let shard = lock(store.shard(&k));
        assert!(shard.entries[&k].data.is_empty());
    }

    #[tokio::test]
    async fn times_beyond_2106_are_refused_not_truncated() {
        let store = MemoryStore::new();
        let far = OffsetDateTime::from_unix_timestamp(i64::from(u32::MAX) + 1).unwrap();
        let r = SessionRecord::new(
            far,
            time::Duration::seconds(100),
            time::Duration::seconds(1000),
        );
        assert!(matches!(
            store.create(&key(), &r, far).await,
            Err(StoreError::Backend(_))
        ));
        assert!(store.is_empty());
    }

    #[test]
    fn entries_stay_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn debug_shows_counts_only() {
        let shown = format!("{:?}", MemoryStore::new());
        assert!(shown.starts_with("MemoryStore { records: 0"));
    }

    #[test]
    fn sweep_interval_rounds_up_to_whole_seconds() {
        let store = MemoryStore::with_sweep_interval(Duration::from_millis(1500));
        assert_eq!(store.inner.sweep_interval_secs, 2);
        let store = MemoryStore::with_sweep_interval(Duration::ZERO);
        assert_eq!(store.inner.sweep_interval_secs, 1);
    }

    #[test]
    fn users_map_value_is_a_plain_json_object() {
        let mut r = record(0, None);
        r.data.insert("k".into(), Value::from("v"));
        let e = Entry::from_record(&r).unwrap();
        assert_eq!(&*e.data, r#"{"k":"v"}"#);
        assert_eq!(e.to_record().unwrap(), r);
    }
}

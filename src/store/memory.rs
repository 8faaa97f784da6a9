//! [`MemoryStore`]: sessions in a sharded in-process map. (This module is
//! private: what users read is on [`MemoryStore`] and
//! [`MemoryStoreBuilder`].)

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::device::Device;
use crate::id::StoreKey;
use crate::record::{whole_seconds, Patch, SessionInfo, SessionRecord, Touch};
use crate::store::ConfigError;
use crate::store::{Change, ChangeNotifier, Changes, Deleted, SessionStore, StoreError};

const RECORD_SHARDS: usize = 64;
const USER_SHARDS: usize = 16;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// The most sessions a store holds unless told otherwise: 15,625 per shard,
/// about 300 MB of small sessions. Without a bound, requests that write to
/// a session without sending a cookie back could fill the process.
const DEFAULT_CAPACITY: usize = 1_000_000;

/// Sessions in process memory: for single-process apps, development and
/// tests.
///
/// Records live in 64 independently locked shards, so concurrent requests
/// rarely wait on each other. Memory is bounded by the live sessions: a
/// record is dropped when it is found expired on access, each shard drops
/// all its expired records at most once per sweep interval (60 s by
/// default) the next time it is used, and a layer on this store sweeps the
/// whole store from a background thread at that interval, with the
/// layer's clock (see [`SessionStore::background_sweep`]).
///
/// Its [`capacity`](MemoryStoreBuilder::capacity), 1,000,000 sessions
/// unless set, bounds memory however many sessions are created (by clients
/// that never send their cookie back, say): when the shard a new session lands in
/// is full after sweeping, its least recently active *anonymous* session is
/// evicted (its data is lost); when the shard holds only logged-in
/// sessions, the new session is refused with [`StoreError::Unavailable`]
/// (a `503`) while every existing session keeps working.
///
/// Data is kept as compact JSON text (about the size of the JSON plus ~200
/// bytes of bookkeeping per session), and a user index serves
/// logout-everywhere and listing. Everything is lost when the process exits,
/// and each process has its own sessions: use Redis or PostgreSQL behind a
/// load balancer.
///
/// Clones share the same sessions.
///
/// # Example
///
/// ```
/// use cloakroom::{Key, MemoryStore, SessionLayer};
///
/// let store = MemoryStore::builder().capacity(1_000_000).build()?;
/// let layer = SessionLayer::builder(store.clone())
///     .key(Key::generate()?)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    users: Box<[Mutex<UserIndex>]>,
    user_hasher: RandomState,
    sweep_interval: Duration,
    sweep_interval_secs: i64,
    /// The most records one shard may hold.
    shard_capacity: usize,
    /// Announces ended and moved sessions to session watches.
    changes: ChangeNotifier,
}

/// User ID to the keys of that user's sessions.
type UserIndex = HashMap<Box<str>, HashSet<StoreKey>>;

#[derive(Default)]
struct Shard {
    entries: HashMap<StoreKey, Entry, KeyHash>,
    /// Retired sessions: where each moved, and until when that is told.
    forwards: HashMap<StoreKey, Forward, KeyHash>,
    /// Unix time after which the next use of this shard sweeps it.
    next_sweep: i64,
}

/// Hashes a store key by eight of its own bytes. A store key is a SHA-256
/// output of an ID drawn from the OS CSPRNG: evenly spread, and chosen by
/// no one, so a keyed hash (the map's default, SipHash) would guard against
/// nothing here, at the price of hashing 32 bytes on every lookup.
#[derive(Clone, Copy, Default)]
struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// See [`KeyHash`].
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Bytes 8..16: byte 0 already chose the shard.
        let bytes = bytes.get(8..16).unwrap_or(bytes);
        let mut word = [0u8; 8];
        let len = bytes.len().min(8);
        word[..len].copy_from_slice(&bytes[..len]);
        self.0 = self.0.rotate_left(8) ^ u64::from_le_bytes(word);
    }

    /// The length a slice's hash writes first (always 32 here).
    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

struct Forward {
    successor: StoreKey,
    until: i64,
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
    /// Boxed: most sessions are anonymous and have none.
    device: Option<Box<Device>>,
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

/// A new session refused because its shard is full of logged-in sessions.
#[derive(Debug)]
struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryStore is at its capacity of logged-in sessions")
    }
}

impl std::error::Error for Full {}

impl Entry {
    fn from_record(record: &SessionRecord) -> Result<Self, StoreError> {
        Ok(Self {
            data: encode_data(&record.data)?,
            user_id: record.user_id.as_deref().map(Box::from),
            created_at: seconds(record.created_at.unix_timestamp(), "times")?,
            last_seen: seconds(record.last_seen.unix_timestamp(), "times")?,
            idle_timeout: seconds(whole_seconds(record.idle_timeout), "timeouts")?,
            absolute_deadline: seconds(record.absolute_deadline.unix_timestamp(), "times")?,
            persistent: record.persistent,
            device: (!record.device.is_empty()).then(|| Box::new(record.device.clone())),
        })
    }

    fn to_record(&self) -> Result<SessionRecord, StoreError> {
        Ok(SessionRecord {
            data: self.decode_data()?,
            user_id: self.user_id.as_deref().map(String::from),
            created_at: timestamp(self.created_at)?,
            last_seen: timestamp(self.last_seen)?,
            idle_timeout: Duration::from_secs(u64::from(self.idle_timeout)),
            absolute_deadline: timestamp(self.absolute_deadline)?,
            persistent: self.persistent,
            device: self.device(),
        })
    }

    fn decode_data(&self) -> Result<Map<String, Value>, StoreError> {
        if self.data.is_empty() {
            return Ok(Map::new());
        }
        serde_json::from_str(&self.data).map_err(StoreError::corrupt)
    }

    /// Applies `patch` and records the activity when due, as a decoded
    /// record would, touching only what the patch names: the data is
    /// decoded and encoded again only when the patch changes it, and the
    /// user and device stay as stored. Everything that can fail runs
    /// before the first field changes, so a patch applies whole or not at
    /// all.
    fn patch(&mut self, patch: &Patch, touch: Touch) -> Result<(), StoreError> {
        let data = match patch.changes_data() {
            false => None,
            // A cleared session's old data is not needed to patch it.
            true if patch.clear => Some(Map::new()),
            true => Some(self.decode_data()?),
        };
        let data = data
            .map(|mut data| {
                patch.apply_to_data(&mut data);
                encode_data(&data)
            })
            .transpose()?;
        let lifetime = patch
            .lifetime
            .map(|lifetime| {
                Ok::<_, StoreError>((
                    seconds(whole_seconds(lifetime.idle_timeout), "timeouts")?,
                    seconds(lifetime.absolute_deadline.unix_timestamp(), "times")?,
                    lifetime.persistent,
                ))
            })
            .transpose()?;
        let idle_timeout = lifetime.map_or(self.idle_timeout, |(idle, _, _)| idle);
        let touched = touch.due(
            timestamp(self.last_seen)?,
            Duration::from_secs(u64::from(idle_timeout)),
        );
        let last_seen = match touched {
            true => seconds(touch.now.unix_timestamp(), "times")?,
            false => self.last_seen,
        };
        if let Some(data) = data {
            self.data = data;
        }
        if let Some((idle_timeout, absolute_deadline, persistent)) = lifetime {
            self.idle_timeout = idle_timeout;
            self.absolute_deadline = absolute_deadline;
            self.persistent = persistent;
        }
        self.last_seen = last_seen;
        Ok(())
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
            device: self.device(),
        })
    }

    fn device(&self) -> Device {
        self.device.as_deref().cloned().unwrap_or_default()
    }
}

/// Session data as stored in an [`Entry`]: compact JSON, empty for none.
fn encode_data(data: &Map<String, Value>) -> Result<Box<str>, StoreError> {
    if data.is_empty() {
        return Ok(Box::from(""));
    }
    serde_json::to_string(data)
        .map(String::into_boxed_str)
        .map_err(StoreError::backend)
}

fn timestamp(secs: u32) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(i64::from(secs)).map_err(StoreError::corrupt)
}

/// Locks without propagating poison: no code below panics while holding a
/// lock, and a poisoned shard would otherwise take sessions down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds a [`MemoryStore`]; start with [`MemoryStore::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct MemoryStoreBuilder {
    capacity: usize,
    sweep_interval: Duration,
}

impl MemoryStoreBuilder {
    /// The most sessions the store holds; 1,000,000 by default. Each of the
    /// 64 shards holds an equal share, so the figure is rounded up to a
    /// multiple of 64: `capacity(1000)` holds up to 1,024 sessions, and
    /// `capacity(1)` up to 64. See [`MemoryStore`] for what happens when a
    /// shard is full.
    pub fn capacity(mut self, sessions: usize) -> Self {
        self.capacity = sessions;
        self
    }

    /// How often each shard, and the background sweep, drop expired
    /// records (rounded up to whole seconds); 60 s by default. Shorter
    /// intervals bound memory more tightly at the cost of more frequent
    /// scans.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Builds the store.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroCapacity`] for a capacity of zero.
    pub fn build(self) -> Result<MemoryStore, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        let secs = i64::try_from(self.sweep_interval.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_add(i64::from(self.sweep_interval.subsec_nanos() > 0))
            .max(1);
        Ok(MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..RECORD_SHARDS).map(|_| Mutex::default()).collect(),
                users: (0..USER_SHARDS).map(|_| Mutex::default()).collect(),
                user_hasher: RandomState::new(),
                sweep_interval: Duration::from_secs(secs.unsigned_abs()),
                sweep_interval_secs: secs,
                shard_capacity: self.capacity.div_ceil(RECORD_SHARDS),
                changes: ChangeNotifier::new(),
            }),
        })
    }
}

impl MemoryStore {
    /// An empty store that holds up to 1,000,000 sessions and sweeps every
    /// 60 seconds.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// Starts configuring a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            capacity: DEFAULT_CAPACITY,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }

    /// How many records are held, including expired ones not yet swept
    /// (forwards left by logins are not counted).
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

    fn unindex_user(&self, user_id: &str, key: &StoreKey) {
        let mut users = lock(self.users(user_id));
        if let Some(keys) = users.get_mut(user_id) {
            keys.remove(key);
            if keys.is_empty() {
                users.remove(user_id);
            }
        }
    }

    fn unindex_all(&self, owned: Vec<(StoreKey, Box<str>)>) {
        for (key, user) in owned {
            self.unindex_user(&user, &key);
        }
    }

    /// Drops every expired record and lapsed forward of one shard; returns
    /// the owners of the dropped records so their index entries can go too.
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
        shard.forwards.retain(|_, forward| forward.until > now);
        owned
    }

    /// Sweeps the shard if its interval has passed: every operation that
    /// locks a shard calls this, so busy shards never hold expired records
    /// for long. Usually an empty, unallocated vector.
    fn sweep_if_due(&self, shard: &mut Shard, now: i64) -> Vec<(StoreKey, Box<str>)> {
        if now < shard.next_sweep {
            return Vec::new();
        }
        shard.next_sweep = now.saturating_add(self.inner.sweep_interval_secs);
        Self::sweep_shard(shard, now)
    }

    fn sweep_all(&self, now: i64) -> u64 {
        let mut removed = 0u64;
        for shard in self.inner.shards.iter() {
            let owned = {
                let mut shard = lock(shard);
                let before = shard.entries.len() + shard.forwards.len();
                let owned = Self::sweep_shard(&mut shard, now);
                removed += (before - shard.entries.len() - shard.forwards.len()) as u64;
                shard.next_sweep = now.saturating_add(self.inner.sweep_interval_secs);
                owned
            };
            self.unindex_all(owned);
        }
        removed
    }

    /// Makes room for one more record in a full shard: drops its expired
    /// records (their owners join `swept`), then evicts the least recently
    /// active anonymous session. Returns whether there is room.
    fn make_room(
        &self,
        shard: &mut Shard,
        now: i64,
        swept: &mut Vec<(StoreKey, Box<str>)>,
    ) -> bool {
        let capacity = self.inner.shard_capacity;
        if shard.entries.len() < capacity {
            return true;
        }
        // Expired records go before any live one does.
        swept.extend(Self::sweep_shard(shard, now));
        if shard.entries.len() < capacity {
            return true;
        }
        let oldest = shard
            .entries
            .iter()
            .filter(|(_, entry)| entry.user_id.is_none())
            .min_by_key(|(_, entry)| entry.last_seen)
            .map(|(key, _)| *key);
        match oldest {
            Some(key) => {
                shard.entries.remove(&key);
                crate::events::session_evicted_for_room(&key);
                true
            }
            None => false,
        }
    }

    /// The user's live entries (under their shard locks, one at a time),
    /// mapped by `f`; keys that are no longer the user's leave the index.
    fn user_entries<T>(
        &self,
        user_id: &str,
        now: i64,
        mut f: impl FnMut(&StoreKey, &Entry) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let keys: Vec<StoreKey> = match lock(self.users(user_id)).get(user_id) {
            Some(keys) => keys.iter().copied().collect(),
            None => return Ok(Vec::new()),
        };
        let mut found = Vec::with_capacity(keys.len());
        let mut stale = Vec::new();
        for key in keys {
            let shard = lock(self.shard(&key));
            match shard.entries.get(&key) {
                Some(e) if e.user_id.as_deref() == Some(user_id) && !e.is_expired(now) => {
                    found.push(f(&key, e)?);
                }
                _ => stale.push(key),
            }
        }
        for key in stale {
            self.unindex_user(user_id, &key);
        }
        Ok(found)
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
            .field(
                "capacity",
                &self.inner.shard_capacity.saturating_mul(RECORD_SHARDS),
            )
            .finish()
    }
}

impl MemoryStore {
    /// The step of `delete_all` that follows live forwards: a session that
    /// a regenerate moved while the pass ran may have its new record in a
    /// shard the pass has already been through, so each successor (and the
    /// one its own live forward names, and so on) is ended here, by the
    /// pass's rule: a record created up to `until` goes, one created later
    /// (a login's) stays. Returns how many live sessions it ended.
    fn end_moved(&self, mut moved: Vec<StoreKey>, until: i64, now: i64) -> u64 {
        let mut ended = 0;
        // Successors are fresh keys, so a chain never loops back; `seen`
        // guards against a store that was tampered with all the same.
        let mut seen = HashSet::new();
        while let Some(key) = moved.pop() {
            if !seen.insert(key) {
                continue;
            }
            let owner = {
                let mut shard = lock(self.shard(&key));
                if let Some(forward) = shard.forwards.remove(&key) {
                    if forward.until > now {
                        moved.push(forward.successor);
                    }
                    continue;
                }
                match shard.entries.get(&key) {
                    Some(entry) if i64::from(entry.created_at) <= until => {}
                    _ => continue,
                }
                let entry = shard.entries.remove(&key);
                entry.and_then(|entry| {
                    ended += u64::from(!entry.is_expired(now));
                    entry.user_id
                })
            };
            if let Some(user) = owner {
                self.unindex_user(&user, &key);
            }
        }
        ended
    }

    /// `delete`, or `delete_owned` when `owner` is given: whose the record
    /// is, is checked under the same shard lock that removes it.
    fn remove(&self, key: &StoreKey, owner: Option<&str>, now: OffsetDateTime) -> Deleted {
        let now = now.unix_timestamp();
        let entry = {
            let mut shard = lock(self.shard(key));
            match shard.forwards.get(key) {
                // Kept until it lapses: a retried logout follows it again.
                Some(forward) if forward.until > now => {
                    return Deleted::Forward(forward.successor);
                }
                Some(_) => {
                    shard.forwards.remove(key);
                }
                None => {}
            }
            if let (Some(owner), Some(entry)) = (owner, shard.entries.get(key)) {
                // Someone else's live session (or an anonymous one) stays.
                if !entry.is_expired(now) && entry.user_id.as_deref() != Some(owner) {
                    return Deleted::Nothing;
                }
            }
            shard.entries.remove(key)
        };
        let Some(entry) = entry else {
            return Deleted::Nothing;
        };
        let live = !entry.is_expired(now);
        if let Some(user) = entry.user_id {
            self.unindex_user(&user, key);
        }
        if live {
            Deleted::Session
        } else {
            Deleted::Nothing
        }
    }
}

impl SessionStore for MemoryStore {
    const IN_PROCESS: bool = true;

    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let entry = Entry::from_record(record)?;
        let now = now.unix_timestamp();
        // A user's session is stored and indexed under the lock of the
        // user's index (taken before the record's shard, always in that
        // order), which logout-everywhere holds throughout: it sees the
        // session either not at all or indexed.
        let mut users = record.user_id.as_deref().map(|u| lock(self.users(u)));
        let (swept, inserted) = {
            let mut shard = lock(self.shard(key));
            let mut swept = self.sweep_if_due(&mut shard, now);
            let taken_by_forward = match shard.forwards.get(key) {
                Some(forward) if forward.until > now => true,
                Some(_) => {
                    shard.forwards.remove(key);
                    false
                }
                None => false,
            };
            // `Ok(None)`: the key is taken. `Ok(Some(owner))`: stored,
            // replacing an expired record of `owner`, if any.
            let existing = shard.entries.get(key).map(|e| e.is_expired(now));
            let inserted = match (taken_by_forward, existing) {
                (true, _) | (false, Some(false)) => Ok(None),
                (false, Some(true)) => Ok(Some(
                    shard
                        .entries
                        .insert(*key, entry)
                        .and_then(|old| old.user_id),
                )),
                (false, None) if self.make_room(&mut shard, now, &mut swept) => {
                    shard.entries.insert(*key, entry);
                    // The sweep above may have just dropped an expired
                    // record under this very key: then it was replaced, as
                    // in the arm above, and its owner's index entry must
                    // stay when the new record is the same user's.
                    let replaced = swept
                        .iter()
                        .position(|(swept_key, _)| swept_key == key)
                        .map(|at| swept.swap_remove(at).1);
                    Ok(Some(replaced))
                }
                (false, None) => Err(StoreError::unavailable(Full)),
            };
            (swept, inserted)
        };
        if let (Some(users), Some(user), Ok(Some(_))) = (&mut users, &record.user_id, &inserted) {
            users
                .entry(Box::from(user.as_str()))
                .or_default()
                .insert(*key);
        }
        // Other users' index entries only once this user's lock is gone.
        drop(users);
        self.unindex_all(swept);
        let Some(replaced_owner) = inserted? else {
            return Ok(false);
        };
        if let Some(user) = replaced_owner {
            if record.user_id.as_deref() != Some(&*user) {
                self.unindex_user(&user, key);
            }
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
        let swept = self.sweep_if_due(&mut shard, now);
        let loaded = match shard.entries.get_mut(key) {
            None => Ok(None),
            Some(entry) if entry.is_expired(now) => {
                let owner = shard.entries.remove(key).and_then(|e| e.user_id);
                drop(shard);
                if let Some(user) = owner {
                    self.unindex_user(&user, key);
                }
                self.unindex_all(swept);
                return Ok(None);
            }
            Some(entry) => entry.to_record().and_then(|record| {
                if record.touch_due(&touch) {
                    entry.last_seen = seconds(now, "times")?;
                }
                Ok(Some(record))
            }),
        };
        drop(shard);
        self.unindex_all(swept);
        loaded
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
        // Patched under the shard lock, so that two patches to one session
        // apply one after the other.
        entry.patch(patch, touch)?;
        Ok(true)
    }

    async fn retire(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now = now.unix_timestamp();
        // The owner's index lock comes first (the lock order of `create`),
        // so logout-everywhere sees the session either still live and
        // indexed, or retired after the successor was indexed.
        let owner = {
            let shard = lock(self.shard(key));
            if let Some(forward) = shard.forwards.get(key) {
                return Ok(forward.successor == *successor && forward.until > now);
            }
            match shard.entries.get(key) {
                Some(entry) if !entry.is_expired(now) => entry.user_id.clone(),
                _ => return Ok(false),
            }
        };
        let mut users = owner.as_deref().map(|u| lock(self.users(u)));
        {
            let mut shard = lock(self.shard(key));
            // Deleted (or retired) while the lock was taken: nothing to do.
            match shard.entries.get(key) {
                Some(entry) if !entry.is_expired(now) && entry.user_id == owner => {}
                _ => return Ok(false),
            }
            shard.entries.remove(key);
            shard.forwards.insert(
                *key,
                Forward {
                    successor: *successor,
                    until: until.unix_timestamp(),
                },
            );
        }
        self.inner.changes.notify(Change::Session(*key));
        if let (Some(users), Some(owner)) = (&mut users, &owner) {
            if let Some(keys) = users.get_mut(&**owner) {
                keys.remove(key);
                if keys.is_empty() {
                    users.remove(&**owner);
                }
            }
        }
        Ok(true)
    }

    async fn restore(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let entry = Entry::from_record(record)?;
        let now = now.unix_timestamp();
        // The user's index lock first, as in `create`: logout-everywhere
        // sees the session either still a forward or restored and indexed.
        // No room is made: the forward held this key's place, and the
        // layer deletes the successor next.
        let mut users = record.user_id.as_deref().map(|u| lock(self.users(u)));
        {
            let mut shard = lock(self.shard(key));
            match shard.forwards.get(key) {
                Some(forward) if forward.successor == *successor && forward.until > now => {}
                _ => return Ok(false),
            }
            shard.forwards.remove(key);
            shard.entries.insert(*key, entry);
        }
        if let (Some(users), Some(user)) = (&mut users, &record.user_id) {
            users
                .entry(Box::from(user.as_str()))
                .or_default()
                .insert(*key);
        }
        Ok(true)
    }

    async fn delete(&self, key: &StoreKey, now: OffsetDateTime) -> Result<Deleted, StoreError> {
        let deleted = self.remove(key, None, now);
        self.inner.changes.notify(Change::Session(*key));
        Ok(deleted)
    }

    async fn delete_owned(
        &self,
        key: &StoreKey,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Deleted, StoreError> {
        let deleted = self.remove(key, Some(user_id), now);
        self.inner.changes.notify(Change::Session(*key));
        Ok(deleted)
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        // The user's index lock is held throughout: `create` and `retire`
        // of this user's sessions wait for it, so none slips past (see
        // `retire`), and one pass is enough.
        let mut users = lock(self.users(user_id));
        let Some(keys) = users.get_mut(user_id) else {
            return Ok(0);
        };
        let doomed: Vec<StoreKey> = keys.iter().filter(|k| Some(*k) != keep).copied().collect();
        let mut deleted = 0;
        for key in doomed {
            let mut shard = lock(self.shard(&key));
            // The index may lag behind a record that was replaced or
            // retired; only the user's own records go.
            if shard
                .entries
                .get(&key)
                .is_some_and(|e| e.user_id.as_deref() == Some(user_id))
            {
                shard.entries.remove(&key);
                deleted += 1;
            }
            keys.remove(&key);
        }
        if keys.is_empty() {
            users.remove(user_id);
        }
        drop(users);
        self.inner.changes.notify(Change::User(user_id.to_owned()));
        Ok(deleted)
    }

    /// One shard at a time, under that shard's lock alone (a 64th of the
    /// store): its records created up to `created_until` and all its
    /// forwards go; then, with the shard's lock released (the lock order
    /// is user index before shard), the deleted records leave their users'
    /// indexes, and the records the shard's live forwards lead to are
    /// ended by the same rule (a regenerate racing the pass may have put
    /// its new record in a shard already gone through).
    async fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let until = created_until.unix_timestamp();
        let now = now.unix_timestamp();
        let mut ended = 0;
        for shard in self.inner.shards.iter() {
            let mut owned = Vec::new();
            let moved: Vec<StoreKey> = {
                let mut shard = lock(shard);
                shard.entries.retain(|key, entry| {
                    if i64::from(entry.created_at) > until {
                        return true;
                    }
                    if !entry.is_expired(now) {
                        ended += 1;
                    }
                    if let Some(user) = entry.user_id.take() {
                        owned.push((*key, user));
                    }
                    false
                });
                shard
                    .forwards
                    .drain()
                    .filter(|(_, forward)| forward.until > now)
                    .map(|(_, forward)| forward.successor)
                    .collect()
            };
            self.unindex_all(owned);
            ended += self.end_moved(moved, until, now);
        }
        self.inner.changes.notify(Change::All);
        Ok(ended)
    }

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let found = self.user_entries(user_id, now.unix_timestamp(), |_, _| Ok(()))?;
        Ok(found.len() as u64)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let mut sessions =
            self.user_entries(user_id, now.unix_timestamp(), |key, e| e.info(*key))?;
        sessions.sort_by_key(|s| (s.created_at, s.key));
        let excess = sessions.len().saturating_sub(limit);
        sessions.drain(..excess);
        Ok(sessions)
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(self.sweep_all(now.unix_timestamp()))
    }

    fn background_sweep(&self) -> Option<Duration> {
        Some(self.inner.sweep_interval)
    }

    fn changes(&self) -> Option<Changes> {
        Some(self.inner.changes.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;
    use serde_json::Value;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)
    }

    fn record(now: i64, user: Option<&str>) -> SessionRecord {
        let mut r =
            SessionRecord::new(at(now), Duration::from_secs(100), Duration::from_secs(1000));
        r.user_id = user.map(String::from);
        r
    }

    fn key() -> StoreKey {
        SessionId::generate().unwrap().store_key()
    }

    #[test]
    fn store_keys_hash_to_their_own_bytes_and_keys_of_one_shard_spread() {
        let counting = StoreKey::from_bytes(std::array::from_fn(|i| i as u8));
        assert_eq!(
            KeyHash.hash_one(counting),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15])
        );
        // Keys that share their shard byte still hash apart.
        let hashes: HashSet<u64> = (0..1000)
            .map(|_| {
                let mut bytes = *key().as_bytes();
                bytes[0] = 0;
                KeyHash.hash_one(StoreKey::from_bytes(bytes))
            })
            .collect();
        assert_eq!(hashes.len(), 1000);
    }

    #[tokio::test]
    async fn memory_is_bounded_by_live_sessions_without_a_sweeper() {
        let store = MemoryStore::builder()
            .sweep_interval(Duration::from_secs(10))
            .build()
            .unwrap();
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
        assert!(store.list_user("u", at(500), 10).await.unwrap().is_empty());
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
        let r = SessionRecord::new(far, Duration::from_secs(100), Duration::from_secs(1000));
        assert!(matches!(
            store.create(&key(), &r, far).await,
            Err(StoreError::Backend(_))
        ));
        assert!(store.is_empty());
    }

    /// One cache line per session besides its data, user id and device.
    #[test]
    fn entries_stay_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 64,
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
        let store = MemoryStore::builder()
            .sweep_interval(Duration::from_millis(1500))
            .build()
            .unwrap();
        assert_eq!(store.inner.sweep_interval_secs, 2);
        let store = MemoryStore::builder()
            .sweep_interval(Duration::ZERO)
            .build()
            .unwrap();
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

    #[tokio::test]
    async fn a_full_store_evicts_the_least_recently_active_anonymous_session() {
        let store = MemoryStore::builder().capacity(64).build().unwrap();
        // Capacity 64 is one record per shard: find two keys of one shard.
        let first = key();
        let second = loop {
            let k = key();
            if k.as_bytes()[0] % 64 == first.as_bytes()[0] % 64 {
                break k;
            }
        };
        store.create(&first, &record(0, None), at(0)).await.unwrap();
        assert!(store
            .create(&second, &record(10, None), at(10))
            .await
            .unwrap());
        let touch = Touch {
            now: at(11),
            after: 1.0,
        };
        assert_eq!(store.load(&first, touch).await.unwrap(), None, "evicted");
        assert!(store.load(&second, touch).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_store_full_of_logged_in_sessions_refuses_new_ones() {
        let store = MemoryStore::builder().capacity(1).build().unwrap();
        let first = key();
        let second = loop {
            let k = key();
            if k.as_bytes()[0] % 64 == first.as_bytes()[0] % 64 {
                break k;
            }
        };
        store
            .create(&first, &record(0, Some("u")), at(0))
            .await
            .unwrap();
        assert!(matches!(
            store.create(&second, &record(10, None), at(10)).await,
            Err(StoreError::Unavailable(_))
        ));
        let touch = Touch {
            now: at(11),
            after: 1.0,
        };
        assert!(store.load(&first, touch).await.unwrap().is_some(), "kept");
        // Once the logged-in session has expired, there is room again.
        assert!(store
            .create(&second, &record(200, None), at(200))
            .await
            .unwrap());
    }

    #[test]
    fn a_store_is_bounded_unless_told_otherwise_and_rounds_to_its_shards() {
        let capacity = |store: MemoryStore| store.inner.shard_capacity * RECORD_SHARDS;
        assert_eq!(capacity(MemoryStore::new()), 1_000_000);
        assert_eq!(capacity(MemoryStore::builder().build().unwrap()), 1_000_000);
        assert_eq!(
            capacity(MemoryStore::builder().capacity(1000).build().unwrap()),
            1024,
            "as documented"
        );
        assert_eq!(
            capacity(MemoryStore::builder().capacity(64).build().unwrap()),
            64
        );
    }

    #[test]
    fn a_capacity_of_zero_is_refused() {
        assert_eq!(
            MemoryStore::builder().capacity(0).build().unwrap_err(),
            ConfigError::ZeroCapacity
        );
    }

    #[tokio::test]
    async fn loads_sweep_their_shard_once_the_interval_has_passed() {
        let store = MemoryStore::builder()
            .sweep_interval(Duration::from_secs(10))
            .build()
            .unwrap();
        let keys: Vec<StoreKey> = (0..500).map(|_| key()).collect();
        for k in &keys {
            store.create(k, &record(0, Some("u")), at(0)).await.unwrap();
        }
        let touch = Touch {
            now: at(500),
            after: 1.0,
        };
        // Loads of unknown keys reach every shard and sweep it.
        for _ in 0..2_000 {
            store.load(&key(), touch).await.unwrap();
        }
        assert_eq!(store.len(), 0, "no record outlived its deadline");
        assert!(lock(store.users("u")).get("u").is_none(), "index pruned");
    }

    /// What `delete_all` does with the successors of the live forwards it
    /// deleted (a regenerate racing the pass may have put its new record
    /// in a shard already gone through): a regenerate's successor, made
    /// with the old creation time, ends, along a chain of moves too; a
    /// login's, created after the cutoff, stays.
    #[tokio::test]
    async fn the_successors_of_live_forwards_end_by_the_cutoff_rule() {
        let store = MemoryStore::new();
        let (moved, chained, regenerated, logged_in) = (key(), key(), key(), key());
        store
            .create(&moved, &record(0, Some("u")), at(0))
            .await
            .unwrap();
        store
            .create(&chained, &record(0, Some("u")), at(0))
            .await
            .unwrap();
        assert!(store.retire(&moved, &chained, at(60), at(1)).await.unwrap());
        store
            .create(&regenerated, &record(0, Some("u")), at(2))
            .await
            .unwrap();
        assert!(store
            .retire(&chained, &regenerated, at(60), at(2))
            .await
            .unwrap());
        store
            .create(&logged_in, &record(20, Some("v")), at(20))
            .await
            .unwrap();
        // Cutoff 10, now 30: the chain leads from `chained` (a live
        // forward) to `regenerated`; `logged_in` is newer than the cutoff.
        assert_eq!(store.end_moved(vec![chained, logged_in], 10, 30), 1);
        let touch = Touch {
            now: at(30),
            after: 1.0,
        };
        assert_eq!(store.load(&regenerated, touch).await.unwrap(), None);
        // (`moved`'s own forward may share the shard: only `chained`'s
        // must be gone.)
        assert!(!lock(store.shard(&chained)).forwards.contains_key(&chained));
        assert!(lock(store.users("u")).get("u").is_none(), "unindexed");
        assert!(store.load(&logged_in, touch).await.unwrap().is_some());
        assert_eq!(store.count_user("v", at(30)).await.unwrap(), 1);
        // `moved` is a forward of its own, left to the pass's walk.
        assert_eq!(
            store.delete(&moved, at(30)).await.unwrap(),
            Deleted::Forward(chained)
        );
    }

    #[tokio::test]
    async fn ending_all_sessions_empties_the_user_index_of_what_it_ended() {
        let store = MemoryStore::new();
        let (old, later) = (key(), key());
        store
            .create(&old, &record(0, Some("u")), at(0))
            .await
            .unwrap();
        store
            .create(&later, &record(20, Some("v")), at(20))
            .await
            .unwrap();
        assert_eq!(store.delete_all(at(10), at(30)).await.unwrap(), 1);
        // No entry of the ended session is left behind to take memory.
        assert!(
            lock(store.users("u")).get("u").is_none(),
            "u's index is gone"
        );
        let kept = lock(store.users("v")).get("v").cloned();
        assert_eq!(
            kept,
            Some([later].into_iter().collect()),
            "v's session stays"
        );
    }

    /// A key that lands in shard `index`.
    fn key_in_shard(index: usize) -> StoreKey {
        loop {
            let k = key();
            if usize::from(k.as_bytes()[0]) % RECORD_SHARDS == index {
                return k;
            }
        }
    }

    /// A regenerate racing `delete_all`: its new record lands in a shard
    /// the pass has been through, and the old one is a forward by the time
    /// the pass reaches its shard. The pass follows the forward, ends the
    /// new record and counts it, so that it cannot look like a pass that
    /// ended nothing.
    #[test]
    fn a_pass_follows_a_session_moved_behind_it() {
        fn run<F: std::future::Future>(future: F) -> F::Output {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(future)
        }
        let store = MemoryStore::new();
        let (old, passed, new) = (key_in_shard(63), key_in_shard(1), key_in_shard(0));
        run(store.create(&old, &record(0, Some("u")), at(0))).unwrap();
        run(store.create(&passed, &record(0, None), at(0))).unwrap();
        // The pass is held at the old session's shard, the last one.
        let held = lock(&store.inner.shards[63]);
        let pass = std::thread::spawn({
            let store = store.clone();
            move || run(store.delete_all(at(10), at(30)))
        });
        // Once the session of shard 1 is gone, shard 0 is behind the pass.
        while !lock(&store.inner.shards[1]).entries.is_empty() {
            std::thread::yield_now();
        }
        run(store.create(&new, &record(0, Some("u")), at(20))).unwrap();
        // The retire, as `retire` does it, under the shard lock held.
        let mut held = held;
        held.entries.remove(&old);
        held.forwards.insert(
            old,
            Forward {
                successor: new,
                until: 60,
            },
        );
        drop(held);
        assert_eq!(
            pass.join().unwrap().unwrap(),
            2,
            "the session passed, and the moved one"
        );
        let touch = Touch {
            now: at(30),
            after: 1.0,
        };
        assert_eq!(run(store.load(&new, touch)).unwrap(), None);
        assert!(lock(&store.inner.shards[63]).forwards.is_empty());
        assert!(lock(store.users("u"))
            .get("u")
            .is_none_or(|keys| !keys.contains(&new)));
    }

    #[tokio::test]
    async fn lapsed_forwards_are_swept() {
        let store = MemoryStore::new();
        let (old, new) = (key(), key());
        store.create(&old, &record(0, None), at(0)).await.unwrap();
        assert!(store.retire(&old, &new, at(30), at(1)).await.unwrap());
        assert_eq!(store.sweep_expired(at(29)).await.unwrap(), 0);
        assert_eq!(store.sweep_expired(at(30)).await.unwrap(), 1);
        assert!(lock(store.shard(&old)).forwards.is_empty());
    }
}

//! [`RedisStore`]: sessions in Redis, standalone or Redis Cluster. (This
//! module is private: what users read, set-up included, is on
//! [`RedisStore`] and [`RedisStoreBuilder`].)
//!
//! This file holds the store, its key layout and the [`SessionStore`]
//! impl. The details live beside it:
//!
//! - `builder`: [`RedisStoreBuilder`], whose `build` checks the key prefix;
//! - `connection`: [`RedisConnection`] (one server or a cluster, with short
//!   timeouts) and which Redis errors mean "unavailable";
//! - `cache`: the optional local cache, and the subscriber that keeps it
//!   true;
//! - `codec`: a session record as hash fields, and `HGETALL`, `HMGET` and
//!   script replies back;
//! - `scripts`: the Lua scripts, one `.lua` file each, sharing
//!   `helpers.lua`;
//! - `user_index`: the per-user sorted set behind logout-everywhere,
//!   counts and listings.

mod builder;
mod cache;
mod codec;
mod connection;
mod scripts;
mod user_index;

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use time::OffsetDateTime;

pub use self::builder::RedisStoreBuilder;
use self::cache::{lock, LocalCache, Subscription};
#[cfg(fuzzing)]
pub(crate) use self::codec::decode_record;
use self::codec::{
    data_field, decode_stored, deleted_from_reply, encode_record, Stored, META_FIELDS,
};
pub use self::connection::RedisConnection;
use self::connection::{store_error, Connection};
use self::scripts::{CREATE, DELETE, DELETE_ALL, DELETE_OWNED, RESTORE, RETIRE, SAVE, TOUCH};
use crate::id::StoreKey;
use crate::record::{saturating_add, whole_seconds, Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{Changes, Deleted, SessionStore, StillLoggingIn, StoreError};

/// The key prefix unless [`RedisStoreBuilder::key_prefix`] says otherwise.
const DEFAULT_PREFIX: &str = "cloakroom:";
/// How many records the per-user operations visit at once, and how many
/// index members one `ZREM` removes at most.
const BATCH: usize = 100;
/// How often `delete_user` goes over a user's index again before it gives
/// up on a user who keeps logging in while being logged out.
const MAX_DELETE_PASSES: usize = 16;
/// The `COUNT` of each `SCAN` step of `delete_all`: about how many keys
/// one step looks at (and so at most how many it returns), so that no step
/// blocks Redis for long and no more than this many keys are held at once.
const SCAN_COUNT: usize = 1000;

/// Sessions in Redis: one server (through a [`ConnectionManager`], which
/// reconnects by itself) or a Redis Cluster (through the crate's async
/// cluster client), reached through a [`RedisConnection`]. Needs Redis 7.0
/// or later.
///
/// [`connect`](Self::connect), [`connect_cluster`](Self::connect_cluster),
/// [`new`](Self::new) and [`from_cluster`](Self::from_cluster) make a store
/// with the default key prefix, `cloakroom:`; [`builder`](Self::builder)
/// sets another. Clones share the connection.
///
/// # Example
///
/// ```no_run
/// use cloakroom::{Key, store::RedisConnection, store::RedisStore, SessionLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // One Redis server, with the default key prefix (`cloakroom:`):
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// // Or a Redis Cluster, given some of its nodes, with a prefix of its own
/// // and a local cache of up to 50,000 sessions:
/// let cluster = RedisConnection::connect_cluster([
///     "redis://10.0.0.1:7000/",
///     "redis://10.0.0.2:7000/",
///     "redis://10.0.0.3:7000/",
/// ])
/// .await?;
/// let store = RedisStore::builder(cluster)
///     .key_prefix("myapp:session:") // checked by build()
///     .local_cache(50_000)
///     .build()?;
/// let layer = SessionLayer::builder(store)
///     .key(Key::from_hex(&std::env::var("SESSION_KEY")?)?)
///     .build()?;
/// # Ok(()) }
/// ```
///
/// An application that already holds a
/// [`ConnectionManager`] or a cluster connection hands it to
/// [`new`](Self::new) or [`from_cluster`](Self::from_cluster), or to
/// [`builder`](Self::builder) for settings of its own.
/// `examples/redis.rs` is a whole app on a cached store.
///
/// # Outages
///
/// When Redis goes away, is paused, or answers `LOADING`, `TRYAGAIN`,
/// `CLUSTERDOWN`, `MASTERDOWN` or `READONLY`, the store reports
/// [`StoreError::Unavailable`]: requests that use their session answer
/// `503` within the layer's store timeout, with nothing half-written and
/// nobody logged out. When Redis is back, service resumes without a
/// restart. The repository's tests stop, pause (`SIGSTOP`) and restart
/// real servers to show it.
///
/// # Layout
///
/// Each session is a hash under `<prefix>s:<store key as hex>`, with the
/// metadata in one-letter fields (`c` created, `s` last seen, `i` idle
/// timeout, `a` absolute deadline, `p` persistent, `u` user), the
/// [`Device`](crate::device::Device) it was logged in from in two more (`b` the
/// User-Agent, `r` the client address such as `192.0.2.1` or
/// `2001:db8::1`, each as text and absent when none was kept), and each
/// data key as a field `d:<key>` holding JSON. The hash's TTL is the
/// session's deadline, so Redis drops it on time by itself. The device
/// fields are written by `create` only: saves (even one that clears the
/// data) leave them alone, and a `create` that replaces an expired hash
/// replaces it whole, so a new session never inherits an old one's
/// device.
///
/// When a session moves to a new ID (login, regenerate), [`retire`]
/// replaces its hash by a *forward* under the same key: a hash with only
/// `f` (the successor's store key as hex) and `w` (until when the forward
/// holds, in Unix seconds), expiring at `w`. Having no `s`, `i` or `a`, a
/// forward never loads or saves as a session; `create` treats it as taken
/// until `w`, and `delete` reports its successor.
///
/// Each user with sessions has a sorted set under `<prefix>u:<SHA-256 of the
/// user id as hex>` whose members are the store keys of their sessions,
/// scored by each session's deadline (the earlier of its idle and absolute
/// deadlines), never below the record's own: the score is set when the
/// session is created and raised when its deadline moves (before a load's
/// touch writes the record; after a save that moved it). Deleting or
/// retiring a session removes its member. So a user's live sessions are
/// the members scored after now: a count or a listing reads only those
/// records, however many sessions of the user have expired. Members scored in the past are pruned at most 100 per count or
/// listing, each after a look at its record (a member whose raise was lost
/// after a save is live, and is raised instead); the set's own TTL is its
/// highest score, so the index expires by itself and never grows without
/// bound. A member whose record is gone, retired or another user's is
/// dropped by the next listing or logout-everywhere that meets it.
///
/// # Round trips
///
/// **A read is one round trip; a touch adds one, at most once per touch
/// interval per session.** [`load`] sends one `HGETALL` of the session's
/// hash (a native command, no script) and decides in the client, with the
/// layer's time, whether it holds a session (not a forward), whether that
/// is live, and whether a touch is due ([`SessionRecord::touch_due`]: at
/// least [`touch_after`] of the idle timeout has passed since `last_seen`,
/// so with the defaults once per 3 minutes of a 30-minute idle timeout).
/// Only then does a second call follow: a small script that sets
/// `last_seen` and moves the TTL to the new deadline if the hash is still a
/// session, still live and still due by its fields as they are now. So a
/// session deleted or retired between the two calls is never written into
/// (nor re-created), `last_seen` never moves backwards, and a lifetime a
/// concurrent save changed is the one the TTL follows: the pair is as good
/// as one atomic step. An expired hash is left to its TTL.
///
/// A touch of a logged-in session first raises its user-index member to
/// the new deadline, a third call at the same rare moment. (The
/// repository's tests count these commands on the wire, through a
/// recording proxy.)
///
/// Saving a patch is one Lua script, so one round trip (and a second, to
/// the user index, when it moved a logged-in session's deadline); it checks
/// the deadline with the layer's time and never re-creates a session. Creating
/// a session is one script, plus one for the user index when a user is
/// logged in. Retiring
/// is one script on the record (checked against the layer's time, never
/// Redis time), plus a `ZREM` from the user index; deleting is the same,
/// whether or not the session must be a given user's (`delete_owned`
/// checks the owner inside the script that deletes).
/// Every script and command touches one key, so Redis Cluster needs no hash
/// tags and logout-everywhere works across slots.
///
/// The per-user operations read the index whole (64 hex digits per
/// session) and then visit the records in batches of 100 in flight at a
/// time, whatever the number of sessions:
///
/// - [`delete_user`] runs passes of one `ZRANGE`, one script per member
///   (deleting the record only if it still belongs to the user) and one
///   `ZREM` per batch of exactly the members handled. Passes repeat until a
///   `ZRANGE` finds nothing left but the kept session, so a session that a
///   racing login created while retiring one of the user's sessions is
///   deleted too; after 16 passes (a user who keeps logging in throughout)
///   it gives up with [`StoreError::Unavailable`].
/// - [`delete_all`] (end all sessions) walks the record keys with `SCAN
///   cursor MATCH <prefix>s:<64 hex digits> COUNT 1000`, on the server or
///   on every master of a cluster (checked against the masters the cluster
///   names, so that none is skipped), and sends one script per key found,
///   a batch of 100 in flight at a time: the script deletes the key if it
///   holds a forward or a session created up to the cutoff, publishing it
///   on `<prefix>changed` first as every deleting script does. Then one
///   `ZREM` per user of the batch drops the deleted sessions from their
///   indexes (an index left empty is gone with its last member), and the
///   successors of the live forwards it deleted go through the same
///   script (a regenerate racing the scan may have put its new record
///   where the scan has already been). At the end a flush message goes
///   out on `<prefix>changed` (on every master), on which every
///   instance's local cache drops everything.
///   Keys that a resharding moves to an already-scanned node while a pass
///   runs can be missed by that pass; run it again once the cluster is
///   stable.
/// - [`count_user`] and [`list_user`] first prune: one `ZRANGE ... BYSCORE
///   LIMIT 0 100` of the members scored in the past, one `HMGET` of the
///   metadata fields of each (never the data), and one `ZREM` of those
///   whose session is over. Then one `ZRANGE ... BYSCORE` of the members
///   scored after now, one `HMGET` of the metadata fields of each (for a
///   listing, the device fields too), and one `ZREM` per batch of members
///   whose record turned out to be gone. Listing
///   keeps only the `limit` most recently created sessions while it reads,
///   so beyond the member list its memory is bounded by `limit`.
///
/// # Local cache
///
/// Built with [`RedisStoreBuilder::local_cache`], the store keeps the
/// sessions it read recently in memory and serves reads of them with no
/// round trip (unless a touch is due). Every script above that changes or
/// ends a session also publishes the session's store key on
/// `<prefix>changed`, whether or not the store has a cache; a cached store
/// subscribes to it and evicts what it hears, and flushes everything when
/// the subscription drops or goes silent. See the builder method for the
/// exact rules. Running a cached store:
///
/// - **Only reads of one session are cached.** Counting and listing a
///   user's sessions ([`count_user`], [`list_user`]: behind
///   [`Session::count_sessions`](crate::Session::count_sessions),
///   [`Session::list_sessions`](crate::Session::list_sessions) and
///   [`SessionAdmin`](crate::SessionAdmin)) always read Redis, the user's
///   index and the metadata of each session in it, as without a cache. An
///   exact count cannot come from the cache: what another instance hears
///   names a session, not its user, so a login elsewhere would go unseen;
///   Redis expires sessions without a word; and a touch, which moves a
///   deadline, is not announced. A page that shows "signed in on N
///   devices" costs one count's round trips per view.
///
/// - **Revocation reaches other instances in a fraction of a
///   millisecond.** From the start of a logout on one instance to another
///   instance's first refusal: p50 116 µs, p99 239 µs (max 1.7 ms) on
///   loopback, over 2,000 logouts (the load benchmark, `benches/README.md`
///   in the repository). The limits of that guarantee (a frozen link, a key
///   deleted behind the store's back) are listed under the crate's
///   [known limits](crate#known-limits).
/// - **A touch is not announced.** It only moves `last_seen` forward, so
///   another instance's older copy is due for a touch (which goes to
///   Redis) no later than the session expires.
/// - **Every `RedisStore` announces its writes**, cached or not, so
///   instances without a cache may share the Redis with cached ones. In a
///   rolling upgrade, turn the cache on only once no instance runs a
///   version that does not announce. The cost to Redis is one `PUBLISH`
///   per write, well under a microsecond with no subscriber; on a cluster
///   each message also crosses the cluster bus to every node.
/// - **Redis ACLs:** the store's user needs the channel
///   (`&<prefix>changed`). Users created under Redis 7's default
///   `acl-pubsub-default resetchannels` have no channels: a script refused
///   its `PUBLISH` stops before it writes, so the request fails and
///   nothing is written.
/// - **Heartbeats.** Redis delivers one node's messages in order, so a
///   heartbeat that came back proves that nothing published before it on
///   that node was lost. The cache serves nothing until the first heartbeat
///   is back. After a lost subscription it tries again after 1 s, through
///   each of the URLs it was given in turn: give a cluster store several
///   node URLs. The subscriber logs `cache_subscribed`,
///   `cache_subscription_lost` and `cache_subscribe_failed` events (target
///   `cloakroom`).
/// - **Memory** is bounded by the capacity. A cached session with one
///   small value takes about 1,000 bytes of heap (993 measured by the load
///   benchmark).
///
/// The repository's tests run two cached instances against each other, on
/// a standalone Redis and on a 3-master cluster: a data write, a logout, a
/// logout-everywhere, an admin revocation and a login on one are seen by
/// the other; killing the subscriptions, restarting Redis or freezing it
/// (`SIGSTOP`) while a revocation happens never leaves the other serving
/// the ended session; and a store whose user may not publish on the
/// channel writes nothing. The whole store suite also runs on cached
/// stores.
///
/// Redis expires records at their deadline by itself, so the layer's clock
/// must follow real time (the default system clock).
///
/// [`retire`]: SessionStore::retire
/// [`load`]: SessionStore::load
/// [`touch_after`]: crate::SessionLayerBuilder::touch_after
/// [`delete_user`]: SessionStore::delete_user
/// [`delete_all`]: SessionStore::delete_all
/// [`count_user`]: SessionStore::count_user
/// [`list_user`]: SessionStore::list_user
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
    prefix: Arc<str>,
    cache: Option<Arc<Cached>>,
    /// For a store without a cache: the subscriber that hears the
    /// invalidation channel for session watches, started by the first
    /// [`SessionStore::changes`] (its cache holds nothing).
    listener: Arc<OnceLock<Arc<Cached>>>,
}

/// A store's local cache, where its subscriber listens, and the
/// subscriber's task.
struct Cached {
    cache: Arc<LocalCache>,
    urls: Arc<[String]>,
    channel: String,
    /// Spawned by `build` inside a runtime, or else by the first load; and
    /// again by a load if it has ended (its runtime shut down while the
    /// store lives on in another).
    subscriber: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Cached {
    fn drop(&mut self) {
        // The last clone of the store is gone: nobody reads the cache.
        if let Some(task) = lock(&self.subscriber).take() {
            task.abort();
        }
    }
}

/// Evicts sessions from the local cache when dropped: after a write to
/// them, whether it succeeded, failed or was cancelled half-way (the write
/// may have reached Redis all the same).
struct EvictAfter<'a> {
    cache: Option<&'a LocalCache>,
    keys: Vec<StoreKey>,
}

impl Drop for EvictAfter<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.cache {
            for key in &self.keys {
                cache.evict(key);
            }
        }
    }
}

impl RedisStore {
    /// A store on a connection manager the application already has, with
    /// the default key prefix.
    pub fn new(manager: ConnectionManager) -> Self {
        Self::with_connection(RedisConnection::from(manager))
    }

    /// A store on a Redis Cluster connection the application already has,
    /// with the default key prefix.
    pub fn from_cluster(connection: ClusterConnection) -> Self {
        Self::with_connection(RedisConnection::from(connection))
    }

    fn with_connection(connection: RedisConnection) -> Self {
        Self {
            connection,
            prefix: Arc::from(DEFAULT_PREFIX),
            cache: None,
            listener: Arc::default(),
        }
    }

    /// The number of sessions in the local cache, or `None` for a store
    /// without one (see [`RedisStoreBuilder::local_cache`]). For metrics
    /// and tests.
    pub fn cached_sessions(&self) -> Option<usize> {
        self.cache.as_ref().map(|c| c.cache.len())
    }

    /// Spawns the local cache's subscriber on the current tokio runtime,
    /// unless it runs already. It holds the cache weakly, and is aborted
    /// when the last clone of the store is dropped.
    fn start_subscriber(&self) {
        if let Some(cached) = &self.cache {
            self.subscribe(cached);
        }
    }

    /// Spawns the subscriber of `cached` (the cache's, or the listener's)
    /// unless it runs already.
    fn subscribe(&self, cached: &Arc<Cached>) {
        // Outside a tokio runtime there is nothing to run it on (and
        // `tokio::spawn` would panic): the cache serves nothing until a load
        // runs inside one.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut task = lock(&cached.subscriber);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        *task = Some(runtime.spawn(cache::subscribe(
            Arc::downgrade(&cached.cache),
            Subscription {
                urls: Arc::clone(&cached.urls),
                channel: cached.channel.clone(),
                connection: self.connection.clone(),
            },
        )));
    }

    fn local_cache(&self) -> Option<&LocalCache> {
        self.cache.as_deref().map(|c| &*c.cache)
    }

    /// A guard that evicts `keys` from the local cache when the write it
    /// covers is over (for a store without a cache, one that does nothing
    /// and allocates nothing).
    fn evict_after(&self, keys: impl IntoIterator<Item = StoreKey>) -> EvictAfter<'_> {
        let cache = self.local_cache();
        EvictAfter {
            cache,
            keys: match cache {
                Some(_) => keys.into_iter().collect(),
                None => Vec::new(),
            },
        }
    }

    /// Connects to one Redis server, e.g. `redis://127.0.0.1:6379/`, with
    /// short timeouts (1 s to connect, 2 s per command) and automatic
    /// reconnection, and uses the default key prefix. Shorthand for
    /// [`RedisConnection::connect`] then [`RedisStore::builder`]`()
    /// .build(connection)`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the URL is invalid or the server cannot be
    /// reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::with_connection(RedisConnection::connect(url).await?))
    }

    /// Connects to a Redis Cluster given one or more of its nodes, with the
    /// same short timeouts as [`RedisStore::connect`], and uses the default
    /// key prefix. Shorthand for [`RedisConnection::connect_cluster`] then
    /// [`RedisStore::builder`]`().build(connection)`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when a URL is invalid or the cluster cannot be
    /// reached.
    pub async fn connect_cluster<I, U>(urls: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        Ok(Self::with_connection(
            RedisConnection::connect_cluster(urls).await?,
        ))
    }

    /// A builder for a store on `connection` (a [`RedisConnection`], or a
    /// [`ConnectionManager`](redis::aio::ConnectionManager) or
    /// [`ClusterConnection`](redis::cluster_async::ClusterConnection) the
    /// application already has) with settings of its own: a key prefix, a
    /// local cache.
    pub fn builder(connection: impl Into<RedisConnection>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(connection.into())
    }

    /// `<prefix>s:<store key as hex>`.
    fn record_key(&self, key: &StoreKey) -> String {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits, which are ASCII.
        let _ = hex::encode_to_slice(key.as_bytes(), &mut hex);
        self.record_key_hex(std::str::from_utf8(&hex).unwrap_or_default())
    }

    /// The record key for a store key already in hex (as index members are).
    fn record_key_hex(&self, hex: &str) -> String {
        let mut name = String::with_capacity(self.prefix.len() + 2 + hex.len());
        name.push_str(&self.prefix);
        name.push_str("s:");
        name.push_str(hex);
        name
    }

    /// A handle to run one command or script on; clones share the
    /// connection.
    fn connection(&self) -> Connection {
        self.connection.handle()
    }

    /// `delete`, or `delete_owned` when `owner` is given: one script
    /// deletes what the key holds (but a live forward, and with `owner`, a
    /// live session that is not theirs) and names the record's user; the
    /// index entry (another slot in a cluster) goes in a second call. Left
    /// behind, it would only be pruned at its absolute deadline or by a
    /// count or listing.
    async fn remove(
        &self,
        key: &StoreKey,
        owner: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Deleted, StoreError> {
        let _evict = self.evict_after([*key]);
        let mut invocation = DELETE.key(self.record_key(key));
        invocation.arg(now.unix_timestamp());
        if let Some(owner) = owner {
            invocation.arg(owner);
        }
        let (what, user, successor): (i64, Option<String>, Option<String>) = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if let Some(user) = user {
            self.unindex(&user, &[key.to_hex()]).await?;
        }
        deleted_from_reply(what, successor.as_deref())
    }
}

/// Flushes the local cache when dropped: after a pass of `delete_all`,
/// whether it succeeded, failed or was cancelled half-way.
struct FlushAfter<'a>(Option<&'a LocalCache>);

impl Drop for FlushAfter<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.0 {
            cache.flush();
        }
    }
}

/// `text` with the characters a `SCAN ... MATCH` pattern gives a meaning
/// to escaped, so that it matches only itself.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl RedisStore {
    /// The `SCAN` pattern of every record key, and of nothing else:
    /// `<prefix>s:` and 64 lowercase hex digits.
    fn record_pattern(&self) -> String {
        let mut pattern = glob_escape(&self.prefix);
        pattern.push_str("s:");
        for _ in 0..64 {
            pattern.push_str("[0-9a-f]");
        }
        pattern
    }

    /// One batch of `delete_all`: the script for each key of `keys` (record
    /// keys the scan found), all in flight at once, then the deleted
    /// sessions out of their users' indexes; then the same for the records
    /// the live forwards among them lead to, and so on. Returns how many
    /// live sessions it deleted.
    ///
    /// Following the forwards is what lets a pass that ends nothing mean
    /// that nothing from before the cutoff is left: a regenerate racing the
    /// pass may create its new record (with the old creation time) where
    /// the scan has already been, and retire the old one before the scan
    /// gets there, leaving only a forward to find.
    async fn delete_all_batch(
        &self,
        keys: &[String],
        created_until: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut ended = 0;
        let mut keys = keys.to_vec();
        // Successors are fresh keys, so a chain never loops back; `seen`
        // guards against a store that was tampered with all the same.
        let mut seen = std::collections::HashSet::new();
        while !keys.is_empty() {
            let (deleted, moved) = self.delete_all_step(&keys, created_until, now).await?;
            ended += deleted;
            keys = moved
                .into_iter()
                .filter(|hex| seen.insert(hex.clone()))
                .map(|hex| self.record_key_hex(&hex))
                .collect();
        }
        Ok(ended)
    }

    /// The script on each of `keys` at once, then the index entries of what
    /// it deleted: how many live sessions it deleted, and the successors
    /// (hex) of the live forwards it deleted.
    async fn delete_all_step(
        &self,
        keys: &[String],
        created_until: i64,
        now: i64,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let hex_of = |record_key: &str| record_key[self.prefix.len() + 2..].to_owned();
        let _evict = self.evict_after(keys.iter().filter_map(|k| hex_of(k).parse().ok()));
        let deletions = keys.iter().map(|record_key| {
            let mut connection = self.connection();
            async move {
                DELETE_ALL
                    .key(record_key)
                    .arg(created_until)
                    .arg(now)
                    .invoke_async::<(i64, Option<String>, Option<String>)>(&mut connection)
                    .await
            }
        });
        let results = futures_util::future::join_all(deletions).await;
        let mut ended = 0;
        let mut moved = Vec::new();
        let mut owned: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        let mut failure = None;
        for (record_key, result) in keys.iter().zip(results) {
            match result {
                Ok((live, user, successor)) => {
                    ended += u64::try_from(live).unwrap_or(0);
                    if let Some(user) = user {
                        owned.entry(user).or_default().push(hex_of(record_key));
                    }
                    moved.extend(successor);
                }
                Err(error) => failure = Some(error),
            }
        }
        // The index entries of what was deleted, whatever else failed: left
        // behind they would only be pruned later.
        let unindexed = futures_util::future::join_all(
            owned
                .iter()
                .map(|(user, members)| self.unindex(user, members)),
        )
        .await;
        if let Some(error) = failure {
            return Err(store_error(error));
        }
        unindexed.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok((ended, moved))
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("mode", &self.connection.mode())
            .field("prefix", &self.prefix)
            .field("local_cache", &self.cache.is_some())
            .finish()
    }
}

impl RedisStore {
    /// Writes `record` under `key` with `script` (`create.lua` or
    /// `restore.lua`: the script's own arguments, `head`, then the record's
    /// fields), then puts a user's session in the user's index. Returns
    /// whether the script wrote.
    async fn write_indexed(
        &self,
        script: &redis::Script,
        key: &StoreKey,
        head: &[String],
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let _evict = self.evict_after([*key]);
        let mut invocation = script.key(self.record_key(key));
        for arg in head {
            invocation.arg(arg);
        }
        for arg in encode_record(record)? {
            invocation.arg(arg);
        }
        let written: i64 = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if written != 1 {
            return Ok(false);
        }
        // The record comes first and the index second. The other order lets
        // a concurrent logout-everywhere find the index entry before the
        // record exists, prune it as stale, and so leave a live session that
        // no later logout-everywhere can reach. In this order an index entry
        // always points at a record that exists or existed.
        if let Some(user) = &record.user_id {
            if let Err(error) = self
                .index(
                    user,
                    key,
                    record.expires_at(),
                    Some(record.absolute_deadline),
                )
                .await
            {
                // Without its index entry the session must not live: nobody
                // holds a new session's ID yet, and a restored one is the
                // old ID of a move whose cookie never went out; deleting it
                // loses nothing that logout-everywhere could still reach.
                let _ = SessionStore::delete(self, key, now).await;
                return Err(error);
            }
        }
        Ok(true)
    }
}

impl SessionStore for RedisStore {
    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let head = [
            now.unix_timestamp().to_string(),
            record.expires_at().unix_timestamp().to_string(),
        ];
        self.write_indexed(&CREATE, key, &head, record, now).await
    }

    async fn load(
        &self,
        key: &StoreKey,
        touch: Touch,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let ticket = match self.local_cache() {
            Some(cache) => {
                if let Some(record) = cache.get(key, &touch) {
                    return Ok(Some(record));
                }
                self.start_subscriber();
                // Taken before the read: what the read returns is kept only
                // if no invalidation of this session came in meanwhile.
                Some(cache.ticket(key))
            }
            None => None,
        };
        // One native read of the whole hash; liveness, expiry and whether
        // a touch is due are decided here, from the record's own fields and
        // the layer's time, exactly as the other stores decide them.
        let record_key = self.record_key(key);
        let reply: redis::Value = redis::cmd("HGETALL")
            .arg(&record_key)
            .query_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        let Stored::Session(record) = decode_stored(reply)? else {
            // Nothing there, or a forward: no session.
            return Ok(None);
        };
        if record.is_expired(touch.now) {
            // Redis drops the hash at its TTL; a read does not spend a
            // second round trip on it.
            return Ok(None);
        }
        if record.touch_due(&touch) {
            if let Some(user) = &record.user_id {
                // The user index learns the new deadline first, so that it
                // never says a live session has expired (a touch that then
                // writes nothing leaves it a little ahead, which is safe).
                let mut touched = record.clone();
                touched.touch(touch.now);
                self.index(
                    user,
                    key,
                    touched.expires_at(),
                    Some(record.absolute_deadline),
                )
                .await?;
            }
            // The second call, at most once per touch interval: the script
            // writes only into a session that is still live and still due
            // by its fields as they are now, so the pair is as good as one
            // atomic step (see "Round trips" on the type).
            let _touched: i64 = TOUCH
                .key(record_key)
                .arg(touch.now.unix_timestamp())
                .arg(touch.after)
                .invoke_async(&mut self.connection())
                .await
                .map_err(store_error)?;
            // The touch moved `last_seen`, so a cached copy is behind: the
            // next read here fetches the new one. (Other instances' copies
            // are only older, so they go to Redis no later than this one.)
            if let Some(cache) = self.local_cache() {
                cache.evict(key);
            }
        } else if let (Some(cache), Some(ticket)) = (self.local_cache(), ticket) {
            cache.keep(ticket, key, record.clone());
        }
        Ok(Some(record))
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        let _evict = self.evict_after([*key]);
        let now = touch.now;
        let record_key = self.record_key(key);
        if let Some(lifetime) = &patch.lifetime {
            // A longer lifetime must reach the user index before the record,
            // or the index could forget a session that is still alive: the
            // latest deadline the save can give it, raised first.
            let user: Option<String> = redis::cmd("HGET")
                .arg(&record_key)
                .arg("u")
                .query_async(&mut self.connection())
                .await
                .map_err(store_error)?;
            if let Some(user) = user {
                let latest = lifetime
                    .absolute_deadline
                    .min(saturating_add(now, lifetime.idle_timeout));
                self.index(&user, key, latest, Some(lifetime.absolute_deadline))
                    .await?;
            }
        }
        let mut invocation = SAVE.key(record_key);
        let (has_lifetime, idle, absolute, persistent) = match &patch.lifetime {
            Some(l) => (
                1,
                whole_seconds(l.idle_timeout),
                l.absolute_deadline.unix_timestamp(),
                u8::from(l.persistent),
            ),
            None => (0, 0, 0, 0),
        };
        invocation
            .arg(now.unix_timestamp())
            .arg(u8::from(patch.clear))
            .arg(patch.remove.len())
            .arg(has_lifetime)
            .arg(idle)
            .arg(absolute)
            .arg(persistent)
            .arg(touch.after);
        for removed in &patch.remove {
            invocation.arg(data_field(removed));
        }
        for (name, value) in &patch.set {
            invocation
                .arg(data_field(name))
                .arg(serde_json::to_vec(value).map_err(StoreError::backend)?);
        }
        let (saved, deadline, user): (i64, i64, Option<String>) = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if let (Some(user), Ok(deadline)) = (user, OffsetDateTime::from_unix_timestamp(deadline)) {
            // The save moved the deadline (a blind write's touch): the
            // index follows, in a second call (another slot in a cluster).
            // If it fails the save stands; the member's score lags behind,
            // and the prune of a later count or listing checks the record
            // and raises it instead of dropping it.
            if let Err(error) = self.index(&user, key, deadline, None).await {
                crate::events::store_index_stale(&error);
            }
        }
        Ok(saved == 1)
    }

    async fn retire(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let _evict = self.evict_after([*key]);
        let (retired, user): (i64, Option<String>) = RETIRE
            .key(self.record_key(key))
            .arg(now.unix_timestamp())
            .arg(successor.to_hex())
            .arg(until.unix_timestamp())
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if let Some(user) = user {
            // The index lives in another slot, so this is a second call. If
            // it fails, the session is retired all the same (the forward is
            // written, and saying otherwise would make the layer undo a move
            // that happened): the member left behind points at a forward,
            // which every count, listing and logout-everywhere skips and
            // prunes.
            if let Err(error) = self.unindex(&user, &[key.to_hex()]).await {
                crate::events::store_index_stale(&error);
            }
        }
        Ok(retired == 1)
    }

    async fn restore(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let head = [
            now.unix_timestamp().to_string(),
            successor.to_hex(),
            record.expires_at().unix_timestamp().to_string(),
        ];
        self.write_indexed(&RESTORE, key, &head, record, now).await
    }

    async fn delete(&self, key: &StoreKey, now: OffsetDateTime) -> Result<Deleted, StoreError> {
        self.remove(key, None, now).await
    }

    async fn delete_owned(
        &self,
        key: &StoreKey,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Deleted, StoreError> {
        self.remove(key, Some(user_id), now).await
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        let keep = keep.map(StoreKey::to_hex);
        let mut deleted = 0;
        // A session created while a pass runs is indexed before its
        // `create` returns, so a later pass finds it; passes end when the
        // index holds nothing of the user but the kept session.
        for _ in 0..MAX_DELETE_PASSES {
            let members: Vec<String> = self
                .index_members(user_id)
                .await?
                .into_iter()
                .filter(|member| Some(member) != keep.as_ref())
                .collect();
            if members.is_empty() {
                return Ok(deleted);
            }
            for batch in members.chunks(BATCH) {
                let _evict = self.evict_after(batch.iter().filter_map(|m| m.parse().ok()));
                // Records live in different cluster slots: one script per
                // record, a batch in flight at a time.
                let deletions = batch.iter().map(|member| {
                    let mut connection = self.connection();
                    let record_key = self.record_key_hex(member);
                    async move {
                        DELETE_OWNED
                            .key(record_key)
                            .arg(user_id)
                            .invoke_async::<i64>(&mut connection)
                            .await
                    }
                });
                let results = futures_util::future::join_all(deletions).await;
                let mut handled = Vec::with_capacity(batch.len());
                let mut failure = None;
                for (member, result) in batch.iter().zip(results) {
                    match result {
                        Ok(n) => {
                            deleted += u64::try_from(n).unwrap_or(0);
                            handled.push(member.clone());
                        }
                        Err(error) => failure = Some(error),
                    }
                }
                // Remove exactly the members handled, never the whole set:
                // a login racing this call may have added a member that must
                // stay for the next pass (or the next logout-everywhere).
                self.unindex(user_id, &handled).await?;
                if let Some(error) = failure {
                    return Err(store_error(error));
                }
            }
        }
        // Sessions of the user were still appearing after the last pass:
        // success would be a lie, so the request fails (retryably) instead.
        Err(StoreError::unavailable(StillLoggingIn {
            passes: MAX_DELETE_PASSES,
        }))
    }

    async fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        // However the pass ends, this instance's cache keeps nothing it
        // held before (the scripts' messages evict what they delete; this
        // covers a message this instance's subscriber has not heard yet).
        let _flush = FlushAfter(self.local_cache());
        let pattern = self.record_pattern();
        let (until, now) = (created_until.unix_timestamp(), now.unix_timestamp());
        let mut ended = 0;
        for node in self.connection.key_nodes().await.map_err(store_error)? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self
                    .connection
                    .scan(&node, cursor, &pattern, SCAN_COUNT)
                    .await
                    .map_err(store_error)?;
                for batch in keys.chunks(BATCH) {
                    ended += self.delete_all_batch(batch, until, now).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        // Every instance's cache drops everything, so that none can serve a
        // deleted session even if it missed one of the scripts' messages.
        self.connection
            .publish_everywhere(&format!("{}changed", self.prefix), cache::FLUSH)
            .await
            .map_err(store_error)?;
        Ok(ended)
    }

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut count = 0;
        // Only the metadata of the members scored after now: a count needs
        // no device, and reading the records (rather than trusting the
        // scores) keeps it exact when records vanished behind the index's
        // back (a `DEL` by hand, an eviction under `maxmemory`).
        self.visit_live(user_id, now, &META_FIELDS, |_| count += 1)
            .await?;
        Ok(count)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.newest_sessions(user_id, now, limit).await
    }

    /// Redis drops records at their deadline by itself, and user indexes
    /// expire with their last session and are pruned on every login, so
    /// there is nothing left to sweep: always `Ok(0)`.
    async fn sweep_expired(&self, _now: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn changes(&self) -> Option<Changes> {
        let cached = match &self.cache {
            Some(cached) => Arc::clone(cached),
            // A connection the app opened itself names no server to
            // subscribe through: watches poll.
            None if self.connection.urls().is_empty() => return None,
            None => Arc::clone(self.listener.get_or_init(|| {
                Arc::new(Cached {
                    cache: Arc::new(LocalCache::new(0, std::time::Duration::ZERO)),
                    urls: Arc::clone(self.connection.urls()),
                    channel: format!("{}changed", self.prefix),
                    subscriber: Mutex::new(None),
                })
            })),
        };
        // Subscribed before the subscriber (re)starts: the feed starts
        // lost and says when it hears Redis.
        let changes = cached.cache.changes().subscribe();
        self.subscribe(&cached);
        Some(changes)
    }
}

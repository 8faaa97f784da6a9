//! [`RedisStore`]: sessions in Redis, standalone or Redis Cluster.
//!
//! # Example
//!
//! ```no_run
//! use cloakroom::{Key, RedisStore, SessionLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One Redis server:
//! let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
//! // Or a Redis Cluster, given some of its nodes:
//! let store = RedisStore::connect_cluster([
//!     "redis://10.0.0.1:7000/",
//!     "redis://10.0.0.2:7000/",
//!     "redis://10.0.0.3:7000/",
//! ])
//! .await?;
//! let layer = SessionLayer::builder(store.with_key_prefix("myapp:session:")?)
//!     .key(Key::from_hex(&std::env::var("SESSION_KEY")?)?)
//!     .build()?;
//! # Ok(()) }
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, ServerErrorKind, Value};
use serde_json::Map;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::error::ConfigError;
use crate::id::StoreKey;
use crate::record::{Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{Deleted, SessionStore, StoreError};

const DEFAULT_PREFIX: &str = "cloakroom:";
const DATA_PREFIX: &[u8] = b"d:";
/// The metadata fields a count or a listing reads, in this order.
const META_FIELDS: [&str; 6] = ["c", "s", "i", "a", "p", "u"];
/// How many records the per-user operations visit at once, and how many
/// index members one `ZREM` removes at most.
const BATCH: usize = 100;
/// How often `delete_user` goes over a user's index again before it gives
/// up on a user who keeps logging in while being logged out.
const MAX_DELETE_PASSES: usize = 16;

/// Timeouts used by [`RedisStore::connect`] and
/// [`RedisStore::connect_cluster`]: a session store must fail fast, so that
/// a Redis outage becomes a quick `503` rather than hung requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sessions in Redis: one server (through a [`ConnectionManager`], which
/// reconnects by itself) or a Redis Cluster (through the crate's async
/// cluster client).
///
/// Clones share the connection.
///
/// # Layout
///
/// Each session is a hash under `<prefix>s:<store key as hex>`, with the
/// metadata in one-letter fields (`c` created, `s` last seen, `i` idle
/// timeout, `a` absolute deadline, `p` persistent, `u` user) and each data
/// key as a field `d:<key>` holding JSON. The hash's TTL is the session's
/// deadline, so Redis drops it on time by itself.
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
/// scored by each session's absolute deadline. Deleting or retiring a
/// session removes its member. Since no session outlives its absolute
/// deadline, members scored in the past (sessions that merely expired) are
/// pruned safely whenever the user logs in again or their sessions are
/// counted or listed, and the set's own TTL is its highest score: the index
/// expires by itself and never grows without bound. A member whose record
/// is gone, expired, retired or another user's is dropped by the next count,
/// listing or logout-everywhere that meets it.
///
/// # Round trips
///
/// Loading (with the rolling-expiry extension when due) and saving a patch
/// are one Lua script each, so one round trip; both check the deadline with
/// the layer's time and never re-create a session. Creating a session is one
/// script, plus one for the user index when a user is logged in. Retiring
/// is one script on the record (checked against the layer's time, never
/// Redis time), plus a `ZREM` from the user index; deleting is the same.
/// Every script touches one key, so Redis Cluster needs no hash tags and
/// logout-everywhere works across slots.
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
/// - [`count_user`] and [`list_user`] run one script that prunes members
///   scored in the past and returns the rest, then one `HMGET` of the
///   metadata fields (never the data) per member, and one `ZREM` per batch
///   of stale members. Listing keeps only the `limit` most recently created
///   sessions while it reads, so beyond the member list its memory is
///   bounded by `limit`.
///
/// Redis expires records at their deadline by itself, so the layer's clock
/// must follow real time (the default [`SystemClock`](crate::SystemClock)).
///
/// [`retire`]: SessionStore::retire
/// [`delete_user`]: SessionStore::delete_user
/// [`count_user`]: SessionStore::count_user
/// [`list_user`]: SessionStore::list_user
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
}

#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisStore {
    /// A store on a connection manager the application already has.
    pub fn new(manager: ConnectionManager) -> Self {
        Self::with_connection(Connection::Standalone(manager))
    }

    /// A store on a Redis Cluster connection the application already has.
    pub fn from_cluster(connection: ClusterConnection) -> Self {
        Self::with_connection(Connection::Cluster(connection))
    }

    fn with_connection(connection: Connection) -> Self {
        Self {
            connection,
            prefix: Arc::from(DEFAULT_PREFIX),
        }
    }

    /// Connects to one Redis server, e.g. `redis://127.0.0.1:6379/`, with
    /// short timeouts (1 s to connect, 2 s per command) and automatic
    /// reconnection.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the URL is invalid or the server cannot be
    /// reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(store_error)?;
        Ok(Self::new(manager))
    }

    /// Connects to a Redis Cluster given one or more of its nodes, with the
    /// same short timeouts as [`RedisStore::connect`].
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
        let urls: Vec<String> = urls.into_iter().map(|u| u.as_ref().to_owned()).collect();
        let client = redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
            .build()
            .map_err(StoreError::backend)?;
        let connection = client.get_async_connection().await.map_err(store_error)?;
        Ok(Self::from_cluster(connection))
    }

    /// Sets the prefix of every key this store writes; `cloakroom:` by
    /// default. Use one per application sharing a Redis.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKeyPrefix`] when the prefix is longer than 128
    /// bytes or contains `{` or `}` (which would become a cluster hash tag
    /// and pile every session into one slot).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let prefix = prefix.into();
        if !valid_prefix(&prefix) {
            return Err(ConfigError::InvalidKeyPrefix);
        }
        self.prefix = Arc::from(prefix);
        Ok(self)
    }

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

    fn index_key(&self, user_id: &str) -> String {
        format!("{}u:{}", self.prefix, hex::encode(Sha256::digest(user_id)))
    }

    fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// Adds `key` to the user's index (and prunes members whose absolute
    /// deadline has passed), extending the index's TTL to its latest
    /// deadline.
    async fn index(
        &self,
        user_id: &str,
        key: &StoreKey,
        absolute_deadline: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        INDEX_ADD
            .key(self.index_key(user_id))
            .arg(now.unix_timestamp())
            .arg(key.to_hex())
            .arg(absolute_deadline.unix_timestamp())
            .invoke_async::<i64>(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn index_members(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        redis::cmd("ZRANGE")
            .arg(self.index_key(user_id))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.connection())
            .await
            .map_err(store_error)
    }

    /// The members of the user's index whose absolute deadline is after
    /// `now`, after dropping the others.
    async fn live_members(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        INDEX_LIVE
            .key(self.index_key(user_id))
            .arg(now.unix_timestamp())
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)
    }

    async fn unindex(&self, user_id: &str, members: &[String]) -> Result<(), StoreError> {
        for batch in members.chunks(BATCH) {
            redis::cmd("ZREM")
                .arg(self.index_key(user_id))
                .arg(batch)
                .query_async::<i64>(&mut self.connection())
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// The listing entries of the user's sessions live at `now`, handed to
    /// `found` one at a time as their metadata arrives (`BATCH` reads in
    /// flight, in no particular order). Members whose record is gone,
    /// expired, a forward or another user's leave the index on the way.
    async fn visit_live(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        mut found: impl FnMut(SessionInfo) + Send,
    ) -> Result<(), StoreError> {
        let members = self.live_members(user_id, now).await?;
        // Members are moved into the reads, not borrowed: with a closure
        // over borrowed members, the compiler cannot show that the trait
        // method's future is `Send` (a higher-ranked lifetime limitation).
        let mut reads = futures_util::stream::iter(members)
            .map(|member: String| {
                let mut connection = self.connection();
                let record_key = self.record_key_hex(&member);
                async move {
                    let fields = redis::cmd("HMGET")
                        .arg(record_key)
                        .arg(&META_FIELDS)
                        .query_async::<Vec<Option<Vec<u8>>>>(&mut connection)
                        .await;
                    (member, fields)
                }
            })
            .buffer_unordered(BATCH);
        let mut stale = Vec::new();
        while let Some((member, fields)) = reads.next().await {
            let fields = fields.map_err(store_error)?;
            match listed_session(&fields, user_id, &member, now)? {
                Some(info) => found(info),
                None => stale.push(member),
            }
            if stale.len() == BATCH {
                self.unindex(user_id, &stale).await?;
                stale.clear();
            }
        }
        self.unindex(user_id, &stale).await
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.connection {
                    Connection::Standalone(_) => "standalone",
                    Connection::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 128 && !prefix.contains(['{', '}'])
}

/// A user kept getting new sessions through every pass of `delete_user`.
#[derive(Debug)]
struct StillLoggingIn;

impl fmt::Display for StillLoggingIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "new sessions of the user kept appearing through {MAX_DELETE_PASSES} passes of logout-everywhere"
        )
    }
}

impl std::error::Error for StillLoggingIn {}

/// Connection-level failures, and the replies of a server that cannot serve
/// right now (still loading its dataset, a replica cut off from its master,
/// a cluster that is down or resharding, a master demoted to read-only
/// replica during a failover), mean "unavailable": they pass by themselves,
/// like an outage. The rest are backend errors. The Redis error stays
/// attached as the source.
fn store_error(error: RedisError) -> StoreError {
    if is_outage(&error) {
        StoreError::unavailable(error)
    } else {
        StoreError::backend(error)
    }
}

fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// Shared Lua helpers: write field/value pairs or delete fields in batches,
/// so that large records never exceed Lua's argument limits.
const LUA_HELPERS: &str = r"
local function batched(command, key, list, first, last)
  local batch = {}
  for j = first, last do
    batch[#batch + 1] = list[j]
    if #batch == 200 then
      redis.call(command, key, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then
    redis.call(command, key, unpack(batch))
  end
end
local function deadline(s, i, a)
  return math.min(s + i, a)
end
";

/// KEYS[1] = record; ARGV = now, expire-at, then field/value pairs.
/// Insert-if-absent: a live record or a forward that has not lapsed is left
/// alone (returns 0); an expired record or a lapsed forward is replaced.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local key = KEYS[1]
local now = tonumber(ARGV[1])
if redis.call('EXISTS', key) == 1 then
  local m = redis.call('HMGET', key, 's', 'i', 'a', 'w')
  local s, i, a, w = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
  if s and i and a and deadline(s, i, a) > now then
    return 0
  end
  if w and w > now then
    return 0
  end
  redis.call('DEL', key)
end
batched('HSET', key, ARGV, 3, #ARGV)
redis.call('EXPIREAT', key, ARGV[2])
return 1
"
    ))
});

/// KEYS[1] = record; ARGV = now, touch fraction. Returns the record as
/// stored (its flat field/value list, packed by Redis's built-in `cmsgpack`
/// into one reply) or nil; drops it when expired; records the activity when
/// due, in the same step. A forward is no session: nil. One packed reply
/// instead of a bulk string per field spares the client a parse and an
/// allocation per field on every read.
static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local key = KEYS[1]
local h = redis.call('HGETALL', key)
if #h == 0 then
  return false
end
local s, i, a, forward
for j = 1, #h, 2 do
  local name = h[j]
  if name == 's' then s = tonumber(h[j + 1])
  elseif name == 'i' then i = tonumber(h[j + 1])
  elseif name == 'a' then a = tonumber(h[j + 1])
  elseif name == 'f' then forward = true end
end
if not (s and i and a) then
  if forward then
    return false
  end
  -- Neither a session nor a forward: the client reports it as corrupt.
  return cmsgpack.pack(h)
end
local now = tonumber(ARGV[1])
if deadline(s, i, a) <= now then
  redis.call('DEL', key)
  return false
end
if now - s >= i * tonumber(ARGV[2]) then
  redis.call('HSET', key, 's', ARGV[1])
  redis.call('EXPIREAT', key, deadline(now, i, a))
end
return cmsgpack.pack(h)
"
    ))
});

/// KEYS[1] = record; ARGV = now, clear, number of removals, has lifetime,
/// idle, absolute, persistent, touch fraction, then the removed fields,
/// then field/value pairs to set. Update-only: returns 0 and writes nothing
/// when the record is missing, expired or a forward. After the patch,
/// records the activity when due, as `load` does.
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 's', 'i', 'a')
local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if not (s and i and a) or deadline(s, i, a) <= now then
  return 0
end
if ARGV[2] == '1' then
  local data = {{}}
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 'd:' then data[#data + 1] = f end
  end
  batched('HDEL', key, data, 1, #data)
end
local removals = tonumber(ARGV[3])
batched('HDEL', key, ARGV, 9, 8 + removals)
batched('HSET', key, ARGV, 9 + removals, #ARGV)
local moved = false
if ARGV[4] == '1' then
  redis.call('HSET', key, 'i', ARGV[5], 'a', ARGV[6], 'p', ARGV[7])
  i, a = tonumber(ARGV[5]), tonumber(ARGV[6])
  moved = true
end
if now - s >= i * tonumber(ARGV[8]) then
  redis.call('HSET', key, 's', ARGV[1])
  s = now
  moved = true
end
if moved then
  redis.call('EXPIREAT', key, deadline(s, i, a))
end
return 1
"
    ))
});

/// KEYS[1] = record; ARGV = now, successor (hex), until. Replaces a record
/// live at `now` by a forward to the successor that expires at `until`, and
/// returns `{1, user}` so the caller can drop the user-index entry. A
/// forward to the same successor that has not lapsed gives `{1, false}`
/// again (a retry); anything else `{0, false}`, with nothing written.
static RETIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 's', 'i', 'a', 'u', 'f', 'w')
local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if s and i and a then
  if deadline(s, i, a) <= now then
    return {{0, false}}
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'f', ARGV[2], 'w', ARGV[3])
  redis.call('EXPIREAT', key, ARGV[3])
  return {{1, m[4]}}
end
local w = tonumber(m[6])
if m[5] == ARGV[2] and w and w > now then
  return {{1, false}}
end
return {{0, false}}
"
    ))
});

/// KEYS[1] = user index; ARGV = now, member, its absolute deadline.
static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
redis.call('ZADD', key, 'GT', ARGV[3], ARGV[2])
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', key, top[2])
return 1
",
    )
});

/// KEYS[1] = user index; ARGV[1] = now. Drops the members whose absolute
/// deadline has passed (their sessions are over whatever else happened)
/// and returns the rest.
static INDEX_LIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
",
    )
});

/// KEYS[1] = record; ARGV[1] = now. Returns `{what, user, successor}`:
/// what is 1 for a session live at `now`, 2 for a forward that has not
/// lapsed (with its successor; the forward is kept, so a retried logout
/// follows it again), 0 otherwise. Everything but a live forward is
/// deleted; user is the owner of a deleted record, live or not, so the
/// caller can drop the user-index entry too.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 's', 'i', 'a', 'u', 'f', 'w')
local w = tonumber(m[6])
if m[5] and w and w > now then
  return {{2, false, m[5]}}
end
if redis.call('DEL', key) == 0 then
  return {{0, false, false}}
end
local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if s and i and a then
  if deadline(s, i, a) > now then
    return {{1, m[4], false}}
  end
  return {{0, m[4], false}}
end
return {{0, false, false}}
"
    ))
});

/// KEYS[1] = record; ARGV[1] = user. Deletes the record only if it belongs
/// to that user (an index entry may outlive its record, and a forward
/// belongs to nobody).
static DELETE_OWNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'u') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// Field/value pairs for a whole record.
fn encode_record(record: &SessionRecord) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(12 + 2 * record.data.len());
    let mut meta = |field: &str, value: String| {
        args.push(field.as_bytes().to_vec());
        args.push(value.into_bytes());
    };
    meta("c", record.created_at.unix_timestamp().to_string());
    meta("s", record.last_seen.unix_timestamp().to_string());
    meta("i", record.idle_timeout.whole_seconds().to_string());
    meta("a", record.absolute_deadline.unix_timestamp().to_string());
    meta("p", u8::from(record.persistent).to_string());
    if let Some(user) = &record.user_id {
        meta("u", user.clone());
    }
    for (key, value) in &record.data {
        args.push(data_field(key));
        args.push(serde_json::to_vec(value).map_err(StoreError::backend)?);
    }
    Ok(args)
}

fn data_field(key: &str) -> Vec<u8> {
    let mut field = DATA_PREFIX.to_vec();
    field.extend_from_slice(key.as_bytes());
    field
}

/// Why a stored hash could not be decoded.
#[derive(Debug)]
struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored session hash: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::corrupt(DecodeError(what.into()))
}

fn number(field: &str, value: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| corrupt(format!("field {field} is not an integer")))
}

fn timestamp(field: &str, value: &[u8]) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(number(field, value)?)
        .map_err(|_| corrupt(format!("field {field} is out of range")))
}

/// Decodes the packed reply of the load script: a msgpack array of the
/// hash's fields and values, borrowed from `packed` without copying.
pub(crate) fn decode_packed_record(packed: &[u8]) -> Result<SessionRecord, StoreError> {
    let flat: Vec<&[u8]> = rmp_serde::from_slice(packed).map_err(StoreError::corrupt)?;
    decode_record(&flat)
}

/// Decodes a session hash given as a flat field/value list, as `HGETALL`
/// returns it. Unknown fields are ignored; missing or malformed metadata
/// is an error, never a panic.
pub(crate) fn decode_record<F: AsRef<[u8]>>(flat: &[F]) -> Result<SessionRecord, StoreError> {
    if flat.len() % 2 != 0 {
        return Err(corrupt("odd number of hash elements"));
    }
    let (mut created, mut last_seen, mut idle, mut absolute) = (None, None, None, None);
    let mut persistent = false;
    let mut user_id = None;
    let mut data = Map::new();
    for pair in flat.chunks_exact(2) {
        let (field, value) = (pair[0].as_ref(), pair[1].as_ref());
        match field {
            b"c" => created = Some(timestamp("c", value)?),
            b"s" => last_seen = Some(timestamp("s", value)?),
            b"i" => idle = Some(time::Duration::seconds(number("i", value)?)),
            b"a" => absolute = Some(timestamp("a", value)?),
            b"p" => persistent = value == b"1",
            b"u" => {
                user_id = Some(
                    String::from_utf8(value.to_vec()).map_err(|_| corrupt("user is not UTF-8"))?,
                )
            }
            _ => {
                if let Some(name) = field.strip_prefix(DATA_PREFIX) {
                    let name = String::from_utf8(name.to_vec())
                        .map_err(|_| corrupt("data key is not UTF-8"))?;
                    let value = serde_json::from_slice(value).map_err(StoreError::corrupt)?;
                    data.insert(name, value);
                }
            }
        }
    }
    let missing = |f: &str| corrupt(format!("field {f} is missing"));
    let idle_timeout = idle.ok_or_else(|| missing("i"))?;
    let last_seen = last_seen.ok_or_else(|| missing("s"))?;
    let absolute_deadline = absolute.ok_or_else(|| missing("a"))?;
    // Guard the deadline arithmetic against absurd stored values.
    last_seen
        .checked_add(idle_timeout)
        .ok_or_else(|| corrupt("idle deadline out of range"))?;
    Ok(SessionRecord {
        data,
        user_id,
        created_at: created.ok_or_else(|| missing("c"))?,
        last_seen,
        idle_timeout,
        absolute_deadline,
        persistent,
    })
}

/// The listing entry for one index member, from the metadata fields read
/// by `HMGET` (in [`META_FIELDS`] order): `None` when the record is gone,
/// a forward, another user's, or expired at `now`.
fn listed_session(
    fields: &[Option<Vec<u8>>],
    user_id: &str,
    member: &str,
    now: OffsetDateTime,
) -> Result<Option<SessionInfo>, StoreError> {
    let [Some(c), Some(s), Some(i), Some(a), p, Some(u)] = fields else {
        return Ok(None);
    };
    if u.as_slice() != user_id.as_bytes() {
        return Ok(None);
    }
    let mut flat: Vec<&[u8]> = vec![b"c", c, b"s", s, b"i", i, b"a", a];
    if let Some(p) = p {
        flat.extend([b"p".as_slice(), p]);
    }
    let record = decode_record(&flat)?;
    if record.is_expired(now) {
        return Ok(None);
    }
    let key = member
        .parse::<StoreKey>()
        .map_err(|_| corrupt("index member is not a store key"))?;
    Ok(Some(record.info(key)))
}

/// What the delete script found: its `{what, user, successor}` reply.
fn deleted_from_reply(what: i64, successor: Option<&str>) -> Result<Deleted, StoreError> {
    match (what, successor) {
        (1, _) => Ok(Deleted::Session),
        (2, Some(hex)) => hex
            .parse::<StoreKey>()
            .map(Deleted::Forward)
            .map_err(|_| corrupt("forward names no store key")),
        _ => Ok(Deleted::Nothing),
    }
}

/// The most recently created of the sessions offered so far, at most
/// `limit` of them: a listing's memory is bounded by its limit however many
/// sessions the user has.
struct Newest {
    limit: usize,
    /// A min-heap on creation, so the oldest kept session is at the top,
    /// ready to make way.
    heap: BinaryHeap<Reverse<ByCreation>>,
}

/// A listing entry ordered by creation time, then key (as listings are).
struct ByCreation(SessionInfo);

impl ByCreation {
    fn order(&self) -> (OffsetDateTime, StoreKey) {
        (self.0.created_at, self.0.key)
    }
}

impl PartialEq for ByCreation {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for ByCreation {}

impl PartialOrd for ByCreation {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByCreation {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl Newest {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: BinaryHeap::new(),
        }
    }

    fn offer(&mut self, info: SessionInfo) {
        let entry = ByCreation(info);
        if self.heap.len() < self.limit {
            self.heap.push(Reverse(entry));
        } else if let Some(mut oldest) = self.heap.peek_mut() {
            if entry > oldest.0 {
                *oldest = Reverse(entry);
            }
        }
    }

    /// The kept sessions, oldest first.
    fn oldest_first(self) -> Vec<SessionInfo> {
        // Ascending order of `Reverse` is newest first.
        let mut sessions: Vec<SessionInfo> = self
            .heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(ByCreation(info))| info)
            .collect();
        sessions.reverse();
        sessions
    }
}

impl SessionStore for RedisStore {
    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut invocation = CREATE.key(self.record_key(key));
        invocation
            .arg(now.unix_timestamp())
            .arg(record.expires_at().unix_timestamp());
        for arg in encode_record(record)? {
            invocation.arg(arg);
        }
        let created: i64 = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if created != 1 {
            return Ok(false);
        }
        // The record comes first and the index second. The other order lets
        // a concurrent logout-everywhere find the index entry before the
        // record exists, prune it as stale, and so leave a live session that
        // no later logout-everywhere can reach. In this order an index entry
        // always points at a record that exists or existed.
        if let Some(user) = &record.user_id {
            if let Err(error) = self.index(user, key, record.absolute_deadline, now).await {
                // Without its index entry the session must not live; nobody
                // holds its ID yet, so deleting it loses nothing.
                let _ = SessionStore::delete(self, key, now).await;
                return Err(error);
            }
        }
        Ok(true)
    }

    async fn load(
        &self,
        key: &StoreKey,
        touch: Touch,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let packed: Option<Vec<u8>> = LOAD
            .key(self.record_key(key))
            .arg(touch.now.unix_timestamp())
            .arg(touch.after)
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        packed
            .map(|packed| decode_packed_record(&packed))
            .transpose()
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        let now = touch.now;
        let record_key = self.record_key(key);
        if let Some(lifetime) = &patch.lifetime {
            // A longer lifetime must reach the user index before the record,
            // or the index could forget a session that is still alive.
            let user: Option<String> = redis::cmd("HGET")
                .arg(&record_key)
                .arg("u")
                .query_async(&mut self.connection())
                .await
                .map_err(store_error)?;
            if let Some(user) = user {
                self.index(&user, key, lifetime.absolute_deadline, now)
                    .await?;
            }
        }
        let mut invocation = SAVE.key(record_key);
        let (has_lifetime, idle, absolute, persistent) = match &patch.lifetime {
            Some(l) => (
                1,
                l.idle_timeout.whole_seconds(),
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
        let saved: i64 = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(saved == 1)
    }

    async fn retire(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
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

    async fn delete(&self, key: &StoreKey, now: OffsetDateTime) -> Result<Deleted, StoreError> {
        // One script deletes what the key holds (but a live forward) and
        // names the record's user; the index entry (another slot in a
        // cluster) goes in a second call. Left behind, it would only be pruned at its absolute
        // deadline or by a count or listing.
        let (what, user, successor): (i64, Option<String>, Option<String>) = DELETE
            .key(self.record_key(key))
            .arg(now.unix_timestamp())
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if let Some(user) = user {
            self.unindex(&user, &[key.to_hex()]).await?;
        }
        deleted_from_reply(what, successor.as_deref())
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
        Err(StoreError::unavailable(StillLoggingIn))
    }

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut count = 0;
        self.visit_live(user_id, now, |_| count += 1).await?;
        Ok(count)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut newest = Newest::new(limit);
        self.visit_live(user_id, now, |info| newest.offer(info))
            .await?;
        Ok(newest.oldest_first())
    }

    /// Redis drops records at their deadline by itself, and user indexes
    /// expire with their last session and are pruned on every login, so
    /// there is nothing left to sweep: always `Ok(0)`.
    async fn sweep_expired(&self, _now: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut r = SessionRecord::new(now, time::Duration::minutes(30), time::Duration::hours(12));
        r.user_id = Some("alice".into());
        r.data.insert("k".into(), serde_json::json!({"n": [1, 2]}));
        r.data.insert("".into(), serde_json::json!(null));
        r
    }

    #[test]
    fn encoded_record_decodes_to_itself() {
        let r = record();
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn a_packed_reply_decodes_like_the_flat_list() {
        let r = record();
        let flat = encode_record(&r).unwrap();
        let packed =
            rmp_serde::to_vec(&flat.iter().map(|f| serde_bytes_like(f)).collect::<Vec<_>>())
                .unwrap();
        assert_eq!(decode_packed_record(&packed).unwrap(), r);
        assert!(matches!(
            decode_packed_record(b"\xc1"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_packed_record(b""),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// What Redis's `cmsgpack` produces for a Lua string: a msgpack `str`.
    fn serde_bytes_like(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn malformed_hashes_are_corrupt_not_panics() {
        let good = encode_record(&record()).unwrap();
        let mut cases: Vec<Vec<Vec<u8>>> = vec![
            vec![],
            vec![b"c".to_vec()],
            good[2..].to_vec(),
            vec![b"c".to_vec(), b"x".to_vec(), b"s".to_vec(), b"1".to_vec()],
        ];
        let mut bad_json = good.clone();
        bad_json.extend([b"d:x".to_vec(), b"{".to_vec()]);
        cases.push(bad_json);
        let mut huge = good.clone();
        huge.extend([b"i".to_vec(), i64::MAX.to_string().into_bytes()]);
        cases.push(huge);
        let mut not_utf8 = good;
        not_utf8.extend([b"d:\xff".to_vec(), b"1".to_vec()]);
        cases.push(not_utf8);
        for case in cases {
            assert!(
                matches!(decode_record(&case), Err(StoreError::Corrupt(_))),
                "{case:?}"
            );
        }
    }

    /// A Redis error as the client makes it from a reply on the wire.
    fn reply_error(reply: &str) -> RedisError {
        let value = redis::parse_redis_value(reply.as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn a_server_that_cannot_serve_now_is_unavailable_not_broken() {
        for reply in [
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
            "-READONLY You can't write against a read only replica.\r\n",
            "-MOVED 3999 127.0.0.1:6381\r\n",
        ] {
            assert!(
                matches!(store_error(reply_error(reply)), StoreError::Unavailable(_)),
                "{reply}"
            );
        }
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(store_error(refused).is_unavailable());
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(store_error(timed_out).is_unavailable());
    }

    #[test]
    fn other_server_errors_are_backend_errors() {
        for reply in [
            "-ERR Error running script\r\n",
            "-NOSCRIPT No matching script.\r\n",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-NOPERM this user has no permissions to run the 'evalsha' command\r\n",
            "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
        ] {
            assert!(
                matches!(store_error(reply_error(reply)), StoreError::Backend(_)),
                "{reply}"
            );
        }
    }

    fn meta(record: &SessionRecord) -> Vec<Option<Vec<u8>>> {
        let flat = encode_record(record).unwrap();
        META_FIELDS
            .iter()
            .map(|name| {
                flat.chunks_exact(2)
                    .find(|pair| pair[0] == name.as_bytes())
                    .map(|pair| pair[1].clone())
            })
            .collect()
    }

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    fn some_key() -> StoreKey {
        crate::SessionId::generate().unwrap().store_key()
    }

    #[test]
    fn a_live_session_of_the_user_is_listed_from_its_metadata() {
        let r = record();
        let key = some_key();
        let info = listed_session(&meta(&r), "alice", &key.to_hex(), at(1))
            .unwrap()
            .expect("listed");
        assert_eq!(info, r.info(key));
    }

    #[test]
    fn gone_forwarded_foreign_and_expired_sessions_are_not_listed() {
        let r = record();
        let member = some_key().to_hex();
        let gone = vec![None; META_FIELDS.len()];
        assert_eq!(
            listed_session(&gone, "alice", &member, at(1)).unwrap(),
            None
        );
        // A forward has none of the metadata fields.
        assert_eq!(listed_session(&[], "alice", &member, at(1)).unwrap(), None);
        assert_eq!(
            listed_session(&meta(&r), "bob", &member, at(1)).unwrap(),
            None
        );
        let mut anonymous = r.clone();
        anonymous.user_id = None;
        assert_eq!(
            listed_session(&meta(&anonymous), "alice", &member, at(1)).unwrap(),
            None
        );
        assert_eq!(
            listed_session(&meta(&r), "alice", &member, r.expires_at()).unwrap(),
            None
        );
    }

    #[test]
    fn bad_metadata_or_members_are_corrupt_not_panics() {
        let r = record();
        let mut bad = meta(&r);
        bad[1] = Some(b"soon".to_vec());
        assert!(matches!(
            listed_session(&bad, "alice", &some_key().to_hex(), at(1)),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            listed_session(&meta(&r), "alice", "not-a-key", at(1)),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn delete_replies_decode_to_what_was_there() {
        let successor = some_key();
        assert_eq!(deleted_from_reply(1, None).unwrap(), Deleted::Session);
        assert_eq!(deleted_from_reply(0, None).unwrap(), Deleted::Nothing);
        assert_eq!(
            deleted_from_reply(2, Some(&successor.to_hex())).unwrap(),
            Deleted::Forward(successor)
        );
        assert!(matches!(
            deleted_from_reply(2, Some("zz")),
            Err(StoreError::Corrupt(_))
        ));
    }

    fn info(created: i64) -> SessionInfo {
        let mut r = record();
        r.created_at = at(created);
        r.info(some_key())
    }

    #[test]
    fn a_listing_keeps_the_newest_within_its_limit_oldest_first() {
        let offered: Vec<SessionInfo> = [5, 1, 9, 3, 7, 9, 0].into_iter().map(info).collect();
        let mut newest = Newest::new(3);
        for i in &offered {
            newest.offer(i.clone());
        }
        let kept = newest.oldest_first();
        let mut expected = offered.clone();
        expected.sort_by_key(|s| (s.created_at, s.key));
        assert_eq!(kept, expected[4..]);

        let mut all = Newest::new(usize::MAX);
        for i in &offered {
            all.offer(i.clone());
        }
        assert_eq!(all.oldest_first(), expected);

        let mut none = Newest::new(0);
        none.offer(info(1));
        assert!(none.oldest_first().is_empty());
    }

    #[test]
    fn key_prefix_refuses_hash_tags_and_long_prefixes() {
        assert!(valid_prefix("app:sessions:"));
        assert!(valid_prefix(""));
        assert!(!valid_prefix("app{1}:"));
        assert!(!valid_prefix("app}"));
        assert!(!valid_prefix(&"x".repeat(129)));
    }
}

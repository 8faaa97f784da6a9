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

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use serde_json::Map;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::config::ConfigError;
use crate::id::StoreKey;
use crate::record::{Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{Deleted, SessionStore, StoreError};

const DEFAULT_PREFIX: &str = "cloakroom:";
const DATA_PREFIX: &[u8] = b"d:";

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
/// Each user with sessions has a sorted set under `<prefix>u:<SHA-256 of the
/// user id as hex>` whose members are the store keys of their sessions,
/// scored by each session's absolute deadline. Deleting a session removes
/// its member. Since no session outlives its absolute deadline, members
/// scored in the past (sessions that merely expired) are pruned safely
/// whenever the user logs in again, and the set's own TTL is its highest
/// score: the index expires by itself and never grows without bound.
///
/// # Round trips
///
/// Loading (with the rolling-expiry extension when due) and saving a patch
/// are one Lua script each, so one round trip; both check the deadline with
/// the layer's time and never re-create a session. Creating a session is one
/// script, plus one for the user index when a user is logged in. Every
/// script touches one key, so Redis Cluster needs no hash tags and
/// logout-everywhere works across slots.
///
/// Redis expires records at their deadline by itself, so the layer's clock
/// must follow real time (the default [`SystemClock`](crate::SystemClock)).
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

    async fn unindex(&self, user_id: &str, members: &[String]) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        redis::cmd("ZREM")
            .arg(self.index_key(user_id))
            .arg(members)
            .query_async::<i64>(&mut self.connection())
            .await
            .map_err(store_error)?;
        Ok(())
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

/// Connection-level failures mean "unavailable"; the rest are backend
/// errors. The Redis error stays attached as the source.
fn store_error(error: RedisError) -> StoreError {
    if error.is_io_error()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_cluster_error()
    {
        StoreError::unavailable(error)
    } else {
        StoreError::backend(error)
    }
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
/// Insert-if-absent: a live record is left alone (returns 0); an expired
/// one is replaced.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  local m = redis.call('HMGET', key, 's', 'i', 'a')
  local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
  if s and i and a and deadline(s, i, a) > tonumber(ARGV[1]) then
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
/// into one reply) or nil; drops it when expired; extends the idle
/// deadline when due, in the same step. One packed reply instead of a
/// bulk string per field spares the client a parse and an allocation per
/// field on every read.
static LOAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LUA_HELPERS}
local key = KEYS[1]
local h = redis.call('HGETALL', key)
if #h == 0 then
  return false
end
local s, i, a
for j = 1, #h, 2 do
  local f = h[j]
  if f == 's' then s = tonumber(h[j + 1])
  elseif f == 'i' then i = tonumber(h[j + 1])
  elseif f == 'a' then a = tonumber(h[j + 1]) end
end
if not (s and i and a) then
  return cmsgpack.pack(h)
end
local now = tonumber(ARGV[1])
if deadline(s, i, a) <= now then
  redis.call('DEL', key)
  return false
end
if now - s >= i * tonumber(ARGV[2]) and s + i < a then
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
/// when the record is missing or expired. After the patch, rolls the idle
/// deadline when due, as `load` does.
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
if now - s >= i * tonumber(ARGV[8]) and s + i < a then
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

/// KEYS[1] = record. Deletes it and returns its user (or false), so the
/// caller can drop the user-index entry too.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local user = redis.call('HGET', KEYS[1], 'u')
if redis.call('DEL', KEYS[1]) == 0 then
  return {0, false}
end
return {1, user}
",
    )
});

/// KEYS[1] = record; ARGV[1] = user. Deletes the record only if it belongs
/// to that user (an index entry may outlive its record).
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
        _key: &StoreKey,
        _successor: &StoreKey,
        _until: OffsetDateTime,
        _now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        todo!("PLACEHOLDER: RedisStore::retire")
    }

    async fn count_user(&self, _user_id: &str, _now: OffsetDateTime) -> Result<u64, StoreError> {
        todo!("PLACEHOLDER: RedisStore::count_user")
    }

    async fn delete(&self, key: &StoreKey, _now: OffsetDateTime) -> Result<Deleted, StoreError> {
        // One script deletes the record and names its user; the index entry
        // (another slot in a cluster) goes in a second call. Left behind, it
        // would only be pruned at its absolute deadline or by a listing.
        let (deleted, user): (i64, Option<String>) = DELETE
            .key(self.record_key(key))
            .invoke_async(&mut self.connection())
            .await
            .map_err(store_error)?;
        if let Some(user) = user {
            self.unindex(&user, &[key.to_hex()]).await?;
        }
        Ok(if deleted == 1 {
            Deleted::Session
        } else {
            Deleted::Nothing
        })
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        let keep = keep.map(StoreKey::to_hex);
        let members: Vec<String> = self
            .index_members(user_id)
            .await?
            .into_iter()
            .filter(|member| Some(member) != keep.as_ref())
            .collect();
        // Records live in different cluster slots: one script per record,
        // all in flight at once.
        let deletions = members.iter().map(|member| {
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
        let mut deleted = 0;
        for result in results {
            deleted += u64::try_from(result.map_err(store_error)?).unwrap_or(0);
        }
        // Remove exactly the members handled, never the whole set: a login
        // racing this call may have added a member that must stay.
        self.unindex(user_id, &members).await?;
        Ok(deleted)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        _limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let members = self.index_members(user_id).await?;
        let reads = members.iter().map(|member| {
            let mut connection = self.connection();
            let record_key = self.record_key_hex(member);
            async move {
                redis::cmd("HMGET")
                    .arg(record_key)
                    .arg(&["c", "s", "i", "a", "p", "u"])
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut connection)
                    .await
            }
        });
        let results = futures_util::future::join_all(reads).await;
        let mut sessions = Vec::new();
        let mut stale = Vec::new();
        for (member, result) in members.into_iter().zip(results) {
            let fields = result.map_err(store_error)?;
            let info = match fields.as_slice() {
                [Some(c), Some(s), Some(i), Some(a), p, Some(u)]
                    if u.as_slice() == user_id.as_bytes() =>
                {
                    let mut flat = vec![
                        b"c".to_vec(),
                        c.clone(),
                        b"s".to_vec(),
                        s.clone(),
                        b"i".to_vec(),
                        i.clone(),
                        b"a".to_vec(),
                        a.clone(),
                    ];
                    if let Some(p) = p {
                        flat.extend([b"p".to_vec(), p.clone()]);
                    }
                    let record = decode_record(&flat)?;
                    let key = member
                        .parse::<StoreKey>()
                        .map_err(|_| corrupt("index member is not a store key"))?;
                    (!record.is_expired(now)).then(|| record.info(key))
                }
                _ => None,
            };
            match info {
                Some(info) => sessions.push(info),
                None => stale.push(member),
            }
        }
        self.unindex(user_id, &stale).await?;
        sessions.sort_by_key(|s| (s.created_at, s.key));
        Ok(sessions)
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

    #[test]
    fn key_prefix_refuses_hash_tags_and_long_prefixes() {
        assert!(valid_prefix("app:sessions:"));
        assert!(valid_prefix(""));
        assert!(!valid_prefix("app{1}:"));
        assert!(!valid_prefix("app}"));
        assert!(!valid_prefix(&"x".repeat(129)));
    }
}

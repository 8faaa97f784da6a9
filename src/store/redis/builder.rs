//! [`RedisStoreBuilder`]: a [`RedisStore`]'s settings, checked by `build`.

use std::sync::Arc;
use std::time::Duration;

use super::cache::LocalCache;
use super::{Cached, RedisConnection, RedisStore, DEFAULT_PREFIX};
use crate::store::ConfigError;

/// Longest key prefix, in bytes.
const MAX_PREFIX_LEN: usize = 128;

/// Configures a [`RedisStore`]: the prefix of its keys, and whether it keeps
/// a local cache. Settings are checked by [`build`](Self::build).
///
/// ```no_run
/// use cloakroom::{store::RedisConnection, store::RedisStore};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let connection = RedisConnection::connect("redis://127.0.0.1:6379/").await?;
/// let store = RedisStore::builder(connection)
///     .key_prefix("myapp:session:")
///     .build()?; // the prefix is checked here
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct RedisStoreBuilder {
    connection: RedisConnection,
    prefix: String,
    cache_capacity: Option<usize>,
    cache_max_age: Duration,
}

/// How long a cached session is served at most without a fresh read, unless
/// [`RedisStoreBuilder::local_cache_max_age`] says otherwise.
const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_secs(60);

impl RedisStoreBuilder {
    pub(super) fn new(connection: RedisConnection) -> Self {
        Self {
            connection,
            prefix: DEFAULT_PREFIX.to_owned(),
            cache_capacity: None,
            cache_max_age: DEFAULT_CACHE_MAX_AGE,
        }
    }

    /// The prefix of every key the store writes; `cloakroom:` by default.
    /// Use one per application sharing a Redis.
    ///
    /// At most 128 bytes, and no `{` or `}`: those would make part of the
    /// key a cluster hash tag and pile every session into one slot.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Keeps up to `capacity` sessions read recently in this process, and
    /// serves reads of them with no round trip to Redis. Off by default.
    ///
    /// Every write by any [`RedisStore`] on the same Redis and key prefix
    /// (any instance, cached or not) publishes the session's store key on
    /// the channel `<prefix>changed` before it writes; a cached store
    /// subscribes to it on a connection of its own and evicts what it
    /// hears; ending all sessions
    /// ([`SessionAdmin::end_all_sessions`](crate::SessionAdmin::end_all_sessions))
    /// also publishes a flush message there, on which every cache drops
    /// everything it holds. The cache serves only while a heartbeat it publishes every
    /// 0.5 s (on a cluster, on every master) has come back over that
    /// subscription within the last 1.5 s: it starts empty, and when the
    /// subscription's connection drops or a heartbeat is not back within
    /// 0.5 s, it is flushed and every read goes to Redis until the store
    /// has subscribed again. A read also goes to Redis when the session is
    /// due for a touch, so rolling expiry still reaches Redis at most once
    /// per touch interval; and a store evicts a session from its own cache
    /// after each of its own writes to it. Only reads of one session are
    /// served from the cache: counting and listing a user's sessions always
    /// read Redis (see [`RedisStore`]'s "Local cache" section for why).
    ///
    /// With Redis ACLs, the store's user needs access to the channel
    /// (`&<prefix>changed`), or every write fails (with nothing written).
    /// On a cluster every write's message crosses the cluster bus.
    ///
    /// The shards of the cache together hold at most `capacity` sessions;
    /// a full one drops one of its entries (about at random) to make
    /// room. Each entry holds the session's record: about 1 KB of heap for
    /// a session with one small value (measured by the load bench), more
    /// for larger data.
    ///
    /// Needs a connection opened by [`RedisConnection::connect`] or
    /// [`RedisConnection::connect_cluster`] (for the URLs to subscribe
    /// through), and a tokio runtime.
    ///
    /// # Security
    ///
    /// A session ended by a write that does not go through a
    /// [`RedisStore`] (a `DEL` typed into `redis-cli`, a key evicted by
    /// Redis' `maxmemory` policy) announces nothing: another instance may
    /// serve it from its cache for up to
    /// [`local_cache_max_age`](Self::local_cache_max_age). Sessions ended
    /// through this crate (logout, logout-everywhere, [`SessionAdmin`],
    /// expiry) are covered; the crate docs'
    /// [known limits](crate#known-limits) give the exact window.
    ///
    /// [`SessionAdmin`]: crate::SessionAdmin
    pub fn local_cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = Some(capacity);
        self
    }

    /// How long a cached session may be served before it is read from
    /// Redis again, whatever the invalidation channel said: a safety net
    /// for changes that announce nothing. 60 seconds by default; a shorter
    /// age costs more reads.
    pub fn local_cache_max_age(mut self, max_age: Duration) -> Self {
        self.cache_max_age = max_age;
        self
    }

    /// The store, on the connection the builder was given.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKeyPrefix`] when the prefix is longer than 128
    /// bytes or contains `{` or `}`; with a local cache,
    /// [`ConfigError::ZeroCapacity`] for a capacity of 0 and
    /// [`ConfigError::LocalCacheWithoutUrls`] for a connection that was
    /// not opened by [`RedisConnection::connect`] or
    /// [`RedisConnection::connect_cluster`].
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if !valid_prefix(&self.prefix) {
            return Err(ConfigError::InvalidKeyPrefix(self.prefix));
        }
        let connection = self.connection;
        let cache = match self.cache_capacity {
            None => None,
            Some(0) => return Err(ConfigError::ZeroCapacity),
            Some(_) if connection.urls().is_empty() => {
                return Err(ConfigError::LocalCacheWithoutUrls)
            }
            Some(capacity) => Some(Arc::new(Cached {
                cache: Arc::new(LocalCache::new(capacity, self.cache_max_age)),
                urls: Arc::clone(connection.urls()),
                channel: format!("{}changed", self.prefix),
                subscriber: std::sync::Mutex::new(None),
            })),
        };
        let store = RedisStore {
            connection,
            prefix: Arc::from(self.prefix),
            cache,
            listener: Arc::default(),
        };
        // Subscribe now if there is a runtime to do it on; otherwise the
        // first load does.
        store.start_subscriber();
        Ok(store)
    }
}

fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_PREFIX_LEN && !prefix.contains(['{', '}'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_refuses_hash_tags_and_long_prefixes() {
        assert!(valid_prefix("app:sessions:"));
        assert!(valid_prefix(""));
        assert!(valid_prefix(DEFAULT_PREFIX));
        assert!(valid_prefix(&"x".repeat(128)));
        assert!(!valid_prefix("app{1}:"));
        assert!(!valid_prefix("app}"));
        assert!(!valid_prefix(&"x".repeat(129)));
    }
}

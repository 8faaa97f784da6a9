//! [`ConfigError`]: store settings that cannot work.

use std::fmt;

/// Store settings that cannot work, reported by the store builders'
/// `build`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A Redis key prefix is longer than 128 bytes or contains `{` or `}`
    /// (which would act as a cluster hash tag).
    InvalidKeyPrefix(String),
    /// A PostgreSQL schema name is not a plain lower-case identifier of at
    /// most 63 bytes (`^[a-z_][a-z0-9_]{0,62}$`).
    InvalidSchemaName(String),
    /// A PostgreSQL or SQLite table name is not a plain lower-case
    /// identifier of at most 48 bytes (`^[a-z_][a-z0-9_]{0,47}$`), short
    /// enough for the index names derived from it (for SQLite, not starting
    /// with `sqlite_` either).
    InvalidTableName(String),
    /// A sweep batch size of zero, which could never delete a row.
    ZeroSweepBatchSize,
    /// A [`MemoryStore`](crate::MemoryStore) or local cache capacity of
    /// zero, which could hold no session.
    ZeroCapacity,
    /// A [`RedisStore`](crate::store::RedisStore) with a local cache was built on
    /// a connection made from one the application already had: the cache
    /// needs the server URLs for its invalidation channel, so open the
    /// connection with `RedisConnection::connect` or `connect_cluster`.
    LocalCacheWithoutUrls,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidKeyPrefix(prefix) => write!(
                f,
                "invalid key prefix {prefix:?}: at most 128 bytes, and no '{{' or '}}'"
            ),
            Self::InvalidSchemaName(name) => write!(
                f,
                "invalid schema name {name:?}: expected 1 to 63 characters from a-z, 0-9 \
                 and _, not starting with a digit"
            ),
            Self::InvalidTableName(name) => write!(
                f,
                "invalid table name {name:?}: expected 1 to 48 characters from a-z, 0-9 \
                 and _, not starting with a digit (nor, for SQLite, with sqlite_)"
            ),
            Self::ZeroSweepBatchSize => f.write_str("the sweep batch size must be at least 1"),
            Self::ZeroCapacity => f.write_str("a store or cache capacity must be at least 1"),
            Self::LocalCacheWithoutUrls => f.write_str(
                "a RedisStore local cache needs the server URLs for its invalidation channel: \
                 open the connection with RedisConnection::connect or connect_cluster",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

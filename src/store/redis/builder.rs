//! [`RedisStoreBuilder`]: a [`RedisStore`]'s settings, checked by `build`.

use std::sync::Arc;

use super::{RedisConnection, RedisStore, DEFAULT_PREFIX};
use crate::error::ConfigError;

/// Longest key prefix, in bytes.
const MAX_PREFIX_LEN: usize = 128;

/// Configures a [`RedisStore`]: for now, the prefix of its keys. Settings
/// are checked by [`build`](Self::build).
///
/// ```no_run
/// use cloakroom::{RedisConnection, RedisStore};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let connection = RedisConnection::connect("redis://127.0.0.1:6379/").await?;
/// let store = RedisStore::builder()
///     .key_prefix("myapp:session:")
///     .build(connection)?; // the prefix is checked here
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct RedisStoreBuilder {
    prefix: String,
}

impl RedisStoreBuilder {
    pub(super) fn new() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
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

    /// The store, on `connection`: a [`RedisConnection`], or a
    /// [`ConnectionManager`](redis::aio::ConnectionManager) or
    /// [`ClusterConnection`](redis::cluster_async::ClusterConnection) the
    /// application already has.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKeyPrefix`] when the prefix is longer than 128
    /// bytes or contains `{` or `}`.
    pub fn build(self, connection: impl Into<RedisConnection>) -> Result<RedisStore, ConfigError> {
        if !valid_prefix(&self.prefix) {
            return Err(ConfigError::InvalidKeyPrefix);
        }
        Ok(RedisStore {
            connection: connection.into(),
            prefix: Arc::from(self.prefix),
        })
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

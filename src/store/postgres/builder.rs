//! [`PostgresStoreBuilder`]: a [`PostgresStore`]'s schema, table and
//! sweep batch size, checked by `build`.

use std::sync::Arc;

use sqlx::PgPool;

use super::sql::Statements;
use super::PostgresStore;
use crate::store::sql_common::builder::{is_identifier, MAX_TABLE_LEN};
use crate::store::ConfigError;

/// Longest schema name: PostgreSQL's identifier limit (63 bytes).
const MAX_SCHEMA_LEN: usize = 63;

/// Configures a [`PostgresStore`]: schema, table and sweep batch size.
/// Names are checked by [`build`](Self::build).
///
/// ```no_run
/// # fn f(pool: sqlx::PgPool) -> Result<(), cloakroom::store::ConfigError> {
/// let store = cloakroom::store::PostgresStore::builder(pool)
///     .table("sessions")
///     .sweep_batch_size(500)
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing by itself; call `.build()`"]
pub struct PostgresStoreBuilder {
    pool: PgPool,
    schema: String,
    table: String,
    sweep_batch_size: u32,
}

impl PostgresStoreBuilder {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            schema: PostgresStore::DEFAULT_SCHEMA.to_owned(),
            table: PostgresStore::DEFAULT_TABLE.to_owned(),
            sweep_batch_size: PostgresStore::DEFAULT_SWEEP_BATCH_SIZE,
        }
    }

    /// The schema that holds the table (default `public`). `migrate`
    /// creates it when it is not `public`.
    ///
    /// Must match `^[a-z_][a-z0-9_]{0,62}$`: a plain lower-case PostgreSQL
    /// identifier. It is quoted in every statement, so reserved words work.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The table name (default `cloakroom_sessions`).
    ///
    /// Must match `^[a-z_][a-z0-9_]{0,47}$`: a plain lower-case identifier,
    /// short enough that the index names derived from it
    /// (`<table>_user_id_idx`, `<table>_expires_at_idx`) fit PostgreSQL's
    /// 63-byte limit.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How many expired rows one sweep statement deletes (default 1000).
    /// Smaller batches hold row locks for less time; larger ones need
    /// fewer round-trips for a big backlog.
    pub fn sweep_batch_size(mut self, rows: u32) -> Self {
        self.sweep_batch_size = rows;
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSchemaName`] or [`ConfigError::InvalidTableName`]
    /// when the schema or table name is not a plain
    /// identifier as described on [`schema`](Self::schema) and
    /// [`table`](Self::table), or [`ConfigError::ZeroSweepBatchSize`].
    /// Names are
    /// never put into SQL unchecked.
    pub fn build(self) -> Result<PostgresStore, ConfigError> {
        if !is_identifier(&self.schema, MAX_SCHEMA_LEN) {
            return Err(ConfigError::InvalidSchemaName(self.schema));
        }
        if !is_identifier(&self.table, MAX_TABLE_LEN) {
            return Err(ConfigError::InvalidTableName(self.table));
        }
        if self.sweep_batch_size == 0 {
            return Err(ConfigError::ZeroSweepBatchSize);
        }
        Ok(PostgresStore {
            pool: self.pool,
            sql: Arc::new(Statements::new(
                &self.schema,
                &self.table,
                self.sweep_batch_size,
            )),
            feed: Arc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_identifiers_up_to_postgres_limit() {
        assert!(is_identifier("auth", MAX_SCHEMA_LEN));
        assert!(!is_identifier("my-app", MAX_SCHEMA_LEN));
        assert!(is_identifier(&"a".repeat(63), MAX_SCHEMA_LEN));
        assert!(!is_identifier(&"a".repeat(64), MAX_SCHEMA_LEN));
    }

    #[test]
    fn builder_errors_name_the_problem() {
        let error = ConfigError::InvalidTableName("Bad-Name".into());
        assert!(error.to_string().contains("\"Bad-Name\""));
        assert!(ConfigError::ZeroSweepBatchSize
            .to_string()
            .contains("at least 1"));
    }
}

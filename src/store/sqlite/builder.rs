//! [`SqliteStoreBuilder`]: a [`SqliteStore`]'s table and sweep batch size,
//! checked by `build`.

use sqlx::SqlitePool;

use super::SqliteStore;
use crate::store::sql_common::builder::{is_identifier, MAX_TABLE_LEN};
use crate::store::ConfigError;

/// Configures a [`SqliteStore`]: table and sweep batch size. The name is
/// checked by [`build`](Self::build).
///
/// ```no_run
/// # fn f(pool: sqlx::SqlitePool) -> Result<(), cloakroom::store::ConfigError> {
/// let store = cloakroom::store::SqliteStore::builder(pool)
///     .table("sessions")
///     .sweep_batch_size(500)
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing by itself; call `.build()`"]
pub struct SqliteStoreBuilder {
    pool: SqlitePool,
    table: String,
    sweep_batch_size: u32,
}

impl SqliteStoreBuilder {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: SqliteStore::DEFAULT_TABLE.to_owned(),
            sweep_batch_size: SqliteStore::DEFAULT_SWEEP_BATCH_SIZE,
        }
    }

    /// The table name (default `cloakroom_sessions`), in the pool's main
    /// database.
    ///
    /// Must match `^[a-z_][a-z0-9_]{0,47}$` and not start with `sqlite_`
    /// (SQLite keeps those names for itself). It is quoted in every
    /// statement, so keywords work.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How many expired rows one sweep statement deletes (default 1000).
    /// Each batch holds SQLite's write lock while it runs; smaller batches
    /// let other writes in sooner.
    pub fn sweep_batch_size(mut self, rows: u32) -> Self {
        self.sweep_batch_size = rows;
        self
    }

    /// The store.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTableName`] when the table name is not a plain
    /// identifier as described on [`table`](Self::table), or
    /// [`ConfigError::ZeroSweepBatchSize`]. Names are never put into SQL
    /// unchecked.
    pub fn build(self) -> Result<SqliteStore, ConfigError> {
        if !is_table_name(&self.table) {
            return Err(ConfigError::InvalidTableName(self.table));
        }
        if self.sweep_batch_size == 0 {
            return Err(ConfigError::ZeroSweepBatchSize);
        }
        Ok(SqliteStore::with(
            self.pool,
            &self.table,
            self.sweep_batch_size,
        ))
    }
}

/// `^[a-z_][a-z0-9_]{0,47}$`, not starting with `sqlite_`.
fn is_table_name(name: &str) -> bool {
    is_identifier(name, MAX_TABLE_LEN) && !name.starts_with("sqlite_")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identifier rule itself is tested in `sql_common::builder`.
    #[test]
    fn table_names_are_identifiers_that_sqlite_does_not_keep_for_itself() {
        for good in ["sessions", "order", "sqlite", "a".repeat(48).as_str()] {
            assert!(is_table_name(good), "{good}");
        }
        for bad in [
            "",
            "Sessions",
            "main.sessions",
            "sqlite_master",
            "sqlite_sessions",
            "a".repeat(49).as_str(),
        ] {
            assert!(!is_table_name(bad), "{bad:?}");
        }
    }
}

//! [`PostgresStore`]: sessions in a PostgreSQL table, on the application's
//! own sqlx [`PgPool`].
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use cloakroom::{Key, PostgresStore, SessionLayer};
//! use sqlx::postgres::PgPoolOptions;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The pool the application already has for its own queries.
//! let pool = PgPoolOptions::new()
//!     .acquire_timeout(Duration::from_secs(3))
//!     .connect(&std::env::var("DATABASE_URL")?)
//!     .await?;
//!
//! let store = PostgresStore::new(pool.clone());
//! store.migrate().await?; // idempotent; safe from several processes at once
//!
//! let sessions = SessionLayer::builder(store)
//!     .key(Key::from_hex(&std::env::var("SESSION_KEY")?)?)
//!     .build()?;
//! // Delete expired rows every five minutes, in batches.
//! let _sweeper = sessions.admin().spawn_sweeper(Duration::from_secs(300));
//! # Ok(())
//! # }
//! ```
//!
//! A table of your choosing (and a schema, created if missing):
//!
//! ```no_run
//! # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use cloakroom::PostgresStore;
//!
//! let store = PostgresStore::builder(pool)
//!     .schema("auth")
//!     .table("web_sessions")
//!     .build()?; // names are checked here
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Schema
//!
//! [`PostgresStore::migrate`] creates the table below (the SQL is
//! [`PostgresStore::migration_sql`]; run it with your own migration tool
//! if you prefer):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS "public"."cloakroom_sessions" (
//!     key bytea PRIMARY KEY,
//!     user_id text NULL,
//!     data jsonb NOT NULL,
//!     created_at timestamptz NOT NULL,
//!     last_seen timestamptz NOT NULL,
//!     absolute_deadline timestamptz NOT NULL,
//!     idle_timeout_secs bigint NOT NULL,
//!     persistent boolean NOT NULL,
//!     expires_at timestamptz NOT NULL
//! );
//! CREATE INDEX IF NOT EXISTS "cloakroom_sessions_user_id_idx"
//!     ON "public"."cloakroom_sessions" (user_id) WHERE user_id IS NOT NULL;
//! CREATE INDEX IF NOT EXISTS "cloakroom_sessions_expires_at_idx"
//!     ON "public"."cloakroom_sessions" (expires_at);
//! ```
//!
//! [`PostgresStore`] documents the columns, the statements, sweeping and
//! error mapping.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::types::Json;
use sqlx::Row as _;
use time::OffsetDateTime;

use crate::clock::truncate_to_seconds;
use crate::config::ConfigError;
use crate::id::StoreKey;
use crate::record::{Patch, SessionInfo, SessionRecord, Touch};
use crate::store::{Deleted, SessionStore, StoreError};

/// Longest schema name: PostgreSQL's identifier limit (63 bytes).
const MAX_SCHEMA_LEN: usize = 63;
/// Longest table name: the index names append `_expires_at_idx` (15
/// bytes), and PostgreSQL would silently truncate a longer result, which
/// could make the two index names collide.
const MAX_TABLE_LEN: usize = 48;

/// The advisory lock every cloakroom migration takes ("cloakroo" in
/// ASCII). One key for all tables, so that two stores creating tables in
/// the same new schema at once are serialized too.
const MIGRATION_LOCK: i64 = 0x636c_6f61_6b72_6f6f;

/// Sessions in a PostgreSQL table, through the application's own
/// [`PgPool`].
///
/// Create the table with [`PostgresStore::migrate`] (or apply
/// [`PostgresStore::migration_sql`] with your own migration tool), hand the
/// store to [`SessionLayer::builder`](crate::SessionLayer::builder), and run
/// a sweeper for expired rows. The store opens no connections of its own:
/// sessions share the pool, its size and its time-outs with the rest of
/// the application. Clones share the pool and the SQL text.
///
/// ```no_run
/// use std::time::Duration;
/// use cloakroom::{Key, PostgresStore, SessionLayer};
///
/// # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::new(pool);
/// store.migrate().await?;
/// let sessions = SessionLayer::builder(store).key(Key::generate()?).build()?;
/// let _sweeper = sessions.admin().spawn_sweeper(Duration::from_secs(300));
/// # Ok(())
/// # }
/// ```
///
/// # Schema
///
/// [`migrate`](Self::migrate) runs these statements (shown for the default
/// names) in one transaction that first takes a transaction-level advisory
/// lock, so several processes starting at once do not race each other:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS "public"."cloakroom_sessions" (
///     key bytea PRIMARY KEY,
///     user_id text NULL,
///     data jsonb NOT NULL,
///     created_at timestamptz NOT NULL,
///     last_seen timestamptz NOT NULL,
///     absolute_deadline timestamptz NOT NULL,
///     idle_timeout_secs bigint NOT NULL,
///     persistent boolean NOT NULL,
///     expires_at timestamptz NOT NULL
/// );
/// CREATE INDEX IF NOT EXISTS "cloakroom_sessions_user_id_idx"
///     ON "public"."cloakroom_sessions" (user_id) WHERE user_id IS NOT NULL;
/// CREATE INDEX IF NOT EXISTS "cloakroom_sessions_expires_at_idx"
///     ON "public"."cloakroom_sessions" (expires_at);
/// ```
///
/// With a schema other than `public` (see [`PostgresStoreBuilder`]), the
/// SQL starts with `CREATE SCHEMA IF NOT EXISTS "<schema>";`.
///
/// - `key` is the session's [`StoreKey`]: SHA-256 of the session ID, never
///   the ID itself, so a database dump or backup holds no usable cookie.
/// - `expires_at` is kept equal to the earlier of the idle deadline
///   (`last_seen + idle_timeout_secs`) and `absolute_deadline` by every
///   statement that changes one of them. Lookups and the sweeper compare
///   against it, through its index.
/// - Timestamps are whole seconds. Every comparison uses the time the
///   layer passes in (from its [`Clock`](crate::Clock)), never the
///   database's `now()`, so one clock decides expiry.
///
/// # One statement per operation
///
/// - `load` reads the live row and, when [`SessionRecord::touch_due`]
///   holds for it, sets `last_seen` and `expires_at` in the same statement
///   (a data-modifying CTE), returning the row as it was before.
/// - `save` is one `UPDATE ... WHERE key = $1 AND expires_at > $now` that
///   patches `data` in place with `jsonb` operators (`- removed_keys`, then
///   `|| set_keys`), so concurrent requests that change different keys all
///   survive, and a deleted or expired session is never written back; it
///   rolls the idle deadline in the same statement when due.
/// - `create` is one `INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE` the
///   existing row is expired: a live session is never overwritten.
/// - `delete` and `delete_user` are one `DELETE` each (the latter through
///   the `user_id` index); `list_user` is one `SELECT`.
///
/// # Sweeping expired sessions
///
/// Expired rows are never served, but they stay in the table until swept.
/// [`SessionStore::sweep_expired`] deletes them in batches (1000 rows per
/// statement by default, see [`PostgresStoreBuilder::sweep_batch_size`]),
/// each batch its own short statement that skips rows other transactions
/// hold, so a large backlog never locks the table. Run it periodically with
/// [`SessionAdmin::spawn_sweeper`](crate::SessionAdmin::spawn_sweeper), as
/// above. That generic sweeper is all this store needs: it calls the
/// batched `sweep_expired`, with the layer's clock, the one every other
/// expiry decision uses. Several processes may sweep at once.
///
/// # Errors
///
/// sqlx errors become [`StoreError`]s with the sqlx error kept as the
/// source. Connection, I/O and TLS failures, pool time-outs, and server
/// errors that mean "not serving now" (SQLSTATE classes `08` and `53`,
/// `57P..` shutdowns, statement and lock time-outs) are
/// [`StoreError::Unavailable`]. Rows that cannot be decoded (data that is
/// not a JSON object, timestamps out of range, keys that are not 32 bytes)
/// are [`StoreError::Corrupt`]. Everything else, such as a missing table,
/// is [`StoreError::Backend`].
///
/// # Limits
///
/// PostgreSQL `text` and `jsonb` cannot hold the NUL character (`\0`,
/// `\u0000`): a user ID or session value containing one is refused with
/// [`StoreError::Backend`]. This crate enables no TLS in sqlx; an
/// application that connects over TLS enables a TLS feature on its own
/// `sqlx` dependency, and the pool it passes in uses it.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Statements>,
}

/// The SQL of every operation, built once from the validated names.
struct Statements {
    qualified_table: String,
    sweep_batch_size: i64,
    migration: String,
    create: String,
    load: String,
    save: String,
    delete: String,
    delete_user: String,
    list_user: String,
    sweep: String,
}

impl PostgresStore {
    /// The schema used unless [`PostgresStoreBuilder::schema`] says
    /// otherwise.
    pub const DEFAULT_SCHEMA: &'static str = "public";
    /// The table used unless [`PostgresStoreBuilder::table`] says
    /// otherwise.
    pub const DEFAULT_TABLE: &'static str = "cloakroom_sessions";
    /// Rows deleted per statement by [`SessionStore::sweep_expired`] unless
    /// [`PostgresStoreBuilder::sweep_batch_size`] says otherwise.
    pub const DEFAULT_SWEEP_BATCH_SIZE: u32 = 1000;

    /// A store on the table `public.cloakroom_sessions`, using `pool`.
    ///
    /// The table must exist: call [`migrate`](Self::migrate) once at
    /// start-up, or create it with [`migration_sql`](Self::migration_sql).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sql: Arc::new(Statements::new(
                Self::DEFAULT_SCHEMA,
                Self::DEFAULT_TABLE,
                Self::DEFAULT_SWEEP_BATCH_SIZE,
            )),
        }
    }

    /// A builder for a store with another schema, table or sweep batch
    /// size.
    pub fn builder(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            pool,
            schema: Self::DEFAULT_SCHEMA.to_owned(),
            table: Self::DEFAULT_TABLE.to_owned(),
            sweep_batch_size: Self::DEFAULT_SWEEP_BATCH_SIZE,
        }
    }

    /// Creates the schema (unless `public`), the table and its indexes if
    /// they do not exist yet.
    ///
    /// Idempotent, and safe to run from several processes at once: in one
    /// round-trip, it runs [`migration_sql`](Self::migration_sql) in a
    /// transaction that first takes a transaction-level advisory lock.
    /// `CREATE ... IF NOT EXISTS` alone is not enough, because two sessions
    /// can both find the table missing, and the slower one then fails on
    /// the catalog's unique index.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database cannot be reached or refuses a
    /// statement (e.g. the role may not create tables); nothing is
    /// half-created, since the transaction is rolled back.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // Several statements in one simple-query message run as one
        // implicit transaction: the lock is held until the last statement
        // is done, and an error rolls everything back. (An explicit
        // `BEGIN` would leave the connection in an aborted transaction on
        // error.)
        let sql = format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});\n{}",
            self.sql.migration
        );
        sqlx::raw_sql(&sql)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The SQL that [`migrate`](Self::migrate) runs, for this store's
    /// schema and table, for teams that apply migrations with their own
    /// tool. Every statement is `IF NOT EXISTS`, so it can be applied to a
    /// database that already has the table.
    pub fn migration_sql(&self) -> &str {
        &self.sql.migration
    }

    /// The quoted, schema-qualified table name, e.g.
    /// `"public"."cloakroom_sessions"`, ready to use in SQL of your own
    /// (say, to count sessions).
    pub fn qualified_table(&self) -> &str {
        &self.sql.qualified_table
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.qualified_table)
            .field("sweep_batch_size", &self.sql.sweep_batch_size)
            .finish_non_exhaustive()
    }
}

/// Configures a [`PostgresStore`]: schema, table and sweep batch size.
/// Names are checked by [`build`](Self::build).
///
/// ```no_run
/// # fn f(pool: sqlx::PgPool) -> Result<(), cloakroom::ConfigError> {
/// let store = cloakroom::PostgresStore::builder(pool)
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
        })
    }
}

/// `^[a-z_][a-z0-9_]{0,max-1}$`
fn is_identifier(name: &str, max: usize) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    name.len() <= max
        && (first.is_ascii_lowercase() || first == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Quotes an identifier. The names were validated, so they hold no `"` to
/// escape; quoting still matters, for names that are reserved words.
fn quote(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

/// The columns of a full record, in the order `record_from_row` reads.
const RECORD_COLUMNS: &str =
    "user_id, data, created_at, last_seen, absolute_deadline, idle_timeout_secs, persistent";

impl Statements {
    fn new(schema: &str, table: &str, sweep_batch_size: u32) -> Self {
        let t = format!("{}.{}", quote(schema), quote(table));
        let create_schema = if schema == PostgresStore::DEFAULT_SCHEMA {
            String::new()
        } else {
            format!("CREATE SCHEMA IF NOT EXISTS {};\n", quote(schema))
        };
        let migration = format!(
            "{create_schema}\
CREATE TABLE IF NOT EXISTS {t} (
    key bytea PRIMARY KEY,
    user_id text NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    absolute_deadline timestamptz NOT NULL,
    idle_timeout_secs bigint NOT NULL,
    persistent boolean NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS {user_idx}
    ON {t} (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {expires_idx}
    ON {t} (expires_at);
",
            user_idx = quote(&format!("{table}_user_id_idx")),
            expires_idx = quote(&format!("{table}_expires_at_idx")),
        );

        // $10 is the layer's `now`: only a row that is expired by then may
        // be replaced. A live one is left alone and no row is reported.
        let create = format!(
            "INSERT INTO {t} AS existing (key, user_id, data, created_at, last_seen, \
                 absolute_deadline, idle_timeout_secs, persistent, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (key) DO UPDATE SET \
                 user_id = EXCLUDED.user_id, data = EXCLUDED.data, \
                 created_at = EXCLUDED.created_at, last_seen = EXCLUDED.last_seen, \
                 absolute_deadline = EXCLUDED.absolute_deadline, \
                 idle_timeout_secs = EXCLUDED.idle_timeout_secs, \
                 persistent = EXCLUDED.persistent, expires_at = EXCLUDED.expires_at \
             WHERE existing.expires_at <= $10"
        );

        // All parts of one statement share a snapshot, so the final SELECT
        // returns the row as it was before the touch, as the trait asks.
        // The touch conditions are those of `SessionRecord::touch_due`,
        // written against the row being updated (not the snapshot), so a
        // concurrent touch at the same `now` is not repeated: whole seconds
        // elapsed, compared as float8 with `idle * after` exactly as the
        // Rust rule computes it, and only while the idle deadline is before
        // the absolute one.
        let load = format!(
            "WITH live AS ( \
                 SELECT key, {RECORD_COLUMNS} FROM {t} \
                 WHERE key = $1 AND expires_at > $2 \
             ), touched AS ( \
                 UPDATE {t} AS s SET \
                     last_seen = $2, \
                     expires_at = least($2 + s.idle_timeout_secs * interval '1 second', \
                                        s.absolute_deadline) \
                 FROM live \
                 WHERE s.key = live.key \
                   AND s.expires_at > $2 \
                   AND trunc(extract(epoch FROM $2 - s.last_seen))::float8 \
                       >= s.idle_timeout_secs::float8 * $3 \
                   AND s.last_seen + s.idle_timeout_secs * interval '1 second' \
                       < s.absolute_deadline \
             ) \
             SELECT {RECORD_COLUMNS} FROM live"
        );

        // Clear, then removals, then insertions, as `SessionRecord::apply`.
        // The right-hand sides read the row as it is when this UPDATE gets
        // its lock, so keys changed by a concurrent save are kept. NULL
        // lifetime parameters keep the stored lifetime. Then the touch rule
        // of `SessionRecord::touch_due`, on the patched lifetime: when due
        // ($9 is the fraction), `last_seen` becomes $8 (`now`), and
        // `expires_at` follows whichever `last_seen` results.
        let idle = "coalesce($5, idle_timeout_secs)";
        let absolute = "coalesce($6, absolute_deadline)";
        let due = format!(
            "(trunc(extract(epoch FROM $8 - last_seen))::float8 >= {idle}::float8 * $9 \
              AND last_seen + {idle} * interval '1 second' < {absolute})"
        );
        let last_seen = format!("(CASE WHEN {due} THEN $8 ELSE last_seen END)");
        let save = format!(
            "UPDATE {t} SET \
                 data = (CASE WHEN $2 THEN '{{}}'::jsonb ELSE data END - $3::text[]) || $4::jsonb, \
                 idle_timeout_secs = {idle}, \
                 absolute_deadline = {absolute}, \
                 persistent = coalesce($7, persistent), \
                 last_seen = {last_seen}, \
                 expires_at = least({last_seen} + {idle} * interval '1 second', {absolute}) \
             WHERE key = $1 AND expires_at > $8"
        );

        let delete = format!("DELETE FROM {t} WHERE key = $1");
        let delete_user = format!("DELETE FROM {t} WHERE user_id = $1 AND key IS DISTINCT FROM $2");
        let list_user = format!(
            "SELECT key, created_at, last_seen, expires_at, persistent FROM {t} \
             WHERE user_id = $1 AND expires_at > $2 \
             ORDER BY created_at, key"
        );
        // SKIP LOCKED: rows another transaction is busy with (a create
        // replacing an expired row, another sweeper) are left for later
        // instead of waited for.
        let sweep = format!(
            "DELETE FROM {t} WHERE key IN ( \
                 SELECT key FROM {t} WHERE expires_at <= $1 \
                 LIMIT $2 FOR UPDATE SKIP LOCKED)"
        );

        Self {
            qualified_table: t,
            sweep_batch_size: i64::from(sweep_batch_size),
            migration,
            create,
            load,
            save,
            delete,
            delete_user,
            list_user,
            sweep,
        }
    }
}

/// Maps a sqlx error to the store error kind the layer needs, keeping it as
/// the source.
fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::unavailable(error),
        sqlx::Error::Database(db) if db.code().is_some_and(|code| means_unavailable(&code)) => {
            StoreError::unavailable(error)
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::corrupt(error),
        _ => StoreError::backend(error),
    }
}

/// Whether a server error's SQLSTATE says "not serving right now" rather
/// than "this statement is wrong".
fn means_unavailable(sqlstate: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (too many
    // connections, out of memory, disk full); 57P: shutdown in progress,
    // crash recovery, cannot connect now.
    sqlstate.starts_with("08") || sqlstate.starts_with("53") || sqlstate.starts_with("57P")
        // statement_timeout, lock_timeout: the server did not answer in time.
        || sqlstate == "57014"
        || sqlstate == "55P03"
}

/// A row that made no sense, for [`StoreError::Corrupt`].
#[derive(Debug)]
struct CorruptRow(&'static str);

impl fmt::Display for CorruptRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for CorruptRow {}

fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(store_error)
}

fn timestamp(row: &PgRow, name: &str) -> Result<OffsetDateTime, StoreError> {
    column::<Timestamp>(row, name).map(|t| t.0)
}

/// A `timestamptz` column, decoded without panicking.
///
/// sqlx's own decoder for `time` adds the stored offset to PostgreSQL's
/// epoch with plain `+`, which panics for `infinity` or years past 9999;
/// a row edited by hand must be [`StoreError::Corrupt`], not a crash.
struct Timestamp(OffsetDateTime);

/// 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix microseconds.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl sqlx::Type<sqlx::Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Timestamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        if value.format() != PgValueFormat::Binary {
            // Prepared statements return binary values; text would mean a
            // code path this store does not use.
            return Err(Box::new(CorruptRow("timestamp not in binary format")));
        }
        // The binary form is microseconds since PostgreSQL's epoch.
        let micros = <i64 as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
        let unix_micros = micros
            .checked_add(POSTGRES_EPOCH_UNIX_MICROS)
            .ok_or(CorruptRow("timestamp out of range"))?;
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros) * 1000)
            .map_err(|_| CorruptRow("timestamp out of range"))?;
        Ok(Self(truncate_to_seconds(time)))
    }
}

fn record_from_row(row: &PgRow) -> Result<SessionRecord, StoreError> {
    let Json(data) = column::<Json<Map<String, Value>>>(row, "data")?;
    let last_seen = timestamp(row, "last_seen")?;
    let idle_secs: i64 = column(row, "idle_timeout_secs")?;
    let idle_timeout = time::Duration::seconds(idle_secs);
    // The layer adds the idle timeout to `last_seen`; a value that would
    // overflow there is refused here instead of panicking there.
    if idle_secs < 0 || last_seen.checked_add(idle_timeout).is_none() {
        return Err(StoreError::corrupt(CorruptRow("idle timeout out of range")));
    }
    Ok(SessionRecord {
        data,
        user_id: column(row, "user_id")?,
        created_at: timestamp(row, "created_at")?,
        last_seen,
        idle_timeout,
        absolute_deadline: timestamp(row, "absolute_deadline")?,
        persistent: column(row, "persistent")?,
    })
}

fn key_from_row(row: &PgRow) -> Result<StoreKey, StoreError> {
    let bytes: Vec<u8> = column(row, "key")?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(CorruptRow("store key is not 32 bytes")))?;
    Ok(StoreKey::from_bytes(bytes))
}

impl SessionStore for PostgresStore {
    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.create)
            .bind(key.as_bytes().as_slice())
            .bind(record.user_id.as_deref())
            .bind(Json(&record.data))
            .bind(truncate_to_seconds(record.created_at))
            .bind(truncate_to_seconds(record.last_seen))
            .bind(truncate_to_seconds(record.absolute_deadline))
            .bind(record.idle_timeout.whole_seconds())
            .bind(record.persistent)
            .bind(truncate_to_seconds(record.expires_at()))
            .bind(truncate_to_seconds(now))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn load(
        &self,
        key: &StoreKey,
        touch: Touch,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let now = truncate_to_seconds(touch.now);
        let row = sqlx::query(&self.sql.load)
            .bind(key.as_bytes().as_slice())
            .bind(now)
            .bind(touch.after)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = record_from_row(&row)?;
        // `expires_at` is maintained by every write; the record's own
        // fields are the rule, so a row edited out of step is not served.
        if record.is_expired(now) {
            return Ok(None);
        }
        Ok(Some(record))
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        let removed: Vec<&str> = patch.remove.iter().map(String::as_str).collect();
        let lifetime = patch.lifetime.as_ref();
        let done = sqlx::query(&self.sql.save)
            .bind(key.as_bytes().as_slice())
            .bind(patch.clear)
            .bind(removed)
            .bind(Json(&patch.set))
            .bind(lifetime.map(|l| l.idle_timeout.whole_seconds()))
            .bind(lifetime.map(|l| truncate_to_seconds(l.absolute_deadline)))
            .bind(lifetime.map(|l| l.persistent))
            .bind(truncate_to_seconds(touch.now))
            .bind(touch.after)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn retire(
        &self,
        _key: &StoreKey,
        _successor: &StoreKey,
        _until: OffsetDateTime,
        _now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        todo!("PLACEHOLDER: PostgresStore::retire")
    }

    async fn delete(&self, key: &StoreKey, _now: OffsetDateTime) -> Result<Deleted, StoreError> {
        let done = sqlx::query(&self.sql.delete)
            .bind(key.as_bytes().as_slice())
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(if done.rows_affected() > 0 {
            Deleted::Session
        } else {
            Deleted::Nothing
        })
    }

    async fn count_user(&self, _user_id: &str, _now: OffsetDateTime) -> Result<u64, StoreError> {
        todo!("PLACEHOLDER: PostgresStore::count_user")
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        let done = sqlx::query(&self.sql.delete_user)
            .bind(user_id)
            .bind(keep.map(|k| k.as_bytes().as_slice()))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected())
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        _limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let rows = sqlx::query(&self.sql.list_user)
            .bind(user_id)
            .bind(truncate_to_seconds(now))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok(SessionInfo {
                    key: key_from_row(row)?,
                    created_at: timestamp(row, "created_at")?,
                    last_seen: timestamp(row, "last_seen")?,
                    expires_at: timestamp(row, "expires_at")?,
                    persistent: column(row, "persistent")?,
                    current: false,
                })
            })
            .collect()
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = truncate_to_seconds(now);
        let mut removed = 0;
        // Each batch is its own statement (and transaction), so row locks
        // are held only briefly. `now` is fixed, so the backlog only
        // shrinks and a short batch means it is gone (or held by others,
        // who will be swept next time).
        loop {
            let done = sqlx::query(&self.sql.sweep)
                .bind(now)
                .bind(self.sql.sweep_batch_size)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
            let batch = done.rows_affected();
            removed += batch;
            if batch < self.sql.sweep_batch_size.unsigned_abs() {
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_must_be_plain_lower_case_names() {
        for good in ["sessions", "_s", "a1_b2", "cloakroom_sessions", "user"] {
            assert!(is_identifier(good, MAX_TABLE_LEN), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Sessions",
            "a-b",
            "a b",
            "a\"b",
            "sessions; DROP TABLE users",
            "s\u{e9}ssions",
            "a.b",
        ] {
            assert!(!is_identifier(bad, MAX_SCHEMA_LEN), "{bad:?}");
        }
        assert!(is_identifier(&"a".repeat(48), MAX_TABLE_LEN));
        assert!(!is_identifier(&"a".repeat(49), MAX_TABLE_LEN));
        assert!(is_identifier(&"a".repeat(63), MAX_SCHEMA_LEN));
        assert!(!is_identifier(&"a".repeat(64), MAX_SCHEMA_LEN));
    }

    #[test]
    fn the_longest_table_name_keeps_index_names_within_the_identifier_limit() {
        let table = "t".repeat(MAX_TABLE_LEN);
        let sql = Statements::new("s", &table, 1).migration;
        for index in ["_user_id_idx", "_expires_at_idx"] {
            let name = format!("{table}{index}");
            assert!(name.len() <= 63, "{name} would be truncated");
            assert!(sql.contains(&quote(&name)));
        }
    }

    #[test]
    fn the_migration_sql_in_the_docs_is_the_one_migrate_runs() {
        let sql = Statements::new(
            PostgresStore::DEFAULT_SCHEMA,
            PostgresStore::DEFAULT_TABLE,
            1,
        )
        .migration;
        let mut blocks = 0;
        let mut block: Option<String> = None;
        for line in include_str!("postgres.rs").lines() {
            let Some(doc) = ["//!", "///"]
                .iter()
                .find_map(|prefix| line.trim_start().strip_prefix(prefix))
            else {
                continue;
            };
            let doc = doc.strip_prefix(' ').unwrap_or(doc);
            match (&mut block, doc) {
                (None, "```sql") => block = Some(String::new()),
                (Some(text), "```") => {
                    assert_eq!(*text, sql, "a documented migration differs");
                    blocks += 1;
                    block = None;
                }
                (Some(text), line) => {
                    text.push_str(line);
                    text.push('\n');
                }
                (None, _) => {}
            }
        }
        assert_eq!(blocks, 2, "the module docs and the type docs show the SQL");
    }

    #[test]
    fn a_schema_other_than_public_is_created_by_the_migration() {
        let sql = Statements::new("auth", "sessions", 1).migration;
        assert!(sql.starts_with("CREATE SCHEMA IF NOT EXISTS \"auth\";\n"));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS \"auth\".\"sessions\" ("));
        assert!(!Statements::new("public", "sessions", 1)
            .migration
            .contains("CREATE SCHEMA"));
    }

    #[test]
    fn every_statement_uses_the_quoted_qualified_table() {
        let s = Statements::new("auth", "order", 7);
        for sql in [
            &s.create,
            &s.load,
            &s.save,
            &s.delete,
            &s.delete_user,
            &s.list_user,
            &s.sweep,
        ] {
            assert!(sql.contains("\"auth\".\"order\""), "{sql}");
        }
        assert_eq!(s.sweep_batch_size, 7);
    }

    #[test]
    fn connection_trouble_is_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for error in [
            sqlx::Error::Io(io),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(matches!(store_error(error), StoreError::Unavailable(_)));
        }
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "57014", "55P03",
        ] {
            assert!(means_unavailable(code), "{code}");
        }
        for code in ["42P01", "23505", "22P02", "40001", "42501"] {
            assert!(!means_unavailable(code), "{code}");
        }
    }

    #[test]
    fn undecodable_values_are_corrupt_and_other_errors_are_backend_errors() {
        let decode = sqlx::Error::ColumnDecode {
            index: "data".into(),
            source: "not an object".into(),
        };
        assert!(matches!(store_error(decode), StoreError::Corrupt(_)));
        assert!(matches!(
            store_error(sqlx::Error::Decode("bad".into())),
            StoreError::Corrupt(_)
        ));
        let error = store_error(sqlx::Error::RowNotFound);
        assert!(matches!(error, StoreError::Backend(_)));
        let source = StdError::source(&error).expect("the sqlx error is the source");
        assert!(source.downcast_ref::<sqlx::Error>().is_some());
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

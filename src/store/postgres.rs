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
//! [`PostgresStore::migrate`] creates the table below, or adds the
//! `successor` column to a table made by an earlier version of this crate
//! (the SQL is [`PostgresStore::migration_sql`]; run it with your own
//! migration tool if you prefer):
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
//!     expires_at timestamptz NOT NULL,
//!     successor bytea NULL
//! );
//! DO $$
//! BEGIN
//!     IF NOT EXISTS (
//!         SELECT FROM pg_attribute
//!         WHERE attrelid = '"public"."cloakroom_sessions"'::regclass
//!           AND attname = 'successor' AND NOT attisdropped
//!     ) THEN
//!         ALTER TABLE "public"."cloakroom_sessions" ADD COLUMN successor bytea NULL;
//!     END IF;
//! END
//! $$;
//! CREATE INDEX IF NOT EXISTS "cloakroom_sessions_user_id_idx"
//!     ON "public"."cloakroom_sessions" (user_id) WHERE user_id IS NOT NULL;
//! CREATE INDEX IF NOT EXISTS "cloakroom_sessions_expires_at_idx"
//!     ON "public"."cloakroom_sessions" (expires_at);
//! ```
//!
//! [`PostgresStore`] documents the columns, forwards, the statements,
//! sweeping and error mapping.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::types::Json;
use sqlx::Row as _;
use time::OffsetDateTime;

use crate::clock::truncate_to_seconds;
use crate::error::ConfigError;
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

/// How many `DELETE` passes `delete_user` makes at most before it gives up
/// on a user who keeps logging in while being logged out everywhere.
const MAX_DELETE_PASSES: usize = 16;

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
///     expires_at timestamptz NOT NULL,
///     successor bytea NULL
/// );
/// DO $$
/// BEGIN
///     IF NOT EXISTS (
///         SELECT FROM pg_attribute
///         WHERE attrelid = '"public"."cloakroom_sessions"'::regclass
///           AND attname = 'successor' AND NOT attisdropped
///     ) THEN
///         ALTER TABLE "public"."cloakroom_sessions" ADD COLUMN successor bytea NULL;
///     END IF;
/// END
/// $$;
/// CREATE INDEX IF NOT EXISTS "cloakroom_sessions_user_id_idx"
///     ON "public"."cloakroom_sessions" (user_id) WHERE user_id IS NOT NULL;
/// CREATE INDEX IF NOT EXISTS "cloakroom_sessions_expires_at_idx"
///     ON "public"."cloakroom_sessions" (expires_at);
/// ```
///
/// With a schema other than `public` (see [`PostgresStoreBuilder`]), the
/// SQL starts with `CREATE SCHEMA IF NOT EXISTS "<schema>";`.
///
/// The `DO` block upgrades a table created by an earlier version of this
/// crate, which had no `successor` column. It adds the column only when it
/// is missing: `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` would take an
/// `ACCESS EXCLUSIVE` lock on every start even when there is nothing to
/// add, and so wait behind any long reader of the table (a `pg_dump`, say)
/// while every session lookup queued up behind it.
///
/// - `key` is the session's [`StoreKey`]: SHA-256 of the session ID, never
///   the ID itself, so a database dump or backup holds no usable cookie.
/// - `expires_at` is kept equal to the earlier of the idle deadline
///   (`last_seen + idle_timeout_secs`) and `absolute_deadline` by every
///   statement that changes one of them. Lookups and the sweeper compare
///   against it, through its index.
/// - `successor` is `NULL` for a session. A row with a `successor` is a
///   *forward* (see below).
/// - Timestamps are whole seconds. Every comparison uses the time the
///   layer passes in (from its [`Clock`](crate::Clock)), never the
///   database's `now()`, so one clock decides expiry.
///
/// # Forwards
///
/// When the layer moves a session to a new ID (login, regenerate),
/// [`SessionStore::retire`] turns its row into a forward in place: the
/// `successor` column names the new key, `user_id` becomes `NULL`, `data`
/// becomes `{}`, and `expires_at` becomes the forward's `until`. The other
/// columns keep the old session's values and mean nothing any more. So a
/// forward holds its key against `create` until `until` and is then
/// replaced or swept like any expired row, with no extra logic; it never
/// appears in the `user_id` index; and `load` and `save` skip it
/// (`successor IS NULL`).
///
/// # One statement per operation
///
/// Every operation but `delete_user` and `sweep_expired` is one statement,
/// and so atomic on its own (autocommit, `READ COMMITTED`).
///
/// - `load` reads the live session row and, when
///   [`SessionRecord::touch_due`] holds for it, sets `last_seen` and
///   `expires_at` in the same statement (a data-modifying CTE), returning
///   the row as it was before. The touch is written even when the absolute
///   deadline keeps `expires_at` where it was, so that `last_seen` tells
///   the last activity.
/// - `save` is one `UPDATE ... WHERE key = $1 AND expires_at > $now AND
///   successor IS NULL` that patches `data` in place with `jsonb` operators
///   (`- removed_keys`, then `|| set_keys`), so concurrent requests that
///   change different keys all survive, and a deleted, retired or expired
///   session is never written back; it rolls the idle deadline in the same
///   statement when due.
/// - `create` is one `INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE` the
///   existing row (session or forward) is expired: a live session or
///   forward is never overwritten.
/// - `retire` is one `UPDATE` of a live row that is either a session or
///   already a forward to the same successor (a retry: it then writes the
///   forward back unchanged). Being one `UPDATE`, it also answers `true`
///   to a retry that runs while the first attempt is still in flight,
///   since PostgreSQL re-checks the condition on the row the first attempt
///   wrote.
/// - `delete` is one statement: a `DELETE ... RETURNING successor,
///   expires_at > $now` of anything but a live forward, beside a `SELECT`
///   that reports a live forward (kept, so that a retried logout follows
///   it again).
/// - `count_user` is one `SELECT count(*)` and `list_user` one `SELECT ...
///   ORDER BY created_at DESC, key DESC LIMIT $limit` (the newest sessions,
///   then reversed to oldest first), both through the `user_id` index.
/// - `delete_user` is a `DELETE` through the `user_id` index, repeated in
///   passes (see below).
///
/// # Logging a user out everywhere
///
/// One `DELETE ... WHERE user_id = $1` is not enough under `READ
/// COMMITTED`. It only sees rows committed before it started, and when a
/// concurrent login retires one of the user's sessions (turning its row
/// into a forward with no `user_id`) while creating the new one, the
/// `DELETE` skips the retired row and never sees the new one. So
/// `delete_user` repeats: after each `DELETE`, a separate statement (with
/// a snapshot taken after the `DELETE` finished) checks whether any row of
/// the user is left, and it stops only when none is. After 16 passes (a
/// user who keeps logging in throughout) it gives up with
/// [`StoreError::Unavailable`] rather than report a logout that did not
/// reach every session.
///
/// # Sweeping expired sessions
///
/// Expired rows and lapsed forwards are never served, but they stay in the
/// table until swept. [`SessionStore::sweep_expired`] deletes them in
/// batches (1000 rows per statement by default, see
/// [`PostgresStoreBuilder::sweep_batch_size`]), each batch its own short
/// statement that skips rows other transactions hold, so a large backlog
/// never locks the table. Run it periodically with
/// [`SessionAdmin::spawn_sweeper`](crate::SessionAdmin::spawn_sweeper), as
/// above. That generic sweeper is all this store needs: it calls the
/// batched `sweep_expired`, with the layer's clock, the one every other
/// expiry decision uses. Several processes may sweep at once.
///
/// # Errors
///
/// sqlx errors become [`StoreError`]s. Their source is an error of this
/// store whose `Display` and `Debug` show only what kind of failure it was
/// and, for a server error, the SQLSTATE and its class (say, `database
/// error 22P05 (data exception)`): the server's message detail can quote
/// the statement's parameters, which are session data. The sqlx error is
/// that error's own [`source`](std::error::Error::source), for whoever
/// explicitly walks the chain.
///
/// Connection, I/O and TLS failures, pool time-outs, and server errors
/// that mean "not serving now" (SQLSTATE classes `08` and `53`, `57P..`
/// shutdowns, statement and lock time-outs) are
/// [`StoreError::Unavailable`]. Data exceptions (SQLSTATE class `22`: a
/// value the server cannot hold, such as the NUL character below) are
/// [`StoreError::Rejected`]. Rows that cannot be decoded (data that is not
/// a JSON object, timestamps out of range, keys that are not 32 bytes) are
/// [`StoreError::Corrupt`]. Everything else, such as a missing table, is
/// [`StoreError::Backend`].
///
/// # Limits
///
/// PostgreSQL `text` and `jsonb` cannot hold the NUL character (`\0`,
/// `\u0000`): a user ID, data key or session value containing one is
/// refused with [`StoreError::Rejected`], and nothing is written. This
/// crate enables no TLS in sqlx; an application that connects over TLS
/// enables a TLS feature on its own `sqlx` dependency, and the pool it
/// passes in uses it.
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
    retire: String,
    delete: String,
    delete_user: String,
    user_left: String,
    count_user: String,
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
    /// they do not exist yet, and adds the `successor` column to a table
    /// created by an earlier version of this crate.
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
    /// tool. Every statement creates or adds only what is missing, so it
    /// can be applied to a database that already has the table, in this
    /// version's form or an earlier one.
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
        // The `DO` block adds `successor` to a table made by the previous
        // schema. It checks the catalog first, because `ALTER TABLE ... ADD
        // COLUMN IF NOT EXISTS` takes an ACCESS EXCLUSIVE lock even when
        // the column is there (see the type docs). The names were
        // validated, so they hold no quote that could end the literal.
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
    expires_at timestamptz NOT NULL,
    successor bytea NULL
);
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_attribute
        WHERE attrelid = '{t}'::regclass
          AND attname = 'successor' AND NOT attisdropped
    ) THEN
        ALTER TABLE {t} ADD COLUMN successor bytea NULL;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS {user_idx}
    ON {t} (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {expires_idx}
    ON {t} (expires_at);
",
            user_idx = quote(&format!("{table}_user_id_idx")),
            expires_idx = quote(&format!("{table}_expires_at_idx")),
        );

        // $10 is the layer's `now`: only a row that is expired by then (a
        // session, or a forward past its `until`) may be replaced. A live
        // one is left alone and no row is reported. A replaced forward
        // becomes a session again: `successor` is cleared.
        let create = format!(
            "INSERT INTO {t} AS existing (key, user_id, data, created_at, last_seen, \
                 absolute_deadline, idle_timeout_secs, persistent, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (key) DO UPDATE SET \
                 user_id = EXCLUDED.user_id, data = EXCLUDED.data, \
                 created_at = EXCLUDED.created_at, last_seen = EXCLUDED.last_seen, \
                 absolute_deadline = EXCLUDED.absolute_deadline, \
                 idle_timeout_secs = EXCLUDED.idle_timeout_secs, \
                 persistent = EXCLUDED.persistent, expires_at = EXCLUDED.expires_at, \
                 successor = NULL \
             WHERE existing.expires_at <= $10"
        );

        // All parts of one statement share a snapshot, so the final SELECT
        // returns the row as it was before the touch, as the trait asks.
        // The touch condition is that of `SessionRecord::touch_due`,
        // written against the row being updated (not the snapshot), so a
        // concurrent touch at the same `now` is not repeated: whole seconds
        // elapsed, compared as float8 with `idle * after` exactly as the
        // Rust rule computes it. It holds near the absolute deadline too,
        // where only `last_seen` moves. `successor IS NULL` is checked on
        // the updated row again: a concurrent `retire` may have turned it
        // into a forward, whose `expires_at` (its `until`) a touch must not
        // change.
        let load = format!(
            "WITH live AS ( \
                 SELECT key, {RECORD_COLUMNS} FROM {t} \
                 WHERE key = $1 AND expires_at > $2 AND successor IS NULL \
             ), touched AS ( \
                 UPDATE {t} AS s SET \
                     last_seen = $2, \
                     expires_at = least($2 + s.idle_timeout_secs * interval '1 second', \
                                        s.absolute_deadline) \
                 FROM live \
                 WHERE s.key = live.key \
                   AND s.expires_at > $2 \
                   AND s.successor IS NULL \
                   AND trunc(extract(epoch FROM $2 - s.last_seen))::float8 \
                       >= s.idle_timeout_secs::float8 * $3 \
             ) \
             SELECT {RECORD_COLUMNS} FROM live"
        );

        // Clear, then removals, then insertions, as `SessionRecord::apply`.
        // The right-hand sides read the row as it is when this UPDATE gets
        // its lock, so keys changed by a concurrent save are kept. NULL
        // lifetime parameters keep the stored lifetime. Then the touch rule
        // of `SessionRecord::touch_due`, on the patched lifetime: when due
        // ($9 is the fraction), `last_seen` becomes $8 (`now`), and
        // `expires_at` follows whichever `last_seen` results. The WHERE is
        // checked again on a row a concurrent statement changed, so a
        // session retired or deleted meanwhile is not written.
        let idle = "coalesce($5, idle_timeout_secs)";
        let absolute = "coalesce($6, absolute_deadline)";
        let due =
            format!("(trunc(extract(epoch FROM $8 - last_seen))::float8 >= {idle}::float8 * $9)");
        let last_seen = format!("(CASE WHEN {due} THEN $8 ELSE last_seen END)");
        let save = format!(
            "UPDATE {t} SET \
                 data = (CASE WHEN $2 THEN '{{}}'::jsonb ELSE data END - $3::text[]) || $4::jsonb, \
                 idle_timeout_secs = {idle}, \
                 absolute_deadline = {absolute}, \
                 persistent = coalesce($7, persistent), \
                 last_seen = {last_seen}, \
                 expires_at = least({last_seen} + {idle} * interval '1 second', {absolute}) \
             WHERE key = $1 AND expires_at > $8 AND successor IS NULL"
        );

        // $1 key, $2 successor, $3 until, $4 now. One UPDATE covers both
        // the first call (a live session becomes a forward) and a retry (a
        // live forward to the same successor is written back as it is; the
        // CASE keeps its `until`). Two statements, or a CTE with a separate
        // SELECT for the retry, would answer `false` to a retry that waited
        // on the first attempt's row lock, since both parts would read the
        // snapshot from before the first attempt committed; a single
        // UPDATE re-checks its WHERE on the row the first attempt wrote.
        let retire = format!(
            "UPDATE {t} SET \
                 successor = $2, user_id = NULL, data = '{{}}'::jsonb, \
                 expires_at = CASE WHEN successor IS NULL THEN $3 ELSE expires_at END \
             WHERE key = $1 AND expires_at > $4 AND (successor IS NULL OR successor = $2)"
        );

        // What the removed row was is decided with the layer's `now`; the
        // comparison is done here rather than by decoding `expires_at`, so
        // a row with a timestamp Rust cannot hold is still deleted cleanly.
        // A live forward is kept (a retried logout follows it again): the
        // second SELECT reports it, reading the row as it was before this
        // statement, like the DELETE beside it.
        let delete = format!(
            "WITH gone AS ( \
                 DELETE FROM {t} \
                 WHERE key = $1 AND NOT (successor IS NOT NULL AND expires_at > $2) \
                 RETURNING successor, expires_at > $2 AS live) \
             SELECT successor, live FROM gone \
             UNION ALL \
             SELECT successor, true AS live FROM {t} \
             WHERE key = $1 AND successor IS NOT NULL AND expires_at > $2"
        );
        // Forwards have no `user_id`, so these never touch them.
        let delete_user = format!("DELETE FROM {t} WHERE user_id = $1 AND key IS DISTINCT FROM $2");
        let user_left = format!(
            "SELECT EXISTS (SELECT FROM {t} WHERE user_id = $1 AND key IS DISTINCT FROM $2)"
        );
        let count_user = format!("SELECT count(*) FROM {t} WHERE user_id = $1 AND expires_at > $2");
        // Newest first, so LIMIT keeps the most recently created ones; the
        // caller reverses them to oldest first.
        let list_user = format!(
            "SELECT key, created_at, last_seen, expires_at, persistent FROM {t} \
             WHERE user_id = $1 AND expires_at > $2 \
             ORDER BY created_at DESC, key DESC LIMIT $3"
        );
        // SKIP LOCKED: rows another transaction is busy with (a create
        // replacing an expired row, another sweeper) are left for later
        // instead of waited for. Lapsed forwards are expired rows too.
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
            retire,
            delete,
            delete_user,
            user_left,
            count_user,
            list_user,
            sweep,
        }
    }
}

/// Maps a sqlx error to the store error kind the layer needs. The source
/// is the sqlx error wrapped in [`PostgresError`], which the layer may log.
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

fn store_error(error: sqlx::Error) -> StoreError {
    let sqlstate = error
        .as_database_error()
        .and_then(|db| db.code())
        .map(std::borrow::Cow::into_owned);
    let unavailable = matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    );
    let corrupt = matches!(
        error,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)
    );
    let wrapped = PostgresError(error);
    match sqlstate.as_deref() {
        _ if unavailable => StoreError::unavailable(wrapped),
        Some(code) if means_unavailable(code) => StoreError::unavailable(wrapped),
        Some(code) if means_rejected(code) => StoreError::rejected(wrapped),
        _ if corrupt => StoreError::corrupt(wrapped),
        _ => StoreError::backend(wrapped),
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

/// Whether a server error's SQLSTATE says "this value cannot be stored":
/// class 22, data exception. What the store sends is the layer's data
/// (user IDs, data keys and values) and times it chose, so such an error
/// is about a value the client gave: 22P05 (untranslatable character) and
/// 22021 (character not in repertoire) are what a NUL in `jsonb` and in
/// `text` give, 22008 a time beyond PostgreSQL's range. (A row edited by
/// hand into values that overflow the statements' own arithmetic would
/// give class 22 too; that is not worth telling apart.)
fn means_rejected(sqlstate: &str) -> bool {
    sqlstate.starts_with("22")
}

/// A sqlx error, shown without anything the server or the driver quoted.
///
/// PostgreSQL's error reports can quote the statement's parameters: a NUL
/// in a `jsonb` value comes back with `where: JSON data, line 1:
/// {"note":"...` and the session data up to it, and sqlx's `Debug` prints
/// that; decode errors quote the value they could not decode. The layer
/// logs the source of a [`StoreError`], so this type's `Display` and
/// `Debug` show only the kind of failure, and for a server error its
/// SQLSTATE and the SQLSTATE's class. The sqlx error stays reachable as
/// this error's own source, for code that asks for it on purpose.
struct PostgresError(sqlx::Error);

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            sqlx::Error::Database(db) => match db.code() {
                // A SQLSTATE is five digits or upper-case letters; a code
                // that is not is not shown, since it would not be one.
                Some(code) if is_sqlstate(&code) => {
                    write!(f, "database error {code} ({})", sqlstate_class(&code))
                }
                _ => f.write_str("database error without a SQLSTATE"),
            },
            sqlx::Error::Io(error) => write!(f, "database I/O error ({:?})", error.kind()),
            sqlx::Error::Tls(_) => f.write_str("TLS error talking to the database"),
            sqlx::Error::PoolTimedOut => f.write_str("timed out waiting for a database connection"),
            sqlx::Error::PoolClosed => f.write_str("the database connection pool is closed"),
            sqlx::Error::WorkerCrashed => f.write_str("a database connection worker crashed"),
            sqlx::Error::Protocol(_) => f.write_str("unexpected message from the database"),
            sqlx::Error::Configuration(_) => f.write_str("database connection misconfigured"),
            // Column names come from this store's own statements.
            sqlx::Error::ColumnDecode { index, .. } => {
                write!(f, "cannot decode the database column {index:?}")
            }
            sqlx::Error::ColumnNotFound(name) => write!(f, "no database column {name:?}"),
            sqlx::Error::Decode(_) => f.write_str("cannot decode a database value"),
            sqlx::Error::Encode(_) => f.write_str("cannot encode a database parameter"),
            sqlx::Error::RowNotFound => f.write_str("no database row returned"),
            _ => f.write_str("database driver error"),
        }
    }
}

impl fmt::Debug for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PostgresError")
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl StdError for PostgresError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

fn is_sqlstate(code: &str) -> bool {
    code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// The name of a SQLSTATE's class (its first two characters), as listed in
/// PostgreSQL's documentation (appendix A, "PostgreSQL Error Codes").
fn sqlstate_class(code: &str) -> &'static str {
    match code.get(..2).unwrap_or_default() {
        "00" => "successful completion",
        "01" => "warning",
        "02" => "no data",
        "03" => "SQL statement not yet complete",
        "08" => "connection exception",
        "09" => "triggered action exception",
        "0A" => "feature not supported",
        "0B" => "invalid transaction initiation",
        "0F" => "locator exception",
        "0L" => "invalid grantor",
        "0P" => "invalid role specification",
        "0Z" => "diagnostics exception",
        "20" => "case not found",
        "21" => "cardinality violation",
        "22" => "data exception",
        "23" => "integrity constraint violation",
        "24" => "invalid cursor state",
        "25" => "invalid transaction state",
        "26" => "invalid SQL statement name",
        "27" => "triggered data change violation",
        "28" => "invalid authorization specification",
        "2B" => "dependent privilege descriptors still exist",
        "2D" => "invalid transaction termination",
        "2F" => "SQL routine exception",
        "34" => "invalid cursor name",
        "38" => "external routine exception",
        "39" => "external routine invocation exception",
        "3B" => "savepoint exception",
        "3D" => "invalid catalog name",
        "3F" => "invalid schema name",
        "40" => "transaction rollback",
        "42" => "syntax error or access rule violation",
        "44" => "WITH CHECK OPTION violation",
        "53" => "insufficient resources",
        "54" => "program limit exceeded",
        "55" => "object not in prerequisite state",
        "57" => "operator intervention",
        "58" => "system error",
        "72" => "snapshot failure",
        "F0" => "configuration file error",
        "HV" => "foreign data wrapper error",
        "P0" => "PL/pgSQL error",
        "XX" => "internal error",
        _ => "unknown class",
    }
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
    store_key(column(row, "key")?, "store key is not 32 bytes")
}

/// A stored key (a row's own, or a forward's successor) back as a
/// [`StoreKey`]: SHA-256 outputs, so exactly 32 bytes; `problem` says
/// which, when it is not.
fn store_key(bytes: Vec<u8>, problem: &'static str) -> Result<StoreKey, StoreError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(CorruptRow(problem)))?;
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
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.retire)
            .bind(key.as_bytes().as_slice())
            .bind(successor.as_bytes().as_slice())
            .bind(truncate_to_seconds(until))
            .bind(truncate_to_seconds(now))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete(&self, key: &StoreKey, now: OffsetDateTime) -> Result<Deleted, StoreError> {
        let row = sqlx::query(&self.sql.delete)
            .bind(key.as_bytes().as_slice())
            .bind(truncate_to_seconds(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(Deleted::Nothing);
        };
        let live: bool = column(&row, "live")?;
        let successor: Option<Vec<u8>> = column(&row, "successor")?;
        Ok(match (successor, live) {
            (_, false) => Deleted::Nothing,
            (None, true) => Deleted::Session,
            // A successor that is not a store key cannot be followed, and
            // is reported rather than ignored.
            (Some(bytes), true) => {
                Deleted::Forward(store_key(bytes, "successor key is not 32 bytes")?)
            }
        })
    }

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(&self.sql.count_user)
            .bind(user_id)
            .bind(truncate_to_seconds(now))
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        u64::try_from(count).map_err(|_| StoreError::corrupt(CorruptRow("negative count")))
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        let keep = keep.map(|k| k.as_bytes().as_slice());
        let mut deleted = 0;
        // Under READ COMMITTED each DELETE sees only rows committed before
        // it started. A login or regenerate running meanwhile creates the
        // user's new session (invisible to this DELETE) and retires the old
        // one (which this DELETE then skips: re-checked after the retire
        // committed, the row has no `user_id` any more). One DELETE would
        // let the new session through. So after every DELETE, a statement
        // of its own, with a snapshot taken after the DELETE finished,
        // looks for any row of the user left, and another pass runs while
        // there is one.
        for _ in 0..MAX_DELETE_PASSES {
            let done = sqlx::query(&self.sql.delete_user)
                .bind(user_id)
                .bind(keep)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
            deleted += done.rows_affected();
            let left: bool = sqlx::query_scalar(&self.sql.user_left)
                .bind(user_id)
                .bind(keep)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            if !left {
                return Ok(deleted);
            }
        }
        // Sessions of the user were still appearing after the last pass:
        // success would be a lie, so the request fails (retryably) instead.
        Err(StoreError::unavailable(StillLoggingIn))
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        // PostgreSQL's LIMIT is a bigint; more than that many rows cannot
        // exist anyway.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(&self.sql.list_user)
            .bind(user_id)
            .bind(truncate_to_seconds(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        // Newest first from the query; the trait wants oldest first.
        rows.iter()
            .rev()
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
            &s.retire,
            &s.delete,
            &s.delete_user,
            &s.user_left,
            &s.count_user,
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
        let source = StdError::source(&error).expect("the wrapped sqlx error");
        assert!(source.downcast_ref::<PostgresError>().is_some());
        let sqlx_error = source.source().expect("the sqlx error is its source");
        assert!(sqlx_error.downcast_ref::<sqlx::Error>().is_some());
    }

    /// A server error shaped like PostgreSQL's report of a NUL in `jsonb`:
    /// a plain message, and a context (`where`) that quotes the data sent,
    /// which sqlx's `Debug` prints.
    struct ServerError {
        code: &'static str,
        context: &'static str,
    }

    impl fmt::Debug for ServerError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ServerError")
                .field("code", &self.code)
                .field("where", &self.context)
                .finish()
        }
    }

    impl fmt::Display for ServerError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(sqlx::error::DatabaseError::message(self))
        }
    }

    impl StdError for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "unsupported Unicode escape sequence"
        }

        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.code.into())
        }

        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }

        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }

        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }

        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    const SECRET: &str = r#"JSON data, line 1: {"note":"secret-card-4111"#;

    fn server_error(code: &'static str) -> StoreError {
        store_error(sqlx::Error::from(ServerError {
            code,
            context: SECRET,
        }))
    }

    /// Every `Display` along the source chain, and the top-level `Debug`.
    fn everything_shown(error: &StoreError) -> String {
        let mut shown = format!("{error:?}");
        let mut next: Option<&dyn StdError> = Some(error);
        while let Some(e) = next {
            shown.push('\n');
            shown.push_str(&e.to_string());
            next = e.source();
        }
        shown
    }

    #[test]
    fn data_exceptions_are_rejected_and_other_server_errors_keep_their_kind() {
        for code in ["22P05", "22021", "22008", "22001"] {
            assert!(
                matches!(server_error(code), StoreError::Rejected(_)),
                "{code}"
            );
        }
        for code in ["08006", "57P01", "57014", "55P03", "53300"] {
            assert!(
                matches!(server_error(code), StoreError::Unavailable(_)),
                "{code}"
            );
        }
        for code in ["42P01", "23505", "40001", "XX000"] {
            assert!(
                matches!(server_error(code), StoreError::Backend(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn the_logged_error_shows_the_sqlstate_and_class_but_no_quoted_data() {
        let error = server_error("22P05");
        assert!(error.is_rejected());
        let source = StdError::source(&error).expect("a source");
        assert_eq!(source.to_string(), "database error 22P05 (data exception)");
        assert_eq!(
            format!("{source:?}"),
            "PostgresError(database error 22P05 (data exception))"
        );
        assert!(
            format!("{error:?}").contains("22P05"),
            "the top-level Debug names the SQLSTATE"
        );
        let shown = everything_shown(&error);
        assert!(!shown.contains("secret-card"), "{shown}");
        // The full report is still there for code that asks on purpose.
        let sqlx_error = source
            .source()
            .and_then(|e| e.downcast_ref::<sqlx::Error>())
            .expect("the sqlx error");
        assert!(format!("{sqlx_error:?}").contains("secret-card"));
    }

    #[test]
    fn driver_errors_are_shown_by_kind_without_the_values_they_quote() {
        let decode = sqlx::Error::ColumnDecode {
            index: "\"data\"".into(),
            source: "invalid type: string \"secret-card-4111\", expected a map".into(),
        };
        let error = store_error(decode);
        assert!(matches!(error, StoreError::Corrupt(_)));
        let shown = everything_shown(&error);
        assert!(
            shown.contains("cannot decode the database column"),
            "{shown}"
        );
        let logged = StdError::source(&error).expect("a source");
        for text in [
            logged.to_string(),
            format!("{logged:?}"),
            format!("{error:?}"),
        ] {
            assert!(!text.contains("secret-card"), "{text}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "secret-card");
        let error = store_error(sqlx::Error::Io(io));
        let logged = StdError::source(&error).expect("a source");
        assert_eq!(logged.to_string(), "database I/O error (ConnectionReset)");
        assert!(!format!("{error:?}").contains("secret-card"));
    }

    #[test]
    fn only_well_formed_sqlstates_are_shown() {
        let error = server_error("2\"sec");
        let source = StdError::source(&error).expect("a source");
        assert_eq!(source.to_string(), "database error without a SQLSTATE");
        assert!(matches!(error, StoreError::Backend(_)));
        assert_eq!(sqlstate_class("XX000"), "internal error");
        assert_eq!(sqlstate_class("0A000"), "feature not supported");
        assert_eq!(sqlstate_class("ZZ999"), "unknown class");
        assert!(is_sqlstate("22P05") && !is_sqlstate("22p05") && !is_sqlstate("2200"));
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

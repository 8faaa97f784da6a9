//! [`PostgresStore`]: sessions in a PostgreSQL table, on the application's
//! own sqlx [`PgPool`]. (This module is private: what users read, set-up
//! and schema included, is on [`PostgresStore`] and
//! [`PostgresStoreBuilder`].)
//!
//! This file holds the store and its [`SessionStore`] impl; beside it are
//! `builder` ([`PostgresStoreBuilder`], which checks the names), `sql`
//! (every statement's text), `row` (decoding rows), `error` (sqlx errors as
//! [`StoreError`]s) and `schema.sql` (the migration, which the store's docs
//! show and [`PostgresStore::migration_sql`] fills in).
//! What it shares with `SqliteStore` is in `store::sql_common`.

mod builder;
mod error;
mod listener;
mod row;
mod sql;

use std::fmt;
use std::sync::{Arc, OnceLock};

use sqlx::postgres::PgPool;
use sqlx::types::Json;
use time::OffsetDateTime;

pub use self::builder::PostgresStoreBuilder;
use self::error::store_error;
use self::sql::Statements;
use crate::clock::truncate_to_seconds;
use crate::id::StoreKey;
use crate::record::{whole_seconds, Patch, SessionInfo, SessionRecord, Touch};
use crate::store::sql_common::row::{column, count, sessions_oldest_first, unexpired_record};
use crate::store::sql_common::{bind_record, deleted, in_batches, Batch};
use crate::store::{ChangeNotifier, Changes, Deleted, SessionStore, StillLoggingIn, StoreError};

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
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use cloakroom::{Key, store::PostgresStore, SessionLayer};
/// use sqlx::postgres::PgPoolOptions;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The pool the application already has for its own queries. A short
/// // acquire timeout makes a database outage a quick `503`.
/// let pool = PgPoolOptions::new()
///     .acquire_timeout(Duration::from_secs(3))
///     .connect(&std::env::var("DATABASE_URL")?)
///     .await?;
///
/// let store = PostgresStore::new(pool.clone());
/// store.migrate().await?; // idempotent; safe from several processes at once
///
/// let sessions = SessionLayer::builder(store)
///     .key(Key::from_hex(&std::env::var("SESSION_KEY")?)?)
///     .build()?;
/// // Delete expired rows every five minutes, in batches.
/// let _sweeper = sessions.admin().spawn_sweeper(Duration::from_secs(300));
/// # Ok(())
/// # }
/// ```
///
/// A table of your choosing, in a schema created if missing (plain
/// lower-case names, checked by `build`):
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use cloakroom::store::PostgresStore;
///
/// let store = PostgresStore::builder(pool)
///     .schema("auth")
///     .table("web_sessions")
///     .build()?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
///
/// `examples/postgres.rs` is a whole app on this store.
///
/// # Schema
///
/// [`migrate`](Self::migrate) runs these statements in one transaction
/// that first takes a transaction-level advisory lock, so several processes
/// starting at once do not race each other. `{table}` stands for the
/// quoted, schema-qualified table (`"public"."cloakroom_sessions"` by
/// default), `{user_id_idx}` and `{expires_at_idx}` for the quoted index
/// names (`"<table>_user_id_idx"` and `"<table>_expires_at_idx"`),
/// `{announce_fn}` and `{announce_trigger}` for the trigger that tells
/// [session watches](crate::watch) of ended sessions
/// (`"<schema>"."cloakroom_announce"`, `"<table>_announce"`), and
/// `{channel}` for its notification channel (`cloakroom_` and 16 hex
/// digits of a hash of the schema and table names); the names are
/// validated, so they need no escaping. `CREATE OR REPLACE TRIGGER` needs
/// PostgreSQL 14 or later. Databases migrated by an earlier version of
/// this crate get the function and trigger from the next
/// [`migrate`](Self::migrate) (or by applying
/// [`migration_sql`](Self::migration_sql) again); until then, watches on
/// this store re-check their sessions every second instead of hearing of
/// each end.
/// [`migration_sql`](Self::migration_sql) returns the statements with the
/// names filled in.
///
/// ```sql
#[doc = include_str!("schema.sql")]
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
/// - `successor` is `NULL` for a session. A row with a `successor` is a
///   *forward* (see below).
/// - `user_agent` and `client_ip` are the session's
///   [`Device`](crate::device::Device), each `NULL` when it was not kept. They are
///   written when the session is created (a `create` that replaces an
///   expired row writes them too, `NULL` included) and by no other
///   statement: saves and touches leave them alone. `client_ip` is an
///   `inet` rather than `text`, so the server checks each value and your
///   own queries can match networks (`client_ip << '10.0.0.0/8'`); it
///   always holds a single address, and a row edited to hold a network is
///   [`StoreError::Corrupt`] when read.
/// - Timestamps are whole seconds. Every comparison uses the time the
///   layer passes in (from its clock), never the
///   database's `now()`, so one clock decides expiry.
///
/// # Forwards
///
/// When the layer moves a session to a new ID (login, regenerate),
/// [`SessionStore::retire`] turns its row into a forward in place: the
/// `successor` column names the new key, `user_id`, `user_agent` and
/// `client_ip` become `NULL`, `data` becomes `{}`, and `expires_at` becomes
/// the forward's `until`. The other columns keep the old session's values
/// and mean nothing any more. So a forward holds its key against `create` until `until` and is then
/// replaced or swept like any expired row, with no extra logic; it never
/// appears in the `user_id` index; and `load` and `save` skip it
/// (`successor IS NULL`).
///
/// # One statement per operation
///
/// Every operation but `delete_user`, `delete_all` and `sweep_expired` is
/// one statement, and so atomic on its own (autocommit, `READ COMMITTED`).
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
///   it again). `delete_owned` is the same statement with the owner
///   checked in the `DELETE`'s `WHERE` (a live row of another user, or of
///   none, is neither deleted nor reported).
/// - `count_user` is one `SELECT count(*)` and `list_user` one `SELECT ...
///   ORDER BY created_at DESC, key DESC LIMIT $limit` (the newest sessions,
///   then reversed to oldest first), both through the `user_id` index.
/// - `delete_user` is a `DELETE` through the `user_id` index, repeated in
///   passes (see below).
/// - `delete_all` (end all sessions) is a `DELETE ... WHERE key IN (SELECT
///   key ... WHERE successor IS NOT NULL OR created_at <= $cutoff LIMIT
///   $batch)`, the batch size being the sweep's
///   ([`PostgresStoreBuilder::sweep_batch_size`], 1000 by default), each
///   batch its own statement, repeated until a batch finds fewer rows than
///   that; the rows that the live forwards it deleted lead to are deleted
///   by the same rule right after (a regenerate racing the pass may have
///   created its new row after the batch's snapshot). No index serves
///   `created_at`: each batch reads the table until it has found its rows,
///   and the last one reads it whole.
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
/// refused with [`StoreError::Rejected`], and nothing is written. (So is a
/// User-Agent with one, which no HTTP header can carry.) This
/// crate enables no TLS in sqlx; an application that connects over TLS
/// enables a TLS feature on its own `sqlx` dependency, and the pool it
/// passes in uses it.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Statements>,
    /// The change feed for session watches, with its listener task;
    /// started by the first [`SessionStore::changes`].
    feed: Arc<OnceLock<Feed>>,
}

/// A store's change feed and the task that keeps its `LISTEN`.
struct Feed {
    notifier: ChangeNotifier,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        // The last clone of the store is gone: nobody watches through it.
        self.listener.abort();
    }
}

impl PostgresStore {
    /// The schema used unless [`PostgresStoreBuilder::schema`] says
    /// otherwise.
    pub const DEFAULT_SCHEMA: &'static str = sql::DEFAULT_SCHEMA;
    /// The table used unless [`PostgresStoreBuilder::table`] says
    /// otherwise.
    pub const DEFAULT_TABLE: &'static str = crate::store::sql_common::sql::DEFAULT_TABLE;
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
            feed: Arc::default(),
        }
    }

    /// A builder for a store with another schema, table or sweep batch
    /// size.
    pub fn builder(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(pool)
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
    /// tool. Every statement creates only what is missing, so it can be
    /// applied again to a database that already has the table.
    pub fn migration_sql(&self) -> &str {
        &self.sql.migration
    }

    /// The quoted, schema-qualified table name, e.g.
    /// `"public"."cloakroom_sessions"`, ready to use in SQL of your own
    /// (say, to count sessions).
    pub fn quoted_table(&self) -> &str {
        &self.sql.qualified_table
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `create` or `restore` (`statement`) with its `keys`, then the
    /// record and `now`; whether it wrote the row.
    async fn write_record(
        &self,
        statement: &str,
        keys: &[&StoreKey],
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut query = sqlx::query(statement);
        for key in keys {
            query = query.bind(key.as_bytes().as_slice());
        }
        let data = Json(&record.data);
        let query = bind_record(
            query,
            record,
            data,
            record.device.ip,
            now,
            truncate_to_seconds,
        );
        let done = query.execute(&self.pool).await.map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// `delete`, or `delete_owned` when `owner` is given: one statement
    /// (see "One statement per operation"), which checks the owner in the
    /// `WHERE` of the `DELETE` itself.
    async fn remove(
        &self,
        key: &StoreKey,
        owner: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Deleted, StoreError> {
        let row = sqlx::query(&self.sql.delete)
            .bind(key.as_bytes().as_slice())
            .bind(truncate_to_seconds(now))
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(Deleted::Nothing);
        };
        let live: bool = column(&row, "live")?;
        deleted(live, column(&row, "successor")?)
    }
}

impl PostgresStore {
    /// The live sessions a `delete_all` or `delete_moved` row says it
    /// ended, plus those ended by following the live forwards it deleted
    /// (`moved`), and theirs in turn: a regenerate racing the pass may
    /// have created its new record after the batch's snapshot and retired
    /// the old one before the batch deleted it.
    async fn end_moved(
        &self,
        row: &sqlx::postgres::PgRow,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let live: i64 = column(row, "ended")?;
        let mut ended = u64::try_from(live).unwrap_or(0);
        let mut moved: Vec<Vec<u8>> = column(row, "moved")?;
        // Successors are fresh keys, so a chain never loops back; `seen`
        // guards against a table that was edited all the same.
        let mut seen = std::collections::HashSet::new();
        moved.retain(|key| seen.insert(key.clone()));
        while !moved.is_empty() {
            let row = sqlx::query(&self.sql.delete_moved)
                .bind(&moved)
                .bind(until)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            let live: i64 = column(&row, "ended")?;
            ended += u64::try_from(live).unwrap_or(0);
            moved = column(&row, "moved")?;
            moved.retain(|key| seen.insert(key.clone()));
        }
        Ok(ended)
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

impl SessionStore for PostgresStore {
    async fn create(
        &self,
        key: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write_record(&self.sql.create, &[key], record, now)
            .await
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
        unexpired_record(&row, now)
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        let removed: Vec<&str> = patch.remove.iter().map(String::as_str).collect();
        let lifetime = patch.lifetime.as_ref();
        let done = sqlx::query(&self.sql.save)
            .bind(key.as_bytes().as_slice())
            .bind(patch.clear)
            .bind(removed)
            .bind(Json(&patch.set))
            .bind(lifetime.map(|l| whole_seconds(l.idle_timeout)))
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

    async fn restore(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write_record(&self.sql.restore, &[key, successor], record, now)
            .await
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

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(&self.sql.count_user)
            .bind(user_id)
            .bind(truncate_to_seconds(now))
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        count(n)
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
        Err(StoreError::unavailable(StillLoggingIn {
            passes: MAX_DELETE_PASSES,
        }))
    }

    async fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (until, now) = (truncate_to_seconds(created_until), truncate_to_seconds(now));
        let batch = self.sql.sweep_batch_size;
        // Each batch is its own statement (and transaction), like the
        // sweep's: row locks are held on one batch at a time, and other
        // requests get in between. A batch that picked fewer rows than its
        // size found none left (see `delete_all` in `sql`).
        in_batches(batch, || async move {
            let row = sqlx::query(&self.sql.delete_all)
                .bind(until)
                .bind(batch)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
            let picked: i64 = column(&row, "picked")?;
            Ok(Batch {
                found: u64::try_from(picked).unwrap_or(0),
                counted: self.end_moved(&row, until, now).await?,
            })
        })
        .await
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
        sessions_oldest_first(&rows)
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = truncate_to_seconds(now);
        // Each batch is its own statement (and transaction), so row locks
        // are held only briefly. `now` is fixed, so the backlog only
        // shrinks and a short batch means it is gone (or held by others,
        // who will be swept next time).
        in_batches(self.sql.sweep_batch_size, || async move {
            let done = sqlx::query(&self.sql.sweep)
                .bind(now)
                .bind(self.sql.sweep_batch_size)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
            let swept = done.rows_affected();
            Ok(Batch {
                found: swept,
                counted: swept,
            })
        })
        .await
    }

    fn changes(&self) -> Option<Changes> {
        let feed = self.feed.get_or_init(|| {
            // Lost until `LISTEN` is in place.
            let notifier = ChangeNotifier::starting(false);
            let listener = tokio::spawn(listener::listen(
                self.pool.clone(),
                self.sql.channel.clone(),
                self.sql.has_trigger.clone(),
                notifier.clone(),
            ));
            Feed { notifier, listener }
        });
        Some(feed.notifier.subscribe())
    }
}

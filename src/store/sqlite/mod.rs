//! [`SqliteStore`]: sessions in a SQLite table, on the application's own
//! sqlx [`SqlitePool`]. (This module is private: what users read, the pool
//! options included, is on [`SqliteStore`] and [`SqliteStoreBuilder`].)
//!
//! This file holds the store and its [`SessionStore`] impl; beside it are
//! `builder` ([`SqliteStoreBuilder`], which checks the table name), `sql`
//! (every statement's text), `row` (decoding rows), `error` (sqlx errors
//! as [`StoreError`]s) and `schema.sql` (the migration).
//! What it shares with `PostgresStore` is in `store::sql_common`.

mod builder;
mod error;
mod row;
mod sql;

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::sqlite::SqlitePool;
use time::OffsetDateTime;
use tokio::sync::Mutex;

pub use self::builder::SqliteStoreBuilder;
use self::error::store_error;
use self::sql::{member_path, Statements};
use crate::clock::truncate_to_seconds;
use crate::id::StoreKey;
use crate::record::{whole_seconds, Patch, SessionInfo, SessionRecord, Touch};
use crate::store::sql_common::row::{column, count, sessions_oldest_first, unexpired_record};
use crate::store::sql_common::{bind_record, deleted, in_batches, Batch};
use crate::store::{Change, ChangeNotifier, Changes, Deleted, SessionStore, StoreError};

/// Sessions in a SQLite table, through the application's own
/// [`SqlitePool`]: persistent sessions with no database server to run.
///
/// Create the table with [`SqliteStore::migrate`] (or apply
/// [`SqliteStore::migration_sql`] with your own migration tool), hand the
/// store to [`SessionLayer::builder`](crate::SessionLayer::builder), and run
/// a sweeper for expired rows. The store opens no connections of its own:
/// sessions share the pool, its size and its time-outs with the rest of
/// the application. Clones share the pool, the SQL text and the queue
/// writes wait in (see [Locking](#locking)).
///
/// # Setting up the pool
///
/// The pool comes from the application's own `sqlx` 0.8 dependency (with
/// its `runtime-tokio` and `sqlite` features). Open it with these options
/// (the demo and the tests do):
///
/// - **WAL** (`journal_mode(SqliteJournalMode::Wal)`): readers and the
///   writer do not block each other, so a session lookup never waits for
///   a save. In SQLite's default rollback-journal mode, a write locks out
///   every reader while it commits.
/// - **A busy timeout** (`busy_timeout`, 5 seconds unless you set it):
///   how long a write waits for another connection's write lock (another
///   process, your own queries, a backup) before SQLite answers
///   `SQLITE_BUSY`, which this store reports as
///   [`StoreError::Unavailable`], a `503`. Keep it below the layer's
///   store timeout (3 seconds by default, see
///   [`SessionLayerBuilder::store_timeout`](crate::SessionLayerBuilder::store_timeout))
///   if you want SQLite's own error rather than the layer's time-out.
/// - `synchronous(SqliteSynchronous::Normal)` is the usual choice with
///   WAL: a commit is durable once the WAL is checkpointed, and a crash
///   of the machine (not of the process) can lose the last few commits,
///   which for sessions means a few touches or saves.
/// - `create_if_missing(true)` for a file that may not exist yet.
///
/// ```no_run
/// use std::str::FromStr;
/// use std::time::Duration;
/// use cloakroom::{Key, SessionLayer, store::SqliteStore};
/// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The pool the application already has for its own queries: WAL, so
/// // that reads never wait for the writer, and a busy timeout below the
/// // layer's 3-second store timeout, so that a write waits its turn, and a
/// // lock held elsewhere for too long is SQLite's own quick error.
/// let options = SqliteConnectOptions::from_str("sqlite://app.db")?
///     .create_if_missing(true)
///     .journal_mode(SqliteJournalMode::Wal)
///     .synchronous(SqliteSynchronous::Normal)
///     .busy_timeout(Duration::from_secs(2));
/// let pool = SqlitePoolOptions::new().connect_with(options).await?;
///
/// let store = SqliteStore::new(pool.clone());
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
/// Switching a new file to WAL is a write that SQLite can refuse at once,
/// busy timeout or not, when several processes create the same file at
/// the same moment: create the file once, at deployment.
/// `examples/sqlite.rs` is a whole app on this store.
///
/// An in-memory database (`sqlite::memory:`) is one per connection: use a
/// pool of one connection for it, or [`MemoryStore`](crate::MemoryStore).
///
/// # Schema
///
/// [`migrate`](Self::migrate) runs these statements in one `BEGIN
/// IMMEDIATE` transaction. `{table}` stands for the quoted table
/// (`"cloakroom_sessions"` by default), `{user_id_idx}` and
/// `{expires_at_idx}` for the quoted index names
/// (`"<table>_user_id_idx"`, `"<table>_expires_at_idx"`); the names are
/// validated, so they need no escaping.
/// [`migration_sql`](Self::migration_sql) returns the statements with the
/// names filled in.
///
/// ```sql
#[doc = include_str!("schema.sql")]
/// ```
///
/// - The table is `STRICT`: SQLite checks every value's type, as a
///   PostgreSQL column would, instead of storing whatever it is given.
///   It is `WITHOUT ROWID`: rows are kept in the primary key's B-tree,
///   so a lookup by key is one B-tree search.
/// - `key` is the session's [`StoreKey`]: SHA-256 of the session ID, never
///   the ID itself, so the database file, its WAL and its backups hold no
///   usable cookie.
/// - `data` is the session data as JSON text. A save patches it in place
///   with SQLite's JSON functions (`json_remove`, then `json_set`), so it
///   sends only the keys a request changed.
/// - Timestamps are Unix seconds, from the time the layer passes in (its
///   clock), never SQLite's `unixepoch()`, so one clock
///   decides expiry. `expires_at` is kept equal to the earlier of
///   `last_seen + idle_timeout_secs` and `absolute_deadline` by every
///   statement that changes one of them; lookups and the sweeper compare
///   against it, through its index.
/// - `successor` is `NULL` for a session; a row with a `successor` is a
///   forward, exactly as in [`PostgresStore`'s
///   forwards](https://docs.rs/cloakroom/latest/cloakroom/store/struct.PostgresStore.html#forwards):
///   `retire` turns the row into one in place, with no user, data or
///   device, and `expires_at` set to its `until`.
/// - `user_agent` and `client_ip` (as text, `192.0.2.44` or
///   `2001:db8::ff00:42:8329`) are the session's [`Device`](crate::device::Device),
///   `NULL` when not kept. Only `create` writes them.
///
/// # One statement per operation
///
/// SQLite runs one write transaction at a time per database file, and a
/// write statement in autocommit mode takes the write lock before it reads
/// anything, so each write statement below sees the latest committed state
/// and is atomic on its own. No operation opens an explicit transaction:
/// a deferred `BEGIN` followed by a read and then a write would have to
/// upgrade its lock, and SQLite answers a contended upgrade with
/// `SQLITE_BUSY` at once, without waiting for the busy timeout.
///
/// - `load` is one `SELECT` of the live session row: in WAL mode it takes
///   no lock that writers wait for. Only when [`SessionRecord::touch_due`]
///   holds for what it read does a second statement follow: an `UPDATE`
///   that sets `last_seen` and `expires_at` where the row is still live,
///   still a session and still due. SQLite has no statement that both
///   updates a row and returns its values from before the update, and
///   making every load an `UPDATE` would make every request queue for the
///   one write lock. The pair is as good as one atomic step: the record
///   returned is the one stored before the call, the touch only ever moves
///   `last_seen` forward, and it is never written into a session that was
///   deleted, retired or touched meanwhile.
/// - `save` is one `UPDATE ... WHERE key = ?1 AND expires_at > ?now AND
///   successor IS NULL` that patches `data` in place (`json_remove` for
///   the removed keys, then `json_set` for the set ones), so concurrent
///   requests that change different keys all survive, and a deleted,
///   retired or expired session is never written back (update-only); it
///   rolls the idle deadline in the same statement when due.
/// - `create` is one `INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE` the
///   existing row (session or forward) is expired.
/// - `retire` is one `UPDATE` of a live row that is a session or already a
///   forward to the same successor (a retry).
/// - `delete` is one `DELETE ... RETURNING` of anything but a live
///   forward; only when it deleted nothing does a `SELECT` look for a live
///   forward to report (a forward is never created under a key that held
///   nothing live, so nothing can slip in between). `delete_owned` is the
///   same `DELETE` with the owner checked in its `WHERE`: a live session
///   of another user, or of none, stays, and if it moves before the
///   `SELECT`, the forward reported leads to that user's session, which
///   the next `delete_owned` refuses in turn.
/// - `delete_user` is one `DELETE` through the `user_id` index. Writes
///   being serialized, it sees every session created before it and none
///   after; a login that created its new session after it fails to retire
///   the old one (already deleted), and the layer then deletes the new
///   one.
/// - `count_user` is one `SELECT count(*)` and `list_user` one `SELECT
///   ... ORDER BY created_at DESC, key DESC LIMIT ?`, both through the
///   `user_id` index.
/// - `delete_all` (end all sessions) is a `DELETE ... WHERE key IN (SELECT
///   key ... WHERE successor IS NOT NULL OR created_at <= ?cutoff LIMIT
///   ?batch) RETURNING ...`, the batch size being the sweep's
///   ([`SqliteStoreBuilder::sweep_batch_size`], 1000 by default), each
///   batch its own statement through the write queue, repeated until one
///   deletes fewer rows than that. No index serves `created_at`: each
///   batch reads the table until it has found its rows.
///
/// # Locking
///
/// Writes from one process queue in the store (an async mutex shared by
/// its clones) before they go to SQLite, so they take turns in order
/// instead of meeting in SQLite's busy handler, which backs off by
/// sleeping (1 ms, then 2, 5, 10, ... up to 100 ms at a time). Reads do
/// not queue. SQLite's busy timeout then only applies against writers
/// outside this store: other processes, the application's own queries, a
/// backup, a `sqlite3` shell. When one of those holds the write lock past
/// the busy timeout, the write fails with `SQLITE_BUSY`, which is
/// [`StoreError::Unavailable`] (a `503`), never a lost write: nothing was
/// written, and the client may retry.
///
/// # Throughput
///
/// One writer at a time is SQLite's design. Each write is a short
/// statement on an indexed row, so with WAL and `synchronous = NORMAL`
/// expect a few thousand session writes a second from one process (about
/// 6,000 saves a second on the 2-core VM of the figures in the
/// repository's `benches/README.md`, with 64
/// saves in flight at once; one save takes about 135 µs), while reads
/// (loads with no touch due, which are most requests) take about 90 µs and
/// run in parallel on as many connections as the pool has. A request that
/// only reads its session never writes; one that reads it after the touch
/// threshold (a tenth of the idle timeout by default) writes once.
/// `cargo bench --bench sqlite --features sqlite` measures a given
/// machine.
/// Past that (several application servers, or tens of thousands of
/// writes a second), use [`PostgresStore`'s
/// PostgreSQL](https://docs.rs/cloakroom/latest/cloakroom/store/struct.PostgresStore.html)
/// or Redis.
///
/// # Sweeping expired sessions
///
/// Expired rows and lapsed forwards are never served, but they stay in the
/// table until swept. [`SessionStore::sweep_expired`] deletes them in
/// batches (1000 rows per statement by default, see
/// [`SqliteStoreBuilder::sweep_batch_size`]), each batch its own statement
/// through the `expires_at` index, so the write lock is held only briefly.
/// Run it periodically with
/// [`SessionAdmin::spawn_sweeper`](crate::SessionAdmin::spawn_sweeper).
///
/// # Errors
///
/// sqlx errors become [`StoreError`]s. Their source is an error of this
/// store whose `Display` and `Debug` show only what kind of failure it
/// was and, for a database error, SQLite's extended result code and its
/// name (say, `database error 517 (SQLITE_BUSY)`). The sqlx error is that
/// error's own [`source`](std::error::Error::source).
///
/// - `SQLITE_BUSY` and `SQLITE_LOCKED` (after the busy timeout), I/O
///   errors, a full disk, a file that cannot be opened, pool time-outs and
///   a closed pool are [`StoreError::Unavailable`].
/// - A value SQLite cannot hold (longer than its length limit, or an
///   integer beyond 64 bits that a `STRICT` column refuses) is
///   [`StoreError::Rejected`], and nothing is written.
/// - Rows that cannot be decoded (data that is not a JSON object, keys
///   that are not 32 bytes, timestamps out of range, an address that does
///   not parse) are [`StoreError::Corrupt`], and so is a save into a row
///   whose data SQLite cannot parse as JSON.
/// - Everything else, such as a missing table, is
///   [`StoreError::Backend`].
///
/// # Limits
///
/// Data nested deeper than 127 levels (the data object counting as one) is
/// refused with [`StoreError::Rejected`] before anything is sent: it could
/// not be read back (the layer allows 64). So is text longer than
/// SQLite's length limit (1 GB by default). Unlike PostgreSQL, SQLite text can hold the NUL character;
/// the layer refuses it in data and user IDs all the same, so that every
/// store accepts the same data.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Arc<Statements>,
    /// The queue this store's writes take turns in (see "Locking").
    writes: Arc<Mutex<()>>,
    /// Announces the sessions this store ends or moves to session
    /// watches (other processes' writes are not heard).
    changes: ChangeNotifier,
}

impl SqliteStore {
    /// The table used unless [`SqliteStoreBuilder::table`] says otherwise.
    pub const DEFAULT_TABLE: &'static str = crate::store::sql_common::sql::DEFAULT_TABLE;
    /// Rows deleted per statement by [`SessionStore::sweep_expired`] unless
    /// [`SqliteStoreBuilder::sweep_batch_size`] says otherwise.
    pub const DEFAULT_SWEEP_BATCH_SIZE: u32 = 1000;

    /// A store on the table `cloakroom_sessions`, using `pool`.
    ///
    /// The table must exist: call [`migrate`](Self::migrate) once at
    /// start-up, or create it with [`migration_sql`](Self::migration_sql).
    pub fn new(pool: SqlitePool) -> Self {
        Self::with(pool, Self::DEFAULT_TABLE, Self::DEFAULT_SWEEP_BATCH_SIZE)
    }

    /// A builder for a store with another table or sweep batch size.
    pub fn builder(pool: SqlitePool) -> SqliteStoreBuilder {
        SqliteStoreBuilder::new(pool)
    }

    /// The store, for a validated table name.
    fn with(pool: SqlitePool, table: &str, sweep_batch_size: u32) -> Self {
        Self {
            pool,
            sql: Arc::new(Statements::new(table, sweep_batch_size)),
            writes: Arc::new(Mutex::new(())),
            changes: ChangeNotifier::new(),
        }
    }

    /// Creates the table and its indexes if they do not exist yet.
    ///
    /// Idempotent, and safe to run from several processes at once: it runs
    /// [`migration_sql`](Self::migration_sql) in a `BEGIN IMMEDIATE`
    /// transaction, which takes the database's write lock first (waiting
    /// up to the busy timeout for it), so a second process finds the table
    /// made by the first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database cannot be opened or written, or
    /// stays locked past the busy timeout; nothing is half-created, since
    /// the transaction is rolled back.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let _turn = self.writes.lock().await;
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(store_error)?;
        let connection: &mut sqlx::SqliteConnection = &mut transaction;
        sqlx::Executor::execute(connection, sqlx::raw_sql(&self.sql.migration))
            .await
            .map_err(store_error)?;
        transaction.commit().await.map_err(store_error)
    }

    /// The SQL that [`migrate`](Self::migrate) runs, for this store's
    /// table, for teams that apply migrations with their own tool. Every
    /// statement creates only what is missing.
    pub fn migration_sql(&self) -> &str {
        &self.sql.migration
    }

    /// The quoted table name, e.g. `"cloakroom_sessions"`, ready to use in
    /// SQL of your own (say, to count sessions).
    pub fn quoted_table(&self) -> &str {
        &self.sql.quoted_table
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Runs `create` or `restore` (`statement`) with its `keys`, then the
    /// record and `now`, through the write queue; whether it wrote the row.
    async fn write_record(
        &self,
        statement: &str,
        keys: &[&StoreKey],
        record: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // Everything is encoded before the write lock is queued for.
        let mut query = sqlx::query(statement);
        for key in keys {
            query = query.bind(key.as_bytes().as_slice());
        }
        let data = data_text(&record.data)?;
        let ip = record.device.ip.map(|ip| ip.to_string());
        let query = bind_record(query, record, data, ip, now, seconds);
        let _turn = self.writes.lock().await;
        let done = query.execute(&self.pool).await.map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// `delete`, or `delete_owned` when `owner` is given: one `DELETE`
    /// through the write queue, which checks the owner in its `WHERE`, and
    /// only when it deleted nothing a `SELECT` for a live forward (see
    /// "One statement per operation").
    async fn remove(
        &self,
        key: &StoreKey,
        owner: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Deleted, StoreError> {
        let now = seconds(now);
        let gone = {
            let _turn = self.writes.lock().await;
            sqlx::query(&self.sql.delete)
                .bind(key.as_bytes().as_slice())
                .bind(now)
                .bind(owner)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?
        };
        if let Some(row) = gone {
            // The DELETE spares live forwards, so what it deleted is no
            // forward to follow: `live` says whether it was a live session.
            return deleted(column(&row, "live")?, None);
        }
        // Nothing deleted: the key holds a live forward, nothing, or (with
        // `owner`) a live session that is not the owner's. Should that
        // session move meanwhile, the forward found here is reported, and
        // its successor's owner is checked when the caller follows it.
        let successor: Option<Vec<u8>> = sqlx::query_scalar(&self.sql.live_forward)
            .bind(key.as_bytes().as_slice())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        deleted(successor.is_some(), successor)
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.sql.quoted_table)
            .field("sweep_batch_size", &self.sql.sweep_batch_size)
            .finish_non_exhaustive()
    }
}

/// Whole Unix seconds, as every column keeps them.
fn seconds(t: OffsetDateTime) -> i64 {
    truncate_to_seconds(t).unix_timestamp()
}

/// How deeply the stored data (the object itself counting as one level)
/// may nest: what serde_json reads back (it refuses a 128th level), which
/// is below SQLite's JSON limit (1000).
const MAX_DATA_DEPTH: usize = 127;

/// Data nested deeper than this store can read back.
#[derive(Debug)]
struct TooDeep;

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session data nested deeper than {MAX_DATA_DEPTH} levels cannot be stored"
        )
    }
}

impl std::error::Error for TooDeep {}

/// How many arrays and objects deep `value` nests (a scalar is 0).
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// A value of the data object as text for SQLite's `json()`; refused when
/// it would sit deeper than [`MAX_DATA_DEPTH`] in the object.
fn json_text(value: &Value) -> Result<String, StoreError> {
    if 1 + nesting(value) > MAX_DATA_DEPTH {
        return Err(StoreError::rejected(TooDeep));
    }
    serde_json::to_string(value).map_err(StoreError::rejected)
}

/// The whole data object as text.
fn data_text(data: &Map<String, Value>) -> Result<String, StoreError> {
    for value in data.values() {
        if 1 + nesting(value) > MAX_DATA_DEPTH {
            return Err(StoreError::rejected(TooDeep));
        }
    }
    serde_json::to_string(data).map_err(StoreError::rejected)
}

/// How often watches re-check their sessions on a SQLite store, for the
/// sessions other processes writing the same file end (this store hears
/// only its own writes).
const OTHER_WRITERS_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl SessionStore for SqliteStore {
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
            .bind(now.unix_timestamp())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let Some(record) = unexpired_record(&row, now)? else {
            return Ok(None);
        };
        if record.touch_due(&Touch { now, ..touch }) {
            let _turn = self.writes.lock().await;
            sqlx::query(&self.sql.touch)
                .bind(key.as_bytes().as_slice())
                .bind(now.unix_timestamp())
                .bind(touch.after)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
        }
        Ok(Some(record))
    }

    async fn save(&self, key: &StoreKey, patch: &Patch, touch: Touch) -> Result<bool, StoreError> {
        // Everything is encoded before the write lock is queued for.
        let removed: Vec<String> = patch.remove.iter().map(|k| member_path(k)).collect();
        let set = patch
            .set
            .iter()
            .map(|(k, v)| Ok((member_path(k), json_text(v)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let statement = self.sql.save(removed.len(), set.len());
        let lifetime = patch.lifetime.as_ref();
        let mut query = sqlx::query(&statement)
            .bind(key.as_bytes().as_slice())
            .bind(patch.clear)
            .bind(lifetime.map(|l| whole_seconds(l.idle_timeout)))
            .bind(lifetime.map(|l| seconds(l.absolute_deadline)))
            .bind(lifetime.map(|l| l.persistent))
            .bind(seconds(touch.now))
            .bind(touch.after);
        for path in removed {
            query = query.bind(path);
        }
        for (path, value) in set {
            query = query.bind(path).bind(value);
        }
        let _turn = self.writes.lock().await;
        let done = query.execute(&self.pool).await.map_err(store_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn retire(
        &self,
        key: &StoreKey,
        successor: &StoreKey,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let _turn = self.writes.lock().await;
        let done = sqlx::query(&self.sql.retire)
            .bind(key.as_bytes().as_slice())
            .bind(successor.as_bytes().as_slice())
            .bind(seconds(until))
            .bind(seconds(now))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        drop(_turn);
        self.changes.notify(Change::Session(*key));
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
        let deleted = self.remove(key, None, now).await?;
        self.changes.notify(Change::Session(*key));
        Ok(deleted)
    }

    async fn delete_owned(
        &self,
        key: &StoreKey,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Deleted, StoreError> {
        let deleted = self.remove(key, Some(user_id), now).await?;
        self.changes.notify(Change::Session(*key));
        Ok(deleted)
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&StoreKey>) -> Result<u64, StoreError> {
        let _turn = self.writes.lock().await;
        let done = sqlx::query(&self.sql.delete_user)
            .bind(user_id)
            .bind(keep.map(|k| k.as_bytes().as_slice()))
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        drop(_turn);
        self.changes.notify(Change::User(user_id.to_owned()));
        Ok(done.rows_affected())
    }

    async fn delete_all(
        &self,
        created_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (until, now) = (seconds(created_until), seconds(now));
        let batch = self.sql.sweep_batch_size;
        // Each batch is its own statement and waits its turn again, as the
        // sweep's do, so that requests' writes get in between batches.
        // Writes being serialized (SQLite's write lock, across processes
        // too), a batch that deletes fewer rows than its size leaves no
        // matching row at all: nothing to follow forwards for. A regenerate
        // whose new row comes after it finds its old row gone, its retire
        // fails, and the layer deletes the new row.
        let result = in_batches(batch, || async move {
            let rows = {
                let _turn = self.writes.lock().await;
                sqlx::query(&self.sql.delete_all)
                    .bind(until)
                    .bind(batch)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?
            };
            let mut ended = 0;
            for row in &rows {
                let live: bool = column(row, "live")?;
                ended += u64::from(live);
            }
            Ok(Batch {
                found: u64::try_from(rows.len()).unwrap_or(u64::MAX),
                counted: ended,
            })
        })
        .await;
        // Whatever part of the pass was done, watches look again.
        self.changes.notify(Change::All);
        result
    }

    async fn count_user(&self, user_id: &str, now: OffsetDateTime) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(&self.sql.count_user)
            .bind(user_id)
            .bind(seconds(now))
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        count(n)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(&self.sql.list_user)
            .bind(user_id)
            .bind(seconds(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        sessions_oldest_first(&rows)
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let now = seconds(now);
        // Each batch is its own statement, and waits its turn again, so
        // that requests' writes get in between batches.
        in_batches(self.sql.sweep_batch_size, || async move {
            let done = {
                let _turn = self.writes.lock().await;
                sqlx::query(&self.sql.sweep)
                    .bind(now)
                    .bind(self.sql.sweep_batch_size)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?
            };
            let swept = done.rows_affected();
            Ok(Batch {
                found: swept,
                counted: swept,
            })
        })
        .await
    }

    fn changes(&self) -> Option<Changes> {
        Some(self.changes.subscribe_partial(OTHER_WRITERS_RECHECK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    /// `migrate` can run in a spawned task.
    #[allow(dead_code)]
    fn migrate_is_send(store: SqliteStore) {
        assert_send(async move { store.migrate().await });
    }
}

//! The code `PostgresStore` and `SqliteStore` share.
//!
//! The two stores keep the same table (the same columns, meaning the same
//! things), follow the same rules for forwards and expiry, and take the
//! same care over what an error may show. So the code that carries those
//! rules is here, once, and the stores cannot drift apart where they must
//! agree. What really differs stays in each store: the SQL dialect and its
//! placeholders, how each database encodes data, times and addresses, how
//! a save patches the JSON, locking, and the database's own error codes.
//! Those come in through [`error::DatabaseCodes`] and [`row::SessionRow`],
//! and as plain arguments.
//!
//! - `error`: sqlx errors as [`StoreError`]s, shown without anything the
//!   database or the driver quoted.
//! - `row`: rows decoded into records, listings and keys.
//! - `builder`: the check that lets a table name into SQL.
//! - `sql`: the default table, quoting, the placeholders of each store's
//!   `schema.sql`, and the column lists that `row` decodes.
//! - this file: the order in which `create` and `restore` bind a record,
//!   what a `delete` reports, and the loop of sweeping and of ending all
//!   sessions in batches.

pub(crate) mod builder;
pub(crate) mod error;
pub(crate) mod row;
pub(crate) mod sql;

use std::future::Future;

use sqlx::{Database, Encode, Type};
use time::OffsetDateTime;

use self::row::store_key;
use crate::record::{whole_seconds, SessionRecord};
use crate::store::{Deleted, StoreError};

/// A query of either store, with its arguments.
type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// Binds `record`'s columns, then `now`, in the order both stores' `create`
/// and `restore` statements take them after the keys: `user_id`, `data`,
/// `created_at`, `last_seen`, `absolute_deadline`, `idle_timeout_secs`,
/// `persistent`, `expires_at`, `user_agent`, `client_ip`, `now`. `data`,
/// `client_ip` and the times (through `time`) come encoded the way the
/// store keeps them.
pub(crate) fn bind_record<'q, DB, Data, Ip, Time>(
    query: Query<'q, DB>,
    record: &'q SessionRecord,
    data: Data,
    client_ip: Ip,
    now: OffsetDateTime,
    time: impl Fn(OffsetDateTime) -> Time,
) -> Query<'q, DB>
where
    DB: Database,
    Data: 'q + Encode<'q, DB> + Type<DB>,
    Ip: 'q + Encode<'q, DB> + Type<DB>,
    Time: 'q + Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    query
        .bind(record.user_id.as_deref())
        .bind(data)
        .bind(time(record.created_at))
        .bind(time(record.last_seen))
        .bind(time(record.absolute_deadline))
        .bind(whole_seconds(record.idle_timeout))
        .bind(record.persistent)
        .bind(time(record.expires_at()))
        .bind(record.device.user_agent.as_deref())
        .bind(client_ip)
        .bind(time(now))
}

/// What a `delete` reports for the row it deleted, or the live forward it
/// found: [`Deleted::Nothing`] unless the row was `live`, else the session
/// or, when it has a `successor`, the forward.
pub(crate) fn deleted(live: bool, successor: Option<Vec<u8>>) -> Result<Deleted, StoreError> {
    Ok(match (successor, live) {
        (_, false) => Deleted::Nothing,
        (None, true) => Deleted::Session,
        // A successor that is not a store key cannot be followed, and
        // is reported rather than ignored.
        (Some(bytes), true) => Deleted::Forward(store_key(bytes, "successor key is not 32 bytes")?),
    })
}

/// What one batch of a sweep or of `delete_all` did.
pub(crate) struct Batch {
    /// The rows it found to delete; fewer than the batch size means it was
    /// the last batch.
    pub(crate) found: u64,
    /// The rows it counts: all it deleted (a sweep), or the live sessions
    /// it ended (`delete_all`).
    pub(crate) counted: u64,
}

/// Runs `batch` until a batch finds fewer than `batch_size` rows, and adds
/// up what the batches counted. Each batch is a statement of its own, so
/// that none holds locks on more than a batch of rows, and other writes
/// get in between batches.
pub(crate) async fn in_batches<F, Fut>(batch_size: i64, mut batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Batch, StoreError>>,
{
    let mut counted = 0;
    loop {
        let done = batch().await?;
        counted += done.counted;
        if done.found < batch_size.unsigned_abs() {
            return Ok(counted);
        }
    }
}

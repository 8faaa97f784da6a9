//! Decoding the rows of both SQL stores into records, listings and keys,
//! without panicking on values edited by hand.
//!
//! The columns are the same in both tables, and so are the rules on what
//! they must hold; how a value is stored differs (JSON as `jsonb` or as
//! text, times as `timestamptz` or as Unix seconds, `persistent` as a
//! boolean or as 0 or 1, the client address as `inet` or as text), so each
//! store reads its rows through [`SessionRow`].

use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};
use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;

use super::error::{store_error, DatabaseCodes};
use crate::device::Device;
use crate::id::StoreKey;
use crate::record::{stored_idle_timeout, SessionInfo, SessionRecord};
use crate::store::StoreError;

/// A row that made no sense, for [`StoreError::Corrupt`].
#[derive(Debug)]
pub(crate) struct CorruptRow(pub(crate) &'static str);

impl fmt::Display for CorruptRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for CorruptRow {}

/// A [`StoreError::Corrupt`] saying what `problem` the row had.
pub(crate) fn corrupt(problem: &'static str) -> StoreError {
    StoreError::corrupt(CorruptRow(problem))
}

/// The column `name` of `row`, decoded as `T`; a value that is not a `T`
/// is [`StoreError::Corrupt`].
pub(crate) fn column<'r, R, T>(row: &'r R, name: &str) -> Result<T, StoreError>
where
    R: Row,
    R::Database: DatabaseCodes,
    T: Decode<'r, R::Database> + Type<R::Database>,
    for<'n> &'n str: ColumnIndex<R>,
{
    row.try_get(name).map_err(store_error::<R::Database>)
}

/// One row of a store's table, as that store decodes its columns. Every
/// method is [`StoreError::Corrupt`] for a value that cannot be decoded.
pub(crate) trait SessionRow {
    /// A nullable text column (`user_id`, `user_agent`).
    fn text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// An integer column (`idle_timeout_secs`).
    fn integer(&self, column: &str) -> Result<i64, StoreError>;
    /// A byte-string column (`key`).
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    /// `data`, which must be a JSON object.
    fn data(&self) -> Result<Map<String, Value>, StoreError>;
    /// A time column, in whole seconds.
    fn timestamp(&self, column: &str) -> Result<OffsetDateTime, StoreError>;
    /// `persistent`.
    fn persistent(&self) -> Result<bool, StoreError>;
    /// `client_ip`, which must hold one address when it is not `NULL`.
    fn client_ip(&self) -> Result<Option<IpAddr>, StoreError>;
}

/// The record a row of `RECORD_COLUMNS` (see `sql`) holds.
pub(crate) fn record_from_row(row: &impl SessionRow) -> Result<SessionRecord, StoreError> {
    let data = row.data()?;
    let last_seen = row.timestamp("last_seen")?;
    // The layer adds the idle timeout to `last_seen`; a value that would
    // overflow there is refused here instead of panicking there, and so is
    // a negative one.
    let idle_timeout = stored_idle_timeout(row.integer("idle_timeout_secs")?, last_seen)
        .ok_or_else(|| corrupt("idle timeout out of range"))?;
    Ok(SessionRecord {
        data,
        user_id: row.text("user_id")?,
        created_at: row.timestamp("created_at")?,
        last_seen,
        idle_timeout,
        absolute_deadline: row.timestamp("absolute_deadline")?,
        persistent: row.persistent()?,
        device: device_from_row(row)?,
    })
}

/// The record a `load` read, or `None` when it is expired at `now`.
pub(crate) fn unexpired_record(
    row: &impl SessionRow,
    now: OffsetDateTime,
) -> Result<Option<SessionRecord>, StoreError> {
    let record = record_from_row(row)?;
    // `expires_at` is maintained by every write; the record's own
    // fields are the rule, so a row edited out of step is not served.
    if record.is_expired(now) {
        return Ok(None);
    }
    Ok(Some(record))
}

/// The sessions a `list_user` query read, newest first, as the trait
/// wants them: oldest first.
pub(crate) fn sessions_oldest_first(
    newest_first: &[impl SessionRow],
) -> Result<Vec<SessionInfo>, StoreError> {
    newest_first
        .iter()
        .rev()
        .map(|row| {
            Ok(SessionInfo {
                key: key_from_row(row)?,
                created_at: row.timestamp("created_at")?,
                last_seen: row.timestamp("last_seen")?,
                expires_at: row.timestamp("expires_at")?,
                persistent: row.persistent()?,
                current: false,
                device: device_from_row(row)?,
            })
        })
        .collect()
}

/// The `user_agent` and `client_ip` columns.
fn device_from_row(row: &impl SessionRow) -> Result<Device, StoreError> {
    Ok(Device {
        user_agent: row.text("user_agent")?,
        ip: row.client_ip()?,
    })
}

fn key_from_row(row: &impl SessionRow) -> Result<StoreKey, StoreError> {
    store_key(row.bytes("key")?, "store key is not 32 bytes")
}

/// A stored key (a row's own, or a forward's successor) back as a
/// [`StoreKey`]: SHA-256 outputs, so exactly 32 bytes; `problem` says
/// which, when it is not.
pub(crate) fn store_key(bytes: Vec<u8>, problem: &'static str) -> Result<StoreKey, StoreError> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| corrupt(problem))?;
    Ok(StoreKey::from_bytes(bytes))
}

/// A `count(*)` as the trait's count; a negative one is
/// [`StoreError::Corrupt`].
pub(crate) fn count(count: i64) -> Result<u64, StoreError> {
    u64::try_from(count).map_err(|_| corrupt("negative count"))
}

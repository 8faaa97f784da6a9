//! Decoding [`SqliteStore`](super::SqliteStore) rows: records, keys and
//! timestamps, without panicking on values edited by hand.

use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::Row as _;
use time::OffsetDateTime;

use super::error::store_error;
use crate::device::Device;
use crate::id::StoreKey;
use crate::record::SessionRecord;
use crate::store::StoreError;

/// A row that made no sense, for [`StoreError::Corrupt`].
#[derive(Debug)]
pub(super) struct CorruptRow(pub(super) &'static str);

impl fmt::Display for CorruptRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for CorruptRow {}

fn corrupt(problem: &'static str) -> StoreError {
    StoreError::corrupt(CorruptRow(problem))
}

pub(super) fn column<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(store_error)
}

/// A Unix-seconds column as a time; a value `time` cannot hold is
/// [`StoreError::Corrupt`].
pub(super) fn timestamp(row: &SqliteRow, name: &str) -> Result<OffsetDateTime, StoreError> {
    let seconds: i64 = column(row, name)?;
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| corrupt("timestamp out of range"))
}

pub(super) fn record_from_row(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    let text: String = column(row, "data")?;
    let data: Map<String, Value> =
        serde_json::from_str(&text).map_err(|_| corrupt("data is not a JSON object"))?;
    let last_seen = timestamp(row, "last_seen")?;
    let idle_secs: i64 = column(row, "idle_timeout_secs")?;
    let idle_timeout = time::Duration::seconds(idle_secs);
    // The layer adds the idle timeout to `last_seen`; a value that would
    // overflow there is refused here instead of panicking there.
    if idle_secs < 0 || last_seen.checked_add(idle_timeout).is_none() {
        return Err(corrupt("idle timeout out of range"));
    }
    Ok(SessionRecord {
        data,
        user_id: column(row, "user_id")?,
        created_at: timestamp(row, "created_at")?,
        last_seen,
        idle_timeout,
        absolute_deadline: timestamp(row, "absolute_deadline")?,
        persistent: persistent(row)?,
        device: device_from_row(row)?,
    })
}

/// `persistent`, an integer that must be 0 or 1.
pub(super) fn persistent(row: &SqliteRow) -> Result<bool, StoreError> {
    match column::<i64>(row, "persistent")? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(corrupt("persistent is neither 0 nor 1")),
    }
}

/// The `user_agent` and `client_ip` columns. An address that does not
/// parse (a row edited by hand) is [`StoreError::Corrupt`].
pub(super) fn device_from_row(row: &SqliteRow) -> Result<Device, StoreError> {
    let ip: Option<String> = column(row, "client_ip")?;
    Ok(Device {
        user_agent: column(row, "user_agent")?,
        ip: ip
            .map(|text| text.parse::<IpAddr>())
            .transpose()
            .map_err(|_| corrupt("client_ip is not an IP address"))?,
    })
}

pub(super) fn key_from_row(row: &SqliteRow) -> Result<StoreKey, StoreError> {
    store_key(column(row, "key")?, "store key is not 32 bytes")
}

/// A stored key (a row's own, or a forward's successor) back as a
/// [`StoreKey`]: SHA-256 outputs, so exactly 32 bytes; `problem` says
/// which, when it is not.
pub(super) fn store_key(bytes: Vec<u8>, problem: &'static str) -> Result<StoreKey, StoreError> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| corrupt(problem))?;
    Ok(StoreKey::from_bytes(bytes))
}

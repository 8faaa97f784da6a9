//! Decoding [`PostgresStore`](super::PostgresStore) rows: records, keys and
//! timestamps, without panicking on values edited by hand.

use std::error::Error as StdError;
use std::fmt;

use serde_json::{Map, Value};
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::types::Json;
use sqlx::Row as _;
use time::OffsetDateTime;

use super::error::store_error;
use crate::clock::truncate_to_seconds;
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

pub(super) fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name).map_err(store_error)
}

pub(super) fn timestamp(row: &PgRow, name: &str) -> Result<OffsetDateTime, StoreError> {
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

pub(super) fn record_from_row(row: &PgRow) -> Result<SessionRecord, StoreError> {
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
        device: device_from_row(row)?,
    })
}

/// The `user_agent` and `client_ip` columns. An `inet` that names a network
/// rather than one address (a row edited by hand) cannot be decoded, and is
/// [`StoreError::Corrupt`].
pub(super) fn device_from_row(row: &PgRow) -> Result<Device, StoreError> {
    Ok(Device {
        user_agent: column(row, "user_agent")?,
        ip: column(row, "client_ip")?,
    })
}

pub(super) fn key_from_row(row: &PgRow) -> Result<StoreKey, StoreError> {
    store_key(column(row, "key")?, "store key is not 32 bytes")
}

/// A stored key (a row's own, or a forward's successor) back as a
/// [`StoreKey`]: SHA-256 outputs, so exactly 32 bytes; `problem` says
/// which, when it is not.
pub(super) fn store_key(bytes: Vec<u8>, problem: &'static str) -> Result<StoreKey, StoreError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(CorruptRow(problem)))?;
    Ok(StoreKey::from_bytes(bytes))
}
